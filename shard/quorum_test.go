package shard

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

func TestMajority(t *testing.T) {
	cases := []struct {
		agreed, side []string
		want         bool
	}{
		{nil, []string{"n3"}, true}, // never placed: the bootstrap
		{[]string{"n1", "n2", "n3"}, []string{"n1", "n2"}, true},
		{[]string{"n1", "n2", "n3"}, []string{"n3"}, false},
		{[]string{"n1", "n2", "n3"}, []string{"n3", "n4", "n5"}, false}, // joiners do not count
		{[]string{"n1", "n2"}, []string{"n1"}, true},                    // the half with the lowest member
		{[]string{"n1", "n2"}, []string{"n2"}, false},
		{[]string{"n4", "n2", "n3", "n1"}, []string{"n2", "n3"}, false},
		{[]string{"n4", "n2", "n3", "n1"}, []string{"n1", "n4"}, true},
		{[]string{"n1"}, []string{"n1"}, true},
		{[]string{"n1"}, nil, false},
	}
	for _, c := range cases {
		if got := Majority(c.agreed, c.side); got != c.want {
			t.Errorf("Majority(%v, %v) = %v, want %v", c.agreed, c.side, got, c.want)
		}
	}
}

// Any split of the agreed members into two sides (nodes joining on
// either side) lets exactly one side own: never both, never neither.
func TestMajorityOneSide(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 9).Draw(t, "n")
		var agreed, a, b []string
		for i := range n {
			m := fmt.Sprintf("n%d", i+1)
			agreed = append(agreed, m)
			if rapid.Bool().Draw(t, "side") {
				a = append(a, m)
			} else {
				b = append(b, m)
			}
		}
		joiners := rapid.IntRange(0, 3).Draw(t, "joiners")
		for i := range joiners {
			a = append(a, fmt.Sprintf("j%d", i))
		}
		if Majority(agreed, a) == Majority(agreed, b) {
			t.Fatalf("agreed %v split %v | %v: both sides answer %v", agreed, a, b, Majority(agreed, a))
		}
	})
}

