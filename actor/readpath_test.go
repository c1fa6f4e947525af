package actor

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/splice"
)

// A ?top= query reads each fragment's published best entries without its
// lock, while the input runs (the race detector watches) and after it:
// then every fragment's answer is the one a scan under its lock gives, and
// the spliced top-n is the best n of every entry.
func TestTopReadsThePublishedSets(t *testing.T) {
	t.Parallel() // no remote in this process (see TestMain)
	src, _ := gen.New(gen.Config{Partitions: 2, Seed: 3, Events: 200_000}, word)
	e, err := Start(countFlow(t, src, ""), Config{Logger: quiet(), BatchSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	ctx := context.Background()
	for e.Readers()[0].Position.Load() < 100_000 {
		if _, err := splice.Evaluate(ctx, e, splice.Request{View: "words", Op: splice.OpEntries, Query: splice.Query{Top: 10}}); err != nil {
			t.Fatal(err)
		}
	}
	waitDrained(t, e)

	l := e.layout.Load()
	published := 0
	for _, n := range []int{1, 3, 10, 64} {
		req := splice.Request{View: "words", Op: splice.OpEntries, Query: splice.Query{Top: n}}
		for _, st := range l.fstats {
			fa := st.fa
			fast, ok := fa.queryPublished(req)
			if !ok {
				continue
			}
			published++
			fa.mu.RLock()
			want, err := fa.m.Fragment().Query(req)
			fa.mu.RUnlock()
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(fast.Entries) != fmt.Sprint(want.Entries) {
				t.Fatalf("fragment %d, top %d: published %v, scanned %v", st.ID, n, fast.Entries, want.Entries)
			}
		}
		res, err := splice.Evaluate(ctx, e, req)
		if err != nil {
			t.Fatal(err)
		}
		all, err := splice.Evaluate(ctx, e, splice.Request{View: "words", Op: splice.OpEntries, Query: splice.Query{Limit: 1000}})
		if err != nil {
			t.Fatal(err)
		}
		best := slices.Clone(all.Entries)
		slices.SortFunc(best, func(a, b splice.Entry) int {
			if c := cmp.Compare(b.Value.(int64), a.Value.(int64)); c != 0 {
				return c
			}
			return cmp.Compare(a.Key, b.Key)
		})
		best = best[:n]
		if len(res.Entries) != n {
			t.Fatalf("top %d: %d entries", n, len(res.Entries))
		}
		for i := range best {
			if res.Entries[i].Key != best[i].Key || res.Entries[i].Value != best[i].Value {
				t.Fatalf("top %d: %v, want %v", n, res.Entries, best)
			}
		}
	}
	// A fragment in the middle of a message (a tick) sends the query to
	// its lock; most are not.
	if published*2 < 4*len(l.fstats) {
		t.Fatalf("only %d of %d fragment answers came from the published sets", published, 4*len(l.fstats))
	}
}
