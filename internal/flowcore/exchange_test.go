package flowcore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/tessera-streams/tessera/shard"
)

// idleSource is a source that is never read: the tests here drive an
// exchange's writer directly.
type idleSource struct{}

func (idleSource) Partitions() int { return 1 }
func (idleSource) Open(int, int64) (PartitionReader[string], error) {
	return nil, errors.New("not read")
}

type countUpdate = KV[string, int64]

// exchangeWriter is fragment 0's writer of a flow that counts per key and
// re-keys the count updates by their value, over fragments fragments.
func exchangeWriter(t testing.TB, fragments int) *exWriter[int64, countUpdate] {
	t.Helper()
	f := New("ex", WithFragments(fragments))
	counts := Count(KeyBy(From(f, "in", Source[string](idleSource{})), func(s string) string { return s }))
	Count(KeyBy(counts.Updates(), func(kv countUpdate) int64 { return kv.Value })).View("spectrum")
	plan, err := Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	return plan.NewFragment(0).out[0].(*exWriter[int64, countUpdate])
}

// exStore is a fragment's exchange entries as a store keeps them.
type exStore map[string][]byte

func (s exStore) checkpoint(t testing.TB, w *exWriter[int64, countUpdate]) {
	t.Helper()
	var d Delta
	if err := w.delta(&d); err != nil {
		t.Fatal(err)
	}
	for _, e := range d.Deletes {
		if _, ok := s[string(e.Key)]; !ok {
			t.Fatalf("the delta deletes %x, which the store does not hold", e.Key)
		}
		delete(s, string(e.Key))
	}
	for _, e := range d.Puts {
		s[string(e.Key)] = e.Value
	}
	if d.Entries != int64(len(s)) {
		t.Fatalf("the delta counts %d entries, the store holds %d", d.Entries, len(s))
	}
}

// restore reads the entries into w in key order, as a store does.
func (s exStore) restore(w *exWriter[int64, countUpdate]) error {
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := w.restore([]byte(k), s[k]); err != nil {
			return err
		}
	}
	w.restored()
	return nil
}

// items is what a batch carries for the exchange, as (number, key) pairs.
func items(b *Batch) []string {
	var out []string
	for _, p := range b.parts {
		for _, it := range p.(*recs[int64, countUpdate]).items {
			out = append(out, fmt.Sprintf("%d:%d:%s", it.Off, it.Key, it.Val.Key))
		}
	}
	return out
}

// exModel is what each fragment downstream must be sendable: every record
// emitted for it, by number.
type exModel struct {
	recs [][]Rec[int64, countUpdate]
}

func (m *exModel) want(d int, from, to int64) []string {
	var out []string
	for _, r := range m.recs[d] {
		if r.Off >= from && r.Off < to {
			out = append(out, fmt.Sprintf("%d:%d:%s", r.Off, r.Key, r.Val.Key))
		}
	}
	return out
}

