package flowcore

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"

	"google.golang.org/protobuf/types/known/wrapperspb"
	"pgregory.net/rapid"
)

type point struct {
	X, Y int
	Tags []string
}

func roundTrip[T any](t *rapid.T, c Codec[T], v T) {
	b, err := c.Append(nil, v)
	if err != nil {
		t.Fatalf("encode %v: %v", v, err)
	}
	got, err := c.Decode(b)
	if err != nil {
		t.Fatalf("decode %v: %v", v, err)
	}
	if !reflect.DeepEqual(got, v) {
		t.Fatalf("round trip %v -> %v", v, got)
	}
}

func TestDefaultCodecsRoundTrip(t *testing.T) {
	s, _ := DefaultCodec[string]()
	i8, _ := DefaultCodec[int8]()
	i64, _ := DefaultCodec[int64]()
	u16, _ := DefaultCodec[uint16]()
	f64, _ := DefaultCodec[float64]()
	b, _ := DefaultCodec[bool]()
	by, _ := DefaultCodec[[]byte]()
	pt, err := DefaultCodec[point]()
	if err != nil {
		t.Fatal(err)
	}
	rapid.Check(t, func(t *rapid.T) {
		roundTrip(t, s, rapid.String().Draw(t, "s"))
		roundTrip(t, i8, rapid.Int8().Draw(t, "i8"))
		roundTrip(t, i64, rapid.Int64().Draw(t, "i64"))
		roundTrip(t, u16, rapid.Uint16().Draw(t, "u16"))
		roundTrip(t, b, rapid.Bool().Draw(t, "b"))
		roundTrip(t, by, rapid.SliceOfN(rapid.Byte(), 1, 20).Draw(t, "by"))
		if f := rapid.Float64().Draw(t, "f"); !math.IsNaN(f) {
			roundTrip(t, f64, f)
		}
		roundTrip(t, pt, point{X: rapid.Int().Draw(t, "x"), Tags: rapid.SliceOfN(rapid.String(), 1, 3).Draw(t, "tags")})
	})
}

func TestProtoCodec(t *testing.T) {
	c, err := DefaultCodec[*wrapperspb.StringValue]()
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Append(nil, wrapperspb.String("hello"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := c.Decode(b)
	if err != nil || v.GetValue() != "hello" {
		t.Fatalf("decode = %v, %v", v, err)
	}
	if _, err := c.Decode([]byte{0xff, 0xff}); err == nil {
		t.Fatal("garbage decoded")
	}
}

func TestNoDefaultCodec(t *testing.T) {
	if _, err := DefaultCodec[chan int](); !errors.Is(err, ErrNoCodec) {
		t.Errorf("chan: %v", err)
	}
	//lint:ignore U1000 the field is never used: it is there to be unexported
	type hidden struct{ x int }
	if _, err := DefaultCodec[hidden](); !errors.Is(err, ErrNoCodec) {
		t.Errorf("unexported field: %v", err)
	}
	if _, err := DefaultKeyCodec[float64](); !errors.Is(err, ErrNoCodec) {
		t.Errorf("float key: %v", err)
	}
}

func TestKeyCodecOrderAndParse(t *testing.T) {
	kc, _ := DefaultKeyCodec[int32]()
	rapid.Check(t, func(t *rapid.T) {
		a, b := rapid.Int32().Draw(t, "a"), rapid.Int32().Draw(t, "b")
		if c := kc.Compare(a, b); (c < 0) != (a < b) || (c == 0) != (a == b) {
			t.Fatalf("Compare(%d, %d) = %d", a, b, c)
		}
		back, err := kc.Parse(kc.Format(a))
		if err != nil || back != a {
			t.Fatalf("Parse(Format(%d)) = %d, %v", a, back, err)
		}
	})
	if _, err := kc.Parse("99999999999"); err == nil {
		t.Fatal("overflowing key parsed")
	}
}

// Decoders of bytes from disk or the network never panic and reject what
// they cannot read; what they accept re-encodes to a value that decodes the
// same.
func fuzzCodec[T any](f *testing.F, seeds ...[]byte) {
	c, err := DefaultCodec[T]()
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := c.Decode(b)
		if err != nil {
			return
		}
		enc, err := c.Append(nil, v)
		if err != nil {
			return // e.g. JSON values that do not re-encode, like NaN
		}
		w, err := c.Decode(enc)
		if err != nil {
			t.Fatalf("re-decode of %x: %v", enc, err)
		}
		enc2, _ := c.Append(nil, w)
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("unstable encoding %x vs %x", enc, enc2)
		}
	})
}

func FuzzDecodeInt64(f *testing.F)  { fuzzCodec[int64](f, []byte{0x02}, []byte{0xff, 0xff}) }
func FuzzDecodeUint16(f *testing.F) { fuzzCodec[uint16](f, []byte{0x80, 0x80, 0x04}) }
func FuzzDecodeFloat(f *testing.F)  { fuzzCodec[float32](f, []byte{0, 0, 0x80, 0x3f}) }
func FuzzDecodeBool(f *testing.F)   { fuzzCodec[bool](f, []byte{1}, []byte{2}) }
func FuzzDecodeJSON(f *testing.F)   { fuzzCodec[point](f, []byte(`{"X":1,"Tags":["a"]}`), []byte(`{`)) }
func FuzzDecodeProto(f *testing.F) {
	fuzzCodec[*wrapperspb.StringValue](f, []byte{0x0a, 0x01, 'a'}, []byte{0x0a, 0x05})
}
