package flows

import (
	"time"

	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/splice"
)

// Windows assigns events to event-time windows [start, start+size), one
// every slide: tumbling when slide == size, sliding (hopping) when slide <
// size. Starts are multiples of slide since the Unix epoch.
type Windows = flowcore.Windows

// Tumbling windows of the given size.
func Tumbling(size time.Duration) Windows { return flowcore.Tumbling(size) }

// Sliding windows of the given size, one starting every slide.
func Sliding(size, slide time.Duration) Windows { return flowcore.Sliding(size, slide) }

// Global is one window per key over all of event time: it fires when the
// input ends (the watermark completes), and earlier with FireEvery.
func Global() Windows { return flowcore.Global() }

// WindowOption configures WindowAggregate.
type WindowOption = flowcore.WindowOption

// AllowedLateness keeps a window's state for d after the watermark passed
// its end: a late event inside that time updates the window and emits a
// Late refinement; a later one goes to the TooLate output.
func AllowedLateness(d time.Duration) WindowOption { return flowcore.AllowedLateness(d) }

// EarlyEvery emits an Early result of every window that changed, each d of
// processing time, before the watermark closes it (a periodic trigger).
// Early results depend on when they fire, not only on the events.
func EarlyEvery(d time.Duration) WindowOption { return flowcore.EarlyEvery(d) }

// FireEvery emits an Early result of a window every n events, before the
// watermark closes it (a count trigger).
func FireEvery(n int) WindowOption { return flowcore.FireEvery(n) }

// WindowAggregate folds every event of a key into the event-time windows
// that contain it, starting from init(), and emits each window's value
// when the watermark passes its end (OnTime), then again for each late
// event within the allowed lateness (Late). Events too late for all their
// windows go to TooLate: never dropped silently. Window state lives in the
// fragment and is checkpointed. The keyed stream's source needs event time
// (WithEventTime).
//
// Tumbling windows keep one accumulator per key and window. Sliding
// windows without a merge do too, and an event updates each of the
// size/slide windows over it: give WindowAggregateMerge a merge to share
// slices between them instead.
func WindowAggregate[K comparable, T, A any](ks KeyedStream[K, T], w Windows, init func() A, add func(A, T) A, opts ...WindowOption) Windowed[K, T, A] {
	return flowcore.WindowAggregate[K, T, A](ks, w, init, add, opts...)
}

// WindowAggregateMerge is WindowAggregate for accumulators that merge:
// merge(a, b) is the accumulator of the events of a and of b, associative,
// with init() neutral. It may change and return a, and must neither change
// b nor keep a reference to it. Sliding windows then keep a key's events in
// slices of gcd(size, slide) — an event updates one slice, however many
// windows are over it — and combine a window from its slices when it
// fires: the state per key depends on the time its windows span, not on
// how many overlap. Results, firings, lateness and views are
// WindowAggregate's. Early triggers (FireEvery, EarlyEvery) and the global
// window keep a state per window, as WindowAggregate does.
func WindowAggregateMerge[K comparable, T, A any](ks KeyedStream[K, T], w Windows, init func() A, add func(A, T) A, merge func(A, A) A,
	opts ...WindowOption) Windowed[K, T, A] {
	return flowcore.WindowAggregateMerge[K, T, A](ks, w, init, add, merge, opts...)
}

// WindowAggregateInvertible is WindowAggregateMerge for accumulators that
// form a commutative group: merge is also commutative, and inverse(a, b),
// for b the accumulator of some of a's events, is the accumulator of a's
// other events (a count or a sum: a - b). A sliding window then fires
// from the key's previous window — merging the slices that entered and
// taking out those that left — instead of combining every slice of the
// window: a firing costs a slide's slices, not a window's. Results are
// WindowAggregateMerge's where the group is exact (integers; a float sum
// rounds differently). A result may hold the running total: init, add,
// merge and inverse must return accumulators that share nothing the next
// call changes (values, not maps or slices changed in place).
func WindowAggregateInvertible[K comparable, T, A any](ks KeyedStream[K, T], w Windows, init func() A, add func(A, T) A,
	merge, inverse func(A, A) A, opts ...WindowOption) Windowed[K, T, A] {
	return flowcore.WindowAggregateInvertible[K, T, A](ks, w, init, add, merge, inverse, opts...)
}

// SessionAggregate folds every event of a key into session windows: an
// event opens [t, t+gap), and sessions that overlap merge (their
// accumulators combined with merge). A session fires when the watermark
// passes its end (OnTime); with allowed lateness, a late event that lands
// in a fired session refines it (Late). An event whose own [t, t+gap) ended
// more than the allowed lateness before the watermark goes to TooLate.
// Session state lives in the fragment and is checkpointed.
func SessionAggregate[K comparable, T, A any](ks KeyedStream[K, T], gap time.Duration, init func() A, add func(A, T) A,
	merge func(A, A) A, opts ...WindowOption) Windowed[K, T, A] {
	return flowcore.SessionAggregate[K, T, A](ks, gap, init, add, merge, opts...)
}

