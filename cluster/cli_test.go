package cluster

import (
	"bytes"
	"context"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/flows"
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
	for _, want := range []string{`TESSERA_FRAGMENTS="twelve": not an integer`, `TESSERA_EXPECT="3.5": not an integer`, `TESSERA_CHECKPOINT_INTERVAL="soon": not a duration`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%v: want %q", err, want)
		}
	}
}

// A program's own flags read the environment too, and the command line
// still wins over it.
func TestProgramFlagsFromEnvironment(t *testing.T) {
	t.Setenv("TESSERA_SINK", "kafka")
	t.Setenv("TESSERA_SINK_TOPIC", "counts")
	t.Setenv("TESSERA_EVENTS", "500")
	t.Setenv("TESSERA_HTTP", "127.0.0.1:9091")
	var f Flags
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	sink, topic := fs.String("sink", "none", ""), fs.String("sink-topic", "", "")
	events, seed := fs.Int64("events", 0, ""), fs.Uint64("seed", 1, "")
	if err := f.Parse(fs, []string{"-sink-topic", "other"}); err != nil {
		t.Fatal(err)
	}
	if *sink != "kafka" || *topic != "other" || *events != 500 || *seed != 1 || f.HTTP != "127.0.0.1:9091" {
		t.Fatalf("sink %q topic %q events %d seed %d http %q", *sink, *topic, *events, *seed, f.HTTP)
	}

	t.Setenv("TESSERA_EVENTS", "many")
	fs = flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Int64("events", 0, "")
	err := f.Parse(fs, nil)
	if err == nil || !strings.Contains(err.Error(), `TESSERA_EVENTS="many": not an integer`) {
		t.Fatalf("bad environment: %v", err)
	}
}

// -layout prints the flow's layout, a line each, and starts nothing (an
// HTTP address that cannot be listened on is never tried).
func TestRunPrintsLayout(t *testing.T) {
	src, _ := gen.New(gen.Config{Partitions: 1, Events: 10}, word)
	var out bytes.Buffer
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	build := func(*Flags) (*flows.Flow, error) { return testFlow(src), nil }
	if err := Run(context.Background(), fs, []string{"-layout", "-http", "nonsense"}, &out, io.Discard, build, nil); err != nil {
		t.Fatal(err)
	}
	want, err := flows.Layout(testFlow(src))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSuffix(out.String(), "\n"); got != strings.Join(want, "\n") || len(want) < 4 {
		t.Fatalf("printed %q, want %q", got, want)
	}
}
