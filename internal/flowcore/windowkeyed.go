package flowcore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/tessera-streams/tessera/splice"
)

// KeyedView exposes the windows' keys as a view: for each event-time
// window, every key of the window with its value — the live accumulator
// while the window is open, the final value once the watermark fired it
// (refined by late events within the allowed lateness). A key lives in one
// fragment, so each window is a disjoint union over the fragments, as the
// entries of Table.View are. A window is queryable from its first event
// until the watermark passes its end by retain (or by the allowed
// lateness, while the window operator still holds it). When a bounded
// input ends, the windows retained then stay; its partitions end one after
// the other, and the watermark of the ones still reading may drop windows
// meanwhile. ScoreBy ranks values for top queries (numbers rank by value
// without it); PublishIf leaves entries out of every answer, and out of
// each window's count of keys.
//
// A query chooses windows — window=latest (the latest window every
// fragment's watermark passed: complete, as for WindowView), from and to
// (windows starting in [from, to)), or every window held — and, within
// each window, entries as a keyed view does: limit and after (pages in key
// order), prefix, or top. A page is one range of keys in every window of
// the answer: its next_after starts the next page in all of them, with
// neither gaps nor repeats. Each window says whether it is complete and
// how many keys it holds. For instance, trips per origin→destination pair
// and hour:
//
//	od := flows.KeyBy(trips, func(t Trip) string { return t.From + "->" + t.To })
//	flows.WindowAggregate(od, flows.Tumbling(time.Hour),
//		func() int64 { return 0 }, func(n int64, _ Trip) int64 { return n + 1 }).
//		KeyedView("od", 24*time.Hour)
//
// answers GET /v1/views/od?window=latest&top=10,
// ?from=2026-11-02T07:00:00Z&to=2026-11-02T09:00:00Z&limit=50&after=z03->z11,
// ?prefix=z03-> and, for one key, /v1/views/od/keys/z03->z11?window=latest
// (or ?from=&to=: the windows in range that hold the key).
//
// The view reads the window operator's state when asked, through the
// index by start that WindowView uses too (one map insert per key and
// window, or per key and slice for sliced windows, none per event;
// a sliced window's value is combined from its slices when read); a key
// of a window costs it one append
// when the window's state goes. It keeps the final values of the windows
// whose state the operator dropped, and checkpoints them. Session windows have per-key bounds and the global
// window none: neither has such a view (Validate says so).
func (w Windowed[K, T, A]) KeyedView(name string, retain time.Duration, opts ...ViewOption[A]) Windowed[K, T, A] {
	f := w.f
	switch {
	case w.session:
		f.errorf("keyed window view %q: session windows have per-key bounds: use ByKey() or Results() instead", name)
		return w
	case w.w.global:
		f.errorf("keyed window view %q: a global window has no bounds: use a Table's View (Aggregate) instead", name)
		return w
	case retain < 0:
		f.errorf("keyed window view %q: negative retention %v", name, retain)
		return w
	case w.in.kc == nil || w.ac == nil:
		return w // KeyBy or WindowAggregate reported the missing codec
	}
	o := resolveViewOptions(opts)
	kc, ac, size := w.in.kc, w.ac, w.w.size
	op := f.addOp(w.in.stage, fmt.Sprintf("keyed window view %q of operator %d, %s by %s", name, w.op, typeName[A](), typeName[K]()))
	f.fragW = append(f.fragW, func(fr *Fragment) {
		wo := fr.ops[w.op].(windowIndexed[K, A])
		kv := &winKeyed[K, A]{kc: kc, ac: ac, publish: o.keep, size: size, retain: int64(retain), next: math.MaxInt64,
			closed: map[int64]*closedWindow[K, A]{}, puts: map[int64]struct{}{}, gone: map[int64][]KV[K, A]{}}
		fr.ops[op] = kv
		wo.addView(kv)
		wo.trackChanges(&fr.gen)
		kv.gen = &fr.gen
		fr.changes = append(fr.changes, winKeyedChanges[K, A]{view: name, kv: kv, wo: wo, o: o})
	})
	spec := keyedSpec(f, name, splice.WindowedKeyed, kc, w.in.hash)
	f.views = append(f.views, viewDef{spec: spec, stage: w.in.stage, vals: anyCodec(ac), parseKey: func(s string) (any, error) { return kc.Parse(s) },
		query: func(fr *Fragment, req splice.Request) (splice.Answer, error) {
			open := fr.ops[w.op].(windowIndexed[K, A]).openWindows()
			kv := fr.ops[op].(*winKeyed[K, A])
			q := req.Query
			switch req.Op {
			case splice.OpWindows:
				return kv.answer(open, q, nil), nil
			case splice.OpWindowEntries:
				if q.Top > 0 && o.score == nil {
					return splice.Answer{}, fmt.Errorf("%w: view %q has no score for ?top=", splice.ErrBadRequest, name)
				}
				var after *K
				if q.Paged() {
					k, err := kc.Parse(q.After)
					if err != nil {
						return splice.Answer{}, errors.Join(splice.ErrBadRequest, fmt.Errorf("after %q: %w", q.After, err))
					}
					after = &k
				}
				return kv.answer(open, q, func(s int64, p *splice.WindowPartial) {
					kvs := kv.window(s, open)
					p.Entries = selectKeys(len(kvs), func(i int) (K, A) { return kvs[i].Key, kvs[i].Value }, q, after, kc, o)
				}), nil
			case splice.OpWindowKey:
				k, err := kc.Parse(req.Key)
				if err != nil {
					return splice.Answer{}, errors.Join(splice.ErrBadRequest, fmt.Errorf("key %q: %w", req.Key, err))
				}
				return kv.answer(open, q, func(s int64, p *splice.WindowPartial) {
					if a, ok := kv.lookup(s, open, k); ok && o.publish(a) {
						p.Entries = []splice.Entry{{Key: kc.Format(k), Value: a, Sort: k}}
					}
				}), nil
			}
			return splice.Answer{}, fmt.Errorf("%w: view %q is keyed by window: query its windows", splice.ErrBadRequest, name)
		}})
	return w
}

