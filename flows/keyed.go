package flows

import (
	"cmp"
	"container/heap"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/tessera-streams/tessera/shard"
	"github.com/tessera-streams/tessera/splice"
)

// StateOption configures a stateful operator.
type StateOption struct {
	codec   any
	ttl     time.Duration
	ordered bool
}

// WithStateTTL expires a key's state once the watermark passes its last
// event's time by d, so that per-key state (one per subscriber, say) does
// not grow forever. It needs event time. Process, Reduce, Aggregate and
// Count support it; a table's expired key leaves its view.
func WithStateTTL(d time.Duration) StateOption { return StateOption{ttl: d} }

// stateTTL reads the TTL option for operator op.
func stateTTL(f *Flow, op string, stage int, opts []StateOption) int64 {
	var ttl time.Duration
	for _, o := range opts {
		ttl = max(ttl, o.ttl)
		if o.ttl < 0 {
			f.errorf("%s: negative state TTL %v", op, o.ttl)
		}
	}
	switch {
	case ttl == 0:
	case f.sources[f.stages[stage].source].et == nil:
		f.errorf("%s: WithStateTTL needs a source with event time (flows.WithEventTime)", op)
	}
	return int64(ttl)
}

// WithStateCodec sets the codec of the operator's state type, used by
// checkpoints. Its type must be the operator's state type: a codec of
// another type fails the flow's Validate.
func WithStateCodec[S any](c Codec[S]) StateOption { return StateOption{codec: c} }

func stateCodec[S any](f *Flow, op string, opts []StateOption) Codec[S] {
	for _, o := range opts {
		if o.codec != nil {
			c, ok := o.codec.(Codec[S])
			if !ok {
				f.errorf("%s: state codec %T is not a Codec[%s]", op, o.codec, reflect.TypeFor[S]())
			}
			return c
		}
	}
	c, err := DefaultCodec[S]()
	if err != nil {
		f.errorf("%s: missing codec for state: %v; pass WithStateCodec", op, err)
	}
	return c
}

// KV is a key and its value.
type KV[K comparable, V any] struct {
	Key   K
	Value V
}

// table is keyed state: one slot per key, found with one map lookup, with
// the slots changed since the last checkpoint.
type table[K comparable, V any] struct {
	idx   map[K]int32
	keys  []K
	vals  []V
	mark  []bool           // mark[i]: slot i changed since the last checkpoint
	dirty []int32          // the marked slots
	subs  []func(KV[K, V]) // update subscribers
	kc    KeyCodec[K]
	vc    Codec[V]
	exp   *tableTTL[K] // nil: state never expires
}

func newTable[K comparable, V any](kc KeyCodec[K], vc Codec[V]) *table[K, V] {
	return &table[K, V]{idx: map[K]int32{}, kc: kc, vc: vc}
}

// touch marks slot i changed.
func (t *table[K, V]) touch(i int32) {
	if !t.mark[i] {
		t.mark[i] = true
		t.dirty = append(t.dirty, i)
	}
}

// insert adds k with value v; k must be absent. Operators compute a new
// key's value before inserting it, so that a failing user function leaves
// no trace.
func (t *table[K, V]) insert(k K, v V) {
	i := int32(len(t.keys))
	t.idx[k] = i
	t.keys = append(t.keys, k)
	t.vals = append(t.vals, v)
	t.mark = append(t.mark, true)
	t.dirty = append(t.dirty, i)
	if t.exp != nil {
		t.exp.last = append(t.exp.last, NoWatermark)
		t.exp.queued = append(t.exp.queued, false)
	}
}

func (t *table[K, V]) updated(k K, v V) {
	for _, s := range t.subs {
		s(KV[K, V]{k, v})
	}
}

