// Package flowstest runs a flow in-process, synchronously and
// deterministically, for tests: push events into an Input, Drain, move
// the processing-time clock with Advance, and read the views with the same
// query evaluation the HTTP API uses. It is the flows package's runtime
// (readers and fragments) and the engine's rules (recovery.Machine,
// recovery.Credits) without actors, goroutines or a clock. Crash,
// Restart and Faults (a network that loses, duplicates and reorders
// messages) test a flow's recovery.
package flowstest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/splice"
)

// Input is an in-memory, partitioned, replayable source. Offsets are the
// events' positions in their partition. It is safe for concurrent use.
type Input[T any] struct {
	mu     sync.Mutex
	parts  [][]T
	closed bool
	ended  []bool // partitions closed on their own (ClosePartition)
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

// ClosePartition marks partition p finished, as a bounded partition
// shorter than the others is (a file): its reader returns io.EOF at its
// end while the others go on.
func (in *Input[T]) ClosePartition(p int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.ended == nil {
		in.ended = make([]bool, len(in.parts))
	}
	in.ended[p] = true
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
	if (r.in.closed || r.in.ended != nil && r.in.ended[r.p]) && r.next >= int64(len(evs)) {
		return io.EOF
	}
	return nil
}

func (r *inputReader[T]) Close() error { return nil }

// Driver runs a flow synchronously with the engine's own rules: every
// fragment is a recovery.Machine and every reader's flow control a
// recovery.Credits — the state machines the engine's actors carry out —
// with checkpoints in a pebble store in memory, exchanges between stages,
// and recovery of a fragment from its last checkpoint with replay.
// Batches, acknowledgements, rewinds and trims go through a queue, in
// order unless Faults say otherwise; nothing runs concurrently.
type Driver struct {
	plan      *flowcore.Plan
	readers   []*flowcore.Reader
	credits   []*recovery.Credits // per reader
	machines  []*recovery.Machine
	store     *recovery.Store
	now       time.Time
	dead      []flows.DeadLetter
	restores  int
	alerter   *flowcore.Alerter
	alertSeq  uint64
	queue     []delivery
	sends     int  // batches fragments sent each other
	reminded  bool // a reader was reminded of a fragment (Reader.Remind)
	BatchSize int  // records per batch; small values exercise batching
	// MaxAttempts is how often an event on which a user function fails is
	// tried (each time after a restore) before it is dead-lettered; default 3.
	MaxAttempts int
	// Faults make the queue between readers and fragments, and between
	// fragments, lose, duplicate and reorder messages.
	Faults Faults
	faulty Faulted
}

// Faults are the network's misbehaviour in a Driver, every choice drawn
// from Rand (nil: none). Lost batches and acknowledgements are found as
// the engine finds them: a gap at the next batch, or an acknowledgement
// that does not come within recovery.CreditTimeout (a reader's batch) or
// the machine's RewindTimeout (a fragment's) — Settle moves the clock past
// those while anything is in flight. Batches between fragments are
// duplicated as a copy decoded from the wire encoding; a reader's batches
// are not (a TCP connection or a pointer does not duplicate, and credits
// count acknowledgements per batch).
type Faults struct {
	Rand      *rand.Rand
	Drop      float64 // a batch or an acknowledgement is lost
	Duplicate float64 // a batch between fragments arrives twice
	Reorder   float64 // a message overtakes those queued before it
}

// Faulted counts the faults a Driver injected.
type Faulted struct{ Dropped, Duplicated, Reordered int }

// Faulted is what the faults did so far.
func (d *Driver) Faulted() Faulted { return d.faulty }

func (d *Driver) fault(p float64) bool {
	return d.Faults.Rand != nil && p > 0 && d.Faults.Rand.Float64() < p
}

// readerRef is the handle of reader i in a delivery's From.
type readerRef int

// delivery is a message on its way to a fragment: a batch, or (ack) a
// reader's or upstream fragment's acknowledgement going back.
type delivery struct {
	dest int
	b    *flowcore.Batch
	from recovery.From
	ack  bool
}

// New validates the flow and opens every source partition at offset 0.
// The clock starts at start.
func New(f *flows.Flow, start time.Time) (*Driver, error) {
	plan, err := flowcore.Compile(f)
	if err != nil {
		return nil, err
	}
	store, err := recovery.Open("checkpoints", vfs.NewMem(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return nil, err
	}
	d := &Driver{plan: plan, now: start, BatchSize: 256, MaxAttempts: 3, store: store}
	if len(plan.Alerts()) > 0 {
		d.alerter = plan.NewAlerter()
	}
	for i := range plan.Fragments() {
		d.machines = append(d.machines, d.newMachine(recovery.Restored{Fragment: plan.NewFragment(i)}, i))
	}
	if err := d.openReaders(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func (d *Driver) newMachine(r recovery.Restored, f int) *recovery.Machine {
	m := recovery.NewMachine(d.plan, f, r, 0, false, recovery.MachineConfig{MaxAttempts: d.MaxAttempts, Backoff: -1})
	m.SetNow(d.now)
	return m
}

// openReaders opens every partition at the smallest offset any fragment
// still needs, as a node does when it starts.
func (d *Driver) openReaders() error {
	for _, r := range d.readers {
		r.Close()
	}
	d.readers, d.credits = nil, nil
	for si, s := range d.plan.Sources() {
		for p := range s.Partitions {
			from := int64(-1)
			for _, m := range d.machines {
				if end := m.Vector().End(recovery.PartitionID{Source: si, Partition: p}); from < 0 || end < from {
					from = end
				}
			}
			r, err := d.plan.OpenReader(si, p, max(from, 0), d.BatchSize)
			if err != nil {
				return err
			}
			d.readers = append(d.readers, r)
			d.credits = append(d.credits, recovery.NewCredits(len(d.machines), recovery.DefaultCredits, d.now))
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
// applies everything read — through every stage — recovering fragments
// whose user functions fail. A reader sends a fragment at most
// recovery.DefaultCredits batches it has not acknowledged, as in the
// engine.
func (d *Driver) Drain() error {
	ctx := context.Background()
	for progress := true; progress; {
		progress = false
		for f, m := range d.machines {
			if m.SinkHeld() { // a sink refused outputs: write them again now
				m.Tick(d.now)
				if err := d.ready(f); err != nil {
					return err
				}
				progress = progress || !m.SinkHeld()
			}
		}
		for ri, r := range d.readers {
			cr := d.credits[ri]
			n, eof := 0, cr.Ended()
			if cr.MayPoll() {
				r.SetNow(d.now)
				r.SetBatchSize(d.BatchSize)
				var err error
				n, err = r.Poll(ctx, d.BatchSize)
				eof = errors.Is(err, io.EOF)
				if err != nil && !eof {
					return err
				}
				if eof {
					cr.EOF()
				}
				for _, b := range r.TakeBad() {
					dl := flows.DeadLetter{Flow: d.plan.Name(), Source: d.plan.Sources()[r.Source()].Name,
						Partition: r.Partition(), Offset: b.Offset, Fragment: -1, Where: b.Where, Error: b.Err.Error()}
					dl.SetRaw(b.Raw)
					d.dead = append(d.dead, dl)
				}
				d.dead = append(d.dead, r.TakeDeadLetters()...)
			}
			progress = progress || n > 0
			frags := r.Full()
			if n == 0 || eof {
				frags = frags[:0]
				for f := range d.machines {
					if r.Due(f) {
						frags = append(frags, f)
					}
				}
			}
			pos := r.Position()
			for _, f := range frags {
				if !cr.CanSend(f) {
					cr.Block(f) // an acknowledgement sends it
					continue
				}
				d.sendReader(ri, f)
			}
			if err := d.run(); err != nil {
				return err
			}
			if r.Position() < pos || d.reminded { // a fragment restored: it rewound readers
				progress, d.reminded = true, false
			}
		}
	}
	return nil
}

// sendReader queues reader ri's batch for fragment f.
func (d *Driver) sendReader(ri, f int) {
	b := d.readers[ri].Take(f)
	d.credits[ri].Sent(f, b.PrevEnd, d.now)
	d.queue = append(d.queue, delivery{dest: f, b: b, from: recovery.From{Key: fmt.Sprintf("reader-%d", ri), Ref: readerRef(ri)}})
}

// inFlight reports whether a reader or a fragment waits for an
// acknowledgement, or a fragment for a rewind it asked for: a resend lost
// on the way is asked again only after RewindTimeout (Settle advances the
// clock by it). Without the rewind, Settle stopped while a fragment that
// had restored an older checkpoint waited for a resend the network lost,
// and the records it lacked never came.
func (d *Driver) inFlight() bool {
	for _, cr := range d.credits {
		if cr.InFlight() > 0 {
			return true
		}
	}
	for _, m := range d.machines {
		if m.Unacknowledged() > 0 || m.Rewinding() {
			return true
		}
	}
	return false
}

// Settle drains, then takes checkpoints and drains again until every
// stage has applied everything: outputs between stages leave a fragment
// once a durable checkpoint covers them, as in the engine (where
// checkpoints come every interval).
func (d *Driver) Settle() error {
	for lost := 0; ; {
		if err := d.Drain(); err != nil {
			return err
		}
		before := d.sends
		if err := d.Checkpoint(); err != nil {
			return err
		}
		if d.sends != before {
			continue
		}
		if d.Faults.Rand == nil || !d.inFlight() {
			return nil
		}
		// Something was lost on the way: wait as long as the engine would
		// before sending it again.
		if lost++; lost > 1000 {
			return errors.New("flowstest: messages still in flight after 1000 timeouts")
		}
		if err := d.Advance(max(recovery.CreditTimeout, recovery.DefaultRewindTimeout)); err != nil {
			return err
		}
	}
}

// run delivers the queued batches, and what they cause, until none is
// left.
func (d *Driver) run() error {
	for len(d.queue) > 0 {
		i := 0
		if len(d.queue) > 1 && d.fault(d.Faults.Reorder) {
			i = 1 + d.Faults.Rand.IntN(len(d.queue)-1)
			d.faulty.Reordered++
		}
		q := d.queue[i]
		d.queue = append(d.queue[:i], d.queue[i+1:]...)
		if d.fault(d.Faults.Drop) {
			d.faulty.Dropped++
			if q.b != nil {
				q.b.Release()
			}
			continue
		}
		if q.ack {
			if err := d.ack(q.dest, q.from); err != nil {
				return err
			}
			continue
		}
		if _, ok := q.from.Ref.(int); ok && d.fault(d.Faults.Duplicate) {
			enc, err := d.plan.EncodeBatch(nil, q.b)
			if err != nil {
				return err
			}
			dup, err := d.plan.DecodeBatch(enc)
			if err != nil {
				return err
			}
			d.faulty.Duplicated++
			d.queue = append(d.queue, delivery{dest: q.dest, b: dup, from: q.from})
		}
		m := d.machines[q.dest]
		m.SetNow(d.now)
		// The windows the alerts still need, before every step, as an
		// engine's fragment sets it (not only when the clock moves).
		m.Fragment().SetHold(d.hold())
		m.Step(q.b, q.from)
		if err := d.ready(q.dest); err != nil {
			return err
		}
	}
	return nil
}

// ack carries fragment f's acknowledgement to its sender.
func (d *Driver) ack(f int, to recovery.From) error {
	switch ref := to.Ref.(type) {
	case int:
		d.machines[ref].Acked(to.Seq)
		return d.ready(ref)
	case readerRef:
		if unblocked, _ := d.credits[ref].Ack(f, to.Start, d.now); unblocked {
			d.sendReader(int(ref), f)
		}
	}
	return nil
}

// ready carries out fragment f's actions.
func (d *Driver) ready(f int) error {
	rd := d.machines[f].Ready()
	d.sends += len(rd.Sends)
	for _, s := range rd.Sends {
		d.queue = append(d.queue, delivery{dest: s.Dest, b: s.Batch, from: recovery.From{Key: fmt.Sprintf("fragment-%d", f), Ref: f, Seq: s.Seq}})
	}
	for _, a := range rd.Acks {
		d.queue = append(d.queue, delivery{dest: f, from: a, ack: true})
	}
	for _, rw := range rd.Rewinds {
		if err := d.rewind(f, rw); err != nil {
			return err
		}
	}
	for _, t := range rd.Trims {
		d.machines[t.Part.Partition].Trim(t.Part.Source, f, t.Upto)
	}
	d.dead = append(d.dead, rd.DeadLetters...)
	// A sink's refusal is the caller's to see (Drain writes the refused
	// outputs again when called again); the restore after a user
	// function's failure happens all the same.
	errs := rd.Errors
	if rd.Restore {
		r, err := recovery.Restore(d.store, d.plan, f)
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		d.restores++
		d.machines[f].Restored(r, false)
		errs = append(errs, d.ready(f))
	}
	// The end of a message, where an engine's fragment publishes what
	// queries read without its lock (Gather).
	d.machines[f].Fragment().Publish()
	return errors.Join(errs...)
}

// rewind asks a channel partition to send fragment f its records again.
func (d *Driver) rewind(f int, rw recovery.Rewind) error {
	if d.plan.IsExchange(rw.Part.Source) {
		u := rw.Part.Partition
		d.machines[u].SetNow(d.now)
		d.machines[u].Resend(rw.Part.Source, f, rw.To)
		return d.ready(u)
	}
	i := 0
	for si, s := range d.plan.Sources() {
		if si == rw.Part.Source {
			ri := i + rw.Part.Partition
			rewound, err := d.readers[ri].RewindFor(f, rw.To)
			if rewound {
				d.credits[ri].Rewound()
			}
			d.reminded = d.reminded || !rewound
			return err
		}
		i += s.Partitions
	}
	return fmt.Errorf("rewind of unknown partition %v", rw.Part)
}

// Checkpoint writes a checkpoint of every fragment.
func (d *Driver) Checkpoint() error {
	for f, m := range d.machines {
		m.SetNow(d.now)
		cp, err := m.Checkpoint()
		if err != nil {
			return err
		}
		if cp == nil {
			return fmt.Errorf("fragment %d took no checkpoint (down or writing)", f)
		}
		_, err = d.store.Write(d.plan.Name(), f, cp)
		m.Durable(cp.Manifest.Offsets, err)
		if err != nil {
			return err
		}
		if err := d.ready(f); err != nil {
			return err
		}
	}
	return d.run()
}

// Crash drops fragment f's state, restores it from its last checkpoint, and
// has every channel partition replay what it needs; the other fragments
// keep theirs and drop the replayed records.
func (d *Driver) Crash(f int) error {
	r, err := recovery.Restore(d.store, d.plan, f)
	if err != nil {
		return err
	}
	d.restores++
	m := d.machines[f]
	m.SetNow(d.now)
	m.Restored(r, true)
	m.Start()
	if err := d.ready(f); err != nil {
		return err
	}
	return d.run()
}

// Restart simulates a process restart: every fragment is restored from its
// last checkpoint and the sources are reopened where they are needed.
func (d *Driver) Restart() error {
	d.queue = nil
	for f := range d.machines {
		r, err := recovery.Restore(d.store, d.plan, f)
		if err != nil {
			return err
		}
		d.machines[f] = d.newMachine(r, f)
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
	if err := d.openReaders(); err != nil {
		return err
	}
	for f, m := range d.machines {
		m.Start()
		if err := d.ready(f); err != nil {
			return err
		}
	}
	return d.run()
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
	for ri, cr := range d.credits {
		// Credits that did not come back: the batches or their
		// acknowledgements were lost; send again from the oldest.
		if from, _ := cr.Expire(d.now); from >= 0 {
			if rewound, err := d.readers[ri].RewindFor(-1, from); err != nil {
				return err
			} else if rewound {
				cr.Rewound()
			}
		}
	}
	for f, m := range d.machines {
		m.Fragment().SetHold(d.hold())
		m.Tick(d.now)
		if err := d.ready(f); err != nil {
			return err
		}
	}
	return d.run()
}

// Now is the driver's processing time.
func (d *Driver) Now() time.Time { return d.now }

// DeadLetters returns every dead letter so far.
func (d *Driver) DeadLetters() []flows.DeadLetter { return d.dead }

// Views implements splice.Gatherer.
func (d *Driver) Views() []splice.Spec { return d.plan.Views() }

// SourcePartitions names the partitions of the flow's sources
// (splice.Partitioned).
func (d *Driver) SourcePartitions() []string { return d.plan.SourcePartitions() }

var _ splice.Partitioned = (*Driver)(nil)

// Gather implements splice.Gatherer. As an engine's read path does, it
// answers from what a fragment published at the end of its last message
// where it can (a ?top= query: Fragment.QueryPublished), else under the
// driver.
func (d *Driver) Gather(_ context.Context, req splice.Request, only int) ([]splice.Answer, error) {
	var out []splice.Answer
	for i, m := range d.machines {
		if only >= 0 && i != only {
			continue
		}
		a, ok := splice.Answer{}, false
		if m.Serving() == nil {
			a, ok = m.Fragment().QueryPublished(req)
		}
		if !ok {
			var err error
			if a, err = m.Fragment().Query(req); err != nil {
				return nil, err
			}
		}
		a.Freshness = d.freshnessOf(i, d.plan.ViewChannel(req.View))
		out = append(out, a)
	}
	return out, nil
}

// Freshness implements splice.Gatherer.
func (d *Driver) Freshness() []splice.Freshness {
	out := make([]splice.Freshness, len(d.machines))
	for i := range d.machines {
		out[i] = d.freshnessOf(i, -1)
	}
	return out
}

// freshnessOf is fragment f's freshness for a view of a stage input
// channel ch feeds, as the engine gives it: that channel's watermark
// (-1: the fragment's own, the least of its channels').
func (d *Driver) freshnessOf(f, ch int) splice.Freshness {
	offs := map[string]int64{}
	m := d.machines[f]
	for p, end := range m.Vector().Snapshot() {
		offs[d.plan.PartitionName(p.Source, p.Partition)] = end
	}
	fr := splice.Freshness{Fragment: f, Epoch: m.Epoch(), Offsets: offs, Complete: m.Fragment().Complete()}
	wm := m.Fragment().Watermark()
	if ch >= 0 {
		wm = m.Fragment().ChannelWatermark(ch)
	}
	if wm != flowcore.NoWatermark {
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

// Collect sends the stream's events to a new Collector, for tests to read;
// opts are To's (flows.OnCheckpoint).
func Collect[T any](s flows.Stream[T], opts ...flows.SinkOption) *Collector[T] {
	c := &Collector[T]{}
	flows.To(s, flows.SinkFunc[T](func(out []flows.Output[T]) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.out = append(c.out, out...)
		return nil
	}), opts...)
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

// ValueOf is an aggregate view's spliced value as a V (an error names the
// type it is if it is not one).
func ValueOf[V any](d *Driver, view string) (V, error) {
	v, err := d.Value(view)
	if err != nil {
		var zero V
		return zero, err
	}
	return as[V](view, v)
}

// GetOf is one key's value in a keyed view as a V; splice.ErrNotFound if
// absent.
func GetOf[V any](d *Driver, view, key string) (V, error) {
	v, err := d.Get(view, key)
	if err != nil {
		var zero V
		return zero, err
	}
	return as[V](view, v)
}

// EntriesOf answers a keyed query with the values as Vs, in the answer's
// order.
func EntriesOf[V any](d *Driver, view string, q splice.Query) ([]flows.KV[string, V], error) {
	es, err := d.Entries(view, q)
	if err != nil {
		return nil, err
	}
	out := make([]flows.KV[string, V], len(es))
	for i, e := range es {
		if out[i].Value, err = as[V](view, e.Value); err != nil {
			return nil, err
		}
		out[i].Key = e.Key
	}
	return out, nil
}

func as[V any](view string, v any) (V, error) {
	x, ok := v.(V)
	if !ok {
		return x, fmt.Errorf("view %q holds %T, not %T", view, v, x)
	}
	return x, nil
}
