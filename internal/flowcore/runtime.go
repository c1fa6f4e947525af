package flowcore

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"time"

	"github.com/tessera-streams/tessera/shard"
	"github.com/tessera-streams/tessera/splice"
)

// Plan is a validated flow, compiled for an engine.
type Plan struct {
	f     *Flow
	names [][]string // PartitionName's answers, made once: the engine asks for every batch
}

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

// KeyGroups is how many groups a cluster places the fragments in (0:
// each fragment on its own): the partitions of the flow's keyed sources
// (WithKeyedPartitions), each read beside the fragments of its keys
// (shard.Spec).
func (p *Plan) KeyGroups() int { return p.f.keyGroups() }

// LayoutSpec is what a cluster places of the flow (shard.Spec): its
// fragments, in groups beside its keyed sources' partitions (KeyGroups),
// every source partition's reader, and its alerts. cluster.Place and the
// simulation lay it out.
func (p *Plan) LayoutSpec() shard.Spec {
	s := shard.Spec{Fragments: p.f.fragments, Groups: p.f.keyGroups(), Alerts: len(p.f.alerts) > 0}
	for _, src := range p.f.sources {
		s.Partitions += src.partitions
		for q := range src.partitions {
			if !src.keyed {
				q = -1
			}
			s.Keyed = append(s.Keyed, q)
		}
	}
	return s
}

// Views lists the views' specs in declaration order.
func (p *Plan) Views() []splice.Spec {
	out := make([]splice.Spec, len(p.f.views))
	for i, v := range p.f.views {
		out[i] = v.spec
	}
	return out
}

// PartitionName is how a partition of an input channel (a source, or an
// exchange, whose partitions are the upstream fragments) is named in
// offsets and logs.
func (p *Plan) PartitionName(ch, part int) string {
	if ch >= 0 && ch < len(p.names) && part >= 0 && part < len(p.names[ch]) {
		return p.names[ch][part]
	}
	return p.partitionName(ch, part)
}

// SourcePartitions names every partition of the flow's sources, as
// PartitionName does: what a read's min_offsets may name.
func (p *Plan) SourcePartitions() []string {
	var out []string
	for ch := range p.f.sources {
		out = append(out, p.names[ch]...)
	}
	return out
}

func (p *Plan) partitionName(ch, part int) string {
	return fmt.Sprintf("%s/%d", p.channelName(ch), part)
}

// nameParts makes PartitionName's answers.
func (p *Plan) nameParts() {
	p.names = make([][]string, p.channels())
	for ch := range p.names {
		p.names[ch] = make([]string, p.channelParts(ch))
		for part := range p.names[ch] {
			p.names[ch][part] = p.partitionName(ch, part)
		}
	}
}

func (p *Plan) channelName(ch int) string {
	switch {
	case ch >= 0 && ch < len(p.f.sources):
		return p.f.sources[ch].name
	case p.IsExchange(ch):
		return p.f.stages[p.f.edges[ch-len(p.f.sources)].stage].name
	}
	return fmt.Sprintf("channel#%d", ch)
}

// Cursor is the input event being processed.
type Cursor struct {
	Source    int
	Partition int
	Offset    int64
	TS        int64 // event time, unix ns (0 without event time)
}

// core is what readers and fragments share: the current event and the
// sinks, and the subscription points operators attach to.
type core struct {
	plan   *Plan
	cur    Cursor
	curIdx int // index of the current record in its batch (fragments)
	// What the outputs emitted now come from (OutputID): the current event,
	// or a timer or window of an operator; and the next output's index.
	cause    Cause
	causeOp  int
	causeAt  int64
	causeKey interface{ firingKey() string }
	record   int
	held     int // CauseEvent: 0, or 1 + the operator that held the event back (OutputID.Op)
	outIdx   int
	frag     *Fragment // nil in readers
	sinks    []interface {
		flush() error
		discard()
	}
	srcSubs []any // readers: func(T) subscribers of the source
	// sinkRefused: a sink write failed before the batch ended (flushEarly):
	// what follows waits for flushSinks.
	sinkRefused bool
}

// event makes record rec of the input event at offset off the cause of
// what is emitted next.
func (c *core) event(off int64, rec int) {
	c.cur.Offset, c.cause, c.record, c.held, c.outIdx = off, CauseEvent, rec, 0, 0
}

// released is event for an event that operator op held back and runs
// now (a Process in event-time order): its outputs are numbered apart
// from those the event made on arrival, which also started at 0.
func (c *core) released(off int64, rec, op int) {
	c.event(off, rec)
	c.held = op + 1
}

// firing makes a timer or window of operator op, for the key k formats,
// the cause of what is emitted next; ts is the event time of those outputs.
func (c *core) firing(cause Cause, op int, at, ts int64, k interface{ firingKey() string }) {
	c.cause, c.causeOp, c.causeAt, c.causeKey, c.outIdx = cause, op, at, k, 0
	c.cur.Offset, c.cur.TS = -1, ts
}

func (c *core) outputID() OutputID {
	var id OutputID
	c.setOutputID(&id)
	return id
}

