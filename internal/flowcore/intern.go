package flowcore

import (
	"hash/maphash"

	"github.com/tessera-streams/tessera/shard"
)

// Interner hands out one string for each distinct byte sequence it is
// given, as far as it remembers, so that a fragment decoding batches from
// other nodes does not allocate its keys (and the event fields equal to
// them) again for every batch, and its table lookups find the very string
// the state holds, whose comparison stops at the pointer. It is a
// two-way cache of internSlots strings: bounded, and a key that
// never repeats costs one hash and one comparison more than a plain
// decode, not a map that grows. Only short strings are kept (keys and
// names, up to internMax bytes): a long one is a payload, rarely repeated,
// and holding 4,096 of them could keep megabytes alive per fragment. The
// string it returned last is checked first: an event usually carries its
// key again, decoded right after it. An Interner belongs to one
// goroutine; the zero value is ready.
type Interner struct {
	slots []string
	// tags holds 16 bits of each slot's hash (0: empty), a small array
	// that stays in the caches: a lookup reads a slot, and its string's
	// bytes, only where the tag matches. Decoding batches from other nodes
	// missed the caches on most slots and strings it read; a key in its
	// second slot, or a new one, cost a miss or two on the first for
	// nothing.
	tags []uint16
	last string
	// stageKeys[s], when set, finds a key of keyed stage s in a table of
	// the fragment the Interner belongs to (Fragment.Interner), by its
	// bytes: the string the state holds. A key decoded from another
	// node's batch is then looked up once in the table's map, which the
	// apply reads again from the caches and compares by pointer, rather
	// than in the slots first: they missed the caches as often as the
	// map. find is the one of the key being decoded now.
	stageKeys []func(b []byte) (string, bool)
	find      func(b []byte) (string, bool)
}

const (
	internSlots = 1 << 12
	internMax   = 128 // bytes: at most 512 KiB of strings held per Interner
)

var internSeed = maphash.MakeSeed()

// String returns a string equal to b: the one it returned before for the
// same bytes, if it still holds it. A nil Interner allocates a new string.
func (in *Interner) String(b []byte) string {
	if in == nil || len(b) > internMax {
		return string(b)
	}
	if string(b) == in.last {
		return in.last
	}
	if in.find != nil {
		if s, ok := in.find(b); ok {
			in.last = s
			return s
		}
	}
	if in.slots == nil {
		in.slots = make([]string, internSlots)
		in.tags = make([]uint16, internSlots)
	}
	h := maphash.Bytes(internSeed, b)
	i1, i2 := h&(internSlots-1), (h>>32)&(internSlots-1)
	tag := uint16(h>>48) | 1
	t1, t2 := in.tags[i1], in.tags[i2]
	switch {
	case t1 == tag && string(b) == in.slots[i1]:
		in.last = in.slots[i1]
	case t2 == tag && string(b) == in.slots[i2]:
		in.last = in.slots[i2]
	default:
		// Two places per string: with one, keys that share a slot pushed
		// each other out on every batch.
		s := string(b)
		at := i1
		if t1 != 0 && (t2 == 0 || h&(1<<31) != 0) {
			at = i2
		}
		in.slots[at], in.tags[at], in.last = s, tag, s
	}
	return in.last
}

// internDecoder is a codec that can take its strings from an Interner.
type internDecoder[T any] interface {
	decodeInterned(b []byte, in *Interner) (T, error)
}

// keysOf has i find the keys of stage with find, unless a table of the
// stage was given before (any one holds every key the stage applied).
func (in *Interner) keysOf(stage int, find func(b []byte) (string, bool)) {
	if find == nil {
		return
	}
	if stage >= len(in.stageKeys) {
		in.stageKeys = append(in.stageKeys, make([]func([]byte) (string, bool), stage+1-len(in.stageKeys))...)
	}
	if in.stageKeys[stage] == nil {
		in.stageKeys[stage] = find
	}
}

// keyFinder is the finder of stage's keys, or nil.
func (in *Interner) keyFinder(stage int) func(b []byte) (string, bool) {
	if in == nil || stage >= len(in.stageKeys) {
		return nil
	}
	return in.stageKeys[stage]
}

// stringKeys finds a key by its bytes, for a table keyed by plain strings
// (nil for any other key type): the map lookup with the conversion in its
// index expression does not allocate.
func (t *table[K, V]) stringKeys() func(b []byte) (string, bool) {
	keys, ok := any(&t.keys).(*[]string) // the field: it grows by append
	if !ok {
		return nil
	}
	if t.hash != nil {
		return func(b []byte) (string, bool) {
			p := hxFindBytes(&t.hx, *keys, b, shard.Bytes(b))
			if p < 0 {
				return "", false
			}
			return (*keys)[t.hx.slotAt(p)], true
		}
	}
	idx := any(t.idx).(map[string]int32)
	return func(b []byte) (string, bool) {
		i, ok := idx[string(b)]
		if !ok {
			return "", false
		}
		return (*keys)[i], true
	}
}
