package shard

import (
	"maps"
	"slices"
)

// Majority reports whether the members of side may own fragments, given
// agreed, the membership of the last placement applied (the last agreed
// membership). A side owns when it holds more than half of agreed; when it
// holds exactly half, it owns only if it holds the lowest-ordered member of
// agreed (so of two halves of an even split exactly one goes on, and both
// sides compute the same answer from the same agreed list without talking).
// With no agreed membership (a cluster that never placed) any side may own:
// the first placement is the bootstrap. Members of side that are not in
// agreed (nodes joining) do not count.
//
// This is the rule of a split-brain resolver that keeps the majority (as
// Akka's "keep-majority"): the two sides of a partition cannot both hold a
// majority of the same list, so at most one of them places and owns, and a
// new agreed list is only ever made by a majority of the one before. The
// price is availability: a side without a majority stops (its fragments
// release nothing) until it sees a majority again — a cluster that lost
// more than half of its members at once, or a half of two that lost its
// lowest member, waits for them to come back rather than risk two owners.
func Majority(agreed, side []string) bool {
	if len(agreed) == 0 {
		return true
	}
	n := 0
	lowest := agreed[0]
	for _, m := range agreed {
		lowest = min(lowest, m)
		if slices.Contains(side, m) {
			n++
		}
	}
	switch {
	case 2*n > len(agreed):
		return true
	case 2*n == len(agreed):
		return slices.Contains(side, lowest)
	}
	return false
}

// Placed is a placement's membership: its epoch and members.
type Placed struct {
	Epoch   uint64   `json:"epoch"`
	Members []string `json:"members"`
}

// Agreement is an agreed membership, as a node counts its majority
// against it (Quorum): the members of the last placement applied, and
// the agreed memberships before it, newest first (Before): the one whose
// majority made it, and so on back to the cluster's first placement, or
// to one that the node that applied it had caught up with (Cut: the list
// stops there; each node cuts its own list, so two nodes' lists of one
// placement may differ in length, and a shorter one only asks more of a
// side). A list kept before Before existed is empty and not cut: a
// majority of the members alone, as then.
type Agreement struct {
	Placed
	Before []Placed
	Cut    bool
}

// Quorum reports whether side may own fragments under a. Side holds a
// majority of a's members (Majority), and a member of side caught up
// with what was settled before a (CatchUp); or, until one has, side
// knows of it together (Knows): it holds a majority of the agreed
// membership before a as well, and a member caught up with what was
// settled before that one; and so on down a.Before. caught gives the
// newest placement epoch each member of side caught up with (0 or
// missing: none).
//
// A majority of a's members alone does not always hold a member that
// knows of the checkpoints settled before a. They are known to a
// majority of the placement they were settled under, and each member
// tells the others what it knows once it applies a new placement; a
// member that placement added, or one cut off as it was applied, may
// never hear it. A half of two holding the lowest member is a majority
// of the two: a node that joined a lone survivor, then was cut off from
// it, owned the survivor's fragments alone and started them from
// nothing, behind checkpoints whose outputs were released (sim visits
// seed 22890). What was settled under each membership down the list, a
// majority of it in side holds a member that knows of; what was settled
// before, the member that caught up knows of. A majority of the one
// before alone is not enough: a placement made twice in a row, before
// the members of the first heard anything, gives its new members a
// majority of both (TestQuorumSideKnowsWhatWasSettled); and asking the
// members of that one to have caught up with the one before it stalled
// a cluster for good once a placement no member caught up with was
// followed by others (sim visits seeds 1123, 3669, 5068). This is Raft's
// joint consensus in the form a membership change takes here: the old
// memberships' majorities are needed too until the new one has heard
// them.
func (a Agreement) Quorum(side []string, caught map[string]uint64) bool {
	if !Majority(a.Members, side) {
		return false
	}
	var newest uint64
	for _, m := range side {
		newest = max(newest, caught[m])
	}
	return newest >= a.Epoch || a.Knows(side, newest)
}

// Knows reports whether the members of set know, together, of every
// checkpoint settled before a: they hold a majority of each agreed
// membership before a (a.Before) down to one that a member of set
// caught up with (newest: the newest epoch one caught up with), or down
// to the cluster's first. What was settled under each of those, a
// majority of it knew before it applied a newer placement (a member
// that applied a newer one does not count among those that know:
// recovery.Known); what was settled before, the member that caught up
// knows of.
func (a Agreement) Knows(set []string, newest uint64) bool {
	for _, p := range a.Before {
		if !Majority(p.Members, set) {
			return false
		}
		if newest >= p.Epoch {
			return true
		}
	}
	return !a.Cut
}

