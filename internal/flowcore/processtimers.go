package flowcore

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// Process timers: a key's pending timers live with the key, and each of
// the two heaps (processing time; event time and expiries, which fire in
// one order) holds one entry per key, at the key's earliest timer of that
// heap. Re-setting a key's timer — delete the old, set a later one, as a
// handler does on every event, and as every event moves a key's expiry —
// touches the key's few timers and no heap: a set pushes only when it
// makes the key due earlier, and a delete never does. An entry whose
// timer went is stale: when it comes, the key is re-armed at its earliest
// timer left (one heap operation per watermark that reaches it, not one
// per event). Timers fire in the order they did with one heap entry per
// timer: by time, and at one time a key's own timers before its expiry.

// procTimer is one pending timer of a key.
type procTimer struct {
	at  int64
	dom TimeDomain
}

func (a procTimer) less(b procTimer) bool { return a.at < b.at || a.at == b.at && a.dom < b.dom }

// heapOf is the heap a timer's domain fires from.
func heapOf(dom TimeDomain) int {
	if dom == ProcessingTime || dom == procWaitDomain {
		return 0
	}
	return 1
}

// procKey is a key's pending timers (a few: unsorted) and, per heap, the
// timer its entry there stands for.
type procKey struct {
	ts     []procTimer // in few, while it fits
	due    [2]procTimer
	timed  [2]bool // an entry in the heap is at due
	tdirty bool    // in procTimers.tdirty
	// few holds a key's first timers (a handler's and an expiry, as a
	// rule) with the key: reading them costs no second cache miss.
	few [2]procTimer
}

type timerKey[K comparable] struct {
	at  int64
	key K
	dom TimeDomain
	// pk is the key's timers as the entry was pushed: an entry finds
	// them without a look-up of the key. A key forgotten (tidy) has no
	// entry standing for it (timed), so its older entries are stale; a
	// key set again has new timers and entries of its own.
	pk *procKey
}

// before orders timers by time; at the same time, a key's own timers
// (event time) before its expiry (ttlDomain).
func (a timerKey[K]) before(b timerKey[K]) bool { return a.at < b.at || a.at == b.at && a.dom < b.dom }

type procTimers[K comparable] struct {
	keys   map[K]*procKey // keys with pending timers, or a heap entry
	timers [2][]timerKey[K]
	nkeys  int // keys with pending timers
	// tdirty lists the keys whose timers changed since the last
	// checkpoint, kept once one was taken or restored (the first writes
	// every key's). migrate: a restore read entries of an older form,
	// which the next checkpoint replaces.
	tdirty    []K
	ttracking bool
	migrate   bool
}

func newProcTimers[K comparable]() procTimers[K] { return procTimers[K]{keys: map[K]*procKey{}} }

func (p *procTimers[K]) set(k K, dom TimeDomain, at int64) { p.add(k, procTimer{at, dom}, true) }

func (p *procTimers[K]) add(k K, t procTimer, touch bool) {
	pk := p.keys[k]
	if pk == nil {
		pk = &procKey{}
		pk.ts = pk.few[:0]
		p.keys[k] = pk
	}
	for _, x := range pk.ts {
		if x == t {
			return
		}
	}
	if len(pk.ts) == 0 {
		p.nkeys++
	}
	pk.ts = append(pk.ts, t)
	if touch {
		p.touchTimers(k, pk)
	}
	if h := heapOf(t.dom); !pk.timed[h] || t.less(pk.due[h]) {
		p.push(k, pk, h, t)
	}
}

func (p *procTimers[K]) push(k K, pk *procKey, h int, t procTimer) {
	pk.due[h], pk.timed[h] = t, true
	heapPush(&p.timers[h], timerKey[K]{at: t.at, key: k, dom: t.dom, pk: pk})
}

// pending reports whether key k has timer t.
func (p *procTimers[K]) pending(k K, t procTimer) bool {
	pk := p.keys[k]
	return pk != nil && slices.Contains(pk.ts, t)
}

