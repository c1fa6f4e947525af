package flowcore

import (
	"fmt"
	"reflect"
	"slices"
	"unsafe"

	"github.com/tessera-streams/tessera/splice"
)

// KV is a key and its value.
type KV[K comparable, V any] struct {
	Key   K
	Value V
}

// table is keyed state: one slot per key, found with one map lookup (or,
// for keys with a cheap stable hash, in a hashIndex: tableindex.go), with
// the slots changed since the last checkpoint.
type table[K comparable, V any] struct {
	idx   map[K]int32 // nil when hash is set
	hash  func(K) uint64
	hx    hashIndex
	strs  bool // K is a string type: lookups compare keys with sameString
	keys  []K
	vals  []V
	mark  []bool           // mark[i]: slot i changed since the last checkpoint
	dirty []int32          // the marked slots
	subs  []func(KV[K, V]) // update subscribers
	kc    KeyCodec[K]
	vc    Codec[V]
	exp   *tableTTL[K]      // nil: state never expires
	tops  []*topIndex[K, V] // views' top sets (topindex.go), told every change
	// gen, for a table shown as a view: the fragment's publish generation
	// (viewchanges.go); stamp[i] is the generation slot i last changed in.
	gen   *uint64
	stamp []uint64
	// Scratch of delta: where each entry is in its buffer, and about how
	// many bytes an entry took in the last one.
	spans      []entrySpan
	entryBytes int
	// Without a TTL, a table checkpoints blocks of slots (tableBlock
	// slots an entry of keys, another of values: tableblocks.go);
	// blockMark and blocks are delta's scratch, blockSaved the keys the
	// store holds of each block, keyBytes about how many bytes a key took
	// in the last keys entries. perKey says a restore read entries of one
	// key each, oneEntry that it read that many blocks of one entry each
	// (the formats before): the next delta deletes them and writes every
	// block. valsDue is the number of keys a restore read whose values
	// must come next.
	blockMark  []bool
	blocks     []int32
	blockSaved []uint8
	keyBytes   int
	perKey     bool
	oneEntry   int
	valsDue    uint8
	sink       uint64 // what Count read ahead, summed so the reads stay
}

type entrySpan struct{ k0, k1, v1 int }

func newTable[K comparable, V any](kc KeyCodec[K], vc Codec[V]) *table[K, V] {
	return &table[K, V]{idx: map[K]int32{}, kc: kc, vc: vc}
}

// touch marks slot i changed.
func (t *table[K, V]) touch(i int32) {
	for _, x := range t.tops {
		x.note(t, i)
	}
	t.touched(i)
}

// touched is touch without telling the top sets.
func (t *table[K, V]) touched(i int32) {
	if t.gen != nil {
		t.stamp[i] = *t.gen
	}
	if !t.mark[i] {
		t.mark[i] = true
		t.dirty = append(t.dirty, i)
	}
}

// insert adds k with value v; k must be absent. Operators compute a new
// key's value before inserting it, so that a failing user function leaves
// no trace.
func (t *table[K, V]) insert(k K, v V) { t.insertH(k, 0, v) }

// insertH is insert for a key whose hash is h (0: not known).
func (t *table[K, V]) insertH(k K, h uint64, v V) {
	i := int32(len(t.keys))
	t.indexAdd(k, h, i)
	t.keys = append(t.keys, k)
	t.vals = append(t.vals, v)
	t.mark = append(t.mark, true)
	t.dirty = append(t.dirty, i)
	if t.gen != nil {
		t.stamp = append(t.stamp, *t.gen)
	}
	if t.exp != nil {
		t.exp.last = append(t.exp.last, NoWatermark)
		t.exp.queued = append(t.exp.queued, false)
	}
	for _, x := range t.tops {
		x.note(t, i)
	}
}

func (t *table[K, V]) updated(k K, v V) {
	for _, s := range t.subs {
		s(KV[K, V]{k, v})
	}
}

