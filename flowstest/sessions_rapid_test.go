package flowstest_test

import (
	"reflect"
	"testing"
	"time"

	"pgregory.net/rapid"
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
		got, tooLate := runSessions(t, evs, gap, delay, lateness)
		want, wantTooLate := referenceSessions(evs, gap, delay, lateness)
		sortEmissions(got)
		sortEmissions(want)
		if !reflect.DeepEqual(got, want) || tooLate != wantTooLate {
			t.Fatalf("emitted %+v (%d too late), want %+v (%d)", got, tooLate, want, wantTooLate)
		}
	})
}
