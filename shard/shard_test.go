package shard

import (
	"encoding/binary"
	"fmt"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

func TestHashIsStable(t *testing.T) {
	// These values are persisted in checkpoints: they must never change.
	cases := []struct {
		key  string
		want uint64
	}{
		{"", 0xef46db3751d8e999},
		{"tessera", String("tessera")},
	}
	for _, c := range cases {
		if got := String(c.key); got != c.want {
			t.Errorf("String(%q) = %#x, want %#x", c.key, got, c.want)
		}
	}
	if String("abc") != Bytes([]byte("abc")) {
		t.Error("String and Bytes disagree")
	}
}

// Uint64 is xxhash of the key's 8 little-endian bytes, as persisted
// placements and checkpoints were computed with; a few fixed values pin it.
func TestUint64IsXXHash(t *testing.T) {
	for v, want := range map[uint64]uint64{0: Bytes(make([]byte, 8)), 1: Bytes([]byte{1, 0, 0, 0, 0, 0, 0, 0})} {
		if got := Uint64(v); got != want {
			t.Errorf("Uint64(%d) = %#x, want %#x", v, got, want)
		}
	}
	rapid.Check(t, func(t *rapid.T) {
		v := rapid.Uint64().Draw(t, "v")
		if got, want := Uint64(v), Bytes(binary.LittleEndian.AppendUint64(nil, v)); got != want {
			t.Fatalf("Uint64(%d) = %#x, want %#x", v, got, want)
		}
	})
}

func TestFragmentInRange(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		h := rapid.Uint64().Draw(t, "h")
		g := rapid.IntRange(1, 4096).Draw(t, "g")
		if f := Fragment(h, g); f < 0 || f >= g || uint64(f) != h%uint64(g) {
			t.Fatalf("Fragment(%d, %d) = %d, want %d", h, g, f, h%uint64(g))
		}
	})
}

func BenchmarkFragment(b *testing.B) {
	for _, g := range []int{64, 60} {
		b.Run(fmt.Sprint(g), func(b *testing.B) {
			s := 0
			for i := range b.N {
				s += Fragment(uint64(i)*0x9e3779b97f4a7c15, g)
			}
			sink = s
		})
	}
}

var sink int

func TestFragmentBalance(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		g := rapid.IntRange(2, 64).Draw(t, "g")
		seed := rapid.Int().Draw(t, "seed")
		n := 1000 * g
		counts := make([]int, g)
		var b []byte
		for i := range n {
			b = fmt.Appendf(b[:0], "k%d-%d", seed, i)
			counts[Fragment(Bytes(b), g)]++
		}
		// Each fragment expects 1000 keys; allow 6 standard deviations.
		for f, c := range counts {
			if c < 1000-6*32 || c > 1000+6*32 {
				t.Fatalf("fragment %d of %d got %d keys of %d", f, g, c, n)
			}
		}
	})
}

func members(t *rapid.T, label string) []string {
	n := rapid.IntRange(1, 12).Draw(t, label)
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("node-%d", i)
	}
	return out
}

func TestPlaceIsOrderIndependent(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ms := members(t, "n")
		r := rapid.IntRange(1, 4).Draw(t, "r")
		f := rapid.IntRange(0, 1023).Draw(t, "f")
		perm := rapid.Permutation(ms).Draw(t, "perm")
		a, b := Place(f, ms, r), Place(f, perm, r)
		if !slices.Equal(a, b) {
			t.Fatalf("order changed placement: %v vs %v", a, b)
		}
		if len(a) != min(r, len(ms)) {
			t.Fatalf("got %d members, want %d", len(a), min(r, len(ms)))
		}
		if len(slices.Compact(slices.Sorted(slices.Values(a)))) != len(a) {
			t.Fatalf("duplicate member in %v", a)
		}
	})
}

func TestAssignBalance(t *testing.T) {
	// With 256 fragments, every member owns a fair share within a wide margin.
	rapid.Check(t, func(t *rapid.T) {
		ms := members(t, "n")
		g := 256
		tab := Assign(ms, g, 2)
		fair := float64(g) / float64(len(ms))
		for _, m := range ms {
			got := float64(len(tab.Owned(m)))
			if got < fair*0.4 || got > fair*1.8+2 {
				t.Fatalf("%s owns %v fragments, fair share %.1f", m, got, fair)
			}
		}
	})
}

func TestMinimalMovementOnJoin(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ms := members(t, "n")
		g := rapid.IntRange(1, 256).Draw(t, "g")
		r := rapid.IntRange(1, 3).Draw(t, "r")
		joined := append(slices.Clone(ms), "newcomer")
		before, after := Assign(ms, g, r), Assign(joined, g, r)
		for _, mv := range Diff(before, after) {
			if mv.To != "newcomer" {
				t.Fatalf("join moved fragment %d from %s to %s", mv.Fragment, mv.From, mv.To)
			}
		}
		// Standby sets change only by the newcomer taking a place.
		for f := range g {
			var kept []string
			for _, m := range after.Fragments[f] {
				if m != "newcomer" {
					kept = append(kept, m)
				}
			}
			if !slices.Equal(kept, before.Fragments[f][:len(kept)]) {
				t.Fatalf("fragment %d: %v -> %v", f, before.Fragments[f], after.Fragments[f])
			}
		}
	})
}

