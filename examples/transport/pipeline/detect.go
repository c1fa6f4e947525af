// Package pipeline is the transport example's computation: trips detected
// from pings per subscriber, and the metrics counted from them — hourly
// and daily origin–destination (OD) matrices, travel times per OD pair,
// people on the move per zone — as a Tessera flow (Flow), as a plain
// sequential program over the same input (Sequential), and scored
// against a simulation's ground truth (Score).
//
// The flow and the sequential program share the detector's steps (the
// flow steps a ping in place with ping, which OnPing wraps; OnTimer) and
// the cells' arithmetic; only the driving differs.
//
// The detector is written for the engine's hot path: its state (Stay) and
// its input (Event) hold no pointer and no time.Time, a step gives its
// outputs and timers in fixed arrays, a subscriber's state expires by one
// event-time timer per TTL (set again when it fires early) rather than
// one moved at every ping, and a subscriber on the move is emitted once
// per zone and window of people on the move, which count distinct
// subscribers (BenchmarkFlow measures the flow's CPU per ping).
//
// A departure is dated from the anchor stay's own cell: it lies between
// the last ping by that cell and the first by another (a ping-pong
// handover comes back and clears it), at most Lead before the latter.
// A run in a zone becomes a stay by its dwell time, or by a silence
// after it if the phone looked settled there: not handed from cell to
// cell (Params.Settled).
package pipeline

import (
	"time"

	"github.com/tessera-streams/tessera/examples/transport/sim"
)

// Params are the detector's.
type Params struct {
	// Dwell: a run of pings in one zone spanning this long is a stay.
	Dwell time.Duration
	// Silence: a run whose phone then stays silent this long (no ping
	// elsewhere) is a stay too, if the phone looked still when last seen.
	Silence time.Duration
	// Settled: a silent run of more than two pings is a stay only if one
	// cell served it this long (a phone passing through a zone is handed
	// from cell to cell).
	Settled time.Duration
	// PingPong: a run in another zone shorter than this that returns to
	// the zone before is a ping-pong handover, not a move: the run before
	// goes on.
	PingPong time.Duration
	// Lead: how long a phone that leaves takes, typically, to show it by
	// a ping elsewhere (a handover or a session on the way): a departure
	// is dated this long before the first such ping, but not before the
	// last ping at the stay. (On the simulator, 4 minutes: the median
	// wait is under that, but a slow or silent start pulls it later.)
	Lead time.Duration
	// TTL: a subscriber's state expires after this long without pings.
	TTL time.Duration
	// Lateness: how long after their end the OD windows take trips (a
	// trip is dated by its departure but known only once its destination
	// stay is confirmed).
	Lateness time.Duration
	// MaxDelay: pings arrive out of order by up to this.
	MaxDelay time.Duration
	// MoveEvery: the windows of people on the move. A subscriber's move
	// is emitted once per zone and window: the windows count distinct
	// subscribers.
	MoveEvery time.Duration
}

// DefaultParams are the example's, for the simulator's default noise.
func DefaultParams() Params {
	return Params{Dwell: 25 * time.Minute, Silence: time.Hour, Settled: 12 * time.Minute, PingPong: 4 * time.Minute, Lead: 4 * time.Minute,
		TTL: 6 * time.Hour, Lateness: 6 * time.Hour, MaxDelay: sim.DefaultConfig().MaxDelay(), MoveEvery: 15 * time.Minute}
}

// Stay is a subscriber's detection state. Its times are Unix nanoseconds
// (0: none), so that it holds no pointer: a map of a million of them costs
// the garbage collector nothing.
type Stay struct {
	Started  bool
	Run      Run   // the current run of pings in one zone
	Prev     Run   // the run before
	PrevLast int64 // its last ping
	Last     int64
	// The last confirmed stay: its zone and cell, its last ping by that
	// cell, and the first ping since by another (0: none): the departure
	// lies between the two.
	HasAnchor  bool
	Anchor     int32
	AnchorCell int32 // the cell that served the phone at the stay
	AnchorEnd  int64
	Left       int64
	Outside    bool // the last ping was outside Anchor
	// The zone and MoveEvery window of the last move emitted.
	MoveZone   int32
	MoveWindow int64
	// Expiry is the time of the state's expiry timer: when it fires, the
	// state goes if TTL has passed since the last ping, or the timer is
	// set again to when it will have. (One timer per TTL, not a timer
	// moved at every ping.)
	Expiry int64
}

