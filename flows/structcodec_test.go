package flows

import (
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

type cellPing struct {
	Device string
	At     int64
	Cell   uint32
	Lat    float64
	Acc    float32
	Moving bool
	Hops   int8
	Raw    []byte
	Where  struct {
		Zone  string
		Level uint16
	}
}

func drawPing(t *rapid.T) cellPing {
	var p cellPing
	p.Device = rapid.String().Draw(t, "device")
	p.At = rapid.Int64().Draw(t, "at")
	p.Cell = rapid.Uint32().Draw(t, "cell")
	p.Lat = rapid.Float64().Draw(t, "lat")
	p.Acc = rapid.Float32().Draw(t, "acc")
	p.Moving = rapid.Bool().Draw(t, "moving")
	p.Hops = rapid.Int8().Draw(t, "hops")
	if rapid.Bool().Draw(t, "has raw") {
		p.Raw = rapid.SliceOf(rapid.Byte()).Draw(t, "raw") // empty and nil differ
	}
	p.Where.Zone = rapid.String().Draw(t, "zone")
	p.Where.Level = rapid.Uint16().Draw(t, "level")
	return p
}

func TestStructCodecRoundTrip(t *testing.T) {
	c, err := DefaultCodec[cellPing]()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(*structCodec[cellPing]); !ok {
		t.Fatalf("plain struct gets %T", c)
	}
	rapid.Check(t, func(t *rapid.T) {
		p := drawPing(t)
		if math.IsNaN(p.Lat) || math.IsNaN(float64(p.Acc)) {
			return // NaN != NaN; the bits round-trip
		}
		roundTrip(t, c, p)
		b, _ := c.Append(nil, p)
		// Every strict prefix is truncated, and is refused.
		for i := range len(b) {
			if _, err := c.Decode(b[:i]); err == nil {
				t.Fatalf("prefix %d of %d decoded", i, len(b))
			}
		}
		if _, err := c.Decode(append(b, 0)); err == nil {
			t.Fatal("trailing byte accepted")
		}
	})
}

func TestStructCodecChoice(t *testing.T) {
	// Structs with fields the binary form does not cover keep JSON.
	if c, _ := DefaultCodec[point](); reflect.TypeOf(c) != reflect.TypeFor[jsonCodec[point]]() {
		t.Errorf("point (a []string field) gets %T", c)
	}
	type custom struct{ T jsonTime }
	if c, _ := DefaultCodec[custom](); reflect.TypeOf(c) != reflect.TypeFor[jsonCodec[custom]]() {
		t.Errorf("a struct with its own JSON encoding gets %T", c)
	}
	type small struct{ N int8 }
	c, _ := DefaultCodec[small]()
	if _, err := c.Decode([]byte{0x80, 0x02}); err == nil || !strings.Contains(err.Error(), "small.N: out of range") {
		t.Errorf("int8 out of range: %v", err)
	}
	type wide struct {
		U uint16
		I int32
	}
	wc, _ := DefaultCodec[wide]()
	for _, bad := range [][]byte{
		{0x80, 0x80, 0x04, 0},             // U = 65536
		{0, 0x80, 0x80, 0x80, 0x80, 0x10}, // I = 2^31
		{0, 0x81, 0x80, 0x80, 0x80, 0x10}, // I = -2^31 - 1
	} {
		if _, err := wc.Decode(bad); err == nil || !strings.Contains(err.Error(), "out of range") {
			t.Errorf("%x: %v", bad, err)
		}
	}
	if v, err := wc.Decode([]byte{0xff, 0xff, 0x03, 0xff, 0xff, 0xff, 0xff, 0x0f}); err != nil || v.U != 65535 || v.I != -1<<31 {
		t.Errorf("the widest values: %+v, %v", v, err)
	}
	type flag struct{ B bool }
	fc, _ := DefaultCodec[flag]()
	if _, err := fc.Decode([]byte{2}); err == nil {
		t.Error("boolean 2 accepted")
	}
}

type jsonTime struct{ S string }

func (j jsonTime) MarshalJSON() ([]byte, error) { return json.Marshal(j.S) }

func FuzzDecodeStruct(f *testing.F) {
	c, _ := DefaultCodec[cellPing]()
	seed, _ := c.Append(nil, cellPing{Device: "d1", At: 1, Cell: 42, Lat: 48.85, Raw: []byte{1}})
	fuzzCodec[cellPing](f, seed, []byte{0x05, 'a'})
}

// BenchmarkStructCodec compares the binary form of a plain struct with
// JSON, the form such structs had before.
func BenchmarkStructCodec(b *testing.B) {
	type rec struct {
		K string
		T int64
	}
	v := rec{K: "device-000042", T: 1_700_000_000_000}
	sc, _ := newStructCodec[rec]()
	for _, bc := range []struct {
		name string
		c    Codec[rec]
	}{{"binary", sc}, {"json", jsonCodec[rec]{}}} {
		b.Run(bc.name, func(b *testing.B) {
			buf, _ := bc.c.Append(nil, v)
			b.ReportAllocs()
			for b.Loop() {
				buf, _ = bc.c.Append(buf[:0], v)
				if _, err := bc.c.Decode(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
