package flowcore

import (
	"encoding/binary"
	"fmt"
	"slices"
	"testing"
)

// A Process's waiting events (InEventTimeOrder) restore exactly from their
// checkpoint entries: from segments, leaving out the events applied before
// the checkpoint; a segment goes once all its events are applied; and the
// entries of one event each that older checkpoints hold still restore.
func TestEventBufferCheckpoint(t *testing.T) {
	codec := bufferCodec(t)
	kc, ec := codec.kc, codec.ec
	type buf = eventBuffer[string, int64]
	var ran []int64
	newBuf := func() *buf {
		return &buf{fr: &Fragment{}, codec: codec,
			run: func(_ string, v int64) { ran = append(ran, v) }}
	}
	// Event i: time 10*i, offset i, value i.
	push := func(b *buf, from, to int64) {
		for i := from; i < to; i++ {
			b.h.push(buffered[string, int64]{ts: 10 * i, off: i, key: fmt.Sprint("k", i%3), val: i})
		}
	}
	store := map[string][]byte{}
	checkpoint := func(b *buf) {
		t.Helper()
		var d Delta
		if err := b.delta(3, &d); err != nil {
			t.Fatal(err)
		}
		for _, e := range d.Deletes {
			delete(store, string(e.Key))
		}
		for _, e := range d.Puts {
			store[string(e.Key)] = e.Value
		}
		if d.Entries != int64(len(store)) {
			t.Fatalf("the delta counts %d entries, the store holds %d", d.Entries, len(store))
		}
	}
	restore := func() *buf {
		t.Helper()
		b := newBuf()
		for k, v := range store { // in no particular order
			if err := b.restore(3, []byte(k), v); err != nil {
				t.Fatal(err)
			}
		}
		return b
	}
	run := func(b *buf, wm int64) []int64 {
		ran = nil
		for {
			if _, ok := b.next(wm); !ok {
				return ran
			}
			b.applyNext(b.fr)
		}
	}
	want := func(got []int64, from, to int64) {
		t.Helper()
		var w []int64
		for i := from; i < to; i++ {
			w = append(w, i)
		}
		if !slices.Equal(got, w) {
			t.Fatalf("applied %v, want %v", got, w)
		}
	}

	b := newBuf()
	push(b, 0, 6)
	checkpoint(b) // a segment of 0..5
	want(run(b, 25), 0, 3)
	push(b, 6, 8)
	checkpoint(b) // the frontier (2) and a segment of 6, 7
	if len(store) != 3 {
		t.Fatalf("%d entries, want the frontier and two segments", len(store))
	}
	want(run(restore(), 1000), 3, 8)
	want(run(b, 55), 3, 6)
	checkpoint(b) // 0..5 applied: their segment goes
	if len(store) != 2 {
		t.Fatalf("%d entries, want the frontier and one segment", len(store))
	}
	want(run(restore(), 1000), 6, 8)
	push(b, 8, 9)
	want(run(b, 85), 6, 9) // applied before any checkpoint saw 8
	checkpoint(b)
	if len(store) != 1 {
		t.Fatalf("%d entries, want the frontier alone", len(store))
	}
	want(run(restore(), 1000), 0, 0)

	// An older checkpoint: an entry per event, keyed by its place.
	clear(store)
	for i := int64(0); i < 4; i++ {
		e := buffered[string, int64]{ts: 10 * i, off: i, key: fmt.Sprint("k", i%3), val: i}
		val := binary.AppendVarint(nil, e.ts)
		k, _ := kc.Append(nil, e.key)
		val = append(binary.AppendUvarint(val, uint64(len(k))), k...)
		val, _ = ec.Append(val, e.val)
		p := e.place()
		store[string(p[:])] = val
	}
	b = restore()
	want(run(b, 15), 0, 2)
	checkpoint(b) // the frontier; the entries of 0 and 1 go
	if len(store) != 3 {
		t.Fatalf("%d entries, want the frontier and the entries of 2 and 3", len(store))
	}
	want(run(restore(), 1000), 2, 4)
}