// closedWindow is a window whose state the window operator dropped: its
// keys and their final values, sorted by key once asked for one (a slice
// without an index: retained windows may hold millions of keys).
type closedWindow[K comparable, A any] struct {
	kvs    []KV[K, A]
	sorted bool
	stamp  uint64 // the fragment's generation when the window closed (0: restored)
}

// find is the index of key k, or -1.
func (c *closedWindow[K, A]) find(k K, kc KeyCodec[K]) int {
	if !c.sorted {
		slices.SortFunc(c.kvs, func(a, b KV[K, A]) int { return kc.Compare(a.Key, b.Key) })
		c.sorted = true
	}
	i, ok := slices.BinarySearchFunc(c.kvs, k, func(e KV[K, A], k K) int { return kc.Compare(e.Key, k) })
	if !ok {
		return -1
	}
	return i
}

// winKeyed is a fragment's side of a KeyedView: the windows whose state
// is gone (closed), until the watermark passes their end by retain. Open
// windows are read from the window operator's state when asked.
type winKeyed[K comparable, A any] struct {
	kc           KeyCodec[K]
	ac           Codec[A]
	publish      func(A) bool // nil: every entry
	size, retain int64
	closed       map[int64]*closedWindow[K, A]
	entries      int64 // keys of every closed window
	next         int64 // the earliest watermark at which a closed window expires
	// Since the last checkpoint: the windows that closed (all their keys
	// close at one watermark) and the ones dropped, with their keys.
	puts         map[int64]struct{}
	gone         map[int64][]KV[K, A]
	horizon      int64 // the largest end of a dropped window
	horizonDirty bool
	// gen is the fragment's publish generation; dropped, the generation
	// in which the view last dropped a window (its keys go unstamped).
	gen     *uint64
	dropped uint64
}

func (v *winKeyed[K, A]) closeWindow(k K, start int64, acc A) {
	v.put(k, start, acc)
	v.puts[start] = struct{}{}
	if v.gen != nil {
		v.closed[start].stamp = *v.gen
	}
}

// put adds key k's final value of window start. A window closes once,
// and a checkpoint holds each of its keys once: k is not there yet.
func (v *winKeyed[K, A]) put(k K, start int64, acc A) {
	c := v.closed[start]
	if c == nil {
		c = &closedWindow[K, A]{}
		v.closed[start] = c
		v.next = min(v.next, satAdd(start+v.size, v.retain))
	}
	c.kvs, c.sorted = append(c.kvs, KV[K, A]{k, acc}), false
	v.entries++
}

