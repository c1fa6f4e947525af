package flowstest_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
)

// walkClicks makes n clicks by users, a random step of up to maxStep apart,
// each up to jitter earlier than its place in the walk.
func walkClicks(rng *rand.Rand, n int, users []string, maxStep, jitter time.Duration) []click {
	clock := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	evs := make([]click, 0, n)
	for range n {
		clock = clock.Add(time.Duration(rng.Int64N(int64(maxStep))))
		evs = append(evs, click{User: users[rng.IntN(len(users))], At: clock.Add(-time.Duration(rng.Int64N(int64(jitter))))})
	}
	return evs
}

// windowsWithFaults runs a window operator built by build over evs (one
// partition, keyed by user, event time with the given out-of-orderness).
// With faults, it checkpoints every hundred events and crashes a fragment
// forty events later. It returns every result emitted.
func windowsWithFaults(t *testing.T, evs []click, fragments, batch int, delay time.Duration, faults bool,
	build func(flows.KeyedStream[string, click]) flows.Windowed[string, click, int]) []flows.WindowResult[string, int] {
	t.Helper()
	in := flowstest.NewInput[click](1)
	f := flows.New("windows", flows.WithFragments(fragments))
	ks := flows.KeyBy(flows.From(f, "clicks", in, flows.WithEventTime(func(c click) time.Time { return c.At }, delay)),
		func(c click) string { return c.User })
	results := flowstest.Collect(build(ks).Results())
	d, err := flowstest.New(f, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.BatchSize = batch
	for i, e := range evs {
		in.Push(0, e)
		if faults && i%100 == 50 {
			if err := d.Drain(); err != nil {
				t.Fatal(err)
			}
			if err := d.Checkpoint(); err != nil {
				t.Fatal(err)
			}
		}
		if faults && i%100 == 90 {
			if err := d.Crash(i % fragments); err != nil {
				t.Fatal(err)
			}
		}
	}
	in.Close()
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	return results.Values()
}

// randomFault takes one of n choices, as rng picks: a checkpoint, a crash
// of a fragment, a restart of every fragment, or (the other n-3) nothing.
func randomFault(d *flowstest.Driver, rng *rand.Rand, n int) error {
	switch rng.IntN(n) {
	case 0:
		return d.Checkpoint()
	case 1:
		return d.Crash(rng.IntN(len(d.Freshness())))
	case 2:
		return d.Restart()
	}
	return nil
}

// pushInChunks pushes parts[p] to partition p of in, a chunk of 1 to most
// events of each partition in turn, and after each round drains d and
// takes a random fault (randomFault, one in five).
func pushInChunks[T any](d *flowstest.Driver, in *flowstest.Input[T], parts [][]T, rng *rand.Rand, most int) error {
	pos := make([]int, len(parts))
	for more := true; more; {
		more = false
		for p := range parts {
			n := min(len(parts[p])-pos[p], 1+rng.IntN(most))
			in.Push(p, parts[p][pos[p]:pos[p]+n]...)
			pos[p] += n
			more = more || pos[p] < len(parts[p])
		}
		if err := d.Drain(); err != nil {
			return err
		}
		if err := randomFault(d, rng, 5); err != nil {
			return err
		}
	}
	return nil
}

// must fails the test on err.
func must(t interface {
	Helper()
	Fatal(...any)
}, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