func TestMinimalMovementOnLeave(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ms := members(t, "n")
		if len(ms) < 2 {
			ms = append(ms, "other")
		}
		g := rapid.IntRange(1, 256).Draw(t, "g")
		gone := rapid.SampledFrom(ms).Draw(t, "gone")
		rest := slices.DeleteFunc(slices.Clone(ms), func(m string) bool { return m == gone })
		before, after := Assign(ms, g, 2), Assign(rest, g, 2)
		for _, mv := range Diff(before, after) {
			if mv.From != gone {
				t.Fatalf("leave of %s moved fragment %d from %s", gone, mv.Fragment, mv.From)
			}
			// The new owner was the standby: it holds the checkpoint already.
			if want := before.Fragments[mv.Fragment][1]; mv.To != want {
				t.Fatalf("fragment %d went to %s, standby was %s", mv.Fragment, mv.To, want)
			}
		}
	})
}

func TestChangesFollowDiff(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ms := members(t, "n")
		g := rapid.IntRange(1, 64).Draw(t, "g")
		before := LayOut(ms, g, 3, false)
		gone := rapid.SampledFrom(ms).Draw(t, "gone")
		rest := slices.DeleteFunc(slices.Clone(ms), func(m string) bool { return m == gone })
		after := LayOut(append(rest, "newcomer"), g, 3, false)
		alive := func(m string) bool { return m != gone }
		moves := Diff(tableOf(before.Fragments), tableOf(after.Fragments))
		for _, self := range append(ms, "newcomer") {
			cs := Changes(self, before.Fragments, after.Fragments, alive)
			if len(cs) != g {
				t.Fatalf("%d changes for %d fragments", len(cs), g)
			}
			for f, c := range cs {
				was, is := before.Fragments[f] == self, after.Fragments[f] == self
				want := map[[2]bool]Kind{{true, true}: Keep, {false, true}: Gain, {true, false}: Lose, {false, false}: Elsewhere}[[2]bool{was, is}]
				if c.Kind != want || c.Fragment != f || c.From != before.Fragments[f] || c.To != after.Fragments[f] {
					t.Fatalf("%s, fragment %d: %+v, want kind %d", self, f, c, want)
				}
				if c.Handoff != (c.Kind == Gain && c.From != gone) {
					t.Fatalf("%s, fragment %d: hand-off %v from %s (gone %s)", self, f, c.Handoff, c.From, gone)
				}
				if c.Orphaned != (c.From == gone) {
					t.Fatalf("%s, fragment %d: orphaned %v, from %s (gone %s)", self, f, c.Orphaned, c.From, gone)
				}
			}
		}
		for _, mv := range moves {
			if mv.From == mv.To {
				t.Fatalf("a move that moves nothing: %+v", mv)
			}
		}
	})
}

func TestLayOutWithoutMembers(t *testing.T) {
	l := LayOut(nil, 4, 2, true)
	for f, o := range l.Fragments {
		if o != "" || l.Standbys[f] != "" {
			t.Fatalf("fragment %d placed on %q with no members", f, o)
		}
	}
	if len(l.Readers) != 2 || l.Readers[0] != "" || len(l.Alerts) != 0 {
		t.Fatalf("readers %q, alerts %q with no members", l.Readers, l.Alerts)
	}
}

// A layout with groups (keyed sources) places fragment f with every
// fragment ≡ f mod the groups, owner and standby alike, as fragment
// f mod groups alone is placed; a keyed partition's reader is its group's
// owner, and other partitions and the alerts are placed as without
// groups. Without groups, the layout is every fragment's own Place.
func TestSpecPlacesKeyedPartitionsBesideTheirFragments(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ms := members(t, "members")
		groups := rapid.SampledFrom([]int{0, 1, 2, 4, 8}).Draw(t, "groups")
		g := max(groups, 1) * rapid.IntRange(1, 8).Draw(t, "per group")
		unkeyed := rapid.IntRange(0, 3).Draw(t, "unkeyed partitions")
		s := Spec{Fragments: g, Groups: groups, Alerts: rapid.Bool().Draw(t, "alerts")}
		for range unkeyed {
			s.Keyed = append(s.Keyed, -1)
		}
		for q := range groups {
			s.Keyed = append(s.Keyed, q)
		}
		s.Partitions = len(s.Keyed)
		l := s.LayOut(ms)
		plain := LayOut(ms, g, s.Partitions, s.Alerts)
		for f := range g {
			at := f
			if groups > 0 {
				at = f % groups
			}
			want := Place(at, ms, 2)
			if l.Fragments[f] != want[0] || (len(want) > 1) != (l.Standbys[f] != "") || (len(want) > 1 && l.Standbys[f] != want[1]) {
				t.Fatalf("fragment %d: owner %q standby %q, want %v", f, l.Fragments[f], l.Standbys[f], want)
			}
			if groups == 0 && (l.Fragments[f] != plain.Fragments[f] || l.Standbys[f] != plain.Standbys[f]) {
				t.Fatalf("fragment %d without groups: %q/%q, LayOut %q/%q", f, l.Fragments[f], l.Standbys[f], plain.Fragments[f], plain.Standbys[f])
			}
		}
		for i, q := range s.Keyed {
			switch {
			case q >= 0 && groups > 0:
				for f := q; f < g; f += groups {
					if l.Readers[i] != l.Fragments[f] {
						t.Fatalf("keyed partition %d (group %d) is read on %q, its fragment %d is on %q", i, q, l.Readers[i], f, l.Fragments[f])
					}
				}
			case l.Readers[i] != plain.Readers[i]:
				t.Fatalf("partition %d is read on %q, without groups on %q", i, l.Readers[i], plain.Readers[i])
			}
		}
		if !slices.Equal(l.Alerts, plain.Alerts) {
			t.Fatalf("alerts on %v, without groups on %v", l.Alerts, plain.Alerts)
		}
	})
}