// An exchange's outputs survive checkpoints and restores: after any run of
// emits, checkpoints, releases and trims, a writer restored from the
// store sends every fragment again exactly the records it was sent from
// where its durable checkpoint may have left it, and its log forgets only
// what every fragment's checkpoint covers.
func TestExchangeCheckpointRoundTrips(t *testing.T) {
	const fragments = 8
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			w := exchangeWriter(t, fragments)
			store := exStore{}
			m := &exModel{recs: make([][]Rec[int64, countUpdate], fragments)}
			applied := make([]int64, fragments) // what each fragment applied
			ends := make([][]int64, fragments)  // the ends of its batches
			for step := range 60 {
				switch rng.IntN(4) {
				case 0, 1:
					for range rng.IntN(3000) {
						v := int64(rng.IntN(40))
						k := fmt.Sprint("k", rng.IntN(100))
						d := shard.Fragment(w.hash(v), fragments)
						m.recs[d] = append(m.recs[d], Rec[int64, countUpdate]{Key: v, Val: countUpdate{Key: k, Value: v}, Off: w.seq})
						w.emit(v, countUpdate{Key: k, Value: v})
					}
				case 2:
					store.checkpoint(t, w)
					w.released(false)
					w.takeDue(func(d int, b *Batch) {
						if b.PrevEnd != applied[d] {
							t.Fatalf("step %d: fragment %d was sent [%d, %d) after %d", step, d, b.PrevEnd, b.End, applied[d])
						}
						if got, want := items(b), m.want(d, b.PrevEnd, b.End); !slices.Equal(got, want) {
							t.Fatalf("step %d: fragment %d was sent %v, want %v", step, d, got, want)
						}
						applied[d] = b.End
						ends[d] = append(ends[d], b.End)
						b.Release()
					})
				case 3:
					// Its durable checkpoint covers one of its batches.
					if d := rng.IntN(fragments); len(ends[d]) > 0 {
						w.trim(d, ends[d][rng.IntN(len(ends[d]))])
					}
				}
				if n := w.retained(); n < 0 || int64(n) > w.seq {
					t.Fatalf("step %d: %d records retained of %d", step, n, w.seq)
				}
			}
			for d := range fragments {
				// What a fragment restored to its durable checkpoint asks for.
				base, _ := w.kept(d)
				b := w.resend(d, base)
				if got, want := items(b), m.want(d, base, b.End); !slices.Equal(got, want) {
					t.Fatalf("fragment %d resent from %d: %v, want %v", d, base, got, want)
				}
				b.Release()
			}
			store.checkpoint(t, w)
			r := exchangeWriter(t, fragments)
			if err := store.restore(r); err != nil {
				t.Fatal(err)
			}
			if r.seq != w.seq {
				t.Fatalf("restored sequence %d, want %d", r.seq, w.seq)
			}
			for d := range fragments {
				base, _ := w.kept(d)
				b := r.resend(d, base)
				if b.End != w.seq {
					t.Fatalf("fragment %d resent up to %d, want %d", d, b.End, w.seq)
				}
				if got, want := items(b), m.want(d, base, w.seq); !slices.Equal(got, want) {
					t.Fatalf("fragment %d resent from %d: %v, want %v", d, base, got, want)
				}
				b.Release()
			}
			// The restored writer checkpoints on: one more round restores
			// the same again.
			store.checkpoint(t, r)
			again := exchangeWriter(t, fragments)
			if err := store.restore(again); err != nil {
				t.Fatal(err)
			}
			if again.retained() != r.retained() {
				t.Fatalf("a second restore retains %d records, the first %d", again.retained(), r.retained())
			}
		})
	}
}

// A fragment whose durable checkpoint covers records it was not sent by
// this writer (it applied them from the writer's copy before a restore)
// is sent only the records after them; the others are sent all theirs —
// whether every fragment takes its records as they are (the split's
// plain loop) or not.
func TestExchangeSplitSkipsCovered(t *testing.T) {
	const fragments = 8
	for seed := range uint64(30) {
		rng := rand.New(rand.NewPCG(seed, 9))
		w := exchangeWriter(t, fragments)
		m := &exModel{recs: make([][]Rec[int64, countUpdate], fragments)}
		emit := func(n int) {
			for range n {
				v := int64(rng.IntN(30))
				d := shard.Fragment(w.hash(v), fragments)
				m.recs[d] = append(m.recs[d], Rec[int64, countUpdate]{Key: v, Val: countUpdate{Key: "k", Value: v}, Off: w.seq})
				w.emit(v, countUpdate{Key: "k", Value: v})
			}
		}
		store := exStore{}
		sent := make([]int64, fragments)
		for round := range 4 {
			emit(rng.IntN(2000))
			store.checkpoint(t, w)
			covered := make([]int64, fragments)
			if round%2 == 1 {
				// Some fragments' checkpoints cover up to a number past
				// what this writer sent them, up to all it made.
				for d := range fragments {
					if rng.IntN(3) == 0 {
						covered[d] = sent[d] + rng.Int64N(w.seq-sent[d]+1)
						w.trim(d, covered[d])
					}
				}
			}
			w.released(false)
			w.takeDue(func(d int, b *Batch) {
				if b.PrevEnd != sent[d] {
					t.Fatalf("seed %d round %d: fragment %d was sent [%d, %d) after %d", seed, round, d, b.PrevEnd, b.End, sent[d])
				}
				if got, want := items(b), m.want(d, max(b.PrevEnd, covered[d]), b.End); !slices.Equal(got, want) {
					t.Fatalf("seed %d round %d: fragment %d (covered to %d) was sent %v, want %v", seed, round, d, covered[d], got, want)
				}
				sent[d] = b.End
				b.Release()
			})
		}
	}
}

