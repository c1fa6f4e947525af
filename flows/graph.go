package flows

import (
	"time"

	"github.com/tessera-streams/tessera/internal/flowcore"
)

// Flow is a stream processing graph under construction. Build it with the
// functions of this package, then hand it to an engine: cluster.Config's
// Flow to run it, flowstest.New to test it. Validate reports its problems
// without running it.
//
// Its methods:
//
//	func (f *Flow) Fragments() int
//	    Fragments is the number of fragments.
//
//	func (f *Flow) Name() string
//	    Name is the flow's name.
//
//	func (f *Flow) Validate() error
//	    Validate reports every problem of the flow, or nil.
//
//	func (f *Flow) Version() string
//	    Version is the flow's version.
type Flow = flowcore.Flow

// New starts a flow.
func New(name string, opts ...Option) *Flow { return flowcore.New(name, opts...) }

// Option configures a Flow.
type Option = flowcore.Option

// WithFragments sets the number of fragments (key groups), fixed for the
// life of the flow's state. Default 64.
func WithFragments(n int) Option { return flowcore.WithFragments(n) }

// WithVersion sets the flow's version; nodes running different versions of
// a flow refuse to form a cluster.
func WithVersion(v string) Option { return flowcore.WithVersion(v) }

// WithDeadLetters routes malformed source records and events on which a
// user function failed to sink, in addition to the engine's log and
// counters.
func WithDeadLetters(sink DeadLetterSink) Option { return flowcore.WithDeadLetters(sink) }

// Layout lists what the flow's checkpoints are laid out by, a line each:
// its fragment count, its sources, its KeyBy stages and its stateful
// operators, with their types and what decides how they keep their state.
// A node refuses to start on checkpoints of another layout, but for one
// that only adds stages and operators after the old ones (the README,
// "Changing a flow"). A test that compares a flow's layout with the
// deployed flow's tells before a deploy whether the checkpoints will do.
func Layout(f *Flow) ([]string, error) { return flowcore.Layout(f) }

// DefaultFragments is the number of fragments of a flow unless set.
const DefaultFragments = flowcore.DefaultFragments

// Stream is a typed stream of events inside a flow.
//
// Its methods:
//
//	func (s Stream[T]) Flow() *Flow
//	    Flow is the flow the stream belongs to.
type Stream[T any] = flowcore.Stream[T]

// From adds a source to the flow. Options give it event time.
func From[T any](f *Flow, name string, src Source[T], opts ...SourceOption) Stream[T] {
	return flowcore.From[T](f, name, src, opts...)
}

// The event times a flow takes, and the longest span of time it may
// name: see WithEventTime.
var (
	MinEventTime = flowcore.MinEventTime
	MaxEventTime = flowcore.MaxEventTime
)

// MaxTimeSpan bounds a flow's window sizes, session gaps, allowed
// lateness, state TTLs and out-of-orderness.
const MaxTimeSpan = flowcore.MaxTimeSpan

// SourceOption configures a source in From.
type SourceOption = flowcore.SourceOption

// WithEventTime gives a source event time: ts extracts an event's timestamp,
// and the source's partitions emit watermarks that trail the largest
// timestamp seen by maxOutOfOrder (bounded out-of-orderness). ts must take
// the source's event type. An event whose time is outside [MinEventTime,
// MaxEventTime) (1800 to 2200) goes to the dead letters; a flow's window
// sizes, session gaps, lateness, state TTLs and out-of-orderness are at
// most MaxTimeSpan (ten years), so that the times made from them stay
// within what Unix nanoseconds hold.
func WithEventTime[T any](ts func(T) time.Time, maxOutOfOrder time.Duration) SourceOption {
	return flowcore.WithEventTime[T](ts, maxOutOfOrder)
}

// WithIdleTimeout marks a partition idle when it has had no event for d of
// processing time (counted from its reader's start if it has had none
// since): an idle partition does not hold the watermark back, until it has
// events again. With every partition idle, the watermark is the largest
// of theirs. A partition that ended is never idle; it holds nothing back
// but says nothing of the others: beside partitions that are all idle,
// the watermark is the largest of theirs, and it reaches the end of time
// only once every partition ended. Default: never idle.
func WithIdleTimeout(d time.Duration) SourceOption { return flowcore.WithIdleTimeout(d) }

