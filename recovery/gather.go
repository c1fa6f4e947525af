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
	settled uint64 // the newest settled checkpoint known (Know)
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

// Settled is what a node knows of the newest settled checkpoint of every
// fragment of a flow (Machine.SettledEpoch, by fragment): its owners tell
// every member when one settles, and every member passes it on in its
// answers to a gather and in its hand-offs. It only grows (the largest
// epoch wins), so the order news comes in does not matter.
//
// It keeps a fragment from starting behind released outputs when every
// copy of them is on members that are down: a fragment about to start from
// a copy older than the newest settled checkpoint known of it (Short)
// stays unavailable and gathers the live members' copies again whenever
// the placement changes, until a member that keeps one is back —
// consistency over availability, as the majority rule chose for
// partitions, and as Kafka does without unclean leader election. Started
// from an older copy, or from nothing, it released other values under the
// ids of outputs the sinks had (sim visits seeds 1123 and 2383: the
// standby died, then the owner; a partition left both owners and both
// standbys on the side without a majority). That the members learn of a
// checkpoint before it settles, not after, is Known's rule: an owner
// releases a checkpoint only once a majority of its placement's members
// knows of it, so the owner and its standby may both die, or be cut off
// together, the moment it settled.
type Settled map[int]uint64

// Note records that fragment f settled a checkpoint of epoch; it reports
// whether that is news.
func (s Settled) Note(f int, epoch uint64) bool {
	if epoch <= s[f] {
		return false
	}
	s[f] = epoch
	return true
}

// Merge records every entry of o, and reports whether any was news.
func (s Settled) Merge(o Settled) bool {
	news := false
	for f, e := range o {
		if s.Note(f, e) {
			news = true
		}
	}
	return news
}

// Short reports whether a fragment would start from a copy of lineage
// have (0: none) behind the newest settled checkpoint known of it.
func Short(have, settled uint64) bool { return have < settled }

// Know records the newest settled checkpoint of the fragment that a member
// that answered, or the node itself, knows of (Settled).
func (g *Gather[C]) Know(settled uint64) { g.settled = max(g.settled, settled) }

// Lacks reports whether the gather ends without a copy the fragment may
// start from: the best copy offered and the node's own (own: its
// lineage, 0 for none) are both older than the newest settled checkpoint
// known, which is then returned (Short).
func (g *Gather[C]) Lacks(own uint64) (settled uint64, lacks bool) {
	have := own
	if g.has {
		have = max(have, g.lineage)
	}
	return g.settled, Short(have, g.settled)
}