// A fragment's watermarks checkpoint as one entry and restore from it, and
// from the entries of one partition each that older checkpoints hold,
// which the next checkpoint deletes.
func TestWatermarkCheckpoint(t *testing.T) {
	newFr := func() *Fragment { return &Fragment{wms: []watermarks{{wm: NoWatermark}, newWatermarks(3)}} }
	fr := newFr()
	fr.wms[1].observe(0, 50, false, false)
	fr.wms[1].observe(2, 70, true, false)
	var d Delta
	fr.wmDelta(&d)
	if len(d.Puts) != 1 || len(d.Reset) != 0 || d.Entries != 1 {
		t.Fatalf("delta %+v, want one entry", d)
	}
	again := newFr()
	if err := again.wmRestore(d.Puts[0].Key, d.Puts[0].Value); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(again.wms[1].parts, fr.wms[1].parts) || again.wms[1].wm != fr.wms[1].wm {
		t.Fatalf("restored %+v, want %+v", again.wms[1], fr.wms[1])
	}
	// The channel's watermark is restored as it was, though its active
	// partitions' minimum is below it: partition 2 active again at 60.
	fr.wms[1].observe(0, 90, false, false)
	fr.wms[1].observe(1, 95, false, false)
	fr.wms[1].observe(2, 60, false, false)
	d = Delta{}
	fr.wmDelta(&d)
	again = newFr()
	if err := again.wmRestore(d.Puts[0].Key, d.Puts[0].Value); err != nil {
		t.Fatal(err)
	}
	if fr.wms[1].wm != 90 || again.wms[1].wm != 90 {
		t.Fatalf("channel watermark %d, restored %d, want 90", fr.wms[1].wm, again.wms[1].wm)
	}
	// An entry of the form before the channels' watermarks restores from
	// its partitions'.
	parts := binary.AppendUvarint(nil, 3)
	for part, wm := range []int64{90, 95, 60} {
		parts = binary.AppendVarint(binary.AppendUvarint(binary.AppendUvarint(parts, 1), uint64(part)), wm)
		parts = append(parts, 0)
	}
	again = newFr()
	if err := again.wmRestore(wmKey, parts); err != nil || again.wms[1].wm != 60 {
		t.Fatalf("an entry without channels: watermark %d, %v; want 60", again.wms[1].wm, err)
	}

	old := newFr()
	for part, wm := range []int64{40, 60, 80} {
		key := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 1), uint32(part))
		if err := old.wmRestore(key, append(binary.BigEndian.AppendUint64(nil, uint64(wm)), 0)); err != nil {
			t.Fatal(err)
		}
	}
	if old.wms[1].wm != 40 {
		t.Fatalf("watermark %d, want 40", old.wms[1].wm)
	}
	d = Delta{}
	old.wmDelta(&d)
	if !slices.Equal(d.Reset, []uint16{watermarkNamespace}) || len(d.Puts) != 1 || d.Entries != 1 {
		t.Fatalf("delta %+v, want the namespace reset and one entry", d)
	}
	d = Delta{}
	old.wmDelta(&d)
	if len(d.Reset) != 0 {
		t.Fatalf("the second delta resets %v again", d.Reset)
	}
}

// bufferCodec is the codec of the event buffers of the tests: string keys,
// int64 events.
func bufferCodec(t *testing.T) *recsCodec[string, int64] {
	t.Helper()
	kc, ec := testProcCodecs(t)
	return &recsCodec[string, int64]{kc: kc, ec: ec}
}

// A watermark entry of any bytes restores or fails, never panics; one
// that restores checkpoints again to an entry that restores the same.
func FuzzWatermarkRestore(f *testing.F) {
	newFr := func() *Fragment { return &Fragment{wms: []watermarks{{wm: NoWatermark}, newWatermarks(3)}} }
	fr := newFr()
	fr.wms[1].observe(0, 50, false, false)
	fr.wms[1].observe(2, 70, true, false)
	var d Delta
	fr.wmDelta(&d)
	f.Add(d.Puts[0].Value)
	f.Add([]byte{1, 1, 0, 2, 0})
	f.Add([]byte{1, 1, 0, 2, 0, 1, 1, 8})
	f.Fuzz(func(t *testing.T, val []byte) {
		a := newFr()
		if a.wmRestore(wmKey, val) != nil {
			return
		}
		var d Delta
		a.wmDelta(&d)
		if len(d.Puts) == 0 {
			return
		}
		b := newFr()
		if err := b.wmRestore(wmKey, d.Puts[0].Value); err != nil {
			t.Fatalf("a restored entry checkpoints to one that fails: %v", err)
		}
		if !slices.Equal(a.wms[1].parts, b.wms[1].parts) || a.wms[1].wm != b.wms[1].wm {
			t.Fatalf("restored again %+v, want %+v", b.wms[1], a.wms[1])
		}
	})
}
