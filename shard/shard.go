package shard

import (
	"encoding/binary"
	"math/bits"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// String is the stable hash of a string key.
func String(s string) uint64 { return xxhash.Sum64String(s) }

// Bytes is the stable hash of a byte-slice key. Bytes(b) == String(string(b)).
func Bytes(b []byte) uint64 { return xxhash.Sum64(b) }

// Uint64 is the stable hash of an integer key (its 8 little-endian bytes):
// xxhash.Sum64 of them, written out for 8 bytes so that it inlines (the
// package's Sum64 is assembly: a call per key, a fifth of what an exchange
// re-keyed by a number spent per record).
func Uint64(v uint64) uint64 {
	const (
		prime1 = 11400714785074694791
		prime2 = 14029467366897019727
		prime3 = 1609587929392839161
		prime4 = 9650029242287828579
		prime5 = 2870177450012600261
	)
	k := bits.RotateLeft64(v*prime2, 31) * prime1
	h := uint64(prime5+8) ^ k
	h = bits.RotateLeft64(h, 27)*prime1 + prime4
	h ^= h >> 33
	h *= prime2
	h ^= h >> 29
	h *= prime3
	h ^= h >> 32
	return h
}

// Fragment maps a key hash to a fragment in [0, g). g must be positive.
// It is h mod g; a power of two (the default of 64 fragments) takes a mask
// instead of a 64-bit division, which every routed record pays.
func Fragment(h uint64, g int) int {
	if g&(g-1) == 0 {
		return int(h & uint64(g-1))
	}
	return int(h % uint64(g))
}

// score is the rendezvous weight of member m for fragment f.
func score(m string, f int) uint64 {
	d := xxhash.New()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(f))
	_, _ = d.Write(b[:])
	_, _ = d.WriteString(m)
	return mix(d.Sum64())
}

// mix is a 64-bit finalizer (splitmix64) so that members with similar names
// do not get correlated weights.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Place returns the top r members for fragment f, best first: the owner and
// then its standbys. It returns fewer than r when there are fewer members.
// Duplicated member names count once. The order of members does not matter.
func Place(f int, members []string, r int) []string {
	type ranked struct {
		m string
		s uint64
	}
	rs := make([]ranked, 0, len(members))
	for _, m := range members {
		rs = append(rs, ranked{m, score(m, f)})
	}
	slices.SortFunc(rs, func(a, b ranked) int {
		if a.s != b.s {
			if a.s > b.s {
				return -1
			}
			return 1
		}
		return strings.Compare(a.m, b.m)
	})
	rs = slices.CompactFunc(rs, func(a, b ranked) bool { return a.m == b.m })
	out := make([]string, 0, min(r, len(rs)))
	for i := 0; i < len(rs) && i < r; i++ {
		out = append(out, rs[i].m)
	}
	return out
}

// Table is a placement: for every fragment, its members best first (owner,
// then standbys).
type Table struct {
	Replicas  int
	Fragments [][]string
}

// Assign computes the placement of g fragments over members with r copies.
func Assign(members []string, g, r int) Table {
	t := Table{Replicas: r, Fragments: make([][]string, g)}
	for f := range g {
		t.Fragments[f] = Place(f, members, r)
	}
	return t
}

// Owner is the member that owns fragment f, or "" if there is none.
func (t Table) Owner(f int) string {
	if f < 0 || f >= len(t.Fragments) || len(t.Fragments[f]) == 0 {
		return ""
	}
	return t.Fragments[f][0]
}

// Owned lists the fragments that member m owns, in increasing order.
func (t Table) Owned(m string) []int {
	var out []int
	for f := range t.Fragments {
		if t.Owner(f) == m {
			out = append(out, f)
		}
	}
	return out
}

// Move is one change of ownership between two tables.
type Move struct {
	Fragment int
	From, To string // From is "" for a fragment that had no owner
}

// Diff lists the fragments whose owner differs between old and new, in
// fragment order. Both tables must have the same number of fragments.
func Diff(old, new Table) []Move {
	var out []Move
	for f := range new.Fragments {
		if a, b := old.Owner(f), new.Owner(f); a != b {
			out = append(out, Move{Fragment: f, From: a, To: b})
		}
	}
	return out
}

// Layout is where one flow runs: the owner and standby of every fragment
// and the owner of every source partition.
type Layout struct {
	Fragments []string // owner of each fragment
	Standbys  []string // standby of each fragment ("" with one member)
	Readers   []string // owner of each source partition, in source order
	Alerts    []string // owner and standby of the flow's alerts (nil without alerts)
}

