package recovery_test

import (
	"testing"
	"time"

	"github.com/tessera-streams/tessera/recovery"
)

// The pause rule on a virtual clock: readings closer than the limit are
// no pause; the first reading after a longer gap counts one pause, and
// every later reading (or one taken before the pause and handed in late)
// sees it counted.
func TestPauseClock(t *testing.T) {
	const limit = 1150 * time.Millisecond
	t0 := time.Unix(1_000_000, 0)
	p := recovery.NewPauseClock(limit)
	for i := range 40 { // 2 s of ticks every 50 ms: no pause
		if n, gap := p.Observe(t0.Add(time.Duration(i) * 50 * time.Millisecond)); n != 0 || gap != 0 {
			t.Fatalf("tick %d: %d pauses, gap %v", i, n, gap)
		}
	}
	last := t0.Add(39 * 50 * time.Millisecond)
	if n, _ := p.Observe(last.Add(limit)); n != 0 {
		t.Fatal("a gap of exactly the limit counted as a pause")
	}
	last = last.Add(limit)
	// SIGSTOP for 3 s. A reading taken before the stop and handed in after
	// the first reading after it sees the pause, not a second one.
	before := last.Add(10 * time.Millisecond)
	after := last.Add(3 * time.Second)
	n, gap := p.Observe(after)
	if n != 1 || gap != 3*time.Second {
		t.Fatalf("after a 3s stop: %d pauses, gap %v; want 1, 3s", n, gap)
	}
	if n, gap := p.Observe(before); n != 1 || gap != 0 {
		t.Fatalf("a late reading: %d pauses, gap %v", n, gap)
	}
	if n, gap := p.Observe(after.Add(50 * time.Millisecond)); n != 1 || gap != 0 {
		t.Fatalf("the tick after: %d pauses, gap %v", n, gap)
	}
	if n := p.Declare(); n != 2 || p.Count() != 2 {
		t.Fatalf("declared: %d pauses", n)
	}

	// No limit: the clock is not watched.
	p = recovery.NewPauseClock(0)
	p.Observe(t0)
	if n, _ := p.Observe(t0.Add(time.Hour)); n != 0 {
		t.Fatal("a clock without a limit counted a pause")
	}
}

// A fragment follows its node's pause count: a count it has not handled
// drops its state once (Resumed: a restore, then a wait for a hand-off);
// the same count again does nothing, and a fragment that started after
// the pause took its count as handled.
func TestMachineFollowPauses(t *testing.T) {
	r, ms := exchangeWorld(t, recovery.MachineConfig{})
	m := ms[0]
	m.Step(r.batch(t, 0, 0, 6, 0), reader(0))
	r.checkpoint(t, m, 0)
	var handled uint64
	if m.FollowPauses(0, &handled) || m.Resuming() {
		t.Fatal("no pause, yet the fragment dropped its state")
	}
	if !m.FollowPauses(1, &handled) || handled != 1 || !m.Resuming() || !m.Ready().Restore {
		t.Fatalf("after a pause: handled %d, resuming %v", handled, m.Resuming())
	}
	m.Restored(r.restore(t, 0), false)
	if !m.Waiting() {
		t.Fatal("restored after a pause, the fragment does not wait for a hand-off")
	}
	if m.FollowPauses(1, &handled) || m.Resuming() {
		t.Fatal("the same pause dropped the state twice")
	}
	started := uint64(1)
	if ms[1].FollowPauses(1, &started) || ms[1].Resuming() {
		t.Fatal("a fragment that started after the pause dropped its state")
	}
}
