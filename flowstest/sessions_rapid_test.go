package flowstest_test

import (
	"reflect"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
)

// Session windows emit what the sequential reference emits, for random
// events (out of order, late, too late), gaps, out-of-orderness and
// lateness: one timer per key, moved on when it comes, fires every session
// once on time and drops it after its lateness. One fragment: its
// watermark is the reference's (on several, a fragment learns of the
// watermark with its own batches).
func TestSessionAggregateMatchesReference(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		sec := func(lo, hi int, name string) time.Duration {
			return time.Duration(rapid.IntRange(lo, hi).Draw(t, name)) * time.Second
		}
		gap, delay, lateness := sec(1, 20, "gap"), sec(0, 5, "delay"), sec(0, 15, "lateness")
		clock := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
		var evs []click
		for range rapid.IntRange(1, 150).Draw(t, "events") {
			clock = clock.Add(time.Duration(rapid.Int64Range(0, int64(8*time.Second)).Draw(t, "step")))
			at := clock.Add(-time.Duration(rapid.Int64Range(0, int64(delay)).Draw(t, "jitter")))
			if rapid.IntRange(0, 7).Draw(t, "late") == 0 {
				at = clock.Add(-delay - sec(0, 40, "lag"))
			}
			evs = append(evs, click{User: rapid.SampledFrom([]string{"a", "b", "c"}).Draw(t, "user"), At: at})
		}
		in := flowstest.NewInput[click](1)
		f := flows.New("sessions", flows.WithFragments(1))
		ks := flows.KeyBy(flows.From(f, "clicks", in, flows.WithEventTime(func(c click) time.Time { return c.At }, delay)),
			func(c click) string { return c.User })
		w := flows.SessionAggregate(ks, gap, func() int { return 0 }, func(n int, _ click) int { return n + 1 },
			func(a, b int) int { return a + b }, flows.AllowedLateness(lateness))
		results, late := flowstest.Collect(w.Results()), flowstest.Collect(w.TooLate())
		d, err := flowstest.New(f, time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		d.BatchSize = 1
		in.Push(0, evs...)
		in.Close()
		if err := d.Drain(); err != nil {
			t.Fatal(err)
		}
		var got []emission
		for _, r := range results.Values() {
			got = append(got, emission{r.Key, r.Start.UnixNano(), r.End.UnixNano(), r.Value, r.Firing})
		}
		want, wantTooLate := referenceSessions(evs, gap, delay, lateness)
		sortEmissions(got)
		sortEmissions(want)
		if !reflect.DeepEqual(got, want) || len(late.Values()) != wantTooLate {
			t.Fatalf("emitted %+v (%d too late), want %+v (%d)", got, len(late.Values()), want, wantTooLate)
		}
	})
}
