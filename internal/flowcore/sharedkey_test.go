package flowcore

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"
	"unsafe"

	"pgregory.net/rapid"
)

// The shared form written from a plain struct's fields (appendShared) is
// the form spliceKey writes from the encoded bytes wherever the key's
// bytes first appear where its field's do, and every record decodes to
// itself either way, the key taken as decoded (decodeShared) or put back
// into the event first.
func TestSharedKeyFieldsMatchSplice(t *testing.T) {
	ec, err := newStructCodec[cellPing]()
	if err != nil {
		t.Fatal(err)
	}
	c := &recsCodec[string, cellPing]{kc: stringCodec[string]{}, ec: ec}
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 20).Draw(t, "records")
		var fields, splice []byte
		var ef, es recsEncoder
		items := make([]Rec[string, cellPing], n)
		var off int64
		for i := range items {
			key := rapid.StringN(0, 200, -1).Draw(t, "key")
			v := cellPing{Device: rapid.StringN(0, 200, -1).Draw(t, "device"), At: rapid.Int64().Draw(t, "at"),
				Raw: rapid.SliceOfN(rapid.Byte(), 0, 300).Draw(t, "raw")}
			v.Where.Zone = rapid.StringN(0, 20, -1).Draw(t, "zone")
			switch rapid.IntRange(0, 3).Draw(t, "key is") {
			case 0:
				v.Device = key
			case 1:
				v.Where.Zone = key
			case 2:
				v.Device, v.Where.Zone = key, key
			}
			if rapid.Bool().Draw(t, "seen") {
				v.Seen = time.Unix(0, rapid.Int64().Draw(t, "seen ns")).UTC()
			}
			off += rapid.Int64Range(0, 1<<40).Draw(t, "offset step")
			items[i] = Rec[string, cellPing]{Key: key, Val: v, Off: off}
			ts := rapid.Int64().Draw(t, "event time")
			if splice, err = c.appendRec(splice, &es, &items[i], ts, true, true); err != nil {
				t.Fatal(err)
			}
			fields = c.appendShared(fields, &ef, &items[i], ts, true, ec)
			// Where the key's bytes appear before its field's, or in no
			// string field that is the key, spliceKey cuts them there; the
			// forms then differ, and only decoding says both are right.
			enc, _ := ec.Append(nil, v)
			_, at := ec.appendSharing(nil, unsafe.Pointer(&v), key)
			first := bytes.Index(enc, []byte(key))
			if len(key) < minSharedKey {
				first = -1
			}
			// The field form cuts the first string field that is the key,
			// and only that, and puts it back.
			if field := ec.keyField(unsafe.Pointer(&v), key); field >= 0 {
				cutEnc, cut := ec.appendWithout(nil, unsafe.Pointer(&v), field, key)
				back, err := ec.decodeWithout(cutEnc, field, key, nil)
				if !cut || err != nil || fmt.Sprint(back) != fmt.Sprint(v) || len(enc)-len(cutEnc) != len(binary.AppendUvarint(nil, uint64(len(key))))+len(key) {
					t.Fatalf("record %d: field %d cut %v: %v, %v from %x; whole %x", i, field, cut, back, err, cutEnc, enc)
				}
			} else if whole, cut := ec.appendWithout(nil, unsafe.Pointer(&v), 0, key); cut || !bytes.Equal(whole, enc) {
				t.Fatalf("record %d: no field is the key, yet cut %v: %x, whole %x", i, cut, whole, enc)
			}
			// (Within a run spliceKey looks where the record before had
			// its key first: a record on its own is compared.)
			one, _ := c.appendRec(nil, &recsEncoder{}, &items[i], ts, true, true)
			oneF := c.appendShared(nil, &recsEncoder{}, &items[i], ts, true, ec)
			if at == first && !bytes.Equal(one, oneF) {
				t.Fatalf("record %d: fields' form %x, spliced %x", i, oneF, one)
			}
		}
		for _, form := range [][]byte{fields, splice} {
			sc := &decodeScratch{}
			rest, err := readViews(sc, form, n, true, partForm{field: formSpliced})
			if err != nil || len(rest) != 0 {
				t.Fatalf("read views: %v, %d bytes left", err, len(rest))
			}
			for i, v := range sc.views {
				key := string(form[v.k : v.k+v.kn])
				if key != items[i].Key {
					t.Fatalf("record %d: key %q, want %q", i, key, items[i].Key)
				}
				vb := form[v.v : v.v+v.vn]
				var got cellPing
				ok := false
				if v.at >= 0 {
					got, ok = ec.decodeShared(vb, v.at, key, nil)
					vb = append(append(append([]byte{}, vb[:v.at]...), key...), vb[v.at:]...)
				}
				whole, err := ec.Decode(vb)
				if err != nil {
					t.Fatalf("record %d: %v", i, err)
				}
				if !ok {
					got = whole
				}
				if g, w := fmt.Sprint(got), fmt.Sprint(items[i].Val); g != w || fmt.Sprint(whole) != w {
					t.Fatalf("record %d: decoded %s (whole %v), want %s", i, g, whole, w)
				}
			}
		}
	})
}

