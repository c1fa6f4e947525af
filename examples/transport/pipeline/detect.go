// Package pipeline is the transport example's computation: trips detected
// from pings per subscriber, and the metrics counted from them — hourly
// and daily origin–destination (OD) matrices, travel times per OD pair,
// people on the move per zone — as a Tessera flow (Flow), as a plain
// sequential program over the same input (Sequential), and scored
// against a simulation's ground truth (Score).
//
// The flow and the sequential program share the detector's steps (OnPing,
// OnTimer) and the cells' arithmetic; only the driving differs.
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
	// PingPong: a run in another zone shorter than this that returns to
	// the zone before is a ping-pong handover, not a move: the run before
	// goes on.
	PingPong time.Duration
	// Lead: how long a phone that leaves takes, typically, to show it by
	// a ping elsewhere (a handover or a session on the way): a departure
	// is dated this long before the first such ping, but not before the
	// last ping at the stay. (On the simulator, about 5 minutes.)
	Lead time.Duration
	// TTL: a subscriber's state expires after this long without pings.
	TTL time.Duration
	// Lateness: how long after their end the OD windows take trips (a
	// trip is dated by its departure but known only once its destination
	// stay is confirmed).
	Lateness time.Duration
	// MaxDelay: pings arrive out of order by up to this.
	MaxDelay time.Duration
}

// DefaultParams are the example's, for the simulator's default noise.
func DefaultParams() Params {
	return Params{Dwell: 25 * time.Minute, Silence: time.Hour, PingPong: 4 * time.Minute, Lead: 5 * time.Minute,
		TTL: 6 * time.Hour, Lateness: 6 * time.Hour, MaxDelay: sim.DefaultConfig().MaxDelay()}
}

// Stay is a subscriber's detection state.
type Stay struct {
	Started bool
	Run     Run // the current run of pings in one zone
	Prev    Run // the run before
	Last    time.Time
	// The last confirmed stay: its zone and cell, its last ping by that
	// cell, and the first ping since by another (zero: none): the
	// departure lies between the two.
	HasAnchor  bool
	Anchor     int32
	AnchorCell int32 // the cell that served the phone at the stay
	AnchorEnd  time.Time
	Left       time.Time
	Outside    bool // the last ping was outside Anchor
}

// Run is a run of consecutive pings in one zone.
type Run struct {
	Zone  int32
	Since time.Time // its first ping
	Pings int32
	// The cells of its last three pings, the last first (as many as it
	// has pings).
	Cell, Cell1, Cell2 int32
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

func (r *Run) add(cell int32) {
	r.Pings++
	r.Cell2, r.Cell1, r.Cell = r.Cell1, r.Cell, cell
}

// Detected is what the detector emits: a trip, or (Move) a ping of a
// subscriber on the move, in zone To at Arrive.
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

// OnPing is the detector's step for a ping by a cell of zone at time
// at. It returns the next state, the time of a timer to set (zero: none),
// and what to emit: a move, or a trip to a stay the ping confirms.
func (p Params) OnPing(sub uint64, s Stay, cell, zone int32, at time.Time) (next Stay, timer time.Time, out []Detected) {
	if !s.Started {
		return Stay{Started: true, Run: Run{Zone: zone, Since: at, Pings: 1, Cell: cell}, Last: at}, at.Add(p.Silence), nil
	}
	switch {
	case zone == s.Run.Zone:
		s.Run.add(cell)
	case zone == s.Prev.Zone && s.Prev.Pings > 0 && at.Sub(s.Run.Since) <= p.PingPong:
		// Back from a short excursion (a ping-pong handover): the run
		// before goes on, and its timer, set when it began, is still to
		// come or has found it elsewhere; this ping may confirm it.
		s.Run = s.Prev
		s.Run.add(cell)
	default:
		s.Prev, s.Run = s.Run, Run{Zone: zone, Since: at, Pings: 1, Cell: cell}
		timer = at.Add(p.Silence)
	}
	s.Last = at
	if s.HasAnchor {
		// Still at the anchor: served by its cell. The first ping by
		// another cell is the departure's best evidence: a phone leaving
		// is handed over within minutes; a ping-pong handover comes back
		// to the anchor's cell and clears it.
		switch {
		case zone == s.Anchor && cell == s.AnchorCell:
			s.AnchorEnd, s.Left = at, time.Time{}
		case s.Left.IsZero():
			s.Left = at
		case zone == s.Anchor && s.Run.still() && at.Sub(s.Left) >= p.Dwell:
			// Still in the anchor's zone, by another cell, for the
			// dwell time: that cell serves the stay now.
			s.AnchorCell, s.AnchorEnd, s.Left = cell, at, time.Time{}
		}
		// On the move: outside the anchor twice in a row (a ping-pong
		// handover is one ping away and one back).
		if zone != s.Anchor && s.Outside {
			out = append(out, Detected{Move: true, Sub: sub, To: zone, Arrive: at})
		}
		s.Outside = zone != s.Anchor
	}
	// Seen in the zone over the dwell time: a stay, moving or not.
	if p.isNew(s) && !at.Before(s.Run.Since.Add(p.Dwell)) {
		var t *Detected
		if s, t = p.confirm(sub, s); t != nil {
			out = append(out, *t)
		}
	}
	return s, timer, out
}

func (p Params) isNew(s Stay) bool { return !s.HasAnchor || s.Run.Zone != s.Anchor }

// OnTimer is the detector's step for a timer at time at: if the current
// run began the silence time ago with no ping elsewhere since, and the
// phone looked still when last seen, it is a stay, and if it is not in
// the anchor's zone, a trip ends there. (A phone last seen passing
// through and then silent has not shown where it stopped.)
func (p Params) OnTimer(sub uint64, s Stay, at time.Time) (Stay, *Detected) {
	if !s.Started || at.Before(s.Run.Since.Add(p.Silence)) || !p.isNew(s) || !s.Run.still() {
		return s, nil
	}
	return p.confirm(sub, s)
}

// confirm makes the current run the anchor, and returns the trip from the
// anchor before: it left at the first ping outside that anchor.
func (p Params) confirm(sub uint64, s Stay) (Stay, *Detected) {
	var t *Detected
	if s.HasAnchor && s.Run.Zone != s.Anchor {
		depart := s.Left
		if depart.IsZero() || depart.After(s.Run.Since) {
			depart = s.Run.Since
		}
		if early := depart.Add(-p.Lead); early.After(s.AnchorEnd) {
			depart = early
		} else {
			depart = s.AnchorEnd
		}
		t = &Detected{Sub: sub, From: s.Anchor, To: s.Run.Zone, Depart: depart, Arrive: s.Run.Since}
	}
	s.HasAnchor, s.Anchor, s.AnchorCell, s.AnchorEnd, s.Left, s.Outside = true, s.Run.Zone, s.Run.stillCell(), s.Last, time.Time{}, false
	return s, t
}
