package sim_test

import (
	"strings"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/splice"
)

// TestVisitsInOneProcessEqualReference runs the visits flow in one
// process with no faults (flowstest) and checks every sink against the
// sequential reference: the reference and the flow agree before any
// cluster fault is thrown at them.
func TestVisitsInOneProcessEqualReference(t *testing.T) {
	seeds := uint64(12)
	if raceDetector {
		seeds = 4 // each costs ten times as much, and finds no other race
	}
	for seed := uint64(1); seed <= seeds; seed++ {
		v := newVisitsFlow(seed, 1+int(seed%5), 1+int(seed%3))
		d, err := flowstest.New(v.f, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		if err != nil {
			t.Fatal(err)
		}
		d.BatchSize = 16 + int(seed)*8
		for range 6 {
			v.push(300)
			if err := d.Drain(); err != nil {
				t.Fatal(err)
			}
		}
		v.end()
		for _, step := range []func() error{d.Settle, d.Checkpoint, d.Settle} {
			if err := step(); err != nil {
				t.Fatal(err)
			}
		}
		problems := v.outputProblems()
		for _, view := range []string{"open", "visits"} {
			if es, err := d.Entries(view, splice.Query{Limit: 1 << 20}); err != nil || len(es) > 0 {
				t.Errorf("seed %d: view %s: %d entries left (%v)", seed, view, len(es), err)
			}
		}
		if len(d.DeadLetters()) > 0 {
			t.Errorf("seed %d: dead letters %v", seed, d.DeadLetters())
		}
		want := v.reference()
		if len(want.visits) == 0 || len(want.windows) == 0 || len(want.counts) == 0 || v.lates == 0 {
			t.Errorf("seed %d: the reference is too thin: %d visits, %d windows, %d counts, %d late hits",
				seed, len(want.visits), len(want.windows), len(want.counts), v.lates)
		}
		if len(problems) > 0 {
			t.Errorf("seed %d (%d hits, jitter %v):\n%s", seed, len(v.hits), v.jitter, strings.Join(problems, "\n"))
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRandomVisitSchedules runs TestRandomSchedules' fault schedules over
// the visits world (visitsworld_test.go): skewed keys, event time, a
// Process with timers and a TTL, windows and a count with a TTL after
// exchanges, sinks by output id, and an input that ends while faults go
// on, a node crashing right at its end half the time. Every schedule must
// end exact: every sink holds the reference's outputs, one value per id.
func TestRandomVisitSchedules(t *testing.T) {
	n := *schedules
	if n == 0 {
		n = 100
		if raceDetector {
			n = 10
		}
	}
	if testing.Short() {
		n = min(n, 10)
	}
	runSchedules(t, n, "TestRandomVisitSchedules", newVisitsWorld)
}
