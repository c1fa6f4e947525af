package flowcore

import (
	"encoding/binary"
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
// original does; a changed key rewrites its block's values and no
// other's, and a block's keys are written only when it got keys.
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
			changed, grew := map[int32]bool{}, map[int32]bool{}
			for _, k := range keys {
				// Some keys are long: their length takes two bytes.
				key := strings.Repeat("k", 1+k%3*70) + string(rune('a'+k%26)) + string(rune('a'+k/26))
				_, had := tb.idx[key]
				count(tb, key)
				b := tb.idx[key] >> tableBlockBits
				changed[b] = true
				if !had {
					grew[b] = true
				}
			}
			var d Delta
			if err := tb.blockDelta(0, &d); err != nil {
				rt.Fatal(err)
			}
			kinds := map[byte]int{}
			for _, e := range d.Puts {
				kinds[e.Key[len(e.Key)-1]]++
			}
			if kinds[blockVals] != len(changed) || kinds[blockKeys] != len(grew) || len(d.Puts) != len(changed)+len(grew) {
				rt.Fatalf("%d values and %d keys entries written, %d blocks changed, %d got keys", kinds[blockVals], kinds[blockKeys], len(changed), len(grew))
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
	if !slices.Equal(d.Reset, []uint16{0}) || len(d.Puts) != 6 || d.Entries != 6 {
		t.Fatalf("delta resets %v and puts %d entries (%d in all), want namespace 0 reset and 3 blocks of 2 entries", d.Reset, len(d.Puts), d.Entries)
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
	if len(d.Puts) != 4 {
		t.Fatalf("%d entries, want 2 blocks of 2", len(d.Puts))
	}
	keys0, vals0, keys1 := d.Puts[0], d.Puts[1], d.Puts[2]
	if keys0.Key[4] != blockKeys || vals0.Key[4] != blockVals {
		t.Fatalf("entries %x, %x: want block 0's keys, then its values", keys0.Key, vals0.Key)
	}
	if err := newStringTable(t).restore(1, keys1.Key, keys1.Value); err == nil {
		t.Fatal("the second block restored first")
	}
	if err := newStringTable(t).restore(1, vals0.Key, vals0.Value); err == nil {
		t.Fatal("a block's values restored without its keys")
	}
	withKeys := func() *table[string, int64] {
		tb := newStringTable(t)
		if err := tb.restore(1, keys0.Key, keys0.Value); err != nil {
			t.Fatal(err)
		}
		return tb
	}
	if err := withKeys().restore(1, keys1.Key, keys1.Value); err == nil {
		t.Fatal("the second block's keys restored before the first's values")
	}
	for _, e := range []StateEntry{keys0, vals0} {
		v := e.Value
		for _, bad := range [][]byte{nil, {0}, {33}, {31}, v[:len(v)-1], append(slices.Clone(v), 0)} {
			tb := newStringTable(t)
			if e.Key[4] == blockVals {
				tb = withKeys()
			}
			if err := tb.restore(1, e.Key, bad); err == nil {
				t.Fatalf("entry %x: value %x restored", e.Key, bad)
			}
		}
	}
	for _, key := range [][]byte{{0, 0}, {0, 0, 0, 0, 2}, {0, 0, 0, 0, 0, 0}} {
		if err := newStringTable(t).restore(1, key, keys0.Value); err == nil {
			t.Fatalf("a block entry under %x restored", key)
		}
	}
}

// Blocks of one entry each, keys and values together (the format before),
// restore; the next delta deletes them all and writes every block's keys
// and values, from which the same table restores.
func TestTableBlocksFromOneEntryBlocks(t *testing.T) {
	old := newStringTable(t)
	for i := range 70 {
		old.insert(strings.Repeat("k", i%3*60)+string(rune('A'+i)), int64(i)*1000)
	}
	store := tableStore{}
	for b := range 3 {
		val := binary.AppendUvarint(nil, uint64(min(tableBlock, 70-b*tableBlock)))
		for i := b * tableBlock; i < min(70, (b+1)*tableBlock); i++ {
			kb, _ := old.kc.Append(nil, old.keys[i])
			vb, _ := old.vc.Append(nil, old.vals[i])
			val = binary.AppendUvarint(val, uint64(len(kb)))
			val = append(val, kb...)
			val = binary.AppendUvarint(val, uint64(len(vb)))
			val = append(val, vb...)
		}
		store[string(binary.BigEndian.AppendUint32([]byte{1}, uint32(b)))] = val
	}
	tb := newStringTable(t)
	store.restore(t, tb)
	if !slices.Equal(tb.keys, old.keys) || !slices.Equal(tb.vals, old.vals) {
		t.Fatalf("restored %v, want %v", tableContents(tb), tableContents(old))
	}
	var d Delta
	if err := tb.blockDelta(0, &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Reset) != 0 || len(d.Deletes) != 3 || len(d.Puts) != 6 || d.Entries != 6 {
		t.Fatalf("delta resets %v, deletes %d and puts %d entries (%d in all), want 3 deleted and 3 blocks of 2 entries", d.Reset, len(d.Deletes), len(d.Puts), d.Entries)
	}
	store.apply(t, d)
	again := newStringTable(t)
	store.restore(t, again)
	if !slices.Equal(again.keys, old.keys) || !slices.Equal(again.vals, old.vals) {
		t.Fatalf("restored %v, want %v", tableContents(again), tableContents(old))
	}
	d = Delta{}
	if err := again.blockDelta(0, &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Deletes) != 0 || len(d.Puts) != 0 {
		t.Fatalf("an unchanged table's delta: %+v", d)
	}
	// A block of the format before after one of the new is refused.
	store[string(binary.BigEndian.AppendUint32([]byte{1}, 3))] = binary.AppendUvarint(nil, 1)
	if err := restoreAll(store, newStringTable(t)); err == nil {
		t.Fatal("a block of one entry restored after blocks of two")
	}
}

func restoreAll(s tableStore, tb *table[string, int64]) error {
	for _, k := range slices.Sorted(maps.Keys(s)) {
		if err := tb.restore(uint16(k[0]), []byte(k[1:]), s[k]); err != nil {
			return err
		}
	}
	return nil
}

// FuzzTableBlockRestore feeds a table entries of its blocks, in both
// formats, well-formed or not: a restore fails or rebuilds a table whose
// every key is found at its slot, and whose next checkpoint restores to
// the same keys and values.
func FuzzTableBlockRestore(f *testing.F) {
	tb := newStringTable(f)
	for i := range 40 {
		tb.insert(strings.Repeat("k", i%3*70)+string(rune('A'+i)), int64(i)*-300)
	}
	var d Delta
	if err := tb.blockDelta(0, &d); err != nil {
		f.Fatal(err)
	}
	// An input is entries, each a byte of key length, the key, a byte of
	// value length and the value.
	frame := func(es ...StateEntry) []byte {
		var b []byte
		for _, e := range es {
			b = append(append(append(b, byte(len(e.Key))), e.Key...), byte(min(len(e.Value), 255)))
			b = append(b, e.Value[:min(len(e.Value), 255)]...)
		}
		return b
	}
	f.Add(frame(d.Puts...))
	f.Add(frame(d.Puts[0], d.Puts[1]))
	f.Add(frame(d.Puts[1], d.Puts[0]))
	f.Add(frame(StateEntry{Key: []byte{0, 0, 0, 0}, Value: []byte{1, 1, 'a', 1, 2}}))
	f.Fuzz(func(t *testing.T, in []byte) {
		tb := newStringTable(t)
		for len(in) > 0 {
			kl := int(in[0])
			if len(in) < 2+kl {
				return
			}
			key := in[1 : 1+kl]
			vl := int(in[1+kl])
			if len(in) < 2+kl+vl {
				return
			}
			val := in[2+kl : 2+kl+vl]
			in = in[2+kl+vl:]
			if err := tb.restore(1, key, val); err != nil {
				return
			}
		}
		if len(tb.keys) != len(tb.vals) {
			t.Fatalf("%d keys, %d values", len(tb.keys), len(tb.vals))
		}
		for i, k := range tb.keys {
			if j, ok := tb.lookup(k, 0); !ok || int(j) != i {
				t.Fatalf("key %q of slot %d found at %d, %v", k, i, j, ok)
			}
		}
		if tb.valsDue != 0 {
			return // a block's values never came: the store's entry count refuses such a checkpoint
		}
		for i := range tb.keys {
			tb.touch(int32(i))
		}
		store := tableStore{}
		var d Delta
		if err := tb.blockDelta(0, &d); err != nil {
			t.Fatal(err)
		}
		for _, e := range d.Puts {
			store[string(append([]byte{byte(e.Namespace)}, e.Key...))] = e.Value
		}
		again := newStringTable(t)
		if err := restoreAll(store, again); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(again.keys, tb.keys) || !slices.Equal(again.vals, tb.vals) {
			t.Fatalf("restored %v, want %v", tableContents(again), tableContents(tb))
		}
	})
}
