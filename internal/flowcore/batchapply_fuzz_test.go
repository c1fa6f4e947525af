package flowcore_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/splice"
)

// Batches decoded through a long-lived fragment's Interner (slots, arena)
// apply as the same bytes decoded alone do, decoded one ahead of the other.
func FuzzDecodeApplyInterned(f *testing.F) {
	in := flowstest.NewInput[stamped](1)
	in.Push(0, stamped{"a b", t0}, stamped{"c", t0.Add(time.Second)}, stamped{"", t0.Add(2 * time.Second)}, stamped{"bb ccc", t0.Add(3 * time.Second)},
		stamped{"key-01 key-02 key-011 key-1", t0.Add(4 * time.Second)})
	in.Close()
	plan, err := flowcore.Compile(stampedFlow(in, 1))
	if err != nil {
		f.Fatal(err)
	}
	var seeds [][]byte
	for _, b := range batches(f, plan, 2) {
		enc, err := plan.EncodeBatch(nil, b)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, enc)
		if enc, err = plan.EncodeBatchV2(nil, b); err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, enc)
	}
	for i := range seeds {
		f.Add(seeds[i], seeds[(i+1)%len(seeds)])
	}
	var held, ref *flowcore.Fragment
	fresh := func() { held, ref = plan.NewFragment(0), plan.NewFragment(0) }
	fresh()
	query := func(fr *flowcore.Fragment) string {
		a, err := fr.Query(splice.Request{View: "counts", Op: splice.OpEntries, Query: splice.Query{Limit: 100000}})
		if err != nil {
			return "err " + err.Error()
		}
		return fmt.Sprint(a)
	}
	f.Fuzz(func(t *testing.T, d1, d2 []byte) {
		b1, e1 := plan.DecodeBatch(d1)
		i1, f1 := plan.DecodeBatchInterned(d1, held.Interner())
		b2, e2 := plan.DecodeBatch(d2)
		i2, f2 := plan.DecodeBatchInterned(d2, held.Interner())
		if (e1 == nil) != (f1 == nil) || (e2 == nil) != (f2 == nil) {
			t.Fatalf("%v %v / %v %v", e1, f1, e2, f2)
		}
		for _, p := range [][2]*flowcore.Batch{{b1, i1}, {b2, i2}} {
			if p[0] == nil {
				continue
			}
			ea := ref.Apply(p[0], p[0].PrevEnd)
			eb := held.Apply(p[1], p[1].PrevEnd)
			if (ea == nil) != (eb == nil) {
				t.Fatalf("apply: %v / %v", ea, eb)
			}
			if ea != nil {
				fresh()
				return
			}
			if a, b := query(ref), query(held); a != b {
				t.Fatalf("counts %s, want %s", b, a)
			}
		}
	})
}
