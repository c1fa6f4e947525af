package flowcore

import (
	"cmp"
	"encoding"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"unsafe"

	"google.golang.org/protobuf/proto"

	"github.com/tessera-streams/tessera/shard"
)

// Codec encodes values of T for checkpoints and the network. The in-process
// path never encodes. Decode must reject malformed input with an error and
// never panic, and must not keep b: the caller reuses it.
type Codec[T any] interface {
	Append(dst []byte, v T) ([]byte, error)
	Decode(b []byte) (T, error)
}

// KeyCodec is a Codec for keys that can also print, parse and order them:
// keys appear in URLs (/v1/views/{view}/keys/{key}) and keyed views list
// entries in key order.
type KeyCodec[K any] interface {
	Codec[K]
	Format(k K) string
	Parse(s string) (K, error)
	Compare(a, b K) int
}

// ErrNoCodec is returned (wrapped) by DefaultCodec for types it cannot
// encode faithfully; pass a codec explicitly for those.
var ErrNoCodec = errors.New("no default codec")

// DefaultCodec returns the codec Tessera uses for T when none is given:
// a fixed binary form for strings, byte slices, booleans and numbers;
// protobuf for proto.Message types; MarshalBinary for types that implement
// encoding.BinaryMarshaler (with a pointer that implements
// encoding.BinaryUnmarshaler); a compact binary form for plain structs
// (every field, nested structs included, an exported boolean, number,
// string, byte slice or time.Time; see structCodec); JSON for other
// structs, slices and maps whose fields are all exported. Other types
// (channels, functions, interfaces, structs with unexported fields) have
// none.
func DefaultCodec[T any]() (Codec[T], error) {
	rt := reflect.TypeFor[T]()
	switch {
	case rt.Implements(reflect.TypeFor[proto.Message]()) && rt.Kind() == reflect.Pointer:
		return protoCodec[T]{elem: rt.Elem()}, nil
	case rt.Implements(reflect.TypeFor[encoding.BinaryMarshaler]()) &&
		reflect.PointerTo(rt).Implements(reflect.TypeFor[encoding.BinaryUnmarshaler]()):
		return binaryCodec[T]{}, nil
	}
	switch rt.Kind() {
	case reflect.String:
		return stringCodec[T]{}, nil
	case reflect.Bool:
		return boolCodec[T]{}, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return intCodec[T]{bits: rt.Bits()}, nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return uintCodec[T]{bits: rt.Bits()}, nil
	case reflect.Float32, reflect.Float64:
		return floatCodec[T]{bits: rt.Bits()}, nil
	case reflect.Slice:
		if rt.Elem().Kind() == reflect.Uint8 {
			return bytesCodec[T]{}, nil
		}
	case reflect.Struct:
		if c, err := newStructCodec[T](); err == nil {
			return c, nil
		}
	}
	if err := jsonFaithful(rt, map[reflect.Type]bool{}); err != nil {
		return nil, fmt.Errorf("%w for %s: %w", ErrNoCodec, rt, err)
	}
	return jsonCodec[T]{}, nil
}

// DefaultKeyCodec returns the key codec for strings and integers; other key
// types need an explicit KeyCodec.
func DefaultKeyCodec[K any]() (KeyCodec[K], error) {
	rt := reflect.TypeFor[K]()
	switch rt.Kind() {
	case reflect.String:
		return stringCodec[K]{}, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return intCodec[K]{bits: rt.Bits()}, nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return uintCodec[K]{bits: rt.Bits()}, nil
	}
	return nil, fmt.Errorf("%w for key type %s: keys need a KeyCodec (strings and integers have one)", ErrNoCodec, rt)
}

// keyHasher returns the stable hash of K: allocation-free for string and
// integer kinds, through the key codec's bytes otherwise.
func keyHasher[K any](kc KeyCodec[K]) func(K) uint64 {
	rt := reflect.TypeFor[K]()
	switch rt.Kind() {
	case reflect.String:
		return func(k K) uint64 { return shard.String(*(*string)(unsafe.Pointer(&k))) }
	case reflect.Int64, reflect.Uint64, reflect.Int, reflect.Uint:
		return func(k K) uint64 { return shard.Uint64(*(*uint64)(unsafe.Pointer(&k))) }
	}
	return func(k K) uint64 {
		var buf [64]byte
		b, _ := kc.Append(buf[:0], k) // key codecs of comparable keys do not fail
		return shard.Bytes(b)
	}
}

