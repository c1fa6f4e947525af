package flowcore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"reflect"
	"sync"
	"unsafe"

	"github.com/tessera-streams/tessera/shard"
)

// Batches cross nodes in this encoding (inside a wire.Batch):
//
//	version byte (3; 1 and 2 are read too)
//	source, partition uvarint; epoch uvarint; prev_end, end varint; count uvarint
//	flags byte (1: event time, 2: idle, 4: done); watermark varint (with event time)
//	parts uvarint, then per part: stage uvarint, records uvarint,
//	  form uvarint (version 3 only: 0 spliced; 2f or 2f+1, f > 0, field f-1,
//	    2f+1 with keys front-coded), and per record
//	  offset (the first absolute, a varint; then the difference from the one
//	    before: a uvarint in the field form, a varint in the others)
//	  event time (varint, delta from the previous; with event time)
//	  key as uvarint length + the codec's bytes; front-coded: uvarint s,
//	    the bytes the key shares with the record's before (its first s),
//	    then uvarint length + the bytes that follow them
//	  event: uvarint h, then
//	    version 1: the codec's h bytes
//	    spliced form (version 2; version 3 with form 0):
//	      h even: the codec's h/2 bytes
//	      h odd: uvarint at, then the h/2 bytes of the event's encoding
//	        without the key's bytes, which stood at byte at
//	    field form (version 3, form f > 0; a string key and a plain struct
//	    event, structCodec):
//	      h even: the codec's h/2 bytes
//	      h odd: the h/2 bytes of the event's encoding without its string
//	        field f-1, length and bytes, which is the key
//
// An event usually holds its key (a field of it, or it is the key): sent
// once, a record of the keyed count is about half the bytes, and every copy
// between the reader and the fragment (the encoding, protobuf on both
// sides, gRPC, the kernel's) and the garbage they leave shrink with it.
// The splice is at the level of bytes, so it is exact for any codec; the
// field form, for the events whose fields the codec knows, names the field
// once a part instead of a position and a length in every record, and
// neither side searches or moves bytes for it. Keys that share their first
// bytes with the key before them (identifiers with a common prefix, zero
// padded numbers) are front-coded, as sorted keys are in a table's blocks
// (LevelDB's, pebble's), where a part's first records say it saves bytes.
//
// Decoding checks every length and bound: a malformed batch is an error,
// never a panic. The records of an exchange's log in a checkpoint
// (exchange.go) keep the version 1 form of a part.

const batchVersion = 3

// partForm is how a part's records are laid out, as decodeParts is told:
// field is formWhole (version 1), formSpliced (version 2, and 3's form 0),
// or a field number >= 0 (the field form, whose keys may be front-coded).
type partForm struct {
	field int
	front bool
}

const (
	formWhole   = -2
	formSpliced = -1
)

// maxFrontKeys bounds the bytes of the keys of one front-coded part once
// put back together: a part is front-coded only below it, and a decoder
// refuses a part that claims more (a few bytes could claim gigabytes).
const maxFrontKeys = 1 << 20

// frontSample is how many of a part's first records decide whether it is
// front-coded: if their keys share more than a byte each on average with
// the key before them.
const frontSample = 32

// minSharedKey is the shortest key encoding worth splicing out of its
// event: the position costs a byte.
const minSharedKey = 2

// maxBatchRecords bounds what a decoded batch may claim to hold.
const maxBatchRecords = 1 << 20

// EncodeBatch appends b's encoding to dst.
func (p *Plan) EncodeBatch(dst []byte, b *Batch) ([]byte, error) {
	return p.encodeBatch(dst, b, batchVersion)
}

// encodeBatch appends b's encoding in version v (1 and 2 are for tests:
// nodes of the versions before send them).
func (p *Plan) encodeBatch(dst []byte, b *Batch, v byte) ([]byte, error) {
	dst = append(dst, v)
	dst = binary.AppendUvarint(dst, uint64(b.Source))
	dst = binary.AppendUvarint(dst, uint64(b.Partition))
	dst = binary.AppendUvarint(dst, b.Epoch)
	dst = binary.AppendVarint(dst, b.PrevEnd)
	dst = binary.AppendVarint(dst, b.End)
	dst = binary.AppendUvarint(dst, uint64(b.Count))
	var flags byte
	if b.EventTime {
		flags |= 1
	}
	if b.Idle {
		flags |= 2
	}
	if b.Done {
		flags |= 4
	}
	dst = append(dst, flags)
	if b.EventTime {
		dst = binary.AppendVarint(dst, b.Watermark)
	}
	dst = binary.AppendUvarint(dst, uint64(len(b.parts)))
	var err error
	for _, pl := range b.parts {
		switch v {
		case 1:
			dst, err = pl.encode(p, dst, b.EventTime)
		case 2:
			dst, err = pl.(interface {
				encodeSpliced(*Plan, []byte, bool) ([]byte, error)
			}).encodeSpliced(p, dst, b.EventTime)
		default:
			dst, err = pl.encodeWire(p, dst, b.EventTime)
		}
		if err != nil {
			return nil, err
		}
	}
	return dst, nil
}