// Windowed is the result of WindowAggregate.
//
// Its methods:
//
//	func (w Windowed[K, T, A]) ByKey() KeyedStream[K, WindowResult[K, A]]
//	    ByKey is the stream of window results keyed by their key. A key's results come from its own fragment, so stateful operators (Count, Aggregate, Process) follow without a shuffle: for instance the number of sessions of every user. Operators in event time after it (windows, sessions, a Process's timers) see a result that a move of the watermark fired as made before that move, as one sent through KeyBy would be: on time for their windows that the same move fires.
//
//	func (w Windowed[K, T, A]) KeyedView(name string, retain time.Duration, opts ...ViewOption[A]) Windowed[K, T, A]
//	    KeyedView exposes the windows' keys as a view: for each event-time window, every key of the window with its value — the live accumulator while the window is open, the final value once the watermark fired it (refined by late events within the allowed lateness).
//
//	func (w Windowed[K, T, A]) Results() Stream[WindowResult[K, A]]
//	    Results is the stream of window results.
//
//	func (w Windowed[K, T, A]) TooLate() Stream[T]
//	    TooLate is the stream of events that arrived after every window they belong to had expired (watermark past end + allowed lateness).
type Windowed[K comparable, T, A any] = flowcore.Windowed[K, T, A]

// WindowResult is a window's value for a key.
//
//	type WindowResult[K comparable, A any] struct {
//		Key    K
//		Start  time.Time
//		End    time.Time
//		Value  A
//		Firing Firing
//	}
type WindowResult[K comparable, A any] = flowcore.WindowResult[K, A]

// Firing says why a window result was emitted.
//
// Its methods:
//
//	func (f Firing) MarshalText() ([]byte, error)
//	    MarshalText prints the firing in JSON answers.
//
//	func (f Firing) String() string
type Firing = flowcore.Firing

const (
	OnTime Firing = flowcore.OnTime // the watermark passed the window's end
	Late   Firing = flowcore.Late   // a late event refined an already fired window
	Early  Firing = flowcore.Early  // a trigger fired before the watermark closed the window
)

// WindowView declares a view of a windowed aggregate by window: for each
// window, alg folds extract(key, value) over every key's value of that
// window. Each fragment keeps its partial per window, and queries splice
// them window by window (GET /v1/views/{name}?window=latest, ?from=&to=).
// A window is queryable from its first event until retain after its end
// (by the watermark; when a bounded input ends, the windows retained then
// stay); while it is open its partial follows the keys' current values.
// Session windows have per-key bounds and have no such view.
//
// For instance, the number of distinct keys seen in each window:
//
//	flows.WindowView(w, "visitors", splice.Count[struct{}](), func(string, int64) struct{} { return struct{}{} }, time.Hour)
func WindowView[K comparable, T, A, In, P, Out any](w Windowed[K, T, A], name string, alg splice.Algebra[In, P, Out],
	extract func(K, A) In, retain time.Duration) WindowedView[Out] {
	return flowcore.WindowView[K, T, A, In, P, Out](w, name, alg, extract, retain)
}

// WindowedView is a view declared by WindowView: one value per event-time
// window, spliced over every fragment. Alert watches it.
//
// Its methods:
//
//	func (v WindowedView[Out]) Name() string
//	    Name is the view's name.
type WindowedView[Out any] = flowcore.WindowedView[Out]

// Alert raises an alert on a windowed view: for each complete window (every
// fragment's watermark passed its end), in window order, fire(previous,
// current) decides from the previous window's value and this one's. A
// window without any event has the algebra's zero value. For a rising edge
// over a threshold:
//
//	flows.Alert(v, "crowded", func(prev, cur int64) bool { return prev <= limit && cur > limit })
//
// Engines evaluate alerts on the spliced view and write each alert and the
// evaluation's progress in one durable step, so an alert is raised once
// per crossing across crashes and restarts (for windows whose values the
// replay reproduces: no allowed lateness, no events too late). In a
// cluster one node evaluates them and every node lists them, each once,
// across the failure of that node (see package actor).
func Alert[Out any](v WindowedView[Out], name string, fire func(prev, cur Out) bool) {
	flowcore.Alert[Out](v, name, fire)
}

// AlertRecord is one raised alert.
//
//	type AlertRecord struct {
//		Alert    string    `json:"alert"`
//		View     string    `json:"view"`
//		Start    time.Time `json:"start"`
//		End      time.Time `json:"end"`
//		Value    any       `json:"value"`
//		Previous any       `json:"previous"`
//		Raised   time.Time `json:"raised"` // processing time of the evaluation
//	}
type AlertRecord = flowcore.AlertRecord
