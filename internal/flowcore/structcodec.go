package flowcore

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"time"
	"unsafe"
)

// structCodec is the default codec of plain structs: structs whose fields,
// nested structs included, are all exported booleans, numbers, strings,
// byte slices or time.Time values. It is compiled once from the type into
// a list of field operations at fixed offsets, so encoding and decoding
// are a loop over that list without reflection (only strings and byte
// slices allocate on decode). Events, state and answers of such types
// cross nodes and go to checkpoints in this form, several times smaller
// and faster than JSON.
//
// The encoding is the fields in declaration order: a boolean as one byte
// (0 or 1), a signed integer (time.Duration among them) as a zig-zag
// varint, an unsigned one as a uvarint, a float as its IEEE 754 bits in 4
// or 8 little-endian bytes, a string or byte slice as a uvarint length and
// the bytes (for byte slices the length plus one, with 0 for nil).
//
// A time.Time is its instant, after a tag byte that says which of two
// forms follows: 0, the Unix time in nanoseconds in 8 little-endian bytes,
// for the instants from 1678 to 2262 that UnixNano covers; 1, the Unix
// time in seconds as a zig-zag varint and the nanoseconds within the
// second as a uvarint, for the others (the zero time, year 1, among them).
// Each instant has exactly one form; the decoder refuses the other. The
// location and the monotonic clock reading are not kept: a time decodes
// in UTC, as t.UTC() returns it, so compare decoded times with Equal (or
// convert with In). The zero time decodes as time.Time{}: IsZero is true.
// (A time.Time on its own is no struct here: its MarshalBinary keeps the
// zone offset.)
type structCodec[T any] struct {
	ops []fieldOp
}

type fieldOp struct {
	off  uintptr
	kind reflect.Kind // reflect.Struct for a time.Time
	bits int          // of an integer
	name string       // for errors: Outer.Inner.Field
}

// The tags of a time.Time's two forms, and the Unix seconds whose
// instants all have a Unix time in nanoseconds: those in
// [minNanoSec, maxNanoSec).
const (
	timeNanos = 0
	timeWide  = 1

	minNanoSec = math.MinInt64 / 1_000_000_000
	maxNanoSec = math.MaxInt64 / 1_000_000_000
)

// newStructCodec compiles T's fields, or reports why T is not a plain
// struct.
func newStructCodec[T any]() (*structCodec[T], error) {
	c := &structCodec[T]{}
	if err := c.compile(reflect.TypeFor[T](), 0, ""); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *structCodec[T]) compile(rt reflect.Type, base uintptr, prefix string) error {
	if rt.Kind() != reflect.Struct {
		return fmt.Errorf("%s is not a struct", rt)
	}
	if rt.Implements(reflect.TypeFor[json.Marshaler]()) || reflect.PointerTo(rt).Implements(reflect.TypeFor[json.Unmarshaler]()) {
		return fmt.Errorf("%s has its own JSON encoding", rt)
	}
	for i := range rt.NumField() {
		f := rt.Field(i)
		name := prefix + rt.Name() + "." + f.Name
		if !f.IsExported() {
			return fmt.Errorf("field %s is unexported", name)
		}
		if f.Type == reflect.TypeFor[time.Time]() {
			c.ops = append(c.ops, fieldOp{off: base + f.Offset, kind: reflect.Struct, name: name})
			continue
		}
		switch k := f.Type.Kind(); k {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			c.ops = append(c.ops, fieldOp{off: base + f.Offset, kind: k, bits: f.Type.Bits(), name: name})
		case reflect.Bool, reflect.Float32, reflect.Float64, reflect.String:
			c.ops = append(c.ops, fieldOp{off: base + f.Offset, kind: k, name: name})
		case reflect.Slice:
			if f.Type.Elem().Kind() != reflect.Uint8 {
				return fmt.Errorf("field %s is a slice of %s", name, f.Type.Elem())
			}
			c.ops = append(c.ops, fieldOp{off: base + f.Offset, kind: k, name: name})
		case reflect.Struct:
			if err := c.compile(f.Type, base+f.Offset, prefix+rt.Name()+"."); err != nil {
				return err
			}
		default:
			return fmt.Errorf("field %s is a %s", name, k)
		}
	}
	return nil
}

