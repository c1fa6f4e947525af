package flowcore

import (
	"math/bits"
	"reflect"
	"unsafe"
)

// hashIndex finds a table's slot by the key's stable hash (shard's, the
// one that routed the record to its fragment): open addressing with linear
// probing over a power-of-two array. A reader computes the hash to route a
// record and passes it along (Rec.h), so a fragment finds the key without
// hashing it again; Go's map would hash the key's bytes, which, a batch
// after the reader last read them, are out of the cache.
//
// An entry is the hash's top 32 bits and the slot plus one; zero is a free
// place. A key's home place is its hash's top bits, so an entry alone says
// where it belongs: growing and deleting need no hashing. The array is at
// most half full.
type hashIndex struct {
	ents  []uint64
	n     int
	shift uint // 64 - log2(len(ents))
	// dels counts the keys removed: a table's slots only move when one
	// is (a slot found for a key stays its slot while dels does not
	// change: keySlots).
	dels uint64
}

// hashIndexed reports whether a table keyed by K finds its keys with a
// hashIndex: for keys whose stable hash is cheap (strings and 64-bit
// integers, see keyHasher). Other keys are hashed by encoding them, which
// costs more than Go's map when a batch comes without hashes (from another
// node), so their tables keep the map.
func hashIndexed[K any]() bool {
	switch reflect.TypeFor[K]().Kind() {
	case reflect.String, reflect.Int64, reflect.Uint64, reflect.Int, reflect.Uint:
		return true
	}
	return false
}

func hashEntry(h uint64, slot int32) uint64 { return h>>32<<32 | uint64(uint32(slot+1)) }

// find returns the place of key k, whose hash is h, among keys (the
// table's slots), or -1.
func hxFind[K comparable](x *hashIndex, keys []K, k K, h uint64) int {
	if len(x.ents) == 0 {
		return -1
	}
	mask := uint64(len(x.ents) - 1)
	tag := h >> 32
	for p := h >> x.shift; ; p = (p + 1) & mask {
		e := x.ents[p]
		if e == 0 {
			return -1
		}
		if e>>32 == tag && keys[int32(uint32(e))-1] == k {
			return int(p)
		}
	}
}

// hxSlot is hxFind returning the key's slot (not its place), or -1: what
// a lookup wants, without reading the entry a second time.
func hxSlot[K comparable](x *hashIndex, keys []K, k K, h uint64) int32 {
	ents := x.ents
	if len(ents) == 0 {
		return -1
	}
	mask := uint64(len(ents) - 1)
	tag := h >> 32
	for p := h >> x.shift; ; p = (p + 1) & mask {
		e := ents[p&mask]
		if e == 0 {
			return -1
		}
		if e>>32 == tag {
			if s := int32(uint32(e)) - 1; keys[s] == k {
				return s
			}
		}
	}
}

// hxSlotString is hxSlot for a table of strings, whose keys it compares
// with sameString.
func hxSlotString(x *hashIndex, keys []string, k string, h uint64) int32 {
	ents := x.ents
	if len(ents) == 0 {
		return -1
	}
	mask := uint64(len(ents) - 1)
	tag := h >> 32
	for p := h >> x.shift; ; p = (p + 1) & mask {
		e := ents[p&mask]
		if e == 0 {
			return -1
		}
		if e>>32 == tag {
			if s := int32(uint32(e)) - 1; sameString(keys[s], k) {
				return s
			}
		}
	}
}

// hxFindBytes is hxFind for a table of strings and a key as bytes.
func hxFindBytes(x *hashIndex, keys []string, b []byte, h uint64) int {
	if len(x.ents) == 0 {
		return -1
	}
	mask := uint64(len(x.ents) - 1)
	tag := h >> 32
	for p := h >> x.shift; ; p = (p + 1) & mask {
		e := x.ents[p]
		if e == 0 {
			return -1
		}
		if e>>32 == tag && sameKey(keys[int32(uint32(e))-1], b) {
			return int(p)
		}
	}
}

// slotAt is the slot of the entry at place p.
func (x *hashIndex) slotAt(p int) int32 { return int32(uint32(x.ents[p])) - 1 }

// setSlot points the entry at place p to slot.
func (x *hashIndex) setSlot(p int, slot int32) { x.ents[p] = hashEntry(x.ents[p], slot) }

// add enters a key that is not in the index, with hash h, at slot.
func (x *hashIndex) add(h uint64, slot int32) {
	if 2*(x.n+1) > len(x.ents) {
		old := x.ents
		x.ents = make([]uint64, max(8, 2*len(old)))
		x.shift = uint(64 - bits.TrailingZeros(uint(len(x.ents))))
		for _, e := range old {
			if e != 0 {
				x.place(e)
			}
		}
	}
	x.place(hashEntry(h, slot))
	x.n++
}

func (x *hashIndex) place(e uint64) {
	mask := uint64(len(x.ents) - 1)
	for p := e >> x.shift; ; p = (p + 1) & mask {
		if x.ents[p] == 0 {
			x.ents[p] = e
			return
		}
	}
}

// removeAt deletes the entry at place p, moving the entries after it
// back so that no entry's probe crosses a free place.
func (x *hashIndex) removeAt(p int) {
	x.n--
	x.dels++
	mask := uint64(len(x.ents) - 1)
	hole := uint64(p)
	for q := (hole + 1) & mask; ; q = (q + 1) & mask {
		e := x.ents[q]
		if e == 0 {
			break
		}
		// The entry at q may fill the hole if the hole is between its
		// home and q.
		if home := e >> x.shift; (q-home)&mask >= (q-hole)&mask {
			x.ents[hole] = e
			hole = q
		}
	}
	x.ents[hole] = 0
}

// lookup returns key k's slot; h is its hash, or 0 if not known.
func (t *table[K, V]) lookup(k K, h uint64) (int32, bool) {
	if t.hash == nil {
		i, ok := t.idx[k]
		return i, ok
	}
	if h == 0 {
		h = t.hash(k)
	}
	var s int32
	if t.strs {
		s = hxSlotString(&t.hx, *(*[]string)(unsafe.Pointer(&t.keys)), *(*string)(unsafe.Pointer(&k)), h)
	} else {
		s = hxSlot(&t.hx, t.keys, k, h)
	}
	if s >= 0 {
		return s, true
	}
	return 0, false
}

// indexAdd enters key k, absent, at slot i; h is its hash, or 0 if not
// known.
func (t *table[K, V]) indexAdd(k K, h uint64, i int32) {
	if t.hash == nil {
		t.idx[k] = i
		return
	}
	if h == 0 {
		h = t.hash(k)
	}
	t.hx.add(h, i)
}

// indexDelete removes key k; indexMove then points it to slot i.
func (t *table[K, V]) indexDelete(k K) {
	if t.hash == nil {
		delete(t.idx, k)
		return
	}
	if p := hxFind(&t.hx, t.keys, k, t.hash(k)); p >= 0 {
		t.hx.removeAt(p)
	}
}

// indexMove points key k, which moved, to slot i. keys[i] must already
// be k.
func (t *table[K, V]) indexMove(k K, i int32) {
	if t.hash == nil {
		t.idx[k] = i
		return
	}
	if p := hxFind(&t.hx, t.keys, k, t.hash(k)); p >= 0 {
		t.hx.setSlot(p, i)
	}
}