// legacyEntry is a records entry in the format of one entry per fragment
// downstream, which checkpoints written before held.
func legacyEntry(t testing.TB, w *exWriter[int64, countUpdate], d int, rs []Rec[int64, countUpdate], to int64) (key, val []byte) {
	t.Helper()
	key = binary.BigEndian.AppendUint16(nil, uint16(w.edge))
	key = append(key, exDestEntry)
	key = binary.BigEndian.AppendUint32(key, uint32(d))
	key = binary.BigEndian.AppendUint64(key, uint64(rs[0].Off))
	val = binary.AppendVarint(nil, to)
	val, err := (&recs[int64, countUpdate]{stage: w.stage, items: rs}).encode(w.fr.plan, val, false)
	if err != nil {
		t.Fatal(err)
	}
	return key, val
}

// A checkpoint in the format before (one records entry per fragment
// downstream) restores: every fragment is sent its records again, and the
// next checkpoint replaces those entries by one.
func TestExchangeRestoresLegacyEntries(t *testing.T) {
	const fragments = 4
	w := exchangeWriter(t, fragments)
	per := make([][]Rec[int64, countUpdate], fragments)
	const n = 50
	for i := range int64(n) {
		d := shard.Fragment(w.hash(i), fragments)
		per[d] = append(per[d], Rec[int64, countUpdate]{Key: i, Val: countUpdate{Key: fmt.Sprint("k", i), Value: i}, Off: i})
	}
	store := exStore{string(w.entryKey(exSeqEntry, 0)): binary.AppendVarint(nil, n)}
	skipped := -1
	for d, rs := range per {
		if len(rs) == 0 {
			continue
		}
		if skipped < 0 {
			skipped = d // its checkpoint covered its records: no entry
			continue
		}
		k, v := legacyEntry(t, w, d, rs, n)
		store[string(k)] = v
	}
	r := exchangeWriter(t, fragments)
	if err := store.restore(r); err != nil {
		t.Fatal(err)
	}
	check := func(r *exWriter[int64, countUpdate]) {
		t.Helper()
		for d, rs := range per {
			b := r.resend(d, 0)
			var want []string
			if d != skipped {
				for _, it := range rs {
					want = append(want, fmt.Sprintf("%d:%d:%s", it.Off, it.Key, it.Val.Key))
				}
			}
			if got := items(b); !slices.Equal(got, want) {
				t.Fatalf("fragment %d resent %v, want %v", d, got, want)
			}
		}
	}
	check(r)
	store.checkpoint(t, r)
	for k := range store {
		if k[2] == exDestEntry {
			t.Fatalf("the checkpoint after a restore kept the entry %x of the format before", k)
		}
	}
	again := exchangeWriter(t, fragments)
	if err := store.restore(again); err != nil {
		t.Fatal(err)
	}
	check(again)
}

