package ingest

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/tessera-streams/tessera/connectors/push"
)

// Errors callers branch on (wrapped).
var (
	// ErrClosed: the log is closed or closing.
	ErrClosed = errors.New("ingest: log closed")
	// ErrFull: the log holds MaxBytes of events the flow has not committed.
	ErrFull = errors.New("ingest: log full")
	// ErrKeyReused: an idempotency key came back with another body.
	ErrKeyReused = fmt.Errorf("ingest: %w", push.ErrKeyReused)
	// ErrTrimmed: an offset retention has deleted.
	ErrTrimmed = errors.New("ingest: offset no longer in the log")
	// ErrBroken: a write failed; the log takes no more appends.
	ErrBroken = errors.New("ingest: log broken by a failed write")
)

// Options configure a Log. Zero values take defaults.
type Options struct {
	FS     vfs.FS // nil: the OS file system
	Logger *slog.Logger
	// Now is the clock of retention and idempotency keys; default
	// time.Now.
	Now func() time.Time
	// MaxBytes bounds the events held (their bytes, all streams); default
	// 1 GiB. Committed events are deleted, oldest first, to stay under it;
	// uncommitted ones never are: appends fail with ErrFull meanwhile.
	MaxBytes int64
	// MaxAge: committed events older than this are deleted; default 24h.
	MaxAge time.Duration
	// IdempotencyTTL is how long an idempotency key is remembered; default
	// 24h.
	IdempotencyTTL time.Duration
	// RetentionInterval is how often retention runs; default 1s.
	RetentionInterval time.Duration
	// MaxGroup bounds the bytes of events one pebble batch (one fsync)
	// takes from the queue; default 16 MiB.
	MaxGroup int
	// MemTableSize is pebble's memtable size; default 64 MiB. Events are
	// written once and read soon after: a large memtable serves the reads
	// from memory and spares flushes and compactions (4 MiB, pebble's
	// default, cost a quarter of the CPU of an ingest run in compactions).
	MemTableSize uint64
}

func (o *Options) ensureDefaults() {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 1 << 30
	}
	if o.MaxAge <= 0 {
		o.MaxAge = 24 * time.Hour
	}
	if o.IdempotencyTTL <= 0 {
		o.IdempotencyTTL = 24 * time.Hour
	}
	if o.RetentionInterval <= 0 {
		o.RetentionInterval = time.Second
	}
	if o.MaxGroup <= 0 {
		o.MaxGroup = 16 << 20
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = 64 << 20
	}
}

// Log is an embedded, partitioned, durable log of streams: see the package
// doc. Its methods are safe for concurrent use.
type Log struct {
	opts  Options
	db    *pebble.DB
	reqs  chan *appendReq
	wake  chan struct{} // retention: something was committed
	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
	cerr  error
	bytes atomic.Int64 // bytes of the events held, all streams
	err   atomic.Pointer[error]

	mu      sync.Mutex
	streams map[string]*stream
	closed  bool
	senders sync.WaitGroup // appends between their closed check and their send
	trimMu  sync.Mutex     // one Trim at a time
	// keyMu orders the writer's commits and retention's expiry of
	// idempotency keys: retention reads a key's record, decides it
	// expired and deletes it in its batch, and a commit of the writer in
	// between that wrote the key anew lost its record to that delete.
	keyMu sync.Mutex
}

// stream is a stream's state in the log.
type stream struct {
	name  string
	parts []*partition
}

// partition is one partition's state. end is written by the writer only,
// after the batch that moves it is durable.
type partition struct {
	end       atomic.Int64 // offsets below are durable and readable
	read      atomic.Int64 // the position of the partition's reader
	committed atomic.Int64 // the flow's committed offset

	mu      sync.Mutex
	start   int64 // the first offset held
	batches []batchMeta
	cum     int64 // bytes appended since open, the prefix sums' total

	// readers counts the partition's open readers: only while one is open
	// does the writer keep the decoded events of appends (tail) for it.
	readers atomic.Int32
	// tail holds, under mu, the decoded events of the latest appends not
	// read yet, in offset order: the HTTP edge decoded every event to
	// check it, and a reader takes these instead of decoding the bytes
	// again (which cost as much as the check). At most maxTailBytes of
	// events (their encoded size); appends past it are decoded by the
	// reader.
	tail      []decodedRun
	tailBytes int64
}

