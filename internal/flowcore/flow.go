package flowcore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/tessera-streams/tessera/splice"
)

// DefaultFragments is the number of fragments of a flow unless set.
const DefaultFragments = 64

// Flow is a stream processing graph under construction. Build it with the
// functions of this package, then Compile it (or Validate it).
type Flow struct {
	name      string
	fragments int
	version   string

	sources  []sourceDef
	stages   []stageDef // keyed stages (one per KeyBy)
	edges    []edgeDef  // exchanges: KeyBy after a stateful operator
	ops      int        // stateful operators: index into Fragment.ops
	opLines  []string   // their lines of the layout (addOp)
	sinks    int
	views    []viewDef
	alerts   []alertDef
	readerW  []func(r *Reader)   // wiring run for each reader
	fragW    []func(f *Fragment) // wiring run for each fragment
	deadSink DeadLetterSink
	errs     []error
}

// Option configures a Flow.
type Option func(*Flow)

// WithFragments sets the number of fragments (key groups), fixed for the
// life of the flow's state. Default 64.
func WithFragments(n int) Option { return func(f *Flow) { f.fragments = n } }

// WithVersion sets the flow's version; nodes running different versions of
// a flow refuse to form a cluster.
func WithVersion(v string) Option { return func(f *Flow) { f.version = v } }

// WithDeadLetters routes malformed source records and events on which a
// user function failed to sink, in addition to the engine's log and
// counters.
func WithDeadLetters(sink DeadLetterSink) Option { return func(f *Flow) { f.deadSink = sink } }

// New starts a flow.
func New(name string, opts ...Option) *Flow {
	f := &Flow{name: name, fragments: DefaultFragments, version: "1"}
	for _, o := range opts {
		o(f)
	}
	return f
}

// Name is the flow's name.
func (f *Flow) Name() string { return f.name }

// Fragments is the number of fragments.
func (f *Flow) Fragments() int { return f.fragments }

// Version is the flow's version.
func (f *Flow) Version() string { return f.version }

func (f *Flow) errorf(format string, args ...any) {
	f.errs = append(f.errs, fmt.Errorf(format, args...))
}

// Validate reports every problem of the flow, or nil. A flow that does not
// validate does not run.
func (f *Flow) Validate() error {
	errs := append([]error(nil), f.errs...)
	if f.name == "" {
		errs = append(errs, errors.New("flow has no name"))
	}
	if f.fragments < 1 || f.fragments > 1<<16 {
		errs = append(errs, fmt.Errorf("flow %q: fragments must be in [1, 65536], got %d", f.name, f.fragments))
	}
	if len(f.sources) == 0 {
		errs = append(errs, fmt.Errorf("flow %q has no source", f.name))
	}
	names := map[string]bool{}
	keyed := ""
	for _, s := range f.sources {
		if names["source "+s.name] {
			errs = append(errs, fmt.Errorf("flow %q: duplicate source name %q", f.name, s.name))
		}
		names["source "+s.name] = true
		switch {
		case !s.keyed || s.partitions < 1 || f.fragments < 1:
		case f.fragments%s.partitions != 0:
			errs = append(errs, fmt.Errorf("flow %q: source %q has keyed partitions, %d, which do not divide the flow's %d fragments: "+
				"a partition would hold the keys of fragments on different nodes", f.name, s.name, s.partitions, f.fragments))
		case keyed != "" && f.keyGroups() != s.partitions:
			errs = append(errs, fmt.Errorf("flow %q: keyed sources %q and %q have %d and %d partitions: keyed sources must have as many",
				f.name, keyed, s.name, f.keyGroups(), s.partitions))
		default:
			keyed = s.name
		}
	}
	for _, v := range f.views {
		if names["view "+v.spec.Name] {
			errs = append(errs, fmt.Errorf("flow %q: duplicate view name %q", f.name, v.spec.Name))
		}
		names["view "+v.spec.Name] = true
	}
	for _, a := range f.alerts {
		if a.name == "" || names["alert "+a.name] {
			errs = append(errs, fmt.Errorf("flow %q: alert name %q is empty or not unique", f.name, a.name))
		}
		names["alert "+a.name] = true
	}
	if len(f.views) == 0 && f.sinks == 0 {
		errs = append(errs, fmt.Errorf("flow %q has no view and no sink: its results would go nowhere", f.name))
	}
	return errors.Join(errs...)
}

// keyGroups is the partitions of the flow's first keyed source (0: none).
func (f *Flow) keyGroups() int {
	for _, s := range f.sources {
		if s.keyed {
			return s.partitions
		}
	}
	return 0
}

// Compile validates the flow and returns it compiled for an engine. The flow
// must not be changed afterwards. It is a function, not a method of Flow,
// so that the user's Flow (flows.Flow) shows only what a user calls.
func Compile(f *Flow) (*Plan, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	p := &Plan{f: f}
	p.nameParts()
	return p, nil
}