// Entries that contradict each other fail the restore with an error that
// says so, never a panic or a silent hole.
func TestExchangeRestoreRejectsContradictions(t *testing.T) {
	w := exchangeWriter(t, 4)
	for range 10 {
		w.emit(3, countUpdate{Key: "a", Value: 3})
	}
	store := exStore{}
	store.checkpoint(t, w)
	for range 10 {
		w.emit(4, countUpdate{Key: "b", Value: 4})
	}
	store.checkpoint(t, w)
	seqKey := string(w.entryKey(exSeqEntry, 0))
	cases := map[string]func(s exStore){
		"no sequence number": func(s exStore) { delete(s, seqKey) },
		"records beyond the sequence number": func(s exStore) {
			s[seqKey] = binary.AppendVarint(nil, 5)
		},
		"overlapping entries": func(s exStore) {
			// The second entry claims to start inside the first.
			k := w.entryKey(w.recKind, 10)
			v := s[string(k)]
			delete(s, string(k))
			s[string(w.entryKey(w.recKind, 5))] = v
		},
		"both formats": func(s exStore) {
			k, v := legacyEntry(t, w, shard.Fragment(w.hash(3), 4), []Rec[int64, countUpdate]{{Key: 3, Val: countUpdate{Key: "a", Value: 3}}}, 1)
			s[string(k)] = v
		},
		"a record for another fragment": func(s exStore) {
			d := (shard.Fragment(w.hash(3), 4) + 1) % 4
			k, v := legacyEntry(t, w, d, []Rec[int64, countUpdate]{{Key: 3, Val: countUpdate{Key: "a", Value: 3}}}, 1)
			for k := range s {
				if k != seqKey {
					delete(s, k)
				}
			}
			s[string(k)] = v
		},
	}
	for name, spoil := range cases {
		t.Run(name, func(t *testing.T) {
			s := exStore{}
			for k, v := range store {
				s[k] = v
			}
			spoil(s)
			err := s.restore(exchangeWriter(t, 4))
			if err == nil || !strings.Contains(err.Error(), "exchange 0") {
				t.Fatalf("restore: %v, want an error about the exchange", err)
			}
		})
	}
}

// A restore of any entry bytes returns an error or a writer that works.
func FuzzExchangeRestore(f *testing.F) {
	w := exchangeWriter(f, 4)
	keys := []string{"a", "bb", "", "ccc"} // repeated: the compact form refers to them
	for i := range int64(30) {
		w.emit(i%7, countUpdate{Key: keys[i%4], Value: i % 7})
	}
	store := exStore{}
	store.checkpoint(f, w)
	for k, v := range store {
		f.Add([]byte(k), v)
	}
	k, v := legacyEntry(f, w, 1, []Rec[int64, countUpdate]{{Key: 1, Val: countUpdate{Key: "a", Value: 1}, Off: 3}}, 30)
	f.Add(k, v)
	old := exchangeWriter(f, 4) // compact entries with every record's number (kind 4)
	old.recKind = exCompactEntry
	for i := range int64(30) {
		old.emit(i%7, countUpdate{Key: keys[i%4], Value: i % 7})
	}
	store = exStore{}
	store.checkpoint(f, old)
	for k, v := range store {
		if k[2] == exCompactEntry {
			f.Add([]byte(k), v)
		}
	}
	f.Add(w.entryKey(exTrimsEntry, 0), []byte{0, 4, 0, 60})        // every fragment's trim point
	f.Add(w.entryKey(exTrimEntry, 2), binary.AppendVarint(nil, 7)) // one, as before
	f.Fuzz(func(t *testing.T, key, val []byte) {
		r := exchangeWriter(t, 4)
		if err := r.restore(r.entryKey(exSeqEntry, 0), binary.AppendVarint(nil, 30)); err != nil {
			t.Fatal(err)
		}
		if err := r.restore(key, val); err != nil {
			return
		}
		r.restored()
		for d := range 4 {
			r.resend(d, 0).Release()
		}
		r.emit(1, countUpdate{Key: "x", Value: 1})
		var d Delta
		if err := r.delta(&d); err != nil {
			t.Fatal(err)
		}
		r.released(false)
		r.takeDue(func(_ int, b *Batch) { b.Release() })
		for d := range 4 {
			r.trim(d, r.seq)
		}
		if r.retained() != 0 {
			t.Fatalf("%d records retained after every fragment covered all", r.retained())
		}
	})
}

