package flows

import (
	"github.com/tessera-streams/tessera/internal/flowcore"
)

// AlertInfo describes a declared alert.
//
//	type AlertInfo struct {
//		Name	string	`json:"name"`
//		View	string	`json:"view"`
//	}
type AlertInfo = flowcore.AlertInfo

// Alerter evaluates a flow's alerts over its spliced windowed views. It is
// pure: an engine drives it (Step), makes its records and states durable
// together, and restores the states after a restart.
//
//	type Alerter struct {
//
//		// Lost counts windows an alert could not evaluate because fragments
//		// had dropped them (see Fragment.SetHold).
//		Lost int64
//		// contains filtered or unexported fields
//	}
//
// Its methods:
//
//	func (a *Alerter) Hold() int64
//	    Hold is the end of the earliest window some alert has yet to evaluate past: fragments must keep windows ending after it (Fragment.SetHold).
//
//	func (a *Alerter) Restore(name string, b []byte) error
//	    Restore sets an alert's progress from its state (as Step returned it).
//
//	func (a *Alerter) Step(ctx context.Context, g splice.Gatherer, now time.Time) (recs []AlertRecord, states map[string][]byte, err error)
//	    Step evaluates every window completed since the last step, for every alert, and returns the alerts raised and the new states of the alerts that progressed (to write durably with the records).
type Alerter = flowcore.Alerter

// Batch is what a reader sends a fragment: every event of one source
// partition in [PrevEnd, End) that belongs to the fragment.
//
//	type Batch struct {
//		Source		int
//		Partition	int
//		Epoch		uint64
//		PrevEnd		int64
//		End		int64
//		Count		int
//		// Event time: the partition's watermark once the batch is applied, and
//		// whether the partition is idle. EventTime is false for sources without.
//		EventTime	bool
//		Watermark	int64
//		Idle		bool
//		// Done: the partition ends at End (a bounded input read to its end,
//		// or an upstream fragment whose inputs all ended and whose outputs are
//		// all sent).
//		Done	bool
//		// contains filtered or unexported fields
//	}
//
// Its methods:
//
//	func (b *Batch) Release()
//	    Release returns the batch's buffers for reuse.
type Batch = flowcore.Batch

// ChannelInfo describes an input channel of the fragments: a source, or an
// exchange whose partitions are the upstream fragments.
//
//	type ChannelInfo struct {
//		Name		string
//		Partitions	int
//		Exchange	bool
//	}
type ChannelInfo = flowcore.ChannelInfo

// Cursor is the input event being processed.
//
//	type Cursor struct {
//		Source		int
//		Partition	int
//		Offset		int64
//		TS		int64	// event time, unix ns (0 without event time)
//	}
type Cursor = flowcore.Cursor

// DeadLetterKeep bounds the bytes of a value a dead letter keeps: a huge
// record must not make every dead letter that size in memory, in the
// dead-letter file and in /v1/deadletters.
const (
	DeadLetterKeep = flowcore.DeadLetterKeep
)

// Delta is the change of a fragment's state since the last delta, encoded.
//
//	type Delta struct {
//		Puts	[]StateEntry
//		Deletes	[]StateEntry	// keys only
//		Reset	[]uint16	// namespaces to clear before Puts apply
//		Entries	int64		// entries of the whole state after this delta
//		Events	int64		// records applied in all
//	}
type Delta = flowcore.Delta

// EventError is a user function's failure on an event. The fragment's
// state is undefined after it (the event may be half applied): restore the
// fragment from a checkpoint and replay, or, after retries, Skip the event.
//
//	type EventError struct {
//		Event		EventID
//		DeadLetter	DeadLetter
//	}
//
// Its methods:
//
//	func (e *EventError) Error() string
type EventError = flowcore.EventError

