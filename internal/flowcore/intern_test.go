package flowcore

import (
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/tessera-streams/tessera/shard"
)

// A key seen again is the same string, without an allocation, and the
// interner stays bounded.
func TestInterner(t *testing.T) {
	var in Interner
	k1 := []byte("key-1")
	var k2 []byte
	slots := func(k []byte) [2]uint64 {
		h := maphash.Bytes(internSeed, k)
		return [2]uint64{h & (internSlots - 1), (h >> 32) & (internSlots - 1)}
	}
	for i := 2; k2 == nil; i++ { // a key in other slots than key-1
		k := []byte("key-" + strconv.Itoa(i))
		a, b := slots(k), slots(k1)
		if a[0] != b[0] && a[0] != b[1] && a[1] != b[0] && a[1] != b[1] {
			k2 = k
		}
	}
	a, b := in.String(k1), in.String(k1)
	if a != "key-1" || unsafe.StringData(a) != unsafe.StringData(b) {
		t.Fatalf("%q and %q are not one string", a, b)
	}
	if c := in.String(k2); c != string(k2) || unsafe.StringData(c) == unsafe.StringData(a) {
		t.Fatalf("%s gave %q", k2, c)
	}
	if d := in.String(k1); unsafe.StringData(d) != unsafe.StringData(a) {
		t.Fatalf("key-1 after %s is a new string", k2)
	}
	if n := testing.AllocsPerRun(100, func() { in.String(k1); in.String(k2) }); n != 0 {
		t.Fatalf("%v allocations for strings held", n)
	}
	for i := range 3 * internSlots {
		if s := in.String([]byte(strconv.Itoa(i))); s != strconv.Itoa(i) {
			t.Fatalf("%d gave %q", i, s)
		}
	}
	if len(in.slots) != internSlots {
		t.Fatalf("%d slots, want %d", len(in.slots), internSlots)
	}
	if e := in.String(nil); e != "" {
		t.Fatalf("no bytes gave %q", e)
	}
	var none *Interner
	if s := none.String([]byte("k")); s != "k" {
		t.Fatalf("nil interner gave %q", s)
	}
}

// A long string (a payload, not a key) is decoded, never held.
func TestInternerKeepsNoLongStrings(t *testing.T) {
	var in Interner
	long := make([]byte, internMax+1)
	for i := range long {
		long[i] = 'x'
	}
	a, b := in.String(long), in.String(long)
	if a != string(long) || unsafe.StringData(a) == unsafe.StringData(b) {
		t.Fatalf("a %d-byte string was held", len(long))
	}
	for _, s := range in.slots {
		if len(s) > internMax {
			t.Fatalf("a %d-byte string is in a slot", len(s))
		}
	}
	short := long[:internMax]
	c, d := in.String(short), in.String(short)
	if unsafe.StringData(c) != unsafe.StringData(d) {
		t.Fatalf("a %d-byte string was not held", internMax)
	}
}

