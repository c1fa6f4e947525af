package flowcore

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"reflect"
	"sync"
	"unsafe"
)

// The compact form of an exchange's records entry (kind 4), for the
// common exchange of an integer key and a plain struct without event time
// (a table's updates re-keyed by a number: a count of counts).
//
// A records entry is most of what a checkpoint of such a fragment writes,
// and it is written once and deleted a few checkpoint intervals later: its
// bytes cost their encoding, the store's log, memtable, flush and
// compaction. In the form of a batch part (kind 3), a record of the
// two-stage bench took 19 bytes, 12 of them the updated key's string,
// which a fragment's updates repeat: in one checkpoint interval a
// fragment updates each of its keys dozens of times. The compact form
// leaves out the lengths that a batch part puts before the key and the
// event, and writes a string once per entry: later records refer to it.
//
// The value: to (varint), the stage and the number of records (uvarints),
// then per record the distance of its number from the number of the
// record before (from, for the first; a uvarint), the key (varint), and
// the event's fields as structCodec writes them, except strings: a
// uvarint r, then for r = 0 a string in structCodec's form, which becomes
// the entry's next string, and otherwise the entry's r-th string.
//
// Strings are found again by where their bytes are, not by their bytes: a
// table's updates carry the table's own string of a key, so a key's
// updates share one pointer, and a lookup costs a hash of two words. Two
// equal strings elsewhere are written twice, which is only bigger.
//
// Kind 5 (exDenseEntry), what writers write now, is the same but for the
// numbers: an entry that holds every record from from to to (no holes,
// which only a restore leaves) writes none, as they are from, from+1, and
// so on; an entry with holes writes them as kind 4 does. A log without
// holes is the rule, and a record's number was one of its four fields.
const (
	exCompactEntry = 4
	exDenseEntry   = 5
)

// exCompact is what an exchange writer needs for the compact form.
type exCompact[K comparable, T any] struct {
	kc intCodec[K]
	sc *structCodec[T]
	// strInt: the event is a string and then an int64 (a table's updates
	// of a count by a string key), at offsets strOff and intOff, which
	// encodeStringInt writes without a loop over the fields.
	strInt         bool
	strOff, intOff uintptr
}

// newExCompact is the compact form for codecs kc and ec with event time
// et, or nil if the exchange cannot use it.
func newExCompact[K comparable, T any](kc KeyCodec[K], ec Codec[T], et bool) *exCompact[K, T] {
	ki, ok := kc.(intCodec[K])
	if !ok || et {
		return nil
	}
	sc, ok := ec.(*structCodec[T])
	if !ok {
		return nil
	}
	x := &exCompact[K, T]{kc: ki, sc: sc}
	if ops := sc.ops; len(ops) == 2 && ops[0].kind == reflect.String && ops[1].kind == reflect.Int64 {
		x.strInt, x.strOff, x.intOff = true, ops[0].off, ops[1].off
	}
	return x
}

// encode appends the records in the log's slots from to to (the holes left
// out) after val, which holds the entry's head; with numbered, each with
// the distance of its number from the record's before.
//
// A plain loop over the chunks, not runs with a closure: val and prev
// written through a closure's pointers took a write barrier check on every
// append, and the calls a tenth of the time while the GC marks.
func (x *exCompact[K, T]) encode(w *exWriter[K, T], val []byte, from, to int64, numbered bool) []byte {
	strs := exStringTables.Get().(*exStrings)
	defer exStringTables.Put(strs)
	strs.reset()
	if x.strInt && !numbered && w.holes == 0 {
		return x.encodeStringInt(w, strs, val, from, to)
	}
	return x.encodeFields(w, strs, val, from, to, numbered)
}

// encodeFields is encode's loop for any event: per record, a loop over
// its fields.
func (x *exCompact[K, T]) encodeFields(w *exWriter[K, T], strs *exStrings, val []byte, from, to int64, numbered bool) []byte {
	prev := from
	ops := x.sc.ops
	holes := w.holes > 0 // else no slot is noDest: its dest is not read
	ahead, str := x.firstString()
	var sink uint32
	for n := from; n < to; {
		c, i := w.slot(n)
		j := min(exChunkLen, i+int(to-n))
		slot0 := n - int64(i) // the number of the chunk's slot 0
		for k := i; k < j; k++ {
			if str && k+stringAhead < j {
				sink += strs.home(*(*string)(unsafe.Add(unsafe.Pointer(&c.recs[k+stringAhead].Val), ahead)))
			}
			if holes && c.dest[k] == noDest {
				continue
			}
			r := &c.recs[k]
			if numbered {
				off := slot0 + int64(k)
				val = binary.AppendUvarint(val, uint64(off-prev))
				prev = off
			}
			val = binary.AppendVarint(val, x.kc.get(&r.Key))
			p := unsafe.Pointer(&r.Val)
			for o := range ops {
				op := &ops[o]
				switch op.kind {
				case reflect.Int64: // a count: spared the call
					val = binary.AppendVarint(val, *(*int64)(unsafe.Add(p, op.off)))
				case reflect.String:
					s := *(*string)(unsafe.Add(p, op.off))
					if ref := strs.find(s); ref > 0 {
						val = binary.AppendUvarint(val, uint64(ref))
						continue
					}
					val = binary.AppendUvarint(append(val, 0), uint64(len(s)))
					val = append(val, s...)
				default:
					val = appendField(val, op, p)
				}
			}
		}
		n += int64(j - i)
	}
	strs.sink += sink
	return val
}