// expire drops the closed windows past retention.
func (v *winKeyed[K, A]) expire(_ *Fragment, wm int64) {
	if wm == NoWatermark || wm == math.MaxInt64 || wm < v.next {
		return // nothing due, or the input ended: keep the last windows
	}
	v.next = math.MaxInt64
	for s, c := range v.closed {
		end := s + v.size
		if until := satAdd(end, v.retain); until > wm {
			v.next = min(v.next, until)
			continue
		}
		v.entries -= int64(len(c.kvs))
		if v.gen != nil {
			v.dropped = *v.gen
		}
		delete(v.closed, s)
		delete(v.puts, s)
		v.gone[s] = c.kvs // to delete: the keys may have been checkpointed
		if end > v.horizon {
			v.horizon, v.horizonDirty = end, true
		}
	}
}

// answer lists the windows starting in [q.From, q.To), closed or open, in
// start order, each filled in by fill (if not nil).
func (v *winKeyed[K, A]) answer(open openWindows[K, A], q splice.Query, fill func(s int64, p *splice.WindowPartial)) splice.Answer {
	in := func(s int64) bool { return s >= q.From && q.Before(s) }
	var starts []int64
	for s := range v.closed {
		if in(s) {
			starts = append(starts, s)
		}
	}
	for _, s := range open.openStarts() {
		if _, ok := v.closed[s]; !ok && in(s) {
			starts = append(starts, s)
		}
	}
	slices.Sort(starts)
	out := make([]splice.WindowPartial, len(starts))
	for i, s := range starts {
		out[i] = splice.WindowPartial{Start: s, End: s + v.size, Keys: v.count(s, open)}
		if fill != nil {
			fill(s, &out[i])
		}
	}
	return splice.Answer{Windows: out, Horizon: v.horizon}
}

// A window's keys are closed or open, not both: the operator drops all of
// a window's state at one watermark, after which no event enters it. The
// functions below still take the union, open values first.

// count is the number of keys of window s that the view publishes.
func (v *winKeyed[K, A]) count(s int64, open openWindows[K, A]) int64 {
	if v.publish != nil {
		n := int64(0)
		for _, e := range v.window(s, open) {
			if v.publish(e.Value) {
				n++
			}
		}
		return n
	}
	c := v.closed[s]
	n := open.openCount(s)
	if c == nil {
		return int64(n)
	}
	for _, e := range c.kvs {
		if _, ok := open.openGet(s, e.Key); !ok {
			n++
		}
	}
	return int64(n)
}

// window returns window s's keys and values: a closed window's own slice,
// or one made from the open state.
func (v *winKeyed[K, A]) window(s int64, open openWindows[K, A]) []KV[K, A] {
	c := v.closed[s]
	n := open.openCount(s)
	if n == 0 {
		if c == nil {
			return nil
		}
		return c.kvs
	}
	if c != nil {
		n += len(c.kvs)
	}
	kvs := make([]KV[K, A], 0, n)
	open.openEach(s, func(k K, a A) { kvs = append(kvs, KV[K, A]{k, a}) })
	if c != nil {
		for _, e := range c.kvs {
			if _, ok := open.openGet(s, e.Key); !ok {
				kvs = append(kvs, e)
			}
		}
	}
	return kvs
}

// lookup is key k's value in window s.
func (v *winKeyed[K, A]) lookup(s int64, open openWindows[K, A], k K) (A, bool) {
	if a, ok := open.openGet(s, k); ok {
		return a, true
	}
	if c := v.closed[s]; c != nil {
		if i := c.find(k, v.kc); i >= 0 {
			return c.kvs[i].Value, true
		}
	}
	var zero A
	return zero, false
}

