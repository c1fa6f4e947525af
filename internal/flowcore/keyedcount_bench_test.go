package flowcore_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/splice"
)

// keySource serves a fixed sequence of keys as one partition, as the
// bench's keyed count reads it (an event carries its key and, every
// 1024th, a latency stamp).
type keySource struct {
	keys []string
	idx  []uint32
	// others, if set, are copies of keys that the second half of the
	// events carry: keys a table took from other strings, as a node's
	// tables take many from other nodes' batches.
	others []string
}

func (s *keySource) Partitions() int { return 1 }

func (s *keySource) Open(_ int, from int64) (flowcore.PartitionReader[keyedEvent], error) {
	return &keyReader{s: s, next: int(from)}, nil
}

type keyReader struct {
	s    *keySource
	next int
}

func (r *keyReader) Read(_ context.Context, b *flowcore.ReadBatch[keyedEvent], max int) error {
	end := min(r.next+max, len(r.s.idx))
	for i := r.next; i < end; i++ {
		e := keyedEvent{K: r.s.keys[r.s.idx[i]]}
		if r.s.others != nil && i >= len(r.s.idx)/2 {
			e.K = r.s.others[r.s.idx[i]]
		}
		if i%1024 == 0 {
			e.T = 1
		}
		b.Events = append(b.Events, e)
		b.Offsets = append(b.Offsets, int64(i))
	}
	r.next = end
	b.End = int64(end)
	if end == len(r.s.idx) {
		return io.EOF
	}
	return nil
}

func (r *keyReader) Close() error { return nil }

// BenchmarkKeyedCount is the bench's keyed count on one goroutine: a
// reader routes 100k keys to 64 fragments in batches of 1024 records, and
// the fragments count them (a view of the counts, and the events with a
// stamp to a sink). It reports the time per event of reading, routing and
// applying together.
func BenchmarkKeyedCount(b *testing.B) { keyedCount(b, false) }

// BenchmarkKeyedCountOtherStrings is BenchmarkKeyedCount with the second
// half of the events carrying copies of the keys, not the strings the
// tables took: their lookups compare the keys' bytes.
func BenchmarkKeyedCountOtherStrings(b *testing.B) { keyedCount(b, true) }

func keyedCount(b *testing.B, others bool) {
	const events, keys, fragments, batch = 2_000_000, 100_000, 64, 1024
	src := &keySource{keys: make([]string, keys), idx: make([]uint32, events)}
	for i := range src.keys {
		src.keys[i] = fmt.Sprintf("key-%07d", i)
	}
	if others {
		src.others = make([]string, keys)
		for i, k := range src.keys {
			src.others[i] = strings.Clone(k)
		}
	}
	rng := rand.New(rand.NewPCG(7, 8))
	for i := range src.idx {
		src.idx[i] = uint32(rng.IntN(keys))
	}
	f := flows.New("keyed-count", flows.WithFragments(fragments))
	ks := flows.KeyBy(flows.From(f, "keys", flows.Source[keyedEvent](src)), func(e keyedEvent) string { return e.K })
	flows.Count(ks).View("counts")
	stamped := 0
	flows.To(flows.Filter(ks.Values(), func(e keyedEvent) bool { return e.T != 0 }),
		flows.SinkFunc[keyedEvent](func(out []flows.Output[keyedEvent]) error { stamped += len(out); return nil }))
	plan, err := flowcore.Compile(f)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		stamped = 0
		frs := make([]*flowcore.Fragment, fragments)
		for i := range frs {
			frs[i] = plan.NewFragment(i)
		}
		r, err := plan.OpenReader(0, 0, 0, batch)
		if err != nil {
			b.Fatal(err)
		}
		apply := func(fi int) {
			bt := r.Take(fi)
			if err := frs[fi].Apply(bt, bt.PrevEnd); err != nil {
				b.Fatal(err)
			}
			bt.Release()
		}
		for {
			_, err := r.Poll(context.Background(), batch)
			eof := errors.Is(err, io.EOF)
			if err != nil && !eof {
				b.Fatal(err)
			}
			for _, fi := range r.Full() {
				apply(fi)
			}
			if eof {
				for fi := range frs {
					apply(fi)
				}
				break
			}
		}
		if want := (events + 1023) / 1024; stamped != want {
			b.Fatalf("%d stamped events, want %d", stamped, want)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*events), "ns/event")
	// The process's CPU time: on a shared machine, wall time says more
	// about the neighbours.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N*events), "cpu-ns/event")
}

// cpuTime is the process's user and system CPU time, in ns.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// A table applies a batch's records at once when nobody subscribed to its
// updates, and record by record otherwise: both apply exactly the records
// at or past the batch's min, as every record subscriber sees them.
func TestTablesApplyRecordsFromMin(t *testing.T) {
	in := flowstest.NewInput[keyedEvent](1)
	for i := range 500 {
		in.Push(0, keyedEvent{K: fmt.Sprintf("k%d", i%7), T: int64(i)})
	}
	in.Close()
	f := flows.New("min", flows.WithFragments(1))
	ks := flows.KeyBy(flows.From(f, "events", in), func(e keyedEvent) string { return e.K })
	flows.Count(ks).View("bulk")
	flows.Aggregate(ks, func() int64 { return 0 }, func(a int64, e keyedEvent) int64 { return a + 1 }).View("agg")
	each := flows.Count(ks).View("each")
	updates := 0
	flows.To(each.Updates(), flows.SinkFunc[flows.KV[string, int64]](func(out []flows.Output[flows.KV[string, int64]]) error {
		updates += len(out)
		return nil
	}))
	seen := 0
	flows.To(ks.Values(), flows.SinkFunc[keyedEvent](func(out []flows.Output[keyedEvent]) error { seen += len(out); return nil }))
	plan, err := flowcore.Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	fr := plan.NewFragment(0)
	want := map[string]int64{}
	applied := 0
	for _, bt := range batches(t, plan, 64) {
		min := bt.PrevEnd + (bt.End-bt.PrevEnd)/3 // the first third was applied before
		for off := min; off < bt.End; off++ {
			want[fmt.Sprintf("k%d", off%7)]++
			applied++
		}
		if err := fr.Apply(bt, min); err != nil {
			t.Fatal(err)
		}
	}
	if applied == 0 || seen != applied || updates != applied {
		t.Fatalf("%d records applied, values saw %d, updates %d", applied, seen, updates)
	}
	for _, view := range []string{"bulk", "agg", "each"} {
		a, err := fr.Query(splice.Request{View: view, Op: splice.OpEntries, Query: splice.Query{Limit: splice.MaxLimit}})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int64{}
		for _, e := range a.Entries {
			got[e.Key] = e.Value.(int64)
		}
		if !maps.Equal(got, want) {
			t.Errorf("%s = %v, want %v", view, got, want)
		}
	}
}
