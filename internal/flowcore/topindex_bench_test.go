package flowcore_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/splice"
)

// countFlow counts words on one fragment, into a view whose table keeps a
// top set (topindex.go).
func countFlow(events, keys int) *flows.Flow {
	in := flowstest.NewInput[string](1)
	rng := rand.New(rand.NewPCG(5, 6))
	for range events {
		in.Push(0, fmt.Sprintf("key-%07d", rng.IntN(keys)))
	}
	in.Close()
	f := flows.New("counts", flows.WithFragments(1))
	flows.Count(flows.KeyBy(flows.From(f, "words", in), func(s string) string { return s })).View("counts")
	return f
}

// BenchmarkCountApply is the time per event of counting into a keyed
// view; run on an older tree, it shows what the view's top set costs the
// ingest.
func BenchmarkCountApply(b *testing.B) {
	const events = 200_000
	benchFragment(b, countFlow(events, 1563), events, nil)
}

// BenchmarkTop10 answers a top-10 of a fragment holding a 64th of 100k
// keys, by a scan (Query) and from the published set (QueryPublished).
func BenchmarkTop10(b *testing.B) {
	plan, err := flowcore.Compile(countFlow(50_000, 1563))
	if err != nil {
		b.Fatal(err)
	}
	fr := plan.NewFragment(0)
	for _, bt := range batches(b, plan, 1024) {
		if err := fr.Apply(bt, bt.PrevEnd); err != nil {
			b.Fatal(err)
		}
	}
	fr.Publish()
	req := splice.Request{View: "counts", Op: splice.OpEntries, Query: splice.Query{Top: 10}}
	b.Run("scan", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := fr.Query(req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("published", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, ok := fr.QueryPublished(req); !ok {
				b.Fatal("not published")
			}
		}
	})
}

// A count's top set, kept by its bulk apply (which skips the changes that
// cannot enter a full set and reads ahead of its lookups), answers what a
// scan answers after every batch, and the counts are the events'.
func TestCountTopFromBatches(t *testing.T) {
	for _, keys := range []int{40, 300, 1563} {
		const events = 40_000
		f := countFlow(events, keys)
		plan, err := flowcore.Compile(f)
		if err != nil {
			t.Fatal(err)
		}
		fr := plan.NewFragment(0)
		answered := 0
		for _, bt := range batches(t, plan, 1024) {
			if err := fr.Apply(bt, bt.PrevEnd); err != nil {
				t.Fatal(err)
			}
			fr.Publish()
			for _, n := range []int{1, 10, 64} {
				req := splice.Request{View: "counts", Op: splice.OpEntries, Query: splice.Query{Top: n}}
				pub, ok := fr.QueryPublished(req)
				if !ok {
					continue // a tie at the set's edge: a scan answers
				}
				answered++
				scan, err := fr.Query(req)
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(pub.Entries) != fmt.Sprint(scan.Entries) {
					t.Fatalf("%d keys, top %d: published %v, scan %v", keys, n, pub.Entries, scan.Entries)
				}
			}
		}
		if answered == 0 {
			t.Fatalf("%d keys: the published set answered no top query", keys)
		}
		all, err := fr.Query(splice.Request{View: "counts", Op: splice.OpEntries, Query: splice.Query{Limit: splice.MaxLimit}})
		if err != nil {
			t.Fatal(err)
		}
		var sum int64
		for _, e := range all.Entries {
			sum += e.Value.(int64)
		}
		if sum != events || len(all.Entries) > keys {
			t.Fatalf("%d keys: %d keys counted %d events, want %d", keys, len(all.Entries), sum, events)
		}
	}
}
