package flowcore

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"
)

// Window slicing (Flink's panes; Scotty, Traub et al., ICDE 2018): the
// event-time axis is cut into slices of gcd(size, slide), aligned as
// windows are, so that every window is a whole number of slices and every
// slice lies in the same windows as each of its instants. A key keeps one
// accumulator per slice that has events; an event updates its slice only,
// whatever the number of windows over it. A window's value is combined
// from its slices with the aggregate's merge when it is asked for: at its
// firing, a late refinement, its close (views) or a query.
//
// Combining recomputes a window from its slices each time, in time order,
// starting from init(): a result costs one merge per non-empty slice of
// the key in the window (at most size/gcd), and the state holds nothing
// but the slices. A two-stack or an aggregate tree would make a result
// O(1) amortised merges, but would keep a partial per slice and need a
// copy of accumulators that merge may modify; with the slices' counts
// seen here (tens per window) recomputing is cheaper than keeping them.
// An algebra with an inverse (WindowAggregateInvertible: counts, sums)
// keeps a running total per key instead: a firing takes out the slices
// that left the window and merges those that entered, which reads the
// slices at the front of the key's array and those just after the
// window's (found by the number of slices the total holds), none of the
// others.
//
// Tumbling windows are slices of their own size: a window is one slice and
// needs no merge. Early triggers (FireEvery, EarlyEvery) count and mark
// per window, and the global window has no slices: both keep windowOp's
// state per window.
//
// Layout: a key's slices are one sorted slice of (start, accumulator) in
// a flat table of keys, found through one map from key to row. One timer
// per key (its next firing or cleanup) stands for all its windows; timers
// sit in buckets by time (see sliceBucket). A bucket's keys fire in
// order, what their time means worked out once for all (dueTime), and
// the state of the next few keys loaded while these fire (warm). A
// batch's events likewise look their keys' rows and slices up a few dozen
// at a time before they apply (bulk).

// slicedWindows says whether WindowAggregate keeps slices for windows w
// with these options: merge is needed where a window spans slices.
func slicedWindows(w Windows, hasMerge bool, every int, early time.Duration) bool {
	return !w.global && every == 0 && early == 0 && (hasMerge || w.slide == w.size)
}

// sliceAcc is a key's accumulator of one slice.
type sliceAcc[A any] struct {
	start int64
	acc   A
	dirty bool // in sliceOp.dirty since the last checkpoint
	saved bool // written by a checkpoint: dropping it writes a delete
}

// sliceKey is a key's row: its slices, sorted by start, and the time of
// its next firing or cleanup (its timer).
type sliceKey[K comparable, A any] struct {
	key    K
	slices []sliceAcc[A]
	buf    []sliceAcc[A] // slices' array from its first element: dropped slices leave room before slices
	due    int64
	timed  bool // due is set: an entry in sliceOp.buckets stands for it
	// stamp: the fragment's generation when any of the key's slices last
	// changed, for a KeyedView's watches (one per key, not per slice: a
	// watch may be told of a key's window that did not change).
	stamp uint64
	// A running total, with an inverse (valid while hasRun): run is the
	// merge of the key's slices in window rj, runN of them, so the slices
	// after the window's are found without a search. A cleanup takes out
	// the slices it drops: when window rj fires, none of its slices was
	// dropped (a slice goes with the last window over it).
	// tail is the start of the key's last slice, when it has any.
	run    A
	rj     int64
	runN   int32
	hasRun bool
	tail   int64
}

// sliceBucket holds the timers set for one time: the rows of the keys
// due then, in the order they were set. A row's due is the truth; an
// entry that no longer matches it is stale. Every time a key is due at is
// a window's end or its cleanup, on the grid of the slide: a fragment's
// keys share few distinct times, and firing a key costs an append to the
// bucket of its next time, not a sift through a heap of every key.
type sliceBucket struct {
	at   int64
	rows []int32
}

type sliceOp[K comparable, T, A any] struct {
	op                int
	size, slide, gran int64 // gran: the slices' length, gcd(size, slide)
	lateness          int64
	init              func() A
	add               func(A, T) A
	merge             func(A, A) A // nil for tumbling windows
	inverse           func(A, A) A // nil without one, and for tumbling windows
	kc                KeyCodec[K]
	ac                Codec[A]
	rows              map[K]int32
	keys              []sliceKey[K, A]
	free              []int32       // rows of keys without slices
	buckets           []sliceBucket // sorted by time, each time once
	spare             [][]int32     // emptied buckets' rows, for reuse
	hint              int           // the bucket last set: keys fired together are due together next
	// fired: the watermark the windows followed. Every window ending at
	// or before it fired, and every one whose end + lateness is at or
	// before it is gone.
	fired               int64
	nslices             int64
	reschedule          bool // restored: timers follow from the state at the next event or watermark
	fkey                K    // the key of the window firing now
	subs                []func(WindowResult[K, A])
	late                []func(T)
	views               []windowHook[K, A]
	byStart             map[int64]map[K]struct{} // slice start → keys, kept only when there are views
	tracking            bool                     // dirty is kept: a checkpoint was taken or restored
	dirty               []winKey[K]              // slices set or dropped since the last checkpoint
	firedSaved, wStored bool                     // the fired mark in the last checkpoint is current; one is stored
	restoredW           bool                     // a restore read the fired mark (windowOp's entries have none)
	gen                 *uint64                  // the fragment's publish generation, once a KeyedView tracks changes
	warmed              int64                    // warm's sum, kept so that its loads are not dropped
	spans               [2]sliceSpan             // span's answers
	spanNext            int                      // the one of spans span replaces next
	// The bounds of window emitJ, the last one emitted (if emitted).
	emitted            bool
	emitJ              int64
	emitStart, emitEnd time.Time
}