func (t *table[K, V]) delta(ns uint16, d *Delta) error {
	if t.exp != nil { // expiries moved slots: keep each marked slot once
		live := t.dirty[:0]
		for _, i := range t.dirty {
			if int(i) < len(t.keys) && t.mark[i] {
				t.mark[i] = false
				live = append(live, i)
			}
		}
		for _, i := range live {
			t.mark[i] = true
		}
		t.dirty = live
	}
	var buf []byte
	type span struct{ k0, k1, v1 int }
	spans := make([]span, 0, len(t.dirty))
	var err error
	for _, i := range t.dirty {
		sp := span{k0: len(buf)}
		if buf, err = t.kc.Append(buf, t.keys[i]); err != nil {
			return fmt.Errorf("encode key: %w", err)
		}
		sp.k1 = len(buf)
		if buf, err = t.vc.Append(buf, t.vals[i]); err != nil {
			return fmt.Errorf("encode state of key %s: %w", t.kc.Format(t.keys[i]), err)
		}
		sp.v1 = len(buf)
		spans = append(spans, sp)
	}
	for _, sp := range spans {
		d.Puts = append(d.Puts, StateEntry{Namespace: ns, Key: buf[sp.k0:sp.k1:sp.k1], Value: buf[sp.k1:sp.v1:sp.v1]})
	}
	if t.exp != nil {
		if err := t.ttlDelta(ns+1, d); err != nil {
			return err
		}
	}
	for _, i := range t.dirty {
		t.mark[i] = false
	}
	t.dirty = t.dirty[:0]
	d.Entries += int64(len(t.keys))
	return nil
}

func (t *table[K, V]) restore(ns uint16, key, val []byte) error {
	if ns%2 == 1 {
		if t.exp == nil {
			return fmt.Errorf("state TTL entry for a table without a TTL (the flow changed?)")
		}
		return t.ttlRestore(key, val)
	}
	k, err := t.kc.Decode(key)
	if err != nil {
		return fmt.Errorf("decode key: %w", err)
	}
	v, err := t.vc.Decode(val)
	if err != nil {
		return fmt.Errorf("decode state of key %s: %w", t.kc.Format(k), err)
	}
	if _, dup := t.idx[k]; dup {
		return fmt.Errorf("key %s restored twice", t.kc.Format(k))
	}
	t.insert(k, v)
	t.mark[len(t.mark)-1] = false
	t.dirty = t.dirty[:len(t.dirty)-1]
	return nil
}

// Len is the number of keys.
func (t *table[K, V]) Len() int { return len(t.keys) }

// Table is the keyed state of Reduce, Aggregate or Count: one value per key.
type Table[K comparable, V any] struct {
	stage int
	op    int
	kc    KeyCodec[K]
	hs    func(K) uint64
	f     *Flow
	vc    Codec[V]
}

func newTableOp[K comparable, T, V any](ks KeyedStream[K, T], vc Codec[V], ttl int64, update func(t *table[K, V], k K, v T)) Table[K, V] {
	f := ks.f
	op := f.ops
	f.ops++
	f.fragW = append(f.fragW, func(fr *Fragment) {
		t := newTable[K, V](ks.kc, vc)
		fr.ops[op] = t
		if ttl <= 0 {
			ks.subscribe(fr, func(k K, v T) { update(t, k, v) })
			return
		}
		t.exp = &tableTTL[K]{ttl: ttl}
		fr.addTimers(ks.stage, t)
		ks.subscribe(fr, func(k K, v T) {
			t.expired(k, fr.cur.TS)
			update(t, k, v)
			t.exp.seen(t.idx[k], k, fr.cur.TS)
		})
	})
	return Table[K, V]{stage: ks.stage, op: op, kc: ks.kc, hs: ks.hash, f: f, vc: vc}
}

