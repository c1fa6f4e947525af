package flowcore

import (
	"container/heap"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Windows assigns events to event-time windows [start, start+size), one
// every slide: tumbling when slide == size, sliding (hopping) when slide <
// size. Starts are multiples of slide since the Unix epoch.
type Windows struct {
	size, slide int64 // ns
	global      bool
}

// Global is one window per key over all of event time: it fires when the
// input ends (the watermark completes), and earlier with FireEvery.
func Global() Windows { return Windows{global: true} }

// Tumbling windows of the given size.
func Tumbling(size time.Duration) Windows { return Windows{size: int64(size), slide: int64(size)} }

// Sliding windows of the given size, one starting every slide.
func Sliding(size, slide time.Duration) Windows {
	return Windows{size: int64(size), slide: int64(slide)}
}

// WindowOption configures WindowAggregate.
type WindowOption struct {
	lateness time.Duration
	every    int
	early    time.Duration
}

// EarlyEvery emits an Early result of every window that changed, each d of
// processing time, before the watermark closes it (a periodic trigger).
// Early results depend on when they fire, not only on the events.
func EarlyEvery(d time.Duration) WindowOption { return WindowOption{early: d} }

// FireEvery emits an Early result of a window every n events, before the
// watermark closes it (a count trigger).
func FireEvery(n int) WindowOption { return WindowOption{every: n} }

// AllowedLateness keeps a window's state for d after the watermark passed
// its end: a late event inside that time updates the window and emits a
// Late refinement; a later one goes to the TooLate output.
func AllowedLateness(d time.Duration) WindowOption { return WindowOption{lateness: d} }

// Firing says why a window result was emitted.
type Firing uint8

const (
	OnTime Firing = iota // the watermark passed the window's end
	Late                 // a late event refined an already fired window
	Early                // a trigger fired before the watermark closed the window
)

func (f Firing) String() string {
	switch f {
	case Late:
		return "late"
	case Early:
		return "early"
	}
	return "on-time"
}

// MarshalText prints the firing in JSON answers.
func (f Firing) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

// WindowResult is a window's value for a key.
type WindowResult[K comparable, A any] struct {
	Key    K
	Start  time.Time
	End    time.Time
	Value  A
	Firing Firing
}

// Windowed is the result of WindowAggregate.
type Windowed[K comparable, T, A any] struct {
	f       *Flow
	op      int
	w       Windows
	session bool
	in      KeyedStream[K, T]
	ac      Codec[A] // the accumulator's (WindowAggregate)
}

// WindowAggregate folds every event of a key into the event-time windows
// that contain it, starting from init(), and emits each window's value
// when the watermark passes its end (OnTime), then again for each late
// event within the allowed lateness (Late). Events too late for all their
// windows go to TooLate: never dropped silently. Window state lives in the
// fragment and is checkpointed. The keyed stream's source needs event time
// (WithEventTime).
//
// Tumbling windows keep one accumulator per key and window. Sliding
// windows without a merge do too, and an event updates each of the
// size/slide windows over it: give WindowAggregateMerge a merge to share
// slices between them instead.
func WindowAggregate[K comparable, T, A any](ks KeyedStream[K, T], w Windows, init func() A, add func(A, T) A, opts ...WindowOption) Windowed[K, T, A] {
	return windowAggregate(ks, "WindowAggregate", w, init, add, nil, nil, opts)
}

// WindowAggregateMerge is WindowAggregate for accumulators that merge:
// merge(a, b) is the accumulator of the events of a and of b, associative,
// with init() neutral. It may change and return a, and must neither change
// b nor keep a reference to it. Sliding windows then keep a key's events in
// slices of gcd(size, slide) — an event updates one slice, however many
// windows are over it — and combine a window from its slices when it
// fires: the state per key depends on the time its windows span, not on
// how many overlap. Results, firings, lateness and views are
// WindowAggregate's. Early triggers (FireEvery, EarlyEvery) and the global
// window keep a state per window, as WindowAggregate does.
func WindowAggregateMerge[K comparable, T, A any](ks KeyedStream[K, T], w Windows, init func() A, add func(A, T) A, merge func(A, A) A,
	opts ...WindowOption) Windowed[K, T, A] {
	if merge == nil {
		ks.f.errorf("WindowAggregateMerge: merge must not be nil")
	}
	return windowAggregate(ks, "WindowAggregateMerge", w, init, add, merge, nil, opts)
}

// WindowAggregateInvertible is WindowAggregateMerge for accumulators that
// form a commutative group: merge is also commutative, and inverse(a, b),
// for b the accumulator of some of a's events, is the accumulator of a's
// other events (a count or a sum: a - b). A sliding window then fires
// from the key's previous window — merging the slices that entered and
// taking out those that left — instead of combining every slice of the
// window: a firing costs a slide's slices, not a window's. Results are
// WindowAggregateMerge's where the group is exact (integers; a float sum
// rounds differently). A result may hold the running total: init, add,
// merge and inverse must return accumulators that share nothing the next
// call changes (values, not maps or slices changed in place).
func WindowAggregateInvertible[K comparable, T, A any](ks KeyedStream[K, T], w Windows, init func() A, add func(A, T) A,
	merge, inverse func(A, A) A, opts ...WindowOption) Windowed[K, T, A] {
	if merge == nil || inverse == nil {
		ks.f.errorf("WindowAggregateInvertible: merge and inverse must not be nil")
	}
	return windowAggregate(ks, "WindowAggregateInvertible", w, init, add, merge, inverse, opts)
}

func windowAggregate[K comparable, T, A any](ks KeyedStream[K, T], name string, w Windows, init func() A, add func(A, T) A, merge, inverse func(A, A) A,
	opts []WindowOption) Windowed[K, T, A] {
	f := ks.f
	if !w.global && (w.size <= 0 || w.slide <= 0 || w.slide > w.size) {
		f.errorf("%s: windows need 0 < slide <= size, got size %v, slide %v", name, time.Duration(w.size), time.Duration(w.slide))
	}
	f.checkSpan(name+": window size", time.Duration(w.size))
	if init == nil || add == nil {
		f.errorf("%s: init and add must not be nil", name)
	}
	every, early := 0, time.Duration(0)
	for _, o := range opts {
		if o.every < 0 {
			f.errorf("%s: FireEvery needs a positive count, got %d", name, o.every)
		}
		if o.early < 0 {
			f.errorf("%s: EarlyEvery needs a positive period, got %v", name, o.early)
		}
		every, early = max(every, o.every), max(early, o.early)
	}
	// Sliced windows keep their state in slices, the others per window:
	// the layout tells them apart.
	sliced := slicedWindows(w, merge != nil, every, early)
	what := w.layout()
	if sliced {
		what += ", in slices"
	}
	lateness, ac, op := windowOperator[A](f, name, what, ks.stage, opts)
	f.fragW = append(f.fragW, func(fr *Fragment) {
		if sliced {
			so := newSliceOp(op, w, lateness, init, add, merge, inverse, ks.kc, ac)
			fr.ops[op] = so
			fr.addTimers(ks.stage, so)
			// A batch at once when nothing else is called per record in
			// between: its outputs (late refinements, too-late events)
			// come in the order the record loop makes them.
			ks.subscribeBulk(fr, func(k K, v T) { so.event(fr, k, v) }, so.bulk, func() bool {
				return len(fr.stages[ks.stage].(*fragStage[K, T]).subs) == 1
			})
			return
		}
		wo := &windowOp[K, T, A]{op: op, w: w, lateness: lateness, every: every, early: int64(early), init: init, add: add, kc: ks.kc, ac: ac,
			state: map[winKey[K]]*winState[A]{}, dirty: map[winKey[K]]struct{}{}, byStart: map[int64]map[K]*winState[A]{}}
		fr.ops[op] = wo
		fr.addTimers(ks.stage, wo)
		ks.subscribe(fr, func(k K, v T) { wo.event(fr, k, v) })
	})
	return Windowed[K, T, A]{f: f, op: op, w: w, in: ks, ac: ac}
}

// ByKey is the stream of window results keyed by their key. A key's
// results come from its own fragment, so stateful operators (Count,
// Aggregate, Process) follow without a shuffle: for instance the number of
// sessions of every user. Operators in event time after it (windows,
// sessions, a Process's timers) see a result that a move of the
// watermark fired as made before that move, as one sent through KeyBy
// would be: on time for their windows that the same move fires.
func (w Windowed[K, T, A]) ByKey() KeyedStream[K, WindowResult[K, A]] {
	f := w.f
	stage := len(f.stages)
	parent := f.stages[w.in.stage]
	f.stages = append(f.stages, stageDef{name: parent.name + ".windows", source: parent.source, edge: -1, parent: w.in.stage})
	ks := KeyedStream[K, WindowResult[K, A]]{f: f, stage: stage, kc: w.in.kc, hash: w.in.hash}
	f.fragW = append(f.fragW, func(fr *Fragment) {
		st := &fragStage[K, WindowResult[K, A]]{kc: w.in.kc}
		fr.stages[stage] = st
		subs, _ := fr.ops[w.op].(windowOutputs[K, T, A]).outputs()
		*subs = append(*subs, func(r WindowResult[K, A]) {
			fr.behindFiring(func() {
				for _, s := range st.subs {
					s(r.Key, r)
				}
			})
		})
	})
	return ks
}

// windowOutputs is what WindowAggregate's and SessionAggregate's operators
// share: their result and too-late subscribers.
type windowOutputs[K comparable, T, A any] interface {
	outputs() (*[]func(WindowResult[K, A]), *[]func(T))
}

// windowOperator checks what every window operator needs (event time, a
// lateness that is not negative, a codec for the accumulator) and reserves
// the operator's slot.
func windowOperator[A any](f *Flow, name, what string, stage int, opts []WindowOption) (lateness int64, ac Codec[A], op int) {
	if src := f.sources[f.stages[stage].source]; src.et == nil {
		f.errorf("%s: source %q has no event time (flows.WithEventTime)", name, src.name)
	}
	for _, o := range opts {
		if o.lateness < 0 {
			f.errorf("%s: negative allowed lateness %v", name, o.lateness)
		}
		f.checkSpan(name+": allowed lateness", o.lateness)
		lateness = max(lateness, int64(o.lateness))
	}
	ac = stateCodec[A](f, name, nil)
	op = f.addOp(stage, fmt.Sprintf("%s of %s, %s", name, typeName[A](), what))
	return lateness, ac, op
}

// Results is the stream of window results.
func (w Windowed[K, T, A]) Results() Stream[WindowResult[K, A]] {
	return Stream[WindowResult[K, A]]{f: w.f, what: "windows", side: fragmentSide, stage: w.in.stage,
		attach: func(c *core, fn func(WindowResult[K, A])) {
			subs, _ := c.frag.ops[w.op].(windowOutputs[K, T, A]).outputs()
			*subs = append(*subs, fn)
		}}
}

// TooLate is the stream of events that arrived after every window they
// belong to had expired (watermark past end + allowed lateness).
func (w Windowed[K, T, A]) TooLate() Stream[T] {
	return Stream[T]{f: w.f, what: "windows.TooLate", side: fragmentSide, stage: w.in.stage,
		attach: func(c *core, fn func(T)) {
			_, late := c.frag.ops[w.op].(windowOutputs[K, T, A]).outputs()
			*late = append(*late, fn)
		}}
}

func (wo *windowOp[K, T, A]) outputs() (*[]func(WindowResult[K, A]), *[]func(T)) {
	return &wo.subs, &wo.late
}

type winKey[K comparable] struct {
	key   K
	start int64
}

type winState[A any] struct {
	acc     A
	n       int    // events since the last early firing (FireEvery)
	changed bool   // since the last periodic early firing (EarlyEvery)
	fired   bool   // the on-time firing happened
	dirty   bool   // in windowOp.dirty
	stamp   uint64 // the fragment's generation when acc last changed, for a KeyedView's watches (viewchanges.go)
}

// winTimer fires a window (cleanup false) or drops its state (cleanup true).
type winTimer[K comparable] struct {
	at      int64
	w       winKey[K]
	cleanup bool
}

type winHeap[K comparable] []winTimer[K]

func (h winHeap[K]) Len() int           { return len(h) }
func (h winHeap[K]) Less(i, j int) bool { return h[i].at < h[j].at }
func (h winHeap[K]) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *winHeap[K]) Push(x any)        { *h = append(*h, x.(winTimer[K])) }
func (h *winHeap[K]) Pop() any {
	x := (*h)[len(*h)-1]
	*h = (*h)[:len(*h)-1]
	return x
}