// batchReader reads a batch's encoding.
type batchReader struct {
	b    []byte
	err  error
	kind string // "batch" unless set
}

func (r *batchReader) fail(what string) {
	if r.err == nil {
		kind := r.kind
		if kind == "" {
			kind = "batch"
		}
		r.err = fmt.Errorf("malformed %s: %s", kind, what)
	}
}

func (r *batchReader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *batchReader) varint(what string) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *batchReader) bytes(what string) []byte { return r.take(r.uvarint(what), what) }

// take reads the next n bytes.
func (r *batchReader) take(n uint64, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.fail(what)
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// DecodeBatch decodes a batch that EncodeBatch encoded for this plan.
func (p *Plan) DecodeBatch(data []byte) (*Batch, error) { return p.DecodeBatchInterned(data, nil) }

// DecodeBatchInterned is DecodeBatch taking the strings of keys and events
// from in (a fragment's own; nil for none).
func (p *Plan) DecodeBatchInterned(data []byte, in *Interner) (*Batch, error) {
	if len(data) == 0 || data[0] < 1 || data[0] > batchVersion {
		return nil, errors.New("malformed batch: unknown version")
	}
	version := data[0]
	r := &batchReader{b: data[1:]}
	b := &Batch{}
	src, part := r.uvarint("source"), r.uvarint("partition")
	b.Epoch = r.uvarint("epoch")
	b.PrevEnd, b.End = r.varint("prev_end"), r.varint("end")
	count := r.uvarint("count")
	if r.err != nil {
		return nil, r.err
	}
	if src >= uint64(p.channels()) || part >= uint64(p.channelParts(int(src))) {
		return nil, fmt.Errorf("malformed batch: no partition %d/%d in flow %q", src, part, p.f.name)
	}
	if b.PrevEnd < 0 || b.End < b.PrevEnd || count > maxBatchRecords {
		return nil, fmt.Errorf("malformed batch: range [%d, %d) of %d records", b.PrevEnd, b.End, count)
	}
	b.Source, b.Partition, b.Count = int(src), int(part), int(count)
	if len(r.b) == 0 {
		return nil, errors.New("malformed batch: no flags")
	}
	flags := r.b[0]
	r.b = r.b[1:]
	b.EventTime, b.Idle, b.Done = flags&1 != 0, flags&2 != 0, flags&4 != 0
	if b.EventTime != p.channelET(int(src)) || flags > 7 {
		return nil, errors.New("malformed batch: event time flags do not match the source")
	}
	if b.EventTime {
		b.Watermark = r.varint("watermark")
	}
	nparts := r.uvarint("parts")
	if r.err != nil {
		return nil, r.err
	}
	if nparts > uint64(len(p.f.stages)) {
		return nil, fmt.Errorf("malformed batch: %d parts", nparts)
	}
	for range nparts {
		stage := r.uvarint("stage")
		n := r.uvarint("records")
		form := partForm{field: formWhole}
		switch version {
		case 2:
			form.field = formSpliced
		case 3:
			if f := r.uvarint("form"); f == 1 || f>>1 > maxFields {
				r.fail("form")
			} else {
				form = partForm{field: int(f>>1) - 1, front: f&1 != 0}
			}
		}
		if r.err != nil {
			b.Release()
			return nil, r.err
		}
		if stage >= uint64(len(p.f.stages)) || p.f.stages[stage].codec == nil || p.stageChannel(int(stage)) != b.Source || n > count {
			b.Release()
			return nil, fmt.Errorf("malformed batch: part of stage %d with %d records", stage, n)
		}
		pl, rest, err := p.f.stages[stage].codec.decodeParts(r.b, int(n), b.EventTime, in, form)
		if err != nil {
			b.Release()
			return nil, err
		}
		r.b = rest
		b.parts = append(b.parts, pl)
	}
	if len(r.b) != 0 {
		b.Release()
		return nil, fmt.Errorf("malformed batch: %d trailing bytes", len(r.b))
	}
	return b, nil
}

// recsCodec encodes a KeyBy stage's records.
type recsCodec[K comparable, T any] struct {
	stage int
	kc    KeyCodec[K]
	ec    Codec[T]
	pool  *sync.Pool
}

// encode appends the records in the version 1 form, which an exchange's
// log keeps in checkpoints.
func (p *recs[K, T]) encode(pl *Plan, dst []byte, et bool) ([]byte, error) {
	return p.encodeParts(pl, dst, et, false, false)
}

// encodeWire appends the records in the form batches cross nodes in: an
// event that holds its key's bytes is sent without them. A plain struct
// event whose first record's key is one of its string fields goes in the
// field form, the others in the spliced form. Records the reader encoded
// as it routed them (wireRun) are copied as they are.
func (p *recs[K, T]) encodeWire(pl *Plan, dst []byte, et bool) ([]byte, error) {
	if r := p.run; r != nil && r.ok && r.e.n == p.len() && r.et == et {
		dst = binary.AppendUvarint(dst, uint64(p.stage))
		dst = binary.AppendUvarint(dst, uint64(r.e.n))
		dst = binary.AppendUvarint(dst, r.e.form())
		return append(dst, r.buf...), nil
	}
	p.full()
	c := pl.f.stages[p.stage].codec.(*recsCodec[K, T])
	sc, _ := c.ec.(*structCodec[T])
	_, plain := c.kc.(stringCodec[K])
	field := -1
	if plain && sc != nil && len(p.items) > 0 {
		field = sc.keyField(unsafe.Pointer(&p.items[0].Val), *(*string)(unsafe.Pointer(&p.items[0].Key)))
	}
	if field < 0 {
		return p.encodeParts(pl, dst, et, true, true)
	}
	e := fieldEnc{field: field, front: frontCodes(p.items)}
	dst = binary.AppendUvarint(dst, uint64(p.stage))
	dst = binary.AppendUvarint(dst, uint64(len(p.items)))
	dst = binary.AppendUvarint(dst, e.form())
	var ts []int64
	if et {
		ts = p.ts
	}
	return appendFieldRecs(dst, &e, sc, p.items, nil, ts), nil
}

// fieldEnc is where the encoding of a part's records in the field form
// is: its form, and the record before.
type fieldEnc struct {
	field           int // the event's string field that holds the key
	front           bool
	n               int // records encoded
	prevOff, prevTS int64
	prevKey         string
	keys            int // bytes of the keys encoded
}

// form is the part's form as it goes on the wire.
func (e *fieldEnc) form() uint64 {
	f := uint64(e.field+1) << 1
	if e.front {
		f |= 1
	}
	return f
}

// appendFieldRecs appends items (with event times ts, nil without) in the
// field form of e, after the e.n records encoded before them, and notes
// where it is in e. With idx, it appends items[idx[i]] (event time
// ts[idx[i]]) for each i instead.
func appendFieldRecs[K comparable, T any](dst []byte, e *fieldEnc, sc *structCodec[T], items []Rec[K, T], idx []int32, ts []int64) []byte {
	field, front := e.field, e.front
	prev, prevTS, prevKey := e.prevOff, e.prevTS, e.prevKey
	n := len(items)
	if idx != nil {
		n = len(idx)
	}
	for j := range n {
		i := j
		if idx != nil {
			i = int(idx[j])
		}
		it := &items[i]
		if e.n == 0 {
			dst = binary.AppendVarint(dst, it.Off)
		} else {
			dst = binary.AppendUvarint(dst, uint64(it.Off-prev))
		}
		prev = it.Off
		if ts != nil {
			dst = binary.AppendVarint(dst, ts[i]-prevTS)
			prevTS = ts[i]
		}
		e.n++
		key := *(*string)(unsafe.Pointer(&it.Key))
		e.keys += len(key)
		rest := key
		if front {
			s := sharedPrefix(prevKey, key)
			dst, rest, prevKey = appendLen(dst, s), key[s:], key
		}
		dst = appendLen(dst, len(rest))
		dst = append(dst, rest...)
		// h takes a byte for events under 64 bytes: room for one, the
		// event moved if it takes more.
		mark := len(dst)
		dst = append(dst, 0)
		var cut bool
		dst, cut = sc.appendWithout(dst, unsafe.Pointer(&it.Val), field, key)
		n := len(dst) - mark - 1
		h := uint64(n) << 1
		if cut {
			h |= 1
		}
		if h < 0x80 {
			dst[mark] = byte(h)
			continue
		}
		var tmp [binary.MaxVarintLen64]byte
		l := binary.PutUvarint(tmp[:], h)
		dst = append(dst, tmp[:l-1]...)
		copy(dst[mark+l:], dst[mark+1:mark+1+n])
		copy(dst[mark:], tmp[:l])
	}
	e.prevOff, e.prevTS, e.prevKey = prev, prevTS, prevKey
	return dst
}

// wireRun is a pending batch's records for a fragment on another node,
// encoded in the field form as the reader routes them (encodeAhead): their
// keys were just read to hash them, and are still in the caches, where
// encoding the batch when it is sent read every key again from memory
// (most of what encoding cost). encodeWire then copies the bytes.
type wireRun struct {
	buf []byte
	e   fieldEnc
	ok  bool // false: the records are not all encoded; encodeWire encodes them
	// last holds the bytes of the last key encoded, which the next
	// records' keys are front-coded against: a poll later, the key's own
	// bytes are out of the caches again.
	last []byte
	et   bool // with event times
	// bare: the batch buffer holds none of the records, the run all of
	// them (router.routeBare).
	bare bool
}

var wireRuns = sync.Pool{New: func() any { return new(wireRun) }}

// release gives the run back to the pool.
func (r *wireRun) release() {
	r.buf, r.e, r.ok, r.last, r.et, r.bare = r.buf[:0], fieldEnc{}, false, r.last[:0], false, false
	wireRuns.Put(r)
}

// canAhead reports whether the stage's records can be encoded as they are
// routed: a string key and a plain struct event (the field form).
func (c *recsCodec[K, T]) canAhead() bool {
	_, plain := c.kc.(stringCodec[K])
	_, sc := c.ec.(*structCodec[T])
	return plain && sc
}

// beginRun starts a run for a batch whose first records are items, more
// than frontSample of them: its form is chosen as encodeWire chooses it
// for the whole batch. The caller appends items to it.
func (c *recsCodec[K, T]) beginRun(items []Rec[K, T]) *wireRun {
	sc := c.ec.(*structCodec[T])
	field := sc.keyField(unsafe.Pointer(&items[0].Val), *(*string)(unsafe.Pointer(&items[0].Key)))
	r := wireRuns.Get().(*wireRun)
	if field < 0 {
		return r // not ok: encodeWire sends the spliced form
	}
	r.e, r.ok = fieldEnc{field: field, front: frontCodes(items)}, true
	return r
}

// appendRun encodes items, the batch's records after those in r.
func (c *recsCodec[K, T]) appendRun(r *wireRun, items []Rec[K, T], idx []int32, ts []int64) {
	r.buf = appendFieldRecs(r.buf, &r.e, c.ec.(*structCodec[T]), items, idx, ts)
	if r.e.front && len(r.e.prevKey) > 0 {
		r.last = append(r.last[:0], r.e.prevKey...)
		r.e.prevKey = unsafe.String(&r.last[0], len(r.last))
	}
	if r.e.front && r.e.keys > maxFrontKeys {
		r.ok = false // too long to front-code: encodeWire decides again
	}
}

// decodeRun decodes the records r holds, as a node they are sent to
// would (without its Interner).
func (c *recsCodec[K, T]) decodeRun(r *wireRun) *recs[K, T] {
	d, _, err := c.decodeParts(r.buf, r.e.n, r.et, nil, partForm{field: r.e.field, front: r.e.front})
	if err != nil {
		// The bytes are this process's own encoding, never a peer's.
		panic(fmt.Sprintf("flowcore: records encoded ahead do not decode: %v", err))
	}
	return d.(*recs[K, T])
}

// appendLen appends n as a uvarint, inline for the one byte most take.
func appendLen(dst []byte, n int) []byte {
	if n < 0x80 {
		return append(dst, byte(n))
	}
	return binary.AppendUvarint(dst, uint64(n))
}

// sharedPrefix is the number of first bytes a and b share, compared
// eight at a time.
func sharedPrefix(a, b string) int {
	n := min(len(a), len(b))
	i := 0
	for ; i+8 <= n; i += 8 {
		x := binary.LittleEndian.Uint64(unsafe.Slice(unsafe.StringData(a[i:]), 8)) ^
			binary.LittleEndian.Uint64(unsafe.Slice(unsafe.StringData(b[i:]), 8))
		if x != 0 {
			return i + bits.TrailingZeros64(x)/8
		}
	}
	for i < n && a[i] == b[i] {
		i++
	}
	return i
}

// frontCodes reports whether the string keys of items are worth
// front-coding: their first records' keys share more than a byte each on
// average with the one before (a front-coded key costs a byte more where
// it shares none), and all of them put together stay under maxFrontKeys.
func frontCodes[K comparable, T any](items []Rec[K, T]) bool {
	if len(items) < 2 {
		return false
	}
	key := func(i int) string { return *(*string)(unsafe.Pointer(&items[i].Key)) }
	total, shared := 0, 0
	for i := range items {
		total += len(key(i))
		if i > 0 && i <= frontSample {
			shared += sharedPrefix(key(i-1), key(i))
		}
	}
	return total <= maxFrontKeys && shared > min(len(items)-1, frontSample)
}

// encodeSpliced appends the records in version 2's form (a node of the
// version before sends it).
func (p *recs[K, T]) encodeSpliced(pl *Plan, dst []byte, et bool) ([]byte, error) {
	return p.encodeParts(pl, dst, et, true, false)
}

// encodeParts appends the records in version 1's form, or with share the
// spliced form: version 2's, or with form version 3's form 0.
func (p *recs[K, T]) encodeParts(pl *Plan, dst []byte, et, share, form bool) ([]byte, error) {
	p.full()
	c := pl.f.stages[p.stage].codec.(*recsCodec[K, T])
	dst = binary.AppendUvarint(dst, uint64(p.stage))
	dst = binary.AppendUvarint(dst, uint64(len(p.items)))
	if form {
		dst = append(dst, 0)
	}
	var enc recsEncoder
	var err error
	// A plain struct's fields are known: the field that holds a string
	// key is found by comparing strings (appendShared), not searched for
	// in the encoded bytes and cut out of them (spliceKey).
	sc, _ := c.ec.(*structCodec[T])
	_, plain := c.kc.(stringCodec[K])
	fields := share && plain && sc != nil
	for i := range p.items {
		var ts int64
		if et {
			ts = p.ts[i]
		}
		if fields {
			dst = c.appendShared(dst, &enc, &p.items[i], ts, et, sc)
		} else if dst, err = c.appendRec(dst, &enc, &p.items[i], ts, et, share); err != nil {
			return nil, err
		}
	}
	return dst, nil
}

// appendRecHead appends a record's offset and, with et, its event time.
func appendRecHead(dst []byte, e *recsEncoder, off, ts int64, et bool) []byte {
	if e.n == 0 {
		dst = binary.AppendVarint(dst, off)
	} else {
		dst = binary.AppendVarint(dst, off-e.prevOff)
	}
	e.prevOff = off
	e.n++
	if et {
		dst = binary.AppendVarint(dst, ts-e.prevTS)
		e.prevTS = ts
	}
	return dst
}

// appendShared is appendRec in the shared form for a string key and a
// plain struct event (sc): the same bytes as spliceKey's wherever the key
// is a field of the event, the key cut at that field (spliceKey cuts it
// where its bytes first appear, which decodes alike).
func (c *recsCodec[K, T]) appendShared(dst []byte, e *recsEncoder, it *Rec[K, T], ts int64, et bool, sc *structCodec[T]) []byte {
	dst = appendRecHead(dst, e, it.Off, ts, et)
	key := *(*string)(unsafe.Pointer(&it.Key))
	if len(key) < 0x80 {
		dst = append(dst, byte(len(key)))
	} else {
		dst = binary.AppendUvarint(dst, uint64(len(key)))
	}
	dst = append(dst, key...)
	// The header, h and at, takes a byte each for events under 64 bytes
	// and keys within their first 128: room for two, moved if it differs.
	mark := len(dst)
	dst = append(dst, 0, 0)
	dst, at := sc.appendSharing(dst, unsafe.Pointer(&it.Val), key)
	n := len(dst) - mark - 2
	var tmp [2 * binary.MaxVarintLen64]byte
	var l int
	if at < 0 {
		l = binary.PutUvarint(tmp[:], uint64(n)<<1)
	} else {
		l = binary.PutUvarint(tmp[:], uint64(n)<<1|1)
		l += binary.PutUvarint(tmp[l:], uint64(at))
	}
	if l != 2 {
		if l > 2 {
			dst = append(dst, tmp[:l-2]...)
		}
		copy(dst[mark+l:], dst[mark+2:mark+2+n])
		dst = dst[:mark+l+n]
	}
	copy(dst[mark:], tmp[:l])
	return dst
}

// spliceRoom is the room spliceKey's header may take: h (an event under
// 2^35 bytes, shifted) in 6 bytes, at in 5.
const spliceRoom = 11

// spliceKey writes the event encoded at dst[mark+spliceRoom:] in the shared form:
// without the bytes of the key encoded (with its length) at
// dst[kmark:kend], if it holds them, and with its header h (and at) in
// front.
// hint is where the key stood in the event before (-1: nowhere): the
// events of a run mostly hold it at one place, looked at first. Any place
// of the key's bytes decodes alike. It returns where the key stood.
func spliceKey(dst []byte, kmark, kend, mark, hint int) ([]byte, int) {
	_, m := binary.Uvarint(dst[kmark:kend])
	key, ev := dst[kmark+m:kend], dst[mark+spliceRoom:]
	at := -1
	if len(key) >= minSharedKey {
		if hint >= 0 && hint+len(key) <= len(ev) && string(ev[hint:hint+len(key)]) == string(key) {
			at = hint
		} else {
			at = bytes.Index(ev, key)
		}
	}
	var tmp [2 * binary.MaxVarintLen64]byte
	var l int
	n := len(ev)
	if at < 0 {
		l = binary.PutUvarint(tmp[:], uint64(n)<<1)
	} else {
		l = binary.PutUvarint(tmp[:], uint64(n-len(key))<<1|1)
		l += binary.PutUvarint(tmp[l:], uint64(at))
	}
	copy(dst[mark:], tmp[:l])
	w := mark + l
	if at < 0 {
		w += copy(dst[w:], ev)
	} else {
		w += copy(dst[w:], ev[:at])
		w += copy(dst[w:], ev[at+len(key):])
	}
	return dst[:w], at
}

// recsEncoder is where a run of records being encoded is: the offset and
// event time of the one before.
type recsEncoder struct {
	n               int
	prevOff, prevTS int64
	at              int // where the last event held its key (spliceKey), -1: nowhere
}

// appendRec appends one record of a run: its offset (the first absolute,
// then the difference from the one before), event time (with et: the
// difference), key and event; with share, an event that holds its key's
// bytes without them (the wire form, spliceKey).
func (c *recsCodec[K, T]) appendRec(dst []byte, e *recsEncoder, it *Rec[K, T], ts int64, et, share bool) ([]byte, error) {
	dst = appendRecHead(dst, e, it.Off, ts, et)
	kmark := len(dst)
	dst = append(dst, 0) // room for a length below 128, moved if longer
	var err error
	if dst, err = c.kc.Append(dst, it.Key); err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	dst = putShortLength(dst, kmark)
	kend := len(dst)
	mark := len(dst)
	if !share {
		dst = append(dst, 0)
		if dst, err = c.ec.Append(dst, it.Val); err != nil {
			return nil, fmt.Errorf("encode event: %w", err)
		}
		return putShortLength(dst, mark), nil
	}
	dst = append(dst, make([]byte, spliceRoom)...)
	if dst, err = c.ec.Append(dst, it.Val); err != nil {
		return nil, fmt.Errorf("encode event: %w", err)
	}
	if e.n == 1 {
		e.at = -1
	}
	dst, e.at = spliceKey(dst, kmark, kend, mark, e.at)
	return dst, nil
}

// putLength writes the length of dst[mark+5:] as a uvarint at mark and
// closes the gap of the unused reserved bytes.
func putLength(dst []byte, mark int) []byte {
	n := len(dst) - mark - 5
	var tmp [binary.MaxVarintLen64]byte
	l := binary.PutUvarint(tmp[:], uint64(n))
	copy(dst[mark:], tmp[:l])
	copy(dst[mark+l:], dst[mark+5:])
	return dst[:mark+l+n]
}

// putShortLength writes the length of dst[mark+1:] as a uvarint at mark,
// moving the bytes after it if it takes more than the one byte reserved.
// Keys and events are mostly shorter than 128 bytes: reserving 5 bytes, as
// putLength does, moved every one of them back by 4.
func putShortLength(dst []byte, mark int) []byte {
	n := len(dst) - mark - 1
	if n < 0x80 {
		dst[mark] = byte(n)
		return dst
	}
	var tmp [binary.MaxVarintLen64]byte
	l := binary.PutUvarint(tmp[:], uint64(n))
	dst = append(dst, tmp[:l-1]...)
	copy(dst[mark+l:], dst[mark+1:mark+1+n])
	copy(dst[mark:], tmp[:l])
	return dst
}

// decode reads n records in the version 1 form (an exchange's log).
func (c *recsCodec[K, T]) decode(b []byte, n int, et bool, in *Interner) (payload, []byte, error) {
	return c.decodeParts(b, n, et, in, partForm{field: formWhole})
}

// recView is a record of a batch being decoded, read but not yet
// decoded: where its key's bytes and its event's are in the part's bytes,
// the event without the key's bytes where at >= 0 (the key stood at byte
// at of the event). It holds no pointers: the scratch of views costs the
// collector nothing.
type recView struct {
	off, ts      int64
	k, kn, v, vn int
	at           int
}

// decodeScratch is decodeParts' scratch, kept in a pool: a node decodes
// many fragments' batches, one fragment's at a time on each goroutine.
type decodeScratch struct {
	views    []recView
	keys     keyBatch
	keyBytes []byte // front-coded keys put back together
}

var decodeScratches = sync.Pool{New: func() any { return new(decodeScratch) }}

// decodeParts reads n records; shared: in the form that may splice an
// event's key out of it (encodeWire).
//
// It reads every record's bytes first, then decodes them: the keys of a
// stage whose fragment holds a table of plain strings are looked up in it
// together (keyBatch), and each record carries its key's hash on to the
// table (Rec.h), which then finds the key in the places the lookup just
// read rather than hashing it again, and the slots the keys were found in
// (keySlots). A key the table does not hold yet goes to the table's
// arena (keyArena), if it has one.
func (c *recsCodec[K, T]) decodeParts(b []byte, n int, et bool, in *Interner, pf partForm) (payload, []byte, error) {
	_, plain := c.kc.(stringCodec[K])
	stc, _ := c.ec.(*structCodec[T])
	fields := plain && stc != nil
	form := pf.field
	if form >= 0 && (!fields || form >= len(stc.ops) || stc.ops[form].kind != reflect.String) {
		return nil, nil, fmt.Errorf("malformed batch: no string field %d in the events of stage %d", form, c.stage)
	}
	sc := decodeScratches.Get().(*decodeScratch)
	defer decodeScratches.Put(sc)
	rest, err := readViews(sc, b, n, et, pf)
	if err != nil {
		return nil, nil, err
	}
	views := sc.views
	// kbuf holds the keys' bytes: the part's own, or the front-coded keys
	// put back together (plain strings only, which keep no bytes they are
	// given: the scratch is reused).
	kbuf := b
	if pf.front {
		kbuf = sc.keyBytes
	}

	var items []Rec[K, T]
	if s, ok := c.pool.Get().(*[]Rec[K, T]); ok && cap(*s) >= n {
		items = (*s)[:0]
	} else {
		items = make([]Rec[K, T], 0, n)
	}
	p := &recs[K, T]{stage: c.stage, items: items, pool: c.pool}
	kd, _ := c.kc.(internDecoder[K])
	ed, copies := c.ec.(internDecoder[T])
	if in == nil {
		kd, ed = nil, nil
	}
	find := in.keyFinder(c.stage)
	batch := kd != nil && find != nil && plain
	hashed := batch && find.hashed()
	kb := &sc.keys
	if batch {
		kb.reset(kbuf, n)
		for i := range views {
			v := &views[i]
			var h uint64
			if hashed {
				h = shard.Bytes(kbuf[v.k : v.k+v.kn])
			}
			kb.add(v.k, v.kn, h)
		}
		kb.find(find)
		defer kb.done()
		if hashed {
			ks := keySlotsPool.Get().(*keySlots)
			ks.x, ks.dels, ks.at = find.x, find.x.dels, append(ks.at[:0], kb.slots[:n]...)
			p.slots = ks
		}
	}
	if et {
		p.ts = make([]int64, 0, n)
	}
	// scratch is where an event is put back together with its key: reused
	// for codecs of ours, which copy what they keep; a fresh one for each
	// event of any other, which may keep the bytes it was given.
	var scratch []byte
	for i := range views {
		v := &views[i]
		key, vb := kbuf[v.k:v.k+v.kn:v.k+v.kn], b[v.v:v.v+v.vn:v.v+v.vn]
		var k K
		var err error
		switch {
		case batch && kb.found[i]:
			// The table's own string; the event's copy of the key is
			// decoded right after and finds it as the last one.
			*(*string)(unsafe.Pointer(&k)) = kb.got[i]
			in.last = kb.got[i]
		case kd != nil && !batch:
			in.find = find
			k, err = kd.decodeInterned(key, in)
			in.find = nil
		case batch && find.arena != nil:
			// Not in the table yet, which inserts it when it applies the
			// record: in its arena, beside its other keys (once, however
			// many records of the batches before that hold it: the
			// Interner finds it again).
			in.arena = find.arena
			k, err = kd.decodeInterned(key, in)
			in.arena = nil
		case kd != nil:
			k, err = kd.decodeInterned(key, in) // not in the table: the slots
		default:
			k, err = c.kc.Decode(key)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("malformed batch: key of record %d: %w", i, err)
		}
		var val T
		got := false
		switch {
		case v.at >= 0 && form >= 0:
			// The event lacks its field form, which is the key.
			if val, err = stc.decodeWithout(vb, form, *(*string)(unsafe.Pointer(&k)), in); err != nil {
				return nil, nil, fmt.Errorf("malformed batch: event of record %d: %w", i, err)
			}
			got = true
		case v.at >= 0:
			if fields {
				// The key is the string field the event lacks (mostly):
				// taken as decoded, not put back and read again.
				val, got = stc.decodeShared(vb, v.at, *(*string)(unsafe.Pointer(&k)), in)
			}
			if !got {
				if !copies {
					scratch = nil
				}
				scratch = append(append(append(scratch[:0], vb[:v.at]...), key...), vb[v.at:]...)
				vb = scratch
			}
		}
		switch {
		case got:
		case ed != nil:
			val, err = ed.decodeInterned(vb, in)
		default:
			val, err = c.ec.Decode(vb)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("malformed batch: event of record %d: %w", i, err)
		}
		var r *Rec[K, T]
		p.items, r = grow1(p.items)
		r.Key, r.Val, r.Off, r.h = k, val, v.off, 0
		if hashed {
			r.h = kb.hs[i]
		}
		if et {
			p.ts = append(p.ts, v.ts)
		}
	}
	return p, rest, nil
}

// readViews reads n records from b into sc.views and returns what
// follows them.
func readViews(sc *decodeScratch, b []byte, n int, et bool, pf partForm) ([]byte, error) {
	if cap(sc.views) < n {
		sc.views = make([]recView, 0, n)
	}
	views := sc.views[:0]
	form := pf.field
	if pf.front {
		if form < 0 {
			return nil, errors.New("malformed batch: front-coded keys outside the field form")
		}
		sc.keyBytes = sc.keyBytes[:0]
	}
	var prevK, prevKn int // the key before, front-coded: in sc.keyBytes
	fail := func(what string) ([]byte, error) {
		sc.views = views[:0]
		return nil, fmt.Errorf("malformed batch: %s", what)
	}
	var off, ts int64
	p := 0
	// Each field's uvarint is read inline when it takes one byte, as
	// nearly all do; uvarintAt reads the others.
	for i := range n {
		var d, dt int64
		var u, kn, h, kat uint64
		if p < len(b) && b[p] < 0x80 {
			u, p = uint64(b[p]), p+1
		} else if u, p = uvarintAt(b, p); p < 0 {
			return fail("offset")
		}
		if i > 0 && form >= 0 {
			d = int64(u) // the field form's differences are uvarints
		} else {
			d = int64(u>>1) ^ -int64(u&1)
		}
		if i == 0 {
			off = d
		} else {
			off += d
		}
		if et {
			if dt, p = varintAt(b, p); p < 0 {
				return fail("event time")
			}
			ts += dt
		}
		// Written in place (grow1 says why): a third of readViews.
		var v *recView
		views, v = grow1(views)
		v.off, v.ts, v.at = off, ts, -1
		var shared uint64
		if pf.front {
			if p < len(b) && b[p] < 0x80 {
				shared, p = uint64(b[p]), p+1
			} else if shared, p = uvarintAt(b, p); p < 0 {
				return fail("key prefix")
			}
			if shared > uint64(prevKn) {
				return fail("key prefix")
			}
		}
		if p < len(b) && b[p] < 0x80 {
			kn, p = uint64(b[p]), p+1
		} else if kn, p = uvarintAt(b, p); p < 0 {
			return fail("key")
		}
		if kn > uint64(len(b)-p) {
			return fail("key")
		}
		if pf.front {
			start := len(sc.keyBytes)
			if uint64(start)+shared+kn > maxFrontKeys {
				return fail("front-coded keys too long")
			}
			sc.keyBytes = append(sc.keyBytes, sc.keyBytes[prevK:prevK+int(shared)]...)
			sc.keyBytes = append(sc.keyBytes, b[p:p+int(kn)]...)
			v.k, v.kn, p = start, int(shared+kn), p+int(kn)
			prevK, prevKn = v.k, v.kn
		} else {
			v.k, v.kn, p = p, int(kn), p+int(kn)
		}
		if p < len(b) && b[p] < 0x80 {
			h, p = uint64(b[p]), p+1
		} else if h, p = uvarintAt(b, p); p < 0 {
			return fail("event")
		}
		if form >= 0 {
			if h&1 != 0 {
				v.at = form
			}
			h >>= 1
		} else if form == formSpliced {
			spliced := h&1 != 0
			if h >>= 1; spliced {
				if kat, p = uvarintAt(b, p); p < 0 {
					return fail("key position")
				}
				if kat > h {
					return fail("key position")
				}
				v.at = int(kat)
			}
		}
		if h > uint64(len(b)-p) {
			return fail("event")
		}
		v.v, v.vn, p = p, int(h), p+int(h)
		if (i > 0 && d < 0) || off < 0 {
			sc.views = views[:0]
			return nil, fmt.Errorf("malformed batch: offsets out of order at record %d", i)
		}
	}
	sc.views = views
	return b[p:], nil
}

// uvarintAt reads the uvarint at b[p:]: its value and the place after it,
// or -1.
func uvarintAt(b []byte, p int) (uint64, int) {
	if p < 0 || p >= len(b) {
		return 0, -1
	}
	v, n := binary.Uvarint(b[p:])
	if n <= 0 {
		return 0, -1
	}
	return v, p + n
}

// varintAt is uvarintAt for a varint.
func varintAt(b []byte, p int) (int64, int) {
	u, p := uvarintAt(b, p)
	return int64(u>>1) ^ -int64(u&1), p
}
