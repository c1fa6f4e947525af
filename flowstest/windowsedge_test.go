package flowstest_test

import (
	"math"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
)

// An event near the largest time Unix nanoseconds hold (April 2262), in a
// window or session whose end lies past it, is neither in any result nor
// sent to TooLate: it is dropped silently, which WindowAggregate's and
// SessionAggregate's docs promise never happens; and two such events a
// minute apart, with a gap of an hour, make two sessions, not one. The end
// of the window (start + size) and of the session (time + gap) overflow
// int64 (windows.go, windowslice.go, sessions.go add them unchecked) and
// wrap to 1677, before every watermark.
func TestWindowsNearTheEndOfUnixNanoTime(t *testing.T) {
	top := time.Unix(0, math.MaxInt64).Add(-30 * time.Minute) // a window of an hour from it ends past 2262-04-11 23:47:16
	for _, tc := range []struct {
		name  string
		build func(flows.KeyedStream[string, wev]) flows.Windowed[string, wev, wstats]
	}{
		{"tumbling", func(ks flows.KeyedStream[string, wev]) flows.Windowed[string, wev, wstats] {
			return flows.WindowAggregate(ks, flows.Tumbling(time.Hour), noW, addW)
		}},
		{"sliced", func(ks flows.KeyedStream[string, wev]) flows.Windowed[string, wev, wstats] {
			return flows.WindowAggregateMerge(ks, flows.Sliding(time.Hour, 20*time.Minute), noW, addW, mergeW)
		}},
		{"sessions", func(ks flows.KeyedStream[string, wev]) flows.Windowed[string, wev, wstats] {
			return flows.SessionAggregate(ks, time.Hour, noW, addW, mergeW)
		}},
	} {
		in := flowstest.NewInput[wev](1)
		f := flows.New("end-of-time", flows.WithFragments(1))
		ks := flows.KeyBy(flows.From(f, "events", in, flows.WithEventTime(func(e wev) time.Time { return e.At }, 0)),
			func(e wev) string { return e.Key })
		w := tc.build(ks)
		results, tooLate := flowstest.Collect(w.Results()), flowstest.Collect(w.TooLate())
		d, err := flowstest.New(f, time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		in.Push(0, wev{Key: "a", At: top, W: 1}, wev{Key: "a", At: top.Add(time.Minute), W: 2})
		in.Close()
		if err := d.Drain(); err != nil {
			t.Fatal(err)
		}
		// Every event in some result, or too late.
		seen := map[int64]bool{}
		for _, r := range results.Values() {
			if r.End.Before(r.Start) {
				t.Errorf("%s: result %v..%v ends before it starts", tc.name, r.Start, r.End)
			}
			if tc.name == "sessions" && r.Value.N != 2 {
				t.Errorf("%s: session %v..%v of %d events; both events a minute apart are in one session of gap 1h", tc.name, r.Start, r.End, r.Value.N)
			}
			for _, w := range []int64{1, 2} {
				if r.Value.Sum == w || r.Value.Sum == 3 {
					seen[w] = true
				}
			}
		}
		for _, e := range tooLate.Values() {
			seen[e.W] = true
		}
		for _, w := range []int64{1, 2} {
			if !seen[w] {
				t.Errorf("%s: event %d is in no result and not too late (results %v, too late %v)", tc.name, w, results.Values(), tooLate.Values())
			}
		}
		d.Close()
	}
}
