package flowcore

import (
	"cmp"
	"reflect"
	"slices"
	"sync/atomic"

	"github.com/tessera-streams/tessera/splice"
)

// A keyed view's top entries, kept as the table changes, so that a ?top=
// query neither scans every key of a fragment nor waits for the fragment's
// batch in progress.
//
// The table's fragment keeps, per view with a score, the topDepth best
// published entries (by score, then key) in a heap whose root is the
// lowest score: an event that changes a key compares its new score with
// the root — O(1) unless the key enters or is in the set (O(log topDepth)).
// The invariant is that no published entry outside the set scores more
// than the set's lowest, or the set holds every published entry. A query
// for the best n is answered from the set when the n-th scores more than
// the set's lowest (so no key outside can tie with it), else by a scan. A
// change that breaks the invariant without telling what should replace
// the entry — a member's score falling below the lowest, a member
// unpublished or expired — marks the set
// invalid, and it is built again by a scan the next time the fragment
// publishes after a query found it invalid, so a view whose scores only
// grow (a count) never scans, and one whose scores fall scans at most once
// per query, as every query did before.
//
// Publish copies the set into a spare buffer no reader is counted in and
// swaps it in atomically (no lock); QueryPublished reads the buffer it
// finds current. The fragment's driver
// calls Publish when it has finished with a message (a batch boundary), so
// a query that reads the buffer sees the fragment as of the end of a
// batch, as a query under the driver's lock does, without waiting for the
// batch in progress. The values in the buffer are copies, so only views
// whose value type holds no pointers (nothing a user function could
// change in place) are kept this way; the others are scanned.
const topDepth = 64

// topCand is one entry of a top set: the table slot, its key, value and
// score.
type topCand[K comparable, V any] struct {
	slot int32
	k    K
	v    V
	s    float64
}

// topIndex is one view's top set over one fragment's table. Its working
// heap belongs to the fragment's driver (changed while it applies
// events); cur, the published copy, is what queries read.
type topIndex[K comparable, V any] struct {
	view string
	kc   KeyCodec[K]
	o    viewOptions[V]
	pos  []int32 // per table slot: its place in heap, or -1
	// in has bit i set when slot i is in the set (pos[i] >= 0). Most
	// changes are of keys outside a full set that do not score above
	// it. A fragment's table of 1,500 keys has 6 KiB of pos, of which a
	// batch read almost every cache line only to learn that; in is the
	// 200 bytes the caches keep.
	in    []uint64
	heap  []topCand[K, V]
	valid bool // the invariant holds (see above)
	dirty bool // changed since the last publish

	want  atomic.Bool // a query found the published set invalid: build again on publish
	cur   atomic.Pointer[topSnap[K, V]]
	spare []*topSnap[K, V] // the driver's: copies no longer current, to reuse
}

// topSnap is a published copy of a top set. A query reads the current one
// without a lock: it counts itself in readers, checks that the copy is
// still current (else tries again), reads, and counts itself out. The
// driver writes only a copy that is not current and that no reader counts
// itself in — one a query counted itself in later sees that it is no
// longer current and leaves it unread — so a copy is never written while
// read, and publishing allocates only while queries hold every spare.
//
// A lock would be simpler, but on a loaded machine its holder (the driver,
// in the middle of a copy) can lose its CPU for milliseconds, and a
// top-10 asks 64 fragments.
type topSnap[K comparable, V any] struct {
	cands   []topCand[K, V]
	valid   bool
	readers atomic.Int32
}

// keepSpares bounds the copies a top set keeps for reuse.
const keepSpares = 3

// topPublisher is a top set as the fragment sees it: the view it serves,
// what Publish calls, and what QueryPublished asks.
type topPublisher interface {
	viewName() string
	publish()
	top(n int) ([]splice.Entry, bool)
}

func newTopIndex[K comparable, V any](view string, kc KeyCodec[K], o viewOptions[V]) *topIndex[K, V] {
	return &topIndex[K, V]{view: view, kc: kc, o: o, valid: true, dirty: true}
}

// cmpCand orders candidates best first: higher score, then lower key (as
// selectKeys does, so the two answer the same).
func (x *topIndex[K, V]) cmpCand(a, b *topCand[K, V]) int {
	if c := cmp.Compare(b.s, a.s); c != 0 {
		return c
	}
	return x.kc.Compare(a.k, b.k)
}

// worse reports whether heap[i] scores below heap[j]: the heap keeps the
// lowest score at its root. Ties are not broken by key here (a string
// comparison per step would cost the ingest more than the set saves); top
// breaks them, and answers only when no key outside the set could tie.
func (x *topIndex[K, V]) worse(i, j int) bool { return cmp.Less(x.heap[i].s, x.heap[j].s) }

