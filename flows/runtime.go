package flows

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/tessera-streams/tessera/splice"
)

// Plan is a validated flow, compiled for an engine.
type Plan struct{ f *Flow }

// SourceInfo describes a source of a plan.
type SourceInfo struct {
	Name       string
	Partitions int
}

// Name is the flow's name.
func (p *Plan) Name() string { return p.f.name }

// Version is the flow's version.
func (p *Plan) Version() string { return p.f.version }

// Fragments is the number of fragments.
func (p *Plan) Fragments() int { return p.f.fragments }

// DeadLetters is the flow's dead-letter sink, or nil.
func (p *Plan) DeadLetters() DeadLetterSink { return p.f.deadSink }

// Sources lists the sources in declaration order.
func (p *Plan) Sources() []SourceInfo {
	out := make([]SourceInfo, len(p.f.sources))
	for i, s := range p.f.sources {
		out[i] = SourceInfo{Name: s.name, Partitions: s.partitions}
	}
	return out
}

// Views lists the views' specs in declaration order.
func (p *Plan) Views() []splice.Spec {
	out := make([]splice.Spec, len(p.f.views))
	for i, v := range p.f.views {
		out[i] = v.spec
	}
	return out
}

// PartitionName is how a source partition is named in offsets and logs.
func (p *Plan) PartitionName(src, part int) string {
	return fmt.Sprintf("%s/%d", p.f.sources[src].name, part)
}

// Cursor is the input event being processed.
type Cursor struct {
	Source    int
	Partition int
	Offset    int64
}

// core is what readers and fragments share: the current event and the
// sinks, and the subscription points operators attach to.
type core struct {
	plan    *Plan
	cur     Cursor
	curIdx  int   // index of the current record in its batch (fragments)
	lastOff int64 // offset of the previous output, for output indexes
	outIdx  int
	frag    *Fragment // nil in readers
	sinks   []interface{ flush() error }
	srcSubs []any // readers: func(T) subscribers of the source
}

func (c *core) outputID() OutputID {
	if c.cur.Offset != c.lastOff {
		c.lastOff, c.outIdx = c.cur.Offset, 0
	}
	id := OutputID{Fragment: -1, Source: c.cur.Source, Partition: c.cur.Partition, Offset: c.cur.Offset, Index: c.outIdx}
	if c.frag != nil {
		id.Fragment = c.frag.id
	}
	c.outIdx++
	return id
}

