package flowcore

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

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
	Seen   time.Time
	Dwell  time.Duration
	Where  struct {
		Zone  string
		Level uint16
		Since time.Time
	}
}

// drawTime draws instants of both encoded forms, the zero time and the
// edges between the forms, in UTC or another zone.
func drawTime(t *rapid.T, label string) time.Time {
	var tm time.Time
	switch rapid.IntRange(0, 3).Draw(t, label+" form") {
	case 0: // the zero time
	case 1: // 1678 to 2262, every nanosecond
		tm = time.Unix(0, rapid.Int64().Draw(t, label+" unix ns"))
	case 2: // any second
		tm = time.Unix(rapid.Int64().Draw(t, label+" unix s"), rapid.Int64Range(0, 1e9-1).Draw(t, label+" ns"))
	case 3: // the edges of the nanosecond form
		s := rapid.SampledFrom([]int64{minNanoSec - 1, minNanoSec, maxNanoSec - 1, maxNanoSec}).Draw(t, label+" edge s")
		tm = time.Unix(s, rapid.SampledFrom([]int64{0, 854775807, 854775808, 1e9 - 1}).Draw(t, label+" edge ns"))
	}
	if rapid.Bool().Draw(t, label+" utc") {
		return tm.UTC()
	}
	return tm.In(time.FixedZone("", rapid.IntRange(-14*3600, 14*3600).Draw(t, label+" offset")))
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
	p.Seen = drawTime(t, "seen")
	p.Dwell = time.Duration(rapid.Int64().Draw(t, "dwell"))
	p.Where.Zone = rapid.String().Draw(t, "zone")
	p.Where.Level = rapid.Uint16().Draw(t, "level")
	p.Where.Since = drawTime(t, "since")
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
		b, err := c.Append(nil, p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Decode(b)
		if err != nil {
			t.Fatalf("decode %+v: %v", p, err)
		}
		// Times keep their instant and come back in UTC.
		want := p
		want.Seen, want.Where.Since = p.Seen.UTC(), p.Where.Since.UTC()
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip %+v -> %+v", p, got)
		}
		if !got.Seen.Equal(p.Seen) || got.Seen.IsZero() != p.Seen.IsZero() || !got.Where.Since.Equal(p.Where.Since) {
			t.Fatalf("times %v, %v -> %v, %v", p.Seen, p.Where.Since, got.Seen, got.Where.Since)
		}
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

func TestStructCodecTime(t *testing.T) {
	type stamped struct {
		At    time.Time
		Every time.Duration
	}
	c, err := DefaultCodec[stamped]()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(*structCodec[stamped]); !ok {
		t.Fatalf("a struct with time fields gets %T", c)
	}
	now := time.Now().In(time.FixedZone("CET", 3600)) // with a monotonic reading
	for _, v := range []stamped{
		{},
		{At: now, Every: -90 * time.Second},
		{At: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), Every: math.MaxInt64},
		{At: time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC), Every: math.MinInt64},
	} {
		b, _ := c.Append(nil, v)
		got, err := c.Decode(b)
		if err != nil {
			t.Fatalf("%v: %v", v, err)
		}
		if got.At != v.At.UTC() || !got.At.Equal(v.At) || got.Every != v.Every {
			t.Errorf("%v -> %v", v, got)
		}
	}
	if b, _ := c.Append(nil, stamped{}); len(b) != 9 { // the wide form: tag, 6-byte seconds, 1-byte ns; and Every
		t.Errorf("the zero time takes %d bytes: %x", len(b), b)
	}
	if b, _ := c.Append(nil, stamped{At: now}); len(b) != 10 {
		t.Errorf("now takes %d bytes: %x", len(b), b)
	}

	type at struct{ At time.Time }
	ac, _ := DefaultCodec[at]()
	nanos := func(ns int64) []byte { return binary.LittleEndian.AppendUint64([]byte{timeNanos}, uint64(ns)) }
	wide := func(s int64, ns uint64) []byte {
		return binary.AppendUvarint(binary.AppendVarint([]byte{timeWide}, s), ns)
	}
	for _, bad := range []struct {
		b   []byte
		err string
	}{
		{nil, "truncated"},
		{[]byte{timeNanos, 1, 2, 3, 4, 5, 6, 7}, "truncated"},
		{[]byte{timeWide}, "bad varint"},
		{[]byte{timeWide, 2}, "bad uvarint"},
		{[]byte{2, 0}, "unknown time form 2"},
		{nanos(math.MinInt64), "wrong form"},
		{nanos(minNanoSec*1e9 - 1), "wrong form"},
		{wide(0, 0), "wrong form"},
		{wide(minNanoSec, 0), "wrong form"},
		{wide(maxNanoSec-1, 999999999), "wrong form"},
		{wide(maxNanoSec, 1e9), "nanoseconds out of range"},
	} {
		if _, err := ac.Decode(bad.b); err == nil || !strings.Contains(err.Error(), "at.At: ") || !strings.Contains(err.Error(), bad.err) {
			t.Errorf("%x: %v, want %q", bad.b, err, bad.err)
		}
	}
	for _, good := range [][]byte{nanos(minNanoSec * 1e9), nanos(maxNanoSec*1e9 - 1), wide(minNanoSec-1, 999999999), wide(maxNanoSec, 0)} {
		if _, err := ac.Decode(good); err != nil {
			t.Errorf("%x: %v", good, err)
		}
	}
}

type jsonTime struct{ S string }

func (j jsonTime) MarshalJSON() ([]byte, error) { return json.Marshal(j.S) }

func FuzzDecodeStruct(f *testing.F) {
	c, _ := DefaultCodec[cellPing]()
	seed, _ := c.Append(nil, cellPing{Device: "d1", At: 1, Cell: 42, Lat: 48.85, Raw: []byte{1}})
	stamped := cellPing{Device: "d2", Seen: time.Unix(1_700_000_000, 5), Dwell: time.Minute}
	stamped.Where.Since = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC) // the wide form
	timed, _ := c.Append(nil, stamped)
	fuzzCodec[cellPing](f, seed, timed, []byte{0x05, 'a'})
}

// BenchmarkStructCodec compares the binary form of a plain struct with
// JSON, the form such structs had before, and measures the default codec
// of a struct with a time field.
func BenchmarkStructCodec(b *testing.B) {
	type rec struct {
		K string
		T int64
	}
	type stamped struct {
		K string
		T time.Time
	}
	v := rec{K: "device-000042", T: 1_700_000_000_000}
	sv := stamped{K: "device-000042", T: time.Unix(0, 1_700_000_000_123_456_789).UTC()}
	sc, _ := newStructCodec[rec]()
	tc, err := DefaultCodec[stamped]()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("binary", func(b *testing.B) { benchCodec(b, sc, v) })
	b.Run("json", func(b *testing.B) { benchCodec(b, jsonCodec[rec]{}, v) })
	b.Run("time", func(b *testing.B) { benchCodec(b, tc, sv) })
}

func benchCodec[T any](b *testing.B, c Codec[T], v T) {
	buf, _ := c.Append(nil, v)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = c.Append(buf[:0], v)
		if _, err := c.Decode(buf); err != nil {
			b.Fatal(err)
		}
	}
}
