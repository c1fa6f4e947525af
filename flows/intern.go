package flows

// Interner hands out one string for each distinct byte sequence it is
// given, so that a fragment decoding batches from other nodes does not
// allocate its keys (and string fields equal to them) again for every
// batch, and its map lookups find the very string the state holds, whose
// comparison stops at the pointer. It holds at most maxInterned strings: a
// full interner starts over, and one whose strings were mostly new (keys
// that do not repeat) rests for a while, decoding as if it were not there.
// An Interner belongs to one goroutine; the zero value is ready.
type Interner struct {
	m            map[string]string
	hits, misses int
	rest         int // lookups left to skip
}

const (
	maxInterned   = 1 << 14
	internResting = 1 << 20
)

// String returns a string equal to b, the same one as before if it has
// seen b since it last started over. A nil Interner allocates a new string.
func (in *Interner) String(b []byte) string {
	if in == nil {
		return string(b)
	}
	if in.rest > 0 {
		in.rest--
		return string(b)
	}
	if s, ok := in.m[string(b)]; ok {
		in.hits++
		return s
	}
	in.misses++
	if in.m == nil {
		in.m = make(map[string]string)
	}
	if len(in.m) >= maxInterned {
		if in.hits < in.misses {
			in.rest = internResting
		}
		clear(in.m)
		in.hits, in.misses = 0, 0
	}
	s := string(b)
	in.m[s] = s
	return s
}

// internDecoder is a codec that can take its strings from an Interner.
type internDecoder[T any] interface {
	decodeInterned(b []byte, in *Interner) (T, error)
}
