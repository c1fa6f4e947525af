package flowcore

import (
	"cmp"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// Process timers kept per key, with one heap entry per key, fire what a
// plain set of timers fires, in its order: by time, then domain (a key's
// own timers before its expiry); keys due at the same time and domain in
// any order. Timers are set, deleted and re-set at random, and fired up to
// random limits, as handlers and watermarks do.
func TestProcTimersFireAsASet(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		pt := newProcTimers[string]()
		model := map[timerKey[string]]bool{}
		keys := []string{"a", "b", "c", "d"}
		domain := rapid.SampledFrom([]TimeDomain{ProcessingTime, EventTime, ttlDomain, waitDomain})
		limit := [2]int64{-1, -1}
		// pick draws one of key k's timers in the model, or is none if
		// it has none.
		pick := func(k string, none timerKey[string]) timerKey[string] {
			var mine []timerKey[string]
			for tk := range model {
				if tk.key == k {
					mine = append(mine, tk)
				}
			}
			if len(mine) == 0 {
				return none
			}
			slices.SortFunc(mine, func(a, b timerKey[string]) int { return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(a.dom, b.dom)) })
			return mine[rapid.IntRange(0, len(mine)-1).Draw(t, "which")]
		}
		for range rapid.IntRange(1, 200).Draw(t, "ops") {
			k := rapid.SampledFrom(keys).Draw(t, "key")
			switch rapid.IntRange(0, 4).Draw(t, "op") {
			case 4:
				// Move one of the key's timers (or one it does not
				// have) to another time, as every event moves an expiry.
				from := pick(k, timerKey[string]{at: 99, key: k, dom: domain.Draw(t, "dom")})
				to := timerKey[string]{at: rapid.Int64Range(0, 40).Draw(t, "to"), key: k, dom: from.dom}
				if h := heapOf(to.dom); to.at <= limit[h] {
					to.at = limit[h] + 1
				}
				pt.move(k, from.dom, from.at, to.at)
				delete(model, from)
				model[to] = true
			case 0, 1:
				tk := timerKey[string]{at: rapid.Int64Range(0, 40).Draw(t, "at"), key: k, dom: domain.Draw(t, "dom")}
				if h := heapOf(tk.dom); tk.at <= limit[h] {
					tk.at = limit[h] + 1 // both would fire it at the next step: keep them comparable
				}
				pt.set(k, tk.dom, tk.at)
				model[tk] = true
			case 2:
				// Delete one of the key's timers, or one it does not have.
				tk := pick(k, timerKey[string]{at: 99, key: k, dom: EventTime})
				pt.del(k, tk.dom, tk.at)
				delete(model, tk)
			case 3:
				h := rapid.IntRange(0, 1).Draw(t, "heap")
				to := limit[h] + rapid.Int64Range(0, 15).Draw(t, "advance")
				limit[h] = to
				var got, want []timerKey[string]
				for len(pt.timers[h]) > 0 && pt.timers[h][0].at <= to {
					if tk, ok := pt.due(h); ok {
						pt.rearmKey(tk.key, tk.pk, h)
						tk.pk = nil // the model's have none
						got = append(got, tk)
					}
				}
				for tk := range model {
					if heapOf(tk.dom) == h && tk.at <= to {
						want = append(want, tk)
						delete(model, tk)
					}
				}
				order := func(a, b timerKey[string]) int {
					return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(a.dom, b.dom), cmp.Compare(a.key, b.key))
				}
				slices.SortFunc(want, order)
				// Keys at one time and domain fire in any order.
				for i := 1; i < len(got); i++ {
					if prev := got[i-1]; prev.at > got[i].at || prev.at == got[i].at && prev.dom > got[i].dom {
						t.Fatalf("fired %+v before %+v", prev, got[i])
					}
				}
				slices.SortFunc(got, order)
				if !slices.Equal(got, want) {
					t.Fatalf("fired %+v, want %+v", got, want)
				}
			}
			n := 0
			for _, pk := range pt.keys {
				n += len(pk.ts)
			}
			if n != len(model) || pt.nkeys > len(pt.keys) {
				t.Fatalf("%d timers pending, want %d (%d keys counted, %d held)", n, len(model), pt.nkeys, len(pt.keys))
			}
		}
	})
}
