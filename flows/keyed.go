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
type StateOption struct{ codec any }

// WithStateCodec sets the codec of the operator's state type, used by
// checkpoints. c must be a Codec of the state type.
func WithStateCodec(c any) StateOption { return StateOption{codec: c} }

func checkStateCodec[S any](f *Flow, op string, opts []StateOption) {
	for _, o := range opts {
		if o.codec != nil {
			if _, ok := o.codec.(Codec[S]); !ok {
				f.errorf("%s: state codec %T is not a Codec[%s]", op, o.codec, reflect.TypeFor[S]())
			}
			return
		}
	}
	if _, err := DefaultCodec[S](); err != nil {
		f.errorf("%s: missing codec for state: %v; pass WithStateCodec", op, err)
	}
}

// KV is a key and its value.
type KV[K comparable, V any] struct {
	Key   K
	Value V
}

// table is keyed state: one slot per key, found with one map lookup.
type table[K comparable, V any] struct {
	idx  map[K]int32
	keys []K
	vals []V
	subs []func(KV[K, V]) // update subscribers
}

func newTable[K comparable, V any]() *table[K, V] { return &table[K, V]{idx: map[K]int32{}} }

// get returns the value slot of k, if present.
func (t *table[K, V]) get(k K) (*V, bool) {
	if i, ok := t.idx[k]; ok {
		return &t.vals[i], true
	}
	return nil, false
}

// insert adds k with value v; k must be absent. Operators compute a new
// key's value before inserting it, so that a failing user function leaves
// no trace.
func (t *table[K, V]) insert(k K, v V) {
	t.idx[k] = int32(len(t.keys))
	t.keys = append(t.keys, k)
	t.vals = append(t.vals, v)
}

func (t *table[K, V]) updated(k K, v V) {
	for _, s := range t.subs {
		s(KV[K, V]{k, v})
	}
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
}

func newTableOp[K comparable, T, V any](ks KeyedStream[K, T], name string, update func(t *table[K, V], k K, v T)) Table[K, V] {
	f := ks.f
	op := f.ops
	f.ops++
	f.fragW = append(f.fragW, func(fr *Fragment) {
		t := newTable[K, V]()
		fr.ops[op] = t
		ks.subscribe(fr, func(k K, v T) { update(t, k, v) })
	})
	return Table[K, V]{op: op, kc: ks.kc, hs: ks.hash, f: f}
}

