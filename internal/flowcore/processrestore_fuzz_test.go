package flowcore

import (
	"encoding/binary"
	"fmt"
	"slices"
	"testing"
)

// FuzzProcessRestore feeds a Process the entries of its checkpoints, of
// every form (blocks of rows, states apart, timers per key or per timer),
// well-formed or not: a restore fails with an error, or holds keys whose
// rows, index, states and timers agree, and whose next checkpoint
// restores to the same states and timers.
func FuzzProcessRestore(f *testing.F) {
	kc, sc := testProcCodecs(f)
	newOp := func() *testProcOp { return newTestProcOp(kc, sc, 100) }
	// An input is entries, each a byte of namespace, a byte of key length,
	// the key, a byte of value length and the value.
	frame := func(es ...StateEntry) []byte {
		var b []byte
		for _, e := range es {
			b = append(append(append(b, byte(e.Namespace), byte(len(e.Key))), e.Key...), byte(min(len(e.Value), 255)))
			b = append(b, e.Value[:min(len(e.Value), 255)]...)
		}
		return b
	}
	seed := newOp()
	for i := range 2*procBlock + 5 {
		k := fmt.Sprintf("k%d", i)
		seed.ctx.enter(k, EventTime)
		if i%3 != 0 {
			seed.ctx.SetState(int64(i) * 1000)
		}
		if i%2 == 0 {
			seed.set(k, EventTime, int64(i))
			seed.set(k, ttlDomain, int64(i)+100)
		}
		if i%5 == 1 {
			seed.set(k, EventTime, int64(i)+200)
			seed.set(k, waitDomain, int64(i)+200) // an expiry waiting for it
		}
	}
	var d Delta
	if err := seed.delta(0, &d); err != nil {
		f.Fatal(err)
	}
	f.Add(frame(d.Puts...))
	f.Add(frame(d.Puts[1], d.Puts[0]))
	f.Add(frame(d.Puts[0], d.Puts[0]))
	// The older forms: a state (namespace 0, key = the key); a key's
	// timers (namespace 1, 0xff + the key: their count, then each one's
	// domain and time); a timer alone (domain, 8 bytes of time, the key).
	state := binary.AppendVarint(nil, 7)
	f.Add(frame(StateEntry{Namespace: 0, Key: []byte("\x01a"), Value: state},
		StateEntry{Namespace: 1, Key: []byte("\xff\x01a"), Value: []byte{2, 1, 4, 2, 8}},
		StateEntry{Namespace: 1, Key: append(binary.BigEndian.AppendUint64([]byte{1}, 9), "\x01b"...)}))
	f.Fuzz(func(t *testing.T, in []byte) {
		p := newOp()
		for len(in) > 0 {
			if len(in) < 2 {
				return
			}
			ns, kl := uint16(in[0]), int(in[1])
			if len(in) < 3+kl {
				return
			}
			key := in[2 : 2+kl]
			vl := int(in[2+kl])
			if len(in) < 3+kl+vl {
				return
			}
			val := in[3+kl : 3+kl+vl]
			in = in[3+kl+vl:]
			if ns%2 == 1 && len(key) == 5 && key[0] == procBlockEntry && binary.BigEndian.Uint32(key[1:]) >= 64 {
				// A block's number stands for rows the operator had:
				// a corrupt one asks for as many, which a store's
				// checksums stand between.
				return
			}
			if err := p.restore(ns, key, val); err != nil {
				return
			}
		}
		// The rows and the index agree; states are counted.
		nstate := 0
		for i, r := range p.rows {
			if !r.used {
				if r.has {
					t.Fatalf("row %d: a state and no key", i)
				}
				continue
			}
			if j, ok := p.idx[r.key]; !ok || j != int32(i) {
				t.Fatalf("key %q of row %d indexed at %d, %v", r.key, i, j, ok)
			}
			if r.has {
				nstate++
			}
		}
		if nstate != p.nstate {
			t.Fatalf("%d states held, %d counted", nstate, p.nstate)
		}
		for k, i := range p.idx {
			if int(i) >= len(p.rows) || p.rows[i].key != k || !p.rows[i].used {
				t.Fatalf("key %q indexed at row %d of %d", k, i, len(p.rows))
			}
		}
		// A key set now takes a free row; the next checkpoint restores
		// to what the operator holds.
		p.ctx.enter("new key", EventTime)
		p.ctx.SetState(1)
		var d Delta
		if err := p.delta(0, &d); err != nil {
			t.Fatal(err)
		}
		q := newOp()
		for _, e := range d.Puts {
			if err := q.restore(e.Namespace, e.Key, e.Value); err != nil {
				t.Fatalf("restore of its own checkpoint: %v", err)
			}
		}
		keys := map[string]bool{}
		for k := range p.idx {
			keys[k] = true
		}
		for k := range p.keys {
			keys[k] = true
		}
		for k := range keys {
			ps, pok := p.state(k)
			qs, qok := q.state(k)
			if ps != qs || pok != qok {
				t.Fatalf("state of %q: %d %v, restored %d %v", k, ps, pok, qs, qok)
			}
			if pt, qt := timersOf(p, k), timersOf(q, k); !slices.Equal(pt, qt) {
				t.Fatalf("timers of %q: %v, restored %v", k, pt, qt)
			}
		}
		if len(q.idx) > len(keys) {
			t.Fatalf("%d keys restored of %d", len(q.idx), len(keys))
		}
	})
}