func (p *procTimers[K]) del(k K, dom TimeDomain, at int64) {
	pk := p.keys[k]
	if pk == nil {
		return
	}
	for i, x := range pk.ts {
		if x == (procTimer{at, dom}) {
			p.remove(k, pk, i)
			return
		}
	}
}

// move moves key k's timer of domain dom at from to to, as del then set
// would, with one look-up of the key: every event moves its key's expiry.
func (p *procTimers[K]) move(k K, dom TimeDomain, from, to int64) {
	pk := p.keys[k]
	old, dup := -1, false
	t := procTimer{to, dom}
	if pk != nil {
		for i, x := range pk.ts {
			switch x {
			case procTimer{from, dom}:
				old = i
			case t:
				dup = true
			}
		}
	}
	if old < 0 || dup {
		p.del(k, dom, from)
		p.set(k, dom, to)
		return
	}
	// In place: the key keeps its row and its heap entries, which go
	// stale as remove's do.
	pk.ts[old] = t
	p.touchTimers(k, pk)
	if h := heapOf(dom); !pk.timed[h] || t.less(pk.due[h]) {
		p.push(k, pk, h, t)
	}
}

// remove forgets a key's pending timer; its heap entry, if it has one,
// goes stale.
func (p *procTimers[K]) remove(k K, pk *procKey, i int) {
	last := len(pk.ts) - 1
	pk.ts[i] = pk.ts[last]
	pk.ts = pk.ts[:last]
	p.touchTimers(k, pk)
	if len(pk.ts) == 0 {
		p.nkeys--
		p.tidy(k, pk)
	}
}

// tidy forgets a key without timers once no heap entry stands for it: a
// key whose only timer moves (its expiry, at every event) keeps its row.
func (p *procTimers[K]) tidy(k K, pk *procKey) {
	if len(pk.ts) == 0 && !pk.timed[0] && !pk.timed[1] {
		delete(p.keys, k)
	}
}

func (p *procTimers[K]) touchTimers(k K, pk *procKey) {
	if p.ttracking && !pk.tdirty {
		pk.tdirty = true
		p.tdirty = append(p.tdirty, k)
	}
}

// due takes the earliest entry of heap h, which the caller saw is due:
// its timer, forgotten as it fires, or false if the entry was stale. An
// entry whose timer was deleted moves in place to the key's next timer
// (one sift down, where popping and pushing again would be two).
func (p *procTimers[K]) due(h int) (timerKey[K], bool) {
	hp := &p.timers[h]
	e := (*hp)[0]
	t := procTimer{e.at, e.dom}
	pk := e.pk
	if !pk.timed[h] || pk.due[h] != t {
		heapPop(hp)
		return e, false
	}
	for i, x := range pk.ts {
		if x == t {
			heapPop(hp)
			pk.timed[h] = false
			p.remove(e.key, pk, i)
			return e, true
		}
	}
	if next, ok := pk.first(h); ok {
		(*hp)[0] = timerKey[K]{at: next.at, key: e.key, dom: next.dom, pk: pk}
		pk.due[h] = next
		heapFix(*hp, 0)
		return e, false
	}
	heapPop(hp)
	pk.timed[h] = false
	p.tidy(e.key, pk)
	return e, false
}

// first is the key's earliest timer of heap h.
func (pk *procKey) first(h int) (procTimer, bool) {
	var first procTimer
	found := false
	for _, x := range pk.ts {
		if heapOf(x.dom) == h && (!found || x.less(first)) {
			first, found = x, true
		}
	}
	return first, found
}

// rearm gives key k an entry in heap h at its earliest timer there, unless
// it has one at least as early.
func (p *procTimers[K]) rearm(k K, h int) {
	if pk := p.keys[k]; pk != nil {
		p.rearmKey(k, pk, h)
	}
}

