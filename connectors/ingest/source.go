package ingest

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"

	"github.com/tessera-streams/tessera/flows"
)

// Config configures a Stream.
type Config[T any] struct {
	// Name is the stream's name, in the URL and in the log.
	Name string
	// Partitions is the number of partitions; fixed once the stream is in
	// the log.
	Partitions int
	// Decode turns an event (one JSON line, or one element of a JSON
	// array) into a T. An event it rejects fails its whole request. Nil:
	// JSON into T, trailing data refused.
	Decode func([]byte) (T, error)
	// Key, if set, places each event: partition = hash(Key(event)) mod
	// Partitions, flows.KeyPartition's partition: a flow that keys the
	// events by the same string can read the source with
	// flows.WithKeyedPartitions, and no event crosses nodes to its
	// fragment. Nil: each request goes whole to one partition, the next
	// one round-robin.
	Key func(T) string
	// MaxBody is the largest request body; default 8 MiB.
	MaxBody int64
	// MaxUnread bounds the bytes of the stream the flow has not read yet:
	// past it, pushes are answered 429; default 64 MiB.
	MaxUnread int64
}

// DecodeJSON is the default decoder: one JSON value into a T, trailing
// data refused (json.Unmarshal, a third of the cost of a json.Decoder per
// event).
func DecodeJSON[T any](b []byte) (T, error) {
	var v T
	err := json.Unmarshal(b, &v)
	return v, err
}

// Stream is a stream of the log: a flows.Source[T] over its partitions,
// and the HTTP handler that appends to it (ServeHTTP).
type Stream[T any] struct {
	cfg Config[T]
	l   *Log
	s   *stream
	rr  atomic.Uint64 // round-robin placement
}

// NewStream opens the stream cfg.Name of l, creating it if it is new.
func NewStream[T any](l *Log, cfg Config[T]) (*Stream[T], error) {
	if cfg.Decode == nil {
		cfg.Decode = DecodeJSON[T]
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 8 << 20
	}
	if cfg.MaxUnread <= 0 {
		cfg.MaxUnread = 64 << 20
	}
	s, err := l.openStream(cfg.Name, cfg.Partitions)
	if err != nil {
		return nil, err
	}
	return &Stream[T]{cfg: cfg, l: l, s: s}, nil
}

// Name is the stream's name.
func (s *Stream[T]) Name() string { return s.cfg.Name }

// NodeLocal is true: the events live on this node's disk only.
func (s *Stream[T]) NodeLocal() bool { return true }

// Partitions implements flows.Source.
func (s *Stream[T]) Partitions() int { return len(s.s.parts) }

// End is the offset after partition p's last durable event.
func (s *Stream[T]) End(p int) int64 { return s.s.parts[p].end.Load() }

// Start is partition p's first offset still in the log.
func (s *Stream[T]) Start(p int) int64 {
	part := s.s.parts[p]
	part.mu.Lock()
	defer part.mu.Unlock()
	return part.start
}

// Unread is the bytes of the stream its readers have yet to read (whole
// appends).
func (s *Stream[T]) Unread() int64 {
	var n int64
	for _, p := range s.s.parts {
		n += p.unread()
	}
	return n
}

// Open implements flows.Source: a reader of partition p from offset from,
// which must still be in the log.
func (s *Stream[T]) Open(p int, from int64) (flows.PartitionReader[T], error) {
	if p < 0 || p >= len(s.s.parts) {
		return nil, fmt.Errorf("ingest %s: no partition %d", s.cfg.Name, p)
	}
	if start := s.Start(p); from < start {
		return nil, fmt.Errorf("ingest %s/%d: offset %d: %w (it starts at %d)", s.cfg.Name, p, from, ErrTrimmed, start)
	}
	if end := s.End(p); from > end {
		return nil, fmt.Errorf("ingest %s/%d: offset %d is past the end %d", s.cfg.Name, p, from, end)
	}
	part := s.s.parts[p]
	part.read.Store(from)
	part.readers.Add(1)
	return &reader[T]{s: s, p: p, part: part, pos: from, where: fmt.Sprintf("%s/%d", s.cfg.Name, p),
		lo: partKey(kindBlock, s.cfg.Name, p)}, nil
}

type reader[T any] struct {
	s     *Stream[T]
	p     int
	part  *partition
	pos   int64 // the next offset to read
	where string
	lo    []byte // the partition's block key prefix
	shut  bool   // Close ran
}

