package recovery

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"slices"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/tessera-streams/tessera/internal/flowcore"
)

// ErrCorrupt marks a checkpoint that failed an integrity check: a checksum
// mismatch, a truncated value, or entries missing from a manifest's count.
// A fragment never serves state from such a checkpoint.
var ErrCorrupt = errors.New("corrupt checkpoint")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Manifest describes one fragment checkpoint.
type Manifest struct {
	Epoch     uint64                // 1 for the first checkpoint, then +1
	Fragments int                   // the flow's fragment count, which a restore must match
	Time      int64                 // unix nanoseconds, when the checkpoint was taken
	Entries   int64                 // entries of the fragment after this checkpoint
	Events    int64                 // records the fragment had applied
	Offsets   map[PartitionID]int64 // the offset vector
}

// Entry is one key of a fragment's state. Namespace separates operators.
type Entry = flowcore.StateEntry

// Checkpoint is what one atomic, synced batch writes for a fragment:
// entries changed since the last checkpoint, deletions, namespaces to
// rewrite whole (Reset: everything in them is deleted before Puts apply),
// and the new manifest.
type Checkpoint struct {
	Manifest Manifest
	Full     bool // replaces every entry of the fragment (a standby's copy)
	Reset    []uint16
	Puts     []Entry
	Deletes  []Entry // Value unused
}

// Store keeps fragment checkpoints in pebble. It is safe for concurrent
// use; every Write is one atomic, synced batch.
type Store struct {
	db    *pebble.DB
	bytes atomic.Int64
}