type windowOp[K comparable, T, A any] struct {
	op        int
	fkey      K // the key and start of the window firing now
	fstart    int64
	fearly    bool // the firing now is an early one (processing time)
	w         Windows
	lateness  int64
	every     int   // FireEvery; 0: none
	early     int64 // EarlyEvery (ns); 0: none
	lastEarly int64 // processing time of the last periodic early firing
	init      func() A
	add       func(A, T) A
	kc        KeyCodec[K]
	ac        Codec[A]
	state     map[winKey[K]]*winState[A]
	dirty     map[winKey[K]]struct{} // set or deleted since the last checkpoint
	timers    winHeap[K]
	subs      []func(WindowResult[K, A])
	late      []func(T)
	// views (WindowView, KeyedView) see each window's keys: byStart
	// indexes the state by window start, kept only when there are views.
	views   []windowHook[K, A]
	byStart map[int64]map[K]*winState[A]
	gen     *uint64 // the fragment's publish generation, once a KeyedView tracks changes
}

// windowIndexed is what views (WindowView, KeyedView) need of a window
// operator: to hear of windows that close, and to read the open ones.
type windowIndexed[K comparable, A any] interface {
	addView(h windowHook[K, A])
	openWindows() openWindows[K, A]
	// trackChanges has the operator stamp what changes with the
	// fragment's generation gen (openChanged).
	trackChanges(gen *uint64)
}

