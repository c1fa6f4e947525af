package flows

import (
	"cmp"
	"container/heap"
	"encoding/binary"
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
	codec any
	ttl   time.Duration
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
// checkpoints. c must be a Codec of the state type.
func WithStateCodec(c any) StateOption { return StateOption{codec: c} }

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
	ks KeyedStream[K, V]
	op int
	kc KeyCodec[K]
	hs func(K) uint64
	f  *Flow
	vc Codec[V]
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
		fr.timers = append(fr.timers, t)
		ks.subscribe(fr, func(k K, v T) {
			t.expired(k, fr.cur.TS)
			update(t, k, v)
			t.exp.seen(t.idx[k], k, fr.cur.TS)
		})
	})
	return Table[K, V]{op: op, kc: ks.kc, hs: ks.hash, f: f, vc: vc}
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
	return Stream[KV[K, V]]{f: t.f, what: "Updates", side: fragmentSide,
		attach: func(c *core, fn func(KV[K, V])) {
			tb := c.frag.ops[t.op].(*table[K, V])
			tb.subs = append(tb.subs, fn)
		}}
}

// View exposes the table as a keyed view. score, if given, ranks values for
// ?top= queries; numbers rank by value without one.
func (t Table[K, V]) View(name string, score ...func(V) float64) Table[K, V] {
	sc := scorer(t.f, name, score)
	op := t.op
	addKeyedView(t.f, name, t.kc, t.hs, anyCodec(t.vc), func(fr *Fragment, q splice.Query, after *K, only *K) []splice.Entry {
		tb := fr.ops[op].(*table[K, V])
		if only != nil {
			if i, ok := tb.idx[*only]; ok {
				return []splice.Entry{{Key: t.kc.Format(*only), Value: tb.vals[i], Sort: *only}}
			}
			return nil
		}
		return selectKeys(len(tb.keys), func(i int) (K, V) { return tb.keys[i], tb.vals[i] }, q, after, t.kc, sc)
	})
	return t
}

func scorer[V any](f *Flow, view string, score []func(V) float64) func(V) float64 {
	if len(score) > 0 && score[0] != nil {
		return score[0]
	}
	rv := reflect.TypeFor[V]()
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return func(v V) float64 { return float64(reflect.ValueOf(v).Int()) }
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return func(v V) float64 { return float64(reflect.ValueOf(v).Uint()) }
	case reflect.Float32, reflect.Float64:
		return func(v V) float64 { return reflect.ValueOf(v).Float() }
	}
	return nil // ?top= on this view is a bad request
}