// Open opens (or creates) a store in dir on fs; fs nil means the OS file
// system.
func Open(dir string, fs vfs.FS, logger *slog.Logger) (*Store, error) {
	if fs == nil {
		fs = vfs.Default
	}
	if logger == nil {
		logger = slog.Default()
	}
	// A large memtable: exchange outputs are written with one checkpoint and
	// deleted a checkpoint or two later, and in one memtable the write and
	// its deletion never reach an sstable (the compactions of that churn
	// took a quarter of a two-stage pipeline's CPU with the default).
	//
	// Flushed tables are not compressed: what a flush writes is mostly
	// exchange outputs still waiting for a downstream checkpoint, deleted
	// by the next compaction, so compressing them (and decompressing them
	// to compact) was work for nothing. Deeper levels compress.
	opts := &pebble.Options{FS: fs, MemTableSize: 64 << 20, Logger: pebbleLogger{logger}, EventListener: &pebble.EventListener{
		// Pebble's default is to stop the process. Reads of the corrupt
		// data fail; Load reports them as ErrCorrupt.
		DataCorruption: func(info pebble.DataCorruptionInfo) {
			logger.Error("checkpoint store: data corruption", "path", info.Path, "err", info.Details)
		},
	}}
	opts.Levels[0].Compression = func() *sstable.CompressionProfile { return sstable.NoCompression }
	opts.Levels[1].Compression = func() *sstable.CompressionProfile { return sstable.SnappyCompression }
	db, err := pebble.Open(dir, opts)
	if err != nil {
		if pebble.IsCorruptionError(err) {
			err = fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		return nil, fmt.Errorf("open checkpoint store %s: %w", dir, err)
	}
	return &Store{db: db}, nil
}

// Close flushes the memtable to sstables and closes the store.
func (s *Store) Close() error {
	ferr := s.db.Flush()
	return errors.Join(ferr, s.db.Close())
}

// BytesWritten is the total size of the batches written.
func (s *Store) BytesWritten() int64 { return s.bytes.Load() }

func fragPrefix(kind byte, flow string, frag int) []byte {
	b := make([]byte, 0, len(flow)+8)
	b = append(b, kind)
	b = append(b, flow...)
	b = append(b, 0)
	return binary.BigEndian.AppendUint32(b, uint32(frag))
}

func entryKey(prefix []byte, ns uint16, key []byte) []byte {
	return appendEntryKey(make([]byte, 0, len(prefix)+2+len(key)), prefix, ns, key)
}

// appendEntryKey appends entryKey's key to b: in place in a batch's
// record (write), whose key array is as long as the key.
func appendEntryKey(b, prefix []byte, ns uint16, key []byte) []byte {
	b = append(b, prefix...)
	b = binary.BigEndian.AppendUint16(b, ns)
	return append(b, key...)
}

// prefixEnd is the first key after every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := slices.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// sealed appends a CRC-32C of key and value to value.
func sealed(key, value []byte) []byte {
	c := crc32.Update(crc32.Checksum(key, castagnoli), castagnoli, value)
	return binary.LittleEndian.AppendUint32(slices.Clip(value), c)
}

func unseal(key, v []byte) ([]byte, error) {
	if len(v) < 4 {
		return nil, fmt.Errorf("%w: value of %d bytes has no checksum", ErrCorrupt, len(v))
	}
	body := v[:len(v)-4]
	want := binary.LittleEndian.Uint32(v[len(v)-4:])
	if crc32.Update(crc32.Checksum(key, castagnoli), castagnoli, body) != want {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	return body, nil
}

// Write stores a checkpoint of fragment frag of flow in one synced batch.
// It returns the number of bytes written.
func (s *Store) Write(flow string, frag int, cp *Checkpoint) (int, error) {
	return s.write(flow, frag, cp, pebble.Sync)
}

// WriteUnsynced stores a checkpoint like Write, without waiting for the
// disk: it is durable once a later Sync returns. Writing several
// checkpoints this way and syncing once costs one disk flush, not one
// each (group commit).
func (s *Store) WriteUnsynced(flow string, frag int, cp *Checkpoint) (int, error) {
	return s.write(flow, frag, cp, pebble.NoSync)
}

// Sync makes every write before it durable.
func (s *Store) Sync() error {
	if err := s.db.LogData(nil, pebble.Sync); err != nil {
		return fmt.Errorf("sync checkpoints: %w", err)
	}
	return nil
}

func (s *Store) write(flow string, frag int, cp *Checkpoint, opts *pebble.WriteOptions) (int, error) {
	entries := fragPrefix('e', flow, frag)
	// The batch's array is sized for its records up front: grown by
	// doubling, it copied a checkpoint's bytes about twice more.
	b := s.db.NewBatchWithSize(batchSize(len(entries), cp))
	defer b.Close()
	if cp.Full {
		if err := b.DeleteRange(entries, prefixEnd(entries), nil); err != nil {
			return 0, err
		}
	}
	for _, ns := range cp.Reset {
		lo := entryKey(entries, ns, nil)
		if err := b.DeleteRange(lo, prefixEnd(lo), nil); err != nil {
			return 0, err
		}
	}
	// In key order, pebble inserts each key next to the one before (its
	// memtable's inserter starts from the last place) instead of searching
	// the whole skiplist with a cache miss per level: the search was most
	// of what writing a checkpoint, and a standby's copy of one, cost.
	// A key put twice keeps its last value.
	for _, i := range keyOrder(cp.Deletes) {
		e := &cp.Deletes[i]
		op := b.DeleteDeferred(len(entries) + 2 + len(e.Key))
		appendEntryKey(op.Key[:0], entries, e.Namespace, e.Key)
		if err := op.Finish(); err != nil {
			return 0, err
		}
	}
	for _, i := range keyOrder(cp.Puts) {
		e := &cp.Puts[i]
		// Key, value and checksum are written in place in the batch:
		// building them apart copied every value twice more.
		op := b.SetDeferred(len(entries)+2+len(e.Key), len(e.Value)+4)
		k := appendEntryKey(op.Key[:0], entries, e.Namespace, e.Key)
		v := append(op.Value[:0], e.Value...)
		binary.LittleEndian.AppendUint32(v, crc32.Update(crc32.Checksum(k, castagnoli), castagnoli, e.Value))
		if err := op.Finish(); err != nil {
			return 0, err
		}
	}
	mk := fragPrefix('m', flow, frag)
	if err := b.Set(mk, sealed(mk, EncodeManifest(cp.Manifest)), nil); err != nil {
		return 0, err
	}
	n := b.Len()
	if err := b.Commit(opts); err != nil {
		return 0, fmt.Errorf("write checkpoint of fragment %d: %w", frag, err)
	}
	s.bytes.Add(int64(n))
	return n, nil
}

// batchSize is the size of the batch write makes of cp, its entries'
// keys after a prefix of prefix bytes, give or take the manifest and the
// ranges deleted (for which the batch may grow).
func batchSize(prefix int, cp *Checkpoint) int {
	const header, record = 12, 1 + 2*binary.MaxVarintLen32 // a record's kind and its lengths
	n := header + record + prefix + 256                    // the manifest
	for i := range cp.Puts {
		n += record + prefix + 2 + len(cp.Puts[i].Key) + len(cp.Puts[i].Value) + 4
	}
	for i := range cp.Deletes {
		n += record + prefix + 2 + len(cp.Deletes[i].Key)
	}
	return n
}

// keyOrder returns the indexes of es in the order of their keys in the
// store (namespace, then key), a key listed twice in the order listed.
func keyOrder(es []Entry) []int32 {
	rs := make([]keyRank, len(es))
	inOrder := true
	for i := range es {
		rs[i] = keyRank{ns: es[i].Namespace, i: int32(i)}
		inOrder = inOrder && (i == 0 || es[i-1].Namespace <= es[i].Namespace)
	}
	// Entries come grouped by namespace (each table's in a run), most
	// often in the order of the namespaces (a fragment's delta lists its
	// operators in order): then there is nothing to sort.
	if !inOrder {
		slices.SortFunc(rs, func(a, b keyRank) int {
			if a.ns != b.ns {
				return int(a.ns) - int(b.ns)
			}
			return int(a.i - b.i)
		})
	}
	// The namespaces' sorts share their scratch arrays.
	packed, sorted := make([]uint64, len(rs)), make([]keyRank, len(rs))
	for lo := 0; lo < len(rs); {
		hi := lo + 1
		for hi < len(rs) && rs[hi].ns == rs[lo].ns {
			hi++
		}
		sortKeys(es, rs[lo:hi], packed[:hi-lo], sorted[:hi-lo])
		lo = hi
	}
	idx := make([]int32, len(rs))
	for i, r := range rs {
		idx[i] = r.i
	}
	return idx
}

// keyRank is an entry in keyOrder's sort: its namespace, its index, and
// the 8 bytes of its key after the prefix every key of its namespace
// shares, which decide most comparisons without following the key.
type keyRank struct {
	head uint64
	i    int32
	ns   uint16
}

// sortKeys sorts the entries of one namespace by key, then index: pdqsort
// with the index as the last criterion is as stable as a stable sort,
// which cost as much as the skiplist search it saved. packed and sorted
// are scratch of len(rs).
func sortKeys(es []Entry, rs []keyRank, packed []uint64, sorted []keyRank) {
	if len(rs) < 2 {
		return
	}
	first := es[rs[0].i].Key
	common := len(first)
	for _, r := range rs[1:] {
		k := es[r.i].Key
		n := min(common, len(k))
		j := 0
		for j < n && k[j] == first[j] {
			j++
		}
		common = j
	}
	for x := range rs {
		var h [8]byte
		copy(h[:], es[rs[x].i].Key[common:])
		rs[x].head = binary.BigEndian.Uint64(h[:])
	}
	byKey := func(a, b keyRank) int {
		// A key shorter than 8 bytes past the prefix was padded with
		// zeros: the keys themselves decide.
		if c := bytes.Compare(es[a.i].Key[common:], es[b.i].Key[common:]); c != 0 {
			return c
		}
		return int(a.i - b.i)
	}
	if len(rs) > 1<<16 {
		slices.SortFunc(rs, func(a, b keyRank) int {
			if a.head != b.head {
				return cmp.Compare(a.head, b.head)
			}
			return byKey(a, b)
		})
		return
	}
	// Sorted as integers, which costs a third of sorting by a function:
	// the first 6 bytes of the head, then the position (in the order of
	// the indexes); runs of equal 6 bytes are then sorted by key.
	for x, r := range rs {
		packed[x] = r.head&^0xffff | uint64(x)
	}
	slices.Sort(packed)
	for x, p := range packed {
		sorted[x] = rs[p&0xffff]
	}
	copy(rs, sorted)
	for lo := 0; lo < len(rs); {
		hi := lo + 1
		for hi < len(rs) && packed[hi]>>16 == packed[lo]>>16 {
			hi++
		}
		if hi-lo > 1 {
			slices.SortFunc(rs[lo:hi], byKey)
		}
		lo = hi
	}
}

// loadedManifest, if set (by tests), runs in Load between reading the
// manifest and reading the entries.
var loadedManifest func()

// Load reads the last checkpoint of a fragment: its manifest, and each
// entry through fn (in key order; the slices are valid only during the
// call). It returns ok=false if the fragment has no checkpoint. Every entry's
// checksum is verified and their number checked against the manifest; a
// failure is ErrCorrupt, and fn may have seen some entries.
//
// The manifest and the entries are read from one snapshot of the store: a
// checkpoint of the fragment committed between the two reads (a queued
// write of a fragment that stopped, a standby copy arriving) would
// otherwise give the older manifest's offsets with the newer state, and
// the replay from those offsets would apply again what the state holds.
func (s *Store) Load(flow string, frag int, fn func(Entry) error) (m Manifest, ok bool, err error) {
	defer func() {
		if err != nil {
			if pebble.IsCorruptionError(err) && !errors.Is(err, ErrCorrupt) {
				err = fmt.Errorf("%w: %w", ErrCorrupt, err)
			}
			err = fmt.Errorf("restore fragment %d of %s: %w", frag, flow, err)
		}
	}()
	snap := s.db.NewSnapshot()
	defer snap.Close()
	mk := fragPrefix('m', flow, frag)
	v, closer, err := snap.Get(mk)
	if errors.Is(err, pebble.ErrNotFound) {
		return m, false, nil
	}
	if err != nil {
		return m, false, err
	}
	body, err := unseal(mk, v)
	if err == nil {
		m, err = DecodeManifest(body)
	}
	closer.Close()
	if err != nil {
		return m, false, fmt.Errorf("manifest: %w", err)
	}
	if loadedManifest != nil {
		loadedManifest()
	}
	prefix := fragPrefix('e', flow, frag)
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return m, false, err
	}
	defer it.Close()
	var n int64
	var kbuf, vbuf []byte // fn gets copies: pebble's memory must not change under it
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		val, err := it.ValueAndErr()
		if err != nil {
			return m, false, err
		}
		body, err := unseal(k, val)
		if err != nil {
			return m, false, fmt.Errorf("entry %x: %w", k[len(prefix):], err)
		}
		rest := k[len(prefix):]
		if len(rest) < 2 {
			return m, false, fmt.Errorf("%w: entry key %x too short", ErrCorrupt, k)
		}
		kbuf, vbuf = append(kbuf[:0], rest[2:]...), append(vbuf[:0], body...)
		if err := fn(Entry{Namespace: binary.BigEndian.Uint16(rest), Key: kbuf, Value: vbuf}); err != nil {
			return m, false, err
		}
		n++
	}
	if err := it.Error(); err != nil {
		return m, false, err
	}
	if n != m.Entries {
		return m, false, fmt.Errorf("%w: %d entries stored, manifest of epoch %d says %d", ErrCorrupt, n, m.Epoch, m.Entries)
	}
	return m, true, nil
}

