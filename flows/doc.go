// Package flows is the user API: a Flow is a typed graph of streams from
// sources through stateless operators (Map, Filter, FlatMap), a key
// (KeyBy), keyed stateful operators (Reduce, Aggregate, Count, Process) to
// sinks and views.
//
// A flow is only a description. Plan validates it and compiles it into
// the two things an engine runs:
//
//   - a Reader per source partition: it reads a batch of events, runs the
//     stateless operators before the key, and routes (key, value, offset)
//     records into one pending batch per fragment;
//   - a Fragment per key group: it applies batches in order to its keyed
//     state, fires timers, feeds views and sinks, and answers queries.
//
// Both are plain, single-threaded state machines: no goroutines, no clock
// (time comes in through SetNow and Advance), no network. The actor package
// carries out what they return; the flowstest harness drives them directly.
// User functions run inside them; a panic in one is caught at the event,
// reported with its source partition and offset, and the rest of the batch
// goes on. The operators that consume an event run in declaration order: the
// ones before the failing function have seen the event, the ones after it
// have not.
//
// The hot path is typed end to end with generics: events are never boxed
// and never encoded in-process; batches of records cross goroutines.
//
// Event time: a source given WithEventTime stamps its events and emits
// per-partition watermarks; fragments take the minimum, fire event-time
// timers of Process functions and close the windows of WindowAggregate
// (tumbling, sliding) and SessionAggregate (merging sessions) as it passes;
// allowed lateness gives late refinements, and later events go to a TooLate
// output.
//
// A flow has one keyed stage per path from a source: re-keying the output of
// a stateful operator (a second shuffle) is not supported yet, and Validate
// says so.
package flows