// openWindows are the windows whose state a window operator holds.
type openWindows[K comparable, A any] interface {
	// openStarts lists the starts of open windows (in no order).
	openStarts() []int64
	// openCount is the number of keys of window s.
	openCount(s int64) int
	// openEach calls fn with every key of window s and its value.
	openEach(s int64, fn func(K, A))
	// openGet is key k's value in window s.
	openGet(s int64, k K) (A, bool)
	// openChanged calls fn with every key of window s whose value may
	// have changed in generation since or later (trackChanges), and its
	// value; it may name keys that did not change.
	openChanged(s int64, since uint64, fn func(K, A))
}

func (wo *windowOp[K, T, A]) addView(h windowHook[K, A]) { wo.views = append(wo.views, h) }

func (wo *windowOp[K, T, A]) openWindows() openWindows[K, A] { return wo }

func (wo *windowOp[K, T, A]) openStarts() []int64 {
	out := make([]int64, 0, len(wo.byStart))
	for s := range wo.byStart {
		out = append(out, s)
	}
	return out
}

func (wo *windowOp[K, T, A]) openCount(s int64) int { return len(wo.byStart[s]) }

func (wo *windowOp[K, T, A]) openEach(s int64, fn func(K, A)) {
	for k, st := range wo.byStart[s] {
		fn(k, st.acc)
	}
}

