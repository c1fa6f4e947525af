package file

// Tests written as an outside user of the file connector would write
// them: real files, the engine started by actor.Start on a pebble store on
// disk, and a plain Go model of what the sink's files must hold.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/actor"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/recovery"
)

type oCount = flows.KV[string, int64]

// readSinkDir reads every line of every fragment file in dir: each must
// be a sink line, and no id may come twice.
func readSinkDir(t *testing.T, dir string) map[string]oCount {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "fragment-*.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]oCount{}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for n := 1; sc.Scan(); n++ {
			var l Line
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.ID == "" {
				t.Fatalf("%s line %d is not a sink line: %q (%v)", name, n, sc.Text(), err)
			}
			var kv oCount
			if err := json.Unmarshal(l.Value, &kv); err != nil {
				t.Fatalf("%s line %d: value %s: %v", name, n, l.Value, err)
			}
			if _, dup := out[l.ID]; dup {
				t.Fatalf("%s: output %s written twice", name, l.ID)
			}
			out[l.ID] = kv
		}
	}
	return out
}

// A sink whose values are encoded as indented JSON (valid JSON, as the
// sink asks for, over several lines) still writes one line per output,
// and a restarted process, which delivers the outputs of the last Write
// again, finds the file's last output and skips what it holds.
func TestOutsideFileSinkIndentedValuesAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	indent := func(v oCount) ([]byte, error) { return json.MarshalIndent(v, "", "  ") }
	out := make([]flows.Output[oCount], 6)
	for i := range out {
		out[i] = flows.Output[oCount]{ID: flows.OutputID{Fragment: 2, Offset: int64(i)}, Value: oCount{Key: "k", Value: int64(i + 1)}}
	}
	s, err := NewSink(dir, indent)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Write(out[:4]); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// The process restarts: its checkpoint did not record the Write, and
	// the fragment delivers its outputs again with two more.
	s, err = NewSink(dir, indent)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Write(out); err != nil {
		t.Fatalf("the redelivery after a restart: %v", err)
	}
	got := readSinkDir(t, dir)
	if len(got) != len(out) {
		t.Fatalf("%d outputs in the file, want %d", len(got), len(out))
	}
	for _, o := range out {
		if got[o.ID.String()] != o.Value {
			t.Fatalf("%s = %v, want %v", o.ID, got[o.ID.String()], o.Value)
		}
	}
}

// Word counts read from JSON-lines files at the end of their input — an
// empty file, a hot one, one with CRLF endings, blank and malformed lines
// and a last line without a newline — to the file sink on checkpoints.
// The engine stops at the end, more lines are appended, and a second
// engine on the same store reads only those: the sink's files hold every
// count update of the model once, and each malformed line was
// dead-lettered with its file's partition and byte offset.
func TestOutsideFileWordCountResumesAtEnd(t *testing.T) {
	in, sinkDir := t.TempDir(), t.TempDir()
	want := map[string]int64{}
	wantDead := map[string]bool{}
	sizes := map[int]int64{}
	// appendLines appends raw lines to partition p's file; good lines'
	// words count in the model, the others are malformed.
	appendLines := func(p int, raw string, bad ...int) {
		name := filepath.Join(in, fmt.Sprintf("part-%d.jsonl", p))
		f, err := os.OpenFile(name, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(raw); err != nil {
			t.Fatal(err)
		}
		f.Close()
		off := sizes[p]
		for i, l := range bytes.SplitAfter([]byte(raw), []byte("\n")) {
			if len(l) == 0 {
				continue
			}
			isBad := false
			for _, b := range bad {
				isBad = isBad || b == i
			}
			if isBad {
				wantDead[fmt.Sprintf("%d/%d", p, off)] = true
			} else if t := bytes.TrimSpace(l); len(t) > 0 {
				var ln line
				if err := json.Unmarshal(t, &ln); err != nil {
					panic(fmt.Sprintf("the model's line %q: %v", t, err))
				}
				for _, w := range bytes.Fields([]byte(ln.Text)) {
					want[string(w)]++
				}
			}
			off += int64(len(l))
		}
		sizes[p] = off
	}
	appendLines(0, "")
	var hot bytes.Buffer
	for i := range 400 {
		fmt.Fprintf(&hot, "{\"text\": \"hot w%d\"}\n", i%7)
	}
	appendLines(1, hot.String())
	appendLines(2, "{\"text\": \"a b\"}\r\n\r\n{\"text\": \"b\"\r\n{\"text\": \"c a\"}\r\n", 2)
	appendLines(3, "{\"text\": \"x\"}\n[1, 2]\n{\"text\": \"y x\"}", 1) // no newline at the end
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	storeDir := t.TempDir()
	var dead []flows.DeadLetter
	run := func() {
		src, err := New[line](filepath.Join(in, "part-*.jsonl"), nil)
		if err != nil {
			t.Fatal(err)
		}
		sink, err := NewSink[oCount](sinkDir, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer sink.Close()
		f := flows.New("files", flows.WithFragments(5))
		words := flows.FlatMap(flows.From(f, "lines", flows.Source[line](src)), func(l line, emit func(string)) {
			for _, w := range bytes.Fields([]byte(l.Text)) {
				emit(string(w))
			}
		})
		counts := flows.Count(flows.KeyBy(words, flows.Identity[string])).View("words")
		flows.To(counts.Updates(), flows.Sink[oCount](sink), flows.OnCheckpoint())
		plan, err := flowcore.Compile(f)
		if err != nil {
			t.Fatal(err)
		}
		store, err := recovery.Open(storeDir, nil, logger)
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		dls := make(chan []flows.DeadLetter, 100)
		e, err := actor.Start(plan, actor.Config{Logger: logger, Store: store, CheckpointInterval: 20 * time.Millisecond,
			OnDeadLetters: func(d []flows.DeadLetter) { dls <- d }})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Stop()
		select {
		case <-e.Drained():
		case <-e.Failed():
			t.Fatal(e.Err())
		case <-time.After(20 * time.Second):
			t.Fatal("not drained in 20 s")
		}
		if err := e.Checkpoint(context.Background()); err != nil {
			t.Fatal(err)
		}
		e.Stop()
		for len(dls) > 0 {
			dead = append(dead, <-dls...)
		}
	}
	run()
	// The file without a newline at its end gets one and more lines; the
	// empty one gets its first.
	appendLines(3, "\n{\"text\": \"z\"}\nnot json\n", 2)
	appendLines(0, "{\"text\": \"a hot\"}\n")
	run()

	got := readSinkDir(t, sinkDir)
	seen := map[oCount]bool{}
	for id, kv := range got {
		if seen[kv] {
			t.Fatalf("update %v twice (again as %s)", kv, id)
		}
		seen[kv] = true
	}
	n := 0
	for w, c := range want {
		for i := int64(1); i <= c; i++ {
			if !seen[oCount{Key: w, Value: i}] {
				t.Fatalf("update %s = %d is missing from the sink's files", w, i)
			}
			n++
		}
	}
	if len(got) != n {
		t.Fatalf("%d updates in the sink's files, want %d", len(got), n)
	}
	gotDead := map[string]int{}
	for _, d := range dead {
		gotDead[fmt.Sprintf("%d/%d", d.Partition, d.Offset)]++
	}
	for k := range wantDead {
		if gotDead[k] != 1 {
			t.Fatalf("malformed line %s dead-lettered %d times, want once (got %v)", k, gotDead[k], gotDead)
		}
	}
	if len(gotDead) != len(wantDead) {
		t.Fatalf("dead letters at %v, want %v", gotDead, wantDead)
	}
}
