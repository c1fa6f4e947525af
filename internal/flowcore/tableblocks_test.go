package flowcore

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// tableStore applies a table's deltas as the checkpoint store does (resets,
// then deletes, then puts) and restores a table from it in key order.
type tableStore map[string][]byte

func (s tableStore) apply(t *testing.T, d Delta) {
	t.Helper()
	for _, ns := range d.Reset {
		for k := range s {
			if k[0] == byte(ns) {
				delete(s, k)
			}
		}
	}
	for _, e := range d.Deletes {
		delete(s, string(append([]byte{byte(e.Namespace)}, e.Key...)))
	}
	for _, e := range d.Puts {
		s[string(append([]byte{byte(e.Namespace)}, e.Key...))] = slices.Clone(e.Value)
	}
	if d.Entries != int64(len(s)) {
		t.Fatalf("the delta counts %d entries, the store holds %d", d.Entries, len(s))
	}
}

func (s tableStore) restore(t interface{ Fatal(...any) }, tb *table[string, int64]) {
	for _, k := range slices.Sorted(maps.Keys(s)) {
		if err := tb.restore(uint16(k[0]), []byte(k[1:]), s[k]); err != nil {
			t.Fatal(err)
		}
	}
}

func newStringTable(t testing.TB) *table[string, int64] {
	kc, err := DefaultKeyCodec[string]()
	if err != nil {
		t.Fatal(err)
	}
	vc, err := DefaultCodec[int64]()
	if err != nil {
		t.Fatal(err)
	}
	return newTable(kc, vc)
}

func tableContents(tb *table[string, int64]) map[string]int64 {
	m := make(map[string]int64, len(tb.keys))
	for i, k := range tb.keys {
		m[k] = tb.vals[i]
	}
	return m
}

// A table without a TTL checkpoints blocks of slots: after any sequence of
// updates and checkpoints, a table restored from the entries holds the same
// keys and values, in the same slots, and checkpoints on from there as the
// original does; a changed key rewrites its block and no other.
func TestTableBlocksRestore(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		tb := newStringTable(t)
		store := tableStore{}
		count := func(tb *table[string, int64], k string) {
			if i, ok := tb.idx[k]; ok {
				tb.vals[i]++
				tb.touch(i)
			} else {
				tb.insert(k, 1)
			}
		}
		for range rapid.IntRange(1, 6).Draw(rt, "checkpoints") {
			keys := rapid.SliceOfN(rapid.IntRange(0, 300), 0, 200).Draw(rt, "keys")
			changed := map[int32]bool{}
			for _, k := range keys {
				// Some keys are long: their length takes two bytes.
				key := strings.Repeat("k", 1+k%3*70) + string(rune('a'+k%26)) + string(rune('a'+k/26))
				count(tb, key)
				changed[tb.idx[key]>>tableBlockBits] = true
			}
			var d Delta
			if err := tb.blockDelta(0, &d); err != nil {
				rt.Fatal(err)
			}
			if len(d.Puts) != len(changed) {
				rt.Fatalf("%d blocks written, %d changed", len(d.Puts), len(changed))
			}
			store.apply(t, d)
			again := newStringTable(t)
			store.restore(rt, again)
			if !slices.Equal(again.keys, tb.keys) || !slices.Equal(again.vals, tb.vals) {
				rt.Fatalf("restored %v, want %v", tableContents(again), tableContents(tb))
			}
			if len(again.dirty) != 0 {
				rt.Fatalf("a restored table has %d changed slots", len(again.dirty))
			}
			tb = again // go on from the restored copy
		}
	})
}

// Entries of one key each, the format before blocks, restore; the next
// delta deletes them all and writes every block.
func TestTableBlocksFromEntriesPerKey(t *testing.T) {
	old := newStringTable(t)
	store := tableStore{}
	for i := range 70 {
		k := string(rune('A' + i))
		key, _ := old.kc.Append(nil, k)
		val, _ := old.vc.Append(nil, int64(i))
		store[string(append([]byte{0}, key...))] = val
	}
	tb := newStringTable(t)
	store.restore(t, tb)
	if len(tb.keys) != 70 {
		t.Fatalf("restored %d keys, want 70", len(tb.keys))
	}
	var d Delta
	if err := tb.blockDelta(0, &d); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d.Reset, []uint16{0}) || len(d.Puts) != 3 || d.Entries != 3 {
		t.Fatalf("delta resets %v and puts %d entries (%d in all), want namespace 0 reset and 3 blocks", d.Reset, len(d.Puts), d.Entries)
	}
	store.apply(t, d)
	again := newStringTable(t)
	store.restore(t, again)
	if !maps.Equal(tableContents(again), tableContents(tb)) {
		t.Fatalf("restored %v, want %v", tableContents(again), tableContents(tb))
	}
	d = Delta{}
	if err := again.blockDelta(0, &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Reset) != 0 || len(d.Puts) != 0 {
		t.Fatalf("an unchanged table's delta: %+v", d)
	}
}

// A block out of order, or a malformed one, is an error, never a table
// with keys in the wrong slots.
func TestTableBlocksMalformed(t *testing.T) {
	tb := newStringTable(t)
	for i := range 40 {
		tb.insert(string(rune('A'+i)), int64(i))
	}
	var d Delta
	if err := tb.blockDelta(0, &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Puts) != 2 {
		t.Fatalf("%d blocks, want 2", len(d.Puts))
	}
	if err := newStringTable(t).restore(1, d.Puts[1].Key, d.Puts[1].Value); err == nil {
		t.Fatal("the second block restored first")
	}
	v := d.Puts[0].Value
	for _, bad := range [][]byte{nil, {0}, {33}, v[:len(v)-1], append(slices.Clone(v), 0)} {
		if err := newStringTable(t).restore(1, d.Puts[0].Key, bad); err == nil {
			t.Fatalf("block value %x restored", bad)
		}
	}
	if err := newStringTable(t).restore(1, []byte{0, 0}, v); err == nil {
		t.Fatal("a block with a 2-byte key restored")
	}
}
