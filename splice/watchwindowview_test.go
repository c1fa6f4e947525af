package splice_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/splice"
)

// windowViewsFlow keeps windowed views over 4 fragments: the number of
// keys per hour ("keys", sliced state), and the events per two hours
// sliding by the hour, with per-window state ("sliding") and with slices
// ("sliced").
func windowViewsFlow(in flows.Source[timedKey]) *flows.Flow {
	f := flows.New("winviews", flows.WithFragments(4))
	src := flows.From(f, "in", in, flows.WithEventTime(func(t timedKey) time.Time { return t.At }, 10*time.Minute))
	ks := flows.KeyBy(src, func(t timedKey) string { return t.Key })
	count := func() int64 { return 0 }
	add := func(n int64, _ timedKey) int64 { return n + 1 }
	sum := func(_ string, n int64) int64 { return n }
	flows.WindowView(flows.WindowAggregate(ks, flows.Tumbling(time.Hour), count, add), "keys", splice.Count[struct{}](),
		func(string, int64) struct{} { return struct{}{} }, 3*time.Hour)
	flows.WindowView(flows.WindowAggregate(ks, flows.Sliding(2*time.Hour, time.Hour), count, add), "sliding", splice.Sum[int64](), sum, 2*time.Hour)
	flows.WindowView(flows.WindowAggregateMerge(ks, flows.Sliding(2*time.Hour, time.Hour), count, add, func(a, b int64) int64 { return a + b }),
		"sliced", splice.Sum[int64](), sum, 2*time.Hour)
	return f
}

// A watch of a windowed view built from the windows the fragments changed
// tells the truth: after random events (late and too late, windows
// opening, closing and expiring) and crashes, each event applied to the
// previous answer is a full evaluation's answer, for every window held,
// the latest complete one, the last two and a range. Steps that only add
// events to open windows follow the changes.
func TestWatchWindowsFromChanges(t *testing.T) {
	t0 := time.Date(2026, 11, 2, 6, 0, 0, 0, time.UTC)
	rapid.Check(t, func(rt *rapid.T) {
		in := flowstest.NewInput[timedKey](2)
		d, err := flowstest.New(windowViewsFlow(in), time.Unix(0, 0))
		if err != nil {
			rt.Fatal(err)
		}
		defer d.Close()
		req := splice.Request{
			View: rapid.SampledFrom([]string{"keys", "sliding", "sliced"}).Draw(rt, "view"),
			Op:   splice.OpWindows,
			Query: rapid.SampledFrom([]splice.Query{{}, {Latest: true}, {Limit: 2},
				{From: t0.Add(time.Hour).UnixNano(), To: t0.Add(4 * time.Hour).UnixNano()}}).Draw(rt, "query"),
		}
		w := splice.NewWatchStepper(d, req)
		defer w.Close()
		keys := rapid.IntRange(2, 30).Draw(rt, "keys")
		now := t0
		var prev map[string]json.RawMessage
		for step := range rapid.IntRange(2, 12).Draw(rt, "steps") {
			now = stepTimed(rt, d, in, now, keys, step)
			res, ev, _, err := w.Step()
			full, ferr := splice.Evaluate(context.Background(), d, req)
			if ferr != nil || err != nil {
				if errors.Is(ferr, splice.ErrNotFound) && errors.Is(err, splice.ErrNotFound) {
					prev = nil
					continue
				}
				rt.Fatalf("step %d: the watch's error %v, a full evaluation's %v", step, err, ferr)
			}
			got, want := windowValues(res.Windows), windowValues(full.Windows)
			if !sameRaw(got, want) || res.More != full.More {
				rt.Fatalf("step %d: the watch's answer is %s (more %v), a full evaluation's %s (more %v)", step, mapString(got), res.More, mapString(want), full.More)
			}
			if prev != nil && ev != nil {
				if after := applyWindowsEvent(rt, prev, ev); !sameRaw(after, want) {
					rt.Fatalf("step %d: the event %s applied to %s gives %s, a full evaluation %s", step, ev, mapString(prev), mapString(after), mapString(want))
				}
			} else if prev != nil && !sameRaw(prev, want) {
				rt.Fatalf("step %d: no event, but the answer went from %s to %s", step, mapString(prev), mapString(want))
			}
			prev = want
		}
	})
}

// Events in open windows only make a windowed view's watch follow the
// changes.
func TestWatchWindowsFollowsChanges(t *testing.T) {
	t0 := time.Date(2026, 11, 2, 6, 0, 0, 0, time.UTC)
	in := flowstest.NewInput[timedKey](2)
	d, err := flowstest.New(windowViewsFlow(in), time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, view := range []string{"keys", "sliding", "sliced"} {
		w := splice.NewWatchStepper(d, splice.Request{View: view, Op: splice.OpWindows})
		for step := range 6 {
			for i := range 20 {
				in.Push(i%2, timedKey{fmt.Sprintf("k%d", (i*7+step)%13), t0.Add(time.Duration(step*5+i%3) * time.Minute)})
			}
			if err := d.Drain(); err != nil {
				t.Fatal(err)
			}
			_, _, delta, err := w.Step()
			if err != nil {
				t.Fatal(err)
			}
			if step > 0 && !delta {
				t.Errorf("%s: step %d evaluated the whole view", view, step)
			}
		}
		w.Close()
	}
}

// windowValues maps a windowed answer's windows, by start, to their JSON
// as a watch's events carry them.
func windowValues(ws []splice.Window) map[string]json.RawMessage {
	m := make(map[string]json.RawMessage, len(ws))
	for _, w := range ws {
		m[w.Start.Format(time.RFC3339Nano)], _ = json.Marshal(w)
	}
	return m
}