// maxTailBytes bounds a partition's tail (the encoded size of the events
// it holds decoded): a reader that keeps up reads appends from it; one
// further behind decodes from the log.
const maxTailBytes = 8 << 20

// decodedRun is one append's decoded events in a partition: offsets
// [from, to), vals a []T of to-from values (the stream's T; the log is
// not generic).
type decodedRun struct {
	from, to int64
	bytes    int64
	vals     any
}

// batchMeta describes the events of one append in one partition.
type batchMeta struct {
	from, to int64
	bytes    int64
	cum      int64 // bytes of this and all earlier batches held since open
	at       int64 // append time, unix ns
}

// Key layout: a kind byte, then the stream name and 0, then
//
//	'm' stream              → partitions (u32)
//	'n' stream 0 p          → the next offset (u64)
//	'h' stream 0 p from     → to, bytes, at (u64 each): one append's events
//	'b' stream 0 p from     → one append's events in p, from offset from:
//	                          each a uvarint length and its bytes
//	'e' stream 0 p offset   → one event (the layout before 'b'; refused)
//	'k' stream 0 key        → at, body hash, result (JSON): an idempotency key
//	'x' at stream 0 key     → nothing: idempotency keys by expiry
//
// p is a big-endian u32, offsets and times big-endian u64.
const (
	kindMeta   = 'm'
	kindNext   = 'n'
	kindHeader = 'h'
	kindBlock  = 'b'
	kindEvent  = 'e' // the old layout: one key per event
	kindKey    = 'k'
	kindExpiry = 'x'
)

func streamPrefix(kind byte, name string) []byte {
	b := make([]byte, 0, len(name)+2+12)
	b = append(b, kind)
	b = append(b, name...)
	return append(b, 0)
}

func partKey(kind byte, name string, p int) []byte {
	return binary.BigEndian.AppendUint32(streamPrefix(kind, name), uint32(p))
}

func offsetKey(kind byte, name string, p int, off int64) []byte {
	return binary.BigEndian.AppendUint64(partKey(kind, name, p), uint64(off))
}

func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i]++; end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil
}

// Open opens (or creates) a log in dir.
func Open(dir string, opts Options) (*Log, error) {
	opts.ensureDefaults()
	logger := opts.Logger
	db, err := pebble.Open(dir, &pebble.Options{FS: opts.FS, MemTableSize: opts.MemTableSize, Logger: pebbleLogger{logger}, EventListener: &pebble.EventListener{
		DataCorruption: func(info pebble.DataCorruptionInfo) {
			logger.Error("ingest log: data corruption", "path", info.Path, "err", info.Details)
		},
	}})
	if err != nil {
		return nil, fmt.Errorf("open ingest log %s: %w", dir, err)
	}
	l := &Log{opts: opts, db: db, reqs: make(chan *appendReq, 256), wake: make(chan struct{}, 1),
		stop: make(chan struct{}), streams: map[string]*stream{}}
	l.wg.Add(2)
	go l.write()
	go l.retain()
	return l, nil
}

// Close stops taking appends, answers those queued, stops the log's
// goroutines and closes the database. Safe to call twice.
func (l *Log) Close() error {
	l.once.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		l.senders.Wait()
		close(l.stop)
		l.wg.Wait()
		l.cerr = l.db.Close()
	})
	return l.cerr
}