// Fragment is the state of one key group and the operators after the key.
//
// Its methods:
//
//	func (fr *Fragment) Advance(now time.Time) ([]DeadLetter, error)
//	    Advance fires the processing-time timers due at or before now, and returns the timers whose function panicked as dead letters (a timer has no input event to replay: it fires once).
//
//	func (fr *Fragment) Apply(b *Batch, min int64) error
//	    Apply applies the records of b whose offset is at least min (the records below were applied before), and flushes sinks.
//
//	func (fr *Fragment) Complete() bool
//	    Complete reports whether the fragment has applied all of its inputs and every input ended (bounded sources read to their end, upstream fragments complete), and sent all its outputs downstream: its state is final.
//
//	func (fr *Fragment) Events() int64
//	    Events is the number of records applied.
//
//	func (fr *Fragment) Holding() bool
//	    Holding reports whether outputs on exchanges wait for a checkpoint to be released, or to be sent.
//
//	func (fr *Fragment) ID() int
//	    ID is the fragment's number.
//
//	func (fr *Fragment) Kept(ch, dest int) (base, sent int64)
//	    Kept is the range of numbers of the fragment's records on exchange channel ch for fragment dest that it can send again: from base (dest's durable checkpoint covers those before, Trim) to sent; zeros for no such exchange.
//
//	func (fr *Fragment) LagReleases()
//	    LagReleases makes Released deliver to the OnCheckpoint sinks, and send on the exchanges, what the checkpoint before the newest durable one covers, not the newest: for a fragment whose standby may restore that older checkpoint (its copy of the newest one may not have arrived), so that a restore never brings back fewer outputs than were delivered since (an exactly-once sink that skips a delivered prefix needs it), and never contradicts what fragments downstream applied (a replay interleaves its input partitions anew, so the outputs after the restored checkpoint may come out in another order).
//
//	func (fr *Fragment) Made(ch int) int64
//	    Made is the number of outputs the fragment made on exchange channel ch: its next output's number (zero for no such exchange).
//
//	func (fr *Fragment) Observe(b *Batch) error
//	    Observe takes the watermark of a batch whose records were all applied before (a replay): it still carries the partition's progress, which a fragment that missed it (it restored after the batch was first sent) needs to complete its windows and timers.
//
//	func (fr *Fragment) Publish()
//	    Publish makes the fragment's state as it is now what QueryPublished answers from.
//
//	func (fr *Fragment) Query(req splice.Request) (splice.Answer, error)
//	    Query answers a view request from this fragment's state.
//
//	func (fr *Fragment) QueryPublished(req splice.Request) (ans splice.Answer, ok bool)
//	    QueryPublished answers req from what the fragment last published, if it can: a ?top= query (without a prefix, for at most 64 entries) of a view that keeps its top entries.
//
//	func (fr *Fragment) Released() error
//	    Released says that the last checkpoint taken (TakeDelta) is durable — or, after a restore, that the restored one is: the exchange outputs it covers may be sent, and the OnCheckpoint sinks are delivered what it covers.
//
//	func (fr *Fragment) Resend(ch, dest int, from int64) *Batch
//	    Resend is the batch of records on exchange channel ch for fragment dest from number from up to what was sent, for a downstream fragment that restored an older checkpoint; nil if it is not behind.
//
//	func (fr *Fragment) Restore(e StateEntry) error
//	    Restore loads one checkpointed entry into the fragment, which must be new (from NewFragment).
//
//	func (fr *Fragment) Restored()
//	    Restored ends a restore: the fragment tells every fragment downstream of it where its outputs are (see TakeOutputs).
//
//	func (fr *Fragment) Retained() int
//	    Retained is the number of records the fragment keeps for fragments downstream of it.
//
//	func (fr *Fragment) SetEvents(n int64)
//	    SetEvents sets the applied-records count, as a restore does.
//
//	func (fr *Fragment) SetHold(t int64)
//	    SetHold keeps windows of window views that end after t even past their retention: an engine holds the windows its alerts have not evaluated yet (Alerter.Hold).
//
//	func (fr *Fragment) SetNow(t time.Time)
//	    SetNow sets the processing time that operators see, until the next call.
//
//	func (fr *Fragment) Skip(ev EventID)
//	    Skip makes the fragment pass over an event from now on, as if it had no record for this fragment: the engine's decision after a user function failed on it too often.
//
//	func (fr *Fragment) TakeDelta() (Delta, error)
//	    TakeDelta encodes the state changed since the last delta and forgets the changes.
//
//	func (fr *Fragment) TakeOutputs(fn func(dest int, b *Batch))
//	    TakeOutputs calls fn with every batch due to a fragment downstream (its own id included): the records emitted on the exchanges that a durable checkpoint covers (see Released) and were not sent yet, or a watermark that moved.
//
//	func (fr *Fragment) TooLate() int64
//	    TooLate counts the events that window operators sent to their TooLate outputs (since this fragment was built or restored).
//
//	func (fr *Fragment) Trim(ch, dest int, upto int64)
//	    Trim forgets the records on exchange channel ch for fragment dest that are numbered below upto: dest's durable checkpoint covers them.
//
//	func (fr *Fragment) Unreleased() bool
//	    Unreleased reports whether outputs on exchanges wait for a checkpoint to release them (Holding also counts those released and not yet sent).
//
//	func (fr *Fragment) Watermark() int64
//	    Watermark is the fragment's event-time watermark (unix ns): the minimum over its event-time input channels; NoWatermark before all have one.
type Fragment = flowcore.Fragment