func (t *table[K, V]) delta(ns uint16, d *Delta) error {
	if t.exp == nil {
		return t.blockDelta(ns, d)
	}
	// A table with a TTL writes an entry per key, in namespace ns, and its
	// keys' event times in ns+1 (tablettl.go). Expiries moved slots: keep
	// each marked slot once.
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
	// One buffer holds every entry, sized at once from the entries of the
	// checkpoint before (with room to grow): grown by appending, it cost
	// twice its size in copies and garbage.
	buf := make([]byte, 0, len(t.dirty)*(t.entryBytes+t.entryBytes/4+2))
	spans := t.spans[:0]
	var err error
	for _, i := range t.dirty {
		sp := entrySpan{k0: len(buf)}
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
	if len(t.dirty) > 0 {
		t.entryBytes = (len(buf) + len(t.dirty) - 1) / len(t.dirty)
	}
	d.Puts = slices.Grow(d.Puts, len(spans))
	for _, sp := range spans {
		d.Puts = append(d.Puts, StateEntry{Namespace: ns, Key: buf[sp.k0:sp.k1:sp.k1], Value: buf[sp.k1:sp.v1:sp.v1]})
	}
	t.spans = spans[:0]
	if err := t.ttlDelta(ns+1, d); err != nil {
		return err
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
			return t.blockRestore(key, val)
		}
		return t.ttlRestore(key, val)
	}
	if t.exp == nil {
		t.perKey = true
	}
	return t.restoreOne(key, val)
}