func newSliceOp[K comparable, T, A any](op int, w Windows, lateness int64, init func() A, add func(A, T) A, merge, inverse func(A, A) A,
	kc KeyCodec[K], ac Codec[A]) *sliceOp[K, T, A] {
	gran := gcd(w.size, w.slide)
	if gran == w.size {
		inverse = nil // a window is one slice: nothing to run
	}
	so := &sliceOp[K, T, A]{op: op, size: w.size, slide: w.slide, gran: gran, lateness: lateness,
		init: init, add: add, merge: merge, inverse: inverse, kc: kc, ac: ac, rows: map[K]int32{}, fired: NoWatermark,
		byStart: map[int64]map[K]struct{}{}}
	so.spans[0] = sliceSpan{0, so.first(0), so.last(0)}
	so.spans[1] = so.spans[0]
	return so
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// floorDiv is a/b rounded down (b > 0).
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

func (so *sliceOp[K, T, A]) outputs() (*[]func(WindowResult[K, A]), *[]func(T)) {
	return &so.subs, &so.late
}

func (so *sliceOp[K, T, A]) addView(h windowHook[K, A]) { so.views = append(so.views, h) }

func (so *sliceOp[K, T, A]) openWindows() openWindows[K, A] { return so }

// end of window j (the one starting at j*slide), and the time its state
// goes.
func (so *sliceOp[K, T, A]) end(j int64) int64     { return j*so.slide + so.size }
func (so *sliceOp[K, T, A]) cleanup(j int64) int64 { return satAdd(so.end(j), so.lateness) }

// first and last window over slice t.
func (so *sliceOp[K, T, A]) first(t int64) int64 { return floorDiv(t-so.size, so.slide) + 1 }
func (so *sliceOp[K, T, A]) last(t int64) int64  { return floorDiv(t, so.slide) }

// sliceSpan is the first and last window over slice t.
type sliceSpan struct{ t, first, last int64 }

// span is first and last of slice t, kept for the two slice starts asked
// for last: a firing asks them of every key it fires, several times
// each, and at one time every key's first slices start at the same few
// times (two divisions each, most often answered by a comparison).
func (so *sliceOp[K, T, A]) span(t int64) (first, last int64) {
	if m := &so.spans[0]; m.t == t {
		return m.first, m.last
	}
	if m := &so.spans[1]; m.t == t {
		return m.first, m.last
	}
	m := &so.spans[so.spanNext]
	so.spanNext ^= 1
	*m = sliceSpan{t, so.first(t), so.last(t)}
	return m.first, m.last
}

func (so *sliceOp[K, T, A]) event(fr *Fragment, k K, v T) { so.eventRow(fr, k, v, -1) }

// eventRow is event for a key whose row is known (-1: not known).
func (so *sliceOp[K, T, A]) eventRow(fr *Fragment, k K, v T, row int32) {
	if so.reschedule {
		so.schedule()
	}
	ts, wm := fr.cur.TS, fr.wm()
	so.advance(wm)
	jmax := so.last(ts)
	if wm != NoWatermark && so.cleanup(jmax) <= wm {
		fr.tooLate++ // every window over ts is gone
		for _, l := range so.late {
			l(v)
		}
		return
	}
	t := ts - mod(ts, so.gran)
	ok := row >= 0
	if !ok {
		row, ok = so.rows[k]
	}
	if !ok {
		row = so.newRow(k)
	}
	ks := &so.keys[row]
	i, created := so.slice(ks, t)
	s := &ks.slices[i]
	s.acc = so.add(s.acc, v)
	so.touch(k, s)
	if ks.hasRun {
		so.runEvent(ks, t, v, created)
	}
	if so.gen != nil {
		ks.stamp = *so.gen
	}
	if created {
		so.nslices++
		so.index(k, t)
		// The slice's windows may fire before the key's timer. A timed
		// key's due is at or before every time its other slices have
		// left, so only the new slice's own times can move it.
		var at int64
		if ks.timed {
			at, ok = so.sliceDue(t, so.fired)
		} else {
			at, ok = so.nextDue(ks, so.fired)
		}
		if ok && (!ks.timed || at < ks.due) {
			so.setTimer(row, at)
		}
	}
	// Windows over ts that the watermark passed, within the allowed
	// lateness, are refined now (latest first, as they were placed).
	if wm == NoWatermark || so.end(so.first(ts)) > so.fired {
		return
	}
	for j := jmax; j >= so.first(ts); j-- {
		if end := so.end(j); end <= so.fired && so.cleanup(j) > wm {
			acc, _ := so.value(ks, j) // the event's slice is in it
			so.emit(k, j, acc, Late)
		}
	}
}

// bulk is event's form for a batch's records (fragStage), for a window
// operator that is its stage's one subscriber. It takes the records
// eventAhead at a time, in three passes: the keys' rows, looked up; then
// for each row the slice its record goes to (where slice looks first, or
// the entry an append writes) read; then the records applied, the
// fragment's current record set as the record loop would (bulkEvent). A
// key's row and its slices are most often out of the cache (a fragment's
// keys are touched about once a slice, and a sliding key's array spans its
// windows' slices): record by record, an event waits for the map's entry,
// then the row, then the slice, in turn. In passes, the loads of one pass
// do not wait for one another and are in flight together, and the
// records apply from the cache. A row found by the first pass stays the
// key's: rows are freed by firings and cleanups only, which run between
// batches. A key not found then is looked up again at its record (a
// record before it may have made its row).
func (so *sliceOp[K, T, A]) bulk(fr *Fragment, items []Rec[K, T], ts []int64, from int64) {
	var rows [eventAhead]int32
	var sink int64
	for lo := 0; lo < len(items); lo += eventAhead {
		part := items[lo:min(lo+eventAhead, len(items))]
		for i := range part {
			row, ok := so.rows[part[i].Key]
			if !ok {
				row = -1
			}
			rows[i] = row
		}
		if ts != nil {
			for i, row := range rows[:len(part)] {
				if row < 0 {
					continue
				}
				ks := &so.keys[row]
				n := len(ks.slices)
				if n == 0 {
					continue
				}
				// The record's slice, where slice guesses it first; or the
				// next, which an append writes.
				t := ts[lo+i] - mod(ts[lo+i], so.gran)
				if t > ks.tail {
					if n < cap(ks.slices) {
						sink += ks.slices[:n+1][n].start
					}
					continue
				}
				sink += ks.slices[max(n-1-int(min((ks.tail-t)/so.gran, int64(n-1))), 0)].start
			}
		}
		for i := range part {
			it := &part[i]
			if it.Off < from {
				continue
			}
			bulkEvent(fr, items, ts, lo+i)
			so.eventRow(fr, it.Key, it.Val, rows[i])
		}
	}
	so.warmed += sink
}

// eventAhead is how many records bulk takes at once: enough loads in
// flight to hide most of their latency, few enough that their lines stay
// in the cache until the records apply.
const eventAhead = 32

// runEvent adds an event of slice t to the key's running total if the
// slice is in its window. A later slice is merged when the window reaches
// it: the event's slice holds it.
func (so *sliceOp[K, T, A]) runEvent(ks *sliceKey[K, A], t int64, v T, created bool) {
	if t >= ks.rj*so.slide && t < so.end(ks.rj) {
		ks.run = so.add(ks.run, v)
		if created {
			ks.runN++
		}
	}
}

// newRow takes a row for key k.
func (so *sliceOp[K, T, A]) newRow(k K) int32 {
	var row int32
	if n := len(so.free); n > 0 {
		row, so.free = so.free[n-1], so.free[:n-1]
		so.keys[row].key = k
	} else {
		row = int32(len(so.keys))
		so.keys = append(so.keys, sliceKey[K, A]{key: k})
	}
	so.rows[k] = row
	return row
}

// room moves a key's slices to the front of their array when it is full
// but slices were dropped before them: a drop costs no copy, and a key's
// array is copied once per array's worth of drops, not at every drop. It
// says whether one more slice needs a new array: also when fewer slices
// were dropped than half those kept, as a sliding key's array, full of
// its window's slices, would be copied whole for every slice it gains.
func (ks *sliceKey[K, A]) room() bool {
	if len(ks.slices) < cap(ks.slices) {
		return false
	}
	if before := cap(ks.buf) - cap(ks.slices); before == 0 || before < len(ks.slices)/2 {
		return true
	}
	n := copy(ks.buf[:cap(ks.buf)], ks.slices)
	clear(ks.buf[n:cap(ks.buf)])
	ks.slices = ks.buf[:n]
	return false
}

// slice finds or makes the slice starting at t: in order, a key's next
// slice is its last one or comes after it.
func (so *sliceOp[K, T, A]) slice(ks *sliceKey[K, A], t int64) (int, bool) {
	// The row's tail is its last slice's start: an event's branch does not
	// wait for the key's array, whose line is most often not in the cache
	// (a sliding key's array spans its windows' slices); the update of the
	// accumulator then overlaps with what follows.
	n := len(ks.slices)
	if n > 0 && ks.tail == t {
		return n - 1, false
	}
	if n == 0 || ks.tail < t {
		if ks.room() {
			so.grow(ks)
		}
		ks.slices = append(ks.slices, sliceAcc[A]{start: t, acc: so.init()})
		ks.tail = t
		return n, true
	}
	// Before the tail: most often an event of a partition behind another,
	// some slices back. Starts are distinct and on the grid, so the slice
	// (tail-t)/gran places before the last starts at t or earlier: the
	// first guess, exact when the key has every slice since (most keys of
	// a sliding window have). It reads one line of the key's array where a
	// binary search reads several, out of the cache (a sliding key's array
	// spans its windows' slices).
	i := max(n-1-int(min((ks.tail-t)/so.gran, int64(n-1))), 0)
	for ahead := 0; ks.slices[i].start < t; i++ {
		if ahead++; ahead == 4 {
			i, _ = searchSlices(ks.slices[:n-1], t)
			break
		}
	}
	if ks.slices[i].start == t {
		return i, false
	}
	if ks.room() {
		so.grow(ks)
	}
	ks.slices = slices.Insert(ks.slices, i, sliceAcc[A]{start: t, acc: so.init()})
	return i, true
}

// grow moves a key's slices to a new array with room for more. A key with
// more than a few slices is most often one with events in every slice of
// its windows: its array goes at once to twice its windows' slices (room
// then copies its slices to the front once per window's worth of drops),
// where doubling from one would copy it at every doubling, from memory
// long out of the cache.
func (so *sliceOp[K, T, A]) grow(ks *sliceKey[K, A]) {
	n := len(ks.slices)
	more := 1 // append's growth, up to a size class
	if n >= 4 {
		more = max(int(min(2*(so.size/so.gran), 1024))-n, 1)
	}
	ks.slices = slices.Grow(ks.slices[:n:n], more)
	ks.buf = ks.slices[:0]
}

// searchSlices is the index of the first slice starting at or after t, and
// whether it starts at t (slices.BinarySearchFunc, without its comparator
// call per step).
func searchSlices[A any](ss []sliceAcc[A], t int64) (int, bool) {
	lo, hi := 0, len(ss)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if ss[m].start < t {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, lo < len(ss) && ss[lo].start == t
}

// touch records a slice changed since the last checkpoint.
func (so *sliceOp[K, T, A]) touch(k K, s *sliceAcc[A]) {
	if so.tracking && !s.dirty {
		s.dirty = true
		so.dirty = append(so.dirty, winKey[K]{k, s.start})
	}
}

// window returns the range of the key's slices in window j.
func (so *sliceOp[K, T, A]) window(ks *sliceKey[K, A], j int64) (lo, hi int) {
	lo = so.windowFirst(ks, j)
	hi = lo
	for hi < len(ks.slices) && ks.slices[hi].start < j*so.slide+so.size {
		hi++
	}
	return lo, hi
}

// windowFirst is the index of the key's first slice at or after window
// j's start.
func (so *sliceOp[K, T, A]) windowFirst(ks *sliceKey[K, A], j int64) int {
	// Firings run in time order and cleanups drop slices from the front:
	// the window firing is most often the key's first (no search).
	if s := j * so.slide; len(ks.slices) > 0 && ks.slices[0].start < s {
		lo, _ := searchSlices(ks.slices, s)
		return lo
	}
	return 0
}

// value combines the key's slices of window j, in one pass over them (a
// firing reads up to size/gcd slices: finding the last one first would
// read them twice). ok is false if the window has none.
func (so *sliceOp[K, T, A]) value(ks *sliceKey[K, A], j int64) (acc A, ok bool) {
	ss := ks.slices[so.windowFirst(ks, j):]
	end := j*so.slide + so.size
	if len(ss) == 0 || ss[0].start >= end {
		return acc, false
	}
	if so.merge == nil || len(ss) == 1 || ss[1].start >= end {
		return ss[0].acc, true
	}
	acc = so.init()
	for i := range ss {
		if ss[i].start >= end {
			break
		}
		acc = so.merge(acc, ss[i].acc)
	}
	return acc, true
}

// running is value for a firing with an inverse: the key's running total
// moves on from the window it last fired, one slide behind — taking out
// the slices that left and merging those that entered — instead of
// combining a window's slices. The window's slices are runN in a row from
// its first: those that entered follow them, wherever the key's latest
// events are (the watermark follows the slowest partition, so they may
// run many slides ahead of it). A key that did not fire the window before
// (its first, after a gap, after a restore) combines its slices once.
func (so *sliceOp[K, T, A]) running(ks *sliceKey[K, A], j int64) (A, bool) {
	if ks.hasRun && ks.rj == j-1 {
		i := so.windowFirst(ks, j-1)
		in := i + int(ks.runN)
		// Out: the slices of window j-1 before window j's start (none when
		// a cleanup at the window's end took them out).
		for ; i < in && ks.slices[i].start < j*so.slide; i++ {
			ks.run = so.inverse(ks.run, ks.slices[i].acc)
			ks.runN--
		}
		for end := so.end(j); in < len(ks.slices) && ks.slices[in].start < end; in++ {
			ks.run = so.merge(ks.run, ks.slices[in].acc)
			ks.runN++
		}
		ks.rj = j
	} else if !ks.hasRun || ks.rj != j {
		ks.hasRun, ks.rj, ks.runN, ks.run = true, j, 0, so.init()
		i := so.windowFirst(ks, j)
		for ; i < len(ks.slices) && ks.slices[i].start < so.end(j); i++ {
			ks.run = so.merge(ks.run, ks.slices[i].acc)
			ks.runN++
		}
	}
	return ks.run, ks.runN > 0
}

// combine merges the key's slices lo to hi (one at least).
func (so *sliceOp[K, T, A]) combine(ks *sliceKey[K, A], lo, hi int) A {
	if hi-lo == 1 || so.merge == nil {
		return ks.slices[lo].acc
	}
	acc := so.init()
	for i := lo; i < hi; i++ {
		acc = so.merge(acc, ks.slices[i].acc)
	}
	return acc
}

// nextDue is the time of the key's next firing or cleanup after `after`.
// A slice lies in windows first(t) to last(t), both growing with t: the
// first slice with a window left to fire (or to drop) has the earliest.
func (so *sliceOp[K, T, A]) nextDue(ks *sliceKey[K, A], after int64) (int64, bool) {
	fireFrom, cleanFrom := so.froms(after)
	return so.nextDueFrom(ks, after, fireFrom, cleanFrom)
}

// nextDueFrom is nextDue with froms(after) (a firing's are its keys').
func (so *sliceOp[K, T, A]) nextDueFrom(ks *sliceKey[K, A], after, fireFrom, cleanFrom int64) (int64, bool) {
	best, ok := so.dueFrom(ks, fireFrom, after, false)
	// Without lateness a window goes as it fires: the cleanups' times are
	// the firings' (a firing asks this of every key it fires).
	if so.lateness != 0 {
		if t, found := so.dueFrom(ks, cleanFrom, after, true); found && (!ok || t < best) {
			best, ok = t, true
		}
	}
	return best, ok
}

// dueFrom is the time after `after` that the first of the key's windows
// jfrom or later fires (or goes, with cleanup): that of the first slice
// whose last window is jfrom or later.
func (so *sliceOp[K, T, A]) dueFrom(ks *sliceKey[K, A], jfrom, after int64, cleanup bool) (int64, bool) {
	i := 0
	// Cleanups drop slices from the front: the first slice is most often
	// the one (a search would read the key's slices in the middle first,
	// which a running total does not read).
	if jfrom != math.MinInt64 && len(ks.slices) > 0 && ks.slices[0].start < jfrom*so.slide {
		i, _ = searchSlices(ks.slices, jfrom*so.slide)
	}
	if i >= len(ks.slices) {
		return 0, false
	}
	t := ks.slices[i].start
	first, last := so.span(t)
	j := max(first, jfrom)
	if j > last {
		return 0, false
	}
	at := so.end(j)
	if cleanup {
		at = so.cleanup(j)
	}
	return at, at > after
}

// froms are the first windows ending, and going, after `after`.
func (so *sliceOp[K, T, A]) froms(after int64) (fireFrom, cleanFrom int64) {
	fireFrom, cleanFrom = math.MinInt64, math.MinInt64
	if x := after - so.size; after >= math.MinInt64+so.size {
		fireFrom = floorDiv(x, so.slide) + 1
		if x >= math.MinInt64+so.lateness {
			cleanFrom = floorDiv(x-so.lateness, so.slide) + 1
		}
	}
	return fireFrom, cleanFrom
}

// sliceDue is nextDue of the slice starting at t alone.
func (so *sliceOp[K, T, A]) sliceDue(t, after int64) (int64, bool) {
	fireFrom, cleanFrom := so.froms(after)
	best, ok := int64(0), false
	first, last := so.span(t)
	if j := max(first, fireFrom); j <= last && so.end(j) > after {
		best, ok = so.end(j), true
	}
	if j := max(first, cleanFrom); j <= last {
		if at := so.cleanup(j); at > after && (!ok || at < best) {
			best, ok = at, true
		}
	}
	return best, ok
}

func (so *sliceOp[K, T, A]) setTimer(row int32, at int64) {
	ks := &so.keys[row]
	ks.due, ks.timed = at, true
	b := so.hint
	if b >= len(so.buckets) || so.buckets[b].at != at {
		b = so.bucket(at)
		so.hint = b
	}
	so.buckets[b].rows = append(so.buckets[b].rows, row)
}

// bucket is the index of the bucket of time at, made if there is none.
func (so *sliceOp[K, T, A]) bucket(at int64) int {
	lo, hi := 0, len(so.buckets)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if so.buckets[m].at < at {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(so.buckets) && so.buckets[lo].at == at {
		return lo
	}
	var rows []int32
	if n := len(so.spare); n > 0 {
		rows, so.spare = so.spare[n-1], so.spare[:n-1]
	}
	so.buckets = slices.Insert(so.buckets, lo, sliceBucket{at: at, rows: rows})
	return lo
}

// schedule sets every key's timer from the restored state.
func (so *sliceOp[K, T, A]) schedule() {
	so.reschedule = false
	for row := range so.keys {
		ks := &so.keys[row]
		if len(ks.slices) == 0 {
			continue
		}
		if at, ok := so.nextDue(ks, so.fired); ok {
			so.setTimer(int32(row), at)
		}
	}
}

func (so *sliceOp[K, T, A]) emit(k K, j int64, acc A, f Firing) {
	// A watermark fires one window of every key due: its bounds are made
	// once, not per result.
	if !so.emitted || so.emitJ != j {
		s := j * so.slide
		so.emitted, so.emitJ, so.emitStart, so.emitEnd = true, j, time.Unix(0, s).UTC(), time.Unix(0, s+so.size).UTC()
	}
	r := WindowResult[K, A]{Key: k, Start: so.emitStart, End: so.emitEnd, Value: acc, Firing: f}
	for _, sub := range so.subs {
		sub(r)
	}
}

func (so *sliceOp[K, T, A]) fire(*Fragment, time.Time) {}

// firingKey is the key of a window's outputs: the key alone, as windowOp's
// on-time firings (the outputs' At, the window's end, names the window).
func (so *sliceOp[K, T, A]) firingKey() string { return so.kc.Format(so.fkey) }

// fireEvent runs every key's firings and cleanups up to the watermark, in
// time order: at one time, a key's firing before its cleanup.
func (so *sliceOp[K, T, A]) fireEvent(fr *Fragment, wm int64) {
	if so.reschedule {
		so.schedule()
	}
	for len(so.buckets) > 0 && so.buckets[0].at <= wm {
		// A key's next time is after this one: setting it never adds to
		// this bucket nor puts a bucket before it.
		at, rows := so.buckets[0].at, so.buckets[0].rows
		due := so.dueTime(at)
		so.warm(rows[:min(warmRows, len(rows))])
		for i, row := range rows {
			// The next rows' lines load while these fire.
			if i%warmRows == 0 && i+warmRows < len(rows) {
				so.warm(rows[i+warmRows : min(i+2*warmRows, len(rows))])
			}
			ks := &so.keys[row]
			if !ks.timed || ks.due != at {
				continue // stale: the key's timer moved or it has no state
			}
			if next, ok := so.run(fr, row, due); ok {
				so.setTimer(row, next)
			} else {
				so.keys[row].timed = false
			}
		}
		so.spare = append(so.spare, rows[:0])
		so.buckets = slices.Delete(so.buckets, 0, 1)
		so.hint = max(so.hint-1, 0)
	}
	so.advance(wm)
	for _, v := range so.views {
		v.expire(fr, wm)
	}
}

// warmRows is how many rows of a bucket warm loads at once, while the
// rows before them fire: enough misses in flight to hide most of their
// latency, few enough that the lines stay in the cache until their
// firings read them.
const warmRows = 16

// warm reads the lines the firings of these rows will read — the row,
// its first slice (the one leaving, or dropped) and the first after its
// running total's window (the one entering) — in a loop whose loads do
// not depend on one another, so that the core has them in flight at
// once: a key's state is most often out of the cache when its window
// fires (it was last touched a window's time before), and a firing,
// long and full of calls, would wait for each miss in turn.
func (so *sliceOp[K, T, A]) warm(rows []int32) {
	var x int64
	for _, row := range rows {
		ks := &so.keys[row]
		ss := ks.slices
		if len(ss) == 0 {
			continue
		}
		x += ss[0].start
		if r := int(ks.runN); r < len(ss) {
			x += ss[r].start
		}
	}
	so.warmed = x
}

// advance moves the watermark the windows followed to wm (if later).
func (so *sliceOp[K, T, A]) advance(wm int64) {
	if wm > so.fired {
		so.fired, so.firedSaved = wm, false
	}
}

// run fires the window of key row ending at `at` (due.at), then drops the windows
// whose state goes at `at`: one, or at the end of time every window whose
// lateness saturates. Every earlier firing and cleanup of the key ran. It
// returns the key's next time, if it has slices left.
func (so *sliceOp[K, T, A]) run(fr *Fragment, row int32, due dueTime) (int64, bool) {
	ks := &so.keys[row]
	at := due.at
	if due.fires {
		var acc A
		var ok bool
		if so.inverse != nil {
			acc, ok = so.running(ks, due.j)
		} else {
			acc, ok = so.value(ks, due.j)
		}
		if ok {
			so.fkey = ks.key
			fr.firing(CauseWindow, so.op, at, at-1, so)
			so.emit(ks.key, due.j, acc, OnTime)
		}
	}
	next := due.kept
	for len(ks.slices) > 0 {
		t := ks.slices[0].start
		first, last := so.span(t)
		j := max(first, next)
		if j > last || so.cleanup(j) != at {
			break
		}
		so.drop(ks, j)
		next = j + 1
	}
	if len(ks.slices) == 0 {
		so.release(row)
		return 0, false
	}
	return so.nextDueFrom(ks, at, due.fireFrom, due.cleanFrom)
}

// dueTime is what run needs of a time keys are due at, the same for
// every key due then (a firing runs for every key of a bucket).
type dueTime struct {
	at    int64
	fires bool  // a window ends at `at`, after the watermark the windows followed
	j     int64 // that window, if fires
	kept  int64 // the first window not gone: every one whose cleanup is before `at` is
	// froms(at), for the keys' next times
	fireFrom, cleanFrom int64
}

func (so *sliceOp[K, T, A]) dueTime(at int64) dueTime {
	due := dueTime{at: at, kept: math.MinInt64}
	due.fireFrom, due.cleanFrom = so.froms(at)
	if d := at - so.size; at > so.fired && mod(d, so.slide) == 0 {
		due.fires, due.j = true, floorDiv(d, so.slide)
	}
	if x := at - 1 - so.size; at-1 >= math.MinInt64+so.size && x >= math.MinInt64+so.lateness {
		due.kept = floorDiv(x-so.lateness, so.slide) + 1
	}
	return due
}

// drop ends window j of a key: its final value goes to the views, and the
// slices no later window holds go.
func (so *sliceOp[K, T, A]) drop(ks *sliceKey[K, A], j int64) {
	if len(so.views) > 0 {
		acc, _ := so.value(ks, j) // a window's cleanup is due only if it has slices
		for _, v := range so.views {
			v.closeWindow(ks.key, j*so.slide, acc)
		}
	}
	n := 0
	for n < len(ks.slices) {
		if _, last := so.span(ks.slices[n].start); last > j {
			break
		}
		s := &ks.slices[n]
		if ks.hasRun && s.start >= ks.rj*so.slide {
			// The running total holds the slices there are of its window.
			if end := so.end(ks.rj); s.start < end {
				ks.run, ks.runN = so.inverse(ks.run, s.acc), ks.runN-1
			} else {
				ks.hasRun = false // after the window: not seen to happen, as firings run in time order
			}
		}
		if so.tracking && s.saved && !s.dirty {
			so.dirty = append(so.dirty, winKey[K]{ks.key, s.start})
		}
		if m := so.byStart[s.start]; m != nil {
			delete(m, ks.key)
			if len(m) == 0 {
				delete(so.byStart, s.start)
			}
		}
		n++
	}
	if n > 0 {
		so.nslices -= int64(n)
		clear(ks.slices[:n])
		ks.slices = ks.slices[n:] // room() takes the space back
	}
}

// release frees the row of a key without slices.
func (so *sliceOp[K, T, A]) release(row int32) {
	ks := &so.keys[row]
	delete(so.rows, ks.key)
	var zero K
	var none A
	ks.key, ks.timed, ks.hasRun, ks.run = zero, false, false, none
	so.free = append(so.free, row)
}

// Slice entries: key = start (8 bytes) + key; value = sliceEntry +
// accumulator. Key "w" holds the watermark the windows followed: the
// firings and cleanups done, from which timers follow on restore.
// windowOp's entries (a fired byte, 0 or 1, then a count and the
// accumulator) restore as slices for tumbling windows, whose windows are
// their slices; for sliding ones they are refused: windows overlap.
const sliceEntry = 2

func (so *sliceOp[K, T, A]) delta(ns uint16, d *Delta) error {
	put := func(k K, s *sliceAcc[A]) error {
		key := binary.BigEndian.AppendUint64(nil, uint64(s.start))
		key, err := so.kc.Append(key, k)
		if err != nil {
			return fmt.Errorf("encode window key: %w", err)
		}
		val, err := so.ac.Append([]byte{sliceEntry}, s.acc)
		if err != nil {
			return fmt.Errorf("encode window state: %w", err)
		}
		d.Puts = append(d.Puts, StateEntry{Namespace: ns, Key: key, Value: val})
		s.dirty, s.saved = false, true
		return nil
	}
	if !so.tracking {
		// The first checkpoint writes the whole state: until one is taken,
		// changes are not tracked (a run without checkpoints keeps no list).
		d.Reset = append(d.Reset, ns)
		for row := range so.keys {
			ks := &so.keys[row]
			for i := range ks.slices {
				if err := put(ks.key, &ks.slices[i]); err != nil {
					return err
				}
			}
		}
		so.tracking, so.wStored, so.firedSaved = true, false, false
	}
	for _, wk := range so.dirty {
		if row, ok := so.rows[wk.key]; ok {
			ks := &so.keys[row]
			if i, found := searchSlices(ks.slices, wk.start); found {
				if err := put(wk.key, &ks.slices[i]); err != nil {
					return err
				}
				continue
			}
		}
		key := binary.BigEndian.AppendUint64(nil, uint64(wk.start))
		key, err := so.kc.Append(key, wk.key)
		if err != nil {
			return fmt.Errorf("encode window key: %w", err)
		}
		d.Deletes = append(d.Deletes, StateEntry{Namespace: ns, Key: key})
	}
	clear(so.dirty)
	so.dirty = so.dirty[:0]
	if !so.firedSaved || !so.wStored {
		d.Puts = append(d.Puts, StateEntry{Namespace: ns, Key: []byte("w"), Value: binary.BigEndian.AppendUint64(nil, uint64(so.fired))})
		so.firedSaved, so.wStored = true, true
	}
	d.Entries += so.nslices + 1
	return nil
}

func (so *sliceOp[K, T, A]) restore(_ uint16, key, val []byte) error {
	so.tracking, so.reschedule = true, true
	if string(key) == "w" {
		if len(val) != 8 {
			return fmt.Errorf("window watermark entry of %d bytes", len(val))
		}
		so.fired, so.restoredW, so.wStored, so.firedSaved = int64(binary.BigEndian.Uint64(val)), true, true, true
		return nil
	}
	if len(key) < 8 || len(val) < 1 {
		return fmt.Errorf("window entry of %d+%d bytes", len(key), len(val))
	}
	k, err := so.kc.Decode(key[8:])
	if err != nil {
		return fmt.Errorf("decode window key: %w", err)
	}
	start := int64(binary.BigEndian.Uint64(key))
	acc := val[1:]
	switch val[0] {
	case sliceEntry:
	case 0, 1: // windowOp's
		if so.size != so.slide {
			return fmt.Errorf("window entry of key %s holds a whole sliding window: the state was kept per window (WindowAggregate without a merge)", so.kc.Format(k))
		}
		_, l := binary.Uvarint(acc)
		if l <= 0 {
			return fmt.Errorf("window entry: bad count")
		}
		acc = acc[l:]
		if val[0] == 1 && !so.restoredW {
			so.fired = max(so.fired, start+so.size)
		}
	default:
		return fmt.Errorf("window entry of an unknown kind %d", val[0])
	}
	a, err := so.ac.Decode(acc)
	if err != nil {
		return fmt.Errorf("decode window state: %w", err)
	}
	row, ok := so.rows[k]
	if !ok {
		row = so.newRow(k)
	}
	ks := &so.keys[row]
	i, created := so.slice(ks, start)
	if !created {
		return fmt.Errorf("window entry of key %s at %d twice", so.kc.Format(k), start)
	}
	ks.slices[i].acc, ks.slices[i].saved = a, true
	so.nslices++
	so.index(k, start)
	return nil
}

// index adds a key's new slice to byStart.
func (so *sliceOp[K, T, A]) index(k K, t int64) {
	if len(so.views) == 0 {
		return
	}
	m := so.byStart[t]
	if m == nil {
		m = map[K]struct{}{}
		so.byStart[t] = m
	}
	m[k] = struct{}{}
}

// The open windows, for views: a window is open from its first slice
// until its state goes.

func (so *sliceOp[K, T, A]) openStarts() []int64 {
	seen := map[int64]struct{}{}
	for t := range so.byStart {
		for j := so.first(t); j <= so.last(t); j++ {
			if so.cleanup(j) > so.fired {
				seen[j*so.slide] = struct{}{}
			}
		}
	}
	out := make([]int64, 0, len(seen))
	for s := range seen {
		out = append(out, s)
	}
	return out
}

// openKeys calls fn with every key of window s whose stamp is since or
// later (0: every key), and the key's slices lo to hi in the window: a
// watch looks at a key's slices only if it changed, and most keys of a
// watched window did not.
func (so *sliceOp[K, T, A]) openKeys(s int64, since uint64, fn func(k K, ks *sliceKey[K, A], lo, hi int)) {
	if mod(s, so.slide) != 0 {
		return
	}
	j := s / so.slide
	if so.cleanup(j) <= so.fired {
		return
	}
	for t, m := range so.byStart {
		if t < s || t >= s+so.size {
			continue
		}
		for k := range m {
			ks := &so.keys[so.rows[k]]
			if ks.stamp < since {
				continue
			}
			// A key with several slices in the window counts at its first.
			if lo, hi := so.window(ks, j); ks.slices[lo].start == t {
				fn(k, ks, lo, hi)
			}
		}
	}
}

func (so *sliceOp[K, T, A]) openCount(s int64) int {
	if so.gran == so.size {
		// Tumbling: a window is its one slice, whose keys byStart holds
		// (a watch asks every interval: no per-key search).
		if mod(s, so.slide) != 0 || so.cleanup(s/so.slide) <= so.fired {
			return 0
		}
		return len(so.byStart[s])
	}
	n := 0
	so.openKeys(s, 0, func(K, *sliceKey[K, A], int, int) { n++ })
	return n
}

func (so *sliceOp[K, T, A]) openEach(s int64, fn func(K, A)) {
	so.openKeys(s, 0, func(k K, ks *sliceKey[K, A], lo, hi int) { fn(k, so.combine(ks, lo, hi)) })
}

func (so *sliceOp[K, T, A]) trackChanges(gen *uint64) { so.gen = gen }

// openChanged calls fn with every key of window s changed since
// (openWindows.openChanged).
func (so *sliceOp[K, T, A]) openChanged(s int64, since uint64, fn func(K, A)) {
	so.openKeys(s, since, func(k K, ks *sliceKey[K, A], lo, hi int) { fn(k, so.combine(ks, lo, hi)) })
}

func (so *sliceOp[K, T, A]) openGet(s int64, k K) (A, bool) {
	var zero A
	row, ok := so.rows[k]
	if !ok || mod(s, so.slide) != 0 {
		return zero, false
	}
	j := s / so.slide
	if so.cleanup(j) <= so.fired {
		return zero, false
	}
	ks := &so.keys[row]
	return so.value(ks, j)
}
