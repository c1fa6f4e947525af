package shard

import (
	"encoding/binary"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// String is the stable hash of a string key.
func String(s string) uint64 { return xxhash.Sum64String(s) }

// Bytes is the stable hash of a byte-slice key. Bytes(b) == String(string(b)).
func Bytes(b []byte) uint64 { return xxhash.Sum64(b) }

// Uint64 is the stable hash of an integer key (its 8 little-endian bytes).
func Uint64(v uint64) uint64 {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	return xxhash.Sum64(b[:])
}

// Fragment maps a key hash to a fragment in [0, g). g must be positive.
func Fragment(h uint64, g int) int { return int(h % uint64(g)) }

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
