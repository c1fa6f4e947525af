package recovery

import (
	"fmt"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// A gather, whatever the order of the answers and whoever sends them: it
// is done exactly when every member asked answered or is no longer live
// (Left), its best copy is the
// first of the newest lineage offered, and every other copy offered is
// given back once, to confirm to its sender.
func TestGatherKeepsTheNewestLineage(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		members := []string{"n1", "n2", "n3", "n4", "n5"}
		asked := rapid.SliceOfDistinct(rapid.SampledFrom(members), rapid.ID[string]).Draw(t, "asked")
		g := NewGather[int](asked)
		type answer struct {
			from    string
			copy    bool
			lineage uint64
		}
		answers := rapid.SliceOf(rapid.Custom(func(t *rapid.T) answer {
			return answer{from: rapid.SampledFrom(members).Draw(t, "from"), copy: rapid.Bool().Draw(t, "copy"),
				lineage: rapid.Uint64Range(0, 4).Draw(t, "lineage")}
		})).Draw(t, "answers")
		if g.Done() != (len(asked) == 0) {
			t.Fatalf("done %v before any answer, asked %v", g.Done(), asked)
		}
		// Members a newer placement no longer counts as live, dropped
		// before answer leftAt (never, past the end).
		gone := rapid.SliceOfDistinct(rapid.SampledFrom(members), rapid.ID[string]).Draw(t, "gone")
		leftAt := rapid.IntRange(0, len(answers)+1).Draw(t, "leftAt")
		heard := map[string]bool{}
		var offered, dropped []int
		bestIdx := -1
		for i, a := range answers {
			if i == leftAt {
				g.Left(func(m string) bool { return !slices.Contains(gone, m) })
				for _, m := range gone {
					heard[m] = true
				}
			}
			heard[a.from] = true
			if !a.copy {
				g.None(a.from)
			} else {
				offered = append(offered, i)
				if bestIdx < 0 || a.lineage > answers[bestIdx].lineage {
					bestIdx = i
				}
				if d, from, ok := g.Copy(a.from, a.lineage, i); ok {
					if answers[d].from != from {
						t.Fatalf("copy %d given back as %s's, sent by %s", d, from, answers[d].from)
					}
					dropped = append(dropped, d)
				}
			}
			want := true
			for _, m := range asked {
				want = want && heard[m]
			}
			if g.Done() != want {
				t.Fatalf("after %d answers: done %v, want %v (pending %v)", i+1, g.Done(), want, g.Pending())
			}
		}
		best, lineage, from, ok := g.Best()
		if ok != (bestIdx >= 0) {
			t.Fatalf("best ok %v with %d copies offered", ok, len(offered))
		}
		if !ok {
			return
		}
		if best != bestIdx || lineage != answers[bestIdx].lineage || from != answers[bestIdx].from {
			t.Fatalf("best %d (lineage %d from %s), want %d", best, lineage, from, bestIdx)
		}
		want := slices.DeleteFunc(slices.Clone(offered), func(i int) bool { return i == bestIdx })
		slices.Sort(dropped)
		if fmt.Sprint(dropped) != fmt.Sprint(want) {
			t.Fatalf("copies given back %v, want %v", dropped, want)
		}
	})
}

// What a node knows of settled checkpoints is the largest epoch it heard
// of for each fragment, whatever the order and the repeats of the news
// (Note, Merge); a gather lacks a copy exactly when the best offered and
// the node's own are both older than the newest settled checkpoint known
// (Know, Lacks).
func TestSettledKnowsTheNewest(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		type news struct {
			frag  int
			epoch uint64
		}
		all := rapid.SliceOf(rapid.Custom(func(t *rapid.T) news {
			return news{rapid.IntRange(0, 3).Draw(t, "frag"), rapid.Uint64Range(0, 9).Draw(t, "epoch")}
		})).Draw(t, "news")
		want := map[int]uint64{}
		for _, n := range all {
			want[n.frag] = max(want[n.frag], n.epoch)
		}
		// One node hears every piece on its own, another by halves
		// merged in the other order.
		one, a, b := Settled{}, Settled{}, Settled{}
		cut := rapid.IntRange(0, len(all)).Draw(t, "cut")
		for i, n := range all {
			had := one[n.frag]
			if got := one.Note(n.frag, n.epoch); got != (n.epoch > had) {
				t.Fatalf("Note(%d, %d) over %d reports news %v", n.frag, n.epoch, had, got)
			}
			if i < cut {
				a.Note(n.frag, n.epoch)
			} else {
				b.Note(n.frag, n.epoch)
			}
		}
		b.Merge(a)
		for f := range 4 {
			if one[f] != want[f] || b[f] != want[f] {
				t.Fatalf("fragment %d: %d one by one, %d merged, want %d", f, one[f], b[f], want[f])
			}
		}
		settled := want[0]
		own := rapid.Uint64Range(0, 9).Draw(t, "own")
		offered := rapid.SliceOf(rapid.Uint64Range(0, 9)).Draw(t, "offered")
		g := NewGather[int](nil)
		best := own
		for i, l := range offered {
			g.Copy(fmt.Sprintf("n%d", i), l, i)
			best = max(best, l)
		}
		g.Know(settled)
		if got, lacks := g.Lacks(own); got != settled || lacks != (best < settled) {
			t.Fatalf("own %d, offered %v, settled %d: Lacks = %d, %v", own, offered, settled, got, lacks)
		}
	})
}