func (c *core) flushSinks() error {
	var errs []error
	for _, s := range c.sinks {
		if err := s.flush(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// payload is one keyed stage's records in a batch, typed inside.
type payload interface {
	len() int
	apply(fr *Fragment, min int64, from int)
	describe(fr *Fragment, i int) (key, val string)
	release()
}

// Batch is what a reader sends a fragment: every event of one source
// partition in [PrevEnd, End) that belongs to the fragment.
type Batch struct {
	Source    int
	Partition int
	Epoch     uint64
	PrevEnd   int64
	End       int64
	Count     int
	parts     []payload
}

// Release returns the batch's buffers for reuse. The batch must not be used
// afterwards.
func (b *Batch) Release() {
	for _, p := range b.parts {
		p.release()
	}
	b.parts = nil
}

// Reader runs one source partition: reads, applies the operators before the
// key, and routes records into pending batches per fragment.
type Reader struct {
	core
	src, part int
	batchSize int
	pump      interface {
		poll(r *Reader, ctx context.Context, max int) error
		close() error
	}
	routers []interface {
		pending(f int) int
		take(f int) payload
	}
	full    []int   // fragments whose pending batch reached batchSize
	sent    []int64 // per fragment: End of the last batch taken
	bad     []BadRecord
	userErr []DeadLetter
	events  int64
}

// OpenReader opens source src, partition part at offset from, with pending
// batches flushed at batchSize records.
func (p *Plan) OpenReader(src, part int, from int64, batchSize int) (*Reader, error) {
	if src < 0 || src >= len(p.f.sources) || part < 0 || part >= p.f.sources[src].partitions {
		return nil, fmt.Errorf("no source partition %d/%d", src, part)
	}
	r := &Reader{src: src, part: part, batchSize: max(batchSize, 1)}
	r.plan = p
	r.cur = Cursor{Source: src, Partition: part, Offset: from}
	r.lastOff = -1
	r.sent = make([]int64, p.f.fragments)
	for i := range r.sent {
		r.sent[i] = from
	}
	for _, w := range p.f.readerW {
		w(r)
	}
	if err := p.f.sources[src].open(r, part, from); err != nil {
		return nil, err
	}
	return r, nil
}

// Source and Partition identify the reader's input.
func (r *Reader) Source() int    { return r.src }
func (r *Reader) Partition() int { return r.part }

// Position is the offset after everything read.
func (r *Reader) Position() int64 { return r.cur.Offset }

// Events is the number of source events read.
func (r *Reader) Events() int64 { return r.events }

// Poll reads at most max events and routes them. It returns io.EOF when
// the partition is exhausted, and the number of events read. Events on
// which a user function failed become dead letters (see TakeDeadLetters).
func (r *Reader) Poll(ctx context.Context, max int) (int, error) {
	before := r.events
	err := r.pump.poll(r, ctx, max)
	if ferr := r.flushSinks(); ferr != nil && err == nil {
		err = fmt.Errorf("sink: %w", ferr)
	}
	return int(r.events - before), err
}

// Full returns the fragments whose pending batch is full, and forgets them.
func (r *Reader) Full() []int {
	f := r.full
	r.full = r.full[:0]
	return f
}

// Pending is the number of records waiting for fragment f.
func (r *Reader) Pending(f int) int {
	n := 0
	for _, rt := range r.routers {
		n += rt.pending(f)
	}
	return n
}

// Behind reports whether fragment f has not been told of everything read:
// records are pending or the position moved since its last batch.
func (r *Reader) Behind(f int) bool { return r.sent[f] != r.cur.Offset }

// Take returns the batch for fragment f: its pending records and the
// source range they cover, up to the current position. The batch may be
// empty, which still advances the fragment's offset.
func (r *Reader) Take(f int) *Batch {
	b := &Batch{Source: r.src, Partition: r.part, PrevEnd: r.sent[f], End: r.cur.Offset}
	for _, rt := range r.routers {
		if p := rt.take(f); p != nil {
			b.parts = append(b.parts, p)
			b.Count += p.len()
		}
	}
	r.sent[f] = r.cur.Offset
	return b
}

// TakeBad returns the malformed records read since the last call.
func (r *Reader) TakeBad() []BadRecord {
	b := r.bad
	r.bad = nil
	return b
}

// TakeDeadLetters returns the events that failed in user functions before
// the key since the last call.
func (r *Reader) TakeDeadLetters() []DeadLetter {
	d := r.userErr
	r.userErr = nil
	return d
}

// Close closes the source.
func (r *Reader) Close() error { return r.pump.close() }

type pump[T any] struct {
	r    PartitionReader[T]
	b    ReadBatch[T]
	subs []func(T)
}

func (p *pump[T]) close() error { return p.r.Close() }

func (p *pump[T]) poll(r *Reader, ctx context.Context, max int) error {
	p.b.Reset()
	err := p.r.Read(ctx, &p.b, max)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	r.bad = append(r.bad, p.b.Bad...)
	for i := 0; i < len(p.b.Events); {
		i = p.run(r, i)
	}
	r.events += int64(len(p.b.Events))
	if p.b.End > r.cur.Offset {
		r.cur.Offset = p.b.End
	}
	return err
}

// run feeds events from index i on, and returns where to resume: the end,
// or the event after one on which a user function panicked.
func (p *pump[T]) run(r *Reader, i int) (next int) {
	defer func() {
		if v := recover(); v != nil {
			r.userErr = append(r.userErr, DeadLetter{
				Flow: r.plan.f.name, Source: r.plan.f.sources[r.src].name, Partition: r.part,
				Offset: r.cur.Offset, Fragment: -1, Value: fmt.Sprintf("%+v", p.b.Events[next]),
				Error: fmt.Sprintf("panic: %v", v),
			})
			next++
		}
	}()
	for next = i; next < len(p.b.Events); next++ {
		r.cur.Offset = p.b.Offsets[next]
		for _, s := range p.subs {
			s(p.b.Events[next])
		}
	}
	return next
}

// Fragment is the state of one key group and the operators after the key.
type Fragment struct {
	core
	id     int
	stages []any // per keyed stage: *fragStage[K, T]
	ops    []any // per stateful operator
	timers []interface {
		fire(fr *Fragment, now time.Time)
	}
	now     time.Time
	events  int64
	userErr []DeadLetter
}

// NewFragment builds fragment id with empty state.
func (p *Plan) NewFragment(id int) *Fragment {
	fr := &Fragment{id: id, stages: make([]any, len(p.f.stages)), ops: make([]any, p.f.ops)}
	fr.plan = p
	fr.frag = fr
	fr.lastOff = -1
	for _, w := range p.f.fragW {
		w(fr)
	}
	return fr
}

// ID is the fragment's number.
func (fr *Fragment) ID() int { return fr.id }

// Events is the number of records applied.
func (fr *Fragment) Events() int64 { return fr.events }

// SetNow sets the processing time that operators see, until the next call.
func (fr *Fragment) SetNow(t time.Time) { fr.now = t }

// Apply applies the records of b whose offset is at least min (the records
// below were applied before), and flushes sinks. Events on which a user
// function panicked are skipped and returned as dead letters; everything
// else in the batch is applied.
func (fr *Fragment) Apply(b *Batch, min int64) ([]DeadLetter, error) {
	fr.cur.Source, fr.cur.Partition = b.Source, b.Partition
	for _, p := range b.parts {
		for i := 0; i < p.len(); {
			i = fr.applyFrom(p, min, i)
		}
	}
	fr.events += int64(b.Count)
	dl := fr.userErr
	fr.userErr = nil
	if err := fr.flushSinks(); err != nil {
		return dl, fmt.Errorf("fragment %d sink: %w", fr.id, err)
	}
	return dl, nil
}

func (fr *Fragment) applyFrom(p payload, min int64, from int) (next int) {
	next = p.len()
	defer func() {
		if v := recover(); v != nil {
			key, val := p.describe(fr, fr.curIdx)
			fr.fail(key, val, v)
			next = fr.curIdx + 1
		}
	}()
	fr.curIdx = from
	p.apply(fr, min, from)
	return next
}

func (fr *Fragment) fail(key, val string, v any) {
	fr.userErr = append(fr.userErr, DeadLetter{
		Flow: fr.plan.f.name, Source: fr.plan.f.sources[fr.cur.Source].name, Partition: fr.cur.Partition,
		Offset: fr.cur.Offset, Fragment: fr.id, Key: key, Value: val, Error: fmt.Sprintf("panic: %v", v),
		Time: fr.now,
	})
}

// Advance fires the processing-time timers due at or before now, and
// returns the timers whose function panicked as dead letters.
func (fr *Fragment) Advance(now time.Time) ([]DeadLetter, error) {
	fr.now = now
	for _, t := range fr.timers {
		t.fire(fr, now)
	}
	dl := fr.userErr
	fr.userErr = nil
	if err := fr.flushSinks(); err != nil {
		return dl, fmt.Errorf("fragment %d sink: %w", fr.id, err)
	}
	return dl, nil
}

// Query answers a view request from this fragment's state. The caller adds
// freshness.
func (fr *Fragment) Query(req splice.Request) (splice.Answer, error) {
	for _, v := range fr.plan.f.views {
		if v.spec.Name == req.View {
			return v.query(fr, req)
		}
	}
	return splice.Answer{}, splice.ErrUnknownView
}