// Interner hands out one string for each distinct byte sequence it is
// given, as far as it remembers, so that a fragment decoding batches from
// other nodes does not allocate its keys (and the event fields equal to
// them) again for every batch, and its table lookups find the very string
// the state holds, whose comparison stops at the pointer. It is a
// two-way cache of internSlots strings: bounded, and a key that
// never repeats costs one hash and one comparison more than a plain
// decode, not a map that grows. Only short strings are kept (keys and
// names, up to internMax bytes): a long one is a payload, rarely repeated,
// and holding 4,096 of them could keep megabytes alive per fragment. The
// string it returned last is checked first: an event usually carries its
// key again, decoded right after it. An Interner belongs to one
// goroutine; the zero value is ready.
//
// Its methods:
//
//	func (in *Interner) String(b []byte) string
//	    String returns a string equal to b: the one it returned before for the same bytes, if it still holds it.
type Interner = flowcore.Interner

// NoWatermark is the watermark before any event: nothing is complete.
const (
	NoWatermark = flowcore.NoWatermark
)

// Plan is a validated flow, compiled for an engine.
//
// Its methods:
//
//	func (p *Plan) Alerts() []AlertInfo
//	    Alerts lists the flow's alerts.
//
//	func (p *Plan) Channels() []ChannelInfo
//	    Channels lists the fragments' input channels: the sources in declaration order, then the exchanges.
//
//	func (p *Plan) DeadLetters() DeadLetterSink
//	    DeadLetters is the flow's dead-letter sink, or nil.
//
//	func (p *Plan) DecodeAnswer(view string, data []byte) (splice.Answer, error)
//	    DecodeAnswer decodes what EncodeAnswer encoded for view.
//
//	func (p *Plan) DecodeBatch(data []byte) (*Batch, error)
//	    DecodeBatch decodes a batch that EncodeBatch encoded for this plan.
//
//	func (p *Plan) DecodeBatchInterned(data []byte, in *Interner) (*Batch, error)
//	    DecodeBatchInterned is DecodeBatch taking the strings of keys and events from in (a fragment's own; nil for none).
//
//	func (p *Plan) EncodeAnswer(view string, a splice.Answer) ([]byte, error)
//	    EncodeAnswer encodes a fragment's answer to a request on view, to cross nodes:
//
//	func (p *Plan) EncodeBatch(dst []byte, b *Batch) ([]byte, error)
//	    EncodeBatch appends b's encoding to dst.
//
//	func (p *Plan) Exchanges() []int
//	    Exchanges lists the channels on which fragments send each other records.
//
//	func (p *Plan) Fragments() int
//	    Fragments is the number of fragments.
//
//	func (p *Plan) HasExchanges() bool
//	    HasExchanges reports whether the flow re-keys inside the fragments.
//
//	func (p *Plan) IsExchange(ch int) bool
//	    IsExchange reports whether channel ch is an exchange.
//
//	func (p *Plan) Name() string
//	    Name is the flow's name.
//
//	func (p *Plan) NewAlerter() *Alerter
//	    NewAlerter returns an alerter that has evaluated nothing.
//
//	func (p *Plan) NewFragment(id int) *Fragment
//	    NewFragment builds fragment id with empty state.
//
//	func (p *Plan) OpenReader(src, part int, from int64, batchSize int) (*Reader, error)
//	    OpenReader opens source src, partition part at offset from, with pending batches flushed at batchSize records.
//
//	func (p *Plan) PartitionName(ch, part int) string
//	    PartitionName is how a partition of an input channel (a source, or an exchange, whose partitions are the upstream fragments) is named in offsets and logs.
//
//	func (p *Plan) Sources() []SourceInfo
//	    Sources lists the sources in declaration order.
//
//	func (p *Plan) Version() string
//	    Version is the flow's version.
//
//	func (p *Plan) Views() []splice.Spec
//	    Views lists the views' specs in declaration order.
type Plan = flowcore.Plan

