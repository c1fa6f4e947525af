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
// to one that the node that made it had caught up with (Cut: the list
// stops there, or after maxBefore).
type Agreement struct {
	Placed
	Before []Placed
	Cut    bool
}

// maxBefore bounds Agreement.Before: a node gossips its agreement.
const maxBefore = 8

// Quorum reports whether side may own fragments under a. Side holds a
// majority of a's members (Majority), and a member of side caught up
// with what was settled before a (CaughtUp); or, until one has, side
// holds a majority of the agreed membership before a as well, and a
// member caught up with what was settled before that one; and so on down
// a.Before. caught gives the newest placement epoch each member of side
// caught up with (0 or missing: none).
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
// majority of both (TestQuorumSideKnowsWhatWasSettled). This is Raft's
// joint consensus in the form a membership change takes here: the old
// membership's majority is needed too until the new one has heard it.
func (a Agreement) Quorum(side []string, caught map[string]uint64) bool {
	if !Majority(a.Members, side) {
		return false
	}
	var newest uint64
	for _, m := range side {
		newest = max(newest, caught[m])
	}
	if newest >= a.Epoch {
		return true
	}
	for _, p := range a.Before {
		if !Majority(p.Members, side) {
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
		next.Before, next.Cut = a.Before, a.Cut
	case a.Epoch > 0:
		next.Before, next.Cut = append([]Placed{a.Placed}, a.Before...), a.Cut
		for i, q := range next.Before {
			if caught >= q.Epoch && i+1 < len(next.Before) {
				next.Before, next.Cut = next.Before[:i+1], true
				break
			}
		}
		if len(next.Before) > maxBefore {
			next.Before, next.Cut = next.Before[:maxBefore], true
		}
	}
	next.Before = slices.Clone(next.Before)
	return next
}

// Prev is the agreed membership before a (none for a cluster's first
// placement, or one kept before Before existed).
func (a Agreement) Prev() Placed {
	if len(a.Before) == 0 {
		return Placed{}
	}
	return a.Before[0]
}

// CaughtUp reports whether a node that applied a placement knows of every
// checkpoint settled before it, given prev, the agreed membership before
// it (nil for a cluster's first placement), and heard, the members that
// told it all they know of settled checkpoints after they applied the
// placement (the node itself among them if it was a member of prev).
// They must hold a majority of prev, whose members settled under prev
// only what a majority of prev knew; and one of them must have caught up
// with prev itself (anyCaught), for what was settled before prev.
func CaughtUp(prev, heard []string, anyCaught bool) bool {
	return len(prev) == 0 || anyCaught && Majority(prev, heard)
}

// CatchUp follows a node's catching up with what was settled before the
// placement it applied (CaughtUp): the members that told it all they
// knew once they applied the placement, and whether one of them, or the
// node itself, had caught up with the agreed membership before it. The
// zero value has applied no placement. Not safe for concurrent use.
type CatchUp struct {
	epoch     uint64
	prev      []string
	was       bool // the node had caught up with prev when it applied epoch
	heard     map[string]bool
	anyCaught bool
	caught    bool
	// early are the reports of members that applied a placement the node
	// has not applied yet, by epoch.
	early map[uint64][]catchUpReport
}

type catchUpReport struct {
	from   string
	caught bool
}

// Agree starts catching up with the placement of epoch that node self
// applied, made by a majority of prev (nil: a cluster's first); was: the
// node had caught up with prev. The node's own knowledge counts as heard.
// A placement of the epoch already applied (a resume) changes nothing.
func (c *CatchUp) Agree(epoch uint64, prev []string, self string, was bool) {
	if c.epoch == epoch && c.heard != nil {
		return
	}
	early := c.early
	*c = CatchUp{epoch: epoch, prev: slices.Clone(prev), was: was || len(prev) == 0,
		heard: map[string]bool{self: true}, early: map[uint64][]catchUpReport{}}
	c.anyCaught = c.was
	for e, rs := range early {
		switch {
		case e == epoch:
			for _, r := range rs {
				c.hear(r)
			}
		case e > epoch:
			c.early[e] = rs
		}
	}
	c.check()
}

// Hear takes member from's report that it applied the placement of epoch
// and told the node all it knew, the node holding it now; caught: from
// had caught up with the agreed membership before that placement (or
// with it).
func (c *CatchUp) Hear(epoch uint64, from string, caught bool) {
	r := catchUpReport{from: from, caught: caught}
	switch {
	case epoch == c.epoch && c.heard != nil:
		c.hear(r)
		c.check()
	case epoch > c.epoch:
		if c.early == nil {
			c.early = map[uint64][]catchUpReport{}
		}
		c.early[epoch] = append(c.early[epoch], r)
	}
}

func (c *CatchUp) hear(r catchUpReport) {
	c.heard[r.from] = true
	c.anyCaught = c.anyCaught || r.caught
}

func (c *CatchUp) check() {
	if !c.caught && CaughtUp(c.prev, slices.Sorted(maps.Keys(c.heard)), c.anyCaught) {
		c.caught = true
	}
}

// Report is what the node's own report of its placement says (Hear's
// arguments), and whether it has anything to report: a cluster's first
// placement has nothing before it to catch up with.
func (c *CatchUp) Report() (epoch uint64, caught, tell bool) {
	return c.epoch, c.was || c.caught, len(c.prev) > 0
}

// CaughtUp reports whether the node caught up with what was settled
// before its placement of epoch.
func (c *CatchUp) CaughtUp(epoch uint64) bool { return c.epoch == epoch && c.caught }