func (x *topIndex[K, V]) swap(i, j int) {
	h := x.heap
	h[i], h[j] = h[j], h[i]
	x.pos[h[i].slot], x.pos[h[j].slot] = int32(i), int32(j)
}

func (x *topIndex[K, V]) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !x.worse(i, p) {
			return
		}
		x.swap(i, p)
		i = p
	}
}

func (x *topIndex[K, V]) down(i int) bool {
	start := i
	for {
		l := 2*i + 1
		if l >= len(x.heap) {
			break
		}
		c := l
		if r := l + 1; r < len(x.heap) && x.worse(r, l) {
			c = r
		}
		if !x.worse(c, i) {
			break
		}
		x.swap(i, c)
		i = c
	}
	return i > start
}

// note takes in slot i's new value (the slot is new if i == len(x.pos)).
func (x *topIndex[K, V]) note(t *table[K, V], i int32) {
	for int(i) >= len(x.pos) {
		x.pos = append(x.pos, -1)
		if len(x.pos) > 64*len(x.in) {
			x.in = append(x.in, 0)
		}
	}
	if !x.valid {
		return
	}
	v := t.vals[i]
	sc := x.o.score(v)
	full := len(x.heap) == topDepth
	if full && !cmp.Less(x.heap[0].s, sc) && x.in[i>>6]&(1<<(i&63)) == 0 {
		// The common case: an outsider that does not score above the
		// set, published or not; no key to read, nothing to move.
		return
	}
	p := x.pos[i]
	if !x.o.publish(v) {
		if p >= 0 {
			x.invalidate()
		}
		return
	}
	if p >= 0 {
		if full && cmp.Less(sc, x.heap[0].s) {
			// It fell below the lowest score of the set: a key outside
			// may now score more.
			x.invalidate()
			return
		}
		x.heap[p].v, x.heap[p].s = v, sc // its key is the member's
		if !x.down(int(p)) {
			x.up(int(p))
		}
		x.dirty = true
		return
	}
	c := topCand[K, V]{slot: i, k: t.keys[i], v: v, s: sc}
	switch {
	case len(x.heap) < topDepth:
		x.heap = append(x.heap, c)
		x.pos[i] = int32(len(x.heap) - 1)
		x.in[i>>6] |= 1 << (i & 63)
		x.up(len(x.heap) - 1)
	default: // it scores more than the lowest of a full set
		out := x.heap[0].slot
		x.pos[out] = -1
		x.in[out>>6] &^= 1 << (out & 63)
		x.heap[0] = c
		x.pos[i] = 0
		x.in[i>>6] |= 1 << (i & 63)
		x.down(0)
	}
	x.dirty = true
}

// removed is told that slot i goes and the last slot, n, moves into it.
func (x *topIndex[K, V]) removed(i, n int32) {
	if int(n) >= len(x.pos) {
		return
	}
	if x.pos[i] >= 0 {
		x.invalidate()
	}
	if i != n {
		x.pos[i] = x.pos[n]
		if p := x.pos[i]; p >= 0 {
			x.heap[p].slot = i
			x.in[i>>6] |= 1 << (i & 63)
			x.in[n>>6] &^= 1 << (n & 63)
		}
	}
	x.pos = x.pos[:n]
}

func (x *topIndex[K, V]) invalidate() {
	for _, c := range x.heap {
		x.pos[c.slot] = -1
		x.in[c.slot>>6] &^= 1 << (c.slot & 63)
	}
	clear(x.heap)
	x.heap = x.heap[:0]
	x.valid, x.dirty = false, true
}

// rebuild builds the set again from every key of t.
func (x *topIndex[K, V]) rebuild(t *table[K, V]) {
	x.invalidate()
	x.valid = true
	for i := range t.keys {
		x.note(t, int32(i))
	}
}

// publish copies the working set for queries, first building it again if
// a query found it invalid. The driver calls it between messages.
func (x *topIndex[K, V]) publishFrom(t *table[K, V]) {
	if !x.valid && x.want.Load() {
		x.rebuild(t)
	}
	if !x.dirty {
		return
	}
	var b *topSnap[K, V]
	for i, sp := range x.spare {
		if sp.readers.Load() == 0 {
			b = sp
			x.spare = slices.Delete(x.spare, i, i+1)
			break
		}
	}
	if b == nil {
		b = &topSnap[K, V]{cands: make([]topCand[K, V], 0, topDepth)}
	}
	clear(b.cands)
	b.cands = append(b.cands[:0], x.heap...)
	b.valid = x.valid
	if old := x.cur.Swap(b); old != nil && len(x.spare) < keepSpares {
		x.spare = append(x.spare, old)
	}
	x.dirty = false
	if x.valid {
		x.want.Store(false)
	}
}