// Source is a partitioned, ordered, replayable input: every partition is a
// sequence of events with increasing offsets, and can be read again from any
// offset it has produced.
type Source[T any] interface {
	// Partitions is the number of partitions; it does not change.
	Partitions() int
	// Open starts reading partition p at offset from (0 for the beginning).
	Open(p int, from int64) (PartitionReader[T], error)
}

// PartitionReader reads one partition. It is used by one goroutine at a time.
type PartitionReader[T any] interface {
	// Read appends at most max events to b and sets b.End to the offset after
	// everything consumed (including malformed records, which go to b.Bad).
	// It returns io.EOF when a bounded partition is exhausted; (nil, no
	// events) means nothing is available now. Read should not block for long:
	// honour ctx.
	Read(ctx context.Context, b *ReadBatch[T], max int) error
	Close() error
}

// Committer is implemented by partition readers whose source keeps a
// committed position (a consumer group offset, say). The engine commits an
// offset once every fragment's durable checkpoint covers the partition up
// to it, never further.
type Committer interface {
	Commit(offset int64) error
}

// ReadBatch is what a PartitionReader fills.
type ReadBatch[T any] struct {
	Events  []T
	Offsets []int64 // Offsets[i] is the offset of Events[i], increasing
	Bad     []BadRecord
	End     int64
}

// Reset empties the batch, keeping its capacity and its End.
func (b *ReadBatch[T]) Reset() {
	clear(b.Events) // drop references for the collector
	b.Events, b.Offsets, b.Bad = b.Events[:0], b.Offsets[:0], b.Bad[:0]
}

// BadRecord is an input record that could not be decoded.
type BadRecord struct {
	Offset int64
	Where  string // e.g. the file
	Raw    []byte
	Err    error
}

// DeadLetter is an input that could not be processed: a malformed record,
// or an event on which a user function failed.
type DeadLetter struct {
	Flow      string `json:"flow"`
	Source    string `json:"source"`
	Partition int    `json:"partition"`
	Offset    int64  `json:"offset"`
	Fragment  int    `json:"fragment"` // -1 when the failure was before the key
	Where     string `json:"where,omitempty"`
	Key       string `json:"key,omitempty"`
	// Value is the record or event, printed: at most DeadLetterKeep bytes
	// of it (cut at a character boundary). A malformed record whose bytes
	// are not valid UTF-8 keeps them in Raw instead (at most
	// DeadLetterKeep; base64 in JSON), so that none is lost to U+FFFD
	// replacement. Size is the whole value's length in bytes, Truncated
	// whether Value or Raw holds less.
	Value     string    `json:"value,omitempty"`
	Raw       []byte    `json:"raw,omitempty"`
	Size      int       `json:"size"`
	Truncated bool      `json:"truncated,omitempty"`
	Error     string    `json:"error"`
	Time      time.Time `json:"time"`
}

// DeadLetterKeep bounds the bytes of a value a dead letter keeps: a huge
// record must not make every dead letter that size in memory, in the
// dead-letter file and in /v1/deadletters.
const DeadLetterKeep = 4 << 10

// SetValue sets the printed value, keeping at most DeadLetterKeep bytes.
func (d *DeadLetter) SetValue(v string) {
	d.Size = len(v)
	if len(v) > DeadLetterKeep {
		cut := DeadLetterKeep
		for cut > 0 && !utf8.RuneStart(v[cut]) {
			cut--
		}
		v, d.Truncated = v[:cut], true
	}
	d.Value = v
}

// SetRaw sets a malformed record's bytes: as Value if they are valid
// UTF-8, else a copy of at most DeadLetterKeep of them in Raw.
func (d *DeadLetter) SetRaw(raw []byte) {
	if utf8.Valid(raw) {
		d.Raw = nil
		d.SetValue(string(raw))
		return
	}
	keep := raw[:min(len(raw), DeadLetterKeep)]
	d.Value, d.Raw, d.Size, d.Truncated = "", bytes.Clone(keep), len(raw), len(keep) < len(raw)
}

// DeadLetterSink receives dead letters. It is called from the goroutine of
// the reader or fragment that produced them and must not block for long.
type DeadLetterSink interface {
	WriteDeadLetters(dls []DeadLetter) error
}

// DeadLetterFunc adapts a function to DeadLetterSink.
type DeadLetterFunc func([]DeadLetter) error

func (fn DeadLetterFunc) WriteDeadLetters(dls []DeadLetter) error { return fn(dls) }

// Output is one record a sink receives, with a deterministic id: the same
// input produces the same id on every replay, so an idempotent sink is
// exactly-once.
type Output[T any] struct {
	ID    OutputID
	Value T
}

// Cause is what made an output.
type Cause uint8

