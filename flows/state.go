package flows

import (
	"time"

	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/splice"
)

// Table is the keyed state of Reduce, Aggregate or Count: one value per key.
//
// Its methods:
//
//	func (t Table[K, V]) Updates() Stream[KV[K, V]]
//	    Updates is the stream of the table's changes: the key and its new value, after every event.
//
//	func (t Table[K, V]) View(name string, opts ...ViewOption[V]) Table[K, V]
//	    View exposes the table as a keyed view (see ScoreBy and PublishIf for its options).
type Table[K comparable, V any] = flowcore.Table[K, V]

// Reduce keeps, per key, the first event combined with every later one by
// fn.
func Reduce[K comparable, T any](ks KeyedStream[K, T], fn func(acc, v T) T, opts ...StateOption) Table[K, T] {
	return flowcore.Reduce[K, T](ks, fn, opts...)
}

// Aggregate folds every event of a key into an accumulator that starts at
// init().
func Aggregate[K comparable, T, A any](ks KeyedStream[K, T], init func() A, add func(acc A, v T) A, opts ...StateOption) Table[K, A] {
	return flowcore.Aggregate[K, T, A](ks, init, add, opts...)
}

// Count counts the events of every key.
func Count[K comparable, T any](ks KeyedStream[K, T], opts ...StateOption) Table[K, int64] {
	return flowcore.Count[K, T](ks, opts...)
}

// KV is a key and its value.
//
//	type KV[K comparable, V any] struct {
//		Key   K
//		Value V
//	}
type KV[K comparable, V any] = flowcore.KV[K, V]

// StateOption configures a stateful operator.
type StateOption = flowcore.StateOption

// WithStateCodec sets the codec of the operator's state type, used by
// checkpoints. Its type must be the operator's state type: a codec of
// another type fails the flow's Validate.
func WithStateCodec[S any](c Codec[S]) StateOption { return flowcore.WithStateCodec[S](c) }

// WithStateTTL expires a key's state once the watermark passes its last
// event's time by d, so that per-key state (one per subscriber, say) does
// not grow forever. It needs event time. Process, Reduce, Aggregate and
// Count support it; a table's expired key leaves its view.
func WithStateTTL(d time.Duration) StateOption { return flowcore.WithStateTTL(d) }

// InEventTimeOrder makes Process see each fragment's events in event-time
// order, between its timers: an event waits until the watermark passes its
// time, then runs after every timer (and state expiry) due before it, as in
// a sequential run over the events sorted by time. The results then
// depend on the events alone — not on how partitions interleave, lag or
// are batched — at the price of the watermark's delay. Events at the same
// time run in the order of their channel, partition and offset. Late
// events (behind the watermark) run at once. The waiting events are part
// of the checkpoint. It needs event time.
func InEventTimeOrder() StateOption { return flowcore.InEventTimeOrder() }

// Process runs a per-key state machine over a keyed stream.
//
// With WithStateTTL, a key's state expires once the watermark passes its
// last event by the TTL, after every timer due before; a key with timers of
// its own pending keeps its state until they have fired. An event that
// comes the TTL after its key's last one (and finds no timer pending)
// starts from no state, whatever the watermark says; a late event finds
// the state expired if the watermark passed the key's expiry, and the
// state it makes goes at once if the watermark passed its own.
func Process[K comparable, T, S, O any](ks KeyedStream[K, T], h Handler[K, T, S, O], opts ...StateOption) Processed[K, S, O] {
	return flowcore.Process[K, T, S, O](ks, h, opts...)
}

// Handler is a process function: a per-key state machine with typed state
// S that emits O. OnEvent is called for every event of a key, OnTimer (if
// set) when a timer of the key fires. The Context is valid only during the
// call.
//
//	type Handler[K comparable, T, S, O any] struct {
//		OnEvent func(c *Context[K, S, O], v T)
//		OnTimer func(c *Context[K, S, O], at time.Time)
//	}
type Handler[K comparable, T, S, O any] = flowcore.Handler[K, T, S, O]

