package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/exampletest"
	"github.com/tessera-streams/tessera/splice"
)

func TestMain(m *testing.M) { exampletest.Main(m) }

// waitTotal polls the total until it reaches want.
func waitTotal(t *testing.T, base string, want int64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var total struct{ Value int64 }
	for time.Now().Before(deadline) {
		exampletest.GetJSON(t, base+"/v1/views/total", &total)
		if total.Value == want {
			return
		}
		if total.Value > want {
			t.Fatalf("total %d exceeds %d", total.Value, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("total stuck at %d, want %d", total.Value, want)
}

type entries struct {
	Entries []struct {
		Key   string
		Value int64
	}
	More bool
}

func allWords(t *testing.T, base string) map[string]int64 {
	var es entries
	exampletest.GetJSON(t, base+"/v1/views/words?limit=10000000", &es)
	if es.More {
		t.Fatal("more entries than 10 million")
	}
	got := map[string]int64{}
	for _, e := range es.Entries {
		got[e.Key] = e.Value
	}
	return got
}

// A known corpus in files, 64 fragments: every count equals a sequential
// count, and malformed lines go to the dead-letter output.
func TestFileCorpusExact(t *testing.T) {
	dir := t.TempDir()
	want := map[string]int64{}
	var total int64
	r := gen.Rand{}
	for p := range 3 {
		var b strings.Builder
		for i := range 5000 {
			if i%997 == 5 {
				b.WriteString("{not json\n")
				continue
			}
			var words []string
			for range r.Intn(8) {
				words = append(words, Vocabulary[r.Intn(300)])
			}
			if i%10 == 0 {
				words = append(words, "Mixed-Case", "don't")
			}
			text := strings.Join(words, ", ")
			Words(text, func(w string) { want[w]++; total++ })
			line, _ := json.Marshal(Line{Text: text})
			b.Write(line)
			b.WriteByte('\n')
		}
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("part-%d.jsonl", p)), []byte(b.String()), 0o644)
	}
	data := t.TempDir()
	base := exampletest.Run(t, run, "/v1/views/total", "-source", "file", "-files", filepath.Join(dir, "*.jsonl"),
		"-fragments", "64", "-http", exampletest.FreePort(t), "-data", data, "-progress", "0")
	waitTotal(t, base, total)
	got := allWords(t, base)
	if len(got) != len(want) {
		t.Fatalf("%d words, want %d", len(got), len(want))
	}
	for w, n := range want {
		if got[w] != n {
			t.Fatalf("%q = %d, want %d", w, got[w], n)
		}
	}
	var dl struct{ Total int64 }
	exampletest.GetJSON(t, base+"/v1/deadletters", &dl)
	if dl.Total != 3*6 {
		t.Fatalf("%d dead letters, want 18 malformed lines", dl.Total)
	}
	var cl struct {
		Fragments []struct{ Offsets map[string]int64 }
	}
	exampletest.GetJSON(t, base+"/v1/cluster", &cl)
	if len(cl.Fragments) != 64 {
		t.Fatalf("%d fragments", len(cl.Fragments))
	}
}

// The generator contract: -events N counts exactly N words, equal to the
// harness running the same flow sequentially.
func TestGeneratorContract(t *testing.T) {
	const n = 200_000
	base := exampletest.Run(t, run, "/v1/views/total", "-events", fmt.Sprint(n), "-seed", "7", "-http", exampletest.FreePort(t), "-data", t.TempDir(), "-progress", "0")
	waitTotal(t, base, n)

	// The same flow, run sequentially by the harness.
	src, _ := gen.New(gen.Config{Partitions: 4, Seed: 7, Events: n}, GenWord)
	d, err := flowstest.New(Flow(src, 1), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	got := allWords(t, base)
	es, err := d.Entries("words", splice.Query{})
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != len(got) {
		t.Fatalf("%d words, sequential run has %d", len(got), len(es))
	}
	for _, e := range es {
		if got[e.Key] != e.Value.(int64) {
			t.Fatalf("%s = %d, sequential %d", e.Key, got[e.Key], e.Value)
		}
	}
	var top entries
	exampletest.GetJSON(t, base+"/v1/views/words?top=10", &top)
	if len(top.Entries) != 10 || top.Entries[0].Key != "w0000" {
		t.Fatalf("top = %+v", top.Entries)
	}
	var one struct {
		Key   string
		Value int64
	}
	exampletest.GetJSON(t, base+"/v1/views/words/keys/w0001", &one)
	if one.Value != got["w0001"] {
		t.Fatalf("w0001 = %d, want %d", one.Value, got["w0001"])
	}
}

func TestBadFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"-source", "kafka"},
		{"-source", "kafka", "-brokers", "127.0.0.1:1"},
		{"-source", "nats", "-stream", "S"},
		{"-source", "pulsar"},
		{"-source", "http", "-ingest", "pulsar", "-data", "/nonexistent"},
		{"-source", "http", "-ingest", "kafka", "-topics", "lines"},
		{"-source", "http", "-ingest", "kafka", "-brokers", "127.0.0.1:1", "-topics", "a,b"},
		{"-source", "http", "-ingest", "nats", "-stream", "S"},
		{"-source", "http", "-gossip", "127.0.0.1:0", "-remote", "127.0.0.1:0", "-data", t.TempDir()}, // the embedded log in a cluster
		{"-source", "file"},
		{"-source", "file", "-files", "/nonexistent/*.jsonl"},
		{"-partitions", "0"},
		{"-fragments", "0", "-http", "127.0.0.1:0"},
		{"-http", "bad address"},
		{"-log-level", "loud"},
		{"stray"},
	} {
		err := run(context.Background(), args, io.Discard, io.Discard)
		if err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

// A glob that matches a directory stops the command with a clear error
// before anything serves (it used to log an engine failure and then serve
// a healthy-looking node counting nothing).
func TestGlobMatchingADirectoryFails(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a.jsonl"), []byte(`{"text":"a b"}`+"\n"), 0o644)
	os.Mkdir(filepath.Join(dir, "old.jsonl"), 0o755)
	var out strings.Builder
	err := run(context.Background(), []string{"-source", "file", "-files", filepath.Join(dir, "*.jsonl"), "-http", "127.0.0.1:0"}, &out, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "old.jsonl is a directory") {
		t.Fatalf("run = %v, want the directory named", err)
	}
	if strings.Contains(out.String(), "is running") {
		t.Fatalf("printed %q", out.String())
	}
}

func TestWords(t *testing.T) {
	t.Parallel()
	var got []string
	Words("Hello, World! don't-stop 42x  ÉTÉ", func(w string) { got = append(got, w) })
	if strings.Join(got, "|") != "hello|world|don't-stop|42x|été" {
		t.Fatalf("words = %q", got)
	}
}

var _ flows.Source[Line] = (*gen.Source[Line])(nil)
