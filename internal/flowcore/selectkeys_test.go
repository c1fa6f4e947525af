package flowcore

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/splice"
)

// selectKeys, which keeps a small limit's best in a bounded heap as it
// scans, picks what sorting every published candidate picks.
func TestSelectKeysMatchesSortingAll(t *testing.T) {
	kc, err := DefaultKeyCodec[string]()
	if err != nil {
		t.Fatal(err)
	}
	rapid.Check(t, func(rt *rapid.T) {
		n := rapid.IntRange(0, 300).Draw(rt, "keys")
		keys := make([]string, n)
		vals := make([]int64, n)
		for i := range keys {
			keys[i] = fmt.Sprintf("k%03d", rapid.IntRange(0, 999).Draw(rt, "key"))
			vals[i] = int64(rapid.IntRange(0, 20).Draw(rt, "val"))
		}
		keys = slices.Compact(slices.Sorted(slices.Values(keys)))
		vals = vals[:len(keys)]
		slices.Reverse(keys) // not in key order
		q := splice.Query{Limit: rapid.IntRange(1, 50).Draw(rt, "limit"), Prefix: rapid.SampledFrom([]string{"", "k0", "k1"}).Draw(rt, "prefix")}
		if rapid.Bool().Draw(rt, "top") {
			q.Top = rapid.IntRange(1, 50).Draw(rt, "n")
		}
		var after *string
		if q.Top == 0 && rapid.Bool().Draw(rt, "after") {
			a := fmt.Sprintf("k%03d", rapid.IntRange(0, 999).Draw(rt, "afterKey"))
			after = &a
		}
		o := viewOptions[int64]{score: func(v int64) float64 { return float64(v) }, keep: func(v int64) bool { return v%7 != 3 }}
		got := selectKeys(len(keys), func(i int) (string, int64) { return keys[i], vals[i] }, q, after, kc, o)

		type kv struct {
			k string
			v int64
		}
		var all []kv
		for i, k := range keys {
			if strings.HasPrefix(k, q.Prefix) && (after == nil || k > *after) && o.publish(vals[i]) {
				all = append(all, kv{k, vals[i]})
			}
		}
		limit := q.Limit + 1
		if q.Top > 0 {
			limit = q.Top
			slices.SortFunc(all, func(a, b kv) int {
				if c := cmp.Compare(b.v, a.v); c != 0 {
					return c
				}
				return strings.Compare(a.k, b.k)
			})
		} else {
			slices.SortFunc(all, func(a, b kv) int { return strings.Compare(a.k, b.k) })
		}
		all = all[:min(len(all), limit)]
		if len(got) != len(all) {
			rt.Fatalf("%d entries, want %d", len(got), len(all))
		}
		for i, e := range got {
			if e.Key != all[i].k || e.Value != all[i].v {
				rt.Fatalf("entry %d: %s=%v, want %s=%d", i, e.Key, e.Value, all[i].k, all[i].v)
			}
		}
	})
}
