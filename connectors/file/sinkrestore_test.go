package file

import (
	"fmt"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
)

// The sink is "exactly once with flows.OnCheckpoint". A fragment that
// restores its checkpoint while the process goes on (its actor failed, a
// user function panicked on an event, it moved away and back) delivers
// again the outputs that checkpoint holds, which the sink already wrote:
// each must still be in the file once. The sink does not implement
// flows.RestoredSink, and skips what its file holds only on the first
// Write after opening the file.
func TestFileSinkExactAcrossInProcessRestore(t *testing.T) {
	for _, c := range []struct {
		name  string
		fault func(d *flowstest.Driver, in *flowstest.Input[line]) error
	}{
		{"crash", func(d *flowstest.Driver, _ *flowstest.Input[line]) error { return d.Crash(0) }},
		{"panic", func(_ *flowstest.Driver, in *flowstest.Input[line]) error {
			in.Push(0, line{Text: "boom"}) // the Map panics on it: restored, tried again, dead-lettered
			return nil
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			sink := newFileSink(t, dir)
			in := flowstest.NewInput[line](1)
			f := flows.New("filesink", flows.WithFragments(1))
			src := flows.From(f, "lines", in)
			byText := flows.KeyBy(src, func(l line) string { return l.Text })
			out := flows.Map(byText.Values(), func(l line) line {
				if l.Text == "boom" {
					panic("boom")
				}
				return l
			})
			flows.To(out, flows.Sink[line](sink), flows.OnCheckpoint())
			d, err := flowstest.New(f, time.Unix(0, 0))
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			push := func(from, to int) {
				for i := from; i < to; i++ {
					in.Push(0, line{Text: fmt.Sprintf("t%d", i)})
				}
				if err := d.Drain(); err != nil {
					t.Fatal(err)
				}
			}
			push(0, 5)
			if err := d.Checkpoint(); err != nil { // durable: t0..t4 are written
				t.Fatal(err)
			}
			if err := c.fault(d, in); err != nil { // back to the checkpoint that holds t0..t4
				t.Fatal(err)
			}
			push(5, 8)
			for range 2 {
				if err := d.Checkpoint(); err != nil {
					t.Fatal(err)
				}
			}
			if d.Restores() == 0 {
				t.Fatal("no fragment restored")
			}
			ls := readSink(t, sink.Path(0))
			seen := map[string]int{}
			var texts []string
			for _, l := range ls {
				seen[l.ID]++
				texts = append(texts, string(l.Value))
			}
			if len(ls) != 8 || len(seen) != 8 {
				t.Fatalf("after %d restores the file holds %d lines of %d outputs, want 8 of 8: %v", d.Restores(), len(ls), len(seen), texts)
			}
		})
	}
}