// Run is a run of consecutive pings in one zone.
type Run struct {
	Since int64 // its first ping
	Zone  int32
	Pings int32
	// The cells of its last three pings, the last first (as many as it
	// has pings).
	Cell, Cell1, Cell2 int32
	// The cell the phone stays at in the run: its first, or the last one
	// to serve two pings in a row since (a ping-pong handover away and
	// back leaves it), and the first ping of that stretch.
	Still      int32
	StillSince int64
}

// still says whether the phone looked still at the run's last ping: seen
// by the cell of the ping before, or of the one before that (a ping-pong
// handover to a neighbour and back). A phone passing through a zone is
// handed from cell to cell.
func (r Run) still() bool {
	return r.Pings > 1 && r.Cell == r.Cell1 || r.Pings > 2 && r.Cell == r.Cell2
}

// stillCell is the cell the phone looked still at: the last one, unless
// it was a ping-pong handover away from the one before and the one before
// that.
func (r Run) stillCell() int32 {
	if r.Pings > 2 && r.Cell != r.Cell1 && r.Cell != r.Cell2 && r.Cell1 == r.Cell2 {
		return r.Cell1
	}
	return r.Cell
}

// add adds a ping by cell; prev is the time of the run's ping before.
func (r *Run) add(cell int32, prev int64) {
	if cell != r.Still && cell == r.Cell {
		r.Still, r.StillSince = cell, prev
	}
	r.Pings++
	r.Cell2, r.Cell1, r.Cell = r.Cell1, r.Cell, cell
}

func newRun(zone, cell int32, at int64) Run {
	return Run{Zone: zone, Since: at, Pings: 1, Cell: cell, Still: cell, StillSince: at}
}

// settled says whether a phone last seen at time last, looking still,
// had settled in the run: seen there once or twice only (the arrival
// and perhaps a ping on), or by one cell for at least span. A phone
// that goes silent while passing through a zone, seen by a few of its
// cells in turn, has not shown where it stopped, even if its last two
// pings came from one cell.
func (r Run) settled(last int64, span time.Duration) bool {
	return r.Pings <= 2 || last-r.StillSince >= int64(span)
}

// Detected is what the detector emits: a trip, or (Move) a subscriber on
// the move, seen in zone To at Arrive.
type Detected struct {
	Move   bool
	Sub    uint64
	From   int32
	To     int32
	Depart time.Time
	Arrive time.Time
}

// Minutes is a trip's travel time.
func (d Detected) Minutes() float64 { return d.Arrive.Sub(d.Depart).Minutes() }

// Step is what a step of the detector asks for beside the next state:
// what to emit (a move, a trip, or both: D[:N]), event-time timers to set
// (0: none), and whether the state expired.
type Step struct {
	N      int
	D      [2]Detected
	Timers [2]int64
	Clear  bool
}

func (o *Step) add(d Detected) { o.D[o.N] = d; o.N++ }

func unix(ns int64) time.Time { return time.Unix(0, ns).UTC() }

// OnPing is the detector's step for a ping by a cell of zone at time at
// (Unix nanoseconds). It returns the next state and what to do: timers to
// set, and what to emit: a move, or a trip to a stay the ping confirms.
func (p Params) OnPing(sub uint64, s Stay, cell, zone int32, at int64) (next Stay, out Step) {
	p.ping(sub, &s, cell, zone, at, &out)
	return s, out
}