// Context is what a process function sees of its key.
//
// Its methods:
//
//	func (c *Context[K, S, O]) ClearState()
//	    ClearState removes the key's state.
//
//	func (c *Context[K, S, O]) DeleteEventTimer(at time.Time)
//	    DeleteEventTimer cancels the key's event-time timer at at.
//
//	func (c *Context[K, S, O]) DeleteProcessingTimer(at time.Time)
//	    DeleteProcessingTimer cancels the key's processing-time timer at at.
//
//	func (c *Context[K, S, O]) Emit(o O)
//	    Emit sends an output downstream.
//
//	func (c *Context[K, S, O]) Key() K
//	    Key is the current key.
//
//	func (c *Context[K, S, O]) Now() time.Time
//	    Now is the processing time of the current batch or timer.
//
//	func (c *Context[K, S, O]) SetEventTimer(at time.Time)
//	    SetEventTimer asks for OnTimer to be called for this key once the watermark reaches at.
//	    A time the handler has already reached (the event's time in event-time order, else the
//	    watermark; a firing timer's time) that is not pending fires as soon as the handler returns,
//	    its outputs numbered on from the handler's: each such firing has output ids of its own.
//
//	func (c *Context[K, S, O]) SetProcessingTimer(at time.Time)
//	    SetProcessingTimer asks for OnTimer to be called for this key once the processing time reaches at.
//	    A time at or before the batch's processing time that is not pending fires as soon as the handler returns.
//
//	func (c *Context[K, S, O]) SetState(s S)
//	    SetState replaces the key's state.
//
//	func (c *Context[K, S, O]) State() (S, bool)
//	    State returns the key's state and whether it has any.
//
//	func (c *Context[K, S, O]) TimeDomain() TimeDomain
//	    TimeDomain says, during OnTimer, whether the timer is an event-time or a processing-time one.
//
//	func (c *Context[K, S, O]) Timestamp() time.Time
//	    Timestamp is the current event's event time, or in an event-time timer the timer's time (the zero time for sources without event time, and in processing-time timers).
//
//	func (c *Context[K, S, O]) Watermark() time.Time
//	    Watermark is the watermark of the stage's input: every event up to it has arrived, but for late ones (the zero time before there is one).
type Context[K comparable, S, O any] = flowcore.Context[K, S, O]

// TimeDomain is the clock of a timer.
type TimeDomain = flowcore.TimeDomain

const (
	ProcessingTime TimeDomain = flowcore.ProcessingTime // fires on the processing-time clock
	EventTime      TimeDomain = flowcore.EventTime      // fires when the watermark passes it
)

// Processed is the result of Process: its output stream and its state.
//
// Its methods:
//
//	func (p Processed[K, S, O]) Out() Stream[O]
//	    Out is the stream of what the process function emits.
//
//	func (p Processed[K, S, O]) View(name string, opts ...ViewOption[S]) Processed[K, S, O]
//	    View exposes the process function's state as a keyed view (see ScoreBy and PublishIf for its options).
type Processed[K comparable, S, O any] = flowcore.Processed[K, S, O]

// ViewOption configures a keyed view: Table.View, Processed.View and
// Windowed.KeyedView take them.
type ViewOption[V any] = flowcore.ViewOption[V]

// PublishIf answers only the entries whose value keep accepts. The others
// are left out of every answer — a key's lookup, pages (limit and after),
// prefix, top, every window of a windowed keyed view and its count of
// keys, watch streams — as if the view did not hold them: they never
// leave the fragment. keep sees a key's whole value, since a key lives in
// one fragment, and runs before pages and top are cut, so a page is as
// full as the published entries allow and paging neither skips nor
// repeats one.
//
// For k-anonymity, a value that counts its distinct subjects publishes
// only the entries backed by at least k of them:
//
//	flows.PublishIf(func(c Cell) bool { return c.Subscribers() >= k })
func PublishIf[V any](keep func(V) bool) ViewOption[V] { return flowcore.PublishIf[V](keep) }

// ScoreBy ranks the view's values for ?top= queries. Without it numbers
// rank by value, and other values cannot be ranked.
func ScoreBy[V any](score func(V) float64) ViewOption[V] { return flowcore.ScoreBy[V](score) }

// AggregateView declares a view that every fragment folds the stream into
// with alg, and that queries splice by merging the fragments' partials.
// extract picks the algebra's input from an event. The stream must come
// after KeyBy.
func AggregateView[T, In, P, Out any](s Stream[T], name string, alg splice.Algebra[In, P, Out], extract func(T) In) {
	flowcore.AggregateView[T, In, P, Out](s, name, alg, extract)
}