// Entries: key = start (8 bytes) + key → the final value; key "h" → the
// horizon. A window's entries are written when it closes and deleted when
// it is dropped.
func (v *winKeyed[K, A]) delta(ns uint16, d *Delta) error {
	var buf []byte
	type span struct{ k0, k1, v1 int }
	var puts, dels []span
	var err error
	key := func(s int64, k K) (span, error) {
		sp := span{k0: len(buf)}
		buf = binary.BigEndian.AppendUint64(buf, uint64(s))
		if buf, err = v.kc.Append(buf, k); err != nil {
			return sp, fmt.Errorf("encode window key: %w", err)
		}
		sp.k1 = len(buf)
		return sp, nil
	}
	for s := range v.puts {
		for _, e := range v.closed[s].kvs {
			sp, err := key(s, e.Key)
			if err != nil {
				return err
			}
			if buf, err = v.ac.Append(buf, e.Value); err != nil {
				return fmt.Errorf("encode window value of key %s: %w", v.kc.Format(e.Key), err)
			}
			sp.v1 = len(buf)
			puts = append(puts, sp)
		}
	}
	for s, kvs := range v.gone {
		for _, e := range kvs {
			sp, err := key(s, e.Key)
			if err != nil {
				return err
			}
			dels = append(dels, sp)
		}
	}
	for _, sp := range puts {
		d.Puts = append(d.Puts, StateEntry{Namespace: ns, Key: buf[sp.k0:sp.k1:sp.k1], Value: buf[sp.k1:sp.v1:sp.v1]})
	}
	for _, sp := range dels {
		d.Deletes = append(d.Deletes, StateEntry{Namespace: ns, Key: buf[sp.k0:sp.k1:sp.k1]})
	}
	clear(v.puts)
	clear(v.gone)
	if v.horizonDirty {
		d.Puts = append(d.Puts, StateEntry{Namespace: ns, Key: []byte("h"), Value: binary.BigEndian.AppendUint64(nil, uint64(v.horizon))})
		v.horizonDirty = false
	}
	d.Entries += v.entries
	if v.horizon != 0 {
		d.Entries++
	}
	return nil
}

func (v *winKeyed[K, A]) restore(_ uint16, key, val []byte) error {
	if string(key) == "h" && len(val) == 8 {
		v.horizon = int64(binary.BigEndian.Uint64(val))
		return nil
	}
	if len(key) < 8 {
		return fmt.Errorf("keyed window view entry with a %d-byte key", len(key))
	}
	k, err := v.kc.Decode(key[8:])
	if err != nil {
		return fmt.Errorf("decode window key: %w", err)
	}
	acc, err := v.ac.Decode(val)
	if err != nil {
		return fmt.Errorf("decode window value of key %s: %w", v.kc.Format(k), err)
	}
	v.put(k, int64(binary.BigEndian.Uint64(key)), acc)
	return nil
}

// winKeyedChanges tells a watch which keys of a KeyedView's windows
// changed since a mark (splice.OpChanges): the windows in the query's
// range, each with its number of keys and the entries whose keys the
// window operator stamped since (open windows only: a closed window's
// values are final; all the keys of a window that closed since),
// matching the query's prefix. A key of a sliced
// window is stamped once for all its slices, so a key that changed in one
// window is named in the others that hold it too (with its value: the
// watch finds it unchanged). It asks for a reset after a window was
// dropped since the mark (its keys leave unstamped), for a view with
// PublishIf (an entry may leave a window), and for more than maxChanges
// entries.
type winKeyedChanges[K comparable, A any] struct {
	view string
	kv   *winKeyed[K, A]
	wo   windowIndexed[K, A]
	o    viewOptions[A]
}

func (c winKeyedChanges[K, A]) viewName() string { return c.view }

func (c winKeyedChanges[K, A]) changedSince(q splice.Query, since uint64, valid bool, now *splice.ChangeMark) splice.Answer {
	kv := c.kv
	if !valid || c.o.keep != nil || since <= kv.dropped || (q.Top > 0 && c.o.score == nil) {
		now.Reset = true
		return splice.Answer{Changes: now}
	}
	open := c.wo.openWindows()
	n := 0
	a := kv.answer(open, q, func(s int64, p *splice.WindowPartial) {
		add := func(k K, v A) {
			if n > maxChanges {
				return
			}
			key := kv.kc.Format(k)
			if q.Prefix != "" && !strings.HasPrefix(key, q.Prefix) {
				return
			}
			n++
			e := splice.Entry{Key: key, Value: v, Sort: k}
			if c.o.score != nil {
				e.Score = c.o.score(v)
			}
			p.Entries = append(p.Entries, e)
		}
		open.openChanged(s, since, add)
		// A window that closed since: its keys' stamps went with its
		// state, so all of them (once per window).
		if c := kv.closed[s]; c != nil && c.stamp >= since {
			for _, e := range c.kvs {
				if _, ok := open.openGet(s, e.Key); !ok {
					add(e.Key, e.Value)
				}
			}
		}
	})
	if n > maxChanges {
		now.Reset = true
		return splice.Answer{Changes: now}
	}
	a.Changes = now
	return a
}