// setOutputID is outputID written in place (a sink's buffer slot): an
// output's id is 88 bytes, made for every output.
func (c *core) setOutputID(id *OutputID) {
	*id = OutputID{Fragment: -1, Cause: c.cause, Index: c.outIdx}
	if c.frag != nil {
		id.Fragment = c.frag.id
	}
	if c.cause == CauseEvent {
		id.Source, id.Partition, id.Offset, id.Record, id.Op = c.cur.Source, c.cur.Partition, c.cur.Offset, c.record, c.held
	} else {
		id.Op, id.At, id.Key = c.causeOp, c.causeAt, c.causeKey.firingKey()
	}
	c.outIdx++
}

// flushEarly writes a full sink buffer before the batch ends (sinkChunk).
// Once a sink refused, the buffers wait for the batch's end.
func (c *core) flushEarly(s interface{ flush() error }) {
	if !c.sinkRefused && s.flush() != nil {
		c.sinkRefused = true
	}
}

// flushSinks writes every sink's buffer. A chunk refused early stayed in
// its buffer and goes again here: the batch's error is what these writes
// refuse.
func (c *core) flushSinks() error {
	var errs []error
	c.sinkRefused = false
	for _, s := range c.sinks {
		if err := s.flush(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// payload is one keyed stage's records in a batch, typed inside.
type payload interface {
	encode(p *Plan, dst []byte, et bool) ([]byte, error)     // the form an exchange's log keeps
	encodeWire(p *Plan, dst []byte, et bool) ([]byte, error) // the form batches cross nodes in
	len() int
	apply(fr *Fragment, min int64, from int)
	stageOf() int
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
	// Event time: the partition's watermark once the batch is applied, and
	// whether the partition is idle. EventTime is false for sources without.
	EventTime bool
	Watermark int64
	Idle      bool
	// Done: the partition ends at End (a bounded input read to its end,
	// or an upstream fragment whose inputs all ended and whose outputs are
	// all sent).
	Done  bool
	parts []payload
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
		commit(offset int64) error
		close() error
	}
	routers []interface {
		route()
		pending(f int) int
		take(f int) payload
		setAhead(f int, on bool)
	}
	full []int // fragments whose pending batch reached batchSize
	// Scratch of Poll: the records routed so far, and the batches that a
	// poll filled with the place of the record that filled them, to list
	// them in full in that order (the order appending as they came gave).
	routed  int32
	crossed []crossing
	sent    []int64 // per fragment: End of the last batch taken
	bad     []BadRecord
	userErr []DeadLetter
	// deadTo: the reader has reported the dead letters of every offset
	// below it. A rewind reads them again, and they are not reported
	// twice (a reader that is opened anew — the node restarted, or the
	// partition moved — reports again those it reads again).
	deadTo   int64
	events   int64
	maxTS    int64   // largest event time read (NoWatermark: none)
	ended    bool    // the partition returned io.EOF
	sentWM   []int64 // per fragment: the watermark of its last batch
	sentIdle []bool
	remind   []bool    // per fragment: send it a batch even if nothing changed
	sentDone []bool    // per fragment: its last batch said the partition ended
	now      time.Time // processing time, for idleness
	lastEv   time.Time // processing time of the last event read
}

// OpenReader opens source src, partition part at offset from, with pending
// batches flushed at batchSize records.
func (p *Plan) OpenReader(src, part int, from int64, batchSize int) (*Reader, error) {
	if src < 0 || src >= len(p.f.sources) || part < 0 || part >= p.f.sources[src].partitions {
		return nil, fmt.Errorf("no source partition %d/%d", src, part)
	}
	r := &Reader{src: src, part: part, batchSize: max(batchSize, 1), maxTS: NoWatermark}
	r.plan = p
	r.cur = Cursor{Source: src, Partition: part, Offset: from}
	r.deadTo = from
	r.sent = make([]int64, p.f.fragments)
	r.sentWM = make([]int64, p.f.fragments)
	r.sentIdle = make([]bool, p.f.fragments)
	r.remind = make([]bool, p.f.fragments)
	r.sentDone = make([]bool, p.f.fragments)
	for i := range r.sent {
		r.sent[i], r.sentWM[i] = from, NoWatermark
		// A reader that starts past the beginning (it moved, or restarted)
		// tells every fragment where it starts, even with nothing to send:
		// a fragment behind that offset sees the gap and asks for a
		// rewind. Without it, a fragment whose rewind the old reader
		// answered just before it moved (an empty batch at the position
		// it had rewound to, before it read again) would wait forever.
		r.remind[i] = from > 0
	}
	for _, w := range p.f.readerW {
		w(r)
	}
	if err := p.f.sources[src].open(r, part, from); err != nil {
		return nil, err
	}
	return r, nil
}

// Idle reports whether an event-time partition has had no event for its
// idle timeout: since its last event, or, before its first, since the
// reader first read the clock (a partition that never has an event, or
// one silent since a restart, is idle too). A partition that ended is
// not: its watermark is the end of time.
func (r *Reader) Idle() bool {
	et := r.plan.f.sources[r.src].et
	return et != nil && et.idle > 0 && !r.ended && !r.lastEv.IsZero() && r.now.Sub(r.lastEv) >= time.Duration(et.idle)
}

// Due reports whether fragment f should be sent a batch: records are
// pending or the position moved since its last batch, or the partition's
// watermark or idleness changed.
func (r *Reader) Due(f int) bool {
	if r.sent[f] != r.cur.Offset || r.remind[f] || r.sentDone[f] != r.ended {
		return true
	}
	return r.plan.f.sources[r.src].et != nil && (r.sentWM[f] != r.Watermark() || r.sentIdle[f] != r.Idle())
}

// EncodeAhead says whether fragment f is on another node: if so, its
// batches from the next one on are encoded for it as their records are
// routed, and EncodeBatch copies what they hold (a batch for a fragment on
// this node holds its records as they are too).
func (r *Reader) EncodeAhead(f int, remote bool) {
	for _, rt := range r.routers {
		rt.setAhead(f, remote)
	}
}

// SetBatchSize changes how many records make a fragment's batch full.
func (r *Reader) SetBatchSize(n int) { r.batchSize = max(n, 1) }

// SetNow sets the processing time, used to detect an idle partition.
func (r *Reader) SetNow(t time.Time) {
	r.now = t
	if r.lastEv.IsZero() {
		r.lastEv = t // silence counts from here until an event comes
	}
}

// Watermark is the partition's event-time watermark: the largest event time
// read less the allowed out-of-orderness (NoWatermark before any event).
func (r *Reader) Watermark() int64 {
	et := r.plan.f.sources[r.src].et
	switch {
	case et == nil:
		return NoWatermark
	case r.ended:
		return math.MaxInt64 // the partition is complete
	case r.maxTS == NoWatermark:
		return NoWatermark
	}
	return r.maxTS - et.maxDelay
}

// crossing is a batch that a poll filled: fragment f's, by the record
// routed at.
type crossing struct {
	at int32
	f  int
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
	for _, rt := range r.routers {
		rt.route()
	}
	slices.SortFunc(r.crossed, func(a, b crossing) int { return cmp.Compare(a.at, b.at) })
	for _, c := range r.crossed {
		r.full = append(r.full, c.f)
	}
	r.crossed, r.routed = r.crossed[:0], 0
	r.ended = errors.Is(err, io.EOF)
	if ferr := r.flushSinks(); ferr != nil {
		// The sink's outputs are gone from its buffer: its error is the
		// poll's, even on the read that reached the end of the partition
		// (io.EOF would have finished the partition and dropped them
		// without a word).
		serr := fmt.Errorf("sink: %w", ferr)
		if err == nil || r.ended {
			err = serr
		} else {
			err = errors.Join(err, serr)
		}
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

// Take returns the batch for fragment f: its pending records and the
// source range they cover, up to the current position. The batch may be
// empty, which still advances the fragment's offset.
func (r *Reader) Take(f int) *Batch {
	b := &Batch{Source: r.src, Partition: r.part, PrevEnd: r.sent[f], End: r.cur.Offset, Done: r.ended}
	r.sentDone[f] = r.ended
	if r.plan.f.sources[r.src].et != nil {
		b.EventTime, b.Watermark, b.Idle = true, r.Watermark(), r.Idle()
		r.sentWM[f], r.sentIdle[f] = b.Watermark, b.Idle
	}
	for _, rt := range r.routers {
		if p := rt.take(f); p != nil {
			b.parts = append(b.parts, p)
			b.Count += p.len()
		}
	}
	r.sent[f], r.remind[f] = r.cur.Offset, false
	return b
}

// RewindFor answers fragment f's request to read again from to (f -1: the
// reader's own, for every fragment, as when credits expired): the reader
// rewinds if to is behind its position (every fragment then drops what it
// applied before), and otherwise reminds f, or every fragment for -1
// (Remind). A batch lost at the position — one that only told a fragment
// where the partition starts or that it ended — is thus sent again: with
// no reminder, a fragment whose only batch of a partition was that one
// never learned the partition ended, and its timers and windows, and
// every stage after it, waited for good (sim seed 885 of the visits
// world). It reports whether it rewound.
func (r *Reader) RewindFor(f int, to int64) (bool, error) {
	if to >= r.cur.Offset {
		if f < 0 {
			for i := range r.remind {
				r.remind[i] = true
			}
		}
		r.Remind(f)
		return false, nil
	}
	return true, r.Rewind(to)
}

// Remind makes fragment f's next batch due even if nothing changed since
// its last one: f restored a checkpoint that is not behind the reader
// (Rewind does nothing for it), but it lacks the watermark the reader sent
// its old state — at the end of a bounded input, the one that completes
// its windows and timers.
func (r *Reader) Remind(f int) {
	if f >= 0 && f < len(r.remind) {
		r.remind[f] = true
	}
}

// Rewind moves the reader back to offset to (if it is behind the
// position): pending records are dropped and every fragment's next batch
// starts at to. Fragments drop what they applied before (their offset
// vectors say so).
func (r *Reader) Rewind(to int64) error {
	if to >= r.cur.Offset {
		return nil
	}
	if err := r.pump.close(); err != nil {
		return fmt.Errorf("rewind %s: close: %w", r.plan.PartitionName(r.src, r.part), err)
	}
	if err := r.plan.f.sources[r.src].open(r, r.part, to); err != nil {
		return fmt.Errorf("rewind: %w", err)
	}
	for _, rt := range r.routers {
		for f := range r.sent {
			if p := rt.take(f); p != nil {
				p.release()
			}
		}
	}
	r.full = r.full[:0]
	r.cur.Offset = to
	// Watermarks restart from the replay: a fragment keeps the larger of
	// its restored watermark and what the replay brings.
	r.maxTS, r.ended = NoWatermark, false
	for f := range r.sent {
		r.sent[f] = to
	}
	return nil
}

// Commit tells the source that everything before offset is safely
// checkpointed, if the source keeps such a position (see Committer).
func (r *Reader) Commit(offset int64) error { return r.pump.commit(offset) }

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
	ts   func(T) time.Time // nil without event time
}

func (p *pump[T]) close() error { return p.r.Close() }

func (p *pump[T]) commit(offset int64) error {
	if c, ok := p.r.(Committer); ok {
		return c.Commit(offset)
	}
	return nil
}

func (p *pump[T]) poll(r *Reader, ctx context.Context, max int) error {
	p.b.Reset()
	err := p.r.Read(ctx, &p.b, max)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	for _, b := range p.b.Bad {
		if b.Offset >= r.deadTo {
			r.bad = append(r.bad, b)
		}
	}
	reported := len(r.userErr)
	for i := 0; i < len(p.b.Events); {
		i = p.run(r, i)
	}
	fresh := slices.DeleteFunc(r.userErr[reported:], func(d DeadLetter) bool { return d.Offset < r.deadTo })
	r.userErr = r.userErr[:reported+len(fresh)]
	r.events += int64(len(p.b.Events))
	if p.b.End > r.deadTo {
		r.deadTo = p.b.End
	}
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
			dl := DeadLetter{
				Flow: r.plan.f.name, Source: r.plan.channelName(r.src), Partition: r.part,
				Offset: r.cur.Offset, Fragment: -1, Error: fmt.Sprintf("panic: %v", v),
			}
			dl.SetValue(fmt.Sprintf("%+v", p.b.Events[next]))
			r.userErr = append(r.userErr, dl)
			next++
		}
	}()
	if p.ts != nil && len(p.b.Events) > 0 {
		r.lastEv = r.now
	}
	for next = i; next < len(p.b.Events); next++ {
		r.event(p.b.Offsets[next], 0)
		if p.ts != nil {
			at := p.ts(p.b.Events[next])
			if !inEventTime(at) {
				r.userErr = append(r.userErr, p.deadTime(r, next, at))
				continue
			}
			t := at.UnixNano()
			r.cur.TS = t
			if t > r.maxTS {
				r.maxTS = t
			}
		}
		for _, s := range p.subs {
			s(p.b.Events[next])
		}
	}
	return next
}

// deadTime is the dead letter of event i, whose time at is outside
// [MinEventTime, MaxEventTime).
func (p *pump[T]) deadTime(r *Reader, i int, at time.Time) DeadLetter {
	dl := DeadLetter{
		Flow: r.plan.f.name, Source: r.plan.channelName(r.src), Partition: r.part,
		Offset: r.cur.Offset, Fragment: -1, Error: outOfTime(at),
	}
	dl.SetValue(fmt.Sprintf("%+v", p.b.Events[i]))
	return dl
}

// Fragment is the state of one key group and the operators after the key.
type Fragment struct {
	core
	id     int
	stages []any // per keyed stage: *fragStage[K, T]
	ops    []any // per stateful operator: a stateOp
	timers []timerReg
	out    []exchangeOut // per exchange, in channel order
	// committed: sinks delivered on durable checkpoints (OnCheckpoint)
	committed []interface{ release(lag bool) error }
	lag       bool // see LagReleases
	now       time.Time
	events    int64
	skip      map[EventID]struct{} // events not to apply (dead-lettered)
	// wms: per input channel, its event time; stageDom: per stage, the
	// channel whose watermark it follows; curDom: the one of the stage
	// running now.
	wms      []watermarks
	done     [][]bool // per channel and partition: it ended (Batch.Done)
	undone   int      // partitions not ended
	stageDom []int
	curDom   int
	// moving: a move of a channel's watermark fires its operators, from
	// movedFrom; behind: their results pass to the operators after them
	// (behindFiring), which see movedFrom.
	moving, behind bool
	movedFrom      int64
	// failing describes the event running outside a batch's records (one
	// that waited for the watermark), for its dead letter.
	failing  interface{ describeFailing() (key, val string) }
	tooLate  int64 // events later than every window's allowed lateness
	failed   *EventError
	timerErr []DeadLetter
	hold     int64 // window views keep windows ending after it (SetHold)
	// gen counts Publish calls; instance tells this fragment from the one
	// a restore builds; changes are the views that can say which keys
	// changed since a generation (viewchanges.go).
	gen      uint64
	instance uint64
	changes  []changeTracker
	tops     []topPublisher // keyed views' top sets (topindex.go)
	// intern: for the batches from other nodes (Interner), finding keys
	// in this fragment's tables.
	intern Interner
	// deltaPuts, deltaDeletes: the entries of the last delta, to size the
	// next one's arrays.
	deltaPuts, deltaDeletes int
}

// Interner is the fragment's Interner for decoding the batches other nodes
// send it (Plan.DecodeBatchInterned): it finds a known key's string in the
// fragment's state. It belongs to the fragment's goroutine.
func (fr *Fragment) Interner() *Interner { return &fr.intern }

// timerReg is an operator's timers and the channel whose watermark they
// follow.
type timerReg struct {
	dom int
	t   interface {
		fire(fr *Fragment, now time.Time)
		fireEvent(fr *Fragment, wm int64)
	}
}

// addTimers registers an operator of stage's timers.
func (fr *Fragment) addTimers(stage int, t interface {
	fire(fr *Fragment, now time.Time)
	fireEvent(fr *Fragment, wm int64)
}) {
	fr.timers = append(fr.timers, timerReg{dom: fr.stageDom[stage], t: t})
}

// wm is the watermark of the stage running now: while a firing's
// results pass to the operators after it in the fragment (behind), the
// watermark before the move that fired them.
func (fr *Fragment) wm() int64 {
	if fr.behind {
		return fr.movedFrom
	}
	return fr.wms[fr.curDom].wm
}

// behindFiring runs fn, which hands a firing's results to operators
// after the one that fired them, in the same fragment (Windowed.ByKey).
// During a move of the watermark they see the watermark before it, as
// results that crossed an exchange would: a window that fired at the
// new watermark made its results then, and they are not late for the
// windows, sessions and timers downstream that the same move fires next,
// in the order the operators were declared.
func (fr *Fragment) behindFiring(fn func()) {
	was := fr.behind
	defer func() { fr.behind = was }() // a panic downstream is recovered by the firing's caller
	fr.behind = fr.moving
	fn()
}

// EventID identifies an input event: a channel, partition and offset.
type EventID struct {
	Source    int
	Partition int
	Offset    int64
}

// EventError is a user function's failure on an event. The fragment's
// state is undefined after it (the event may be half applied): restore the
// fragment from a checkpoint and replay, or, after retries, Skip the event.
type EventError struct {
	Event      EventID
	DeadLetter DeadLetter
}

func (e *EventError) Error() string {
	d := e.DeadLetter
	return fmt.Sprintf("fragment %d: %s/%d at offset %d, key %q: %s", d.Fragment, d.Source, d.Partition, d.Offset, d.Key, d.Error)
}

// stateOp is a stateful operator's checkpointing: its changes since the
// last delta, and the restore of one entry. Namespaces 2i and 2i+1 belong
// to operator i.
type stateOp interface {
	delta(ns uint16, d *Delta) error
	restore(ns uint16, key, val []byte) error
}

// StateEntry is one key of a fragment's state in a checkpoint.
type StateEntry struct {
	Namespace uint16
	Key       []byte
	Value     []byte
}

// Delta is the change of a fragment's state since the last delta, encoded.
type Delta struct {
	Puts    []StateEntry
	Deletes []StateEntry // keys only
	Reset   []uint16     // namespaces to clear before Puts apply
	Entries int64        // entries of the whole state after this delta
	Events  int64        // records applied in all
}

// NewFragment builds fragment id with empty state.
func (p *Plan) NewFragment(id int) *Fragment {
	// gen starts at 1: state that never changed (stamp 0) is before every mark.
	fr := &Fragment{id: id, stages: make([]any, len(p.f.stages)), ops: make([]any, p.f.ops), instance: instances.Add(1), gen: 1}
	fr.plan = p
	fr.frag = fr
	fr.hold = math.MaxInt64
	fr.wms = make([]watermarks, p.channels())
	for ch := range fr.wms {
		if p.channelET(ch) {
			fr.wms[ch] = newWatermarks(p.channelParts(ch))
		} else {
			fr.wms[ch].wm = NoWatermark
		}
	}
	fr.done = make([][]bool, p.channels())
	for ch := range fr.done {
		fr.done[ch] = make([]bool, p.channelParts(ch))
		fr.undone += len(fr.done[ch])
	}
	fr.stageDom = make([]int, len(p.f.stages))
	for s := range fr.stageDom {
		fr.stageDom[s] = p.stageChannel(s)
	}
	for _, w := range p.f.fragW {
		w(fr)
	}
	return fr
}

// TooLate counts the events that window operators sent to their TooLate
// outputs (since this fragment was built or restored).
func (fr *Fragment) TooLate() int64 { return fr.tooLate }

// Watermark is the fragment's event-time watermark (unix ns): the minimum
// over its event-time input channels; NoWatermark before all have one.
func (fr *Fragment) Watermark() int64 {
	low, any := int64(math.MaxInt64), false
	for _, w := range fr.wms {
		if w.parts != nil {
			low, any = min(low, w.wm), true
		}
	}
	if !any {
		return NoWatermark
	}
	return low
}

// ChannelWatermark is the watermark (unix ns) of the fragment's input
// channel ch (ViewChannel), NoWatermark if it has none yet or no event
// time.
func (fr *Fragment) ChannelWatermark(ch int) int64 {
	if ch < 0 || ch >= len(fr.wms) || fr.wms[ch].parts == nil {
		return NoWatermark
	}
	return fr.wms[ch].wm
}

// ViewChannel is the input channel that feeds the stage view reads (-1:
// no such view). The view's event time is that channel's watermark
// (Fragment.ChannelWatermark): the windows of its stage close, and its
// timers fire, as it passes. A fragment's own watermark, the least of its
// channels', lags it wherever a later stage's exchange lags.
func (p *Plan) ViewChannel(view string) int {
	for _, v := range p.f.views {
		if v.spec.Name == view {
			return p.stageChannel(v.stage)
		}
	}
	return -1
}

// observe takes a batch's watermark and fires the event-time timers it
// makes due in the stages its channel feeds; replay: the batch brings
// nothing the fragment did not apply before (Observe).
func (fr *Fragment) observe(b *Batch, replay bool) {
	if b.Source < 0 || b.Source >= len(fr.wms) {
		return
	}
	if d := fr.done[b.Source]; b.Done && b.Partition >= 0 && b.Partition < len(d) && !d[b.Partition] {
		d[b.Partition] = true
		fr.undone--
	}
	if !b.EventTime {
		return
	}
	w := &fr.wms[b.Source]
	from := w.wm
	if w.observe(b.Partition, b.Watermark, b.Idle, replay) {
		fr.moving, fr.movedFrom = true, from
		defer func() { fr.moving, fr.behind = false, false }() // and if a firing panics
		for _, t := range fr.timers {
			if t.dom == b.Source {
				fr.curDom = t.dom
				t.t.fireEvent(fr, w.wm)
			}
		}
	}
}

// Observe takes the watermark of a batch whose records were all applied
// before (a replay): it still carries the partition's progress, which a
// fragment that missed it (it restored after the batch was first sent)
// needs to complete its windows and timers. It does not make an idle
// partition active (watermarks.observe).
func (fr *Fragment) Observe(b *Batch) error {
	fr.cur.Source, fr.cur.Partition = b.Source, b.Partition
	if err := fr.observeSafe(b, true); err != nil {
		fr.discardSinks()
		return err
	}
	if err := fr.flushSinks(); err != nil {
		return fmt.Errorf("fragment %d sink: %w", fr.id, err)
	}
	return nil
}

// ID is the fragment's number.
func (fr *Fragment) ID() int { return fr.id }

// Events is the number of records applied.
func (fr *Fragment) Events() int64 { return fr.events }

// SetNow sets the processing time that operators see, until the next call.
func (fr *Fragment) SetNow(t time.Time) { fr.now = t }

// Skip makes the fragment pass over an event from now on, as if it had no
// record for this fragment: the engine's decision after a user function
// failed on it too often.
func (fr *Fragment) Skip(ev EventID) {
	if fr.skip == nil {
		fr.skip = map[EventID]struct{}{}
	}
	fr.skip[ev] = struct{}{}
}

func (fr *Fragment) skipped(off int64) bool {
	_, ok := fr.skip[EventID{fr.cur.Source, fr.cur.Partition, off}]
	return ok
}

// Apply applies the records of b whose offset is at least min (the records
// below were applied before), and flushes sinks. If a user function panics,
// Apply stops at that event and returns an *EventError; the fragment must
// then be restored before it is used again.
func (fr *Fragment) Apply(b *Batch, min int64) error {
	fr.cur.Source, fr.cur.Partition = b.Source, b.Partition
	for _, p := range b.parts {
		if err := fr.applySafe(p, min); err != nil {
			fr.discardSinks()
			return err
		}
	}
	if err := fr.observeSafe(b, false); err != nil {
		fr.discardSinks()
		return err
	}
	if err := fr.flushSinks(); err != nil {
		return fmt.Errorf("fragment %d sink: %w", fr.id, err)
	}
	return nil
}

// observeSafe observes a batch's watermark; a user function that panics
// on an event that waited for it is an *EventError, as in Apply.
func (fr *Fragment) observeSafe(b *Batch, replay bool) (err error) {
	defer func() {
		if v := recover(); v != nil {
			if fr.failing == nil {
				// Not an event's: a window's result failed downstream.
				fr.timerErr = append(fr.timerErr, fr.deadLetter("", "event-time firing", v))
				return
			}
			key, val := fr.failing.describeFailing()
			fr.failing = nil
			fr.failed = &EventError{Event: EventID{fr.cur.Source, fr.cur.Partition, fr.cur.Offset}, DeadLetter: fr.deadLetter(key, val, v)}
			err = fr.failed
		}
	}()
	fr.observe(b, replay)
	return nil
}

func (fr *Fragment) applySafe(p payload, min int64) (err error) {
	fr.curDom = fr.stageDom[p.stageOf()]
	defer func() {
		if v := recover(); v != nil {
			key, val := p.describe(fr, fr.curIdx)
			fr.failed = &EventError{
				Event:      EventID{fr.cur.Source, fr.cur.Partition, fr.cur.Offset},
				DeadLetter: fr.deadLetter(key, val, v),
			}
			err = fr.failed
		}
	}()
	p.apply(fr, min, 0)
	return nil
}

func (fr *Fragment) deadLetter(key, val string, v any) DeadLetter {
	dl := DeadLetter{
		Flow: fr.plan.f.name, Source: fr.plan.channelName(fr.cur.Source), Partition: fr.cur.Partition,
		Offset: fr.cur.Offset, Fragment: fr.id, Key: key, Error: fmt.Sprintf("panic: %v", v),
		Time: fr.now,
	}
	dl.SetValue(val)
	return dl
}

// RetrySinks writes again what sinks refused (Apply, Observe and Advance
// report the refusal as a sink error, and keep the outputs): the caller
// applies nothing more to the fragment, and takes no checkpoint of it,
// until this succeeds, so that the sinks see the outputs in order and a
// restore makes again those the process did not deliver.
func (fr *Fragment) RetrySinks() error {
	if err := fr.flushSinks(); err != nil {
		return fmt.Errorf("fragment %d sink: %w", fr.id, err)
	}
	return nil
}

func (fr *Fragment) discardSinks() {
	for _, s := range fr.sinks {
		s.discard()
	}
}

// TakeDelta encodes the state changed since the last delta and forgets the
// changes.
func (fr *Fragment) TakeDelta() (Delta, error) {
	// The entries' arrays are sized by the last delta's, with a quarter
	// more: growing them a few hundred entries at a time copied each
	// several times over.
	d := Delta{Events: fr.events}
	if n := fr.deltaPuts; n > 0 {
		d.Puts = make([]StateEntry, 0, n+n/4)
	}
	if n := fr.deltaDeletes; n > 0 {
		d.Deletes = make([]StateEntry, 0, n+n/4)
	}
	for i, op := range fr.ops {
		if err := op.(stateOp).delta(uint16(2*i), &d); err != nil {
			return Delta{}, fmt.Errorf("checkpoint fragment %d: %w", fr.id, err)
		}
	}
	for _, w := range fr.out {
		if err := w.delta(&d); err != nil {
			return Delta{}, fmt.Errorf("checkpoint fragment %d: %w", fr.id, err)
		}
	}
	fr.wmDelta(&d)
	fr.deltaPuts, fr.deltaDeletes = len(d.Puts), len(d.Deletes)
	return d, nil
}

// Restore loads one checkpointed entry into the fragment, which must be
// new (from NewFragment).
func (fr *Fragment) Restore(e StateEntry) error {
	switch e.Namespace {
	case watermarkNamespace:
		if err := fr.wmRestore(e.Key, e.Value); err != nil {
			return fmt.Errorf("restore fragment %d: %w", fr.id, err)
		}
		return nil
	case exchangeNamespace:
		if len(e.Key) < 2 || int(binary.BigEndian.Uint16(e.Key)) >= len(fr.out) {
			return fmt.Errorf("restore fragment %d: an entry of no exchange of this flow: the checkpoint holds outputs of a stage it lacks (one the flow had when it wrote them)", fr.id)
		}
		if err := fr.out[binary.BigEndian.Uint16(e.Key)].restore(e.Key, e.Value); err != nil {
			return fmt.Errorf("restore fragment %d: %w", fr.id, err)
		}
		return nil
	}
	i := int(e.Namespace / 2)
	if i >= len(fr.ops) {
		return fmt.Errorf("restore fragment %d: namespace %d belongs to no operator of this flow: the checkpoint holds state of an operator it lacks (one the flow had when it wrote them)", fr.id, e.Namespace)
	}
	if err := fr.ops[i].(stateOp).restore(e.Namespace, e.Key, e.Value); err != nil {
		return fmt.Errorf("restore fragment %d, operator %d: %w", fr.id, i, err)
	}
	return nil
}

// SetEvents sets the applied-records count, as a restore does.
func (fr *Fragment) SetEvents(n int64) { fr.events = n }

// Restored ends a restore: the fragment tells every fragment downstream
// of it where its outputs are (see TakeOutputs).
func (fr *Fragment) Restored() {
	for _, w := range fr.out {
		w.restored()
	}
}

// Released says that the last checkpoint taken (TakeDelta) is durable —
// or, after a restore, that the restored one is: the exchange outputs it
// covers may be sent, and the OnCheckpoint sinks are delivered what it
// covers.
func (fr *Fragment) Released() error {
	for _, w := range fr.out {
		w.released(fr.lag)
	}
	var errs []error
	for _, s := range fr.committed {
		if err := s.release(fr.lag); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("fragment %d sink: %w", fr.id, err)
	}
	return nil
}

// LagReleases makes Released deliver to the OnCheckpoint sinks, and send
// on the exchanges, what the checkpoint before the newest durable one
// covers, not the newest: for a fragment whose standby may restore that
// older checkpoint (its copy of the newest one may not have arrived), so
// that a restore never brings back fewer outputs than were delivered
// since (an exactly-once sink that skips a delivered prefix needs it), and
// never contradicts what fragments downstream applied (a replay
// interleaves its input partitions anew, so the outputs after the
// restored checkpoint may come out in another order). It costs one
// checkpoint interval of latency per stage.
func (fr *Fragment) LagReleases() { fr.lag = true }

// TakeOutputs calls fn with every batch due to a fragment downstream (its
// own id included): the records emitted on the exchanges that a durable
// checkpoint covers (see Released) and were not sent yet, or a watermark
// that moved. The batches share the records the fragment keeps until
// Trim: a receiver must not change them.
func (fr *Fragment) TakeOutputs(fn func(dest int, b *Batch)) {
	for _, w := range fr.out {
		w.takeDue(fn)
	}
}

// Resend is the batch of records on exchange channel ch for fragment dest
// from number from up to what was sent, for a downstream fragment that
// restored an older checkpoint; nil if it is not behind.
func (fr *Fragment) Resend(ch, dest int, from int64) *Batch {
	if w := fr.exchange(ch); w != nil && dest >= 0 && dest < fr.plan.f.fragments {
		return w.resend(dest, from)
	}
	return nil
}

// Kept is the range of numbers of the fragment's records on exchange
// channel ch for fragment dest that it can send again: from base (dest's
// durable checkpoint covers those before, Trim) to sent; zeros for no such
// exchange.
func (fr *Fragment) Kept(ch, dest int) (base, sent int64) {
	if w := fr.exchange(ch); w != nil && dest >= 0 && dest < fr.plan.f.fragments {
		return w.kept(dest)
	}
	return 0, 0
}

// Made is the number of outputs the fragment made on exchange channel ch:
// its next output's number (zero for no such exchange). A cut of a
// pipeline (actor/cut.go) reports it per upstream fragment.
func (fr *Fragment) Made(ch int) int64 {
	if w := fr.exchange(ch); w != nil {
		return w.made()
	}
	return 0
}

// Trim forgets the records on exchange channel ch for fragment dest that
// are numbered below upto: dest's durable checkpoint covers them.
func (fr *Fragment) Trim(ch, dest int, upto int64) {
	if w := fr.exchange(ch); w != nil && dest >= 0 && dest < fr.plan.f.fragments {
		w.trim(dest, upto)
	}
}

// Complete reports whether the fragment has applied all of its inputs and
// every input ended (bounded sources read to their end, upstream
// fragments complete), and sent all its outputs downstream: its state is
// final.
func (fr *Fragment) Complete() bool {
	if fr.undone > 0 {
		return false
	}
	for _, w := range fr.out {
		if !w.sentAll() {
			return false
		}
	}
	return true
}

// Holding reports whether outputs on exchanges wait for a checkpoint to
// be released, or to be sent.
func (fr *Fragment) Holding() bool {
	for _, w := range fr.out {
		if w.holding() {
			return true
		}
	}
	return false
}

// Unreleased reports whether outputs on exchanges wait for a checkpoint
// to release them (Holding also counts those released and not yet sent).
func (fr *Fragment) Unreleased() bool {
	for _, w := range fr.out {
		if w.unreleased() {
			return true
		}
	}
	return false
}

// EndedUnreleased reports whether outputs on an exchange whose inputs all
// ended, or the watermark they ended with, wait for a checkpoint to
// release them: nothing more will come to join them, and a checkpoint now
// ends the exchange's partition for the fragments downstream instead of
// one at the next interval.
func (fr *Fragment) EndedUnreleased() bool {
	for _, w := range fr.out {
		if w.ended() && !w.finished() {
			return true
		}
	}
	return false
}

// Retained is the number of records the fragment keeps for fragments
// downstream of it.
func (fr *Fragment) Retained() int {
	n := 0
	for _, w := range fr.out {
		n += w.retained()
	}
	return n
}

func (fr *Fragment) exchange(ch int) exchangeOut {
	e := ch - len(fr.plan.f.sources)
	if e < 0 || e >= len(fr.out) {
		return nil
	}
	return fr.out[e]
}

// Advance fires the processing-time timers due at or before now, and
// returns the timers whose function panicked as dead letters (a timer has no
// input event to replay: it fires once).
func (fr *Fragment) Advance(now time.Time) ([]DeadLetter, error) {
	fr.now = now
	for _, t := range fr.timers {
		fr.curDom = t.dom
		t.t.fire(fr, now)
	}
	dl := fr.TimerDeadLetters()
	if err := fr.flushSinks(); err != nil {
		return dl, fmt.Errorf("fragment %d sink: %w", fr.id, err)
	}
	return dl, nil
}

// TimerDeadLetters returns, and forgets, the dead letters of the timers
// and window firings whose function panicked since it was last called:
// event-time ones fire as Apply and Observe move the watermark. The
// caller takes them after every Apply and Observe that did not fail: a
// checkpoint taken after them holds the timer as fired, so a restore of
// it fires the timer no more, and a dead letter still queued in the
// fragment the restore replaces would be lost. After a failure the
// caller restores the checkpoint before them, whose replay fires them
// again.
func (fr *Fragment) TimerDeadLetters() []DeadLetter {
	dl := fr.timerErr
	fr.timerErr = nil
	return dl
}

// Query answers a view request from this fragment's state. The caller adds
// freshness.
func (fr *Fragment) Query(req splice.Request) (splice.Answer, error) {
	for _, v := range fr.plan.f.views {
		if v.spec.Name == req.View {
			if req.Op == splice.OpChanges {
				return fr.queryChanges(req), nil
			}
			return v.query(fr, req)
		}
	}
	return splice.Answer{}, splice.ErrUnknownView
}
