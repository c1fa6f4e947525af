package flowcore

import (
	"fmt"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// A Process's states and timers, changed, cleared and fired at random
// with checkpoints between, read as a plain map of states says, and its
// checkpoints, applied in turn to a store, hold as many entries as they
// say and restore to the same states and timers; the run goes on from the
// restored operator at times, as after a crash.
func TestProcessCheckpointsRestoreStatesAndTimers(t *testing.T) {
	kc, sc := testProcCodecs(t)
	newOp := func() *testProcOp { return newTestProcOp(kc, sc, 0) }
	rapid.Check(t, func(t *rapid.T) {
		p := newOp()
		model := map[string]int64{}
		store := map[[2]string][]byte{} // namespace (as a string), key
		// A few keys changed often, and enough others to fill several
		// blocks of rows (procBlock), with rows freed between.
		hot := []string{"a", "b", "c", "d", "e"}
		keys := slices.Clone(hot)
		for i := range 3 * procBlock {
			keys = append(keys, fmt.Sprintf("k%d", i))
		}
		var wm int64
		for range rapid.IntRange(1, 300).Draw(t, "ops") {
			k := rapid.SampledFrom(hot).Draw(t, "hot key")
			if rapid.Bool().Draw(t, "cold") {
				k = rapid.SampledFrom(keys).Draw(t, "key")
			}
			switch rapid.IntRange(0, 7).Draw(t, "op") {
			case 0, 1:
				v := rapid.Int64Range(0, 100).Draw(t, "state")
				p.ctx.enter(k, EventTime)
				if rapid.Bool().Draw(t, "read first") {
					s, ok := p.ctx.State()
					if m, mok := model[k]; ok != mok || s != m {
						t.Fatalf("state of %s: %d %v, want %d %v", k, s, ok, m, mok)
					}
				}
				p.ctx.SetState(v)
				model[k] = v
			case 2:
				p.ctx.enter(k, EventTime)
				p.ctx.ClearState()
				delete(model, k)
			case 3:
				at := wm + rapid.Int64Range(1, 20).Draw(t, "at")
				p.ctx.enter(k, EventTime)
				p.set(k, EventTime, at)
			case 4:
				if ts := timersOf(p, k); len(ts) > 0 {
					x := ts[rapid.IntRange(0, len(ts)-1).Draw(t, "which")]
					p.del(k, x.dom, x.at)
				}
			case 5:
				// The watermark moves: timers due fire, and their
				// handler clears the state or not.
				wm += rapid.Int64Range(0, 10).Draw(t, "advance")
				for len(p.timers[1]) > 0 && p.timers[1][0].at <= wm {
					tk, ok := p.due(1)
					if !ok {
						continue
					}
					if rapid.Bool().Draw(t, "clear at timer") {
						p.ctx.enter(tk.key, EventTime)
						p.ctx.ClearState()
						delete(model, tk.key)
					}
					p.rearmKey(tk.key, tk.pk, 1)
				}
			case 6, 7:
				var d Delta
				if err := p.delta(0, &d); err != nil {
					t.Fatal(err)
				}
				for _, ns := range d.Reset {
					for sk := range store {
						if sk[0] == string(rune(ns)) {
							delete(store, sk)
						}
					}
				}
				for _, e := range d.Deletes {
					delete(store, [2]string{string(rune(e.Namespace)), string(e.Key)})
				}
				for _, e := range d.Puts {
					store[[2]string{string(rune(e.Namespace)), string(e.Key)}] = slices.Clone(e.Value)
				}
				if int64(len(store)) != d.Entries {
					t.Fatalf("store of %d entries, the checkpoint says %d", len(store), d.Entries)
				}
				q := newOp()
				for sk, v := range store {
					if err := q.restore(uint16([]rune(sk[0])[0]), []byte(sk[1]), v); err != nil {
						t.Fatal(err)
					}
				}
				for _, k := range keys {
					s, ok := q.state(k)
					if m, mok := model[k]; ok != mok || s != m {
						t.Fatalf("restored state of %s: %d %v, want %d %v", k, s, ok, m, mok)
					}
					if got, want := timersOf(q, k), timersOf(p, k); !slices.Equal(got, want) {
						t.Fatalf("restored timers of %s: %v, want %v", k, got, want)
					}
				}
				if rapid.Bool().Draw(t, "go on restored") {
					p = q
				}
			}
			for _, k := range keys {
				s, ok := p.state(k)
				if m, mok := model[k]; ok != mok || s != m {
					t.Fatalf("state of %s: %d %v, want %d %v", k, s, ok, m, mok)
				}
			}
			if p.nstate != len(model) {
				t.Fatalf("%d states counted, %d held", p.nstate, len(model))
			}
		}
	})
}

// testProcOp is a Process of string keys and int64 states, driven
// directly (testProcOp.ctx) by the tests of its rows and checkpoints.
type testProcOp = procOp[string, int64, string]

func testProcCodecs(t testing.TB) (KeyCodec[string], Codec[int64]) {
	t.Helper()
	kc, err := DefaultKeyCodec[string]()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := DefaultCodec[int64]()
	if err != nil {
		t.Fatal(err)
	}
	return kc, sc
}

func newTestProcOp(kc KeyCodec[string], sc Codec[int64], ttl int64) *testProcOp {
	p := &testProcOp{idx: map[string]int32{}, procTimers: newProcTimers[string](), kc: kc, sc: sc, lastTS: map[string]int64{}, ttl: ttl}
	p.ctx = Context[string, int64, string]{op: p, fr: &Fragment{}, slot: -1}
	return p
}

// timersOf is key k's timers, sorted.
func timersOf(p *testProcOp, k string) []procTimer {
	pk := p.keys[k]
	if pk == nil {
		return nil
	}
	ts := slices.Clone(pk.ts)
	slices.SortFunc(ts, func(a, b procTimer) int {
		if a.less(b) {
			return -1
		}
		if b.less(a) {
			return 1
		}
		return 0
	})
	return ts
}