func (wo *windowOp[K, T, A]) trackChanges(gen *uint64) { wo.gen = gen }

func (wo *windowOp[K, T, A]) openChanged(s int64, since uint64, fn func(K, A)) {
	for k, st := range wo.byStart[s] {
		if st.stamp >= since {
			fn(k, st.acc)
		}
	}
}

func (wo *windowOp[K, T, A]) openGet(s int64, k K) (A, bool) {
	if st, ok := wo.byStart[s][k]; ok {
		return st.acc, true
	}
	var zero A
	return zero, false
}

// windowHook is a view's side of a window operator (WindowView,
// Windowed.KeyedView).
type windowHook[K comparable, A any] interface {
	// closeWindow takes a key's final value of a window as its state goes.
	closeWindow(k K, start int64, acc A)
	// expire drops what the view retains no longer, at watermark wm.
	expire(fr *Fragment, wm int64)
}

// index adds a new window state to byStart.
func (wo *windowOp[K, T, A]) index(wk winKey[K], st *winState[A]) {
	if len(wo.views) == 0 {
		return
	}
	m := wo.byStart[wk.start]
	if m == nil {
		m = map[K]*winState[A]{}
		wo.byStart[wk.start] = m
	}
	m[wk.key] = st
}

// unindex removes a window state that goes, handing its value to the views.
func (wo *windowOp[K, T, A]) unindex(wk winKey[K], st *winState[A]) {
	if len(wo.views) == 0 {
		return
	}
	for _, v := range wo.views {
		v.closeWindow(wk.key, wk.start, st.acc)
	}
	if m := wo.byStart[wk.start]; m != nil {
		delete(m, wk.key)
		if len(m) == 0 {
			delete(wo.byStart, wk.start)
		}
	}
}