const (
	// CauseEvent: an input event, named by its channel and offset.
	CauseEvent Cause = iota
	// CauseEventTimer: a Process event-time timer of a key.
	CauseEventTimer
	// CauseProcessingTimer: a Process processing-time timer of a key, or a
	// periodic early window firing.
	CauseProcessingTimer
	// CauseWindow: a window closed by the watermark (on time).
	CauseWindow
)

func (c Cause) String() string {
	switch c {
	case CauseEventTimer:
		return "et"
	case CauseProcessingTimer:
		return "pt"
	case CauseWindow:
		return "w"
	}
	return "e"
}

// OutputID identifies an output by what caused it, never by batching,
// timing or replay: an input event (its channel — a source or an exchange,
// see Plan.Channels — partition and offset), or a timer or window of a key
// (the operator, the key and the time), and the output's index among that
// cause's outputs in the fragment. A replay emits the same outputs with the
// same ids.
type OutputID struct {
	Fragment  int // -1 for outputs before the key
	Cause     Cause
	Source    int   // CauseEvent: the input channel
	Partition int   // CauseEvent: its partition (an exchange's: the upstream fragment)
	Offset    int64 // CauseEvent: the event's offset
	Record    int   // CauseEvent: the record's number among the event's in the fragment (FlatMap before KeyBy)
	// Op: for timers and windows, the operator, in declaration order. For
	// CauseEvent, 0; or 1 + the operator that held the event back and ran
	// it later (a Process in event-time order), whose outputs are then
	// numbered apart from those the event made when it arrived.
	Op    int
	Key   string // timers and windows: the key; a window's early firings: "key@start"
	At    int64  // timers: the timer's time; windows: the window's end (unix ns)
	Index int
}

// String is a stable, compact text form of the id: a message id or record
// key for sinks that deduplicate.
func (id OutputID) String() string {
	if id.Cause == CauseEvent {
		if id.Op > 0 {
			return fmt.Sprintf("%d/e/%d/%d/%d/%d/h%d/%d", id.Fragment, id.Source, id.Partition, id.Offset, id.Record, id.Op-1, id.Index)
		}
		return fmt.Sprintf("%d/e/%d/%d/%d/%d/%d", id.Fragment, id.Source, id.Partition, id.Offset, id.Record, id.Index)
	}
	return fmt.Sprintf("%d/%s/%d/%d/%s/%d", id.Fragment, id.Cause, id.Op, id.At, id.Key, id.Index)
}

// Sink receives outputs in batches, from the goroutine of one reader or
// fragment at a time (different ones concurrently: a sink must be safe for
// concurrent use). A Write holds the outputs of one input batch, or part
// of them: a batch that makes many (a watermark firing many windows) is
// written in chunks of a few thousand as they are made.
//
// An OnCheckpoint sink may also implement RestoredSink: it is told when a
// fragment restores a checkpoint that holds outputs to deliver again.
type Sink[T any] interface {
	Write(out []Output[T]) error
}

// RestoredSink is a Sink told, from the fragment's goroutine, when
// fragment restores a checkpoint holding outputs that it delivers again
// (after a restart, a failover, a hand-off, a failure, or a pause of its
// node): what an earlier owner of the fragment committed, or this node
// before the fragment moved away and back, may be among them. A
// transactional sink starts the fragment's session afresh there, which
// learns what was committed.
type RestoredSink interface {
	Restored(fragment int)
}

// SinkFunc adapts a function to Sink.
type SinkFunc[T any] func(out []Output[T]) error

func (fn SinkFunc[T]) Write(out []Output[T]) error { return fn(out) }

type sourceDef struct {
	name       string
	partitions int
	keyed      bool       // WithKeyedPartitions
	et         *eventTime // nil: no event time
	open       func(r *Reader, p int, from int64) error
}

// stageDef is a keyed stage: the records of one KeyBy, in the fragments.
type stageDef struct {
	name   string
	keyed  string      // its line of the layout: "KeyBy K of T"
	source int         // the source at the root of the stage's path (its event time)
	edge   int         // the exchange that feeds it, or -1: readers of source feed it
	parent int         // a stage keyed alike whose time it shares (Windowed.ByKey), or -1
	codec  interface { // encodes batches to cross nodes (KeyBy stages)
		decodeParts(b []byte, n int, et bool, in *Interner, form partForm) (payload, []byte, error)
	}
}

// edgeDef is an exchange: a KeyBy of a stream inside the fragments. Every
// fragment's output on it is a partition of an input channel of the next
// stage (see exchange.go).
type edgeDef struct {
	stage int // the stage it feeds
	from  int // the stage whose stream it re-keys: its watermark flows on
}

type viewDef struct {
	spec  splice.Spec
	stage int // the keyed stage whose state the view reads
	query func(f *Fragment, req splice.Request) (splice.Answer, error)
	// To answer across nodes: the codecs of entry values (keyed views) and
	// partials (aggregate and windowed views), and the key parser.
	vals, parts valueCodec
	parseKey    func(string) (any, error)
}
