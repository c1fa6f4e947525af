package flowcore

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
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
	f.checkSpan("SessionAggregate: gap", gap)
	if init == nil || add == nil || merge == nil {
		f.errorf("SessionAggregate: init, add and merge must not be nil")
	}
	for _, o := range opts {
		if o.every != 0 || o.early != 0 {
			f.errorf("SessionAggregate: early triggers (FireEvery, EarlyEvery) are for WindowAggregate; sessions fire on the watermark")
		}
	}
	lateness, ac, op := windowOperator[A](f, "SessionAggregate", fmt.Sprintf("gap %v", gap), ks.stage, opts)
	f.fragW = append(f.fragW, func(fr *Fragment) {
		so := &sessionOp[K, T, A]{op: op, gap: int64(gap), lateness: lateness, init: init, add: add, merge: merge,
			kc: ks.kc, ac: ac, idx: map[K]int32{}}
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

// sessRow is a key's sessions, sorted by start and disjoint, and the time
// of its next firing or cleanup: one timer per key stands for all of them.
// An event that extends a session does not move the timer; when it comes,
// the key's timer moves on to what is due next (per-key coalescing: an
// event costs no heap operation unless it makes the key due earlier).
//
// Rows sit in one flat table that the key map indexes, and a key's only
// session (the common case: a session closes before the next opens) sits
// in the row itself: an event costs the map probe and one row, not a chase
// through a per-key allocation and a slice of sessions. The row holds
// only what an event reads (its key sits in a table beside it) and stays
// within a cache line or so.
type sessRow[A any] struct {
	one   [1]session[A] // the sessions when there is at most one (more is empty)
	n1    uint8         // 0 or 1: whether one holds a session
	timed bool          // a timer in sessionOp.timers is at due
	dirty bool          // in sessionOp.dirty
	live  bool          // the row holds a key (a free row is on sessionOp.free)
	due   int64
	more  *[]session[A] // the sessions when there are two or more; made at the first time
}

// sessions returns the row's sessions; the slice may point into the row,
// so it is used before the table grows.
func (r *sessRow[A]) sessions() []session[A] {
	if r.n1 == 0 && r.more != nil {
		return *r.more
	}
	return r.one[:r.n1]
}

// set makes ss the row's sessions (ss may be what sessions returned).
func (r *sessRow[A]) set(ss []session[A]) {
	if len(ss) > 1 {
		if r.more == nil {
			r.more = new([]session[A])
		}
		if old := *r.more; len(old) > 0 && &ss[0] != &old[0] {
			clear(old[:cap(old)]) // a new array: the old drops its accumulators
		}
		*r.more = ss
		r.one[0], r.n1 = session[A]{}, 0
		return
	}
	if len(ss) == 1 {
		r.one[0] = ss[0]
		r.n1 = 1
	} else {
		r.one[0] = session[A]{}
		r.n1 = 0
	}
	if r.more != nil {
		m := *r.more
		clear(m[:cap(m)])
		*r.more = m[:0]
	}
}

// next is the time of the key's next firing (an unfired session's end) or
// cleanup (a fired one's end plus the lateness).
func (r *sessRow[A]) next(lateness int64) int64 {
	at := int64(math.MaxInt64)
	for _, s := range r.sessions() {
		if s.fired {
			at = min(at, satAdd(s.end, lateness))
		} else {
			at = min(at, s.end)
		}
	}
	return at
}

// sessTimer is a row's timer; the row's due is the truth, and a timer that
// no longer matches it is stale. A row freed and reused by another key
// keeps its old timers harmless: one that matches the new key's due is
// that key's due time, and after a row is handled at a time its due moves
// strictly later.
type sessTimer struct {
	at  int64
	row int32
}

func (a sessTimer) before(b sessTimer) bool { return a.at < b.at }

type sessionOp[K comparable, T, A any] struct {
	op            int
	fkey          K // the key of the session firing now
	gap, lateness int64
	init          func() A
	add           func(A, T) A
	merge         func(A, A) A
	kc            KeyCodec[K]
	ac            Codec[A]
	idx           map[K]int32 // key → row
	rows          []sessRow[A]
	keys          []K     // each row's key
	free          []int32 // rows without a key, reused first
	// dirty lists the keys changed since the last checkpoint (a key may
	// be listed twice if it went and came back); kept once a checkpoint
	// was taken or restored: the first one writes every key.
	dirty    []K
	tracking bool
	timers   []sessTimer
	subs     []func(WindowResult[K, A])
	late     []func(T)
}

func (so *sessionOp[K, T, A]) outputs() (*[]func(WindowResult[K, A]), *[]func(T)) {
	return &so.subs, &so.late
}

// row returns k's row, made if k has none.
func (so *sessionOp[K, T, A]) row(k K) (int32, *sessRow[A]) {
	if i, ok := so.idx[k]; ok {
		return i, &so.rows[i]
	}
	var i int32
	if n := len(so.free); n > 0 {
		i, so.free = so.free[n-1], so.free[:n-1]
	} else {
		i = int32(len(so.rows))
		so.rows = append(so.rows, sessRow[A]{})
		so.keys = append(so.keys, k)
	}
	so.idx[k] = i
	so.keys[i] = k
	r := &so.rows[i]
	r.live = true
	return i, r
}

// drop frees the row of a key without sessions.
func (so *sessionOp[K, T, A]) drop(i int32) {
	delete(so.idx, so.keys[i])
	var zero K
	so.keys[i] = zero
	r := &so.rows[i]
	*r = sessRow[A]{more: r.more} // the zero row keeps its spare array, emptied by set
	so.free = append(so.free, i)
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
	i, r := so.row(k)
	n := session[A]{start: ts, end: ts + so.gap, acc: so.add(so.init(), v)}
	// A session that ends before the watermark (late data within the
	// allowed lateness) goes out now, as late; one that ends later fires on
	// time, even if a part of it fired before a merge.
	if r.n1 == 1 && r.one[0].start < n.end && n.start < r.one[0].end {
		// The common case: the event extends the key's only session.
		s := &r.one[0]
		s.start, s.end = min(n.start, s.start), max(n.end, s.end)
		s.acc = so.merge(s.acc, n.acc)
		s.fired = wm != NoWatermark && s.end <= wm
		n = *s
	} else {
		ss := r.sessions()
		keep := ss[:0] // filtered in place: writes never pass reads
		for _, s := range ss {
			if s.start < n.end && n.start < s.end { // overlap: merge
				n.start, n.end = min(n.start, s.start), max(n.end, s.end)
				n.acc = so.merge(s.acc, n.acc)
				continue
			}
			keep = append(keep, s)
		}
		n.fired = wm != NoWatermark && n.end <= wm
		keep = append(keep, n)
		if len(keep) > 1 {
			slices.SortFunc(keep, func(a, b session[A]) int { return cmp.Compare(a.start, b.start) })
		}
		if len(keep) < len(ss) {
			clear(ss[len(keep):]) // what merged away
		}
		r.set(keep)
	}
	so.touch(i, r)
	if n.fired {
		so.emit(k, n, Late)
	}
	// The merged sessions' times may have been the key's next: the timer
	// stays, and finds nothing due when it comes.
	if at := r.next(so.lateness); !r.timed || at < r.due {
		so.setTimer(i, r, at)
	}
}

// touch records a key changed since the last checkpoint.
func (so *sessionOp[K, T, A]) touch(i int32, r *sessRow[A]) {
	if so.tracking && !r.dirty {
		r.dirty = true
		so.dirty = append(so.dirty, so.keys[i])
	}
}

func (so *sessionOp[K, T, A]) setTimer(i int32, r *sessRow[A], at int64) {
	r.due, r.timed = at, true
	heapPush(&so.timers, sessTimer{at: at, row: i})
}

func (so *sessionOp[K, T, A]) emit(k K, s session[A], f Firing) {
	r := WindowResult[K, A]{Key: k, Start: time.Unix(0, s.start).UTC(), End: time.Unix(0, s.end).UTC(), Value: s.acc, Firing: f}
	for _, sub := range so.subs {
		sub(r)
	}
}

func (so *sessionOp[K, T, A]) fire(*Fragment, time.Time) {}

func (so *sessionOp[K, T, A]) firingKey() string { return so.kc.Format(so.fkey) }

// fireEvent fires the sessions whose end the watermark passed and drops
// the ones past their allowed lateness, key by key in time order: at one
// time, a key's sessions in start order, each fired before it is dropped.
func (so *sessionOp[K, T, A]) fireEvent(fr *Fragment, wm int64) {
	for len(so.timers) > 0 && so.timers[0].at <= wm {
		t := so.timers[0]
		r := &so.rows[t.row]
		if !r.live || !r.timed || r.due != t.at {
			heapPop(&so.timers) // stale: the key's timer moved, or the row has no key
			continue
		}
		ss := r.sessions()
		keep := ss[:0]
		for _, s := range ss {
			if !s.fired && s.end <= t.at {
				s.fired = true
				so.touch(t.row, r)
				so.fkey = so.keys[t.row]
				fr.firing(CauseWindow, so.op, s.end, s.end-1, so)
				so.emit(so.fkey, s, OnTime)
			}
			if s.fired && satAdd(s.end, so.lateness) <= t.at {
				so.touch(t.row, r)
				continue
			}
			keep = append(keep, s)
		}
		clear(ss[len(keep):])
		r.set(keep)
		if len(keep) == 0 {
			heapPop(&so.timers)
			so.drop(t.row)
			continue
		}
		// The key's entry moves in place to its next time.
		r.due = r.next(so.lateness)
		so.timers[0].at = r.due
		heapDown(so.timers, 0)
	}
}

// One entry per key: its sessions (start, end, fired, accumulator length,
// accumulator). Timers follow from the state on restore.
func (so *sessionOp[K, T, A]) delta(ns uint16, d *Delta) error {
	put := func(k K, sk *sessRow[A]) error {
		key, err := so.kc.Append(nil, k)
		if err != nil {
			return fmt.Errorf("encode session key: %w", err)
		}
		if sk == nil {
			d.Deletes = append(d.Deletes, StateEntry{Namespace: ns, Key: key})
			return nil
		}
		sk.dirty = false
		var val []byte
		for _, s := range sk.sessions() {
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
		return nil
	}
	if !so.tracking {
		d.Reset = append(d.Reset, ns)
		for k, i := range so.idx {
			if err := put(k, &so.rows[i]); err != nil {
				return err
			}
		}
		so.tracking = true
	}
	for _, k := range so.dirty {
		var r *sessRow[A]
		if i, ok := so.idx[k]; ok {
			r = &so.rows[i]
		}
		if err := put(k, r); err != nil {
			return err
		}
	}
	clear(so.dirty)
	so.dirty = so.dirty[:0]
	d.Entries += int64(len(so.idx))
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
	}
	if len(ss) == 0 {
		return fmt.Errorf("session entry of key %s without sessions", so.kc.Format(k))
	}
	so.tracking = true
	i, r := so.row(k)
	r.set(ss)
	so.setTimer(i, r, r.next(so.lateness))
	return nil
}
