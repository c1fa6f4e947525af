package flowcore_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
)

// windowFlow counts events per key in windows w, one key per event's text,
// with the operator the layout asks for: "window" keeps a state per window
// (FireEvery with a count never reached), "slice" keeps slices.
func windowFlow(t *testing.T, n int, w flows.Windows, layout string) (*flowcore.Plan, *[]string) {
	t.Helper()
	in := flowstest.NewInput[stamped](1)
	for i := range n {
		in.Push(0, stamped{Text: fmt.Sprintf("k%d", i%3), At: t0.Add(time.Duration(i) * 7 * time.Second)})
	}
	f := flows.New("windows", flows.WithFragments(1))
	ks := flows.KeyBy(flows.From(f, "lines", in, flows.WithEventTime(func(s stamped) time.Time { return s.At }, 0)),
		func(s stamped) string { return s.Text })
	count := func(n int64, _ stamped) int64 { return n + 1 }
	zero := func() int64 { return 0 }
	var win flows.Windowed[string, stamped, int64]
	if layout == "slice" {
		win = flows.WindowAggregateMerge(ks, w, zero, count, func(a, b int64) int64 { return a + b })
	} else {
		win = flows.WindowAggregate(ks, w, zero, count, flows.FireEvery(1<<30))
	}
	var out []string
	flows.To(win.Results(), flows.SinkFunc[flows.WindowResult[string, int64]](func(os []flows.Output[flows.WindowResult[string, int64]]) error {
		for _, o := range os {
			out = append(out, fmt.Sprintf("%s %s %d %s", o.Value.Key, o.Value.Start.Format("15:04:05"), o.Value.Value, o.Value.Firing))
		}
		return nil
	}))
	plan, err := flowcore.Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	return plan, &out
}

// restoreInto restores fragment 0 of plan from the entries of a delta.
func restoreInto(plan *flowcore.Plan, d flowcore.Delta) (*flowcore.Fragment, error) {
	fr := plan.NewFragment(0)
	for _, e := range d.Puts {
		if err := fr.Restore(e); err != nil {
			return nil, err
		}
	}
	fr.Restored()
	return fr, nil
}

// A tumbling window's state kept per window (as every WindowAggregate
// kept it before slices) restores into slices, and the run goes on to the
// same results; a sliding window's does not, and says so; nor does a
// slice checkpoint restore into windows kept one by one.
func TestSliceRestoresPerWindowCheckpoints(t *testing.T) {
	for _, c := range []struct {
		w    flows.Windows
		from string
		ok   bool
	}{
		{flows.Tumbling(time.Minute), "window", true},
		{flows.Sliding(time.Minute, 20*time.Second), "window", false},
		{flows.Sliding(time.Minute, 20*time.Second), "slice", false},
		{flows.Tumbling(time.Minute), "slice", false},
	} {
		to := map[string]string{"window": "slice", "slice": "window"}[c.from]
		src, _ := windowFlow(t, 100, c.w, c.from)
		bs := batches(t, src, 16)
		fr := src.NewFragment(0)
		for _, b := range bs[:3] {
			if err := fr.Apply(b, b.PrevEnd); err != nil {
				t.Fatal(err)
			}
		}
		d, err := fr.TakeDelta()
		if err != nil {
			t.Fatal(err)
		}
		dst, out := windowFlow(t, 100, c.w, to)
		restored, err := restoreInto(dst, d)
		if !c.ok {
			if err == nil || !strings.Contains(err.Error(), "window") {
				t.Fatalf("%+v from %s: restore into %s: %v, want a refusal", c.w, c.from, to, err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bs[3:] {
			if err := restored.Apply(b, b.PrevEnd); err != nil {
				t.Fatal(err)
			}
		}
		// The same run on slices from the start: what follows the restore
		// is its tail.
		whole, all := windowFlow(t, 100, c.w, to)
		fw := whole.NewFragment(0)
		for _, b := range batches(t, whole, 16) {
			if err := fw.Apply(b, b.PrevEnd); err != nil {
				t.Fatal(err)
			}
		}
		// Keys firing at one time come in no particular order.
		tail := slices.Clone((*all)[len(*all)-len(*out):])
		slices.Sort(tail)
		slices.Sort(*out)
		if len(*out) == 0 || len(*out) >= len(*all) || !slices.Equal(*out, tail) {
			t.Fatalf("after the restore %v, want the tail of %v", *out, *all)
		}
	}
}

// A batch whose watermark fires more windows than a sink buffer holds
// writes them in chunks as they are made, every one once; a chunk's
// refused write is written again with the rest at the batch's end, and
// if that is refused too, it is the batch's error and the outputs are
// written again before anything else.
func TestSinkWritesLargeFiringsInChunks(t *testing.T) {
	const keys = 2*flowcore.SinkChunk + 100
	for _, fail := range []bool{false, true} {
		in := flowstest.NewInput[stamped](1)
		evs := make([]stamped, 0, keys+1)
		for i := range keys {
			evs = append(evs, stamped{Text: fmt.Sprintf("k%d", i), At: t0})
		}
		// One batch: the last event's watermark closes every key's window.
		evs = append(evs, stamped{Text: "k0", At: t0.Add(time.Hour)})
		in.Push(0, evs...)
		f := flows.New("chunks", flows.WithFragments(1))
		ks := flows.KeyBy(flows.From(f, "in", in, flows.WithEventTime(func(s stamped) time.Time { return s.At }, 0)),
			func(s stamped) string { return s.Text })
		win := flows.WindowAggregate(ks, flows.Tumbling(time.Minute), func() int64 { return 0 }, func(n int64, _ stamped) int64 { return n + 1 })
		var writes []int
		seen := map[string]bool{}
		flows.To(win.Results(), flows.SinkFunc[flows.WindowResult[string, int64]](func(out []flows.Output[flows.WindowResult[string, int64]]) error {
			writes = append(writes, len(out))
			if fail && len(writes) <= 2 {
				return errors.New("sink down")
			}
			for _, o := range out {
				if seen[o.ID.String()] {
					t.Errorf("output %s written twice", o.ID)
				}
				seen[o.ID.String()] = true
			}
			return nil
		}))
		d, err := flowstest.New(f, t0)
		if err != nil {
			t.Fatal(err)
		}
		err = d.Drain()
		if fail {
			if err == nil || !strings.Contains(err.Error(), "sink down") {
				t.Fatalf("failing sink: Drain returned %v, want its error", err)
			}
			if len(seen) != 0 {
				t.Fatalf("failing sink: %d outputs taken, want none after the refusals", len(seen))
			}
			err = d.Drain() // writes the refused chunk again, and the rest
		}
		d.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(seen) != keys { // every key's first window (k0's last stays open)
			t.Fatalf("%d outputs, want %d", len(seen), keys)
		}
		if !fail && (len(writes) < 3 || slices.Max(writes) > flowcore.SinkChunk) {
			t.Fatalf("writes of %v outputs, want chunks of at most %d", writes, flowcore.SinkChunk)
		}
	}
}
