// Package flowstest runs a flow in-process, synchronously and
// deterministically, for tests: push events into an Input, Drain, move
// the processing-time clock with Advance, and read the views with the same
// query evaluation the HTTP API uses. It is the flows package's runtime
// (readers and fragments) without actors, goroutines or a clock.
package flowstest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/recovery"
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

// Driver runs a flow synchronously, with the engine's rules: offset
// vectors, checkpoints in a pebble store in memory, and recovery of a
// fragment from its last checkpoint with replay.
type Driver struct {
	plan      *flows.Plan
	readers   []*flows.Reader
	frags     []*flows.Fragment
	vecs      []recovery.Vector
	epochs    []uint64
	skips     []map[flows.EventID]bool
	attempts  map[flows.EventID]int
	store     *recovery.Store
	now       time.Time
	dead      []flows.DeadLetter
	restores  int
	alerter   *flows.Alerter
	alertSeq  uint64
	BatchSize int // records per batch; small values exercise batching
	// MaxAttempts is how often an event on which a user function fails is
	// tried (each time after a restore) before it is dead-lettered; default 3.
	MaxAttempts int
}

// New validates the flow and opens every source partition at offset 0.
// The clock starts at start.
func New(f *flows.Flow, start time.Time) (*Driver, error) {
	plan, err := f.Plan()
	if err != nil {
		return nil, err
	}
	store, err := recovery.Open("checkpoints", vfs.NewMem(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return nil, err
	}
	d := &Driver{plan: plan, now: start, BatchSize: 256, MaxAttempts: 3, store: store, attempts: map[flows.EventID]int{}}
	if len(plan.Alerts()) > 0 {
		d.alerter = plan.NewAlerter()
	}
	for i := range plan.Fragments() {
		d.frags = append(d.frags, plan.NewFragment(i))
		d.vecs = append(d.vecs, recovery.Vector{})
		d.epochs = append(d.epochs, 0)
		d.skips = append(d.skips, map[flows.EventID]bool{})
	}
	if err := d.openReaders(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// openReaders opens every partition at the smallest offset any fragment
// still needs, as a node does when it starts.
func (d *Driver) openReaders() error {
	for _, r := range d.readers {
		r.Close()
	}
	d.readers = nil
	for si, s := range d.plan.Sources() {
		for p := range s.Partitions {
			from := int64(-1)
			for f := range d.frags {
				if end := d.vecs[f].End(recovery.PartitionID{Source: si, Partition: p}); from < 0 || end < from {
					from = end
				}
			}
			r, err := d.plan.OpenReader(si, p, max(from, 0), d.BatchSize)
			if err != nil {
				return err
			}
			d.readers = append(d.readers, r)
		}
	}
	return nil
}

// Close closes the sources and the store.
func (d *Driver) Close() error {
	var errs []error
	for _, r := range d.readers {
		errs = append(errs, r.Close())
	}
	errs = append(errs, d.store.Close())
	return errors.Join(errs...)
}

// Drain reads every source until nothing more is available now, and
// applies everything read, recovering fragments whose user functions fail.
func (d *Driver) Drain() error {
	ctx := context.Background()
	for progress := true; progress; {
		progress = false
		for _, r := range d.readers {
			r.SetNow(d.now)
			r.SetBatchSize(d.BatchSize)
			n, err := r.Poll(ctx, d.BatchSize)
			eof := errors.Is(err, io.EOF)
			if err != nil && !eof {
				return err
			}
			progress = progress || n > 0
			for _, b := range r.TakeBad() {
				d.dead = append(d.dead, flows.DeadLetter{Flow: d.plan.Name(), Source: d.plan.Sources()[r.Source()].Name,
					Partition: r.Partition(), Offset: b.Offset, Fragment: -1, Where: b.Where, Value: string(b.Raw), Error: b.Err.Error()})
			}
			d.dead = append(d.dead, r.TakeDeadLetters()...)
			frags := r.Full()
			if n == 0 || eof {
				frags = frags[:0]
				for f := range d.frags {
					if r.Due(f) {
						frags = append(frags, f)
					}
				}
			}
			for _, f := range frags {
				rewound, err := d.deliver(r, f)
				if err != nil {
					return err
				}
				if rewound {
					progress = true
					break
				}
			}
		}
	}
	return nil
}

// deliver sends fragment f its batch from r. It reports whether the
// fragment failed and readers were rewound.
func (d *Driver) deliver(r *flows.Reader, f int) (bool, error) {
	b := r.Take(f)
	defer b.Release()
	verdict, min := d.vecs[f].Admit(recovery.PartitionID{Source: b.Source, Partition: b.Partition}, b.PrevEnd, b.End)
	switch verdict {
	case recovery.Duplicate:
		return false, nil
	case recovery.Gap:
		return false, fmt.Errorf("fragment %d: gap in %s: [%d, %d) after %d", f, d.plan.PartitionName(b.Source, b.Partition), b.PrevEnd, b.End, min)
	}
	fr := d.frags[f]
	fr.SetNow(d.now)
	fr.SetHold(d.hold())
	err := fr.Apply(b, min)
	var ee *flows.EventError
	if !errors.As(err, &ee) {
		return false, err
	}
	d.attempts[ee.Event]++
	if d.attempts[ee.Event] >= d.MaxAttempts {
		d.skips[f][ee.Event] = true
		dl := ee.DeadLetter
		dl.Error = fmt.Sprintf("%s (after %d attempts)", dl.Error, d.attempts[ee.Event])
		d.dead = append(d.dead, dl)
	}
	return true, d.Crash(f)
}

// Checkpoint writes a checkpoint of every fragment.
func (d *Driver) Checkpoint() error {
	for f, fr := range d.frags {
		d.epochs[f]++
		cp, err := recovery.Take(fr, &d.vecs[f], d.plan.Fragments(), d.epochs[f], d.now)
		if err != nil {
			return err
		}
		if _, err := d.store.Write(d.plan.Name(), f, cp); err != nil {
			return err
		}
	}
	return nil
}

// Crash drops fragment f's state, restores it from its last checkpoint, and
// rewinds the readers to what it needs; the other fragments keep theirs and
// drop the replayed records.
func (d *Driver) Crash(f int) error {
	r, err := recovery.Restore(d.store, d.plan, f)
	if err != nil {
		return err
	}
	d.restores++
	d.frags[f], d.vecs[f], d.epochs[f] = r.Fragment, r.Vector, r.Manifest.Epoch
	for ev := range d.skips[f] {
		r.Fragment.Skip(ev)
	}
	for _, rd := range d.readers {
		end := d.vecs[f].End(recovery.PartitionID{Source: rd.Source(), Partition: rd.Partition()})
		if err := rd.Rewind(end); err != nil {
			return err
		}
	}
	return nil
}

// Restart simulates a process restart: every fragment is restored from its
// last checkpoint and the sources are reopened where they are needed.
func (d *Driver) Restart() error {
	for f := range d.frags {
		r, err := recovery.Restore(d.store, d.plan, f)
		if err != nil {
			return err
		}
		d.frags[f], d.vecs[f], d.epochs[f] = r.Fragment, r.Vector, r.Manifest.Epoch
	}
	if d.alerter != nil {
		d.alerter = d.plan.NewAlerter()
		states, recs, err := d.store.LoadAlerts(d.plan.Name())
		if err != nil {
			return err
		}
		for name, st := range states {
			if err := d.alerter.Restore(name, st); err != nil {
				return err
			}
		}
		d.alertSeq = uint64(len(recs))
	}
	return d.openReaders()
}

// hold is how far the alerts have evaluated (Fragment.SetHold).
func (d *Driver) hold() int64 {
	if d.alerter == nil {
		return math.MaxInt64
	}
	return d.alerter.Hold()
}

// StepAlerts evaluates the flow's alerts on the windows completed since the
// last step and writes the alerts raised with the progress, as an engine
// does; a Restart resumes from what was written.
func (d *Driver) StepAlerts() ([]flows.AlertRecord, error) {
	if d.alerter == nil {
		return nil, nil
	}
	recs, states, err := d.alerter.Step(context.Background(), d, d.now)
	if err != nil {
		return nil, err
	}
	if d.alerter.Lost > 0 {
		return nil, fmt.Errorf("%d windows dropped before their alerts were evaluated", d.alerter.Lost)
	}
	if len(states) == 0 {
		return recs, nil
	}
	raw := make([][]byte, len(recs))
	for i, r := range recs {
		if raw[i], err = json.Marshal(r); err != nil {
			return nil, err
		}
	}
	if err := d.store.WriteAlerts(d.plan.Name(), states, d.alertSeq, raw); err != nil {
		return nil, err
	}
	d.alertSeq += uint64(len(raw))
	return recs, nil
}

// Restores counts fragment restores (crashes and failures).
func (d *Driver) Restores() int { return d.restores }

// Advance moves the processing-time clock by dt and fires due timers.
func (d *Driver) Advance(dt time.Duration) error {
	d.now = d.now.Add(dt)
	for _, fr := range d.frags {
		fr.SetHold(d.hold())
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
		a.Freshness = d.freshness(i)
		out = append(out, a)
	}
	return out, nil
}

// Freshness implements splice.Gatherer.
func (d *Driver) Freshness() []splice.Freshness {
	out := make([]splice.Freshness, len(d.frags))
	for i := range d.frags {
		out[i] = d.freshness(i)
	}
	return out
}

func (d *Driver) freshness(f int) splice.Freshness {
	offs := map[string]int64{}
	for p, end := range d.vecs[f].Snapshot() {
		offs[d.plan.PartitionName(p.Source, p.Partition)] = end
	}
	fr := splice.Freshness{Fragment: f, Epoch: d.epochs[f], Offsets: offs}
	if wm := d.frags[f].Watermark(); wm != flows.NoWatermark {
		t := time.Unix(0, wm).UTC()
		fr.Watermark = &t
	}
	return fr
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

// Collector keeps every output a stream sends to it; see Collect.
type Collector[T any] struct {
	mu  sync.Mutex
	out []flows.Output[T]
}

// Collect sends the stream's events to a new Collector, for tests to read.
func Collect[T any](s flows.Stream[T]) *Collector[T] {
	c := &Collector[T]{}
	flows.To(s, flows.SinkFunc[T](func(out []flows.Output[T]) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.out = append(c.out, out...)
		return nil
	}))
	return c
}

// Values returns the values collected so far, in arrival order.
func (c *Collector[T]) Values() []T {
	c.mu.Lock()
	defer c.mu.Unlock()
	vs := make([]T, len(c.out))
	for i, o := range c.out {
		vs[i] = o.Value
	}
	return vs
}

// Outputs returns the outputs collected so far, with their ids.
func (c *Collector[T]) Outputs() []flows.Output[T] {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]flows.Output[T](nil), c.out...)
}