// Reduce keeps, per key, the first event combined with every later one by
// fn.
func Reduce[K comparable, T any](ks KeyedStream[K, T], fn func(acc, v T) T, opts ...StateOption) Table[K, T] {
	checkStateCodec[T](ks.f, "Reduce", opts)
	return newTableOp(ks, "Reduce", func(t *table[K, T], k K, v T) {
		if p, ok := t.get(k); ok {
			*p = fn(*p, v)
			v = *p
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
	checkStateCodec[A](ks.f, "Aggregate", opts)
	if init == nil || add == nil {
		ks.f.errorf("Aggregate: init and add must not be nil")
	}
	return newTableOp(ks, "Aggregate", func(t *table[K, A], k K, v T) {
		var a A
		if p, ok := t.get(k); ok {
			*p = add(*p, v)
			a = *p
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
func Count[K comparable, T any](ks KeyedStream[K, T]) Table[K, int64] {
	return newTableOp(ks, "Count", func(t *table[K, int64], k K, _ T) {
		n := int64(1)
		if p, ok := t.get(k); ok {
			*p++
			n = *p
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
	addKeyedView(t.f, name, t.kc, t.hs, func(fr *Fragment, q splice.Query, after *K, only *K) []splice.Entry {
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
func addKeyedView[K comparable](f *Flow, name string, kc KeyCodec[K], hash func(K) uint64,
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
	f.views = append(f.views, viewDef{spec: spec, query: func(fr *Fragment, req splice.Request) (splice.Answer, error) {
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
	op := f.ops
	f.ops++
	f.fragW = append(f.fragW, func(fr *Fragment) {
		st := &aggState[P]{p: alg.Zero()}
		fr.ops[op] = st
		s.attach(&fr.core, func(v T) { st.p = alg.Add(st.p, extract(v)) })
	})
	spec := splice.Spec{Name: name, Kind: splice.Aggregate, Algebra: alg.Name(),
		Splice: func(parts []any) any {
			acc := alg.Zero()
			for _, p := range parts {
				acc = alg.Merge(acc, p.(P))
			}
			return alg.Result(acc)
		}}
	f.views = append(f.views, viewDef{spec: spec, query: func(fr *Fragment, req splice.Request) (splice.Answer, error) {
		if req.Op != splice.OpValue {
			return splice.Answer{}, fmt.Errorf("%w: view %q is an aggregate: it has no keys", splice.ErrBadRequest, name)
		}
		return splice.Answer{Partial: alg.Clone(fr.ops[op].(*aggState[P]).p)}, nil
	}})
}

type aggState[P any] struct{ p P }

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
}

// Key is the current key.
func (c *Context[K, S, O]) Key() K { return c.key }

// State returns the key's state and whether it has any.
func (c *Context[K, S, O]) State() (S, bool) {
	s, ok := c.op.state[c.key]
	return s, ok
}

// SetState replaces the key's state.
func (c *Context[K, S, O]) SetState(s S) { c.op.state[c.key] = s }

// ClearState removes the key's state.
func (c *Context[K, S, O]) ClearState() { delete(c.op.state, c.key) }

// Emit sends an output downstream.
func (c *Context[K, S, O]) Emit(o O) {
	for _, s := range c.op.subs {
		s(o)
	}
}

// Now is the processing time of the current batch or timer.
func (c *Context[K, S, O]) Now() time.Time { return c.fr.now }

// SetProcessingTimer asks for OnTimer to be called for this key once the
// processing time reaches at. Setting the same time twice sets one timer.
func (c *Context[K, S, O]) SetProcessingTimer(at time.Time) {
	t := timerKey[K]{at: at.UnixNano(), key: c.key}
	if _, ok := c.op.pending[t]; ok {
		return
	}
	c.op.pending[t] = struct{}{}
	heap.Push(&c.op.timers, t)
}

// DeleteProcessingTimer cancels the key's timer at at, if any.
func (c *Context[K, S, O]) DeleteProcessingTimer(at time.Time) {
	delete(c.op.pending, timerKey[K]{at: at.UnixNano(), key: c.key})
}

type timerKey[K comparable] struct {
	at  int64
	key K
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
	state   map[K]S
	subs    []func(O)
	timers  timerHeap[K] // may hold deleted timers; pending is the truth
	pending map[timerKey[K]]struct{}
	ctx     Context[K, S, O]
	onTimer func(c *Context[K, S, O], at time.Time)
	kc      KeyCodec[K]
}

func (p *procOp[K, S, O]) fire(fr *Fragment, now time.Time) {
	for len(p.timers) > 0 && p.timers[0].at <= now.UnixNano() {
		t := heap.Pop(&p.timers).(timerKey[K])
		if _, ok := p.pending[t]; !ok {
			continue
		}
		delete(p.pending, t)
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
			fr.fail(p.kc.Format(t.key), fmt.Sprintf("timer at %s", time.Unix(0, t.at).UTC()), v)
		}
	}()
	p.ctx.key = t.key
	p.onTimer(&p.ctx, time.Unix(0, t.at))
}

// Processed is the result of Process: its output stream and its state.
type Processed[K comparable, S, O any] struct {
	f  *Flow
	op int
	kc KeyCodec[K]
	hs func(K) uint64
}

// Process runs a per-key state machine over a keyed stream.
func Process[K comparable, T, S, O any](ks KeyedStream[K, T], h Handler[K, T, S, O], opts ...StateOption) Processed[K, S, O] {
	f := ks.f
	if h.OnEvent == nil {
		f.errorf("Process: OnEvent must not be nil")
	}
	checkStateCodec[S](f, "Process", opts)
	op := f.ops
	f.ops++
	f.fragW = append(f.fragW, func(fr *Fragment) {
		p := &procOp[K, S, O]{state: map[K]S{}, pending: map[timerKey[K]]struct{}{}, onTimer: h.OnTimer, kc: ks.kc}
		p.ctx = Context[K, S, O]{op: p, fr: fr}
		fr.ops[op] = p
		fr.timers = append(fr.timers, p)
		ks.subscribe(fr, func(k K, v T) {
			p.ctx.key = k
			h.OnEvent(&p.ctx, v)
		})
	})
	return Processed[K, S, O]{f: f, op: op, kc: ks.kc, hs: ks.hash}
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
	addKeyedView(p.f, name, p.kc, p.hs, func(fr *Fragment, q splice.Query, after *K, only *K) []splice.Entry {
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