// ping is OnPing on the state in place (*out must be zero on entry): the
// flow's step, which copies neither the state (some 150 bytes) nor the
// step in and out.
func (p Params) ping(sub uint64, s *Stay, cell, zone int32, at int64, out *Step) {
	if !s.Started {
		out.Timers = [2]int64{at + int64(p.Silence), at + int64(p.TTL)}
		*s = Stay{Started: true, Run: newRun(zone, cell, at), Last: at, Expiry: out.Timers[1]}
		return
	}
	switch {
	case zone == s.Run.Zone:
		s.Run.add(cell, s.Last)
	case zone == s.Prev.Zone && s.Prev.Pings > 0 && at-s.Run.Since <= int64(p.PingPong) &&
		s.Run.Since-s.PrevLast <= int64(p.PingPong):
		// Back from a short excursion (a ping-pong handover, which
		// comes with other pings, not after a silence): the run before
		// goes on, and its timer, set when it began, is still to come or
		// has found it elsewhere; this ping may confirm it.
		s.Run = s.Prev
		s.Run.add(cell, s.PrevLast)
	default:
		s.Prev, s.Run, s.PrevLast = s.Run, newRun(zone, cell, at), s.Last
		out.Timers[0] = at + int64(p.Silence)
	}
	s.Last = at
	if s.HasAnchor {
		// Still at the anchor: served by its cell. The first ping by
		// another cell is the departure's best evidence: a phone leaving
		// is handed over within minutes; a ping-pong handover comes back
		// to the anchor's cell and clears it.
		switch {
		case zone == s.Anchor && cell == s.AnchorCell:
			s.AnchorEnd, s.Left = at, 0
		case s.Left == 0:
			s.Left = at
		case zone == s.Anchor && s.Run.still() && at-s.Left >= int64(p.Dwell):
			// Still in the anchor's zone, by another cell, for the
			// dwell time: that cell serves the stay now.
			s.AnchorCell, s.AnchorEnd, s.Left = cell, at, 0
		}
		// On the move: outside the anchor twice in a row (a ping-pong
		// handover is one ping away and one back); once per zone and
		// window.
		if zone != s.Anchor && s.Outside {
			if w := at - at%int64(p.MoveEvery); zone != s.MoveZone || w != s.MoveWindow {
				s.MoveZone, s.MoveWindow = zone, w
				out.add(Detected{Move: true, Sub: sub, To: zone, Arrive: unix(at)})
			}
		}
		s.Outside = zone != s.Anchor
	}
	// Seen in the zone over the dwell time: a stay, moving or not.
	if p.isNew(s) && at >= s.Run.Since+int64(p.Dwell) {
		if t, ok := p.confirm(sub, s); ok {
			out.add(t)
		}
	}
}

func (p Params) isNew(s *Stay) bool { return !s.HasAnchor || s.Run.Zone != s.Anchor }

// OnTimer is the detector's step for a timer at time at: if the current
// run began the silence time ago with no ping elsewhere since, and the
// phone looked still when last seen, it is a stay, and if it is not in
// the anchor's zone, a trip ends there. (A phone last seen passing
// through and then silent has not shown where it stopped.) At the
// expiry timer, the state goes if the phone has been silent for TTL.
func (p Params) OnTimer(sub uint64, s Stay, at int64) (Stay, Step) {
	var out Step
	if !s.Started {
		return s, out
	}
	if at >= s.Run.Since+int64(p.Silence) && p.isNew(&s) && s.Run.still() && s.Run.settled(s.Last, p.Settled) {
		if t, ok := p.confirm(sub, &s); ok {
			out.add(t)
		}
	}
	if s.Expiry != 0 && at >= s.Expiry {
		if at >= s.Last+int64(p.TTL) {
			out.Clear = true
			return Stay{}, out
		}
		s.Expiry = s.Last + int64(p.TTL)
		out.Timers[0] = s.Expiry
	}
	return s, out
}

// confirm makes the current run the anchor, and returns the trip from the
// anchor before: it left at the first ping outside that anchor.
func (p Params) confirm(sub uint64, s *Stay) (Detected, bool) {
	var t Detected
	ok := s.HasAnchor && s.Run.Zone != s.Anchor
	if ok {
		depart := s.Left
		if depart == 0 || depart > s.Run.Since {
			depart = s.Run.Since
		}
		depart = max(depart-int64(p.Lead), s.AnchorEnd)
		t = Detected{Sub: sub, From: s.Anchor, To: s.Run.Zone, Depart: unix(depart), Arrive: unix(s.Run.Since)}
	}
	s.HasAnchor, s.Anchor, s.AnchorCell, s.AnchorEnd, s.Left, s.Outside = true, s.Run.Zone, s.Run.stillCell(), s.Last, 0, false
	return t, ok
}