// Drop deletes every checkpoint of a flow.
func (s *Store) Drop(flow string) error {
	b := s.db.NewBatch()
	defer b.Close()
	for _, kind := range []byte{'e', 'm', 's', 'r', 'v', 'p', 'k', 'l'} {
		lo := append([]byte{kind}, flow...)
		lo = append(lo, 0)
		if err := b.DeleteRange(lo, prefixEnd(lo), nil); err != nil {
			return err
		}
	}
	return b.Commit(pebble.Sync)
}

// NoteSettled records what this node knows of fragment frag's newest
// settled checkpoint (recovery.Settled), so that it outlives a restart.
// It is written without a sync of its own: the next checkpoint or standby
// copy the store syncs makes it durable with it.
func (s *Store) NoteSettled(flow string, frag int, epoch uint64) error {
	k := fragPrefix('k', flow, frag)
	return s.db.Set(k, sealed(k, binary.AppendUvarint(nil, epoch)), pebble.NoSync)
}

// Settled is what NoteSettled recorded for flow.
func (s *Store) Settled(flow string) (Settled, error) {
	lo := append([]byte{'k'}, flow...)
	lo = append(lo, 0)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, err
	}
	out := Settled{}
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		body, err := unseal(k, it.Value())
		if err != nil || len(k) != len(lo)+4 {
			_ = it.Close()
			return nil, fmt.Errorf("settled checkpoints of %s: %w", flow, cmp.Or(err, ErrCorrupt))
		}
		e, n := binary.Uvarint(body)
		if n <= 0 {
			_ = it.Close()
			return nil, fmt.Errorf("settled checkpoints of %s: %w: bad epoch", flow, ErrCorrupt)
		}
		out.Note(int(binary.BigEndian.Uint32(k[len(lo):])), e)
	}
	return out, it.Close()
}