// decodeShared decodes what it accepts exactly as the event put back
// together decodes, for any bytes, position and key; decodeWithout decodes
// the event without its first field exactly as the whole event.
func FuzzDecodeShared(f *testing.F) {
	c, err := newStructCodec[cellPing]()
	if err != nil {
		f.Fatal(err)
	}
	seed, at := c.appendSharing(nil, unsafe.Pointer(&cellPing{Device: "dev-1", At: 7, Raw: []byte{1}}), "dev-1")
	f.Add(seed, at, "dev-1")
	zoned := cellPing{Device: "d", Seen: time.Unix(1_700_000_000, 5)}
	zoned.Where.Zone = "zone-9"
	seed, at = c.appendSharing(nil, unsafe.Pointer(&zoned), "zone-9")
	f.Add(seed, at, "zone-9")
	f.Add([]byte{0x05, 'a'}, 1, "ab")
	f.Fuzz(func(t *testing.T, b []byte, at int, key string) {
		if at < 0 || at > len(b) {
			return // readViews refuses such positions
		}
		// Device, field 0, cut whole (the field form).
		gotW, errW := c.decodeWithout(b, 0, key, nil)
		wantW, err := c.Decode(append(binary.AppendUvarint(nil, uint64(len(key))), append([]byte(key), b...)...))
		if (errW == nil) != (err == nil) || (err == nil && fmt.Sprint(gotW) != fmt.Sprint(wantW)) {
			t.Fatalf("without field 0: %v, %v; put back together: %v, %v", gotW, errW, wantW, err)
		}
		got, ok := c.decodeShared(b, at, key, nil)
		whole := append(append(append([]byte{}, b[:at]...), key...), b[at:]...)
		want, err := c.Decode(whole)
		if !ok {
			return
		}
		if err != nil {
			t.Fatalf("decoded %v from the shared form; put back together: %v", got, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("decoded %v from the shared form, %v put back together", got, want)
		}
	})
}

// A part of front-coded keys that would put together more than
// maxFrontKeys bytes of keys, from a few, is refused: each key shares the
// whole key before it and adds a kilobyte.
func TestFrontCodedKeysBounded(t *testing.T) {
	records := func(n int) []byte {
		var b []byte
		for i := range n {
			b = append(b, 0)                            // offset
			b = binary.AppendUvarint(b, uint64(i*1024)) // shared: all of the key before
			b = binary.AppendUvarint(b, 1024)           // the bytes that follow
			b = append(b, bytes.Repeat([]byte{byte('a' + i%26)}, 1024)...)
			b = append(b, 0) // an empty event
		}
		return b
	}
	const n = 50
	sc := &decodeScratch{}
	if _, err := readViews(sc, records(n), n, false, partForm{field: 0, front: true}); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Fatalf("%d bytes claiming %d KiB of keys: %v", len(records(n)), n*(n+1)/2, err)
	}
	// The same keys, fewer of them, are put back together.
	sc = &decodeScratch{}
	rest, err := readViews(sc, records(20), 20, false, partForm{field: 0, front: true})
	if err != nil || len(rest) != 0 {
		t.Fatalf("20 records: %v, %d bytes left", err, len(rest))
	}
	v := sc.views[19]
	if v.kn != 20*1024 || sc.keyBytes[v.k] != 'a' || sc.keyBytes[v.k+v.kn-1] != 'a'+19 {
		t.Fatalf("key 19: %d bytes", v.kn)
	}
}

// sharedPrefix counts the bytes two strings share, within and across its
// eight-byte steps.
func TestSharedPrefix(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a := rapid.StringN(0, 40, -1).Draw(t, "a")
		b := a[:rapid.IntRange(0, len(a)).Draw(t, "shared")] + rapid.StringN(0, 40, -1).Draw(t, "b's rest")
		want := 0
		for want < min(len(a), len(b)) && a[want] == b[want] {
			want++
		}
		if got := sharedPrefix(a, b); got != want {
			t.Fatalf("sharedPrefix(%q, %q) = %d, want %d", a, b, got, want)
		}
	})
}
