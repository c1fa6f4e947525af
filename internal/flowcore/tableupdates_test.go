package flowcore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// stampedKey is an event with a key and an event time.
type stampedKey struct {
	K  string
	At int64
}

// stampedSource serves events as one partition, a few at a time.
type stampedSource struct{ evs []stampedKey }

func (s *stampedSource) Partitions() int { return 1 }

func (s *stampedSource) Open(_ int, from int64) (PartitionReader[stampedKey], error) {
	return &stampedReader{s: s, next: int(from)}, nil
}

type stampedReader struct {
	s    *stampedSource
	next int
}

func (r *stampedReader) Read(_ context.Context, b *ReadBatch[stampedKey], max int) error {
	end := min(r.next+max, len(r.s.evs))
	for i := r.next; i < end; i++ {
		b.Events = append(b.Events, r.s.evs[i])
		b.Offsets = append(b.Offsets, int64(i))
	}
	r.next = end
	b.End = int64(end)
	if end == len(r.s.evs) {
		return io.EOF
	}
	return nil
}

func (r *stampedReader) Close() error { return nil }

// updatesFlow counts (or aggregates) per key and re-keys every update by
// its value; the updates also go to a sink that keeps their ids. With
// each, the keyed stage has a second subscriber, which makes the table
// apply its records one by one; without, it applies them in bulk.
// panicAt makes the re-keying panic at the update to that value.
type updatesFlow struct {
	plan  *Plan
	stage int
	seen  *[]string
}

func newUpdatesFlow(t *testing.T, src Source[stampedKey], aggregate, each bool, panicAt int64) updatesFlow {
	t.Helper()
	f := New("updates", WithFragments(1))
	in := From(f, "in", src, WithEventTime(func(e stampedKey) time.Time { return time.Unix(0, e.At) }, time.Hour))
	ks := KeyBy(in, func(e stampedKey) string { return e.K })
	var tb Table[string, int64]
	if aggregate {
		tb = Aggregate(ks, func() int64 { return 0 }, func(a int64, e stampedKey) int64 { return a + 1 + e.At%2 })
	} else {
		tb = Count(ks)
	}
	Count(KeyBy(tb.Updates(), func(kv KV[string, int64]) int64 {
		if kv.Value == panicAt {
			panic(fmt.Sprintf("update %s=%d", kv.Key, kv.Value))
		}
		return kv.Value
	}))
	seen := new([]string)
	To(tb.Updates(), SinkFunc[KV[string, int64]](func(out []Output[KV[string, int64]]) error {
		for _, o := range out {
			*seen = append(*seen, fmt.Sprintf("%+v %s=%d", o.ID, o.Value.Key, o.Value.Value))
		}
		return nil
	}))
	if each {
		To(ks.Values(), SinkFunc[stampedKey](func([]Output[stampedKey]) error { return nil }))
	}
	plan, err := Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	return updatesFlow{plan: plan, stage: ks.stage, seen: seen}
}

// run applies the source's batches to the flow's fragment, each from a
// min that leaves out a random head (applied before, as after a replay),
// and returns what the exchange sent, record by record with its number
// and event time, the sink's outputs and the error of the first batch
// that failed.
func (u updatesFlow) run(t *testing.T, seed uint64) (sent, seen []string, applyErr error) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 3))
	r, err := u.plan.OpenReader(0, 0, 0, 64)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fr := u.plan.NewFragment(0)
	release := func() {
		if _, err := fr.TakeDelta(); err != nil {
			t.Fatal(err)
		}
		if err := fr.Released(); err != nil {
			t.Fatal(err)
		}
		fr.TakeOutputs(func(_ int, b *Batch) {
			for _, p := range b.parts {
				p := p.(*recs[int64, KV[string, int64]])
				for i, it := range p.items {
					sent = append(sent, fmt.Sprintf("%d %d@%d %s=%d", it.Off, it.Key, p.ts[i], it.Val.Key, it.Val.Value))
				}
			}
			b.Release()
		})
	}
	for {
		n, err := r.Poll(context.Background(), 1+rng.IntN(100))
		eof := errors.Is(err, io.EOF)
		if err != nil && !eof {
			t.Fatal(err)
		}
		if r.Due(0) || eof || n == 0 {
			b := r.Take(0)
			min := b.PrevEnd + rng.Int64N(b.End-b.PrevEnd+1)/2
			if err := fr.Apply(b, min); err != nil {
				return sent, *u.seen, err
			}
			if rng.IntN(3) == 0 {
				release()
			}
		}
		if eof || n == 0 {
			release()
			return sent, *u.seen, nil
		}
	}
}

// A table whose updates are subscribed to applies a batch in bulk when it
// is its stage's one subscriber, and record by record when the stage has
// another: both make the same updates with the same ids, numbers and
// event times, from the same records at or past a batch's min, and a
// re-keying that panics is reported at the same record.
func TestTableUpdatesInBulkAsRecordByRecord(t *testing.T) {
	for seed := range uint64(10) {
		rng := rand.New(rand.NewPCG(seed, 5))
		var evs []stampedKey
		for i := range 300 + rng.IntN(500) {
			// Runs of one key, and several keys.
			k := fmt.Sprintf("k%d", rng.IntN(1+rng.IntN(12)))
			evs = append(evs, stampedKey{K: k, At: int64(1000 + i*10 + rng.IntN(30))})
		}
		src := &stampedSource{evs: evs}
		for _, aggregate := range []bool{false, true} {
			for _, panicAt := range []int64{-1, 5 + rng.Int64N(20)} {
				name := fmt.Sprintf("seed %d aggregate %v panic at %d", seed, aggregate, panicAt)
				bulk := newUpdatesFlow(t, src, aggregate, false, panicAt)
				each := newUpdatesFlow(t, src, aggregate, true, panicAt)
				bSent, bSeen, bErr := bulk.run(t, seed)
				eSent, eSeen, eErr := each.run(t, seed)
				if (panicAt < 0) != (bErr == nil) || fmt.Sprint(bErr) != fmt.Sprint(eErr) {
					t.Fatalf("%s: the bulk apply failed with %v, record by record with %v", name, bErr, eErr)
				}
				if bErr != nil && !strings.Contains(bErr.Error(), "update k") {
					t.Fatalf("%s: the failure does not name the update: %v", name, bErr)
				}
				if panicAt < 0 && (len(bSent) == 0 || len(bSeen) != len(bSent)) {
					t.Fatalf("%s: %d updates sent on, %d seen by the sink", name, len(bSent), len(bSeen))
				}
				if !slices.Equal(bSent, eSent) {
					t.Fatalf("%s: the exchange sent\n%v\nin bulk, and record by record\n%v", name, first(bSent, eSent), first(eSent, bSent))
				}
				if !slices.Equal(bSeen, eSeen) {
					t.Fatalf("%s: the sink saw\n%v\nin bulk, and record by record\n%v", name, first(bSeen, eSeen), first(eSeen, bSeen))
				}
				st := bulk.plan.NewFragment(0).stages[bulk.stage].(*fragStage[string, stampedKey])
				if bulk, _ := st.split(); len(bulk) != 1 {
					t.Fatalf("%s: the table is not applied in bulk", name)
				}
				st = each.plan.NewFragment(0).stages[each.stage].(*fragStage[string, stampedKey])
				if bulk, _ := st.split(); len(bulk) != 0 {
					t.Fatalf("%s: with two subscribers, the table is applied in bulk", name)
				}
			}
		}
	}
}

// first is a's elements from the first where it differs from b on, a few.
func first(a, b []string) []string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return a[i:min(len(a), i+3)]
}
