package shard

import "slices"

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