func (wo *windowOp[K, T, A]) event(fr *Fragment, k K, v T) {
	ts, wm := fr.cur.TS, fr.wm()
	if wo.w.global {
		wo.place(k, v, 0, wm)
		return
	}
	// The last window containing ts starts at the multiple of slide at or
	// before ts; earlier ones every slide back while they still cover ts.
	last := ts - mod(ts, wo.w.slide)
	placed := false
	for s := last; s > ts-wo.w.size; s -= wo.w.slide {
		if wm != NoWatermark && s+wo.w.size+wo.lateness <= wm {
			continue // expired
		}
		placed = true
		wo.place(k, v, s, wm)
	}
	if !placed {
		fr.tooLate++
		for _, l := range wo.late {
			l(v)
		}
	}
}

// end is the end of the window starting at s (never, for a global one).
func (wo *windowOp[K, T, A]) end(s int64) int64 {
	if wo.w.global {
		return math.MaxInt64
	}
	return s + wo.w.size
}

// place adds an event to the window starting at s.
func (wo *windowOp[K, T, A]) place(k K, v T, s, wm int64) {
	end := wo.end(s)
	wk := winKey[K]{k, s}
	st, ok := wo.state[wk]
	if !ok {
		st = &winState[A]{acc: wo.init()}
		heap.Push(&wo.timers, winTimer[K]{at: end, w: wk})
		heap.Push(&wo.timers, winTimer[K]{at: satAdd(end, wo.lateness), w: wk, cleanup: true})
	}
	st.acc = wo.add(st.acc, v)
	st.n++
	st.changed = true
	if wo.gen != nil {
		st.stamp = *wo.gen
	}
	if !ok {
		wo.state[wk] = st
		wo.index(wk, st)
	}
	wo.touch(wk, st)
	// A late event within the allowed lateness refines a fired window, or
	// completes one past the watermark that had no event yet: either way
	// the result goes out now, as late.
	if st.fired || (wm != NoWatermark && end <= wm) {
		if !st.fired {
			st.fired = true
		}
		wo.emit(wk, st, Late)
		return
	}
	if wo.every > 0 && st.n >= wo.every {
		st.n = 0
		wo.emit(wk, st, Early)
	}
}