func (c *structCodec[T]) Append(dst []byte, v T) ([]byte, error) {
	return c.appendAt(dst, unsafe.Pointer(&v)), nil
}

// appendAt encodes the T at p: a caller that holds a T in place (an
// exchange's log) encodes it without copying it first.
func (c *structCodec[T]) appendAt(dst []byte, p unsafe.Pointer) []byte {
	for i := range c.ops {
		dst = appendField(dst, &c.ops[i], p)
	}
	return dst
}

// appendSharing encodes the T at p as appendAt does, except for the
// first string field that holds key (of at least minSharedKey bytes): of
// it only the length, the bytes being the key's, which the record carries
// anyway (a batch's shared form, spliceKey). It returns where the key's
// bytes belong in what it appended, or -1 where no field holds the key.
// Knowing the fields, it finds the key by comparing strings, where
// spliceKey searches the encoded bytes for it and moves them.
func (c *structCodec[T]) appendSharing(dst []byte, p unsafe.Pointer, key string) ([]byte, int) {
	start, at := len(dst), -1
	for i := range c.ops {
		op := &c.ops[i]
		if at < 0 && op.kind == reflect.String && len(key) >= minSharedKey {
			if s := *(*string)(unsafe.Add(p, op.off)); s == key {
				dst = binary.AppendUvarint(dst, uint64(len(s)))
				at = len(dst) - start
				continue
			}
		}
		dst = appendField(dst, op, p)
	}
	return dst, at
}

// maxFields bounds the field number a batch's part may name.
const maxFields = 1 << 16

// keyField is the number of the first string field of the T at p that
// holds key, or -1.
func (c *structCodec[T]) keyField(p unsafe.Pointer, key string) int {
	for i := range c.ops {
		if op := &c.ops[i]; op.kind == reflect.String && *(*string)(unsafe.Add(p, op.off)) == key {
			return i
		}
	}
	return -1
}

// appendWithout encodes the T at p as appendAt does, but without its
// string field field if that holds key (cut): the record carries the key
// anyway (a batch's field form).
func (c *structCodec[T]) appendWithout(dst []byte, p unsafe.Pointer, field int, key string) ([]byte, bool) {
	cut := *(*string)(unsafe.Add(p, c.ops[field].off)) == key
	for i := range c.ops {
		if i != field || !cut {
			dst = appendField(dst, &c.ops[i], p)
		}
	}
	return dst, cut
}