// WithKeyedPartitions says the source is partitioned by the key of the
// flow's KeyBy: partition p holds the events whose key k has
// KeyPartition(k, partitions) == p, as Kafka topics keyed by it are with
// that partitioner (Kafka Streams calls it co-partitioning). A cluster
// then places each partition's reader on the node that owns the fragments
// of its keys (fragments f ≡ p mod partitions, placed together), and no
// record the source gives crosses nodes on its way to its fragment. The
// partitions must divide the flow's fragments (WithFragments), or the
// flow fails to build; keyed sources of a flow must have as many
// partitions. An event in another partition than its key's is still
// counted exactly, where its key is: it only crosses nodes. Use
// partitions at least the number of nodes, or some nodes own nothing.
func WithKeyedPartitions() SourceOption { return flowcore.WithKeyedPartitions() }

// KeyPartition is the partition that holds key in a source with
// partitions partitions and WithKeyedPartitions: the key's hash as KeyBy
// takes it, with KeyBy's default key codec, mod partitions. Producers of
// such a source partition by it.
func KeyPartition[K comparable](key K, partitions int) (int, error) {
	return flowcore.KeyPartition(key, partitions)
}

// Map transforms every event.
func Map[T, U any](s Stream[T], fn func(T) U) Stream[U] { return flowcore.Map[T, U](s, fn) }

// Filter keeps the events for which keep returns true.
func Filter[T any](s Stream[T], keep func(T) bool) Stream[T] { return flowcore.Filter[T](s, keep) }

// FlatMap turns every event into zero or more events: fn calls emit for
// each. The events it emits share the input's offset.
func FlatMap[T, U any](s Stream[T], fn func(v T, emit func(U))) Stream[U] {
	return flowcore.FlatMap[T, U](s, fn)
}

// Restamp gives the events of a stream after a key a new event time:
// the stages downstream (a KeyBy's windows, InEventTimeOrder) see ts(v)
// as the event's time. A process function that emits a trip when a timer
// confirms it, say, can date the trip by its departure. An event restamped
// behind its stage's watermark arrives late downstream: windows take it
// within their allowed lateness (AllowedLateness), and send it to TooLate
// after. Before the key, event time is the source's (WithEventTime). A time
// outside [MinEventTime, MaxEventTime) fails the event, which goes to the
// dead letters.
func Restamp[T any](s Stream[T], ts func(T) time.Time) Stream[T] { return flowcore.Restamp[T](s, ts) }

// Identity returns its argument: the extract function of an aggregate view
// whose algebra takes the events themselves.
func Identity[T any](v T) T { return flowcore.Identity[T](v) }

// KeyedStream is a stream partitioned by key: the input of the stateful
// operators. Every key belongs to one fragment.
//
// Its methods:
//
//	func (ks KeyedStream[K, T]) Values() Stream[T]
//	    Values is the stream of the keyed stream's events, in the fragments.
type KeyedStream[K comparable, T any] = flowcore.KeyedStream[K, T]

// KeyBy partitions a stream by key: events with the same key go to the
// same fragment, in source order per partition. Any stream can be keyed:
// a source's (the readers route it), or one inside the fragments — the
// output of Process, a table's Updates, window results — which goes
// through an exchange: exactly once, in the order each upstream fragment
// emitted it.
func KeyBy[T any, K comparable](s Stream[T], key func(T) K, opts ...KeyOption) KeyedStream[K, T] {
	return flowcore.KeyBy[T, K](s, key, opts...)
}

// KeyOption configures KeyBy.
type KeyOption = flowcore.KeyOption

// WithKeyCodec sets the codec of the key type (needed for keys other than
// strings and integers). Its type must be the KeyBy's key type: a codec of
// another type fails the flow's Validate.
func WithKeyCodec[K any](kc KeyCodec[K]) KeyOption { return flowcore.WithKeyCodec[K](kc) }

// WithEventCodec sets the codec of the event type, used when events cross
// nodes. Its type must be the keyed stream's event type: a codec of another
// type fails the flow's Validate.
func WithEventCodec[T any](c Codec[T]) KeyOption { return flowcore.WithEventCodec[T](c) }
