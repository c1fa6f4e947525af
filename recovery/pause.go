package recovery

import "time"

// PauseClock is a node's rule for noticing that its process was stopped
// (SIGSTOP, a paused VM or container, a stall of the whole process) long
// enough for the others to have taken its fragments over. Whatever is
// about to act on the fragments' state reads the clock (Observe); a gap
// between two readings longer than the limit is a pause. The first
// reading after it counts the pause once, and every later reading sees
// the new count: a fragment compares the count with the one it last
// handled (Machine.FollowPauses) before it applies or releases anything.
// Declare counts a pause the node learned of otherwise (the membership
// refuted its death).
//
// The limit is the least time a node must be silent before the others
// may declare it dead and place its fragments elsewhere: a shorter stop
// cannot have let another node take a fragment over, and a longer one
// may have. A node in a cluster derives it from its failure detector
// (cluster.PauseLimit); the simulation from its own (sim.Config).
//
// PauseClock is pure: time is passed in, and it is not safe for
// concurrent use (the actor package guards the node's clock with a lock,
// its fragments read it from their own goroutines; the simulation drives
// each node from one goroutine).
type PauseClock struct {
	limit time.Duration
	last  time.Time // the latest reading
	count uint64    // pauses seen
}

// NewPauseClock makes the pause clock of a node whose fragments the
// others may take over after limit of silence; limit ≤ 0 notices no
// pause (Declare still counts).
func NewPauseClock(limit time.Duration) *PauseClock {
	return &PauseClock{limit: limit}
}

// Limit is the longest gap between two readings that is not a pause.
func (p *PauseClock) Limit() time.Duration { return p.limit }

// Observe records that the process runs at now and returns the number of
// pauses seen so far, and the gap if this reading found one. A reading
// older than the latest (readers race for the lock) moves nothing.
func (p *PauseClock) Observe(now time.Time) (count uint64, gap time.Duration) {
	if !p.last.IsZero() && p.limit > 0 && now.Sub(p.last) > p.limit {
		p.count++
		gap = now.Sub(p.last)
	}
	if now.After(p.last) {
		p.last = now
	}
	return p.count, gap
}

// Declare counts a pause the node learned of from the others.
func (p *PauseClock) Declare() uint64 {
	p.count++
	return p.count
}

// Count is the number of pauses seen so far.
func (p *PauseClock) Count() uint64 { return p.count }

// FollowPauses is what a fragment does with its node's pause count
// (PauseClock) before it handles anything: if the count moved past
// *handled, the count it last handled, the node was paused (or declared
// dead) since, another node may have owned the fragment meanwhile, and
// the fragment drops its state (Resumed). It records count in *handled
// and reports whether it dropped the state. A fragment that starts takes
// the node's count at its start as handled.
func (m *Machine) FollowPauses(count uint64, handled *uint64) bool {
	if count == *handled {
		return false
	}
	*handled = count
	m.Resumed()
	return true
}

// FollowPauses is the same rule for the node's alert log: after a pause
// it has not handled, an owner drops the step it has not committed and
// catches up again (Resumed).
func (l *AlertLog) FollowPauses(count uint64, handled *uint64, now time.Time) bool {
	if count == *handled {
		return false
	}
	*handled = count
	l.Resumed(now)
	return true
}