// appendField encodes the field op of the struct at p.
func appendField(dst []byte, op *fieldOp, p unsafe.Pointer) []byte {
	fp := unsafe.Add(p, op.off)
	switch op.kind {
	case reflect.Bool:
		b := byte(0)
		if *(*bool)(fp) {
			b = 1
		}
		dst = append(dst, b)
	case reflect.Int:
		dst = binary.AppendVarint(dst, int64(*(*int)(fp)))
	case reflect.Int8:
		dst = binary.AppendVarint(dst, int64(*(*int8)(fp)))
	case reflect.Int16:
		dst = binary.AppendVarint(dst, int64(*(*int16)(fp)))
	case reflect.Int32:
		dst = binary.AppendVarint(dst, int64(*(*int32)(fp)))
	case reflect.Int64:
		dst = binary.AppendVarint(dst, *(*int64)(fp))
	case reflect.Uint:
		dst = binary.AppendUvarint(dst, uint64(*(*uint)(fp)))
	case reflect.Uint8:
		dst = binary.AppendUvarint(dst, uint64(*(*uint8)(fp)))
	case reflect.Uint16:
		dst = binary.AppendUvarint(dst, uint64(*(*uint16)(fp)))
	case reflect.Uint32:
		dst = binary.AppendUvarint(dst, uint64(*(*uint32)(fp)))
	case reflect.Uint64:
		dst = binary.AppendUvarint(dst, *(*uint64)(fp))
	case reflect.Float32:
		dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(*(*float32)(fp)))
	case reflect.Float64:
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(*(*float64)(fp)))
	case reflect.String:
		s := *(*string)(fp)
		dst = binary.AppendUvarint(dst, uint64(len(s)))
		dst = append(dst, s...)
	case reflect.Slice:
		b := *(*[]byte)(fp)
		if b == nil {
			dst = append(dst, 0)
			break
		}
		dst = binary.AppendUvarint(dst, uint64(len(b))+1)
		dst = append(dst, b...)
	case reflect.Struct:
		t := (*time.Time)(fp)
		if s := t.Unix(); s >= minNanoSec && s < maxNanoSec {
			dst = append(dst, timeNanos)
			dst = binary.LittleEndian.AppendUint64(dst, uint64(t.UnixNano()))
			break
		}
		dst = append(dst, timeWide)
		dst = binary.AppendVarint(dst, t.Unix())
		dst = binary.AppendUvarint(dst, uint64(t.Nanosecond()))
	}
	return dst
}

func (c *structCodec[T]) Decode(b []byte) (T, error) { return c.decodeInterned(b, nil) }

func (c *structCodec[T]) decodeInterned(b []byte, in *Interner) (T, error) {
	return c.decodeWithout(b, -1, "", in)
}

// decodeWithout decodes what appendWithout cut: b lacks the string field
// field (a string field: the caller checks), which is key. With field -1,
// b holds every field.
func (c *structCodec[T]) decodeWithout(b []byte, field int, key string, in *Interner) (T, error) {
	var v T
	p := unsafe.Pointer(&v)
	for i := range c.ops {
		op := &c.ops[i]
		if i == field {
			*(*string)(unsafe.Add(p, op.off)) = key
			continue
		}
		n, err := decodeField(b, op, p, in)
		if err != nil {
			return v, err
		}
		b = b[n:]
	}
	if len(b) != 0 {
		return v, fmt.Errorf("%d bytes after the last field of %s", len(b), reflect.TypeFor[T]())
	}
	return v, nil
}

// decodeShared decodes an encoding b that lacks the key's bytes at byte
// at (appendSharing's, or any encoder's that cut the key out of a string
// field whole): the string field whose bytes would start at at, with the
// key's length, is key itself, and nothing is put back together. ok is
// false where b has another shape (the key's bytes cut from elsewhere, or
// b malformed): the caller puts the event back together and decodes it
// whole, as it would have anyway, so both ways decode alike.
func (c *structCodec[T]) decodeShared(b []byte, at int, key string, in *Interner) (v T, ok bool) {
	p := unsafe.Pointer(&v)
	pos, hole := 0, false
	for i := range c.ops {
		op := &c.ops[i]
		if !hole && op.kind == reflect.String {
			l, m := binary.Uvarint(b[pos:])
			if m > 0 && pos+m == at && l == uint64(len(key)) {
				*(*string)(unsafe.Add(p, op.off)) = key
				pos, hole = pos+m, true
				continue
			}
		}
		n, err := decodeField(b[pos:], op, p, in)
		if err != nil || (!hole && pos+n > at) {
			return v, false
		}
		pos += n
	}
	return v, hole && pos == len(b)
}