func jsonFaithful(rt reflect.Type, seen map[reflect.Type]bool) error {
	if seen[rt] {
		return nil
	}
	seen[rt] = true
	switch rt.Kind() {
	case reflect.Bool, reflect.String, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return nil
	case reflect.Pointer, reflect.Slice, reflect.Array:
		return jsonFaithful(rt.Elem(), seen)
	case reflect.Map:
		if err := jsonFaithful(rt.Key(), seen); err != nil {
			return err
		}
		return jsonFaithful(rt.Elem(), seen)
	case reflect.Struct:
		if rt.Implements(reflect.TypeFor[json.Marshaler]()) {
			return nil
		}
		for i := range rt.NumField() {
			f := rt.Field(i)
			if !f.IsExported() {
				return fmt.Errorf("field %s.%s is unexported", rt, f.Name)
			}
			if f.Tag.Get("json") == "-" {
				return fmt.Errorf("field %s.%s is not encoded (json:\"-\")", rt, f.Name)
			}
			if err := jsonFaithful(f.Type, seen); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("%s values cannot be encoded", rt.Kind())
}

type stringCodec[T any] struct{}

func (stringCodec[T]) Append(dst []byte, v T) ([]byte, error) {
	return append(dst, *(*string)(unsafe.Pointer(&v))...), nil
}
func (stringCodec[T]) Decode(b []byte) (T, error) {
	var v T
	*(*string)(unsafe.Pointer(&v)) = string(b)
	return v, nil
}
func (stringCodec[T]) decodeInterned(b []byte, in *Interner) (T, error) {
	var v T
	*(*string)(unsafe.Pointer(&v)) = in.String(b)
	return v, nil
}
func (stringCodec[T]) Format(k T) string { return *(*string)(unsafe.Pointer(&k)) }
func (c stringCodec[T]) Parse(s string) (T, error) {
	return c.Decode(unsafe.Slice(unsafe.StringData(s), len(s)))
}
func (stringCodec[T]) Compare(a, b T) int {
	return cmp.Compare(*(*string)(unsafe.Pointer(&a)), *(*string)(unsafe.Pointer(&b)))
}

type bytesCodec[T any] struct{}

func (bytesCodec[T]) Append(dst []byte, v T) ([]byte, error) {
	return append(dst, *(*[]byte)(unsafe.Pointer(&v))...), nil
}
func (bytesCodec[T]) Decode(b []byte) (T, error) {
	var v T
	*(*[]byte)(unsafe.Pointer(&v)) = append([]byte(nil), b...)
	return v, nil
}

type boolCodec[T any] struct{}

func (boolCodec[T]) Append(dst []byte, v T) ([]byte, error) {
	if *(*bool)(unsafe.Pointer(&v)) {
		return append(dst, 1), nil
	}
	return append(dst, 0), nil
}
func (boolCodec[T]) Decode(b []byte) (T, error) {
	var v T
	if len(b) != 1 || b[0] > 1 {
		return v, fmt.Errorf("bool: want one byte 0 or 1, got %d bytes", len(b))
	}
	*(*bool)(unsafe.Pointer(&v)) = b[0] == 1
	return v, nil
}

// intCodec stores signed integers of any width as zig-zag varints.
type intCodec[T any] struct{ bits int }

func (c intCodec[T]) get(v *T) int64 {
	switch c.bits {
	case 8:
		return int64(*(*int8)(unsafe.Pointer(v)))
	case 16:
		return int64(*(*int16)(unsafe.Pointer(v)))
	case 32:
		return int64(*(*int32)(unsafe.Pointer(v)))
	}
	return *(*int64)(unsafe.Pointer(v))
}
func (c intCodec[T]) set(v *T, x int64) error {
	if c.bits < 64 && (x < -1<<(c.bits-1) || x >= 1<<(c.bits-1)) {
		return fmt.Errorf("%d overflows int%d", x, c.bits)
	}
	switch c.bits {
	case 8:
		*(*int8)(unsafe.Pointer(v)) = int8(x)
	case 16:
		*(*int16)(unsafe.Pointer(v)) = int16(x)
	case 32:
		*(*int32)(unsafe.Pointer(v)) = int32(x)
	default:
		*(*int64)(unsafe.Pointer(v)) = x
	}
	return nil
}
func (c intCodec[T]) Append(dst []byte, v T) ([]byte, error) {
	return binary.AppendVarint(dst, c.get(&v)), nil
}
func (c intCodec[T]) Decode(b []byte) (T, error) {
	var v T
	x, n := binary.Varint(b)
	if n <= 0 || n != len(b) {
		return v, fmt.Errorf("int: malformed varint (%d bytes)", len(b))
	}
	return v, c.set(&v, x)
}
func (c intCodec[T]) Format(k T) string { return strconv.FormatInt(c.get(&k), 10) }
func (c intCodec[T]) Parse(s string) (T, error) {
	var v T
	x, err := strconv.ParseInt(s, 10, c.bits)
	if err != nil {
		return v, err
	}
	return v, c.set(&v, x)
}
func (c intCodec[T]) Compare(a, b T) int { return cmp.Compare(c.get(&a), c.get(&b)) }

type uintCodec[T any] struct{ bits int }

func (c uintCodec[T]) get(v *T) uint64 {
	switch c.bits {
	case 8:
		return uint64(*(*uint8)(unsafe.Pointer(v)))
	case 16:
		return uint64(*(*uint16)(unsafe.Pointer(v)))
	case 32:
		return uint64(*(*uint32)(unsafe.Pointer(v)))
	}
	return *(*uint64)(unsafe.Pointer(v))
}
func (c uintCodec[T]) set(v *T, x uint64) error {
	if c.bits < 64 && x >= 1<<c.bits {
		return fmt.Errorf("%d overflows uint%d", x, c.bits)
	}
	switch c.bits {
	case 8:
		*(*uint8)(unsafe.Pointer(v)) = uint8(x)
	case 16:
		*(*uint16)(unsafe.Pointer(v)) = uint16(x)
	case 32:
		*(*uint32)(unsafe.Pointer(v)) = uint32(x)
	default:
		*(*uint64)(unsafe.Pointer(v)) = x
	}
	return nil
}
func (c uintCodec[T]) Append(dst []byte, v T) ([]byte, error) {
	return binary.AppendUvarint(dst, c.get(&v)), nil
}
func (c uintCodec[T]) Decode(b []byte) (T, error) {
	var v T
	x, n := binary.Uvarint(b)
	if n <= 0 || n != len(b) {
		return v, fmt.Errorf("uint: malformed varint (%d bytes)", len(b))
	}
	return v, c.set(&v, x)
}
func (c uintCodec[T]) Format(k T) string { return strconv.FormatUint(c.get(&k), 10) }
func (c uintCodec[T]) Parse(s string) (T, error) {
	var v T
	x, err := strconv.ParseUint(s, 10, c.bits)
	if err != nil {
		return v, err
	}
	return v, c.set(&v, x)
}
func (c uintCodec[T]) Compare(a, b T) int { return cmp.Compare(c.get(&a), c.get(&b)) }

type floatCodec[T any] struct{ bits int }

func (c floatCodec[T]) Append(dst []byte, v T) ([]byte, error) {
	if c.bits == 32 {
		return binary.LittleEndian.AppendUint32(dst, math.Float32bits(*(*float32)(unsafe.Pointer(&v)))), nil
	}
	return binary.LittleEndian.AppendUint64(dst, math.Float64bits(*(*float64)(unsafe.Pointer(&v)))), nil
}
func (c floatCodec[T]) Decode(b []byte) (T, error) {
	var v T
	if len(b) != c.bits/8 {
		return v, fmt.Errorf("float%d: want %d bytes, got %d", c.bits, c.bits/8, len(b))
	}
	if c.bits == 32 {
		*(*float32)(unsafe.Pointer(&v)) = math.Float32frombits(binary.LittleEndian.Uint32(b))
	} else {
		*(*float64)(unsafe.Pointer(&v)) = math.Float64frombits(binary.LittleEndian.Uint64(b))
	}
	return v, nil
}

type protoCodec[T any] struct{ elem reflect.Type }

func (protoCodec[T]) Append(dst []byte, v T) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.MarshalAppend(dst, any(v).(proto.Message))
}
func (c protoCodec[T]) Decode(b []byte) (T, error) {
	m := reflect.New(c.elem).Interface()
	if err := proto.Unmarshal(b, m.(proto.Message)); err != nil {
		var zero T
		return zero, err
	}
	return m.(T), nil
}

type binaryCodec[T any] struct{}

func (binaryCodec[T]) Append(dst []byte, v T) ([]byte, error) {
	b, err := any(v).(encoding.BinaryMarshaler).MarshalBinary()
	return append(dst, b...), err
}
func (binaryCodec[T]) Decode(b []byte) (T, error) {
	var v T
	err := any(&v).(encoding.BinaryUnmarshaler).UnmarshalBinary(b)
	return v, err
}

type jsonCodec[T any] struct{}

func (jsonCodec[T]) Append(dst []byte, v T) ([]byte, error) {
	b, err := json.Marshal(v)
	return append(dst, b...), err
}
func (jsonCodec[T]) Decode(b []byte) (T, error) {
	var v T
	err := json.Unmarshal(b, &v)
	return v, err
}
