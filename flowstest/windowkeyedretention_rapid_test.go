package flowstest_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/splice"
)

// A keyed window view holds each window until the watermark passes its
// end by the longer of its retention and the allowed lateness (a
// retention shorter than the lateness included), and answers every
// window, the latest complete one and keys by window as a brute-force
// computation says, over partitions whose event times drift apart, during
// the input and once it ended.
func TestKeyedWindowViewRetentionEqualsReference(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		const delay = 5 * time.Minute
		nparts := rapid.IntRange(1, 3).Draw(rt, "partitions")
		frags := rapid.IntRange(1, 4).Draw(rt, "fragments")
		retain := rapid.SampledFrom([]time.Duration{0, 10 * time.Minute, time.Hour, 2 * time.Hour}).Draw(rt, "retain")
		lateness := rapid.SampledFrom([]time.Duration{0, 10 * time.Minute, 30 * time.Minute}).Draw(rt, "lateness")
		rng := rand.New(rand.NewPCG(rapid.Uint64().Draw(rt, "seed"), 5))
		// Late within the lateness, never too late (see
		// TestKeyedWindowViewExact).
		jitter := delay + lateness/2
		parts := make([][]journey, nparts)
		for p := range parts {
			step := time.Duration(rapid.IntRange(1, 4).Draw(rt, "step (min)")) * time.Minute
			parts[p] = walkJourneys(rng, rapid.IntRange(0, 150).Draw(rt, "journeys"), 5, step, jitter)
		}
		in := flowstest.NewInput[journey](nparts)
		d, err := flowstest.New(odFlow(in, frags, delay, lateness, retain), time.Unix(0, 0))
		if err != nil {
			rt.Fatal(err)
		}
		defer d.Close()
		d.BatchSize = rapid.IntRange(1, 64).Draw(rt, "batch")
		keep := max(retain, lateness)
		refs := map[string]*refOD{"od": newRefOD("od", keep), "od-minutes": newRefOD("od-minutes", keep)}
		st := state{wm: flowcore.NoWatermark, dropWM: flowcore.NoWatermark}
		check := func(when string) {
			// The watermark every fragment passed, as driverState reads it.
			wm := int64(math.MaxInt64)
			for _, f := range d.Freshness() {
				if f.Watermark == nil {
					wm = flowcore.NoWatermark
					break
				}
				wm = min(wm, f.Watermark.UnixNano())
			}
			st.wm = wm
			if wm != math.MaxInt64 {
				st.dropWM = wm
			}
			for view, r := range refs {
				qs := []splice.Query{
					{From: math.MinInt64, Limit: splice.MaxLimit},
					{From: math.MinInt64, Limit: 1000, Latest: true},
					{From: math.MinInt64, Top: 2},
				}
				for _, q := range qs {
					want, werr := r.expect(st, q)
					got, gerr := query(d, view, q)
					if show(got, gerr) != show(want, werr) {
						rt.Fatalf("%s: %s %+v (watermark %v):\ngot  %s\nwant %s", when, view, q, time.Unix(0, st.wm).UTC(),
							show(got, gerr), show(want, werr))
					}
				}
				for _, key := range []string{"z01->z02", "z03->z03"} {
					for _, q := range []splice.Query{{From: math.MinInt64}, {From: math.MinInt64, Latest: true}} {
						want, werr := r.expectKey(st, key, q)
						got, gerr := queryKey(d, view, key, q)
						if show(got, gerr) != show(want, werr) {
							rt.Fatalf("%s: %s key %s %+v:\ngot  %s\nwant %s", when, view, key, q, show(got, gerr), show(want, werr))
						}
					}
				}
			}
		}
		next := make([]int, nparts)
		for step := 0; ; step++ {
			done := true
			for p := range parts {
				n := min(len(parts[p])-next[p], rng.IntN(40))
				in.Push(p, parts[p][next[p]:next[p]+n]...)
				for _, e := range parts[p][next[p] : next[p]+n] {
					for _, r := range refs {
						r.add(e)
					}
				}
				next[p] += n
				done = done && next[p] == len(parts[p])
			}
			if err := d.Drain(); err != nil {
				rt.Fatal(err)
			}
			check(fmt.Sprintf("step %d", step))
			if done {
				break
			}
		}
		// The partitions end one after the other (see
		// TestKeyedWindowViewExact): the last one's watermark may drop
		// windows before it ends too.
		if last := parts[nparts-1]; len(last) > 0 {
			hi := int64(math.MinInt64)
			for _, e := range last {
				hi = max(hi, e.At.UnixNano())
			}
			st.dropWM = max(st.dropWM, hi-int64(delay))
		}
		in.Close()
		if err := d.Drain(); err != nil {
			rt.Fatal(err)
		}
		check("at the end")
	})
}