// Reader runs one source partition: reads, applies the operators before the
// key, and routes records into pending batches per fragment.
//
// Its methods:
//
//	func (r *Reader) Close() error
//	    Close closes the source.
//
//	func (r *Reader) Commit(offset int64) error
//	    Commit tells the source that everything before offset is safely checkpointed, if the source keeps such a position (see Committer).
//
//	func (r *Reader) Due(f int) bool
//	    Due reports whether fragment f should be sent a batch: records are pending or the position moved since its last batch, or the partition's watermark or idleness changed.
//
//	func (r *Reader) Events() int64
//	    Events is the number of source events read.
//
//	func (r *Reader) Full() []int
//	    Full returns the fragments whose pending batch is full, and forgets them.
//
//	func (r *Reader) Idle() bool
//	    Idle reports whether an event-time partition has had no event for its idle timeout.
//
//	func (r *Reader) Partition() int
//
//
//	func (r *Reader) Pending(f int) int
//	    Pending is the number of records waiting for fragment f.
//
//	func (r *Reader) Poll(ctx context.Context, max int) (int, error)
//	    Poll reads at most max events and routes them.
//
//	func (r *Reader) Position() int64
//	    Position is the offset after everything read.
//
//	func (r *Reader) Remind(f int)
//	    Remind makes fragment f's next batch due even if nothing changed since its last one: f restored a checkpoint that is not behind the reader (Rewind does nothing for it), but it lacks the watermark the reader sent its old state — at the end of a bounded input, the one that completes its windows and timers.
//
//	func (r *Reader) Rewind(to int64) error
//	    Rewind moves the reader back to offset to (if it is behind the position): pending records are dropped and every fragment's next batch starts at to.
//
//	func (r *Reader) RewindFor(f int, to int64) (bool, error)
//	    RewindFor answers fragment f's request to read again from to: the reader rewinds if to is behind its position (every fragment then drops what it applied before), and otherwise reminds f (Remind).
//
//	func (r *Reader) SetBatchSize(n int)
//	    SetBatchSize changes how many records make a fragment's batch full.
//
//	func (r *Reader) SetNow(t time.Time)
//	    SetNow sets the processing time, used to detect an idle partition.
//
//	func (r *Reader) Source() int
//	    Source and Partition identify the reader's input.
//
//	func (r *Reader) Take(f int) *Batch
//	    Take returns the batch for fragment f: its pending records and the source range they cover, up to the current position.
//
//	func (r *Reader) TakeBad() []BadRecord
//	    TakeBad returns the malformed records read since the last call.
//
//	func (r *Reader) TakeDeadLetters() []DeadLetter
//	    TakeDeadLetters returns the events that failed in user functions before the key since the last call.
//
//	func (r *Reader) Watermark() int64
//	    Watermark is the partition's event-time watermark: the largest event time read less the allowed out-of-orderness (NoWatermark before any event).
type Reader = flowcore.Reader

// Rec is a keyed record in a batch: the key, the event, and the offset of
// the source event it came from. Event times, for sources that have them,
// travel beside the records (recs.ts), so records of other flows stay small.
//
//	type Rec[K comparable, T any] struct {
//		Key	K
//		Val	T
//		Off	int64
//	}
type Rec[K comparable, T any] = flowcore.Rec[K, T]

// SourceInfo describes a source of a plan.
//
//	type SourceInfo struct {
//		Name		string
//		Partitions	int
//	}
type SourceInfo = flowcore.SourceInfo

// StateEntry is one key of a fragment's state in a checkpoint.
//
//	type StateEntry struct {
//		Namespace	uint16
//		Key		[]byte
//		Value		[]byte
//	}
type StateEntry = flowcore.StateEntry