// LayOut places g fragments (an owner and, with two members or more, a
// standby each), partitions source partitions and, if alerts, the flow's
// alerts over members. Source partition i is placed as if it were fragment
// g+i, so that partitions spread independently of fragments; the alerts as
// the fragment after the partitions. Every node computes the same layout
// from the same members, in any order.
func LayOut(members []string, g, partitions int, alerts bool) Layout {
	return Spec{Fragments: g, Partitions: partitions, Alerts: alerts}.LayOut(members)
}

// Spec is what a layout places.
type Spec struct {
	Fragments  int
	Partitions int // source partitions, of every source in source order
	// Groups, if positive, places fragment f together with every fragment
	// f' ≡ f (mod Groups), owner and standby alike, as fragment f mod
	// Groups alone would be; Keyed[i] >= 0 is the group of source
	// partition i, placed with it (its reader beside its fragments), and
	// -1 a partition placed on its own. A keyed source's partition p holds
	// the keys of the fragments ≡ p (mod its partitions), since a key's
	// fragment is its hash mod Fragments (Fragment) and its partition
	// the hash mod the partitions: no record it reads leaves the node.
	Groups int
	Keyed  []int // nil: none
	Alerts bool
}

// LayOut places s over members, as the function LayOut says, with the
// groups of s.
func (s Spec) LayOut(members []string) Layout {
	const replicas = 2
	var l Layout
	for f := range s.Fragments {
		at := f
		if s.Groups > 0 {
			at = f % s.Groups
		}
		p := Place(at, members, replicas)
		owner, standby := "", ""
		if len(p) > 0 {
			owner = p[0]
		}
		if len(p) > 1 {
			standby = p[1]
		}
		l.Fragments = append(l.Fragments, owner)
		l.Standbys = append(l.Standbys, standby)
	}
	for i := range s.Partitions {
		at := s.Fragments + i
		if i < len(s.Keyed) && s.Keyed[i] >= 0 && s.Groups > 0 {
			at = s.Keyed[i] % s.Groups
		}
		owner := ""
		if p := Place(at, members, 1); len(p) > 0 {
			owner = p[0]
		}
		l.Readers = append(l.Readers, owner)
	}
	if s.Alerts {
		l.Alerts = Place(s.Fragments+s.Partitions, members, replicas)
	}
	return l
}

// Kind is what a member does with one fragment when the placement
// changes.
type Kind int

const (
	Elsewhere Kind = iota // neither owned before nor after
	Keep                  // owned before and after
	Gain                  // owned after, not before
	Lose                  // owned before, not after
)

// Change is what member self does with one fragment.
type Change struct {
	Fragment int
	Kind     Kind
	From, To string // the owner before and after ("" for none)
	// Handoff, for a gained fragment: its old owner is alive (in the new
	// placement, or leaving it), so it hands its last checkpoint over and
	// the fragment waits for it.
	Handoff bool
	// Orphaned: the fragment moves away from an owner that is not alive.
	// Its new owner gathers the copies of the live members and starts
	// from the newest (recovery.Gather); a leaving member hands its copy
	// off unasked, since it may be gone before it is asked.
	Orphaned bool
}

// Changes is the plan of member self when the owners of fragments change
// from old to new (both one owner per fragment, "" for none): one Change
// per fragment, in fragment order, from Diff. alive says whether a member
// is alive in the new placement.
func Changes(self string, old, new []string, alive func(string) bool) []Change {
	out := make([]Change, len(new))
	for f, o := range new {
		from := ownerAt(old, f)
		out[f] = Change{Fragment: f, From: from, To: o, Kind: Elsewhere,
			Orphaned: from != "" && from != o && !alive(from)}
		if o == self && out[f].From == self {
			out[f].Kind = Keep
		}
	}
	for _, mv := range Diff(tableOf(old), tableOf(new)) {
		c := &out[mv.Fragment]
		switch {
		case mv.To == self:
			c.Kind = Gain
			c.Handoff = mv.From != "" && alive(mv.From)
		case mv.From == self:
			c.Kind = Lose
		}
	}
	return out
}

func ownerAt(owners []string, f int) string {
	if f < len(owners) {
		return owners[f]
	}
	return ""
}

// tableOf is a table of one owner per fragment, as Diff takes.
func tableOf(owners []string) Table {
	t := Table{Replicas: 1, Fragments: make([][]string, len(owners))}
	for f, o := range owners {
		if o != "" {
			t.Fragments[f] = []string{o}
		}
	}
	return t
}
