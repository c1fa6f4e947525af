package flowstest_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
)

// An event near the largest time Unix nanoseconds hold (April 2262), in a
// window or session whose end lies past it, was neither in any result nor
// sent to TooLate: the end of its window (start + size) or session (time
// + gap) overflowed int64 and wrapped to 1677, and two such events a
// minute apart, with a gap of an hour, made two sessions. An event time
// outside [MinEventTime, MaxEventTime) now goes to the dead letters with
// its offset; no event is lost silently.
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
		must(t, d.Drain())
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
		for _, dl := range d.DeadLetters() {
			if !strings.Contains(dl.Error, "is outside") {
				t.Errorf("%s: dead letter %+v", tc.name, dl)
			}
			seen[dl.Offset+1] = true // events 1 and 2 are at offsets 0 and 1
		}
		for _, w := range []int64{1, 2} {
			if !seen[w] {
				t.Errorf("%s: event %d is in no result and not too late (results %v, too late %v)", tc.name, w, results.Values(), tooLate.Values())
			}
		}
		d.Close()
	}
}

// A flow that names a span of time beyond MaxTimeSpan fails when it is
// built, before anything starts: its windows' ends could overflow.
func TestSpansBeyondMaxTimeSpanFailTheFlow(t *testing.T) {
	long := flows.MaxTimeSpan + time.Hour
	for name, build := range map[string]func(flows.KeyedStream[string, wev]){
		"window": func(ks flows.KeyedStream[string, wev]) { flows.WindowAggregate(ks, flows.Tumbling(long), noW, addW) },
		"lateness": func(ks flows.KeyedStream[string, wev]) {
			flows.WindowAggregate(ks, flows.Tumbling(time.Hour), noW, addW, flows.AllowedLateness(long))
		},
		"gap": func(ks flows.KeyedStream[string, wev]) { flows.SessionAggregate(ks, long, noW, addW, mergeW) },
		"ttl": func(ks flows.KeyedStream[string, wev]) { flows.Count(ks, flows.WithStateTTL(long)) },
	} {
		in := flowstest.NewInput[wev](1)
		f := flows.New("spans", flows.WithFragments(1))
		build(flows.KeyBy(flows.From(f, "events", in, flows.WithEventTime(func(e wev) time.Time { return e.At }, 0)),
			func(e wev) string { return e.Key }))
		if _, err := flowstest.New(f, time.Unix(0, 0)); err == nil || !strings.Contains(err.Error(), "beyond the longest span") {
			t.Errorf("%s of %v: the flow built (%v)", name, long, err)
		}
	}
	in := flowstest.NewInput[wev](1)
	f := flows.New("spans", flows.WithFragments(1))
	flows.From(f, "events", in, flows.WithEventTime(func(e wev) time.Time { return e.At }, long))
	if _, err := flowstest.New(f, time.Unix(0, 0)); err == nil {
		t.Errorf("out-of-orderness of %v: the flow built", long)
	}
}

// Restamp's times are held to the same range as a source's: an event it
// dates outside [MinEventTime, MaxEventTime) (a zero time, a missing
// field) goes to the dead letters, and the window downstream counts the
// others.
func TestRestampOutsideEventTimeIsDeadLettered(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	in := flowstest.NewInput[wev](1)
	f := flows.New("restamp-range", flows.WithFragments(1))
	ks := flows.KeyBy(flows.From(f, "events", in, flows.WithEventTime(func(e wev) time.Time { return e.At }, time.Hour)),
		func(e wev) string { return e.Key })
	dated := flows.Restamp(ks.Values(), func(e wev) time.Time {
		if e.W == 2 {
			return time.Time{} // year 1
		}
		return e.At
	})
	w := flows.WindowAggregate(flows.KeyBy(dated, func(e wev) string { return e.Key }), flows.Tumbling(time.Hour), noW, addW)
	results := flowstest.Collect(w.Results())
	d, err := flowstest.New(f, time.Unix(0, 0))
	must(t, err)
	defer d.Close()
	d.MaxAttempts = 1
	in.Push(0, wev{Key: "a", At: t0, W: 1}, wev{Key: "a", At: t0.Add(time.Minute), W: 2}, wev{Key: "a", At: t0.Add(2 * time.Minute), W: 4})
	in.Close()
	must(t, d.Settle())
	var sum int64
	for _, r := range results.Values() {
		sum += r.Value.Sum
	}
	dead := d.DeadLetters()
	if sum != 5 || len(dead) != 1 || !strings.Contains(dead[0].Error, "is outside") || dead[0].Offset != 1 {
		t.Fatalf("window sums %d (want 5, events 1 and 4), dead letters %+v (want event 2's)", sum, dead)
	}
}
