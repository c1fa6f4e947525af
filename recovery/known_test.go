package recovery

import (
	"slices"
	"testing"

	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/shard"
)

// Whatever the members and the order of the answers: once a checkpoint is
// known enough to be released, every side of the members that may own
// fragments later (shard.Majority) holds a member that knows of it; what
// is known only grows; and the members asked are exactly those that do
// not know.
func TestKnownReachesEveryFutureMajority(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		all := []string{"n1", "n2", "n3", "n4", "n5", "n6", "n7"}
		members := rapid.SliceOfNDistinct(rapid.SampledFrom(all), 1, len(all), rapid.ID[string]).Draw(t, "members")
		slices.Sort(members)
		type answer struct {
			member string
			epoch  uint64
		}
		answers := rapid.SliceOf(rapid.Custom(func(t *rapid.T) answer {
			return answer{member: rapid.SampledFrom(all).Draw(t, "member"), epoch: rapid.Uint64Range(1, 4).Draw(t, "epoch")}
		})).Draw(t, "answers")
		epoch := rapid.Uint64Range(1, 4).Draw(t, "epoch")
		k := Known{}
		best := map[string]uint64{}
		wasEnough := false
		for _, a := range answers {
			k.Note(a.member, a.epoch)
			best[a.member] = max(best[a.member], a.epoch)
			enough := k.Enough(members, epoch)
			if wasEnough && !enough {
				t.Fatalf("after %s knew of %d, epoch %d is no longer known enough", a.member, a.epoch, epoch)
			}
			wasEnough = enough
		}
		var knows []string
		for _, m := range members {
			if best[m] >= epoch {
				knows = append(knows, m)
			}
		}
		lacking := k.Lacking(members, epoch)
		for _, m := range members {
			if slices.Contains(lacking, m) == slices.Contains(knows, m) {
				t.Fatalf("members %v, knowing %v: asked %v", members, knows, lacking)
			}
		}
		if k.Enough(members, epoch) != shard.Majority(members, knows) {
			t.Fatalf("members %v, knowing %v: enough %v", members, knows, k.Enough(members, epoch))
		}
		if !k.Enough(members, epoch) {
			return
		}
		for mask := range 1 << len(members) {
			var side []string
			for i, m := range members {
				if mask&(1<<i) != 0 {
					side = append(side, m)
				}
			}
			if shard.Majority(members, side) && !slices.ContainsFunc(side, func(m string) bool { return slices.Contains(knows, m) }) {
				t.Fatalf("members %v, knowing %v: the side %v may own and knows nothing", members, knows, side)
			}
		}
	})
}

// The owner and its standby are enough in a cluster of two or three, in
// one of four only if they hold its lowest member, and never in one of
// five.
func TestKnownByOwnerAndStandby(t *testing.T) {
	for _, c := range []struct {
		members []string
		want    bool
	}{
		{[]string{"a", "b"}, true},
		{[]string{"a", "b", "c"}, true},
		{[]string{"a", "b", "c", "d"}, true},
		{[]string{"0", "a", "b", "c"}, false},
		{[]string{"a", "b", "c", "d", "e"}, false},
	} {
		k := Known{}
		k.Note("a", 5) // the owner
		k.Note("b", 5) // the standby
		k.Note("b", 4) // an older answer does not lower it
		if got := k.Enough(c.members, 5); got != c.want {
			t.Errorf("members %v: enough %v, want %v", c.members, got, c.want)
		}
		if k.Enough(c.members, 6) {
			t.Errorf("members %v: a newer checkpoint counted as known", c.members)
		}
	}
}
