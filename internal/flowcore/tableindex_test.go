package flowcore

import (
	"fmt"
	"testing"

	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/shard"
)

// A hash-indexed table finds every key it holds at its slot and no other,
// through inserts, and removals that move the last slot into the hole (as
// a TTL expiry does), with hashes made to collide so that probes run long
// and removals move entries back.
func TestHashIndexMatchesMap(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		bits := rapid.IntRange(0, 64).Draw(t, "bits") // hash bits kept: few make many collisions
		hash := func(k string) uint64 {
			h := shard.String(k)
			if bits < 64 {
				h &= ^uint64(0) << (64 - bits) // keep the top bits: the home and the tag
			}
			return h
		}
		tb := newTable[string, int64](nil, nil)
		tb.idx, tb.hash = nil, hash
		want := map[string]int32{}
		check := func() {
			if tb.hx.n != len(want) {
				t.Fatalf("index holds %d keys, want %d", tb.hx.n, len(want))
			}
			for k, i := range want {
				if got, ok := tb.lookup(k, 0); !ok || got != i {
					t.Fatalf("%q at %d (%v), want %d", k, got, ok, i)
				}
				if got, ok := tb.lookup(k, hash(k)); !ok || got != i {
					t.Fatalf("%q by its hash at %d (%v), want %d", k, got, ok, i)
				}
			}
			if _, ok := tb.lookup("absent", 0); ok {
				t.Fatal("found an absent key")
			}
		}
		for step := range rapid.IntRange(1, 300).Draw(t, "steps") {
			if len(tb.keys) > 0 && rapid.IntRange(0, 3).Draw(t, fmt.Sprint("op", step)) == 0 {
				// Remove a slot as table.remove does: the last moves into it.
				i := int32(rapid.IntRange(0, len(tb.keys)-1).Draw(t, fmt.Sprint("rm", step)))
				n := int32(len(tb.keys) - 1)
				delete(want, tb.keys[i])
				tb.indexDelete(tb.keys[i])
				if i != n {
					tb.keys[i], tb.vals[i] = tb.keys[n], tb.vals[n]
					tb.indexMove(tb.keys[i], i)
					want[tb.keys[i]] = i
				}
				tb.keys, tb.vals, tb.mark = tb.keys[:n], tb.vals[:n], tb.mark[:n]
			} else {
				k := fmt.Sprint("k", rapid.IntRange(0, 200).Draw(t, fmt.Sprint("key", step)))
				if _, ok := want[k]; ok {
					continue
				}
				want[k] = int32(len(tb.keys))
				h := uint64(0)
				if rapid.Bool().Draw(t, fmt.Sprint("hashed", step)) {
					h = hash(k)
				}
				tb.insertH(k, h, 1)
			}
			check()
		}
		if bits < 64 {
			return // stringKeys hashes bytes as keyHasher hashes strings
		}
		find := tb.stringKeys()
		for k := range want {
			if got, ok := find([]byte(k)); !ok || got != k {
				t.Fatalf("stringKeys(%q) = %q, %v", k, got, ok)
			}
		}
	})
}