// satAdd adds without overflowing past math.MaxInt64.
func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// touch records a window changed since the last checkpoint.
func (wo *windowOp[K, T, A]) touch(wk winKey[K], st *winState[A]) {
	if !st.dirty {
		st.dirty = true
		wo.dirty[wk] = struct{}{}
	}
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

func (wo *windowOp[K, T, A]) emit(wk winKey[K], st *winState[A], f Firing) {
	r := WindowResult[K, A]{Key: wk.key, Value: st.acc, Firing: f}
	if !wo.w.global { // a global window has no bounds: zero times
		r.Start, r.End = time.Unix(0, wk.start).UTC(), time.Unix(0, wk.start+wo.w.size).UTC()
	}
	for _, s := range wo.subs {
		s(r)
	}
}

// fire is the periodic trigger: on processing time, every changed window
// that has not fired on time emits an Early result.
func (wo *windowOp[K, T, A]) fire(fr *Fragment, now time.Time) {
	if wo.early == 0 || now.UnixNano()-wo.lastEarly < wo.early {
		return
	}
	wo.lastEarly = now.UnixNano()
	for wk, st := range wo.state {
		if st.changed && !st.fired {
			st.changed = false
			wo.fkey, wo.fearly = wk.key, true
			fr.firing(CauseProcessingTimer, wo.op, now.UnixNano(), wo.resultTime(fr, wk), wo)
			wo.emit(wk, st, Early)
		}
	}
}

// firingKey is the key of a window's outputs. A window fires on time
// once, at its end, which the outputs' At holds: the key alone names it
// with that, and a string key is its own (no copy, no allocation per
// result); sliceOp's names are the same, so that state moved between the
// two layouts replays with the same ids. Early firings happen at any
// processing time: their key names the window's start too.
func (wo *windowOp[K, T, A]) firingKey() string {
	if wo.fearly {
		return windowFiringKey(wo.kc, wo.fkey, wo.fstart)
	}
	return wo.kc.Format(wo.fkey)
}

// resultTime is the event time of a window's result: its last instant
// (the watermark, for a global window).
func (wo *windowOp[K, T, A]) resultTime(fr *Fragment, wk winKey[K]) int64 {
	wo.fstart = wk.start
	if wo.w.global {
		return max(fr.wm(), 0)
	}
	return wk.start + wo.w.size - 1
}

// fireEvent fires the windows whose end the watermark passed, and drops the
// ones past their allowed lateness. A window's firing happens before its
// cleanup (timers at the same time fire in push order, firing first).
func (wo *windowOp[K, T, A]) fireEvent(fr *Fragment, wm int64) {
	for len(wo.timers) > 0 && wo.timers[0].at <= wm {
		t := heap.Pop(&wo.timers).(winTimer[K])
		st, ok := wo.state[t.w]
		if !ok {
			continue
		}
		if !t.cleanup {
			if !st.fired {
				st.fired = true
				wo.touch(t.w, st)
				wo.fkey, wo.fearly = t.w.key, false
				fr.firing(CauseWindow, wo.op, wo.end(t.w.start), wo.resultTime(fr, t.w), wo)
				wo.emit(t.w, st, OnTime)
			}
			continue
		}
		if !st.fired { // cleanup due before the firing was seen: fire first
			wo.fkey, wo.fearly = t.w.key, false
			fr.firing(CauseWindow, wo.op, wo.end(t.w.start), wo.resultTime(fr, t.w), wo)
			wo.emit(t.w, st, OnTime)
		}
		wo.unindex(t.w, st)
		delete(wo.state, t.w)
		wo.dirty[t.w] = struct{}{}
	}
	for _, v := range wo.views {
		v.expire(fr, wm)
	}
}

// Window state entries: key = start (8 bytes) + key; value = fired byte +
// accumulator. Timers follow from the state on restore.
func (wo *windowOp[K, T, A]) delta(ns uint16, d *Delta) error {
	for wk := range wo.dirty {
		key := binary.BigEndian.AppendUint64(nil, uint64(wk.start))
		key, err := wo.kc.Append(key, wk.key)
		if err != nil {
			return fmt.Errorf("encode window key: %w", err)
		}
		st, ok := wo.state[wk]
		if !ok {
			d.Deletes = append(d.Deletes, StateEntry{Namespace: ns, Key: key})
			continue
		}
		st.dirty = false
		val := []byte{0}
		if st.fired {
			val[0] = 1
		}
		val = binary.AppendUvarint(val, uint64(st.n))
		if val, err = wo.ac.Append(val, st.acc); err != nil {
			return fmt.Errorf("encode window state: %w", err)
		}
		d.Puts = append(d.Puts, StateEntry{Namespace: ns, Key: key, Value: val})
	}
	clear(wo.dirty)
	d.Entries += int64(len(wo.state))
	return nil
}

func (wo *windowOp[K, T, A]) restore(_ uint16, key, val []byte) error {
	if len(key) < 8 || len(val) < 1 {
		return fmt.Errorf("window entry of %d+%d bytes", len(key), len(val))
	}
	if val[0] > 1 {
		return fmt.Errorf("window entry of kind %d: the state was kept in slices (WindowAggregateMerge)", val[0])
	}
	k, err := wo.kc.Decode(key[8:])
	if err != nil {
		return fmt.Errorf("decode window key: %w", err)
	}
	n, l := binary.Uvarint(val[1:])
	if l <= 0 {
		return fmt.Errorf("window entry: bad count")
	}
	acc, err := wo.ac.Decode(val[1+l:])
	if err != nil {
		return fmt.Errorf("decode window state: %w", err)
	}
	wk := winKey[K]{k, int64(binary.BigEndian.Uint64(key))}
	st := &winState[A]{acc: acc, fired: val[0] == 1, n: int(n)}
	wo.state[wk] = st
	wo.index(wk, st)
	end := wo.end(wk.start)
	if !st.fired {
		heap.Push(&wo.timers, winTimer[K]{at: end, w: wk})
	}
	heap.Push(&wo.timers, winTimer[K]{at: satAdd(end, wo.lateness), w: wk, cleanup: true})
	return nil
}

// windowFiringKey is the key of a window's early outputs: the key and the
// start ("key@start"), made in one allocation.
func windowFiringKey[K comparable](kc KeyCodec[K], k K, start int64) string {
	ks := kc.Format(k)
	var b strings.Builder
	b.Grow(len(ks) + 21)
	b.WriteString(ks)
	b.WriteByte('@')
	var num [20]byte
	b.Write(strconv.AppendInt(num[:0], start, 10))
	return b.String()
}