const manifestVersion = 1

// EncodeManifest is the manifest's binary form.
func EncodeManifest(m Manifest) []byte {
	b := []byte{manifestVersion}
	b = binary.AppendUvarint(b, m.Epoch)
	b = binary.AppendUvarint(b, uint64(m.Fragments))
	b = binary.AppendVarint(b, m.Time)
	b = binary.AppendVarint(b, m.Entries)
	b = binary.AppendVarint(b, m.Events)
	ps := make([]PartitionID, 0, len(m.Offsets))
	for p := range m.Offsets {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b PartitionID) int {
		if a.Source != b.Source {
			return a.Source - b.Source
		}
		return a.Partition - b.Partition
	})
	b = binary.AppendUvarint(b, uint64(len(ps)))
	for _, p := range ps {
		b = binary.AppendUvarint(b, uint64(p.Source))
		b = binary.AppendUvarint(b, uint64(p.Partition))
		b = binary.AppendVarint(b, m.Offsets[p])
	}
	return b
}

// DecodeManifest parses EncodeManifest's output and rejects anything else.
func DecodeManifest(b []byte) (Manifest, error) {
	var m Manifest
	r := bytes.NewReader(b)
	bad := func(what string) (Manifest, error) {
		return Manifest{}, fmt.Errorf("%w: manifest: bad %s", ErrCorrupt, what)
	}
	v, err := r.ReadByte()
	if err != nil || v != manifestVersion {
		return bad("version")
	}
	uv := func() (uint64, bool) { x, err := binary.ReadUvarint(r); return x, err == nil }
	sv := func() (int64, bool) { x, err := binary.ReadVarint(r); return x, err == nil }
	var ok bool
	var frags, n uint64
	if m.Epoch, ok = uv(); !ok {
		return bad("epoch")
	}
	if frags, ok = uv(); !ok || frags == 0 || frags > 1<<16 {
		return bad("fragments")
	}
	m.Fragments = int(frags)
	if m.Time, ok = sv(); !ok {
		return bad("time")
	}
	if m.Entries, ok = sv(); !ok || m.Entries < 0 {
		return bad("entries")
	}
	if m.Events, ok = sv(); !ok || m.Events < 0 {
		return bad("events")
	}
	if n, ok = uv(); !ok || n > uint64(r.Len()) {
		return bad("offset count")
	}
	m.Offsets = make(map[PartitionID]int64, n)
	for range n {
		src, ok1 := uv()
		part, ok2 := uv()
		off, ok3 := sv()
		if !ok1 || !ok2 || !ok3 || src > 1<<16 || part > 1<<24 || off < 0 {
			return bad("offset")
		}
		p := PartitionID{Source: int(src), Partition: int(part)}
		if _, dup := m.Offsets[p]; dup {
			return bad("offset (duplicate partition)")
		}
		m.Offsets[p] = off
	}
	if r.Len() != 0 {
		return bad("length (trailing bytes)")
	}
	return m, nil
}

// pebbleLogger sends pebble's logs to slog: its Info to Debug, so that a
// node stays quiet at Info.
type pebbleLogger struct{ l *slog.Logger }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...), "lib", "pebble")
}
func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "lib", "pebble")
}
func (p pebbleLogger) Fatalf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "lib", "pebble")
	panic(fmt.Sprintf(format, args...)) // pebble's contract: Fatalf does not return
}
