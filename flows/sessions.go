package flows

import (
	"cmp"
	"container/heap"
	"encoding/binary"
	"fmt"
	"slices"
	"time"
)

// SessionAggregate folds every event of a key into session windows: an
// event opens [t, t+gap), and sessions that overlap merge (their
// accumulators combined with merge). A session fires when the watermark
// passes its end (OnTime); with allowed lateness, a late event that lands
// in a fired session refines it (Late). An event whose own [t, t+gap) ended
// more than the allowed lateness before the watermark goes to TooLate.
// Session state lives in the fragment and is checkpointed.
func SessionAggregate[K comparable, T, A any](ks KeyedStream[K, T], gap time.Duration, init func() A, add func(A, T) A,
	merge func(A, A) A, opts ...WindowOption) Windowed[K, T, A] {
	f := ks.f
	if gap <= 0 {
		f.errorf("SessionAggregate: gap must be positive, got %v", gap)
	}
	if init == nil || add == nil || merge == nil {
		f.errorf("SessionAggregate: init, add and merge must not be nil")
	}
	for _, o := range opts {
		if o.every != 0 || o.early != 0 {
			f.errorf("SessionAggregate: early triggers (FireEvery, EarlyEvery) are for WindowAggregate; sessions fire on the watermark")
		}
	}
	lateness, ac, op := windowOperator[A](f, "SessionAggregate", ks.stage, opts)
	f.fragW = append(f.fragW, func(fr *Fragment) {
		so := &sessionOp[K, T, A]{op: op, gap: int64(gap), lateness: lateness, init: init, add: add, merge: merge,
			kc: ks.kc, ac: ac, state: map[K][]session[A]{}, dirty: map[K]struct{}{}}
		fr.ops[op] = so
		fr.addTimers(ks.stage, so)
		ks.subscribe(fr, func(k K, v T) { so.event(fr, k, v) })
	})
	return Windowed[K, T, A]{f: f, op: op, session: true, in: ks}
}

type session[A any] struct {
	start, end int64
	acc        A
	fired      bool
}

type sessTimer[K comparable] struct {
	at      int64
	key     K
	end     int64 // the session's end when the timer was set
	cleanup bool
}

type sessHeap[K comparable] []sessTimer[K]

func (h sessHeap[K]) Len() int           { return len(h) }
func (h sessHeap[K]) Less(i, j int) bool { return h[i].at < h[j].at }
func (h sessHeap[K]) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *sessHeap[K]) Push(x any)        { *h = append(*h, x.(sessTimer[K])) }
func (h *sessHeap[K]) Pop() any {
	x := (*h)[len(*h)-1]
	*h = (*h)[:len(*h)-1]
	return x
}

type sessionOp[K comparable, T, A any] struct {
	op            int
	fkey          K // the key of the session firing now
	gap, lateness int64
	init          func() A
	add           func(A, T) A
	merge         func(A, A) A
	kc            KeyCodec[K]
	ac            Codec[A]
	state         map[K][]session[A] // per key, sorted by start, disjoint
	dirty         map[K]struct{}
	timers        sessHeap[K]
	subs          []func(WindowResult[K, A])
	late          []func(T)
}

func (so *sessionOp[K, T, A]) outputs() (*[]func(WindowResult[K, A]), *[]func(T)) {
	return &so.subs, &so.late
}

func (so *sessionOp[K, T, A]) event(fr *Fragment, k K, v T) {
	ts, wm := fr.cur.TS, fr.wm()
	if wm != NoWatermark && ts+so.gap+so.lateness <= wm {
		fr.tooLate++
		for _, l := range so.late {
			l(v)
		}
		return
	}
	ss := so.state[k]
	n := session[A]{start: ts, end: ts + so.gap, acc: so.add(so.init(), v)}
	keep := ss[:0] // filtered in place: writes never pass reads
	for _, s := range ss {
		if s.start < n.end && n.start < s.end { // overlap: merge
			n.start, n.end = min(n.start, s.start), max(n.end, s.end)
			n.acc = so.merge(s.acc, n.acc)
			continue
		}
		keep = append(keep, s)
	}
	// A session that ends before the watermark (late data within the
	// allowed lateness) goes out now, as late; one that ends later fires on
	// time, even if a part of it fired before a merge.
	n.fired = wm != NoWatermark && n.end <= wm
	keep = append(keep, n)
	if len(keep) > 1 {
		slices.SortFunc(keep, func(a, b session[A]) int { return cmp.Compare(a.start, b.start) })
	}
	so.state[k] = keep
	so.dirty[k] = struct{}{}
	if n.fired {
		so.emit(k, n, Late)
	} else {
		heap.Push(&so.timers, sessTimer[K]{at: n.end, key: k, end: n.end})
	}
	heap.Push(&so.timers, sessTimer[K]{at: n.end + so.lateness, key: k, end: n.end, cleanup: true})
}