// rearmKey is rearm for a key whose timers pk are known: those of the
// entry that fired, live or forgotten (then it has none).
func (p *procTimers[K]) rearmKey(k K, pk *procKey, h int) {
	if first, found := pk.first(h); found && (!pk.timed[h] || first.less(pk.due[h])) {
		p.push(k, pk, h, first)
	}
}

// delDomain deletes key k's pending timers of domain dom.
func (p *procTimers[K]) delDomain(k K, dom TimeDomain) {
	pk := p.keys[k]
	if pk == nil {
		return
	}
	for i := len(pk.ts) - 1; i >= 0; i-- {
		if pk.ts[i].dom == dom {
			p.remove(k, pk, i)
			if len(pk.ts) == 0 {
				return // remove may have forgotten the key
			}
		}
	}
}

// own reports whether a timer of domain dom is one of the key's own, not
// one that expires its state.
func own(dom TimeDomain) bool { return dom == ProcessingTime || dom == EventTime }

// userTimers is the number of key k's pending timers of its own.
func (p *procTimers[K]) userTimers(k K) int {
	n := 0
	if pk := p.keys[k]; pk != nil {
		for _, x := range pk.ts {
			if own(x.dom) {
				n++
			}
		}
	}
	return n
}

// lastTimer is the time of key k's latest pending timer of domain dom
// (EventTime or ProcessingTime: its own).
func (p *procTimers[K]) lastTimer(k K, dom TimeDomain) (int64, bool) {
	last, ok := int64(NoWatermark), false
	if pk := p.keys[k]; pk != nil {
		for _, x := range pk.ts {
			if x.dom == dom {
				last, ok = max(last, x.at), true
			}
		}
	}
	return last, ok
}

// Timer entries of the checkpoints before a key's timers went into its
// entry with its state (procEntry), in the operator's second namespace:
// one per key with timers: key = timerEntry + the key; value = the number
// of timers, then each one's domain (a byte) and time (varint). Before
// that, each timer was an entry of its own: key = domain (0-2) + time (8
// bytes) + the key, empty value. Both still restore.
const timerEntry = 0xff

// restoreTimers restores a timer entry of an older form (see timerEntry);
// seen hears of each timer.
func (p *procTimers[K]) restoreTimers(kc KeyCodec[K], key, val []byte, seen func(K, procTimer)) error {
	p.ttracking = true
	if len(key) > 0 && key[0] == timerEntry {
		k, err := kc.Decode(key[1:])
		if err != nil {
			return fmt.Errorf("decode timer key: %w", err)
		}
		n, l := binary.Uvarint(val)
		if l <= 0 || n == 0 || n > uint64(len(val)) {
			return fmt.Errorf("timers of key %s: bad count", kc.Format(k))
		}
		val = val[l:]
		for range n {
			if len(val) < 2 || val[0] > byte(ttlDomain) {
				return fmt.Errorf("timers of key %s: bad timer", kc.Format(k))
			}
			t := procTimer{dom: TimeDomain(val[0])}
			if t.at, l = binary.Varint(val[1:]); l <= 0 {
				return fmt.Errorf("timers of key %s: bad time", kc.Format(k))
			}
			val = val[1+l:]
			seen(k, t)
			p.add(k, t, false)
		}
		if len(val) != 0 {
			return fmt.Errorf("timers of key %s: %d bytes left", kc.Format(k), len(val))
		}
		return nil
	}
	// One entry per timer: domain, time, key.
	if len(key) < 9 || key[0] > byte(ttlDomain) {
		return fmt.Errorf("timer key of %d bytes", len(key))
	}
	k, err := kc.Decode(key[9:])
	if err != nil {
		return fmt.Errorf("decode timer key: %w", err)
	}
	t := procTimer{at: int64(binary.BigEndian.Uint64(key[1:])), dom: TimeDomain(key[0])}
	seen(k, t)
	p.add(k, t, false)
	p.migrate = true
	return nil
}