// encodeStringInt is encode's loop for an event of a string and an int64
// (strInt) in a log without holes, records not numbered: the bytes
// encodeFields writes, without its loop and switch over the fields per
// record: with the hash's shift kept, 29% fewer instructions per record
// than encodeFields took (BenchmarkExchange under cachegrind).
func (x *exCompact[K, T]) encodeStringInt(w *exWriter[K, T], strs *exStrings, val []byte, from, to int64) []byte {
	so, io := x.strOff, x.intOff
	var sink uint32
	for n := from; n < to; {
		c, i := w.slot(n)
		j := min(exChunkLen, i+int(to-n))
		for k := i; k < j; k++ {
			if k+stringAhead < j {
				s := *(*string)(unsafe.Add(unsafe.Pointer(&c.recs[k+stringAhead].Val), so))
				sink += strs.home(s)
				if len(s) > 0 {
					sink += uint32(s[0]) // its bytes, which the entry's first use of s copies
				}
			}
			r := &c.recs[k]
			val = binary.AppendVarint(val, x.kc.get(&r.Key))
			p := unsafe.Pointer(&r.Val)
			s := *(*string)(unsafe.Add(p, so))
			if ref := strs.at(s); ref > 0 {
				val = binary.AppendUvarint(val, uint64(ref))
			} else if ref := strs.find(s); ref > 0 {
				val = binary.AppendUvarint(val, uint64(ref))
			} else {
				val = binary.AppendUvarint(append(val, 0), uint64(len(s)))
				val = append(val, s...)
			}
			val = binary.AppendVarint(val, *(*int64)(unsafe.Add(p, io)))
		}
		n += int64(j - i)
	}
	strs.sink += sink
	return val
}

// stringAhead is how many records ahead encode reads the home slot of a
// record's string: a string table of a fragment's keys does not fit the
// first-level cache, and a lookup waited for its slot (half of what
// encoding cost); read ahead, the misses of several records overlap.
// The string's first byte is read ahead too: an entry copies a string's
// bytes the first time it holds it, and that copy waited for them (an
// eighth of encoding, for a count's updates: their keys' bytes were last
// read when the count's lookup compared them).
const stringAhead = 8

// firstString is the offset of the event's first string field, if it has
// one.
func (x *exCompact[K, T]) firstString() (uintptr, bool) {
	for o := range x.sc.ops {
		if x.sc.ops[o].kind == reflect.String {
			return x.sc.ops[o].off, true
		}
	}
	return 0, false
}

// decode reads n records numbered from from to to from b, which follows
// the entry's head, and hands each to fn in order; numbered says whether
// the records carry their numbers, else n must be to-from.
func (x *exCompact[K, T]) decode(b []byte, n int, from, to int64, numbered bool, fn func(Rec[K, T])) error {
	if !numbered && int64(n) != to-from {
		return fmt.Errorf("a compact records entry of %d records without numbers for [%d, %d)", n, from, to)
	}
	var strs []string
	prev := from
	for i := range n {
		var r Rec[K, T]
		if numbered {
			d, m := binary.Uvarint(b)
			if m <= 0 || d > uint64(to-prev) || (i > 0 && d == 0) {
				return fmt.Errorf("record %d of a compact records entry: bad number", i)
			}
			b = b[m:]
			r.Off = prev + int64(d)
		} else {
			r.Off = from + int64(i)
		}
		prev = r.Off
		if r.Off >= to {
			return fmt.Errorf("record %d of a compact records entry: numbered %d, past %d", i, r.Off, to)
		}
		k, m := binary.Varint(b)
		if m <= 0 {
			return fmt.Errorf("record %d of a compact records entry: bad key", i)
		}
		if err := x.kc.set(&r.Key, k); err != nil {
			return fmt.Errorf("record %d of a compact records entry: %w", i, err)
		}
		b = b[m:]
		p := unsafe.Pointer(&r.Val)
		for o := range x.sc.ops {
			op := &x.sc.ops[o]
			if op.kind == reflect.String {
				ref, m := binary.Uvarint(b)
				if m <= 0 || ref > uint64(len(strs)) {
					return fmt.Errorf("record %d of a compact records entry: field %s: bad string reference", i, op.name)
				}
				b = b[m:]
				if ref > 0 {
					*(*string)(unsafe.Add(p, op.off)) = strs[ref-1]
					continue
				}
			}
			m, err := decodeField(b, op, p, nil)
			if err != nil {
				return fmt.Errorf("record %d of a compact records entry: %w", i, err)
			}
			b = b[m:]
			if op.kind == reflect.String {
				strs = append(strs, *(*string)(unsafe.Add(p, op.off)))
			}
		}
		fn(r)
	}
	if len(b) != 0 {
		return fmt.Errorf("%d trailing bytes in a compact records entry", len(b))
	}
	return nil
}