// addKeyedView registers a keyed view whose fragments answer with sel:
// the entries for q (after may be nil), or only the key *only.
func addKeyedView[K comparable](f *Flow, name string, kc KeyCodec[K], hash func(K) uint64, vals valueCodec,
	sel func(fr *Fragment, q splice.Query, after *K, only *K) []splice.Entry) {
	if kc == nil {
		return // KeyBy reported the missing codec
	}
	g := f.fragments
	spec := splice.Spec{
		Name: name, Kind: splice.Keyed,
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

// selectKeys picks a fragment's entries for q among n keys: the first
// q.Limit+1 after *after in key order (one more than asked, so the splice
// can tell whether more follow), or the q.Top best by score. It filters and
// ranks in the keys' own types and boxes only what it returns. It returns
// nil for a Top query without a scorer.
func selectKeys[K comparable, V any](n int, at func(int) (K, V), q splice.Query, after *K, kc KeyCodec[K], score func(V) float64) []splice.Entry {
	if q.Top > 0 && score == nil {
		return nil
	}
	type cand struct {
		k K
		v V
		s float64
	}
	var cs []cand
	for i := range n {
		k, v := at(i)
		if q.Prefix != "" && !strings.HasPrefix(kc.Format(k), q.Prefix) {
			continue
		}
		if q.Top <= 0 && after != nil && kc.Compare(k, *after) <= 0 {
			continue
		}
		c := cand{k: k, v: v}
		if q.Top > 0 {
			c.s = score(v)
		}
		cs = append(cs, c)
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
	if len(cs) > limit*4 {
		// Keep the best `limit` with a bounded heap, then sort those.
		h := &candHeap[cand]{less: func(a, b cand) bool { return cmpf(a, b) > 0 }}
		for _, c := range cs {
			if len(h.xs) < limit {
				heap.Push(h, c)
			} else if cmpf(c, h.xs[0]) < 0 {
				h.xs[0] = c
				heap.Fix(h, 0)
			}
		}
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

// Handler is a process function: a per-key state machine with typed state
// S that emits O. OnEvent is called for every event of a key, OnTimer (if
// set) when a timer of the key fires. The Context is valid only during the
// call.
type Handler[K comparable, T, S, O any] struct {
	OnEvent func(c *Context[K, S, O], v T)
	OnTimer func(c *Context[K, S, O], at time.Time)
}

// Context is what a process function sees of its key.
type Context[K comparable, S, O any] struct {
	key K
	op  *procOp[K, S, O]
	fr  *Fragment
	dom TimeDomain // of the firing timer
}

// Key is the current key.
func (c *Context[K, S, O]) Key() K { return c.key }

// State returns the key's state and whether it has any.
func (c *Context[K, S, O]) State() (S, bool) {
	s, ok := c.op.state[c.key]
	return s, ok
}

// SetState replaces the key's state.
func (c *Context[K, S, O]) SetState(s S) {
	c.op.state[c.key] = s
	c.op.dirty[c.key] = struct{}{}
}

// ClearState removes the key's state.
func (c *Context[K, S, O]) ClearState() {
	delete(c.op.state, c.key)
	c.op.dirty[c.key] = struct{}{}
}

// Emit sends an output downstream.
func (c *Context[K, S, O]) Emit(o O) {
	for _, s := range c.op.subs {
		s(o)
	}
}

// Now is the processing time of the current batch or timer.
func (c *Context[K, S, O]) Now() time.Time { return c.fr.now }

// Timestamp is the current event's event time (the zero time for sources
// without event time, and in timers).
func (c *Context[K, S, O]) Timestamp() time.Time {
	if c.fr.cur.TS == 0 {
		return time.Time{}
	}
	return time.Unix(0, c.fr.cur.TS)
}

// Watermark is the fragment's event-time watermark: every event up to it
// has arrived, but for late ones (the zero time before there is one).
func (c *Context[K, S, O]) Watermark() time.Time {
	if wm := c.fr.wms.wm; wm != NoWatermark {
		return time.Unix(0, wm)
	}
	return time.Time{}
}

// TimeDomain says, during OnTimer, whether the timer is an event-time or a
// processing-time one.
func (c *Context[K, S, O]) TimeDomain() TimeDomain { return c.dom }

// TimeDomain is the clock of a timer.
type TimeDomain uint8

const (
	ProcessingTime TimeDomain = iota // fires on the processing-time clock
	EventTime                        // fires when the watermark passes it
)

// SetProcessingTimer asks for OnTimer to be called for this key once the
// processing time reaches at. Setting the same time twice sets one timer.
func (c *Context[K, S, O]) SetProcessingTimer(at time.Time) { c.op.set(c.key, ProcessingTime, at) }

// DeleteProcessingTimer cancels the key's processing-time timer at at.
func (c *Context[K, S, O]) DeleteProcessingTimer(at time.Time) {
	c.op.del(c.key, ProcessingTime, at)
}

// SetEventTimer asks for OnTimer to be called for this key once the
// watermark reaches at. Event-time timers are deterministic: a replay fires
// them at the same point of the stream.
func (c *Context[K, S, O]) SetEventTimer(at time.Time) { c.op.set(c.key, EventTime, at) }

// DeleteEventTimer cancels the key's event-time timer at at.
func (c *Context[K, S, O]) DeleteEventTimer(at time.Time) { c.op.del(c.key, EventTime, at) }

func (p *procOp[K, S, O]) set(k K, dom TimeDomain, at time.Time) {
	t := timerKey[K]{at: at.UnixNano(), key: k, dom: dom}
	if _, ok := p.pending[t]; ok {
		return
	}
	p.pending[t] = struct{}{}
	p.timersDirty = true
	heap.Push(&p.timers[dom], t)
}

func (p *procOp[K, S, O]) del(k K, dom TimeDomain, at time.Time) {
	delete(p.pending, timerKey[K]{at: at.UnixNano(), key: k, dom: dom})
	p.timersDirty = true
}

type timerKey[K comparable] struct {
	at  int64
	key K
	dom TimeDomain
}

type timerHeap[K comparable] []timerKey[K]

func (h timerHeap[K]) Len() int           { return len(h) }
func (h timerHeap[K]) Less(i, j int) bool { return h[i].at < h[j].at }
func (h timerHeap[K]) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap[K]) Push(x any)        { *h = append(*h, x.(timerKey[K])) }
func (h *timerHeap[K]) Pop() any {
	x := (*h)[len(*h)-1]
	*h = (*h)[:len(*h)-1]
	return x
}

type procOp[K comparable, S, O any] struct {
	state       map[K]S
	dirty       map[K]struct{} // keys set or cleared since the last checkpoint
	subs        []func(O)
	timers      [3]timerHeap[K] // per domain (and TTL); may hold deleted timers: pending is the truth
	pending     map[timerKey[K]]struct{}
	timersDirty bool
	ctx         Context[K, S, O]
	onTimer     func(c *Context[K, S, O], at time.Time)
	kc          KeyCodec[K]
	sc          Codec[S]
	ttl         int64       // 0: state never expires
	lastTS      map[K]int64 // with a TTL: each key's latest event time
}

// ttlDomain is the internal timer domain that expires state.
const ttlDomain TimeDomain = 2

// touchTTL moves key k's expiry to its latest event time plus the TTL.
func (p *procOp[K, S, O]) touchTTL(k K, ts int64) {
	last, ok := p.lastTS[k]
	if ok && ts >= satAdd(last, p.ttl) {
		// Expired by event time, whether or not the watermark has said so
		// yet: expiry follows the key's events, not their batching.
		if _, had := p.state[k]; had {
			delete(p.state, k)
			p.dirty[k] = struct{}{}
		}
	}
	if ok && ts <= last {
		return
	}
	if ok {
		p.del(k, ttlDomain, time.Unix(0, last+p.ttl))
	}
	p.lastTS[k] = ts
	p.set(k, ttlDomain, time.Unix(0, ts+p.ttl))
}

// Process state lives in two namespaces: ns for the states, ns+1 for the
// timers, which are rewritten whole when they changed (they are few).
func (p *procOp[K, S, O]) delta(ns uint16, d *Delta) error {
	var err error
	for k := range p.dirty {
		var key []byte
		if key, err = p.kc.Append(nil, k); err != nil {
			return fmt.Errorf("encode key: %w", err)
		}
		s, ok := p.state[k]
		if !ok {
			d.Deletes = append(d.Deletes, StateEntry{Namespace: ns, Key: key})
			continue
		}
		v, err := p.sc.Append(nil, s)
		if err != nil {
			return fmt.Errorf("encode state of key %s: %w", p.kc.Format(k), err)
		}
		d.Puts = append(d.Puts, StateEntry{Namespace: ns, Key: key, Value: v})
	}
	clear(p.dirty)
	if p.timersDirty {
		d.Reset = append(d.Reset, ns+1)
		for t := range p.pending {
			key := binary.BigEndian.AppendUint64([]byte{byte(t.dom)}, uint64(t.at))
			if key, err = p.kc.Append(key, t.key); err != nil {
				return fmt.Errorf("encode timer key: %w", err)
			}
			d.Puts = append(d.Puts, StateEntry{Namespace: ns + 1, Key: key, Value: []byte{}})
		}
		p.timersDirty = false
	}
	d.Entries += int64(len(p.state) + len(p.pending))
	return nil
}

func (p *procOp[K, S, O]) restore(ns uint16, key, val []byte) error {
	if ns%2 == 1 { // timers: domain, time, key
		if len(key) < 9 || key[0] > byte(ttlDomain) {
			return fmt.Errorf("timer key of %d bytes", len(key))
		}
		k, err := p.kc.Decode(key[9:])
		if err != nil {
			return fmt.Errorf("decode timer key: %w", err)
		}
		t := timerKey[K]{at: int64(binary.BigEndian.Uint64(key[1:])), key: k, dom: TimeDomain(key[0])}
		if t.dom == ttlDomain {
			p.lastTS[k] = t.at - p.ttl
		}
		p.pending[t] = struct{}{}
		heap.Push(&p.timers[t.dom], t)
		return nil
	}
	k, err := p.kc.Decode(key)
	if err != nil {
		return fmt.Errorf("decode key: %w", err)
	}
	s, err := p.sc.Decode(val)
	if err != nil {
		return fmt.Errorf("decode state of key %s: %w", p.kc.Format(k), err)
	}
	p.state[k] = s
	return nil
}

func (p *procOp[K, S, O]) fire(fr *Fragment, now time.Time) {
	p.fireDue(fr, ProcessingTime, now.UnixNano())
}

func (p *procOp[K, S, O]) fireEvent(fr *Fragment, wm int64) {
	p.fireDue(fr, EventTime, wm)
	p.fireDue(fr, ttlDomain, wm)
}

// fireDue fires the domain's timers at or before t, in time order.
func (p *procOp[K, S, O]) fireDue(fr *Fragment, dom TimeDomain, t0 int64) {
	h := &p.timers[dom]
	for len(*h) > 0 && (*h)[0].at <= t0 {
		t := heap.Pop(h).(timerKey[K])
		if _, ok := p.pending[t]; !ok {
			continue
		}
		delete(p.pending, t)
		p.timersDirty = true
		if dom == ttlDomain { // the key had no event for the TTL: drop its state
			delete(p.lastTS, t.key)
			if _, ok := p.state[t.key]; ok {
				delete(p.state, t.key)
				p.dirty[t.key] = struct{}{}
			}
			continue
		}
		if p.onTimer == nil {
			continue
		}
		p.fireOne(fr, t)
	}
}

func (p *procOp[K, S, O]) fireOne(fr *Fragment, t timerKey[K]) {
	defer func() {
		if v := recover(); v != nil {
			fr.cur.Offset = -1
			fr.timerErr = append(fr.timerErr, fr.deadLetter(p.kc.Format(t.key), fmt.Sprintf("timer at %s", time.Unix(0, t.at).UTC()), v))
		}
	}()
	p.ctx.key, p.ctx.dom = t.key, t.dom
	fr.cur.TS = 0
	p.onTimer(&p.ctx, time.Unix(0, t.at))
}

// Processed is the result of Process: its output stream and its state.
type Processed[K comparable, S, O any] struct {
	f  *Flow
	op int
	kc KeyCodec[K]
	hs func(K) uint64
	sc Codec[S]
}

// Process runs a per-key state machine over a keyed stream.
func Process[K comparable, T, S, O any](ks KeyedStream[K, T], h Handler[K, T, S, O], opts ...StateOption) Processed[K, S, O] {
	f := ks.f
	if h.OnEvent == nil {
		f.errorf("Process: OnEvent must not be nil")
	}
	sc := stateCodec[S](f, "Process", opts)
	ttl := stateTTL(f, "Process", ks.stage, opts)
	op := f.ops
	f.ops++
	f.fragW = append(f.fragW, func(fr *Fragment) {
		p := &procOp[K, S, O]{state: map[K]S{}, dirty: map[K]struct{}{}, pending: map[timerKey[K]]struct{}{},
			onTimer: h.OnTimer, kc: ks.kc, sc: sc, ttl: ttl, lastTS: map[K]int64{}}
		p.ctx = Context[K, S, O]{op: p, fr: fr}
		fr.ops[op] = p
		fr.timers = append(fr.timers, p)
		ks.subscribe(fr, func(k K, v T) {
			if ttl > 0 {
				p.touchTTL(k, fr.cur.TS)
			}
			p.ctx.key = k
			h.OnEvent(&p.ctx, v)
		})
	})
	return Processed[K, S, O]{f: f, op: op, kc: ks.kc, hs: ks.hash, sc: sc}
}

// Out is the stream of what the process function emits.
func (p Processed[K, S, O]) Out() Stream[O] {
	return Stream[O]{f: p.f, what: "Process", side: fragmentSide,
		attach: func(c *core, fn func(O)) {
			po := c.frag.ops[p.op].(*procOp[K, S, O])
			po.subs = append(po.subs, fn)
		}}
}

// View exposes the process function's state as a keyed view.
func (p Processed[K, S, O]) View(name string, score ...func(S) float64) Processed[K, S, O] {
	sc := scorer(p.f, name, score)
	addKeyedView(p.f, name, p.kc, p.hs, anyCodec(p.sc), func(fr *Fragment, q splice.Query, after *K, only *K) []splice.Entry {
		po := fr.ops[p.op].(*procOp[K, S, O])
		if only != nil {
			if s, ok := po.state[*only]; ok {
				return []splice.Entry{{Key: p.kc.Format(*only), Value: s, Sort: *only}}
			}
			return nil
		}
		keys := make([]K, 0, len(po.state))
		for k := range po.state {
			keys = append(keys, k)
		}
		return selectKeys(len(keys), func(i int) (K, S) { return keys[i], po.state[keys[i]] }, q, after, p.kc, sc)
	})
	return p
}
