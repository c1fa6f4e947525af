package recovery

import "slices"

// Gather is the wait of a fragment gained from an owner that died: before
// it starts, it asks every live member for the copy it keeps of the
// fragment and starts from the newest lineage among the answers and its
// own copy, rather than from its own copy alone. A standby that moved, or
// that leaves, or a node that owned the fragment before may keep a newer
// copy than the new owner's; starting from an older one beside it gives
// the fragment two histories (sim visits seeds 275, 1361 and 2037).
//
// A copy is judged by its lineage (the larger epoch is the newer lineage,
// or later in the same one: MachineConfig.Confirm), as a hand-off is. The
// gather ends once every member asked answered — a copy or none — or the
// wait for a hand-off ends. C is the copy as the carrier keeps it (the
// actor's hand-off message, the simulation's encoded checkpoint).
type Gather[C any] struct {
	pending []string // members asked that did not answer yet
	best    C
	lineage uint64
	from    string
	has     bool
}

// NewGather starts a gather over the members asked (not the node itself).
func NewGather[C any](asked []string) *Gather[C] {
	return &Gather[C]{pending: slices.Clone(asked)}
}

// Copy records member from's copy of lineage. It returns the copy that is
// no longer the best (the one replaced, or this one if it is not newer),
// for the carrier to confirm to its sender at once: only the best is
// taken, and confirmed when it is. An answer from a member not asked, or
// asked and answered already, still competes (a leaving node hands its
// copy off unasked).
func (g *Gather[C]) Copy(from string, lineage uint64, c C) (dropped C, dropFrom string, ok bool) {
	g.answered(from)
	if g.has && lineage <= g.lineage {
		return c, from, true
	}
	dropped, dropFrom, ok = g.best, g.from, g.has
	g.best, g.lineage, g.from, g.has = c, lineage, from, true
	return dropped, dropFrom, ok
}

// None records that member from keeps no copy.
func (g *Gather[C]) None(from string) { g.answered(from) }

func (g *Gather[C]) answered(from string) {
	g.pending = slices.DeleteFunc(g.pending, func(m string) bool { return m == from })
}

// Left drops from the members still to answer those a newer placement
// no longer counts as live (live false): a member that died after it was
// asked never answers, and the gather does not wait the whole hand-off
// wait for it.
func (g *Gather[C]) Left(live func(string) bool) {
	g.pending = slices.DeleteFunc(g.pending, func(m string) bool { return !live(m) })
}

// Done reports whether every member asked answered.
func (g *Gather[C]) Done() bool { return len(g.pending) == 0 }

// Pending lists the members that did not answer yet.
func (g *Gather[C]) Pending() []string { return slices.Clone(g.pending) }

// Best is the newest copy offered, its lineage and its sender; ok is false
// if no member offered one.
func (g *Gather[C]) Best() (c C, lineage uint64, from string, ok bool) {
	return g.best, g.lineage, g.from, g.has
}