// A model of a cluster whose membership changes while its members settle
// checkpoints and tell each other what they know, every message of it
// lost or late at will. Whatever happened, a side that may own under the
// newest placement (Agreement.Quorum) holds a member that knows of every
// checkpoint settled: a fragment gained there is gathered from a copy as
// new as the newest settled one, not started behind it.
//
// A checkpoint is settled once a majority of the owner's placement knows
// of it (recovery.Known), counting only members that have not applied a
// newer placement than the owner's (the engine's Known answers): a
// member's report of a newer placement may have left without it.
func TestQuorumSideKnowsWhatWasSettled(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		names := []string{"n1", "n2", "n3", "n4", "n5"}
		type node struct {
			applied int    // the placement it applied (an index; its epoch is one more), -1: none
			caught  uint64 // the newest placement epoch it caught up with (kept across restarts)
			catch   CatchUp
			knows   map[int]bool
		}
		type report struct {
			to, from      string
			epoch, caught uint64
			knows         []int
		}
		ns := map[string]*node{}
		for _, m := range names {
			ns[m] = &node{applied: -1, knows: map[int]bool{}}
		}
		var agreements []Agreement // by placement index; epoch is index + 1
		var queue []report
		settled := 0
		var log []string
		caughtOf := func(side []string) map[string]uint64 {
			c := map[string]uint64{}
			for _, m := range side {
				c[m] = ns[m].caught
			}
			return c
		}
		noteCaught := func(n *node) {
			if n.applied >= 0 {
				n.caught = max(n.caught, n.catch.Caught())
			}
		}
		apply := func(x string, i int) {
			n := ns[x]
			n.applied = i
			a := agreements[i]
			n.catch.Agree(a, x, n.caught)
			noteCaught(n)
			epoch, caught, _ := n.catch.Report()
			var knows []int
			for item := range n.knows {
				knows = append(knows, item)
			}
			for _, y := range names {
				if y != x {
					queue = append(queue, report{to: y, from: x, epoch: epoch, caught: caught, knows: knows})
				}
			}
			log = append(log, fmt.Sprintf("%s applies %+v, caught up with %d", x, a, n.caught))
		}
		pick := func(label string, from []string) []string {
			var out []string
			for _, m := range from {
				if rapid.Bool().Draw(t, label) {
					out = append(out, m)
				}
			}
			return out
		}
		first := pick("first", names)
		if len(first) == 0 {
			first = names[:1]
		}
		agreements = append(agreements, Agreement{}.Next(Placed{Epoch: 1, Members: first}, 0))
		apply(first[0], 0)
		for range rapid.IntRange(1, 60).Draw(t, "steps") {
			k := len(agreements) - 1
			switch rapid.IntRange(0, 5).Draw(t, "op") {
			case 0: // a member of the placement it applied settles a checkpoint
				x := rapid.SampledFrom(names).Draw(t, "owner")
				j := ns[x].applied
				if j < 0 || !slices.Contains(agreements[j].Members, x) {
					continue
				}
				var able []string
				for _, m := range names {
					if ns[m].applied <= j {
						able = append(able, m)
					}
				}
				knowers := append(pick("knowers", able), x)
				if !Majority(agreements[j].Members, knowers) {
					continue
				}
				for _, m := range knowers {
					ns[m].knows[settled] = true
				}
				log = append(log, fmt.Sprintf("%s settles %d under %d, known to %v", x, settled, j+1, knowers))
				settled++
			case 1: // a side places anew
				side := pick("side", names)
				x := rapid.SampledFrom(names).Draw(t, "placer")
				if !slices.Contains(side, x) || ns[x].applied != k || !agreements[k].Quorum(side, caughtOf(side)) {
					continue
				}
				agreements = append(agreements, agreements[k].Next(Placed{Epoch: uint64(k + 2), Members: side}, ns[x].caught))
				apply(x, k+1)
			case 2: // a member applies the newest placement
				x := rapid.SampledFrom(agreements[k].Members).Draw(t, "applier")
				if ns[x].applied < k {
					apply(x, k)
				}
			case 3, 4: // a report arrives
				if len(queue) == 0 {
					continue
				}
				i := rapid.IntRange(0, len(queue)-1).Draw(t, "report")
				r := queue[i]
				queue = slices.Delete(queue, i, i+1)
				d := ns[r.to]
				for _, item := range r.knows {
					d.knows[item] = true
				}
				d.catch.Hear(r.epoch, r.from, r.caught)
				noteCaught(d)
			case 5: // a report is lost
				if len(queue) > 0 {
					i := rapid.IntRange(0, len(queue)-1).Draw(t, "lost")
					queue = slices.Delete(queue, i, i+1)
				}
			}
			// Every side that may own under the newest placement knows.
			k = len(agreements) - 1
			for mask := 1; mask < 1<<len(names); mask++ {
				var side []string
				knows := map[int]bool{}
				for i, m := range names {
					if mask&(1<<i) != 0 {
						side = append(side, m)
						for item := range ns[m].knows {
							knows[item] = true
						}
					}
				}
				if !agreements[k].Quorum(side, caughtOf(side)) {
					if len(side) == len(names) {
						// Every node back, the cluster goes on: it knows all.
						t.Fatalf("all nodes together hold no quorum under %+v:\n%s", agreements[k], strings.Join(log, "\n"))
					}
					continue
				}
				for item := range settled {
					if !knows[item] {
						t.Fatalf("side %v owns under %+v but none knows of checkpoint %d:\n%s",
							side, agreements[k], item, strings.Join(log, "\n"))
					}
				}
			}
		}
		// Every member of the newest placement applies it, and tells its
		// report again until every report arrived (cluster.Node retells
		// it to the members that gossip they have not caught up): each
		// catches up.
		k := len(agreements) - 1
		for _, x := range agreements[k].Members {
			if ns[x].applied < k {
				apply(x, k)
			}
		}
		for _, x := range agreements[k].Members {
			epoch, caught, _ := ns[x].catch.Report()
			for _, y := range agreements[k].Members {
				if y != x {
					d := ns[y]
					for item := range ns[x].knows {
						d.knows[item] = true
					}
					d.catch.Hear(epoch, x, caught)
					noteCaught(d)
				}
			}
		}
		for _, x := range agreements[k].Members {
			if !ns[x].catch.CaughtUp(agreements[k].Epoch) {
				t.Fatalf("%s did not catch up with %+v from every member's report:\n%s", x, agreements[k], strings.Join(log, "\n"))
			}
		}
	})
}