// exStrings numbers the strings of one entry, from 1, by where their bytes
// are and their length: an open-addressed table. Its slots outlive the
// entry: an entry's strings are numbered from base on, so a slot numbered
// at or below base is free, and starting an entry costs no clearing. The
// tables are pooled (exStringTables), not kept per writer: 64 fragments'
// tables were 6 MB that each checkpoint found cold; a pooled one is warm
// on the goroutine that encodes the next entry.
type exStrings struct {
	slots []exString
	shift uint   // 64 - log2(len(slots)): exStringHash's shift, kept rather than counted per string
	base  uint32 // the entry's strings are numbered base+1 to base+n
	n     uint32
	sink  uint32 // what encode read ahead (home), summed so the reads stay
}

// exString is 16 bytes: four to a cache line.
type exString struct {
	p   uintptr // the string's bytes; the log keeps them alive while an entry is encoded
	l   uint32
	ref uint32 // base+number: free if at or below base
}

var exStringTables = sync.Pool{New: func() any { return newExStrings(1024) }}

// newExStrings is an empty table of n slots, a power of two.
func newExStrings(n int) *exStrings {
	return &exStrings{slots: make([]exString, n), shift: uint(64 - bits.Len(uint(n-1)))}
}

// reset starts an entry: the numbers of the last one are forgotten.
func (t *exStrings) reset() {
	t.base += t.n
	t.n = 0
	if t.base > math.MaxUint32/2 {
		clear(t.slots)
		t.base = 0
	}
}

// find is the number of s if the entry holds it already, or 0 after
// numbering it.
func (t *exStrings) find(s string) int {
	if 2*(t.n+1) > uint32(len(t.slots)) {
		t.grow()
	}
	p, l := uintptr(unsafe.Pointer(unsafe.StringData(s))), len(s)
	if l == 0 {
		p = 0
	}
	t.n++
	if uint64(l) > math.MaxUint32 {
		return 0 // numbered, but never found: written again each time
	}
	mask := uint64(len(t.slots) - 1)
	for i := exStringHash(p, l, t.shift) & mask; ; i = (i + 1) & mask {
		e := &t.slots[i]
		if e.ref <= t.base {
			*e = exString{p: p, l: uint32(l), ref: t.base + t.n}
			return 0
		}
		if e.p == p && e.l == uint32(l) {
			t.n-- // found: not numbered again
			return int(e.ref - t.base)
		}
	}
}

// at is the number of s if its home slot holds it, else 0 (find looks
// further, and numbers it): what find returns for a string the entry
// holds at its home slot, in a call small enough to be inlined, which a
// string the entry repeats mostly is.
func (t *exStrings) at(s string) uint32 {
	p, l := uintptr(unsafe.Pointer(unsafe.StringData(s))), len(s)
	e := &t.slots[exStringHash(p, l, t.shift)&uint64(len(t.slots)-1)]
	if e.ref > t.base && e.p == p && uint64(e.l) == uint64(l) && l != 0 {
		return e.ref - t.base
	}
	return 0
}

// home reads the home slot of s, for the caches (see stringAhead), and
// returns what it read so that the read is kept.
func (t *exStrings) home(s string) uint32 {
	p := uintptr(unsafe.Pointer(unsafe.StringData(s)))
	return t.slots[exStringHash(p, len(s), t.shift)&uint64(len(t.slots)-1)].ref
}

// grow doubles the table, keeping the entry's strings.
func (t *exStrings) grow() {
	old := t.slots
	t.slots = make([]exString, max(1024, 2*len(old)))
	t.shift = uint(64 - bits.Len(uint(len(t.slots)-1)))
	mask := uint64(len(t.slots) - 1)
	for _, e := range old {
		if e.ref <= t.base {
			continue
		}
		i := exStringHash(e.p, int(e.l), t.shift) & mask
		for t.slots[i].ref > t.base {
			i = (i + 1) & mask
		}
		t.slots[i] = e
	}
}

// exStringHash is the home slot of a string's bytes p and length l in a
// table of 2^(64-shift) slots: the top bits of a Fibonacci hash.
func exStringHash(p uintptr, l int, shift uint) uint64 {
	h := (uint64(p) ^ uint64(l)<<56) * 0x9e3779b97f4a7c15
	return h >> (shift & 63)
}
