package flows

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"unsafe"
)

// structCodec is the default codec of plain structs: structs whose fields,
// nested structs included, are all exported booleans, numbers, strings or
// byte slices. It is compiled once from the type into a list of field
// operations at fixed offsets, so encoding and decoding are a loop over
// that list without reflection (only strings and byte slices allocate on
// decode). Events, state and answers of such types cross nodes and go to
// checkpoints in this form, several times smaller and faster than JSON.
//
// The encoding is the fields in declaration order: a boolean as one byte
// (0 or 1), a signed integer as a zig-zag varint, an unsigned one as a
// uvarint, a float as its IEEE 754 bits in 4 or 8 little-endian bytes, a
// string or byte slice as a uvarint length and the bytes (for byte slices
// the length plus one, with 0 for nil).
type structCodec[T any] struct {
	ops []fieldOp
}

type fieldOp struct {
	off  uintptr
	kind reflect.Kind
	bits int    // of an integer
	name string // for errors: Outer.Inner.Field
}

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
	p := unsafe.Pointer(&v)
	for i := range c.ops {
		op := &c.ops[i]
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
		}
	}
	return dst, nil
}

func (c *structCodec[T]) Decode(b []byte) (T, error) {
	var v T
	p := unsafe.Pointer(&v)
	for i := range c.ops {
		op := &c.ops[i]
		fp := unsafe.Add(p, op.off)
		var n int
		switch op.kind {
		case reflect.Bool:
			if len(b) == 0 || b[0] > 1 {
				return v, c.bad(op, "not a boolean")
			}
			*(*bool)(fp) = b[0] == 1
			n = 1
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			var x int64
			if x, n = binary.Varint(b); n <= 0 {
				return v, c.bad(op, "bad varint")
			}
			if op.bits < 64 && (x < -1<<(op.bits-1) || x >= 1<<(op.bits-1)) {
				return v, c.bad(op, "out of range")
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
				return v, c.bad(op, "bad uvarint")
			}
			if op.bits < 64 && x >= 1<<op.bits {
				return v, c.bad(op, "out of range")
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
				return v, c.bad(op, "truncated")
			}
			*(*float32)(fp) = math.Float32frombits(binary.LittleEndian.Uint32(b))
			n = 4
		case reflect.Float64:
			if len(b) < 8 {
				return v, c.bad(op, "truncated")
			}
			*(*float64)(fp) = math.Float64frombits(binary.LittleEndian.Uint64(b))
			n = 8
		case reflect.String, reflect.Slice:
			l, m := binary.Uvarint(b)
			if m <= 0 {
				return v, c.bad(op, "bad length")
			}
			if op.kind == reflect.Slice {
				if l == 0 { // nil
					n = m
					break
				}
				l--
			}
			if l > uint64(len(b)-m) {
				return v, c.bad(op, "truncated")
			}
			data := b[m : m+int(l)]
			if op.kind == reflect.String {
				*(*string)(fp) = string(data)
			} else {
				*(*[]byte)(fp) = append([]byte{}, data...)
			}
			n = m + int(l)
		}
		b = b[n:]
	}
	if len(b) != 0 {
		return v, fmt.Errorf("%d bytes after the last field of %s", len(b), reflect.TypeFor[T]())
	}
	return v, nil
}

func (c *structCodec[T]) bad(op *fieldOp, what string) error {
	return fmt.Errorf("field %s: %s", op.name, what)
}
