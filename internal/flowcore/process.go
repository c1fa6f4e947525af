package flowcore

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/tessera-streams/tessera/splice"
)

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
	// slot is the key's row once State or SetState found it (-1 before):
	// a handler reads its state and sets it back, and the second call
	// finds it without a look-up.
	slot int32
}

// enter makes the context key k's, for an event or a timer of domain dom.
func (c *Context[K, S, O]) enter(k K, dom TimeDomain) { c.key, c.dom, c.slot = k, dom, -1 }

// Key is the current key.
func (c *Context[K, S, O]) Key() K { return c.key }

// State returns the key's state and whether it has any.
func (c *Context[K, S, O]) State() (S, bool) {
	if c.slot < 0 {
		i, ok := c.op.idx[c.key]
		if !ok {
			var zero S
			return zero, false
		}
		c.slot = i
	}
	r := &c.op.rows[c.slot]
	return r.s, r.has
}

// SetState replaces the key's state.
func (c *Context[K, S, O]) SetState(s S) {
	if c.slot < 0 {
		c.slot = c.op.row(c.key)
	}
	c.op.put(c.slot, s)
}

// ClearState removes the key's state.
func (c *Context[K, S, O]) ClearState() {
	if c.slot < 0 {
		i, ok := c.op.idx[c.key]
		if !ok {
			return // no state, none in the checkpoint
		}
		c.slot = i
	}
	c.op.clearRow(c.slot)
}

// Emit sends an output downstream.
func (c *Context[K, S, O]) Emit(o O) {
	for _, s := range c.op.subs {
		s(o)
	}
}

// Now is the processing time of the current batch or timer.
func (c *Context[K, S, O]) Now() time.Time { return c.fr.now }

// Timestamp is the current event's event time, or in an event-time timer
// the timer's time (the zero time for sources without event time, and in
// processing-time timers).
func (c *Context[K, S, O]) Timestamp() time.Time {
	if c.fr.cur.TS == 0 || c.dom == ProcessingTime { // a processing-time timer, fired by the clock or at once in a handler
		return time.Time{}
	}
	return time.Unix(0, c.fr.cur.TS)
}

