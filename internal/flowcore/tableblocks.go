package flowcore

import (
	"encoding/binary"
	"fmt"
)

// A table without a TTL checkpoints its slots in blocks: slots b*tableBlock
// to (b+1)*tableBlock are one entry, in namespace ns+1 under b (4 bytes,
// big-endian), whose value is the number of slots, then each slot's key
// and value, each with its length before it. A changed key rewrites its
// block.
//
// Why blocks: a table's checkpoint was one store entry per changed key,
// and the store's cost is mostly per entry (its memtable insert, the
// entry's key and checksum, what a flush and a compaction then carry):
// a count over 100k keys checkpointed ten times a second spent a sixth of
// its CPU inserting entries. A block costs one entry for tableBlock keys;
// a key changed alone costs the bytes of its block (at most tableBlock
// keys), a price worth paying where every entry is dearer than its bytes.
//
// Slots never move in a table without a TTL (keys are appended, never
// removed), so a block's keys are fixed once it is full, and a restore
// that reads the blocks in order (the store's key order) rebuilds the
// same slots. A table with a TTL moves slots as keys expire, and keeps
// one entry per key (tablettl.go). Entries of one key each in namespace ns
// are the format before: a restore reads them, and the next delta deletes
// them (Reset) and writes every block.
const (
	tableBlockBits = 5
	tableBlock     = 1 << tableBlockBits
)

// blockDelta writes the blocks of the slots changed since the last delta.
func (t *table[K, V]) blockDelta(ns uint16, d *Delta) error {
	nb := (len(t.keys) + tableBlock - 1) >> tableBlockBits
	if len(t.blockMark) < nb {
		t.blockMark = append(t.blockMark, make([]bool, nb-len(t.blockMark))...)
	}
	blocks := t.blocks[:0]
	if t.perKey {
		d.Reset = append(d.Reset, ns)
		for b := range nb {
			blocks = append(blocks, int32(b))
		}
		t.perKey = false
	} else {
		for _, i := range t.dirty {
			if b := i >> tableBlockBits; !t.blockMark[b] {
				t.blockMark[b] = true
				blocks = append(blocks, b)
			}
		}
	}
	for _, i := range t.dirty {
		t.mark[i] = false
	}
	t.dirty = t.dirty[:0]
	// One buffer holds every block, sized at once from the checkpoint
	// before (see delta).
	slots := 0
	for _, b := range blocks {
		slots += min(tableBlock, len(t.keys)-int(b)<<tableBlockBits)
	}
	buf := make([]byte, 0, slots*(t.entryBytes+t.entryBytes/4+2)+4*len(blocks))
	spans := t.spans[:0]
	var err error
	for _, b := range blocks {
		t.blockMark[b] = false
		lo := int(b) << tableBlockBits
		hi := min(lo+tableBlock, len(t.keys))
		sp := entrySpan{k0: len(buf)}
		buf = binary.BigEndian.AppendUint32(buf, uint32(b))
		sp.k1 = len(buf)
		buf = binary.AppendUvarint(buf, uint64(hi-lo))
		for i := lo; i < hi; i++ {
			mark := len(buf)
			if buf, err = t.kc.Append(append(buf, 0), t.keys[i]); err != nil {
				return fmt.Errorf("encode key: %w", err)
			}
			buf = putShortLength(buf, mark)
			mark = len(buf)
			if buf, err = t.vc.Append(append(buf, 0), t.vals[i]); err != nil {
				return fmt.Errorf("encode state of key %s: %w", t.kc.Format(t.keys[i]), err)
			}
			buf = putShortLength(buf, mark)
		}
		sp.v1 = len(buf)
		spans = append(spans, sp)
	}
	if slots > 0 {
		t.entryBytes = (len(buf) + slots - 1) / slots
	}
	for _, sp := range spans {
		d.Puts = append(d.Puts, StateEntry{Namespace: ns + 1, Key: buf[sp.k0:sp.k1:sp.k1], Value: buf[sp.k1:sp.v1:sp.v1]})
	}
	t.spans, t.blocks = spans[:0], blocks[:0]
	d.Entries += int64(nb)
	return nil
}

// blockRestore reads a block: it must be the next one (blocks restore in
// order, after any entries of one key each).
func (t *table[K, V]) blockRestore(key, val []byte) error {
	if len(key) != 4 {
		return fmt.Errorf("table block entry with a key of %d bytes (a table that had a TTL? the flow changed?)", len(key))
	}
	b := int(binary.BigEndian.Uint32(key))
	if t.perKey || b<<tableBlockBits != len(t.keys) {
		return fmt.Errorf("table block %d restored after %d keys (blocks out of order or mixed with entries of one key each)", b, len(t.keys))
	}
	r := &batchReader{b: val, kind: "table block"}
	n := r.uvarint("slots")
	if r.err == nil && (n == 0 || n > tableBlock) {
		r.fail("slots")
	}
	for range n {
		kb, vb := r.bytes("key"), r.bytes("value")
		if r.err != nil {
			break
		}
		if err := t.restoreOne(kb, vb); err != nil {
			return err
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("trailing bytes")
	}
	if r.err != nil {
		return fmt.Errorf("block %d: %w", b, r.err)
	}
	return nil
}
