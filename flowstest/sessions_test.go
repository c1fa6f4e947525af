package flowstest_test

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
)

type emission struct {
	key        string
	start, end int64
	n          int
	firing     flows.Firing
}

type refSession struct {
	start, end int64
	n          int
	fired      bool
}

// referenceSessions runs session windows sequentially, one event at a time:
// every emission and the too-late events.
func referenceSessions(evs []click, gap, delay, lateness time.Duration) ([]emission, int) {
	state := map[string][]refSession{}
	var out []emission
	tooLate := 0
	wm, maxTS := int64(flowcore.NoWatermark), int64(flowcore.NoWatermark)
	for _, e := range evs {
		ts := e.At.UnixNano()
		if wm != flowcore.NoWatermark && ts+int64(gap)+int64(lateness) <= wm {
			tooLate++
		} else {
			n := refSession{start: ts, end: ts + int64(gap), n: 1}
			var keep []refSession
			for _, s := range state[e.User] {
				if s.start < n.end && n.start < s.end {
					n.start, n.end, n.n = min(n.start, s.start), max(n.end, s.end), n.n+s.n
					continue
				}
				keep = append(keep, s)
			}
			n.fired = wm != flowcore.NoWatermark && n.end <= wm
			if n.fired {
				out = append(out, emission{e.User, n.start, n.end, n.n, flows.Late})
			}
			state[e.User] = append(keep, n)
		}
		maxTS = max(maxTS, ts)
		wm = max(wm, maxTS-int64(delay))
		for k, ss := range state {
			var keep []refSession
			for _, s := range ss {
				if !s.fired && s.end <= wm {
					s.fired = true
					out = append(out, emission{k, s.start, s.end, s.n, flows.OnTime})
				}
				if s.end+int64(lateness) > wm {
					keep = append(keep, s)
				}
			}
			state[k] = keep
		}
	}
	for k, ss := range state { // the end of the input completes event time
		for _, s := range ss {
			if !s.fired {
				out = append(out, emission{k, s.start, s.end, s.n, flows.OnTime})
			}
		}
	}
	return out, tooLate
}

func sortEmissions(es []emission) {
	slices.SortFunc(es, func(a, b emission) int {
		return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
	})
}

// runSessions counts clicks per user in sessions on one fragment, one
// event per batch (as the reference runs them): every emission, and the
// number of events too late.
func runSessions(t interface{ Fatal(...any) }, evs []click, gap, delay, lateness time.Duration) ([]emission, int) {
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
	return got, len(late.Values())
}

func TestSessionAggregateExact(t *testing.T) {
	const (
		gap             = 30 * time.Second
		delay, lateness = 5 * time.Second, 20 * time.Second
	)
	rng := rand.New(rand.NewPCG(8, 9))
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	var evs []click
	clock := t0
	for range 2000 {
		clock = clock.Add(time.Duration(rng.IntN(15000)) * time.Millisecond)
		at := clock.Add(-time.Duration(rng.Int64N(int64(delay))))
		if rng.IntN(8) == 0 {
			at = clock.Add(-delay - time.Duration(rng.Int64N(int64(time.Minute))))
		}
		evs = append(evs, click{User: []string{"a", "b", "c", "d"}[rng.IntN(4)], At: at})
	}
	got, tooLate := runSessions(t, evs, gap, delay, lateness)
	lateFirings := 0
	for _, e := range got {
		if e.firing == flows.Late {
			lateFirings++
		}
	}
	want, wantTooLate := referenceSessions(evs, gap, delay, lateness)
	sortEmissions(got)
	sortEmissions(want)
	if !reflect.DeepEqual(got, want) {
		count := map[emission]int{}
		for _, e := range got {
			count[e]++
		}
		for _, e := range want {
			count[e]--
		}
		for e, n := range count {
			if n != 0 {
				t.Logf("%+v (%s..%s): engine %+d", e, time.Unix(0, e.start).UTC().Format("15:04:05"), time.Unix(0, e.end).UTC().Format("15:04:05"), n)
			}
		}
		t.Fatalf("%d emissions, want %d", len(got), len(want))
	}
	if lateFirings == 0 || wantTooLate == 0 || tooLate != wantTooLate {
		t.Fatalf("late refinements %d, too late %d (want %d): the data must exercise both", lateFirings, tooLate, wantTooLate)
	}
}

// Session state survives checkpoints and crashes: the final sessions are
// those of an uninterrupted run.
func TestSessionAggregateRestore(t *testing.T) {
	evs := walkClicks(rand.New(rand.NewPCG(10, 11)), 1500, []string{"a", "b", "c"}, 20*time.Second, 3*time.Second)
	run := func(faults bool) map[emission]bool {
		rs := windowsWithFaults(t, evs, 3, 5, 3*time.Second, faults, func(ks flows.KeyedStream[string, click]) flows.Windowed[string, click, int] {
			return flows.SessionAggregate(ks, time.Minute, func() int { return 0 }, func(n int, _ click) int { return n + 1 },
				func(a, b int) int { return a + b })
		})
		out := map[emission]bool{}
		for _, r := range rs {
			out[emission{r.Key, r.Start.UnixNano(), r.End.UnixNano(), r.Value, r.Firing}] = true
		}
		return out
	}
	clean, faulty := run(false), run(true)
	if len(clean) == 0 || !reflect.DeepEqual(clean, faulty) {
		t.Fatalf("with crashes %d distinct emissions, without %d", len(faulty), len(clean))
	}
}
