package flowcore

import (
	"encoding/binary"
	"hash/maphash"
	"unsafe"

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
	// node's batch is then looked up once in the table's index, which the
	// apply reads again from the caches and compares by pointer, rather
	// than in the slots first: they missed the caches as often as the
	// index. A batch's keys are looked up together (keyBatch, from
	// decodeParts); find is the index String tries for one key.
	stageKeys []*stringIndex
	find      *stringIndex
	// arena, while set, is where String puts a string it did not hold:
	// a key the table of its stage does not hold yet (decodeParts).
	arena *keyArena
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
		if s, ok := in.find.find(b); ok {
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
		var s string
		if in.arena != nil {
			s = in.arena.string(b)
		} else {
			s = string(b)
		}
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
func (in *Interner) keysOf(stage int, find *stringIndex) {
	if find == nil {
		return
	}
	if stage >= len(in.stageKeys) {
		in.stageKeys = append(in.stageKeys, make([]*stringIndex, stage+1-len(in.stageKeys))...)
	}
	if in.stageKeys[stage] == nil {
		in.stageKeys[stage] = find
	}
}

// keyFinder is the index of stage's keys, or nil.
func (in *Interner) keyFinder(stage int) *stringIndex {
	if in == nil || stage >= len(in.stageKeys) {
		return nil
	}
	return in.stageKeys[stage]
}

// stringIndex finds the keys of a table keyed by plain strings by their
// bytes, and hands out the table's own strings.
type stringIndex struct {
	x    *hashIndex       // the table's index; nil: idx
	idx  map[string]int32 // a table without a hash index
	keys *[]string        // the field: it grows by append
	// arena, for a table that never removes a key (no TTL), holds the
	// keys decoded for it that it did not hold yet: the keys it then
	// inserts (nearly all of them) lie side by side.
	arena *keyArena
}

// keyArena packs the bytes of a table's new keys in chunks. A key decoded
// from another node's batch was a string of its own, at whatever place
// the allocator had free (amid the Interner's other strings and the
// batch's garbage): finding the keys of a batch read a cache line for
// every key's bytes, and a node's tables' keys spread over several times
// the lines they fill packed. A chunk lives while any of its keys does:
// as long as its table, which removes none; a key kept after its table
// is dropped (its fragment moved) keeps its chunk, at most arenaChunk
// bytes (of keys that were all the table's).
type keyArena struct{ buf []byte }

const (
	arenaChunk  = 4 << 10
	arenaMaxKey = 256 // bytes; a longer key is a string of its own
)

// string returns a string equal to b, in the arena.
func (a *keyArena) string(b []byte) string {
	if len(b) == 0 || len(b) > arenaMaxKey {
		return string(b)
	}
	if len(a.buf)+len(b) > cap(a.buf) {
		// Chunks grow to arenaChunk: a table of a few keys takes a few
		// bytes more than their own.
		a.buf = make([]byte, 0, max(min(2*cap(a.buf), arenaChunk), 64, len(b)))
	}
	a.buf = append(a.buf, b...)
	return unsafe.String(&a.buf[len(a.buf)-len(b)], len(b))
}

// stringKeys finds a key by its bytes, for a table keyed by plain strings
// (nil for any other key type): the map lookup with the conversion in its
// index expression does not allocate.
func (t *table[K, V]) stringKeys() func(b []byte) (string, bool) {
	s := t.stringIndex()
	if s == nil {
		return nil
	}
	return s.find
}

// stringIndex is the table's index of string keys, or nil for a table of
// any other key type. With a hash index, the hash of a key's bytes
// (shard.Bytes) is the table's hash of the key (keyHasher).
func (t *table[K, V]) stringIndex() *stringIndex {
	keys, ok := any(&t.keys).(*[]string)
	if !ok {
		return nil
	}
	if t.hash != nil {
		return &stringIndex{x: &t.hx, keys: keys}
	}
	return &stringIndex{idx: any(t.idx).(map[string]int32), keys: keys}
}

// hashed reports whether the index finds keys by their stable hash.
func (s *stringIndex) hashed() bool { return s.x != nil }

// find returns the table's string equal to b, if it holds one.
func (s *stringIndex) find(b []byte) (string, bool) {
	if s.x != nil {
		return s.findHashed(b, shard.Bytes(b))
	}
	i, ok := s.idx[string(b)]
	if !ok {
		return "", false
	}
	return (*s.keys)[i], true
}

func (s *stringIndex) findHashed(b []byte, h uint64) (string, bool) {
	k, slot := s.slotHashed(b, h)
	return k, slot >= 0
}

// slotHashed is findHashed returning the key's slot too (-1: not found).
func (s *stringIndex) slotHashed(b []byte, h uint64) (string, int32) {
	p := hxFindBytes(s.x, *s.keys, b, h)
	if p < 0 {
		return "", -1
	}
	slot := s.x.slotAt(p)
	return (*s.keys)[slot], slot
}

// probeAhead is how many places after a key's home keyBatch.find looks
// for its tag before it probes the key alone.
const probeAhead = 3

// keyBatch looks up a run of keys in a stringIndex at once (find). It
// is scratch, reused from batch to batch.
type keyBatch struct {
	buf   []byte    // where the keys' bytes are
	spans []keySpan // the keys in buf
	hs    []uint64  // their hashes (shard.Bytes), with a hash index
	got   []string  // the table's string equal to key i, if found[i]
	found []bool
	ents  []uint64
	// slots[i] is key i's slot in the table (-1: not found), with a hash
	// index: decodeParts hands them on to the table's bulk apply
	// (keySlots), which then need not look the keys up again.
	slots []int32
}

type keySpan struct{ at, n int }

// reset makes room for n keys in buf.
func (kb *keyBatch) reset(buf []byte, n int) {
	if cap(kb.spans) < n {
		kb.spans, kb.hs = make([]keySpan, 0, n), make([]uint64, 0, n)
		kb.got, kb.found, kb.ents = make([]string, n), make([]bool, n), make([]uint64, n)
		kb.slots = make([]int32, n)
	}
	kb.buf, kb.spans, kb.hs = buf, kb.spans[:0], kb.hs[:0]
}

// add adds the key buf[at:at+n], whose hash is h.
func (kb *keyBatch) add(at, n int, h uint64) {
	kb.spans = append(kb.spans, keySpan{at, n})
	kb.hs = append(kb.hs, h)
}

func (kb *keyBatch) key(i int) []byte {
	s := kb.spans[i]
	return kb.buf[s.at : s.at+s.n]
}

// done drops what the scratch refers to: the batch's bytes and the
// table's strings stay collectable.
func (kb *keyBatch) done() {
	clear(kb.got[:len(kb.spans)])
	kb.buf, kb.spans = nil, kb.spans[:0]
}

// find finds the keys in s.
//
// One lookup reads three places the caches rarely hold for keys from
// another node: the key's entry in the index, the slot's string header
// and the string's bytes. Looked up one after another, each waited for
// the one before (a branch on what it read); here the entries of every
// key are read first, then the headers of every candidate, then the keys
// compared, so the CPU waits for the misses of a step together. A key not
// near its home place is probed alone. (Reading each candidate's first
// byte in a step of its own, before the comparisons, measured no faster.)
func (kb *keyBatch) find(s *stringIndex) {
	n := len(kb.spans)
	got, found := kb.got[:n], kb.found[:n]
	if s.x == nil {
		for i := range n {
			got[i], found[i] = s.find(kb.key(i))
		}
		return
	}
	x, keys, hs, slots := s.x, *s.keys, kb.hs[:n], kb.slots[:n]
	if len(x.ents) == 0 {
		clear(got)
		clear(found)
		for i := range slots {
			slots[i] = -1
		}
		return
	}
	ents, mask := kb.ents[:n], uint64(len(x.ents)-1)
	for i, h := range hs {
		ents[i] = x.ents[h>>x.shift]
	}
	for i, e := range ents {
		// The first entry with the key's tag from its home place on: a
		// key pushed off its home is mostly in the same cache line.
		tag, p := hs[i]>>32, hs[i]>>x.shift
		for range probeAhead {
			if e == 0 || e>>32 == tag {
				break
			}
			p = (p + 1) & mask
			e = x.ents[p]
		}
		found[i] = e != 0 && e>>32 == tag
		if found[i] {
			slots[i] = int32(uint32(e)) - 1
			got[i] = keys[slots[i]]
		}
	}
	for i := range n {
		b := kb.key(i)
		if found[i] && sameKey(got[i], b) {
			continue
		}
		got[i], slots[i] = s.slotHashed(b, hs[i])
		found[i] = slots[i] >= 0
	}
}

// sameKey reports whether s and b hold the same bytes, as sameString
// does; its own body, without sameString's pointer check (a batch's bytes
// are never a table's string), keeps it within the inlining budget of
// keyBatch.find and hxFindBytes.
func sameKey(s string, b []byte) bool {
	n := len(s)
	if n != len(b) || n < 8 || n > 16 {
		return s == string(b)
	}
	x := unsafe.Slice(unsafe.StringData(s), n)
	return binary.LittleEndian.Uint64(x) == binary.LittleEndian.Uint64(b) &&
		binary.LittleEndian.Uint64(x[n-8:]) == binary.LittleEndian.Uint64(b[n-8:])
}

// sameString is a == b with keys of 8 to 16 bytes compared as their
// first and last 8 bytes, inline: the runtime's comparison, a call for
// every key of a batch, was about a twentieth of decoding other nodes'
// batches, and most of a count's lookup of a key its table took from
// another node (a string the reader's record does not share).
func sameString(a, b string) bool {
	n := len(a)
	if n != len(b) {
		return false
	}
	pa, pb := unsafe.StringData(a), unsafe.StringData(b)
	if pa == pb {
		return true
	}
	if n < 8 || n > 16 {
		return a == b
	}
	x, y := unsafe.Slice(pa, n), unsafe.Slice(pb, n)
	return binary.LittleEndian.Uint64(x) == binary.LittleEndian.Uint64(y) &&
		binary.LittleEndian.Uint64(x[n-8:]) == binary.LittleEndian.Uint64(y[n-8:])
}
