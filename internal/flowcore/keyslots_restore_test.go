package flowcore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// Batches decoded through a fragment's Interner ahead of their apply
// (slots, arena) count as batches applied directly, with a TTL table
// registered first on the stage (which removes keys between decode and
// apply), and across a checkpoint restored into a new fragment.
func TestKeySlotsAcrossRestoreAndTTL(t *testing.T) {
	for seed := range uint64(30) {
		rng := rand.New(rand.NewPCG(seed, 7))
		evs := make([]stampedKey, 2000)
		for i := range evs {
			evs[i] = stampedKey{K: fmt.Sprintf("key-%04d", rng.IntN(300)), At: int64(i) * int64(time.Millisecond)}
		}
		f := New("slots", WithFragments(1))
		src := From(f, "in", Source[stampedKey](&stampedSource{evs: evs}), WithEventTime(func(e stampedKey) time.Time { return time.Unix(0, e.At) }, time.Millisecond))
		ks := KeyBy(src, func(e stampedKey) string { return e.K })
		ttlFirst := seed%2 == 0
		if ttlFirst {
			Count(ks, WithStateTTL(20*time.Millisecond)).View("ttl")
		}
		Count(ks).View("counts")
		Count(ks).View("counts2")
		if !ttlFirst {
			Count(ks, WithStateTTL(20*time.Millisecond)).View("ttl")
		}
		plan, err := Compile(f)
		if err != nil {
			t.Fatal(err)
		}
		r, err := plan.OpenReader(0, 0, 0, 1+rng.IntN(100))
		if err != nil {
			t.Fatal(err)
		}
		var encs [][]byte
		for {
			n, err := r.Poll(t.Context(), 1+rng.IntN(100))
			eof := errors.Is(err, io.EOF)
			if err != nil && !eof {
				t.Fatal(err)
			}
			if n > 0 || eof {
				b := r.Take(0)
				enc, err := plan.EncodeBatch(nil, b)
				if err != nil {
					t.Fatal(err)
				}
				encs = append(encs, enc)
			}
			if eof || n == 0 {
				break
			}
		}
		r.Close()
		direct := plan.NewFragment(0)
		fr := plan.NewFragment(0)
		st := stateStore{}
		var pending []*Batch
		for _, enc := range encs {
			b, err := plan.DecodeBatch(enc)
			if err != nil {
				t.Fatal(err)
			}
			if err := direct.Apply(b, b.PrevEnd); err != nil {
				t.Fatal(err)
			}
			d, err := plan.DecodeBatchInterned(enc, fr.Interner())
			if err != nil {
				t.Fatal(err)
			}
			pending = append(pending, d)
			if rng.IntN(3) == 0 {
				continue // decoded ahead
			}
			if rng.IntN(5) == 0 {
				// Checkpoint, restore into a new fragment: the batches
				// pending were decoded against the old one.
				st.take(t, fr)
				nf := st.restore(t, plan)
				fr = nf
			}
			for _, p := range pending {
				if err := fr.Apply(p, p.PrevEnd); err != nil {
					t.Fatal(err)
				}
			}
			pending = pending[:0]
		}
		for _, p := range pending {
			if err := fr.Apply(p, p.PrevEnd); err != nil {
				t.Fatal(err)
			}
		}
		for _, v := range []int{0, 1, 2} {
			a, b := tableMap(direct, v), tableMap(fr, v)
			if fmt.Sprint(a) != fmt.Sprint(b) {
				t.Fatalf("seed %d op %d: %v\nwant %v", seed, v, b, a)
			}
		}
	}
}

// stateStore keeps a fragment's checkpoints as a store does: deltas
// applied in turn, loaded in namespace and key order.
type stateStore map[[2]string][]byte

func (st stateStore) take(t *testing.T, fr *Fragment) {
	d, err := fr.TakeDelta()
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range d.Reset {
		for k := range st {
			if k[0] == fmt.Sprint(ns) {
				delete(st, k)
			}
		}
	}
	for _, e := range d.Deletes {
		delete(st, [2]string{fmt.Sprint(e.Namespace), string(e.Key)})
	}
	for _, e := range d.Puts {
		st[[2]string{fmt.Sprint(e.Namespace), string(e.Key)}] = slices.Clone(e.Value)
	}
}

func (st stateStore) restore(t *testing.T, plan *Plan) *Fragment {
	var es []StateEntry
	for k, v := range st {
		var ns uint16
		fmt.Sscan(k[0], &ns)
		es = append(es, StateEntry{Namespace: ns, Key: []byte(k[1]), Value: v})
	}
	slices.SortFunc(es, func(a, b StateEntry) int {
		if a.Namespace != b.Namespace {
			return int(a.Namespace) - int(b.Namespace)
		}
		return bytes.Compare(a.Key, b.Key)
	})
	fr := plan.NewFragment(0)
	for _, e := range es {
		if err := fr.Restore(e); err != nil {
			t.Fatal(err)
		}
	}
	fr.Restored()
	return fr
}

func tableMap(fr *Fragment, op int) map[string]int64 {
	tb := fr.ops[op].(*table[string, int64])
	m := map[string]int64{}
	for i, k := range tb.keys {
		m[k] = tb.vals[i]
		if j, ok := tb.lookup(k, 0); !ok || j != int32(i) {
			panic("index")
		}
	}
	return m
}
