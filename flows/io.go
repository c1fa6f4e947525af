package flows

import (
	"github.com/tessera-streams/tessera/internal/flowcore"
)

// Source is a partitioned, ordered, replayable input: every partition is a
// sequence of events with increasing offsets, and can be read again from any
// offset it has produced.
//
//	type Source[T any] interface {
//		// Partitions is the number of partitions; it does not change.
//		Partitions() int
//		// Open starts reading partition p at offset from (0 for the beginning).
//		Open(p int, from int64) (PartitionReader[T], error)
//	}
type Source[T any] = flowcore.Source[T]

// PartitionReader reads one partition. It is used by one goroutine at a time.
//
//	type PartitionReader[T any] interface {
//		// Read appends at most max events to b and sets b.End to the offset after
//		// everything consumed (including malformed records, which go to b.Bad).
//		// It returns io.EOF when a bounded partition is exhausted; (nil, no
//		// events) means nothing is available now. Read should not block for long:
//		// honour ctx.
//		Read(ctx context.Context, b *ReadBatch[T], max int) error
//		Close() error
//	}
type PartitionReader[T any] = flowcore.PartitionReader[T]

// ReadBatch is what a PartitionReader fills.
//
//	type ReadBatch[T any] struct {
//		Events  []T
//		Offsets []int64 // Offsets[i] is the offset of Events[i], increasing
//		Bad     []BadRecord
//		End     int64
//	}
//
// Its methods:
//
//	func (b *ReadBatch[T]) Reset()
//	    Reset empties the batch, keeping its capacity and its End.
type ReadBatch[T any] = flowcore.ReadBatch[T]

// BadRecord is an input record that could not be decoded.
//
//	type BadRecord struct {
//		Offset int64
//		Where  string // e.g. the file
//		Raw    []byte
//		Err    error
//	}
type BadRecord = flowcore.BadRecord

// Committer is implemented by partition readers whose source keeps a
// committed position (a consumer group offset, say). The engine commits an
// offset once every fragment's durable checkpoint covers the partition up
// to it, never further.
//
//	type Committer interface {
//		Commit(offset int64) error
//	}
type Committer = flowcore.Committer

// Sink receives outputs in batches, from the goroutine of one reader or
// fragment at a time (different ones concurrently: a sink must be safe for
// concurrent use).
//
// An OnCheckpoint sink may also implement RestoredSink: it is told when a
// fragment restores a checkpoint that holds outputs to deliver again.
//
//	type Sink[T any] interface {
//		Write(out []Output[T]) error
//	}
type Sink[T any] = flowcore.Sink[T]

// SinkFunc adapts a function to Sink.
//
// Its methods:
//
//	func (fn SinkFunc[T]) Write(out []Output[T]) error
type SinkFunc[T any] = flowcore.SinkFunc[T]

// RestoredSink is a Sink told, from the fragment's goroutine, when
// fragment restores a checkpoint holding outputs that it delivers again
// (after a restart, a failover, a hand-off, a failure, or a pause of its
// node): what an earlier owner of the fragment committed, or this node
// before the fragment moved away and back, may be among them. A
// transactional sink starts the fragment's session afresh there, which
// learns what was committed.
//
//	type RestoredSink interface {
//		Restored(fragment int)
//	}
type RestoredSink = flowcore.RestoredSink

// SinkOption configures To.
type SinkOption = flowcore.SinkOption

