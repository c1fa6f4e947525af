package actor

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/splice"
)

// A view's answer carries the watermark of the channel that feeds its
// stage, not the fragment's own (the least of its channels'): in a flow
// that keys again after a window, the window's view is complete up to the
// source's watermark while the second stage's exchange lags. Before, the
// window view took the exchange's watermark: with no checkpoint yet (a
// fragment releases its exchange outputs with its checkpoints) it had
// none, and window=latest found no complete window.
func TestViewFreshnessIsItsStagesWatermark(t *testing.T) {
	t0 := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	in := flowstest.NewInput[oeReading](2)
	f := flows.New("stagewm", flows.WithFragments(4))
	src := flows.From(f, "readings", flows.Source[oeReading](in), flows.WithEventTime(func(r oeReading) time.Time { return r.At }, time.Second))
	w := flows.WindowAggregate(flows.KeyBy(src, func(r oeReading) string { return r.Sensor }), flows.Tumbling(time.Minute),
		func() int64 { return 0 }, func(n int64, r oeReading) int64 { return n + r.V }).KeyedView("sums", time.Hour)
	// The second stage: how many sensors reported in each minute.
	byMinute := flows.KeyBy(w.Results(), func(r flows.WindowResult[string, int64]) int64 { return r.Start.Unix() })
	flows.Count(byMinute).View("sensors")

	store := oeOpen(t, t.TempDir())
	defer store.Close()
	e := oeStart(t, f, Config{Store: store, TickInterval: 5 * time.Millisecond, CheckpointInterval: time.Hour})
	defer e.Stop()

	want := map[string]int64{} // minute 2's sums
	for m := range 4 {
		for p := range 2 {
			for i := range 30 {
				rd := oeReading{Sensor: fmt.Sprintf("s%d", (i+p)%5), At: t0.Add(time.Duration(m)*time.Minute + time.Duration(i)*2*time.Second), V: int64(1 + i%3)}
				if m == 2 {
					want[rd.Sensor] += rd.V
				}
				in.Push(p, rd)
			}
		}
	}
	// The readings of minute 3 pass minute 2's end on both partitions.
	end := t0.Add(3*time.Minute + 58*time.Second - time.Second)
	latest := splice.Request{View: "sums", Op: splice.OpEntries, Query: splice.Query{Latest: true, Limit: 100}}
	var res splice.Result
	oeWait(t, "the window view complete up to the source's watermark", func() bool {
		var err error
		res, err = splice.Evaluate(context.Background(), e, latest)
		if err != nil || len(res.Freshness) != 4 {
			return false
		}
		for _, fr := range res.Freshness {
			if fr.Watermark == nil || fr.Watermark.Before(end) {
				return false
			}
		}
		return true
	})
	if len(res.KeyedWindows) != 1 || !res.KeyedWindows[0].Start.Equal(t0.Add(2*time.Minute)) || !res.KeyedWindows[0].Complete {
		t.Fatalf("window=latest answered %+v, want the complete window of minute 2", res.KeyedWindows)
	}
	got := map[string]int64{}
	for _, en := range res.KeyedWindows[0].Entries {
		got[en.Key] = en.Value.(int64)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("window=latest: minute 2's sums %v, want %v", got, want)
	}
	// The case the rule is for: the exchange lags (no checkpoint has
	// released a window's result), and so does the fragment's own
	// watermark, and the second stage's view.
	for _, fr := range e.Freshness() {
		if fr.Watermark != nil && !fr.Watermark.Before(end) {
			t.Fatalf("fragment %d's own watermark %v: the exchange does not lag, and the test shows nothing", fr.Fragment, fr.Watermark)
		}
	}
	res, err := splice.Evaluate(context.Background(), e, splice.Request{View: "sensors", Op: splice.OpEntries, Query: splice.Query{Limit: 100}})
	if err != nil {
		t.Fatal(err)
	}
	for _, fr := range res.Freshness {
		if fr.Watermark != nil && !fr.Watermark.Before(end) {
			t.Fatalf("the second stage's view answered fragment %d at watermark %v, past its exchange's", fr.Fragment, fr.Watermark)
		}
	}
}