// Watermark is the watermark of the stage's input: every event up to it
// has arrived, but for late ones (the zero time before there is one).
func (c *Context[K, S, O]) Watermark() time.Time {
	if wm := c.fr.wm(); wm != NoWatermark {
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
// A time at or before the batch's processing time that is not pending
// fires as soon as the handler returns (see SetEventTimer).
func (c *Context[K, S, O]) SetProcessingTimer(at time.Time) {
	c.op.setTimer(c.key, ProcessingTime, at.UnixNano())
}

// DeleteProcessingTimer cancels the key's processing-time timer at at.
func (c *Context[K, S, O]) DeleteProcessingTimer(at time.Time) {
	c.op.delTimer(c.key, ProcessingTime, at.UnixNano())
}

// SetEventTimer asks for OnTimer to be called for this key once the
// watermark reaches at. Event-time timers are deterministic: a replay fires
// them at the same point of the stream.
//
// A timer set for a time the handler has already reached — at or before
// the event's time in event-time order (a late event's too), the
// watermark otherwise, or the time of the timer firing now (for
// processing time: the batch's processing time) — and not pending fires
// as soon as the handler returns, as part of what the handler runs for:
// its outputs are numbered on from the handler's (OutputID). A key's
// timer at one time may so fire more than once, each firing's outputs
// with ids of their own; a time that is pending fires once, however
// often it is set. In event-time order what a handler has reached is
// fixed by the input, and so are the ids; without it, by the watermark
// (which, like the rest of what such a Process computes, may differ in a
// replay: a sink needs OnCheckpoint to see one history).
func (c *Context[K, S, O]) SetEventTimer(at time.Time) {
	c.op.setTimer(c.key, EventTime, at.UnixNano())
}

// DeleteEventTimer cancels the key's event-time timer at at.
func (c *Context[K, S, O]) DeleteEventTimer(at time.Time) {
	c.op.delTimer(c.key, EventTime, at.UnixNano())
}

// ttlDomain and waitDomain are the internal timer domains that expire
// state. A key's expiry (ttlDomain) is always at its last event time plus
// the TTL: a restore reads the last event time back from it. When it
// comes while timers of the key's own are pending, the state waits for
// them: the expiry becomes a wait (waitDomain) at the latest of them,
// and the key forgets its last event time, which has expired. Its next
// event sets a new expiry and drops the wait; the wait, if it comes
// first, expires the state or waits again.
//
// The wait is in the time of the timers it waits for: in event time
// (waitDomain) at the latest of the key's event-time timers while it has
// any, else in processing time (procWaitDomain) at the latest of its
// processing-time timers. A processing-time instant is no event time: a
// wait there in event time came due at once, forever, with the clock
// behind the events, or held the state until the watermark reached a
// time of the clock, long after the timer fired, with the clock ahead.
//
// Before waitDomain, a waiting expiry was a ttlDomain timer at the
// timer's time, which a later event did not move (it moved its last event
// time plus the TTL, a timer no longer there) and which a restore read as
// a last event. A checkpoint of then restores as it did.
const (
	ttlDomain      TimeDomain = 2
	waitDomain     TimeDomain = 3
	procWaitDomain TimeDomain = 4
)

type procOp[K comparable, S, O any] struct {
	op int // the operator's number: outputs of its timers name it
	// The keys' states, in rows: a key's row is found by one look-up of
	// a small value (a map of the states themselves copied each, some
	// 150 bytes in the transport example, in and out of the map), and
	// the row says whether it changed since the last checkpoint, where a
	// second map did. Rows are also the checkpoint's (see procBlock): a
	// key with timers and no state gets one when a checkpoint writes it,
	// and a key left with neither keeps its row until a checkpoint
	// writes its block without it.
	idx    map[K]int32
	rows   []procRow[K, S]
	free   []int32 // rows of no key
	dirty  []int32 // rows set or cleared since the last checkpoint
	nstate int     // rows with a state
	// refree: a restore left rows free between the keys it put back,
	// which the free list does not hold yet.
	refree bool
	// The checkpoint's blocks (see procBlock): which are stored, how
	// many, and scratch for a delta's.
	blockStored, blockMark []bool
	nblocks                int
	blockList              []int32
	subs                   []func(O)
	procTimers[K]
	ctx     Context[K, S, O]
	onTimer func(c *Context[K, S, O], at time.Time)
	kc      KeyCodec[K]
	sc      Codec[S]
	ttl     int64       // 0: state never expires
	lastTS  map[K]int64 // with a TTL: each key's latest event time
	ord     orderedInput[K]
	// While a handler runs: the event time it has reached (in processing
	// time, the batch's), and the timers it set for a time already
	// reached, which fire as soon as it returns (setTimer).
	reached int64
	dueNow  []procTimer
	// entryBytes: the bytes per key of the last delta's blocks, to size
	// the next one's array.
	entryBytes int
}

// procRow is a key's row of a Process's state.
type procRow[K comparable, S any] struct {
	key   K
	s     S
	used  bool // the row is key's
	has   bool // s is the key's state
	dirty bool // in procOp.dirty
}

func (p *procOp[K, S, O]) firingKey() string { return p.kc.Format(p.ctx.key) }

// row returns key k's row, adding one if it has none.
func (p *procOp[K, S, O]) row(k K) int32 {
	if i, ok := p.idx[k]; ok {
		return i
	}
	if p.refree {
		// Every free row, those a delta freed since included.
		p.refree, p.free = false, p.free[:0]
		for i := range p.rows {
			if !p.rows[i].used {
				p.free = append(p.free, int32(i))
			}
		}
	}
	var i int32
	if n := len(p.free); n > 0 {
		i = p.free[n-1]
		p.free = p.free[:n-1]
	} else {
		i = int32(len(p.rows))
		p.rows = append(p.rows, procRow[K, S]{})
	}
	p.rows[i].key, p.rows[i].used = k, true
	p.idx[k] = i
	return i
}

// put sets row i's state, a change for the next checkpoint.
func (p *procOp[K, S, O]) put(i int32, s S) {
	p.restoreState(i, s)
	p.touch(i)
}

// clearRow removes row i's state; the row stays until the next
// checkpoint deletes the key.
func (p *procOp[K, S, O]) clearRow(i int32) {
	r := &p.rows[i]
	if !r.has {
		return
	}
	var zero S
	r.s, r.has = zero, false // drops references for the collector
	p.nstate--
	p.touch(i)
}

// clearState removes key k's state, if it has one.
func (p *procOp[K, S, O]) clearState(k K) {
	if i, ok := p.idx[k]; ok {
		p.clearRow(i)
	}
}

// state is key k's state and whether it has one.
func (p *procOp[K, S, O]) state(k K) (S, bool) {
	if i, ok := p.idx[k]; ok {
		r := &p.rows[i]
		return r.s, r.has
	}
	var zero S
	return zero, false
}

// seen moves key k's expiry to its latest event time plus the TTL, for an
// event at ts that runs at time at: its own time, or the watermark where
// that is later (a late event). A key whose expiry at has passed finds
// its state expired, whether or not the watermark fired the expiry yet:
// without event-time order, an event that comes the TTL after the key's
// last one; and a late event whose key expired behind the watermark since
// it last moved. Not if the key has timers pending: they are its state's
// future, and expiry waits for them (by the watermark). With event-time
// order an event that is not late runs at its own time after every
// expiry due before it, which has fired.
//
// It reports whether the key's expiry is due at at already (a late event's
// state expires as it is made): the caller then expires it after the
// event (expireDue).
func (p *procOp[K, S, O]) seen(k K, ts, at int64) bool {
	last, ok := p.lastTS[k]
	if ok && at >= satAdd(last, p.ttl) && p.userTimers(k) == 0 {
		p.expire(k, last)
		ok = false
	}
	if ok && ts <= last {
		return satAdd(last, p.ttl) <= at
	}
	p.lastTS[k] = ts
	if ok {
		p.move(k, ttlDomain, satAdd(last, p.ttl), satAdd(ts, p.ttl))
	} else {
		// A key new, expired, or whose expiry waits (see waitDomain).
		p.delDomain(k, waitDomain)
		p.delDomain(k, procWaitDomain)
		p.set(k, ttlDomain, satAdd(ts, p.ttl))
	}
	return satAdd(ts, p.ttl) <= at
}

// expireDue expires key k's state after an event that seen said is due at
// at, unless the event set timers of the key's own: the expiry then waits
// for them, as the watermark's does.
func (p *procOp[K, S, O]) expireDue(k K, at int64) {
	if last, ok := p.lastTS[k]; ok && at >= satAdd(last, p.ttl) && p.userTimers(k) == 0 {
		p.expire(k, last)
	}
}

// expire expires key k's state, whose last event was at last, before its
// expiry timer fired.
func (p *procOp[K, S, O]) expire(k K, last int64) {
	p.del(k, ttlDomain, satAdd(last, p.ttl))
	delete(p.lastTS, k)
	p.clearState(k)
}

// Process state is checkpointed in blocks of rows, in the operator's
// second namespace (ns+1): rows b*procBlock to (b+1)*procBlock are one
// entry, key = procBlockEntry + b (4 bytes, big-endian); value = the
// format (procBlockV1), the number of its keys, then for each: its row
// within the block (a byte), the key with its length before it, whether
// it has a state (a byte), the number of its timers, each one's domain
// (a byte) and time (varint), and then the state with its length before
// it. A key's state and timers are one record (an event changes both),
// and a block is one entry for up to procBlock keys: the store's cost is
// mostly per entry (as a table's blocks say, tableblocks.go), and in a
// Process nearly every key changes between checkpoints (each of its
// events moves its state). A key changed alone costs its block's bytes.
//
// A restore puts each key back in its row, so that the blocks' rows stay
// where the checkpoint has them; the rows left free between are reused.
//
// Before, states were entries of the first namespace (ns, key = the key)
// and timers of the second (timerEntry + the key, or one entry per timer:
// see restoreTimers). Those still restore; the next checkpoint rewrites
// both namespaces whole.
const (
	procBlockBits  = 5
	procBlock      = 1 << procBlockBits
	procBlockEntry = 0xfd
	procBlockV1    = 1
)

func (p *procOp[K, S, O]) delta(ns uint16, d *Delta) error {
	if !p.ttracking || p.migrate {
		// Every key's timers: before the first checkpoint their changes
		// were not tracked. After a restore of the old form, every key
		// is written anew, into namespaces cleared.
		if p.migrate {
			d.Reset = append(d.Reset, ns, ns+1)
			clear(p.blockStored)
			p.nblocks = 0
			for i := range p.rows {
				if p.rows[i].used {
					p.touch(int32(i))
				}
			}
		}
		for k, pk := range p.keys {
			if len(pk.ts) > 0 {
				p.touch(p.row(k))
			}
		}
		p.ttracking, p.migrate = true, false
	}
	for _, k := range p.tdirty {
		if pk := p.keys[k]; pk != nil {
			pk.tdirty = false
		}
		p.touch(p.row(k))
	}
	clear(p.tdirty)
	p.tdirty = p.tdirty[:0]
	// The blocks of the rows changed, each once.
	p.haveBlocks((len(p.rows) + procBlock - 1) >> procBlockBits)
	blocks := p.blockList[:0]
	for _, i := range p.dirty {
		p.rows[i].dirty = false
		if b := i >> procBlockBits; !p.blockMark[b] {
			p.blockMark[b] = true
			blocks = append(blocks, b)
		}
	}
	p.dirty = p.dirty[:0]
	// The blocks' entries share one array (sized by the last delta's
	// bytes per key, with a quarter more, or for the first as keys of 64
	// bytes: running out copies what it holds to a larger one): a slice
	// handed to the delta is never written again (if it runs out, a
	// larger array takes the next ones).
	buf := make([]byte, 0, len(blocks)*procBlock*(max(cmp.Or(p.entryBytes, 64), 16)*5/4+2))
	keys := 0
	for _, b := range blocks {
		p.blockMark[b] = false
		at := len(buf)
		buf = binary.BigEndian.AppendUint32(append(buf, procBlockEntry), uint32(b))
		key := buf[at:len(buf):len(buf)]
		at = len(buf)
		buf = append(buf, procBlockV1, 0) // the count, a byte while it fits
		n := 0
		for i := b << procBlockBits; i < min((b+1)<<procBlockBits, int32(len(p.rows))); i++ {
			r := &p.rows[i]
			if !r.used {
				continue
			}
			var ts []procTimer
			if pk := p.keys[r.key]; pk != nil {
				ts = pk.ts
			}
			if !r.has && len(ts) == 0 {
				// Nothing left of the key: its row is free.
				delete(p.idx, r.key)
				*r = procRow[K, S]{}
				p.free = append(p.free, i)
				continue
			}
			var err error
			buf = append(buf, byte(i&(procBlock-1)))
			mark := len(buf)
			if buf, err = p.kc.Append(append(buf, 0), r.key); err != nil {
				return fmt.Errorf("encode key: %w", err)
			}
			buf = putShortLength(buf, mark)
			buf = append(buf, 0)
			if r.has {
				buf[len(buf)-1] = 1
			}
			buf = binary.AppendUvarint(buf, uint64(len(ts)))
			for _, t := range ts {
				buf = binary.AppendVarint(append(buf, byte(t.dom)), t.at)
			}
			if r.has {
				mark = len(buf)
				if buf, err = p.sc.Append(append(buf, 0), r.s); err != nil {
					return fmt.Errorf("encode state of key %s: %w", p.kc.Format(r.key), err)
				}
				buf = putShortLength(buf, mark)
			}
			n++
		}
		keys += n
		if n == 0 {
			buf = buf[:at]
			if p.blockStored[b] {
				p.blockStored[b] = false
				p.nblocks--
				d.Deletes = append(d.Deletes, StateEntry{Namespace: ns + 1, Key: key})
			}
			continue
		}
		buf[at+1] = byte(n) // at most procBlock: a uvarint of one byte
		d.Puts = append(d.Puts, StateEntry{Namespace: ns + 1, Key: key, Value: buf[at:len(buf):len(buf)]})
		if !p.blockStored[b] {
			p.blockStored[b] = true
			p.nblocks++
		}
	}
	if keys > 0 {
		p.entryBytes = (len(buf) + keys - 1) / keys
	}
	p.blockList = blocks[:0]
	d.Entries += int64(p.nblocks)
	return nil
}

// touch marks row i changed since the last checkpoint.
func (p *procOp[K, S, O]) touch(i int32) {
	if r := &p.rows[i]; !r.dirty {
		r.dirty = true
		p.dirty = append(p.dirty, i)
	}
}

func (p *procOp[K, S, O]) restore(ns uint16, key, val []byte) error {
	seen := func(k K, t procTimer) {
		if t.dom == ttlDomain {
			p.lastTS[k] = t.at - p.ttl
		}
	}
	if ns%2 == 1 && len(key) == 5 && key[0] == procBlockEntry {
		return p.restoreBlock(binary.BigEndian.Uint32(key[1:]), val, seen)
	}
	// The old form: the next checkpoint rewrites it.
	p.migrate = true
	if ns%2 == 1 {
		return p.restoreTimers(p.kc, key, val, seen)
	}
	k, err := p.kc.Decode(key)
	if err != nil {
		return fmt.Errorf("decode key: %w", err)
	}
	s, err := p.sc.Decode(val)
	if err != nil {
		return fmt.Errorf("decode state of key %s: %w", p.kc.Format(k), err)
	}
	p.restoreState(p.row(k), s)
	return nil
}

// haveBlocks makes the blocks' flags cover nb blocks.
func (p *procOp[K, S, O]) haveBlocks(nb int) {
	if len(p.blockStored) < nb {
		p.blockStored = append(p.blockStored, make([]bool, nb-len(p.blockStored))...)
		p.blockMark = append(p.blockMark, make([]bool, nb-len(p.blockMark))...)
	}
}

// restoreBlock restores block b's keys into their rows (see procBlock).
func (p *procOp[K, S, O]) restoreBlock(b uint32, val []byte, seen func(K, procTimer)) error {
	r := &batchReader{b: val, kind: fmt.Sprintf("block %d of a Process's keys", b)}
	if len(val) < 2 || val[0] != procBlockV1 {
		return fmt.Errorf("%s: unknown form", r.kind)
	}
	r.b = val[1:]
	n := r.uvarint("count")
	if b >= 1<<31>>procBlockBits || n == 0 || n > procBlock {
		r.fail("bad count")
	}
	p.ttracking = true
	for range n {
		if r.err != nil {
			break
		}
		if len(r.b) == 0 || r.b[0] >= procBlock {
			r.fail("bad row")
			break
		}
		i := int32(b)<<procBlockBits | int32(r.b[0])
		r.b = r.b[1:]
		kb := r.bytes("key")
		if r.err != nil || len(r.b) == 0 || r.b[0] > 1 {
			r.fail("bad key or flag")
			break
		}
		hasState := r.b[0] == 1
		r.b = r.b[1:]
		k, err := p.kc.Decode(kb)
		if err != nil {
			return fmt.Errorf("%s: decode key: %w", r.kind, err)
		}
		for len(p.rows) <= int(i) {
			p.rows = append(p.rows, procRow[K, S]{})
			p.refree = true
		}
		if p.rows[i].used {
			return fmt.Errorf("%s: row %d twice", r.kind, i)
		}
		if _, dup := p.idx[k]; dup {
			return fmt.Errorf("%s: key %s twice", r.kind, p.kc.Format(k))
		}
		p.rows[i].key, p.rows[i].used = k, true
		p.idx[k] = i
		nt := r.uvarint("timer count")
		for range nt {
			if r.err != nil || len(r.b) < 2 || r.b[0] > byte(procWaitDomain) {
				r.fail("bad timer")
				break
			}
			t := procTimer{dom: TimeDomain(r.b[0])}
			r.b = r.b[1:]
			t.at = r.varint("timer")
			if r.err != nil {
				break
			}
			seen(k, t)
			p.add(k, t, false)
		}
		if hasState {
			sb := r.bytes("state")
			if r.err != nil {
				break
			}
			s, err := p.sc.Decode(sb)
			if err != nil {
				return fmt.Errorf("%s: decode state of key %s: %w", r.kind, p.kc.Format(k), err)
			}
			p.restoreState(i, s)
		} else if nt == 0 {
			r.fail("a key of no state and no timers")
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("trailing bytes")
	}
	if r.err != nil {
		return r.err
	}
	p.haveBlocks(int(b) + 1)
	if !p.blockStored[b] {
		p.blockStored[b] = true
		p.nblocks++
	}
	return nil
}

// restoreState sets row i's state, as a restore does: not as a change.
func (p *procOp[K, S, O]) restoreState(i int32, s S) {
	r := &p.rows[i]
	if !r.has {
		r.has = true
		p.nstate++
	}
	r.s = s
}

func (p *procOp[K, S, O]) fire(fr *Fragment, now time.Time) {
	h := &p.timers[0]
	t0 := now.UnixNano()
	for len(*h) > 0 && (*h)[0].at <= t0 {
		t, ok := p.due(0)
		if !ok {
			continue
		}
		if t.dom == procWaitDomain {
			p.expireOrWait(t.key)
			p.rearm(t.key, 0)
			continue
		}
		if p.onTimer != nil {
			ts := fr.wm()
			if ts == NoWatermark {
				ts = 0
			}
			fr.firing(CauseProcessingTimer, p.op, t.at, ts, p)
			p.fireOne(fr, t, fr.wm())
		}
		p.rearmKey(t.key, t.pk, 0)
	}
}

// fireEvent runs the key's event time up to the watermark wm: the event
// timers and expiries due, in time order, and with event-time order the
// events buffered up to wm between them (at the same time: a key's timers,
// then its expiry, then its events).
func (p *procOp[K, S, O]) fireEvent(fr *Fragment, wm int64) {
	h := &p.timers[1]
	for {
		tOK := len(*h) > 0 && (*h)[0].at <= wm
		if p.ord != nil {
			if ev, ok := p.ord.next(wm); ok && (!tOK || ev < (*h)[0].at) {
				p.ord.applyNext(fr)
				continue
			}
		}
		if !tOK {
			return
		}
		t, ok := p.due(1)
		if !ok {
			continue // the earliest entry was stale
		}
		if t.dom == ttlDomain || t.dom == waitDomain {
			delete(p.lastTS, t.key)
			p.expireOrWait(t.key)
			p.rearm(t.key, 1)
			continue
		}
		if p.onTimer != nil {
			fr.firing(CauseEventTimer, p.op, t.at, t.at, p)
			p.fireOne(fr, t, t.at)
		}
		p.rearmKey(t.key, t.pk, 1)
	}
}

// expireOrWait expires key k's state, whose expiry came, unless timers of
// its own are pending: then it waits for the latest of them, in event
// time while any is an event-time timer, else in processing time (see
// waitDomain).
func (p *procOp[K, S, O]) expireOrWait(k K) {
	if last, ok := p.lastTimer(k, EventTime); ok {
		p.set(k, waitDomain, last)
	} else if last, ok := p.lastTimer(k, ProcessingTime); ok {
		p.set(k, procWaitDomain, last)
	} else {
		p.clearState(k)
	}
}

// fireOne fires timer t, the handler having reached event time reached
// (setTimer), and then the timers it set for a time already reached.
func (p *procOp[K, S, O]) fireOne(fr *Fragment, t timerKey[K], reached int64) {
	p.enterHandler(reached)
	p.callTimer(fr, t.key, procTimer{t.at, t.dom})
	p.fireDueNow(fr, t.key)
}

// callTimer calls OnTimer for key k's timer t; a panic makes the timer a
// dead letter.
func (p *procOp[K, S, O]) callTimer(fr *Fragment, k K, t procTimer) {
	defer func() {
		if v := recover(); v != nil {
			fr.timerErr = append(fr.timerErr, fr.deadLetter(p.kc.Format(k), fmt.Sprintf("timer at %s", time.Unix(0, t.at).UTC()), v))
		}
	}()
	p.ctx.enter(k, t.dom)
	p.onTimer(&p.ctx, time.Unix(0, t.at))
}

// enterHandler starts a handler that has reached event time reached (and
// the batch's processing time).
func (p *procOp[K, S, O]) enterHandler(reached int64) {
	p.reached = reached
	if len(p.dueNow) > 0 { // left by a handler that panicked
		p.dueNow = p.dueNow[:0]
	}
}

// setTimer sets key k's timer of domain dom at at. A time the running
// handler has already reached would otherwise fire at the next firing
// under the id of an earlier firing at that time (the operator, the key
// and the time: OutputID), or fire again after the key's events that the
// handler comes before: it fires as soon as the handler returns, as part
// of what the handler runs for, unless it is pending (set before, it
// fires once).
func (p *procOp[K, S, O]) setTimer(k K, dom TimeDomain, at int64) {
	t := procTimer{at, dom}
	reached := p.reached
	if dom == ProcessingTime {
		reached = p.ctx.fr.now.UnixNano()
	}
	if at > reached || p.pending(k, t) {
		p.set(k, dom, at)
		return
	}
	if !slices.Contains(p.dueNow, t) {
		p.dueNow = append(p.dueNow, t)
	}
}

// delTimer cancels key k's timer of domain dom at at, pending or due now.
func (p *procOp[K, S, O]) delTimer(k K, dom TimeDomain, at int64) {
	if i := slices.Index(p.dueNow, procTimer{at, dom}); i >= 0 {
		p.dueNow = slices.Delete(p.dueNow, i, i+1)
	}
	p.del(k, dom, at)
}

// fireDueNow fires, after a handler of key k returned, the timers it set
// for a time already reached, and those these set in turn, each time of
// a domain once; their outputs are numbered on from the handler's.
func (p *procOp[K, S, O]) fireDueNow(fr *Fragment, k K) {
	if len(p.dueNow) == 0 {
		return
	}
	if p.onTimer == nil {
		p.dueNow = p.dueNow[:0]
		return
	}
	var fired []procTimer
	ts := fr.cur.TS
	for len(p.dueNow) > 0 {
		t := p.dueNow[0]
		p.dueNow = slices.Delete(p.dueNow, 0, 1)
		if slices.Contains(fired, t) {
			continue
		}
		fired = append(fired, t)
		if t.dom == EventTime {
			fr.cur.TS = t.at
		}
		p.callTimer(fr, k, t)
		fr.cur.TS = ts
	}
}

// Processed is the result of Process: its output stream and its state.
type Processed[K comparable, S, O any] struct {
	f     *Flow
	stage int
	op    int
	kc    KeyCodec[K]
	hs    func(K) uint64
	sc    Codec[S]
}

// InEventTimeOrder makes Process see each fragment's events in event-time
// order, between its timers: an event waits until the watermark passes its
// time, then runs after every timer (and state expiry) due before it, as in
// a sequential run over the events sorted by time. The results then
// depend on the events alone — not on how partitions interleave, lag or
// are batched — at the price of the watermark's delay. Events at the same
// time run in the order of their channel, partition and offset. Late
// events (behind the watermark) run at once. The waiting events are part
// of the checkpoint. It needs event time.
func InEventTimeOrder() StateOption { return StateOption{ordered: true} }

// Process runs a per-key state machine over a keyed stream.
//
// With WithStateTTL, a key's state expires once the watermark passes its
// last event by the TTL, after every timer due before; a key with timers of
// its own pending keeps its state until they have fired. An event that
// comes the TTL after its key's last one (and finds no timer pending)
// starts from no state, whatever the watermark says; a late event finds
// the state expired if the watermark passed the key's expiry, and the
// state it makes goes at once if the watermark passed its own.
func Process[K comparable, T, S, O any](ks KeyedStream[K, T], h Handler[K, T, S, O], opts ...StateOption) Processed[K, S, O] {
	f := ks.f
	if h.OnEvent == nil {
		f.errorf("Process: OnEvent must not be nil")
	}
	sc := stateCodec[S](f, "Process", opts)
	ttl := stateTTL(f, "Process", ks.stage, opts)
	ordered := false
	for _, o := range opts {
		ordered = ordered || o.ordered
	}
	if ordered && f.sources[f.stages[ks.stage].source].et == nil {
		f.errorf("Process: InEventTimeOrder needs a source with event time (flows.WithEventTime)")
	}
	op := f.addOp(ks.stage, fmt.Sprintf("Process of state %s by %s, out %s%s%s", typeName[S](), typeName[K](), typeName[O](), codecNote("state", givenCodec(opts)), processTTLNote(ttl)))
	ordOp := -1
	if ordered {
		ordOp = f.addOp(ks.stage, fmt.Sprintf("event-time order of %s by %s", typeName[T](), typeName[K]()))
	}
	codec, _ := f.stages[ks.stage].codec.(*recsCodec[K, T])
	f.fragW = append(f.fragW, func(fr *Fragment) {
		p := &procOp[K, S, O]{op: op, idx: map[K]int32{}, procTimers: newProcTimers[K](),
			onTimer: h.OnTimer, kc: ks.kc, sc: sc, ttl: ttl, lastTS: map[K]int64{}}
		p.ctx = Context[K, S, O]{op: p, fr: fr, slot: -1}
		fr.ops[op] = p
		fr.addTimers(ks.stage, p)
		// run runs an event at time at (see seen), having reached event
		// time reached (setTimer).
		run := func(k K, v T, at, reached int64) {
			due := ttl > 0 && p.seen(k, fr.cur.TS, at)
			p.ctx.enter(k, EventTime)
			p.enterHandler(reached)
			h.OnEvent(&p.ctx, v)
			p.fireDueNow(fr, k)
			if due {
				p.expireDue(k, at)
			}
		}
		if !ordered {
			ks.subscribe(fr, func(k K, v T) { wm := fr.wm(); run(k, v, max(fr.cur.TS, wm), wm) })
			return
		}
		buf := &eventBuffer[K, T]{fr: fr, op: op, codec: codec, run: func(k K, v T) { run(k, v, fr.cur.TS, fr.cur.TS) }}
		p.ord = buf
		fr.ops[ordOp] = buf
		ks.subscribe(fr, func(k K, v T) {
			if wm := fr.wm(); wm != NoWatermark && fr.cur.TS <= wm {
				// Late: it runs at once, having reached its own time (as
				// had it come in time), not the watermark, which a replay
				// may find elsewhere: a timer it sets at a time between
				// fires at the next firing, under the timer's id, as it
				// would have.
				run(k, v, wm, fr.cur.TS)
				return
			}
			buf.add(k, v)
		})
	})
	return Processed[K, S, O]{f: f, stage: ks.stage, op: op, kc: ks.kc, hs: ks.hash, sc: sc}
}

// Out is the stream of what the process function emits.
func (p Processed[K, S, O]) Out() Stream[O] {
	return Stream[O]{f: p.f, what: "Process", side: fragmentSide, stage: p.stage,
		attach: func(c *core, fn func(O)) {
			po := c.frag.ops[p.op].(*procOp[K, S, O])
			po.subs = append(po.subs, fn)
		}}
}

// View exposes the process function's state as a keyed view (see ScoreBy
// and PublishIf for its options).
func (p Processed[K, S, O]) View(name string, opts ...ViewOption[S]) Processed[K, S, O] {
	o := resolveViewOptions(opts)
	p.f.opView(p.op, name)
	addKeyedView(p.f, name, p.stage, p.kc, p.hs, anyCodec(p.sc), func(fr *Fragment, q splice.Query, after *K, only *K) []splice.Entry {
		po := fr.ops[p.op].(*procOp[K, S, O])
		if only != nil {
			if s, ok := po.state(*only); ok && o.publish(s) {
				return []splice.Entry{{Key: p.kc.Format(*only), Value: s, Sort: *only}}
			}
			return nil
		}
		rows := make([]int32, 0, po.nstate)
		for i := range po.rows {
			if po.rows[i].has {
				rows = append(rows, int32(i))
			}
		}
		return selectKeys(len(rows), func(i int) (K, S) { r := &po.rows[rows[i]]; return r.key, r.s }, q, after, p.kc, o)
	})
	return p
}

// orderedInput is a Process's buffer of events waiting for the watermark
// (nil without InEventTimeOrder).
type orderedInput[K comparable] interface {
	// next is the time of the earliest waiting event, if it is at or
	// before wm.
	next(wm int64) (int64, bool)
	// applyNext runs the earliest waiting event.
	applyNext(fr *Fragment)
}

// buffered is an event waiting for the watermark, with where it came from.
type buffered[K comparable, T any] struct {
	ts    int64
	ch    int32
	part  int32
	off   int64
	sub   int32 // among records of one input event (FlatMap before KeyBy)
	key   K
	val   T
	saved bool // in a checkpoint
}

func (a *buffered[K, T]) cmp(b *buffered[K, T]) int {
	if c := cmp.Compare(a.ts, b.ts); c != 0 {
		return c
	}
	if c := cmp.Compare(a.ch, b.ch); c != 0 {
		return c
	}
	if c := cmp.Compare(a.part, b.part); c != 0 {
		return c
	}
	if c := cmp.Compare(a.off, b.off); c != 0 {
		return c
	}
	return cmp.Compare(a.sub, b.sub)
}

// before is cmp(b) < 0, inlined where the times differ, as they nearly
// always do.
func (a *buffered[K, T]) before(b *buffered[K, T]) bool {
	if a.ts != b.ts {
		return a.ts < b.ts
	}
	return a.cmp(b) < 0
}

// bufHeap is a min-heap of waiting events by their place in the order,
// held by value: an event costs no allocation of its own. It compares in
// place, not through heap.go's before(E), which copies two whole events
// per comparison (BenchmarkProcessInEventTimeOrder: 165 → 300 ns/event).
type bufHeap[K comparable, T any] []buffered[K, T]

func (h *bufHeap[K, T]) push(e buffered[K, T]) {
	if len(*h) == cap(*h) {
		// Doubled, where append grows a large slice by a quarter: a
		// buffer holds up to a watermark's delay of a fragment's events,
		// and growing to that a quarter at a time copied them many times.
		*h = slices.Grow(*h, max(len(*h), 64))
	}
	*h = append(*h, e)
	q := *h
	// A hole moves up, not the event: each level copies one element, not
	// two (an element is some 70 bytes).
	i := len(q) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if !e.before(&q[parent]) {
			break
		}
		q[i] = q[parent]
		i = parent
	}
	q[i] = e
}

// pop removes the earliest event into *into. The hole left at the top
// goes down to a leaf along the earlier children (one comparison a level),
// and the last event goes up from there (rarely more than a level): fewer
// comparisons and copies than sifting the last event down (Floyd).
func (h *bufHeap[K, T]) pop(into *buffered[K, T]) {
	q := *h
	n := len(q) - 1
	*into = q[0]
	last := q[n]
	q[n] = buffered[K, T]{} // drop references for the collector
	q = q[:n]
	*h = q
	if n == 0 {
		return
	}
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && q[r].before(&q[l]) {
			m = r
		}
		q[i] = q[m]
		i = m
	}
	for i > 0 {
		parent := (i - 1) / 2
		if !last.before(&q[parent]) {
			break
		}
		q[i] = q[parent]
		i = parent
	}
	q[i] = last
}

// eventBuffer holds a Process's events until the watermark passes them.
//
// Its checkpoint (its own namespace) is in segments, not an entry per
// event: a checkpoint writes the events added since the one before and
// still waiting as one entry, keyed by the latest of them, and records
// the place of the last event applied (the frontier). The buffer applies
// its events in order and takes only events after the frontier (an event
// at or behind the watermark runs at once), so every event up to the
// frontier has been applied: a restore skips those, and a segment whose
// latest event is behind the frontier is deleted. A segment thus costs a
// checkpoint one put and one delete, whatever its events, at the price
// of keeping applied events on disk until their segment goes; events
// applied before any checkpoint saw them are never written. (Checkpoints
// of an entry per event, keyed by its 28-byte place, still restore.)
type eventBuffer[K comparable, T any] struct {
	fr      *Fragment
	op      int // the Process's operator (OutputID.Op of what it emits)
	codec   *recsCodec[K, T]
	run     func(k K, v T)
	h       bufHeap[K, T]
	running buffered[K, T]  // the event running now, out of the heap
	cur     *buffered[K, T] // &running while it runs
	last    [3]int64        // channel, partition and offset of the last event added
	lastSub int32
	hasLast bool
	// The last event applied (its place in the order), and whether it
	// changed since the last checkpoint; stale: a restore left events up
	// to the frontier in h.
	applied      bufPos
	frontier     bufPlace
	moved, stale bool
	hasFrontier  bool         // in the checkpoint
	segs         []bufSegment // in the checkpoint
	// eventBytes: the bytes of an event in the last segment, to size the
	// next one's array.
	eventBytes int
}

// bufPos is an event's place in the order.
type bufPos struct {
	ts       int64
	ch, part int32
	off      int64
	sub      int32
}

// bufPlace is an event's place in the order as bytes that sort the same
// way: time (as signed), channel, partition, offset, record.
type bufPlace [28]byte

func (p bufPos) place() bufPlace {
	var b bufPlace
	binary.BigEndian.PutUint64(b[0:], uint64(p.ts)^(1<<63)) // sorts as signed
	binary.BigEndian.PutUint32(b[8:], uint32(p.ch))
	binary.BigEndian.PutUint32(b[12:], uint32(p.part))
	binary.BigEndian.PutUint64(b[16:], uint64(p.off))
	binary.BigEndian.PutUint32(b[24:], uint32(p.sub))
	return b
}

// bufSegment is a checkpoint entry of waiting events: its key and the
// place of its latest event.
type bufSegment struct {
	key    []byte
	latest bufPlace
}

// The keys of the buffer's namespace: the frontier, and a segment (the
// prefix, then its latest event's place). A 28-byte key is an older
// checkpoint's single event.
const (
	bufFrontierKey = 0
	bufSegmentKey  = 1
)

func (b *eventBuffer[K, T]) add(k K, v T) {
	c := b.fr.cur
	e := buffered[K, T]{ts: c.TS, ch: int32(c.Source), part: int32(c.Partition), off: c.Offset, key: k, val: v}
	if at := [3]int64{int64(c.Source), int64(c.Partition), c.Offset}; b.hasLast && b.last == at {
		b.lastSub++
		e.sub = b.lastSub
	} else {
		// (Not the zero place by default: the first record of offset 0
		// of partition 0 would be record 1 when it came first, 0 when
		// not, and its outputs' ids would differ in a replay.)
		b.last, b.lastSub, b.hasLast = at, 0, true
	}
	b.h.push(e)
}

func (b *eventBuffer[K, T]) next(wm int64) (int64, bool) {
	if b.stale {
		b.dropApplied()
	}
	if len(b.h) == 0 || b.h[0].ts > wm {
		return 0, false
	}
	return b.h[0].ts, true
}

// dropApplied drops the restored events that were applied before the
// checkpoint: the earliest, up to the frontier.
func (b *eventBuffer[K, T]) dropApplied() {
	b.stale = false
	var e buffered[K, T]
	for len(b.h) > 0 {
		if p := b.h[0].place(); string(p[:]) > string(b.frontier[:]) {
			return
		}
		b.h.pop(&e)
	}
}

func (b *eventBuffer[K, T]) applyNext(fr *Fragment) {
	b.h.pop(&b.running)
	e := &b.running
	b.applied, b.moved = bufPos{e.ts, e.ch, e.part, e.off, e.sub}, true
	fr.cur.Source, fr.cur.Partition, fr.cur.TS = int(e.ch), int(e.part), e.ts
	if fr.skip != nil && fr.skipped(e.off) {
		b.running = buffered[K, T]{}
		return
	}
	fr.released(e.off, int(e.sub), b.op)
	b.cur, fr.failing = e, b
	b.run(e.key, e.val)
	b.cur, fr.failing = nil, nil
	b.running = buffered[K, T]{}
}

func (b *eventBuffer[K, T]) describeFailing() (key, val string) {
	return b.codec.kc.Format(b.cur.key), fmt.Sprintf("%+v", b.cur.val)
}

func (e *buffered[K, T]) place() bufPlace { return bufPos{e.ts, e.ch, e.part, e.off, e.sub}.place() }

func (b *eventBuffer[K, T]) delta(ns uint16, d *Delta) error {
	if b.moved {
		b.frontier = b.applied.place()
		d.Puts = append(d.Puts, StateEntry{Namespace: ns, Key: []byte{bufFrontierKey}, Value: append([]byte(nil), b.frontier[:]...)})
		b.moved, b.hasFrontier = false, true
		segs := b.segs[:0]
		for _, g := range b.segs {
			if string(g.latest[:]) <= string(b.frontier[:]) {
				d.Deletes = append(d.Deletes, StateEntry{Namespace: ns, Key: g.key})
				continue
			}
			segs = append(segs, g)
		}
		clear(b.segs[len(segs):])
		b.segs = segs
	}
	n := 0
	for i := range b.h {
		if !b.h[i].saved {
			n++
		}
	}
	if n > 0 {
		// The events are encoded into the entry's value itself, sized
		// by the last segment's bytes per event with a quarter more (for
		// the first, as events of 64 bytes).
		val := make([]byte, 0, binary.MaxVarintLen32+n*(max(cmp.Or(b.eventBytes, 64), 16)*5/4))
		val = binary.AppendUvarint(val, uint64(n))
		from, latest := len(val), -1
		for i := range b.h {
			e := &b.h[i]
			if e.saved {
				continue
			}
			var err error
			if val, err = b.appendEvent(val, e); err != nil {
				return err
			}
			if latest < 0 || b.h[latest].before(e) {
				latest = i
			}
			e.saved = true
		}
		b.eventBytes = (len(val) - from + n - 1) / n
		p := b.h[latest].place()
		key := append([]byte{bufSegmentKey}, p[:]...)
		d.Puts = append(d.Puts, StateEntry{Namespace: ns, Key: key, Value: val})
		b.segs = append(b.segs, bufSegment{key: key, latest: p})
	}
	d.Entries += int64(len(b.segs))
	if b.hasFrontier {
		d.Entries++
	}
	return nil
}

// appendEvent appends a waiting event to a segment: its place (time as a
// varint, the rest as uvarints), then its key and value, each after its
// length.
func (b *eventBuffer[K, T]) appendEvent(dst []byte, e *buffered[K, T]) ([]byte, error) {
	dst = binary.AppendVarint(dst, e.ts)
	dst = binary.AppendUvarint(dst, uint64(uint32(e.ch)))
	dst = binary.AppendUvarint(dst, uint64(uint32(e.part)))
	dst = binary.AppendUvarint(dst, uint64(e.off))
	dst = binary.AppendUvarint(dst, uint64(uint32(e.sub)))
	// Each encoded in place after a byte for its length, which moves it
	// only if it takes more (128 bytes or more).
	var err error
	mark := len(dst)
	if dst, err = b.codec.kc.Append(append(dst, 0), e.key); err != nil {
		return dst, fmt.Errorf("encode waiting event's key: %w", err)
	}
	dst = putShortLength(dst, mark)
	mark = len(dst)
	if dst, err = b.codec.ec.Append(append(dst, 0), e.val); err != nil {
		return dst, fmt.Errorf("encode waiting event: %w", err)
	}
	return putShortLength(dst, mark), nil
}

func (b *eventBuffer[K, T]) restore(_ uint16, key, val []byte) error {
	switch {
	case len(key) == 1 && key[0] == bufFrontierKey:
		if len(val) != len(b.frontier) {
			return fmt.Errorf("waiting events' frontier of %d bytes", len(val))
		}
		b.frontier, b.stale, b.hasFrontier = bufPlace(val), true, true
		return nil
	case len(key) == 1+len(bufPlace{}) && key[0] == bufSegmentKey:
		r := &batchReader{b: val, kind: "segment of waiting events"}
		n := r.uvarint("count")
		for i := uint64(0); i < n && r.err == nil; i++ {
			e := buffered[K, T]{ts: r.varint("time"), ch: int32(r.uvarint("channel")), part: int32(r.uvarint("partition")),
				off: int64(r.uvarint("offset")), sub: int32(r.uvarint("record")), saved: true}
			kb, vb := r.bytes("key"), r.bytes("value")
			if r.err != nil {
				break
			}
			if err := b.restoreEvent(&e, kb, vb); err != nil {
				return err
			}
		}
		if r.err == nil && len(r.b) != 0 {
			r.fail("trailing bytes")
		}
		if r.err != nil {
			return r.err
		}
		b.segs = append(b.segs, bufSegment{key: append([]byte(nil), key...), latest: bufPlace(key[1:])})
		return nil
	case len(key) == len(bufPlace{}):
		return b.restoreSingle(key, val)
	}
	return fmt.Errorf("waiting events: a key of %d bytes", len(key))
}

func (b *eventBuffer[K, T]) restoreEvent(e *buffered[K, T], kb, vb []byte) error {
	k, err := b.codec.kc.Decode(kb)
	if err != nil {
		return fmt.Errorf("decode waiting event's key: %w", err)
	}
	v, err := b.codec.ec.Decode(vb)
	if err != nil {
		return fmt.Errorf("decode waiting event: %w", err)
	}
	e.key, e.val = k, v
	b.h.push(*e)
	return nil
}

// restoreSingle restores an event of an older checkpoint, an entry of its
// own: a segment of one.
func (b *eventBuffer[K, T]) restoreSingle(key, val []byte) error {
	r := &batchReader{b: val, kind: "waiting event"}
	ts := r.varint("time")
	kb := r.bytes("key")
	if r.err != nil {
		return r.err
	}
	e := buffered[K, T]{ts: ts, ch: int32(binary.BigEndian.Uint32(key[8:])), part: int32(binary.BigEndian.Uint32(key[12:])),
		off: int64(binary.BigEndian.Uint64(key[16:])), sub: int32(binary.BigEndian.Uint32(key[24:])), saved: true}
	if err := b.restoreEvent(&e, kb, r.b); err != nil {
		return err
	}
	b.segs = append(b.segs, bufSegment{key: append([]byte(nil), key...), latest: bufPlace(key)})
	return nil
}