// BenchmarkExchange is one fragment's output on an exchange to 64
// fragments, as the two-stage pipeline makes it: records emitted,
// checkpointed, released to their fragments, and trimmed a checkpoint
// later. It reports the time per record. "spread" sends records to every
// fragment, "skewed" to a few (a count of counts: the counts of all keys
// are close).
func BenchmarkExchange(b *testing.B) {
	for _, spread := range []int64{1 << 20, 4} {
		name := "spread"
		if spread < 64 {
			name = "skewed"
		}
		b.Run(name, func(b *testing.B) {
			const perCheckpoint = 4096
			w := exchangeWriter(b, 64)
			keys := make([]string, 1000)
			for i := range keys {
				keys[i] = fmt.Sprint("k", i)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			vals := make([]int64, perCheckpoint)
			sent, prev := make([]int64, 64), make([]int64, 64)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += perCheckpoint {
				for j := range vals {
					vals[j] = int64(i/perCheckpoint) + rng.Int64N(spread)
				}
				for j, v := range vals {
					w.emit(v, countUpdate{Key: keys[j%len(keys)], Value: v})
				}
				var d Delta
				if err := w.delta(&d); err != nil {
					b.Fatal(err)
				}
				w.released(false)
				w.takeDue(func(d int, bt *Batch) {
					sent[d] = bt.End
					bt.Release()
				})
				// Downstream checkpoints cover what they were sent a
				// checkpoint before.
				for d := range prev {
					w.trim(d, prev[d])
				}
				copy(prev, sent)
			}
		})
	}
}

// The compact form of a records entry decodes to the records the log
// holds: keys of any sign and size, a string repeated by pointer, an equal
// string elsewhere, the empty string, and strings longer than a byte's
// length. It is smaller than the form of a batch part.
func TestExchangeCompactEntry(t *testing.T) {
	w := exchangeWriter(t, 64)
	if w.compact == nil || w.recKind != exDenseEntry {
		t.Fatal("no compact form for an int64 key and a plain struct")
	}
	emitCountUpdates(w, 3000, 50, 1)
	for i, r := range [][2]int64{{0, 3000}, {1000, 2049}, {5, 6}, {7, 7}, {0, 3000}, {1000, 2049}} {
		numbered := i >= 4 // kind 4's form, which numbers each record
		head := binary.AppendVarint(nil, r[1])
		val := w.compact.encode(w, head, r[0], r[1], numbered)
		var got []Rec[int64, countUpdate]
		err := w.compact.decode(val[len(head):], int(r[1]-r[0]), r[0], r[1], numbered, func(rec Rec[int64, countUpdate]) { got = append(got, rec) })
		if err != nil {
			t.Fatalf("records [%d, %d): %v", r[0], r[1], err)
		}
		var want []Rec[int64, countUpdate]
		w.runs(r[0], r[1], func(c *exChunk[int64, countUpdate], i, j int, n int64) {
			for k := i; k < j; k++ {
				want = append(want, c.rec(k, n+int64(k-i)))
			}
		})
		if !slices.Equal(got, want) {
			t.Fatalf("records [%d, %d): decoded %v, want %v", r[0], r[1], got, want)
		}
		if r[1]-r[0] > 1000 {
			var part []byte
			var enc recsEncoder
			for i := range want {
				if part, err = w.codec.appendRec(part, &enc, &want[i], 0, false, false); err != nil {
					t.Fatal(err)
				}
			}
			if len(val) >= len(part) {
				t.Fatalf("records [%d, %d): compact form of %d bytes, as a batch part %d", r[0], r[1], len(val), len(part))
			}
		}
	}
}

// A checkpoint whose records entries are in a form before — of a batch
// part (kind 3, before the compact form) or compact with every record's
// number (kind 4) — restores into an exchange that writes the compact form
// of kind 5, and the next checkpoint replaces them by one such entry.
func TestExchangeRestoresPartEntries(t *testing.T) {
	for _, kind := range []byte{exRecordEntry, exCompactEntry} {
		t.Run(fmt.Sprint("kind ", kind), func(t *testing.T) {
			const fragments = 4
			w := exchangeWriter(t, fragments)
			w.recKind = kind // writes as before
			if kind == exRecordEntry {
				w.compact = nil
			}
			per := make([][]string, fragments)
			store := exStore{}
			for i := range int64(120) {
				w.emit(i%9, countUpdate{Key: fmt.Sprint("k", i%5), Value: i % 9})
				d := shard.Fragment(w.hash(i%9), fragments)
				per[d] = append(per[d], fmt.Sprintf("%d:%d:k%d", i, i%9, i%5))
				if i%40 == 39 {
					store.checkpoint(t, w)
				}
			}
			written := 0
			for k := range store {
				if k[2] == kind {
					written++
				}
			}
			if written != 3 {
				t.Fatalf("%d entries of kind %d written, want 3", written, kind)
			}
			check := func(r *exWriter[int64, countUpdate]) {
				t.Helper()
				for d := range fragments {
					if got := items(r.resend(d, 0)); !slices.Equal(got, per[d]) {
						t.Fatalf("fragment %d resent %v, want %v", d, got, per[d])
					}
				}
			}
			r := exchangeWriter(t, fragments)
			if err := store.restore(r); err != nil {
				t.Fatal(err)
			}
			check(r)
			store.checkpoint(t, r)
			compact := 0
			for k := range store {
				switch k[2] {
				case exRecordEntry, exCompactEntry:
					t.Fatalf("the checkpoint after a restore kept the entry %x of the form before", k)
				case exDenseEntry:
					compact++
				}
			}
			if compact != 1 {
				t.Fatalf("%d compact entries, want 1", compact)
			}
			again := exchangeWriter(t, fragments)
			if err := store.restore(again); err != nil {
				t.Fatal(err)
			}
			check(again)
		})
	}
}

// A string table numbers an entry's strings from 1 in the order first
// seen, finds them again by where their bytes are, and forgets them when
// the next entry starts — also when its numbers wrap and it clears, and
// across growing.
func TestExchangeStringTable(t *testing.T) {
	strs := make([]string, 3000)
	for i := range strs {
		strs[i] = fmt.Sprint("s", i)
	}
	tab := newExStrings(1024)
	for round := range 4 {
		switch round {
		case 2:
			tab.base, tab.n = math.MaxUint32/2-100, 0 // a table so used that this entry's numbers pass half the range
		default:
			tab.reset()
		}
		if round == 3 && tab.base != 0 {
			t.Fatalf("base %d after a reset past half the range, want 0", tab.base)
		}
		n := 200 + round*900 // the last rounds grow the table
		for i := range n {
			if got := tab.find(strs[i]); got != 0 {
				t.Fatalf("round %d: new string %d found as %d", round, i, got)
			}
			if got := tab.find(strs[i/2]); got != i/2+1 {
				t.Fatalf("round %d: string %d numbered %d, want %d", round, i/2, got, i/2+1)
			}
		}
		if got := tab.find(strings.Clone(strs[0])); got != 0 {
			t.Fatalf("round %d: equal bytes elsewhere found as %d", round, got)
		}
		if got := tab.find(strs[0][:1]); got != 0 {
			t.Fatalf("round %d: a prefix found as %d", round, got)
		}
	}
}

// Trim points in the format before (an entry per fragment, kind 2)
// restore, and the next checkpoint replaces them by the one entry of all
// trim points (kind 6).
func TestExchangeRestoresTrimEntries(t *testing.T) {
	const fragments = 4
	w := exchangeWriter(t, fragments)
	for i := range int64(40) {
		w.emit(i%9, countUpdate{Key: fmt.Sprint("k", i%5), Value: i % 9})
	}
	store := exStore{}
	store.checkpoint(t, w)
	w.released(false)
	w.takeDue(func(_ int, b *Batch) { b.Release() })
	w.trim(1, 20)
	w.trim(3, 40)
	store.checkpoint(t, w)
	want := []int64{0, 20, 0, 40}
	// The same checkpoint as written before.
	delete(store, string(w.entryKey(exTrimsEntry, 0)))
	for d, base := range want {
		if base > 0 {
			store[string(w.entryKey(exTrimEntry, int64(d)))] = binary.AppendVarint(nil, base)
		}
	}
	check := func(r *exWriter[int64, countUpdate]) {
		t.Helper()
		for d, base := range want {
			if got, _ := r.kept(d); got != base {
				t.Fatalf("fragment %d's records begin at %d, want %d", d, got, base)
			}
		}
	}
	r := exchangeWriter(t, fragments)
	if err := store.restore(r); err != nil {
		t.Fatal(err)
	}
	check(r)
	store.checkpoint(t, r)
	trims := 0
	for k := range store {
		switch k[2] {
		case exTrimEntry:
			t.Fatalf("the checkpoint after a restore kept the trim entry %x of the format before", k)
		case exTrimsEntry:
			trims++
		}
	}
	if trims != 1 {
		t.Fatalf("%d entries of trim points, want 1", trims)
	}
	again := exchangeWriter(t, fragments)
	if err := store.restore(again); err != nil {
		t.Fatal(err)
	}
	check(again)
}

// An entry of count updates (a string, then an int64) is written by a
// loop of its own (encodeStringInt): its bytes are those of the loop over
// the fields, for keys of any sign and size, a string repeated by
// pointer, an equal string elsewhere, the empty string, strings longer
// than a byte's length, and a table that grows within the entry.
func TestExchangeEncodeStringIntAsFields(t *testing.T) {
	w := exchangeWriter(t, 64)
	if w.compact == nil || !w.compact.strInt {
		t.Fatal("count updates are not encoded by encodeStringInt")
	}
	emitCountUpdates(w, 5000, 700, 31)
	for _, r := range [][2]int64{{0, 5000}, {1000, 2049}, {5, 6}, {7, 7}, {1023, 4097}} {
		head := binary.AppendVarint(nil, r[1])
		got := w.compact.encode(w, slices.Clone(head), r[0], r[1], false)
		strs := newExStrings(1024)
		want := w.compact.encodeFields(w, strs, slices.Clone(head), r[0], r[1], false)
		if !bytes.Equal(got, want) {
			t.Fatalf("records [%d, %d): %d bytes, the loop over the fields wrote %d (first difference at %d)",
				r[0], r[1], len(got), len(want), firstDiff(got, want))
		}
	}
}

// emitCountUpdates emits n count updates to w: keys of any sign and
// size, over strs strings (the i-th update's is number i*stride,
// modulo strings), most of them shared by pointer, every eleventh an equal
// copy elsewhere, the empty string among them, and some longer than a
// byte's length.
func emitCountUpdates(w *exWriter[int64, countUpdate], n, strs, stride int) {
	shared := make([]string, strs)
	for i := range shared {
		shared[i] = strings.Repeat(fmt.Sprint("k", i), i%7*30)
	}
	for i := range n {
		v := int64(i*7919%100) - 50
		if i%5 == 0 {
			v = int64(i) << 40
		}
		key := shared[i*stride%len(shared)]
		if i%11 == 0 {
			key = strings.Clone(key) // equal bytes elsewhere
		}
		w.emit(v, countUpdate{Key: key, Value: int64(i) * -3})
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// BenchmarkExchangeEncode is one fragment's records entry of a checkpoint
// interval as the two-stage bench writes it: 11k count updates of 1,560
// keys (each key's updates share its string) in random order, in the
// compact form. It reports the time per record.
func BenchmarkExchangeEncode(b *testing.B) {
	const records, keys = 11_000, 1_560
	w := exchangeWriter(b, 64)
	names := make([]string, keys)
	for i := range names {
		names[i] = fmt.Sprintf("key-%07d", i*64)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range records {
		v := int64(30 + rng.IntN(15))
		w.emit(v, countUpdate{Key: names[rng.IntN(keys)], Value: v})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += records {
		if _, err := w.encodeRange(0, records); err != nil {
			b.Fatal(err)
		}
	}
}