// OnCheckpoint delivers a sink's outputs once a durable checkpoint of
// their fragment covers them, instead of as they are made: the sink sees
// each output of one history of the fragment, exactly once, whatever
// crashes and replays happen — one checkpoint interval late. Outputs
// covered by a checkpoint but not yet delivered are in the checkpoint
// and delivered again after a restore, in the same order, with the same
// ids: an idempotent sink (or one that drops ids it has) sees each once.
// In a cluster, where a standby may restore the checkpoint before the
// owner's newest durable one, the engine delivers them once the standby
// confirmed its copy of the checkpoint (recovery's strong rule), so that
// whatever a restore brings back holds, as a prefix, everything delivered
// since it was taken.
//
// Without it, outputs leave as they are made, with ids fixed by their
// cause. That is exactly-once for an idempotent sink when the outputs do
// not depend on how the fragment's input partitions interleave (a
// stateless stream, one input partition per key, or a Process with
// InEventTimeOrder); otherwise a replay may give an id a different value.
// It needs a stream after KeyBy.
//
// A Write that fails loses nothing either way. With OnCheckpoint the
// outputs stay, and are given again on the next checkpoint. Without it
// (after KeyBy), the fragment keeps them and gives them again after a
// backoff, for as long as the sink refuses, applying no input and taking
// no checkpoint meanwhile (a crash meanwhile makes them again, with the
// same ids, from the last checkpoint). A sink before KeyBy, called by the
// readers, that fails stops the engine with its error.
func OnCheckpoint() SinkOption { return flowcore.OnCheckpoint() }

// To sends the stream's events to a sink. Before the key, the sink is
// called by the readers; after it, by the fragments. See OnCheckpoint for
// when outputs are delivered, and what exactly-once means for each way.
func To[T any](s Stream[T], sink Sink[T], opts ...SinkOption) { flowcore.To[T](s, sink, opts...) }

// Output is one record a sink receives, with a deterministic id: the same
// input produces the same id on every replay, so an idempotent sink is
// exactly-once.
//
//	type Output[T any] struct {
//		ID    OutputID
//		Value T
//	}
type Output[T any] = flowcore.Output[T]

// OutputID identifies an output by what caused it, never by batching,
// timing or replay: an input event (its channel — a source, numbered in
// the order of From, or an exchange, numbered after them — partition and
// offset), or a timer or window of a key (the operator, the key and the
// time), and the output's index among that cause's outputs in the
// fragment. A replay emits the same outputs with the same ids.
//
//	type OutputID struct {
//		Fragment  int // -1 for outputs before the key
//		Cause     Cause
//		Source    int   // CauseEvent: the input channel
//		Partition int   // CauseEvent: its partition (an exchange's: the upstream fragment)
//		Offset    int64 // CauseEvent: the event's offset
//		Record    int   // CauseEvent: the record's number among the event's in the fragment (FlatMap before KeyBy)
//		// Op: for timers and windows, the operator, in declaration order.
//		// For CauseEvent, 0; or 1 + the operator that held the event back
//		// and ran it later (a Process in event-time order), whose outputs
//		// are then numbered apart from those the event made when it arrived.
//		Op        int
//		Key       string
//		At        int64 // timers: the timer's time; windows: the window's end (unix ns)
//		Index     int
//	}
//
// Its methods:
//
//	func (id OutputID) String() string
//	    String is a stable, compact text form of the id: a message id or record key for sinks that deduplicate.
type OutputID = flowcore.OutputID

// Cause is what made an output.
//
// Its methods:
//
//	func (c Cause) String() string
type Cause = flowcore.Cause

const (
	// CauseEvent: an input event, named by its channel and offset.
	CauseEvent Cause = flowcore.CauseEvent
	// CauseEventTimer: a Process event-time timer of a key.
	CauseEventTimer Cause = flowcore.CauseEventTimer
	// CauseProcessingTimer: a Process processing-time timer of a key, or a
	// periodic early window firing.
	CauseProcessingTimer Cause = flowcore.CauseProcessingTimer
	// CauseWindow: a window closed by the watermark (on time).
	CauseWindow Cause = flowcore.CauseWindow
)

// EventID identifies an input event: a channel, partition and offset.
//
//	type EventID struct {
//		Source    int
//		Partition int
//		Offset    int64
//	}
type EventID = flowcore.EventID