var streamName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,200}$`)

// stream opens the named stream with n partitions, creating it if new.
// A stream is opened once per Log.
func (l *Log) openStream(name string, n int) (*stream, error) {
	if !streamName.MatchString(name) {
		return nil, fmt.Errorf("ingest: stream name %q: want 1-200 letters, digits, '.', '_' or '-'", name)
	}
	if n <= 0 || n > 1<<16 {
		return nil, fmt.Errorf("ingest: stream %q: %d partitions", name, n)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	if l.streams[name] != nil {
		return nil, fmt.Errorf("ingest: stream %q opened twice", name)
	}
	meta := streamPrefix(kindMeta, name)
	v, closer, err := l.db.Get(meta)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		if err := l.db.Set(meta, binary.BigEndian.AppendUint32(nil, uint32(n)), pebble.Sync); err != nil {
			return nil, fmt.Errorf("ingest: create stream %q: %w", name, err)
		}
	case err != nil:
		return nil, fmt.Errorf("ingest: stream %q: %w", name, err)
	default:
		had := int(binary.BigEndian.Uint32(v))
		closer.Close()
		if had != n {
			return nil, fmt.Errorf("ingest: stream %q has %d partitions in the log, not %d: a stream's partitions are fixed (use another stream name)", name, had, n)
		}
	}
	s := &stream{name: name}
	for p := range n {
		part, err := l.loadPartition(name, p)
		if err != nil {
			return nil, err
		}
		s.parts = append(s.parts, part)
	}
	l.streams[name] = s
	return s, nil
}

// loadPartition reads a partition's end and its batch headers.
func (l *Log) loadPartition(name string, p int) (*partition, error) {
	part := &partition{}
	old := partKey(kindEvent, name, p)
	oit, err := l.db.NewIter(&pebble.IterOptions{LowerBound: old, UpperBound: prefixEnd(old)})
	if err != nil {
		return nil, err
	}
	hasOld := oit.First()
	if err := errors.Join(oit.Error(), oit.Close()); err != nil {
		return nil, fmt.Errorf("ingest: stream %q partition %d: %w", name, p, err)
	}
	if hasOld {
		return nil, fmt.Errorf("ingest: stream %q partition %d holds events in the layout of an earlier version (a key per event): let that version's flow read them, then remove the log", name, p)
	}
	v, closer, err := l.db.Get(partKey(kindNext, name, p))
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return nil, fmt.Errorf("ingest: stream %q partition %d: %w", name, p, err)
	default:
		part.end.Store(int64(binary.BigEndian.Uint64(v)))
		closer.Close()
	}
	lo := partKey(kindHeader, name, p)
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) != len(lo)+8 || len(v) != 24 {
			return nil, fmt.Errorf("ingest: stream %q partition %d: malformed batch header", name, p)
		}
		b := batchMeta{from: int64(binary.BigEndian.Uint64(k[len(lo):])), to: int64(binary.BigEndian.Uint64(v)),
			bytes: int64(binary.BigEndian.Uint64(v[8:])), at: int64(binary.BigEndian.Uint64(v[16:]))}
		part.cum += b.bytes
		b.cum = part.cum
		part.batches = append(part.batches, b)
		l.bytes.Add(b.bytes)
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("ingest: stream %q partition %d: %w", name, p, err)
	}
	part.start = part.end.Load()
	if len(part.batches) > 0 {
		part.start = part.batches[0].from
	}
	part.read.Store(part.start)
	part.committed.Store(part.start)
	return part, nil
}

// unread is the bytes of the partition's events at or after its reader's
// position (whole appends: an append partly read counts whole).
func (p *partition) unread() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	read := p.read.Load()
	i := sort.Search(len(p.batches), func(i int) bool { return p.batches[i].to > read })
	if i == len(p.batches) {
		return 0
	}
	return p.cum - p.batches[i].cum + p.batches[i].bytes
}

// Result is what an append did: the events' offsets, by partition.
type Result = push.Result

// Appended is one partition's part of an append: offsets [From, To).
type Appended = push.Appended

// appendReq is one append on its way through the writer.
type appendReq struct {
	s     *stream
	key   string // idempotency key, or ""
	hash  uint64 // of the body, with a key
	parts []partEvents
	size  int
	res   Result
	err   error
	done  chan struct{}
	dupOf *appendReq // a request with the same key earlier in the same group
}

// partEvents are an append's events for one partition, in order.
type partEvents struct {
	p      int
	events [][]byte
	vals   any // nil, or a []T of the events decoded, for the partition's tail
}

// append queues req and waits until it is durable (or failed). The
// events' slices must not change until it returns. ctx only stops the
// wait: a queued append may still be applied.
func (l *Log) append(ctx context.Context, req *appendReq) (Result, error) {
	if errp := l.err.Load(); errp != nil {
		return Result{}, *errp
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return Result{}, ErrClosed
	}
	l.senders.Add(1)
	l.mu.Unlock()
	req.done = make(chan struct{})
	l.reqs <- req
	l.senders.Done()
	select {
	case <-req.done:
		return req.res, req.err
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}

// write is the writer goroutine: it takes every queued append, up to
// MaxGroup bytes, into one synced batch.
func (l *Log) write() {
	defer l.wg.Done()
	var group []*appendReq
	for {
		group = group[:0]
		select {
		case r := <-l.reqs:
			group = append(group, r)
		case <-l.stop:
			l.drain()
			return
		}
		size := group[0].size
	more:
		for size < l.opts.MaxGroup {
			select {
			case r := <-l.reqs:
				group = append(group, r)
				size += r.size
			default:
				break more
			}
		}
		l.commit(group)
	}
}

// drain answers what is queued after Close: the senders are done, so the
// queue only shrinks.
func (l *Log) drain() {
	for {
		select {
		case r := <-l.reqs:
			r.err = ErrClosed
			close(r.done)
		default:
			return
		}
	}
}

// commit writes a group of appends in one synced batch and answers them.
func (l *Log) commit(group []*appendReq) {
	fail := func(err error) {
		for _, r := range group {
			r.err = err
			close(r.done)
		}
	}
	if errp := l.err.Load(); errp != nil {
		fail(*errp)
		return
	}
	l.keyMu.Lock()
	defer l.keyMu.Unlock()
	now := l.opts.Now().UnixNano()
	b := l.db.NewBatch()
	defer b.Close()
	type pkey struct {
		s *stream
		p int
	}
	next := map[pkey]int64{}
	var heads []headAt
	keys := map[string]*appendReq{} // stream 0 key → its first request in the group
	// held is what the log will hold with the group's appends taken so
	// far: one that would take it over MaxBytes fails with ErrFull here,
	// where appends are taken one at a time (the HTTP check before
	// queueing let concurrent pushes all through, and Append had none).
	held := l.bytes.Load()
	full := false
	for _, r := range group {
		if r.key != "" {
			ik := r.s.name + "\x00" + r.key
			if first := keys[ik]; first != nil {
				r.dupOf = first
				continue
			}
			keys[ik] = r
			found, err := l.lookupKey(r)
			if err != nil {
				r.err = err
				continue
			}
			if found {
				continue
			}
		}
		var size int64
		for _, pe := range r.parts {
			for _, ev := range pe.events {
				size += int64(len(ev))
			}
		}
		if held+size > l.opts.MaxBytes {
			r.err, full = fmt.Errorf("%w: it holds %d bytes the flow has not committed or retention has not deleted yet (limit %d)", ErrFull, held, l.opts.MaxBytes), true
			continue
		}
		held += size
		r.res = Result{}
		for _, pe := range r.parts {
			k := pkey{r.s, pe.p}
			from, ok := next[k]
			if !ok {
				from = r.s.parts[pe.p].end.Load()
			}
			// One value for the append's events in the partition, not a
			// key per event: a million events made a million memtable
			// entries, whose inserts and flush cost a fifth more CPU per
			// event at 1M events than at 200k.
			var n int64
			for _, ev := range pe.events {
				n += int64(len(ev))
			}
			block := make([]byte, 0, n+int64(2*len(pe.events)))
			for _, ev := range pe.events {
				block = binary.AppendUvarint(block, uint64(len(ev)))
				block = append(block, ev...)
			}
			b.Set(offsetKey(kindBlock, r.s.name, pe.p, from), block, nil)
			to := from + int64(len(pe.events))
			next[k] = to
			hv := binary.BigEndian.AppendUint64(nil, uint64(to))
			hv = binary.BigEndian.AppendUint64(hv, uint64(n))
			hv = binary.BigEndian.AppendUint64(hv, uint64(now))
			b.Set(offsetKey(kindHeader, r.s.name, pe.p, from), hv, nil)
			heads = append(heads, headAt{part: r.s.parts[pe.p], meta: batchMeta{from: from, to: to, bytes: n, at: now}, vals: pe.vals})
			r.res.Accepted += len(pe.events)
			r.res.Partitions = append(r.res.Partitions, Appended{Partition: pe.p, From: from, To: to})
		}
		if r.key != "" {
			l.putKey(b, r, now)
		}
	}
	for k, to := range next {
		b.Set(partKey(kindNext, k.s.name, k.p), binary.BigEndian.AppendUint64(nil, uint64(to)), nil)
	}
	if !b.Empty() {
		if err := l.commitSynced(b); err != nil {
			err = fmt.Errorf("%w: %w", ErrBroken, err)
			l.err.Store(&err)
			l.opts.Logger.Error("ingest log: write failed; no more appends", "err", err)
			fail(err)
			return
		}
	}
	for _, h := range heads {
		h.part.mu.Lock()
		h.part.cum += h.meta.bytes
		h.meta.cum = h.part.cum
		h.part.batches = append(h.part.batches, h.meta)
		h.part.keep(h.meta, h.vals)
		h.part.mu.Unlock()
		l.bytes.Add(h.meta.bytes)
	}
	for k, to := range next {
		k.s.parts[k.p].end.Store(to)
	}
	if full {
		l.nudge() // retention may delete committed events to make room
	}
	for _, r := range group {
		if r.dupOf != nil {
			r.res, r.err = r.dupOf.res, r.dupOf.err
			if r.err == nil {
				if r.hash != r.dupOf.hash {
					r.res, r.err = Result{}, ErrKeyReused
				} else {
					r.res.Replayed = true
				}
			}
		}
		close(r.done)
	}
}

// commitSynced commits b and waits until the WAL holds it on disk.
//
// Not b.Commit(pebble.Sync): pebble treats a failed WAL write or sync in
// a commit that waits for it as fatal (Logger.Fatalf, which panics).
// Applied without waiting for the sync, the failure comes back from
// SyncWait instead, and the log answers 503 from then on. The batch is in
// the memtable by then, readable, but nothing reads it: a partition's end
// moves only after SyncWait, and after a failure no append is taken.
// Residual: pebble still panics if the WAL had already failed when the
// next batch is applied (the writer applies none after a failure, but the
// retention goroutine may race it: it stops committing once the log is
// broken), or if it cannot create a new WAL file when a memtable fills.
func (l *Log) commitSynced(b *pebble.Batch) error {
	if err := l.db.ApplyNoSyncWait(b, pebble.Sync); err != nil {
		return err
	}
	return b.SyncWait()
}

type headAt struct {
	part *partition
	meta batchMeta
	vals any // the append's decoded events in the partition, or nil
}

// keep adds an append's decoded events to the partition's tail, under
// p.mu and before the partition's end moves past them (so that a reader
// finds them the first time it can read them), if a reader is open and
// the tail has room. Runs are added in offset order: one writer assigns
// the offsets.
func (p *partition) keep(m batchMeta, vals any) {
	if vals == nil || p.readers.Load() == 0 || p.tailBytes+m.bytes > maxTailBytes {
		return
	}
	p.tail = append(p.tail, decodedRun{from: m.from, to: m.to, bytes: m.bytes, vals: vals})
	p.tailBytes += m.bytes
}

// keyRecord is the value of an idempotency key.
func keyRecord(at int64, hash uint64, res Result) []byte {
	v := binary.BigEndian.AppendUint64(nil, uint64(at))
	v = binary.BigEndian.AppendUint64(v, hash)
	j, _ := json.Marshal(res) // plain ints and slices: cannot fail
	return append(v, j...)
}

// lookupKey looks r's idempotency key up; found, r holds the earlier
// result or ErrKeyReused. An expired key that retention has not yet
// deleted counts as absent.
func (l *Log) lookupKey(r *appendReq) (found bool, err error) {
	v, closer, err := l.db.Get(append(streamPrefix(kindKey, r.s.name), r.key...))
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("ingest: idempotency key: %w", err)
	}
	defer closer.Close()
	if len(v) < 16 {
		return false, fmt.Errorf("ingest: malformed idempotency record")
	}
	at := int64(binary.BigEndian.Uint64(v))
	if l.opts.Now().UnixNano()-at > int64(l.opts.IdempotencyTTL) {
		return false, nil
	}
	if binary.BigEndian.Uint64(v[8:]) != r.hash {
		r.err = ErrKeyReused
		return true, nil
	}
	var res Result
	if err := json.Unmarshal(v[16:], &res); err != nil {
		return false, fmt.Errorf("ingest: malformed idempotency record: %w", err)
	}
	res.Replayed = true
	r.res = res
	return true, nil
}

func (l *Log) putKey(b *pebble.Batch, r *appendReq, now int64) {
	b.Set(append(streamPrefix(kindKey, r.s.name), r.key...), keyRecord(now, r.hash, r.res), nil)
	x := binary.BigEndian.AppendUint64([]byte{kindExpiry}, uint64(now))
	x = append(append(append(x, r.s.name...), 0), r.key...)
	b.Set(x, nil, nil)
}

// Bytes is the size of the events the log holds, all streams.
func (l *Log) Bytes() int64 { return l.bytes.Load() }

// Err is the write error that broke the log, or nil.
func (l *Log) Err() error {
	if errp := l.err.Load(); errp != nil {
		return *errp
	}
	return nil
}

// full reports whether size more bytes would take the log over MaxBytes.
func (l *Log) full(size int) bool { return l.bytes.Load()+int64(size) > l.opts.MaxBytes }

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
