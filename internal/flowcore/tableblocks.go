package flowcore

import (
	"encoding/binary"
	"fmt"
)

// A table without a TTL checkpoints its slots in blocks: slots b*tableBlock
// to (b+1)*tableBlock are two entries in namespace ns+1, under b (4 bytes,
// big-endian) and a kind byte: kind 0 (blockKeys) holds the number of
// slots, then each slot's key with its length before it; kind 1
// (blockVals) the number of slots, then each slot's value with its length
// before it. A changed value rewrites its block's values entry; its keys
// entry is written only when the block got keys since it was written last.
//
// Why blocks: a table's checkpoint was one store entry per changed key,
// and the store's cost is mostly per entry (its memtable insert, the
// entry's key and checksum, what a flush and a compaction then carry):
// a count over 100k keys checkpointed ten times a second spent a sixth of
// its CPU inserting entries. A block costs one entry for tableBlock keys;
// a key changed alone costs the bytes of its block (at most tableBlock
// keys), a price worth paying where every entry is dearer than its bytes.
//
// Why keys apart from values: a block's keys are fixed once it is full,
// and in a table that is counted on (a keyed count, the first stage of a
// count of counts) every block changes between checkpoints. Written with
// the values, the keys were four fifths of a count's checkpoint bytes
// (a 12-byte string per count of a byte or two), copied into each
// checkpoint and then by the store into its log and memtable.
//
// Slots never move in a table without a TTL (keys are appended, never
// removed), so a restore that reads the blocks in order (the store's key
// order: a block's keys, its values, then the next block) rebuilds the
// same slots. A table with a TTL moves slots as keys expire, and keeps
// one entry per key (tablettl.go). Two formats before are read too:
// entries of one key each in namespace ns, which the next delta deletes
// (Reset) before it writes every block; and a block as one entry under b
// alone, its slots' keys and values each with its length before it,
// which the next delta deletes before it writes every block anew.
const (
	tableBlockBits = 5
	tableBlock     = 1 << tableBlockBits
)

// The kinds of a block's entries.
const (
	blockKeys = 0
	blockVals = 1
)

// blockKey is the key of block b's entry of kind kind.
func blockKey(buf []byte, b int32, kind byte) []byte {
	return append(binary.BigEndian.AppendUint32(buf, uint32(b)), kind)
}