// top answers the best n (n <= topDepth) from the published set; false if
// it is invalid.
func (x *topIndex[K, V]) top(n int) ([]splice.Entry, bool) {
	var buf [topDepth]topCand[K, V]
	var cs []topCand[K, V]
	var ok bool
	for {
		p := x.cur.Load()
		if p == nil {
			return nil, false
		}
		p.readers.Add(1)
		if x.cur.Load() != p {
			p.readers.Add(-1)
			continue // published anew meanwhile: p may be being rewritten
		}
		cs, ok = append(buf[:0], p.cands...), p.valid
		p.readers.Add(-1)
		break
	}
	if !ok {
		x.want.Store(true)
		return nil, false
	}
	// Sort places, not candidates: a candidate is five words to swap.
	var order [topDepth]uint8
	idx := order[:len(cs)]
	for i := range idx {
		idx[i] = uint8(i)
	}
	slices.SortFunc(idx, func(a, b uint8) int { return x.cmpCand(&cs[a], &cs[b]) })
	idx = idx[:min(len(idx), n)]
	if len(cs) == topDepth && len(idx) > 0 && !cmp.Less(cs[0].s, cs[idx[len(idx)-1]].s) {
		// The last entry asked for scores no more than the set's lowest:
		// a key outside the set may tie with it and come first by key.
		return nil, false
	}
	out := make([]splice.Entry, len(idx))
	for i, j := range idx {
		c := &cs[j]
		out[i] = splice.Entry{Key: x.kc.Format(c.k), Value: c.v, Score: c.s, Sort: c.k}
	}
	return out, true
}

// tableTop binds a top set to its table, for the fragment.
type tableTop[K comparable, V any] struct {
	*topIndex[K, V]
	t *table[K, V]
}

func (b tableTop[K, V]) viewName() string { return b.view }
func (b tableTop[K, V]) publish()         { b.publishFrom(b.t) }

// plainValue reports whether values of type t hold no pointers: a copy of
// one cannot change when the original does.
func plainValue(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128, reflect.String:
		return true
	case reflect.Array:
		return plainValue(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if !plainValue(t.Field(i).Type) {
				return false
			}
		}
		return true
	}
	return false
}

// Publish makes the fragment's state as it is now what QueryPublished
// answers from. A driver calls it between two messages, under the lock
// that its queries take for Query; it costs a copy of each view's top set
// that changed. It also starts a new generation: what changes from here on
// is stamped after every changes mark given so far (viewchanges.go).
func (fr *Fragment) Publish() {
	fr.gen++ // what changes from here on is after every mark given so far
	for _, p := range fr.tops {
		p.publish()
	}
}

// QueryPublished answers req from what the fragment last published, if it
// can: a ?top= query (without a prefix, for at most 64 entries) of a view
// that keeps its top entries. It may run at any time, concurrently with
// anything the driver does; ok is false when the caller must use Query.
func (fr *Fragment) QueryPublished(req splice.Request) (ans splice.Answer, ok bool) {
	q := req.Query
	if req.Op != splice.OpEntries || q.Top <= 0 || q.Top > topDepth || q.Prefix != "" {
		return ans, false
	}
	for _, p := range fr.tops {
		if p.viewName() == req.View {
			es, ok := p.top(q.Top)
			return splice.Answer{Entries: es}, ok
		}
	}
	return ans, false
}

// skipInt reports that a set over int64 values scored by the values
// themselves need not be told (note) that slot i, one it was told of
// before, changed to v: the set is full, v does not score above its
// lowest member, and slot i is not a member. It is note's common case
// without the call, the score function's call and the conversion to a
// score, for the tables of counts, which call it for every event. Telling
// the view's top set of every change cost a keyed count of 100k keys
// over 64 fragments about a tenth of its CPU, and 95 of 100 changes could
// not enter the set; with this check first it costs about half as much.
// (A conversion to float64 keeps the order of int64 values, ties aside,
// so v <= lowest implies that its score does not exceed the lowest
// score.)
func skipInt[K comparable](x *topIndex[K, int64], i int32, v int64) bool {
	return x.o.byValue && len(x.heap) == topDepth && v <= x.heap[0].v &&
		int(i>>6) < len(x.in) && x.in[i>>6]&(1<<(i&63)) == 0
}