// Reduce keeps, per key, the first event combined with every later one by
// fn.
func Reduce[K comparable, T any](ks KeyedStream[K, T], fn func(acc, v T) T, opts ...StateOption) Table[K, T] {
	vc := stateCodec[T](ks.f, "Reduce", opts)
	ttl := stateTTL(ks.f, "Reduce", ks.stage, opts)
	return newTableOp(ks, vc, ttl, func(t *table[K, T], k K, v T) {
		if i, ok := t.idx[k]; ok {
			v = fn(t.vals[i], v)
			t.vals[i] = v
			t.touch(i)
		} else {
			t.insert(k, v)
		}
		if t.subs != nil {
			t.updated(k, v)
		}
	})
}

// Aggregate folds every event of a key into an accumulator that starts at
// init().
func Aggregate[K comparable, T, A any](ks KeyedStream[K, T], init func() A, add func(acc A, v T) A, opts ...StateOption) Table[K, A] {
	vc := stateCodec[A](ks.f, "Aggregate", opts)
	ttl := stateTTL(ks.f, "Aggregate", ks.stage, opts)
	if init == nil || add == nil {
		ks.f.errorf("Aggregate: init and add must not be nil")
	}
	return newTableOp(ks, vc, ttl, func(t *table[K, A], k K, v T) {
		var a A
		if i, ok := t.idx[k]; ok {
			a = add(t.vals[i], v)
			t.vals[i] = a
			t.touch(i)
		} else {
			a = add(init(), v)
			t.insert(k, a)
		}
		if t.subs != nil {
			t.updated(k, a)
		}
	})
}

// Count counts the events of every key.
func Count[K comparable, T any](ks KeyedStream[K, T], opts ...StateOption) Table[K, int64] {
	vc, _ := DefaultCodec[int64]()
	ttl := stateTTL(ks.f, "Count", ks.stage, opts)
	return newTableOp(ks, vc, ttl, func(t *table[K, int64], k K, _ T) {
		n := int64(1)
		if i, ok := t.idx[k]; ok {
			t.vals[i]++
			n = t.vals[i]
			t.touch(i)
		} else {
			t.insert(k, n)
		}
		if t.subs != nil {
			t.updated(k, n)
		}
	})
}

// Updates is the stream of the table's changes: the key and its new value,
// after every event.
func (t Table[K, V]) Updates() Stream[KV[K, V]] {
	return Stream[KV[K, V]]{f: t.f, what: "Updates", side: fragmentSide, stage: t.stage,
		attach: func(c *core, fn func(KV[K, V])) {
			tb := c.frag.ops[t.op].(*table[K, V])
			tb.subs = append(tb.subs, fn)
		}}
}

// View exposes the table as a keyed view (see ScoreBy and PublishIf for
// its options).
func (t Table[K, V]) View(name string, opts ...ViewOption[V]) Table[K, V] {
	o := resolveViewOptions(opts)
	op := t.op
	addKeyedView(t.f, name, t.kc, t.hs, anyCodec(t.vc), func(fr *Fragment, q splice.Query, after *K, only *K) []splice.Entry {
		tb := fr.ops[op].(*table[K, V])
		if only != nil {
			if i, ok := tb.idx[*only]; ok && o.publish(tb.vals[i]) {
				return []splice.Entry{{Key: t.kc.Format(*only), Value: tb.vals[i], Sort: *only}}
			}
			return nil
		}
		return selectKeys(len(tb.keys), func(i int) (K, V) { return tb.keys[i], tb.vals[i] }, q, after, t.kc, o)
	})
	return t
}