// Read implements flows.PartitionReader: it returns at once with what is
// durable past the position, at most max events.
func (r *reader[T]) Read(ctx context.Context, b *flows.ReadBatch[T], max int) error {
	b.End = r.pos
	if err := ctx.Err(); err != nil {
		return err
	}
	end := min(r.part.end.Load(), r.pos+int64(max))
	if r.pos >= end {
		return nil
	}
	var cached int64 // the next append in the tail starts there (or -1)
	if r.pos, cached = r.fromTail(b, end); r.pos >= end {
		b.End = r.pos
		r.part.read.Store(r.pos)
		return nil
	}
	if cached > r.pos {
		end = min(end, cached) // read the tail next time
	}
	key := func(off int64) []byte { return binary.BigEndian.AppendUint64(bytes.Clone(r.lo), uint64(off)) }
	it, err := r.s.l.db.NewIter(&pebble.IterOptions{LowerBound: r.lo, UpperBound: key(end)})
	if err != nil {
		return fmt.Errorf("ingest %s: %w", r.where, err)
	}
	next := r.pos
	// The block holding pos is the last that starts at or before it.
	for ok := it.SeekLT(key(r.pos + 1)); ok && next < end; ok = it.Next() {
		from := int64(binary.BigEndian.Uint64(it.Key()[len(r.lo):]))
		if from > next {
			it.Close()
			return fmt.Errorf("ingest %s: offset %d missing (a block starts at %d): %w", r.where, next, from, ErrTrimmed)
		}
		block, err := it.ValueAndErr()
		if err != nil {
			it.Close()
			return fmt.Errorf("ingest %s at %d: %w", r.where, from, err)
		}
		for off := from; len(block) > 0 && off < end; off++ {
			n, k := binary.Uvarint(block)
			if k <= 0 || uint64(len(block)-k) < n {
				it.Close()
				return fmt.Errorf("ingest %s: block at %d is corrupt at offset %d", r.where, from, off)
			}
			raw := block[k : k+int(n)]
			block = block[k+int(n):]
			if off < next {
				continue
			}
			next = off + 1
			v, err := r.s.cfg.Decode(raw)
			if err != nil {
				// Every event was decoded before it was appended: only a
				// decoder that changed can get here.
				b.Bad = append(b.Bad, flows.BadRecord{Offset: off, Where: r.where, Raw: bytes.Clone(raw), Err: err})
				continue
			}
			b.Events = append(b.Events, v)
			b.Offsets = append(b.Offsets, off)
		}
	}
	err = errors.Join(it.Error(), it.Close())
	if err == nil && next != end {
		err = fmt.Errorf("offsets %d to %d missing: %w", next, end, ErrTrimmed)
	}
	if err != nil {
		return fmt.Errorf("ingest %s: %w", r.where, err)
	}
	r.pos = next
	b.End = next
	r.part.read.Store(next)
	return nil
}

// Commit implements flows.Committer: events before offset may be deleted
// by retention.
func (r *reader[T]) Commit(offset int64) error {
	for {
		c := r.part.committed.Load()
		if offset <= c || r.part.committed.CompareAndSwap(c, offset) {
			break
		}
	}
	r.s.l.nudge()
	return nil
}

// fromTail appends to b the events from the reader's position up to end
// that the partition's tail holds decoded, and returns the position after
// them and where the tail's next append starts (-1 if it holds none). It
// drops what is behind the position: a value is handed out once (a
// reader opened again at an earlier offset decodes from the log), so a
// flow that changes an event in place cannot change a replay's.
func (r *reader[T]) fromTail(b *flows.ReadBatch[T], end int64) (pos, next int64) {
	p := r.part
	p.mu.Lock()
	defer p.mu.Unlock()
	pos = r.pos
	for len(p.tail) > 0 {
		run := &p.tail[0]
		if run.to <= pos {
			p.drop()
			continue
		}
		if run.from > pos || pos >= end {
			return pos, run.from
		}
		vals, ok := run.vals.([]T)
		if !ok || int64(len(vals)) != run.to-run.from { // not this stream's: never kept
			p.drop()
			continue
		}
		upto := min(run.to, end)
		for off := pos; off < upto; off++ {
			b.Events = append(b.Events, vals[off-run.from])
			b.Offsets = append(b.Offsets, off)
		}
		clear(vals[pos-run.from : upto-run.from])
		run.vals, run.from, pos = vals[upto-run.from:], upto, upto
		if run.from == run.to {
			p.drop()
		}
	}
	return pos, -1
}

// drop removes the tail's first append, under p.mu.
func (p *partition) drop() {
	p.tailBytes -= p.tail[0].bytes
	p.tail[0] = decodedRun{}
	p.tail = p.tail[1:]
	if len(p.tail) == 0 {
		p.tail = nil // let the backing array go
	}
}

// Close stops the partition keeping decoded appends for this reader; once
// no reader is open, it keeps none.
func (r *reader[T]) Close() error {
	if r.shut {
		return nil
	}
	r.shut = true
	if r.part.readers.Add(-1) == 0 {
		r.part.mu.Lock()
		for len(r.part.tail) > 0 {
			r.part.drop()
		}
		r.part.mu.Unlock()
	}
	return nil
}