// DeadLetter is an input that could not be processed: a malformed record,
// or an event on which a user function failed.
//
//	type DeadLetter struct {
//		Flow      string `json:"flow"`
//		Source    string `json:"source"`
//		Partition int    `json:"partition"`
//		Offset    int64  `json:"offset"`
//		Fragment  int    `json:"fragment"` // -1 when the failure was before the key
//		Where     string `json:"where,omitempty"`
//		Key       string `json:"key,omitempty"`
//		// Value is the record or event, printed: at most DeadLetterKeep bytes
//		// of it (cut at a character boundary). A malformed record whose bytes
//		// are not valid UTF-8 keeps them in Raw instead (at most
//		// DeadLetterKeep; base64 in JSON), so that none is lost to U+FFFD
//		// replacement. Size is the whole value's length in bytes, Truncated
//		// whether Value or Raw holds less.
//		Value     string    `json:"value,omitempty"`
//		Raw       []byte    `json:"raw,omitempty"`
//		Size      int       `json:"size"`
//		Truncated bool      `json:"truncated,omitempty"`
//		Error     string    `json:"error"`
//		Time      time.Time `json:"time"`
//	}
//
// Its methods:
//
//	func (d *DeadLetter) SetRaw(raw []byte)
//	    SetRaw sets a malformed record's bytes: as Value if they are valid UTF-8, else a copy of at most DeadLetterKeep of them in Raw.
//
//	func (d *DeadLetter) SetValue(v string)
//	    SetValue sets the printed value, keeping at most DeadLetterKeep bytes.
type DeadLetter = flowcore.DeadLetter

// DeadLetterKeep bounds the bytes of a value a dead letter keeps: a huge
// record must not make every dead letter that size in memory, in the
// dead-letter file and in /v1/deadletters.
const DeadLetterKeep = flowcore.DeadLetterKeep

// DeadLetterFunc adapts a function to DeadLetterSink.
//
// Its methods:
//
//	func (fn DeadLetterFunc) WriteDeadLetters(dls []DeadLetter) error
type DeadLetterFunc = flowcore.DeadLetterFunc

// DeadLetterSink receives dead letters. It is called from the goroutine of
// the reader or fragment that produced them and must not block for long.
//
//	type DeadLetterSink interface {
//		WriteDeadLetters(dls []DeadLetter) error
//	}
type DeadLetterSink = flowcore.DeadLetterSink

// Codec encodes values of T for checkpoints and the network. The in-process
// path never encodes. Decode must reject malformed input with an error and
// never panic, and must not keep b: the caller reuses it.
//
//	type Codec[T any] interface {
//		Append(dst []byte, v T) ([]byte, error)
//		Decode(b []byte) (T, error)
//	}
type Codec[T any] = flowcore.Codec[T]

// KeyCodec is a Codec for keys that can also print, parse and order them:
// keys appear in URLs (/v1/views/{view}/keys/{key}) and keyed views list
// entries in key order.
//
//	type KeyCodec[K any] interface {
//		Codec[K]
//		Format(k K) string
//		Parse(s string) (K, error)
//		Compare(a, b K) int
//	}
type KeyCodec[K any] = flowcore.KeyCodec[K]

// DefaultCodec returns the codec Tessera uses for T when none is given:
// a fixed binary form for strings, byte slices, booleans and numbers;
// protobuf for proto.Message types; MarshalBinary for types that implement
// encoding.BinaryMarshaler (with a pointer that implements
// encoding.BinaryUnmarshaler); a compact binary form for plain structs
// (every field, nested structs included, an exported boolean, number,
// string, byte slice or time.Time); JSON for other
// structs, slices and maps whose fields are all exported. Other types
// (channels, functions, interfaces, structs with unexported fields) have
// none.
func DefaultCodec[T any]() (Codec[T], error) { return flowcore.DefaultCodec[T]() }

// DefaultKeyCodec returns the key codec for strings and integers; other key
// types need an explicit KeyCodec.
func DefaultKeyCodec[K any]() (KeyCodec[K], error) { return flowcore.DefaultKeyCodec[K]() }

// ErrNoCodec is returned (wrapped) by DefaultCodec for types it cannot
// encode faithfully; pass a codec explicitly for those.
var ErrNoCodec = flowcore.ErrNoCodec
