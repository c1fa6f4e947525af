package cluster

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

// The environment sets the node flags' defaults; the command line wins; a
// value that does not parse is reported by its variable.
func TestFlagsFromEnvironment(t *testing.T) {
	t.Setenv("TESSERA_FRAGMENTS", "12")
	t.Setenv("TESSERA_EXPECT", "3")
	t.Setenv("TESSERA_CHECKPOINT_INTERVAL", "250ms")
	t.Setenv("TESSERA_HTTP", "127.0.0.1:9090")
	var f Flags
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	if err := f.Parse(fs, []string{"-expect", "2"}); err != nil {
		t.Fatal(err)
	}
	if f.Fragments != 12 || f.Expect != 2 || f.Checkpoint != 250*time.Millisecond || f.HTTP != "127.0.0.1:9090" {
		t.Fatalf("%+v", f)
	}

	t.Setenv("TESSERA_FRAGMENTS", "twelve")
	t.Setenv("TESSERA_EXPECT", "3.5")
	t.Setenv("TESSERA_CHECKPOINT_INTERVAL", "soon")
	fs = flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	err := f.Register(fs)
	if err == nil {
		t.Fatal("bad environment accepted")
	}
	for _, want := range []string{`TESSERA_FRAGMENTS="twelve": not an integer`, `TESSERA_EXPECT="3.5": not an integer`, `TESSERA_CHECKPOINT_INTERVAL="soon": time: invalid duration`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%v: want %q", err, want)
		}
	}
}