// BenchmarkInterner looks up keys of 21 fragments' interners (one node of
// three with 64 fragments) at random, as a node decoding other nodes'
// batches of a keyed count over 100k keys does: most lookups miss the
// caches.
func BenchmarkInterner(b *testing.B) {
	ins := make([]Interner, 21)
	keys := make([][][]byte, len(ins))
	for f := range ins {
		for i := range 1600 {
			keys[f] = append(keys[f], []byte(fmt.Sprintf("key-%07d", i*64+f)))
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; b.Loop(); i++ {
		f := rng.IntN(len(ins))
		ins[f].String(keys[f][rng.IntN(len(keys[f]))])
	}
}

func TestInternerFindsTableKeys(t *testing.T) {
	tb := newTable[string, int64](nil, nil)
	tb.insert("alpha", 1)
	var in Interner
	in.keysOf(0, tb.stringIndex())
	in.find = in.keyFinder(0)
	if got := in.String([]byte("alpha")); unsafe.StringData(got) != unsafe.StringData(tb.keys[0]) {
		t.Errorf("a known key decoded to %q, not the table's own string", got)
	}
	if got := in.String([]byte("beta")); got != "beta" {
		t.Errorf("an unknown key decoded to %q", got)
	}
	tb.insert("beta", 1) // a key inserted after the finder was made
	in.String([]byte("alpha"))
	if got := in.String([]byte("beta")); unsafe.StringData(got) != unsafe.StringData(tb.keys[1]) {
		t.Errorf("a key inserted later decoded to %q, not the table's own string", got)
	}
	if in.keyFinder(1) != nil || (*Interner)(nil).keyFinder(0) != nil {
		t.Error("a stage without a table has a finder")
	}
	if newTable[int64, int64](nil, nil).stringKeys() != nil {
		t.Error("a table of int64 keys finds keys by their bytes")
	}
}

// BenchmarkInternerDecodeApply decodes keys as a node of three decodes
// other nodes' batches of a keyed count over 100k keys (21 fragments of
// 1,600 keys, each with its table's finder), 32 keys of one fragment at a
// time, then looks each up in the fragment's table as its apply does. The
// tables' keys were allocated one by one, in the order they arrived.
func BenchmarkInternerDecodeApply(b *testing.B) {
	const frags, perFrag, part = 21, 1600, 32
	ins := make([]Interner, frags)
	tabs := make([]*table[string, int64], frags)
	for f := range frags {
		tabs[f] = newTable[string, int64](nil, nil)
		ins[f].keysOf(0, tabs[f].stringIndex())
		ins[f].find = ins[f].keyFinder(0)
	}
	keys := make([][][]byte, frags)
	for i := range perFrag {
		for f := range frags {
			k := []byte(fmt.Sprintf("key-%07d", i*64+f))
			keys[f] = append(keys[f], k)
			tabs[f].insert(ins[f].String(k), 1)
		}
	}
	// The batches: runs of part keys of one fragment, read in order from
	// one buffer as from a received message.
	rng := rand.New(rand.NewPCG(1, 2))
	type run struct {
		f    int
		keys [][]byte
	}
	runs := make([]run, 1<<13)
	var buf []byte
	for r := range runs {
		runs[r].f = rng.IntN(frags)
		for range part {
			k := keys[runs[r].f][rng.IntN(perFrag)]
			buf = append(buf, k...)
			runs[r].keys = append(runs[r].keys, buf[len(buf)-len(k):len(buf):len(buf)])
		}
	}
	got := make([]string, part)
	var sum int64
	for i := 0; b.Loop(); i++ {
		r := &runs[i%len(runs)]
		in, t := &ins[r.f], tabs[r.f]
		for j, k := range r.keys {
			got[j] = in.String(k)
		}
		for _, k := range got {
			sum += int64(t.idx[k])
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*part), "ns/key")
	_ = sum
}

// keyBatch.find finds the table's own string of every key it holds, at its
// home place, pushed off it or far from it, and no key it does not hold
// (the empty key among them), for tables with a hash index and with a map.
func TestKeyBatchFinds(t *testing.T) {
	for _, hashed := range []bool{true, false} {
		tb := newTable[string, int64](nil, nil)
		if hashed {
			tb.idx, tb.hash = nil, keyHasher[string](nil)
		}
		held := map[string]bool{}
		for i := range 3000 {
			k := fmt.Sprintf("k%d", i)
			tb.insert(k, 1)
			held[k] = true
		}
		var kb keyBatch
		for round := range 3 {
			var keys []string
			for i := round; i < 6000; i += 3 {
				keys = append(keys, fmt.Sprintf("k%d", i))
			}
			keys = append(keys, "", "k", "k1\x00")
			var buf []byte
			for _, k := range keys {
				buf = append(buf, k...)
			}
			kb.reset(buf, len(keys))
			at := 0
			for _, k := range keys {
				var h uint64
				if hashed {
					h = shard.String(k)
				}
				kb.add(at, len(k), h)
				at += len(k)
			}
			kb.find(tb.stringIndex())
			for i, k := range keys {
				if kb.found[i] != held[k] {
					t.Fatalf("hashed %v: %q found %v, held %v", hashed, k, kb.found[i], held[k])
				}
				if hashed && !held[k] && kb.slots[i] != -1 {
					t.Fatalf("%q, not held, found at slot %d", k, kb.slots[i])
				}
				if !kb.found[i] {
					continue
				}
				j, _ := tb.lookup(k, 0)
				if unsafe.StringData(kb.got[i]) != unsafe.StringData(tb.keys[j]) {
					t.Fatalf("hashed %v: %q is not the table's own string", hashed, k)
				}
				if hashed && kb.slots[i] != j {
					t.Fatalf("%q found at slot %d, in slot %d", k, kb.slots[i], j)
				}
			}
			kb.done()
		}
	}
	if n := (&Interner{}).keyFinder(0); n != nil {
		t.Fatal("an Interner without tables has a finder")
	}
	var kb keyBatch
	empty := newTable[string, int64](nil, nil)
	empty.idx, empty.hash = nil, keyHasher[string](nil)
	kb.reset([]byte("a"), 1)
	kb.add(0, 1, shard.String("a"))
	kb.find(empty.stringIndex())
	if kb.found[0] || kb.slots[0] != -1 {
		t.Fatal("an empty table found a key")
	}
}

// A batch's key slots hold for the index they were found in, for as many
// records as they were found for, until the table removes a key (which
// moves slots).
func TestKeySlotsHold(t *testing.T) {
	tb := newTable[string, int64](nil, nil)
	tb.idx, tb.hash, tb.strs = nil, keyHasher[string](nil), true
	for i := range 10 {
		tb.insert(strconv.Itoa(i), 1)
	}
	other := newTable[string, int64](nil, nil)
	s := &keySlots{x: &tb.hx, dels: tb.hx.dels, at: []int32{3, -1}}
	if s.of(&tb.hx, 2) == nil {
		t.Fatal("slots just found do not hold")
	}
	if s.of(&other.hx, 2) != nil || s.of(&tb.hx, 3) != nil || (*keySlots)(nil).of(&tb.hx, 2) != nil {
		t.Fatal("slots hold for another table, another batch or none")
	}
	tb.insert("new", 1) // an insert moves no slot
	if s.of(&tb.hx, 2) == nil {
		t.Fatal("slots stopped holding after an insert")
	}
	tb.indexDelete("0")
	if s.of(&tb.hx, 2) != nil {
		t.Fatal("slots hold after a key was removed")
	}
}

// sameString and sameKey agree with == for every length around the
// inline form's 8 to 16 bytes, for strings that differ in any one byte,
// and for one string compared with itself.
func TestSameString(t *testing.T) {
	for n := range 24 {
		a := make([]byte, n)
		for i := range a {
			a[i] = byte('a' + i)
		}
		s := string(a)
		if !sameString(s, s) || !sameString(s, string(a)) || !sameKey(s, a) {
			t.Errorf("len %d: a string differs from itself", n)
		}
		for i := range n {
			b := append([]byte(nil), a...)
			b[i] ^= 0x20
			if sameString(s, string(b)) || sameKey(s, b) {
				t.Errorf("len %d: %q equals %q", n, s, b)
			}
		}
		if n > 1 && (sameString(s, s[:n-1]) || sameKey(s[1:], a[:n-1])) {
			t.Errorf("len %d: strings of other lengths or bytes are equal", n)
		}
	}
}

// The keys of another node's batch that a table without a TTL does not
// hold yet are decoded into its arena, side by side, and it inserts those
// very strings; a table with a TTL (which removes keys) gets strings of
// their own. The counts are those of the events.
func TestNewKeysInTableArena(t *testing.T) {
	for _, ttl := range []bool{false, true} {
		evs := make([]stampedKey, 300)
		for i := range evs {
			evs[i] = stampedKey{K: fmt.Sprintf("key-%013d", i%100), At: int64(i)} // past the tiny allocator's 16 bytes
		}
		f := New("arena", WithFragments(1))
		src := From(f, "in", Source[stampedKey](&stampedSource{evs: evs}), WithEventTime(func(e stampedKey) time.Time { return time.Unix(0, e.At) }, time.Hour))
		ks := KeyBy(src, func(e stampedKey) string { return e.K })
		var opts []StateOption
		if ttl {
			opts = append(opts, WithStateTTL(time.Hour))
		}
		Count(ks, opts...).View("counts")
		plan, err := Compile(f)
		if err != nil {
			t.Fatal(err)
		}
		r, err := plan.OpenReader(0, 0, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Poll(t.Context(), 1000); err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		enc, err := plan.EncodeBatch(nil, r.Take(0))
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
		fr := plan.NewFragment(0)
		b, err := plan.DecodeBatchInterned(enc, fr.Interner())
		if err != nil {
			t.Fatal(err)
		}
		items := b.parts[0].(*recs[string, stampedKey]).items
		k0, k1 := items[0].Key, items[1].Key
		packed := unsafe.StringData(k1) == (*byte)(unsafe.Add(unsafe.Pointer(unsafe.StringData(k0)), len(k0)))
		if packed == ttl {
			t.Fatalf("ttl %v: new keys %q and %q packed side by side: %v", ttl, k0, k1, packed)
		}
		if ttl {
			continue // a table with a TTL applies in event time order, later
		}
		if err := fr.Apply(b, b.PrevEnd); err != nil {
			t.Fatal(err)
		}
		tb := fr.ops[0].(*table[string, int64])
		if len(tb.keys) != 100 {
			t.Fatalf("%d keys, want 100", len(tb.keys))
		}
		for i, k := range tb.keys {
			if tb.vals[i] != 3 {
				t.Fatalf("%s counted %d, want 3", k, tb.vals[i])
			}
		}
		if unsafe.StringData(tb.keys[0]) != unsafe.StringData(k0) {
			t.Fatalf("the table holds a copy of the key decoded into its arena")
		}
		// Each key once, whatever the records that hold it. The
		// Interner keeps every key it decoded, except one that a later
		// key pushed out of its slot: a key whose two slots both hold
		// others takes one of them. Its hash seed is drawn per process,
		// and in about one process in forty one of these hundred keys is
		// pushed out (crowdedKeys).
		crowded := crowdedKeys(items)
		at := map[string]*byte{}
		for _, it := range items {
			if p, ok := at[it.Key]; ok && p != unsafe.StringData(it.Key) && !crowded[it.Key] {
				t.Fatalf("records of %s hold copies of it", it.Key)
			}
			at[it.Key] = unsafe.StringData(it.Key)
		}
		if len(crowded) > 10 {
			t.Fatalf("%d of 100 keys share a slot of a key whose both slots others took: too few checked", len(crowded))
		}
	}
}

// crowdedKeys are the keys of items the Interner may have decoded more
// than once: a key both of whose slots other keys take, and every key
// that shares a slot with it (String puts the key in one of them, and
// the key there before is decoded anew when it comes again).
func crowdedKeys(items []Rec[string, stampedKey]) map[string]bool {
	slots := func(k string) [2]uint64 {
		h := maphash.String(internSeed, k)
		return [2]uint64{h & (internSlots - 1), (h >> 32) & (internSlots - 1)}
	}
	users := map[uint64]map[string]bool{}
	for _, it := range items {
		for _, s := range slots(it.Key) {
			if users[s] == nil {
				users[s] = map[string]bool{}
			}
			users[s][it.Key] = true
		}
	}
	out := map[string]bool{}
	for _, it := range items {
		k, both := it.Key, true
		for _, s := range slots(k) {
			both = both && len(users[s]) > 1
		}
		if !both {
			continue
		}
		for _, s := range slots(k) {
			for o := range users[s] {
				out[o] = true
			}
		}
	}
	return out
}

// An arena's chunks start small and grow to arenaChunk; a key goes in
// whole, a long one in a string of its own.
func TestKeyArenaChunks(t *testing.T) {
	var a keyArena
	k := a.string([]byte("k"))
	if k != "k" || cap(a.buf) != 64 {
		t.Fatalf("first chunk of %d bytes for a key of one", cap(a.buf))
	}
	var caps []int
	for i := 0; cap(a.buf) < arenaChunk || len(a.buf) < arenaChunk-16; i++ {
		want := fmt.Sprintf("key-%05d", i)
		if got := a.string([]byte(want)); got != want {
			t.Fatalf("arena string %q, want %q", got, want)
		}
		if len(caps) == 0 || caps[len(caps)-1] != cap(a.buf) {
			caps = append(caps, cap(a.buf))
		}
	}
	if fmt.Sprint(caps) != fmt.Sprint([]int{64, 128, 256, 512, 1024, 2048, 4096}) {
		t.Fatalf("chunks of %v bytes", caps)
	}
	long := strings.Repeat("x", arenaMaxKey+1)
	before := len(a.buf)
	if got := a.string([]byte(long)); got != long || len(a.buf) != before {
		t.Fatal("a long key went into the arena")
	}
	if a.string(nil) != "" {
		t.Fatal("the empty key")
	}
}
