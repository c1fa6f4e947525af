// Package flowstest runs a flow in-process, synchronously and
// deterministically, for tests: push events into an Input, Drain, move
// the processing-time clock with Advance, and read the views with the same
// query evaluation the HTTP API uses. It is the flows package's runtime
// (readers and fragments) without actors, goroutines or a clock.
package flowstest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"sync"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/splice"
)

// Input is an in-memory, partitioned, replayable source. Offsets are the
// events' positions in their partition. It is safe for concurrent use.
type Input[T any] struct {
	mu     sync.Mutex
	parts  [][]T
	closed bool
}

// NewInput makes an input with the given number of partitions.
func NewInput[T any](partitions int) *Input[T] {
	return &Input[T]{parts: make([][]T, partitions)}
}

// Push appends events to partition p.
func (in *Input[T]) Push(p int, events ...T) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.parts[p] = append(in.parts[p], events...)
}

// Close marks the input finished: readers return io.EOF at its end.
func (in *Input[T]) Close() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.closed = true
}

// Partitions implements flows.Source.
func (in *Input[T]) Partitions() int { return len(in.parts) }

// Open implements flows.Source.
func (in *Input[T]) Open(p int, from int64) (flows.PartitionReader[T], error) {
	if p < 0 || p >= len(in.parts) {
		return nil, fmt.Errorf("no partition %d", p)
	}
	return &inputReader[T]{in: in, p: p, next: from}, nil
}

type inputReader[T any] struct {
	in   *Input[T]
	p    int
	next int64
}

func (r *inputReader[T]) Read(_ context.Context, b *flows.ReadBatch[T], max int) error {
	r.in.mu.Lock()
	defer r.in.mu.Unlock()
	evs := r.in.parts[r.p]
	for ; r.next < int64(len(evs)) && len(b.Events) < max; r.next++ {
		b.Events = append(b.Events, evs[r.next])
		b.Offsets = append(b.Offsets, r.next)
	}
	b.End = r.next
	if r.in.closed && r.next >= int64(len(evs)) {
		return io.EOF
	}
	return nil
}

func (r *inputReader[T]) Close() error { return nil }

// Driver runs a flow synchronously.
type Driver struct {
	plan      *flows.Plan
	readers   []*flows.Reader
	frags     []*flows.Fragment
	offsets   []map[string]int64
	now       time.Time
	dead      []flows.DeadLetter
	BatchSize int // records per batch; small values exercise batching
}

// New validates the flow and opens every source partition at offset 0.
// The clock starts at start.
func New(f *flows.Flow, start time.Time) (*Driver, error) {
	plan, err := f.Plan()
	if err != nil {
		return nil, err
	}
	d := &Driver{plan: plan, now: start, BatchSize: 256}
	for si, s := range plan.Sources() {
		for p := range s.Partitions {
			r, err := plan.OpenReader(si, p, 0, d.BatchSize)
			if err != nil {
				d.Close()
				return nil, err
			}
			d.readers = append(d.readers, r)
		}
	}
	for i := range plan.Fragments() {
		d.frags = append(d.frags, plan.NewFragment(i))
		d.offsets = append(d.offsets, map[string]int64{})
	}
	return d, nil
}

// Close closes the sources.
func (d *Driver) Close() error {
	var errs []error
	for _, r := range d.readers {
		errs = append(errs, r.Close())
	}
	return errors.Join(errs...)
}

// Drain reads every source until nothing more is available now, and
// applies everything read.
func (d *Driver) Drain() error {
	ctx := context.Background()
	for _, r := range d.readers {
		for {
			n, err := r.Poll(ctx, d.BatchSize)
			eof := errors.Is(err, io.EOF)
			if err != nil && !eof {
				return err
			}
			for _, b := range r.TakeBad() {
				d.dead = append(d.dead, flows.DeadLetter{Flow: d.plan.Name(), Source: d.plan.Sources()[r.Source()].Name,
					Partition: r.Partition(), Offset: b.Offset, Fragment: -1, Where: b.Where, Value: string(b.Raw), Error: b.Err.Error()})
			}
			d.dead = append(d.dead, r.TakeDeadLetters()...)
			if err := d.deliver(r, r.Full()); err != nil {
				return err
			}
			if n == 0 || eof {
				break
			}
		}
		all := make([]int, 0, len(d.frags))
		for f := range d.frags {
			if r.Behind(f) {
				all = append(all, f)
			}
		}
		if err := d.deliver(r, all); err != nil {
			return err
		}
	}
	return nil
}

func (d *Driver) deliver(r *flows.Reader, frags []int) error {
	for _, f := range frags {
		b := r.Take(f)
		fr := d.frags[f]
		fr.SetNow(d.now)
		dl, err := fr.Apply(b, 0)
		d.dead = append(d.dead, dl...)
		b.Release()
		if err != nil {
			return err
		}
		d.offsets[f][d.plan.PartitionName(b.Source, b.Partition)] = b.End
	}
	return nil
}

// Advance moves the processing-time clock by dt and fires due timers.
func (d *Driver) Advance(dt time.Duration) error {
	d.now = d.now.Add(dt)
	for _, fr := range d.frags {
		dl, err := fr.Advance(d.now)
		d.dead = append(d.dead, dl...)
		if err != nil {
			return err
		}
	}
	return nil
}

// Now is the driver's processing time.
func (d *Driver) Now() time.Time { return d.now }

// DeadLetters returns every dead letter so far.
func (d *Driver) DeadLetters() []flows.DeadLetter { return d.dead }

// Views implements splice.Gatherer.
func (d *Driver) Views() []splice.Spec { return d.plan.Views() }

// Gather implements splice.Gatherer.
func (d *Driver) Gather(_ context.Context, req splice.Request, only int) ([]splice.Answer, error) {
	var out []splice.Answer
	for i, fr := range d.frags {
		if only >= 0 && i != only {
			continue
		}
		a, err := fr.Query(req)
		if err != nil {
			return nil, err
		}
		a.Freshness = splice.Freshness{Fragment: i, Offsets: maps.Clone(d.offsets[i])}
		out = append(out, a)
	}
	return out, nil
}

// Freshness implements splice.Gatherer.
func (d *Driver) Freshness() []splice.Freshness {
	out := make([]splice.Freshness, len(d.frags))
	for i := range d.frags {
		out[i] = splice.Freshness{Fragment: i, Offsets: maps.Clone(d.offsets[i])}
	}
	return out
}

// Value is an aggregate view's spliced value.
func (d *Driver) Value(view string) (any, error) {
	r, err := splice.Evaluate(context.Background(), d, splice.Request{View: view, Op: splice.OpValue})
	return r.Value, err
}

// Get is one key's value in a keyed view; splice.ErrNotFound if absent.
func (d *Driver) Get(view, key string) (any, error) {
	r, err := splice.Evaluate(context.Background(), d, splice.Request{View: view, Op: splice.OpKey, Key: key})
	if err != nil {
		return nil, err
	}
	return r.Entries[0].Value, nil
}

// Entries answers a keyed query.
func (d *Driver) Entries(view string, q splice.Query) ([]splice.Entry, error) {
	if q.Limit <= 0 {
		q.Limit = 1 << 30
	}
	r, err := splice.Evaluate(context.Background(), d, splice.Request{View: view, Op: splice.OpEntries, Query: q})
	return r.Entries, err
}
