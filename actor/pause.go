package actor

import (
	"sync"
	"time"

	pa "github.com/asynkron/protoactor-go/actor"

	"github.com/tessera-streams/tessera/recovery"
)

// pauseClock is the node's recovery.PauseClock, shared by the fragment
// actors, the engine's ticker and the alerts: every goroutine that is about
// to act on the fragments' state reads it through Observe, and each
// follows the count it returns (recovery.Machine.FollowPauses,
// recovery.AlertLog.FollowPauses). The limit is cluster.PauseLimit, set
// from the gossip and settle timings.
type pauseClock struct {
	mu sync.Mutex
	c  *recovery.PauseClock
}

func newPauseClock(limit time.Duration) *pauseClock {
	return &pauseClock{c: recovery.NewPauseClock(limit)}
}

// Observe records that the process runs at now and returns the number of
// pauses seen so far, and the gap if this reading found one.
func (p *pauseClock) Observe(now time.Time) (count uint64, gap time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.c.Observe(now)
}

// Declare counts a pause the node learned of from the others.
func (p *pauseClock) Declare() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.c.Declare()
}

// Count is the number of pauses seen so far.
func (p *pauseClock) Count() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.c.Count()
}

// limit is the pause limit (fixed at the start).
func (p *pauseClock) limit() time.Duration { return p.c.Limit() }

// pausedMsg makes a fragment read the pause clock (it does on every
// message); the engine sends it once it noticed a pause, so that idle
// fragments drop their state too.
type pausedMsg struct{}

// Resumed tells the engine that the others declared its node dead while it
// ran on (its membership refuted the death): its fragments are treated as
// after a pause its own clock noticed. See doc.go, "A paused node".
func (e *Engine) Resumed(why string) {
	if e.pause == nil {
		return
	}
	n := e.pause.Declare()
	e.cfg.Logger.Warn("this node was declared dead by the others: its fragments restore and wait for a hand-off", "why", why, "pauses", n)
	e.pokePaused()
}

// watchPause reads the pause clock on the engine's ticker; after a pause
// it tells every local fragment (and the alerts).
func (e *Engine) watchPause(now time.Time, seen *uint64) {
	n, gap := e.pause.Observe(now)
	if n == *seen {
		return
	}
	*seen = n
	e.notePause(gap)
	e.pokePaused()
}

// notePause logs a pause found by a reading of the clock (gap > 0): one
// reading finds each.
func (e *Engine) notePause(gap time.Duration) {
	if gap > 0 {
		e.cfg.Logger.Warn("this node was paused longer than the others wait before taking its fragments over: they restore and wait for a hand-off",
			"paused", gap.Round(time.Millisecond), "limit", e.pause.limit())
	}
}

// pauseCount is the pauses seen so far (0 outside a cluster).
func (e *Engine) pauseCount() uint64 {
	if e.pause == nil {
		return 0
	}
	return e.pause.Count()
}

// Pauses is how often the node was found paused or declared dead.
func (e *Engine) Pauses() uint64 { return e.pauseCount() }

func (e *Engine) pokePaused() {
	l := e.layout.Load()
	if l == nil {
		return
	}
	for _, pid := range l.frags {
		e.sys.Root.Send(pid, pausedMsg{})
	}
	e.pausedAlerts()
}

// checkPause is called first by a fragment on every message: after a pause
// it drops the fragment's state (recovery.Machine.Resumed) before the
// message is handled.
func (fa *fragmentActor) checkPause(c pa.Context) {
	p := fa.e.pause
	if p == nil {
		return
	}
	n, gap := p.Observe(time.Now())
	fa.e.notePause(gap)
	if !fa.m.FollowPauses(n, &fa.pauses) {
		return
	}
	fa.e.cfg.Logger.Info("fragment drops its state after a pause", "fragment", fa.id)
	fa.carry(c)
}
