package flowcore

import (
	"container/heap"
	"encoding/binary"
	"fmt"
	"time"
)

// tableTTL expires a table's keys by event time: a key goes once the
// watermark passes its last event's time by ttl. Each key has at most one
// entry in the expiry heap; an entry that comes due for a key seen since is
// pushed again at the key's new expiry.
type tableTTL[K comparable] struct {
	ttl    int64
	last   []int64 // per slot: the latest event time of the key
	queued []bool  // per slot: the key has an entry in exp
	exp    ttlHeap[K]
	gone   []K // expired since the last checkpoint
}

type ttlEntry[K comparable] struct {
	at  int64
	key K
}

type ttlHeap[K comparable] []ttlEntry[K]

func (h ttlHeap[K]) Len() int           { return len(h) }
func (h ttlHeap[K]) Less(i, j int) bool { return h[i].at < h[j].at }
func (h ttlHeap[K]) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *ttlHeap[K]) Push(x any)        { *h = append(*h, x.(ttlEntry[K])) }
func (h *ttlHeap[K]) Pop() any {
	x := (*h)[len(*h)-1]
	*h = (*h)[:len(*h)-1]
	return x
}

// seen records an event of key k (in slot i) at event time ts.
func (e *tableTTL[K]) seen(i int32, k K, ts int64) {
	if ts > e.last[i] {
		e.last[i] = ts
	}
	if !e.queued[i] {
		e.queued[i] = true
		heap.Push(&e.exp, ttlEntry[K]{at: satAdd(e.last[i], e.ttl), key: k})
	}
}

func (t *table[K, V]) fire(*Fragment, time.Time) {}

// fireEvent drops the keys whose TTL the watermark passed.
func (t *table[K, V]) fireEvent(_ *Fragment, wm int64) {
	e := t.exp
	for len(e.exp) > 0 && e.exp[0].at <= wm {
		x := heap.Pop(&e.exp).(ttlEntry[K])
		i, ok := t.lookup(x.key, 0)
		if !ok {
			continue
		}
		if due := satAdd(e.last[i], e.ttl); due > wm {
			heap.Push(&e.exp, ttlEntry[K]{at: due, key: x.key}) // seen since
			continue
		}
		t.expire(i)
	}
}

// expire drops the key in slot i.
func (t *table[K, V]) expire(i int32) {
	t.exp.gone = append(t.exp.gone, t.keys[i])
	t.remove(i)
}

// expired drops key k if an event that runs at at (its time, or the
// watermark for a late one) comes at least the TTL after its last one: its
// state expired by event time, whether or not the watermark has fired the
// expiry yet. This makes expiry a function of the key's events and the
// watermark they meet, not of when the watermark moved.
func (t *table[K, V]) expired(k K, ts int64) {
	if i, ok := t.lookup(k, 0); ok && ts >= satAdd(t.exp.last[i], t.exp.ttl) {
		t.expire(i)
	}
}

// remove deletes slot i, moving the last slot into it. The dirty list may
// then name slots past the end or unmarked: delta skips those.
func (t *table[K, V]) remove(i int32) {
	n := int32(len(t.keys)) - 1
	for _, x := range t.tops {
		x.removed(i, n)
	}
	t.indexDelete(t.keys[i])
	if i != n {
		t.keys[i], t.vals[i], t.mark[i] = t.keys[n], t.vals[n], t.mark[n]
		t.exp.last[i], t.exp.queued[i] = t.exp.last[n], t.exp.queued[n]
		t.indexMove(t.keys[i], i)
		if t.gen != nil {
			t.stamp[i] = t.stamp[n]
		}
		if t.mark[i] {
			t.dirty = append(t.dirty, i)
		}
	}
	var zk K
	var zv V
	t.keys[n], t.vals[n] = zk, zv
	t.keys, t.vals, t.mark = t.keys[:n], t.vals[:n], t.mark[:n]
	t.exp.last, t.exp.queued = t.exp.last[:n], t.exp.queued[:n]
	if t.gen != nil {
		t.stamp = t.stamp[:n]
	}
}

// ttlDelta writes, in namespace ns, the last event time of every changed
// key, and deletes the expired keys in both of the table's namespaces. A
// key that expired and came back is deleted and put again: the store
// applies deletes first.
func (t *table[K, V]) ttlDelta(ns uint16, d *Delta) error {
	e := t.exp
	for _, k := range e.gone {
		key, err := t.kc.Append(nil, k)
		if err != nil {
			return fmt.Errorf("encode key: %w", err)
		}
		d.Deletes = append(d.Deletes, StateEntry{Namespace: ns - 1, Key: key}, StateEntry{Namespace: ns, Key: key})
	}
	e.gone = e.gone[:0]
	for _, i := range t.dirty {
		key, err := t.kc.Append(nil, t.keys[i])
		if err != nil {
			return fmt.Errorf("encode key: %w", err)
		}
		d.Puts = append(d.Puts, StateEntry{Namespace: ns, Key: key, Value: binary.BigEndian.AppendUint64(nil, uint64(e.last[i]))})
	}
	d.Entries += int64(len(t.keys))
	return nil
}

// ttlRestore sets a restored key's last event time (its value comes first:
// namespaces restore in order).
func (t *table[K, V]) ttlRestore(key, val []byte) error {
	k, err := t.kc.Decode(key)
	if err != nil {
		return fmt.Errorf("decode key: %w", err)
	}
	i, ok := t.lookup(k, 0)
	if !ok || len(val) != 8 {
		return fmt.Errorf("state TTL entry of key %s without a value, or of %d bytes", t.kc.Format(k), len(val))
	}
	e := t.exp
	e.last[i], e.queued[i] = int64(binary.BigEndian.Uint64(val)), true
	heap.Push(&e.exp, ttlEntry[K]{at: satAdd(e.last[i], e.ttl), key: k})
	return nil
}