func (so *sessionOp[K, T, A]) emit(k K, s session[A], f Firing) {
	r := WindowResult[K, A]{Key: k, Start: time.Unix(0, s.start).UTC(), End: time.Unix(0, s.end).UTC(), Value: s.acc, Firing: f}
	for _, sub := range so.subs {
		sub(r)
	}
}

func (so *sessionOp[K, T, A]) fire(*Fragment, time.Time) {}

func (so *sessionOp[K, T, A]) firingKey() string { return so.kc.Format(so.fkey) }

func (so *sessionOp[K, T, A]) fireEvent(fr *Fragment, wm int64) {
	for len(so.timers) > 0 && so.timers[0].at <= wm {
		t := heap.Pop(&so.timers).(sessTimer[K])
		ss := so.state[t.key]
		i := slices.IndexFunc(ss, func(s session[A]) bool { return s.end == t.end })
		if i < 0 {
			continue // merged into another session since
		}
		if !ss[i].fired {
			ss[i].fired = true
			so.dirty[t.key] = struct{}{}
			so.fkey = t.key
			fr.firing(CauseWindow, so.op, ss[i].end, ss[i].end-1, so)
			so.emit(t.key, ss[i], OnTime)
		}
		if t.cleanup {
			ss = slices.Delete(ss, i, i+1)
			if len(ss) == 0 {
				delete(so.state, t.key)
			} else {
				so.state[t.key] = ss
			}
			so.dirty[t.key] = struct{}{}
		}
	}
}

// One entry per key: its sessions (start, end, fired, accumulator length,
// accumulator). Timers follow from the state on restore.
func (so *sessionOp[K, T, A]) delta(ns uint16, d *Delta) error {
	for k := range so.dirty {
		key, err := so.kc.Append(nil, k)
		if err != nil {
			return fmt.Errorf("encode session key: %w", err)
		}
		ss, ok := so.state[k]
		if !ok {
			d.Deletes = append(d.Deletes, StateEntry{Namespace: ns, Key: key})
			continue
		}
		var val []byte
		for _, s := range ss {
			val = binary.AppendVarint(val, s.start)
			val = binary.AppendVarint(val, s.end)
			if s.fired {
				val = append(val, 1)
			} else {
				val = append(val, 0)
			}
			acc, err := so.ac.Append(nil, s.acc)
			if err != nil {
				return fmt.Errorf("encode session state: %w", err)
			}
			val = binary.AppendUvarint(val, uint64(len(acc)))
			val = append(val, acc...)
		}
		d.Puts = append(d.Puts, StateEntry{Namespace: ns, Key: key, Value: val})
	}
	clear(so.dirty)
	d.Entries += int64(len(so.state))
	return nil
}

func (so *sessionOp[K, T, A]) restore(_ uint16, key, val []byte) error {
	k, err := so.kc.Decode(key)
	if err != nil {
		return fmt.Errorf("decode session key: %w", err)
	}
	var ss []session[A]
	for len(val) > 0 {
		var s session[A]
		var n int
		if s.start, n = binary.Varint(val); n <= 0 {
			return fmt.Errorf("session start")
		}
		val = val[n:]
		if s.end, n = binary.Varint(val); n <= 0 || len(val) <= n {
			return fmt.Errorf("session end")
		}
		val = val[n:]
		s.fired, val = val[0] == 1, val[1:]
		l, n := binary.Uvarint(val)
		if n <= 0 || uint64(len(val)-n) < l {
			return fmt.Errorf("session accumulator")
		}
		if s.acc, err = so.ac.Decode(val[n : n+int(l)]); err != nil {
			return fmt.Errorf("decode session state: %w", err)
		}
		val = val[n+int(l):]
		ss = append(ss, s)
		if !s.fired {
			heap.Push(&so.timers, sessTimer[K]{at: s.end, key: k, end: s.end})
		}
		heap.Push(&so.timers, sessTimer[K]{at: s.end + so.lateness, key: k, end: s.end, cleanup: true})
	}
	so.state[k] = ss
	return nil
}