// addKeyedView registers a keyed view whose fragments answer with sel:
// the entries for q (after may be nil), or only the key *only.
func addKeyedView[K comparable](f *Flow, name string, kc KeyCodec[K], hash func(K) uint64, vals valueCodec,
	sel func(fr *Fragment, q splice.Query, after *K, only *K) []splice.Entry) {
	if kc == nil {
		return // KeyBy reported the missing codec
	}
	spec := keyedSpec(f, name, splice.Keyed, kc, hash)
	f.views = append(f.views, viewDef{spec: spec, vals: vals, parseKey: func(s string) (any, error) { return kc.Parse(s) },
		query: func(fr *Fragment, req splice.Request) (splice.Answer, error) {
			switch req.Op {
			case splice.OpKey:
				k, err := kc.Parse(req.Key)
				if err != nil {
					return splice.Answer{}, err
				}
				return splice.Answer{Entries: sel(fr, req.Query, nil, &k)}, nil
			case splice.OpEntries:
				var after *K
				if req.Query.After != "" {
					k, err := kc.Parse(req.Query.After)
					if err != nil {
						return splice.Answer{}, err
					}
					after = &k
				}
				es := sel(fr, req.Query, after, nil)
				if es == nil && req.Query.Top > 0 {
					return splice.Answer{}, fmt.Errorf("%w: view %q has no score for ?top=", splice.ErrBadRequest, name)
				}
				return splice.Answer{Entries: es}, nil
			}
			return splice.Answer{}, fmt.Errorf("%w: view %q is keyed", splice.ErrBadRequest, name)
		}})
}

// keyedSpec is the spec of a view whose entries are keys of kc, each in
// the fragment its hash names.
func keyedSpec[K comparable](f *Flow, name string, kind splice.Kind, kc KeyCodec[K], hash func(K) uint64) splice.Spec {
	g := f.fragments
	return splice.Spec{
		Name: name, Kind: kind,
		FragmentOf: func(key string) (int, error) {
			k, err := kc.Parse(key)
			if err != nil {
				return 0, fmt.Errorf("key %q: %w", key, err)
			}
			return shard.Fragment(hash(k), g), nil
		},
		CheckAfter: func(key string) error {
			if _, err := kc.Parse(key); err != nil {
				return fmt.Errorf("after %q: %w", key, err)
			}
			return nil
		},
		Compare: func(a, b any) int { return kc.Compare(a.(K), b.(K)) },
	}
}

// selectKeys picks a fragment's entries for q among n keys: the first
// q.Limit+1 after *after in key order (one more than asked, so the splice
// can tell whether more follow), or the q.Top best by score, among the
// entries o publishes. It filters and
// ranks in the keys' own types and boxes only what it returns. It returns
// nil for a Top query without a scorer.
func selectKeys[K comparable, V any](n int, at func(int) (K, V), q splice.Query, after *K, kc KeyCodec[K], o viewOptions[V]) []splice.Entry {
	score := o.score
	if q.Top > 0 && score == nil {
		return nil
	}
	type cand struct {
		k K
		v V
		s float64
	}
	var cmpf func(a, b cand) int
	limit := q.Limit + 1
	if q.Top > 0 {
		limit = q.Top
		cmpf = func(a, b cand) int {
			if c := cmp.Compare(b.s, a.s); c != 0 {
				return c
			}
			return kc.Compare(a.k, b.k)
		}
	} else {
		cmpf = func(a, b cand) int { return kc.Compare(a.k, b.k) }
	}
	// A small limit among many keys keeps the best `limit` in a bounded
	// heap while it scans (a top-10 of a fragment's keys allocates ten
	// candidates, not one per key); else every candidate is sorted.
	bounded := limit*4 < n
	h := &candHeap[cand]{less: func(a, b cand) bool { return cmpf(a, b) > 0 }}
	var cs []cand
	for i := range n {
		k, v := at(i)
		if q.Prefix != "" && !strings.HasPrefix(kc.Format(k), q.Prefix) {
			continue
		}
		if q.Top <= 0 && after != nil && kc.Compare(k, *after) <= 0 {
			continue
		}
		if !o.publish(v) {
			continue
		}
		c := cand{k: k, v: v}
		if q.Top > 0 {
			c.s = score(v)
		}
		switch {
		case !bounded:
			cs = append(cs, c)
		case len(h.xs) < limit:
			heap.Push(h, c)
		case cmpf(c, h.xs[0]) < 0:
			h.xs[0] = c
			heap.Fix(h, 0)
		}
	}
	if bounded {
		cs = h.xs
	}
	slices.SortFunc(cs, cmpf)
	cs = cs[:min(len(cs), limit)]
	out := make([]splice.Entry, len(cs))
	for i, c := range cs {
		out[i] = splice.Entry{Key: kc.Format(c.k), Value: c.v, Score: c.s, Sort: c.k}
	}
	return out
}

