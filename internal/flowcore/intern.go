package flowcore

import "hash/maphash"

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
	last  string
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
	if in.slots == nil {
		in.slots = make([]string, internSlots)
	}
	h := maphash.Bytes(internSeed, b)
	s1, s2 := &in.slots[h&(internSlots-1)], &in.slots[(h>>32)&(internSlots-1)]
	switch {
	case string(b) == *s1:
		in.last = *s1
	case string(b) == *s2:
		in.last = *s2
	default:
		// Two places per string: with one, keys that share a slot pushed
		// each other out on every batch.
		s := string(b)
		if *s1 != "" && (*s2 == "" || h&(1<<31) != 0) {
			s1 = s2
		}
		*s1, in.last = s, s
	}
	return in.last
}

// internDecoder is a codec that can take its strings from an Interner.
type internDecoder[T any] interface {
	decodeInterned(b []byte, in *Interner) (T, error)
}