// Next is the agreement once a node applies placement p, a being the
// one it counted its majority against (or p's already, which a peer
// applied first) and caught the newest epoch the node caught up with.
func (a Agreement) Next(p Placed, caught uint64) Agreement {
	next := Agreement{Placed: Placed{Epoch: p.Epoch, Members: slices.Clone(p.Members)}}
	switch {
	case a.Epoch >= p.Epoch:
		next.Before, next.Cut = slices.Clone(a.Before), a.Cut
	case a.Epoch > 0:
		next.Before, next.Cut = append([]Placed{a.Placed}, a.Before...), a.Cut
		for i, q := range next.Before {
			if caught >= q.Epoch && i+1 < len(next.Before) {
				next.Before, next.Cut = next.Before[:i+1], true
				break
			}
		}
	}
	return next
}

// Extend is a, a newer agreement than own that a peer gossips, with own's
// list in place of a's from own's placement on, if a's list is cut and
// names it: a peer cuts its list where it caught up, and gossip cuts it
// shorter where it would not fit, and a list cut where no member caught
// up lets no side own. The lists of one placement name the same
// memberships, so the longer one only asks more of a side, or goes back
// to the cluster's first placement.
func (a Agreement) Extend(own Agreement) Agreement {
	if a.Epoch <= own.Epoch || !a.Cut || own.Epoch == 0 {
		return a
	}
	for i, q := range a.Before {
		if q.Epoch == own.Epoch {
			a.Before = append(append(slices.Clone(a.Before[:i]), own.Placed), own.Before...)
			a.Cut = own.Cut
			break
		}
	}
	return a
}

// CatchUp follows a node's catching up with what was settled before the
// placement it applied: the members that told it all they knew once they
// applied the placement, and the newest placement epoch any of them, or
// the node, caught up with. Once they know together of every checkpoint
// settled before it (Agreement.Knows), the node does too. The zero value
// has applied no placement. Not safe for concurrent use.
type CatchUp struct {
	a      Agreement
	heard  map[string]bool
	own    uint64 // the newest epoch the node caught up with
	newest uint64 // ... it or a member heard
	// early are the reports of members that applied a placement the node
	// has not applied yet, by epoch.
	early map[uint64][]catchUpReport
}

type catchUpReport struct {
	from   string
	caught uint64
}

// Agree starts catching up with a, the agreement of the placement node
// self applied; caught is the newest epoch the node caught up with. The
// node's own knowledge counts as heard. A placement of the epoch already
// applied (a resume) changes nothing.
func (c *CatchUp) Agree(a Agreement, self string, caught uint64) {
	if c.a.Epoch == a.Epoch && c.heard != nil {
		return
	}
	early := c.early
	*c = CatchUp{a: a, heard: map[string]bool{self: true}, own: caught, newest: caught, early: map[uint64][]catchUpReport{}}
	for e, rs := range early {
		switch {
		case e == a.Epoch:
			for _, r := range rs {
				c.hear(r)
			}
		case e > a.Epoch:
			c.early[e] = rs
		}
	}
}

// Hear takes member from's report that it applied the placement of epoch
// and told the node all it knew, the node holding it now; caught is the
// newest epoch from caught up with when it told it (a report carries
// what its sender knew when it caught up).
func (c *CatchUp) Hear(epoch uint64, from string, caught uint64) {
	r := catchUpReport{from: from, caught: caught}
	switch {
	case epoch == c.a.Epoch && c.heard != nil:
		c.hear(r)
	case epoch > c.a.Epoch:
		if c.early == nil {
			c.early = map[uint64][]catchUpReport{}
		}
		c.early[epoch] = append(c.early[epoch], r)
	}
}

func (c *CatchUp) hear(r catchUpReport) {
	c.heard[r.from] = true
	c.newest = max(c.newest, r.caught)
}

// Caught is the newest placement epoch the node caught up with: its
// placement's once what it heard knows of every checkpoint settled
// before it.
func (c *CatchUp) Caught() uint64 {
	if c.heard != nil && c.own < c.a.Epoch &&
		(c.newest >= c.a.Epoch || c.a.Knows(slices.Sorted(maps.Keys(c.heard)), c.newest)) {
		c.own = c.a.Epoch // a reporter that caught up with it told all it knew
	}
	return c.own
}

// Report is what the node's own report of its placement says (Hear's
// arguments), and whether it has anything to report: a cluster's first
// placement has nothing before it to catch up with.
func (c *CatchUp) Report() (epoch, caught uint64, tell bool) {
	return c.a.Epoch, c.Caught(), len(c.a.Before) > 0
}

// CaughtUp reports whether the node caught up with what was settled
// before its placement of epoch.
func (c *CatchUp) CaughtUp(epoch uint64) bool { return c.a.Epoch == epoch && c.Caught() >= epoch }