// decodeField decodes the field op of the struct at p from the front of b
// and returns its length.
func decodeField(b []byte, op *fieldOp, p unsafe.Pointer, in *Interner) (int, error) {
	fp := unsafe.Add(p, op.off)
	var n int
	switch op.kind {
	case reflect.Bool:
		if len(b) == 0 || b[0] > 1 {
			return 0, badField(op, "not a boolean")
		}
		*(*bool)(fp) = b[0] == 1
		n = 1
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var x int64
		if x, n = binary.Varint(b); n <= 0 {
			return 0, badField(op, "bad varint")
		}
		if op.bits < 64 && (x < -1<<(op.bits-1) || x >= 1<<(op.bits-1)) {
			return 0, badField(op, "out of range")
		}
		switch op.kind {
		case reflect.Int:
			*(*int)(fp) = int(x)
		case reflect.Int8:
			*(*int8)(fp) = int8(x)
		case reflect.Int16:
			*(*int16)(fp) = int16(x)
		case reflect.Int32:
			*(*int32)(fp) = int32(x)
		default:
			*(*int64)(fp) = x
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		var x uint64
		if x, n = binary.Uvarint(b); n <= 0 {
			return 0, badField(op, "bad uvarint")
		}
		if op.bits < 64 && x >= 1<<op.bits {
			return 0, badField(op, "out of range")
		}
		switch op.kind {
		case reflect.Uint:
			*(*uint)(fp) = uint(x)
		case reflect.Uint8:
			*(*uint8)(fp) = uint8(x)
		case reflect.Uint16:
			*(*uint16)(fp) = uint16(x)
		case reflect.Uint32:
			*(*uint32)(fp) = uint32(x)
		default:
			*(*uint64)(fp) = x
		}
	case reflect.Float32:
		if len(b) < 4 {
			return 0, badField(op, "truncated")
		}
		*(*float32)(fp) = math.Float32frombits(binary.LittleEndian.Uint32(b))
		n = 4
	case reflect.Float64:
		if len(b) < 8 {
			return 0, badField(op, "truncated")
		}
		*(*float64)(fp) = math.Float64frombits(binary.LittleEndian.Uint64(b))
		n = 8
	case reflect.String, reflect.Slice:
		l, m := binary.Uvarint(b)
		if m <= 0 {
			return 0, badField(op, "bad length")
		}
		if op.kind == reflect.Slice {
			if l == 0 { // nil
				n = m
				break
			}
			l--
		}
		if l > uint64(len(b)-m) {
			return 0, badField(op, "truncated")
		}
		data := b[m : m+int(l)]
		if op.kind == reflect.String {
			*(*string)(fp) = in.String(data)
		} else {
			*(*[]byte)(fp) = append([]byte{}, data...)
		}
		n = m + int(l)
	case reflect.Struct:
		var err error
		if n, err = decodeTime(b, (*time.Time)(fp)); err != nil {
			return 0, badField(op, err.Error())
		}
	}
	return n, nil
}

// decodeTime decodes a time.Time from the front of b into t and returns
// its length.
func decodeTime(b []byte, t *time.Time) (int, error) {
	if len(b) == 0 {
		return 0, errors.New("truncated")
	}
	switch b[0] {
	case timeNanos:
		if len(b) < 9 {
			return 0, errors.New("truncated")
		}
		ns := int64(binary.LittleEndian.Uint64(b[1:]))
		if ns < minNanoSec*1_000_000_000 || ns >= maxNanoSec*1_000_000_000 {
			return 0, errors.New("time in the wrong form")
		}
		*t = time.Unix(0, ns).UTC()
		return 9, nil
	case timeWide:
		s, m := binary.Varint(b[1:])
		if m <= 0 {
			return 0, errors.New("bad varint")
		}
		ns, k := binary.Uvarint(b[1+m:])
		if k <= 0 {
			return 0, errors.New("bad uvarint")
		}
		if ns >= 1e9 {
			return 0, errors.New("nanoseconds out of range")
		}
		if s >= minNanoSec && s < maxNanoSec {
			return 0, errors.New("time in the wrong form")
		}
		*t = time.Unix(s, int64(ns)).UTC()
		return 1 + m + k, nil
	}
	return 0, fmt.Errorf("unknown time form %d", b[0])
}

func badField(op *fieldOp, what string) error {
	return fmt.Errorf("field %s: %s", op.name, what)
}