// blockDelta writes the blocks of the slots changed since the last delta:
// their values, and their keys if they got keys since.
func (t *table[K, V]) blockDelta(ns uint16, d *Delta) error {
	nb := (len(t.keys) + tableBlock - 1) >> tableBlockBits
	if len(t.blockMark) < nb {
		t.blockMark = append(t.blockMark, make([]bool, nb-len(t.blockMark))...)
	}
	if len(t.blockSaved) < nb {
		t.blockSaved = append(t.blockSaved, make([]uint8, nb-len(t.blockSaved))...)
	}
	blocks := t.blocks[:0]
	if t.perKey || t.oneEntry > 0 {
		if t.perKey {
			d.Reset = append(d.Reset, ns)
		}
		for b := range t.oneEntry {
			d.Deletes = append(d.Deletes, StateEntry{Namespace: ns + 1, Key: binary.BigEndian.AppendUint32(nil, uint32(b))})
		}
		for b := range nb {
			blocks = append(blocks, int32(b))
		}
		clear(t.blockSaved)
		t.perKey, t.oneEntry = false, 0
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
	// One buffer holds every entry, sized at once from the checkpoint
	// before (see delta).
	slots, keySlots := 0, 0
	for _, b := range blocks {
		n := min(tableBlock, len(t.keys)-int(b)<<tableBlockBits)
		slots += n
		if n != int(t.blockSaved[b]) {
			keySlots += n
		}
	}
	buf := make([]byte, 0, slots*(t.entryBytes+t.entryBytes/4+2)+keySlots*(t.keyBytes+t.keyBytes/4+2)+12*len(blocks))
	spans := t.spans[:0]
	var err error
	valBytes, keyBytes := 0, 0
	for _, b := range blocks {
		t.blockMark[b] = false
		lo := int(b) << tableBlockBits
		hi := min(lo+tableBlock, len(t.keys))
		var sp entrySpan
		var bad int
		if hi-lo != int(t.blockSaved[b]) {
			if buf, sp, _, err = appendBlockEntry(buf, b, blockKeys, t.keys[lo:hi], Codec[K](t.kc)); err != nil {
				return fmt.Errorf("encode key: %w", err)
			}
			keyBytes += sp.v1 - sp.k1
			spans = append(spans, sp)
			t.blockSaved[b] = uint8(hi - lo)
		}
		if buf, sp, bad, err = appendBlockEntry(buf, b, blockVals, t.vals[lo:hi], t.vc); err != nil {
			return fmt.Errorf("encode state of key %s: %w", t.kc.Format(t.keys[lo+bad]), err)
		}
		valBytes += sp.v1 - sp.k1
		spans = append(spans, sp)
	}
	if slots > 0 {
		t.entryBytes = (valBytes + slots - 1) / slots
	}
	if keySlots > 0 {
		t.keyBytes = (keyBytes + keySlots - 1) / keySlots
	}
	for _, sp := range spans {
		d.Puts = append(d.Puts, StateEntry{Namespace: ns + 1, Key: buf[sp.k0:sp.k1:sp.k1], Value: buf[sp.k1:sp.v1:sp.v1]})
	}
	t.spans, t.blocks = spans[:0], blocks[:0]
	d.Entries += 2 * int64(nb)
	return nil
}

// appendBlockEntry appends to buf block b's entry of kind: its key, then
// the number of slots, then each of xs encoded by c with its length
// before it; sp is where the entry's key and value are in buf. When a slot
// does not encode, bad is its index in xs.
func appendBlockEntry[T any](buf []byte, b int32, kind byte, xs []T, c Codec[T]) (_ []byte, sp entrySpan, bad int, err error) {
	sp.k0 = len(buf)
	buf = blockKey(buf, b, kind)
	sp.k1 = len(buf)
	buf = binary.AppendUvarint(buf, uint64(len(xs)))
	for i, x := range xs {
		mark := len(buf)
		if buf, err = c.Append(append(buf, 0), x); err != nil {
			return buf, sp, i, err
		}
		buf = putShortLength(buf, mark)
	}
	sp.v1 = len(buf)
	return buf, sp, 0, nil
}

// blockRestore reads a block's entry: its keys must come when the blocks
// before are whole (blocks restore in order, after any entries of one key
// each), and its values right after them.
func (t *table[K, V]) blockRestore(key, val []byte) error {
	if len(key) == 4 {
		return t.oneEntryRestore(key, val)
	}
	if len(key) != 5 || key[4] > blockVals {
		return fmt.Errorf("table block entry with a key of %d bytes (a table that had a TTL? the flow changed?)", len(key))
	}
	b := int(binary.BigEndian.Uint32(key))
	kind := key[4]
	lo := b << tableBlockBits
	r := &batchReader{b: val, kind: "table block"}
	n := r.uvarint("slots")
	if r.err == nil && (n == 0 || n > tableBlock) {
		r.fail("slots")
	}
	switch {
	case kind == blockKeys && (t.perKey || t.oneEntry > 0 || t.valsDue != 0 || lo != len(t.keys)):
		return fmt.Errorf("table block %d's keys restored after %d keys (blocks out of order, or mixed with entries of another format)", b, len(t.keys))
	case kind == blockVals && (t.valsDue == 0 || lo+int(t.valsDue) != len(t.keys)):
		return fmt.Errorf("table block %d's values restored without its keys", b)
	case kind == blockVals && r.err == nil && n != uint64(t.valsDue):
		return fmt.Errorf("table block %d: %d values for %d keys", b, n, t.valsDue)
	}
	var zero V
	for i := range n {
		if kind == blockKeys {
			kb := r.bytes("key")
			if r.err != nil {
				break
			}
			k, err := t.kc.Decode(kb)
			if err != nil {
				return fmt.Errorf("block %d: decode key: %w", b, err)
			}
			if _, dup := t.lookup(k, 0); dup {
				return fmt.Errorf("block %d: key %s restored twice", b, t.kc.Format(k))
			}
			t.insert(k, zero)
			t.mark[len(t.mark)-1] = false
			t.dirty = t.dirty[:len(t.dirty)-1]
			continue
		}
		vb := r.bytes("value")
		if r.err != nil {
			break
		}
		v, err := t.vc.Decode(vb)
		if err != nil {
			return fmt.Errorf("block %d: decode state of key %s: %w", b, t.kc.Format(t.keys[lo+int(i)]), err)
		}
		t.vals[lo+int(i)] = v
		// The keys came in with the zero value, which the views' top
		// sets took in: they take in the value now (a top answer after
		// a restart ranked every restored key at zero, or left out those
		// a PublishIf refused at zero).
		for _, x := range t.tops {
			x.note(t, int32(lo+int(i)))
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("trailing bytes")
	}
	if r.err != nil {
		return fmt.Errorf("block %d: %w", b, r.err)
	}
	if kind == blockKeys {
		t.valsDue = uint8(n)
		t.blockSavedAt(b, uint8(n))
	} else {
		t.valsDue = 0
	}
	return nil
}

// blockSavedAt notes that the store holds n keys of block b.
func (t *table[K, V]) blockSavedAt(b int, n uint8) {
	if len(t.blockSaved) <= b {
		t.blockSaved = append(t.blockSaved, make([]uint8, b+1-len(t.blockSaved))...)
	}
	t.blockSaved[b] = n
}

// oneEntryRestore reads a block in the format of one entry per block
// (under b alone: each slot's key and value): it must be the next one.
func (t *table[K, V]) oneEntryRestore(key, val []byte) error {
	b := int(binary.BigEndian.Uint32(key))
	if t.perKey || t.valsDue != 0 || b != t.oneEntry || b<<tableBlockBits != len(t.keys) {
		return fmt.Errorf("table block %d restored after %d keys (blocks out of order or mixed with entries of another format)", b, len(t.keys))
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
	t.oneEntry++
	return nil
}
