package flowcore

import (
	"cmp"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/splice"
)

// A view's published top set answers what a scan of the table answers,
// through any mix of new keys, rising and falling values, entries that
// stop or start being published and expired keys: at once when the
// change kept the set's invariant, else after one more publish (the
// query that found it invalid asks for it to be built again).
func TestTopIndexMatchesScan(t *testing.T) {
	kc, err := DefaultKeyCodec[string]()
	if err != nil {
		t.Fatal(err)
	}
	rapid.Check(t, func(rt *rapid.T) {
		o := viewOptions[int64]{score: func(v int64) float64 { return float64(v) }}
		if rapid.Bool().Draw(rt, "keep") {
			o.keep = func(v int64) bool { return v%7 != 3 }
		}
		grow := rapid.Bool().Draw(rt, "grow") // values only rise: the set never goes invalid
		tb := newTable[string, int64](kc, nil)
		tb.exp = &tableTTL[string]{}
		x := newTopIndex("v", kc, o)
		tb.tops = append(tb.tops, x)
		pub := tableTop[string, int64]{x, tb}
		nkeys := rapid.IntRange(1, 3*topDepth).Draw(rt, "nkeys")
		check := func(n int) {
			pub.publish()
			got, ok := x.top(n)
			if !ok && !x.cur.Load().valid {
				if grow && o.keep == nil {
					rt.Fatalf("a set of growing values went invalid")
				}
				pub.publish() // the query asked for it
				got, ok = x.top(n)
			}
			want := selectKeys(len(tb.keys), func(i int) (string, int64) { return tb.keys[i], tb.vals[i] }, splice.Query{Top: n}, nil, kc, o)
			if !ok {
				// Only a tie at the set's edge may send the query to a scan.
				p := x.cur.Load()
				lowest := slices.MinFunc(p.cands, func(a, b topCand[string, int64]) int { return cmp.Compare(a.s, b.s) }).s
				if !p.valid || len(p.cands) < topDepth || want[len(want)-1].Score != lowest {
					rt.Fatalf("top %d not answered from a valid set (lowest %v, want %v)", n, lowest, want)
				}
				return
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				rt.Fatalf("top %d: got %v, want %v", n, got, want)
			}
		}
		for range rapid.IntRange(1, 400).Draw(rt, "ops") {
			k := fmt.Sprintf("k%03d", rapid.IntRange(0, nkeys-1).Draw(rt, "key"))
			switch op := rapid.IntRange(0, 9).Draw(rt, "op"); {
			case op < 7:
				v := int64(rapid.IntRange(0, 40).Draw(rt, "val"))
				if i, ok := tb.idx[k]; ok {
					if grow {
						v = tb.vals[i] + v%3
					}
					tb.vals[i] = v
					tb.touch(i)
				} else {
					tb.insert(k, v)
				}
			case op < 8:
				if i, ok := tb.idx[k]; ok && !grow {
					tb.remove(i)
				}
			default:
				check(rapid.IntRange(1, topDepth).Draw(rt, "n"))
			}
		}
		check(topDepth)
	})
}

// Only values a copy cannot share with the table are published.
func TestPlainValue(t *testing.T) {
	type cell struct {
		N    int64
		Name string
		At   [2]float64
	}
	type shared struct {
		N  int64
		Xs []int
	}
	for _, c := range []struct {
		v    any
		want bool
	}{{int64(0), true}, {"", true}, {cell{}, true}, {shared{}, false}, {&cell{}, false}, {map[string]int{}, false}, {time.Time{}, false}} {
		if got := plainValue(reflect.TypeOf(c.v)); got != c.want {
			t.Errorf("plainValue(%T) = %v, want %v", c.v, got, c.want)
		}
	}
}

// Queries read the published set while the driver changes and publishes
// it: no copy is written while read (the race detector checks), and every
// answer is one whole published state — in order, its scores its values,
// and never below what an earlier answer of the same reader showed (the
// values only grow).
func TestTopIndexReadWhilePublishing(t *testing.T) {
	kc, err := DefaultKeyCodec[string]()
	if err != nil {
		t.Fatal(err)
	}
	o := viewOptions[int64]{score: func(v int64) float64 { return float64(v) }}
	tb := newTable[string, int64](kc, nil)
	x := newTopIndex("v", kc, o)
	tb.tops = append(tb.tops, x)
	pub := tableTop[string, int64]{x, tb}
	pub.publish()
	done := make(chan struct{})
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			var best float64
			for {
				select {
				case <-done:
					errs <- nil
					return
				default:
				}
				es, ok := x.top(10)
				if !ok {
					continue // a tie at the set's edge
				}
				for i, e := range es {
					if e.Score != float64(e.Value.(int64)) || (i > 0 && es[i-1].Score < e.Score) {
						errs <- fmt.Errorf("a torn answer: %v", es)
						return
					}
				}
				if len(es) > 0 {
					if es[0].Score < best {
						errs <- fmt.Errorf("the best went back from %v: %v", best, es)
						return
					}
					best = es[0].Score
				}
			}
		})
	}
	for i := range 20000 {
		k := fmt.Sprintf("k%03d", (i*7919)%300)
		if j, ok := tb.idx[k]; ok {
			tb.vals[j] += int64(i % 5)
			tb.touch(j)
		} else {
			tb.insert(k, 1)
		}
		pub.publish()
	}
	close(done)
	wg.Wait()
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