// restoreOne decodes one restored key and its state into the table, clean
// (a restored key is not a change), refusing a key restored twice.
func (t *table[K, V]) restoreOne(key, val []byte) error {
	k, err := t.kc.Decode(key)
	if err != nil {
		return fmt.Errorf("decode key: %w", err)
	}
	v, err := t.vc.Decode(val)
	if err != nil {
		return fmt.Errorf("decode state of key %s: %w", t.kc.Format(k), err)
	}
	if _, dup := t.lookup(k, 0); dup {
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

// newTableOp adds a table operator: update applies an event to the table;
// bulk makes the form that applies a batch's records to a table without
// subscribers (see fragStage).
func newTableOp[K comparable, T, V any](ks KeyedStream[K, T], vc Codec[V], given any, ttl int64, update func(t *table[K, V], k K, v T), bulk func(t *table[K, V]) bulkFunc[K, T]) Table[K, V] {
	f := ks.f
	op := f.addOp(ks.stage, fmt.Sprintf("table of %s by %s%s%s", typeName[V](), typeName[K](), codecNote("state", given), ttlNote(ttl)))
	f.fragW = append(f.fragW, func(fr *Fragment) {
		t := newTable[K, V](ks.kc, vc)
		if ks.hash != nil && hashIndexed[K]() {
			t.idx, t.hash, t.strs = nil, ks.hash, reflect.TypeFor[K]().Kind() == reflect.String
		}
		fr.ops[op] = t
		si := t.stringIndex()
		if si != nil && ttl <= 0 {
			si.arena = new(keyArena)
		}
		fr.intern.keysOf(ks.stage, si)
		if ttl <= 0 {
			// With update subscribers, the bulk form calls them for every
			// record as the record loop would (bulkEvent): only if the
			// table is its stage's one subscriber, so that nothing else
			// is called per record in between.
			ks.subscribeBulk(fr, func(k K, v T) { update(t, k, v) }, bulk(t), func() bool {
				return t.subs == nil || len(fr.stages[ks.stage].(*fragStage[K, T]).subs) == 1
			})
			return
		}
		t.exp = &tableTTL[K]{ttl: ttl}
		fr.addTimers(ks.stage, t)
		ks.subscribe(fr, func(k K, v T) {
			// A late event runs at the watermark: its key may have expired
			// behind it since the watermark last moved, and the state it
			// makes expires at once if its expiry is behind it too.
			wm := fr.wm()
			t.expired(k, max(fr.cur.TS, wm))
			update(t, k, v)
			i, _ := t.lookup(k, 0)
			t.exp.seen(i, k, fr.cur.TS)
			if satAdd(t.exp.last[i], t.exp.ttl) <= wm {
				t.expire(i)
			}
		})
	})
	return Table[K, V]{stage: ks.stage, op: op, kc: ks.kc, hs: ks.hash, f: f, vc: vc}
}

// bulkOf is the bulk form that applies each record with add.
func bulkOf[K comparable, T, V any](add func(t *table[K, V], k K, h uint64, v T) int32) func(t *table[K, V]) bulkFunc[K, T] {
	return func(t *table[K, V]) bulkFunc[K, T] {
		return func(fr *Fragment, items []Rec[K, T], ts []int64, min int64) {
			for i := range items {
				it := &items[i]
				if it.Off < min {
					continue
				}
				if t.subs == nil {
					fr.curIdx, fr.cur.Offset = i, it.Off
					add(t, it.Key, it.h, it.Val)
					continue
				}
				bulkEvent(fr, items, ts, i)
				s := add(t, it.Key, it.h, it.Val)
				t.updated(t.keys[s], t.vals[s])
			}
		}
	}
}

// bulkEvent makes record i of items the fragment's current one, as the
// record loop of recs.apply does before it calls the subscribers: a bulk
// form calls a table's update subscribers (an exchange, a sink) with what
// they read of the fragment (the output's cause, the event time) as the
// record loop leaves it.
func bulkEvent[K comparable, T any](fr *Fragment, items []Rec[K, T], ts []int64, i int) {
	off, rec := items[i].Off, 0
	if i > 0 && items[i-1].Off == off {
		rec = fr.record + 1 // another record of the same event
	}
	fr.event(off, rec)
	fr.curIdx = i
	if ts != nil {
		fr.cur.TS = ts[i]
	}
}

// Reduce keeps, per key, the first event combined with every later one by
// fn.
func Reduce[K comparable, T any](ks KeyedStream[K, T], fn func(acc, v T) T, opts ...StateOption) Table[K, T] {
	vc := stateCodec[T](ks.f, "Reduce", opts)
	ttl := stateTTL(ks.f, "Reduce", ks.stage, opts)
	add := func(t *table[K, T], k K, h uint64, v T) int32 {
		if i, ok := t.lookup(k, h); ok {
			t.vals[i] = fn(t.vals[i], v)
			t.touch(i)
			return i
		}
		t.insertH(k, h, v)
		return int32(len(t.keys) - 1)
	}
	return newTableOp(ks, vc, givenCodec(opts), ttl, func(t *table[K, T], k K, v T) {
		i := add(t, k, 0, v)
		if t.subs != nil {
			t.updated(k, t.vals[i])
		}
	}, bulkOf(add))
}

// Aggregate folds every event of a key into an accumulator that starts at
// init().
func Aggregate[K comparable, T, A any](ks KeyedStream[K, T], init func() A, add func(acc A, v T) A, opts ...StateOption) Table[K, A] {
	vc := stateCodec[A](ks.f, "Aggregate", opts)
	ttl := stateTTL(ks.f, "Aggregate", ks.stage, opts)
	if init == nil || add == nil {
		ks.f.errorf("Aggregate: init and add must not be nil")
	}
	apply := func(t *table[K, A], k K, h uint64, v T) int32 {
		if i, ok := t.lookup(k, h); ok {
			t.vals[i] = add(t.vals[i], v)
			t.touch(i)
			return i
		}
		t.insertH(k, h, add(init(), v))
		return int32(len(t.keys) - 1)
	}
	return newTableOp(ks, vc, givenCodec(opts), ttl, func(t *table[K, A], k K, v T) {
		i := apply(t, k, 0, v)
		if t.subs != nil {
			t.updated(k, t.vals[i])
		}
	}, bulkOf(apply))
}

// Count counts the events of every key.
func Count[K comparable, T any](ks KeyedStream[K, T], opts ...StateOption) Table[K, int64] {
	vc, _ := DefaultCodec[int64]()
	ttl := stateTTL(ks.f, "Count", ks.stage, opts)
	add := func(t *table[K, int64], k K) int64 {
		if i, ok := t.lookup(k, 0); ok {
			t.vals[i]++
			t.touch(i)
			return t.vals[i]
		}
		t.insert(k, 1)
		return 1
	}
	return newTableOp(ks, vc, nil, ttl, func(t *table[K, int64], k K, _ T) {
		n := add(t, k)
		if t.subs != nil {
			t.updated(k, n)
		}
	}, func(t *table[K, int64]) bulkFunc[K, T] {
		// Written out rather than bulkOf(add): a count is the lookup and
		// the increment, and a call per record would be a good part of it.
		//
		// Records whose hash the batch does not carry (an exchange's, or
		// decoded from another node) are compared with the key before:
		// a run of one key is one lookup and one touch. A count of counts
		// sends each fragment runs of hundreds of one count (the counts
		// of all keys are close), and its lookups and touches were most
		// of the second stage. With the hash known (a reader routed the
		// record) keys are rarely repeated, and the compare is not made.
		return func(fr *Fragment, items []Rec[K, T], ts []int64, min int64) {
			if t.subs != nil {
				countUpdating(t, fr, items, ts, min)
				return
			}
			var sink uint64
			run, n := int32(-1), int64(0) // the slot of the run's key, and the records of the run
			var runKey K
			ahead := readsAhead(t, items)
			// The slots the batch's decoding found its keys in: a key
			// found there is counted without a lookup of its own.
			at := fr.stages[ks.stage].(*fragStage[K, T]).slots.of(&t.hx, len(items))
			for i := range items {
				it := &items[i]
				// Reads ahead, for the caches: the index entry of the
				// record countFar ahead, and the key and count of the
				// record countNear ahead (its entry read countFar-countNear
				// records ago). A count of 100k keys over 64 fragments
				// finds few of them in the caches, and a lookup waits for
				// its entry before it reads the key; read this way, the
				// misses of several records overlap, for a thirtieth less
				// CPU. (Looked up in passes of 32 records, entries first,
				// the passes' overhead cost more than they saved.) The
				// loads' sum is kept (t.sink) so that they are not
				// dropped. A hash-indexed key is a string or an integer:
				// its first byte can be read. On amd64 the reads ahead
				// are prefetches, which the loop does not wait for (see
				// countAhead).
				if ahead {
					sink += countAhead(t, items, at, i)
				}
				if it.Off < min {
					continue
				}
				var j int32
				var found bool
				switch {
				case at != nil && at[i] >= 0:
					j, found = at[i], true
				case it.h == 0:
					if run >= 0 && it.Key == runKey {
						n++
						continue
					}
					if run >= 0 {
						t.vals[run] += n
						t.touch(run)
					}
					if r, ok := t.lookup(it.Key, 0); ok {
						run, n = r, 1
					} else {
						t.insert(it.Key, 1)
						run, n = int32(len(t.keys)-1), 0
					}
					runKey = it.Key
					continue
				default:
					j, found = t.lookup(it.Key, it.h)
				}
				if !found {
					t.insertH(it.Key, it.h, 1)
					continue
				}
				t.vals[j]++
				for _, x := range t.tops {
					if !skipInt(x, j, t.vals[j]) {
						x.note(t, j)
					}
				}
				t.touched(j)
			}
			t.sink += sink
			if run >= 0 {
				t.vals[run] += n
				t.touch(run)
			}
		}
	})
}

// readsAhead reports whether a bulk count reads ahead for a batch
// (countAhead): its table has a hash index with entries, and the batch's
// records carry their hashes — a reader's do, an exchange's and those
// decoded from another node do not. Called per record of an exchange's
// batch, the read-ahead that found no hash took more of a count of
// counts' second stage than its counting.
func readsAhead[K comparable, T any](t *table[K, int64], items []Rec[K, T]) bool {
	return t.hash != nil && len(t.hx.ents) > 0 && len(items) > 0 && (items[0].h != 0 || items[len(items)-1].h != 0)
}

// countAhead reads ahead for record i of a bulk count (see Count's bulk
// apply for why): the index entry of the record countFar ahead and the
// key and count of the record countNear ahead. It returns the loads' sum
// so that they are not dropped. The table must be hash-indexed.
//
// Where the CPU can be asked to prefetch (canPrefetch), it is asked
// instead, and the sum is 0. A load read ahead must still complete
// before the loop gets past it, and a record's work is short: the loop
// waited for the loads of a record eight ahead, and they were a fifth of a
// keyed count's CPU. A prefetch is not waited for.
//
// A record whose slot the batch's decoding found (at, nil: none) needs no
// entry nor key: its count is read ahead, countNear records ahead.
func countAhead[K comparable, T any](t *table[K, int64], items []Rec[K, T], at []int32, i int) (sink uint64) {
	x := &t.hx
	if canPrefetch {
		// An address with nothing to fetch is one already in the cache.
		far, k, v := unsafe.Pointer(x), unsafe.Pointer(x), unsafe.Pointer(x)
		if a := i + countFar; a < len(items) && items[a].h != 0 && (at == nil || at[a] < 0) {
			far = unsafe.Pointer(&x.ents[items[a].h>>x.shift])
		}
		if a := i + countNear; a < len(items) {
			if at != nil && at[a] >= 0 {
				if s := int(at[a]); s < len(t.vals) {
					v = unsafe.Pointer(&t.vals[s])
				}
			} else if items[a].h != 0 {
				e := x.ents[items[a].h>>x.shift]
				if s := int(uint32(e)) - 1; s >= 0 && s < len(t.keys) {
					k, v = unsafe.Pointer(&t.keys[s]), unsafe.Pointer(&t.vals[s])
				}
			}
		}
		prefetch3(far, k, v)
		return 0
	}
	if a := i + countFar; a < len(items) && items[a].h != 0 {
		sink += x.ents[items[a].h>>x.shift]
	}
	if a := i + countNear; a < len(items) && items[a].h != 0 {
		e := x.ents[items[a].h>>x.shift]
		if s := int(uint32(e)) - 1; s >= 0 && s < len(t.keys) {
			sink += uint64(*(*byte)(unsafe.Pointer(&t.keys[s]))) + uint64(t.vals[s])
		}
	}
	return sink
}

// countUpdating is Count's bulk apply for a table whose updates are
// subscribed to (a count re-keyed by its value: a count of counts): per
// record, the lookup with the hash the reader routed it with (the record
// loop's hashed the key again), read ahead as Count's other bulk form
// does, and the update subscribers called with the table's own string of
// the key, which an exchange's compact entries find again by its
// pointer. Runs of one key are not folded: every update is an output.
func countUpdating[K comparable, T any](t *table[K, int64], fr *Fragment, items []Rec[K, T], ts []int64, min int64) {
	var sink uint64
	ahead := readsAhead(t, items)
	for i := range items {
		it := &items[i]
		if ahead {
			sink += countAhead(t, items, nil, i)
		}
		if it.Off < min {
			continue
		}
		bulkEvent(fr, items, ts, i)
		j, ok := t.lookup(it.Key, it.h)
		if ok {
			t.vals[j]++
			t.touch(j)
		} else {
			t.insertH(it.Key, it.h, 1)
			j = int32(len(t.keys) - 1)
		}
		t.updated(t.keys[j], t.vals[j])
	}
	t.sink += sink
}

// How far ahead a count's bulk apply reads (see Count).
const countFar, countNear = 8, 4

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
	t.f.opView(op, name)
	if o.score != nil && plainValue(reflect.TypeFor[V]()) {
		t.f.fragW = append(t.f.fragW, func(fr *Fragment) {
			tb := fr.ops[op].(*table[K, V])
			x := newTopIndex(name, t.kc, o)
			tb.tops = append(tb.tops, x)
			fr.tops = append(fr.tops, tableTop[K, V]{x, tb})
		})
	}
	t.f.fragW = append(t.f.fragW, func(fr *Fragment) {
		tb := fr.ops[op].(*table[K, V])
		if tb.gen == nil {
			tb.gen = &fr.gen
			tb.stamp = make([]uint64, len(tb.keys))
		}
		fr.changes = append(fr.changes, tableChanges[K, V]{view: name, t: tb, o: o})
	})
	addKeyedView(t.f, name, t.stage, t.kc, t.hs, anyCodec(t.vc), func(fr *Fragment, q splice.Query, after *K, only *K) []splice.Entry {
		tb := fr.ops[op].(*table[K, V])
		if only != nil {
			if i, ok := tb.lookup(*only, 0); ok && o.publish(tb.vals[i]) {
				return []splice.Entry{{Key: t.kc.Format(*only), Value: tb.vals[i], Sort: *only}}
			}
			return nil
		}
		return selectKeys(len(tb.keys), func(i int) (K, V) { return tb.keys[i], tb.vals[i] }, q, after, t.kc, o)
	})
	return t
}