// Next lists the memberships before a placement down to one that the
// node placing it caught up with; a node with nothing kept before (the
// cluster's first placement, or a membership kept before Before existed)
// counts a majority of the members alone.
func TestAgreementNext(t *testing.T) {
	p := func(epoch uint64, ms ...string) Placed { return Placed{Epoch: epoch, Members: ms} }
	first := Agreement{}.Next(p(3, "a", "b", "c"), 0)
	if len(first.Before) != 0 || first.Cut || !first.Quorum([]string{"a", "b"}, nil) {
		t.Fatalf("a first placement: %+v", first)
	}
	second := first.Next(p(5, "a", "b"), 0)
	if !reflect.DeepEqual(second.Before, []Placed{p(3, "a", "b", "c")}) || second.Cut {
		t.Fatalf("the second: %+v", second)
	}
	third := second.Next(p(8, "a", "b", "d"), 0) // placed by a that caught up with nothing
	if len(third.Before) != 2 || third.Cut {
		t.Fatalf("the third, placed by a node caught up with nothing: %+v", third)
	}
	if cut := second.Next(p(8, "a", "b", "d"), 5); !reflect.DeepEqual(cut.Before, []Placed{p(5, "a", "b")}) || !cut.Cut {
		t.Fatalf("the third, placed by a node caught up with 5: %+v", cut)
	}
	// a and d are a majority of 8 and of 5 (the half with a), not of 3:
	// only a member caught up with 5 or 8 lets them own.
	side := []string{"a", "d"}
	if third.Quorum(side, map[string]uint64{"a": 3}) {
		t.Error("a and d own with nobody caught up past 3")
	}
	if !third.Quorum(side, map[string]uint64{"a": 5}) {
		t.Error("a caught up with 5: a and d hold a majority of 8 and 5")
	}
	if !third.Quorum([]string{"d", "b"}, map[string]uint64{"d": 8}) {
		t.Error("d caught up with 8: a majority of 8 is enough")
	}
	if !(Agreement{Placed: p(9, "a", "b")}).Quorum([]string{"a"}, nil) {
		t.Error("a membership kept before Before existed: a majority of its members is enough")
	}
	if got := third.Next(p(8, "x"), 0); !reflect.DeepEqual(got.Before, third.Before) {
		t.Errorf("a placement a peer applied first keeps its list: %+v", got)
	}
}

// A run of placements that no member caught up with does not stall the
// cluster once every member reports: the list is not cut for its length.
// A peer's list, cut, goes on with the node's own from its placement.
func TestAgreementLongRunAndExtend(t *testing.T) {
	abc := []string{"a", "b", "c"}
	a := Agreement{}.Next(Placed{Epoch: 1, Members: abc}, 0)
	for e := uint64(2); e <= 12; e++ {
		a = a.Next(Placed{Epoch: e, Members: abc}, 1) // every node caught up with 1 only
	}
	if len(a.Before) != 11 {
		t.Fatalf("after 12 placements: %d before, cut %v", len(a.Before), a.Cut)
	}
	var c CatchUp
	c.Agree(a, "a", 1)
	c.Hear(12, "b", 1)
	if !c.CaughtUp(12) || !a.Quorum([]string{"a", "b"}, map[string]uint64{"a": 1}) {
		t.Fatalf("a and b, caught up with 1, heard: caught up %v", c.CaughtUp(12))
	}
	// A reporter caught up with the placement told all it knew.
	var d CatchUp
	d.Agree(a, "c", 0)
	if d.Hear(12, "a", 12); !d.CaughtUp(12) {
		t.Fatal("a report of a member caught up with the placement did not catch the node up")
	}

	own := Agreement{Placed: Placed{Epoch: 5, Members: abc}, Before: []Placed{{Epoch: 4, Members: abc}}}
	peer := Agreement{Placed: Placed{Epoch: 7, Members: abc}, Before: []Placed{{Epoch: 6, Members: abc}, {Epoch: 5, Members: abc}}, Cut: true}
	got := peer.Extend(own)
	if want := []Placed{{Epoch: 6, Members: abc}, {Epoch: 5, Members: abc}, {Epoch: 4, Members: abc}}; !reflect.DeepEqual(got.Before, want) || got.Cut {
		t.Fatalf("extended: %+v", got)
	}
	if len(peer.Before) != 2 {
		t.Fatal("Extend changed the peer's list")
	}
	if other := (Agreement{Placed: Placed{Epoch: 3, Members: abc}}); !reflect.DeepEqual(peer.Extend(other), peer) {
		t.Fatal("a list that does not name the node's placement was extended")
	}
}