type candHeap[T any] struct {
	xs   []T
	less func(a, b T) bool
}

func (h *candHeap[T]) Len() int           { return len(h.xs) }
func (h *candHeap[T]) Less(i, j int) bool { return h.less(h.xs[i], h.xs[j]) }
func (h *candHeap[T]) Swap(i, j int)      { h.xs[i], h.xs[j] = h.xs[j], h.xs[i] }
func (h *candHeap[T]) Push(x any)         { h.xs = append(h.xs, x.(T)) }
func (h *candHeap[T]) Pop() any {
	x := h.xs[len(h.xs)-1]
	h.xs = h.xs[:len(h.xs)-1]
	return x
}

// AggregateView declares a view that every fragment folds the stream into
// with alg, and that queries splice by merging the fragments' partials.
// extract picks the algebra's input from an event. The stream must come
// after KeyBy.
func AggregateView[T, In, P, Out any](s Stream[T], name string, alg splice.Algebra[In, P, Out], extract func(T) In) {
	if !s.ok("AggregateView", alg, extract) {
		return
	}
	f := s.f
	if s.side != fragmentSide {
		f.errorf("aggregate view %q: its stream (%s) must come after KeyBy: every fragment keeps a partial", name, s.what)
		return
	}
	pc, err := DefaultCodec[P]()
	if err != nil {
		f.errorf("aggregate view %q: partials of %s: %v", name, alg.Name(), err)
	}
	op := f.ops
	f.ops++
	f.fragW = append(f.fragW, func(fr *Fragment) {
		st := &aggState[P]{p: alg.Zero(), pc: pc, dirty: true}
		fr.ops[op] = st
		s.attach(&fr.core, func(v T) {
			st.p = alg.Add(st.p, extract(v))
			st.dirty = true
		})
	})
	spec := splice.Spec{Name: name, Kind: splice.Aggregate, Algebra: alg.Name(),
		Splice: func(parts []any) any {
			acc := alg.Zero()
			for _, p := range parts {
				acc = alg.Merge(acc, p.(P))
			}
			return alg.Result(acc)
		}}
	f.views = append(f.views, viewDef{spec: spec, parts: anyCodec(pc), query: func(fr *Fragment, req splice.Request) (splice.Answer, error) {
		if req.Op != splice.OpValue {
			return splice.Answer{}, fmt.Errorf("%w: view %q is an aggregate: it has no keys", splice.ErrBadRequest, name)
		}
		return splice.Answer{Partial: alg.Clone(fr.ops[op].(*aggState[P]).p)}, nil
	}})
}

// aggState is a fragment's partial of an aggregate view: one entry.
type aggState[P any] struct {
	p     P
	pc    Codec[P]
	dirty bool
}

func (a *aggState[P]) delta(ns uint16, d *Delta) error {
	d.Entries++
	if !a.dirty {
		return nil
	}
	v, err := a.pc.Append(nil, a.p)
	if err != nil {
		return fmt.Errorf("encode partial: %w", err)
	}
	d.Puts = append(d.Puts, StateEntry{Namespace: ns, Key: []byte{}, Value: v})
	a.dirty = false
	return nil
}

func (a *aggState[P]) restore(_ uint16, key, val []byte) error {
	p, err := a.pc.Decode(val)
	if err != nil {
		return fmt.Errorf("decode partial: %w", err)
	}
	a.p, a.dirty = p, false
	return nil
}

// Identity returns its argument: the extract function of an aggregate view
// whose algebra takes the events themselves.
func Identity[T any](v T) T { return v }
