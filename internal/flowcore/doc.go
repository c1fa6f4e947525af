// Package flowcore implements flows and holds what only engines use. A
// Flow is a typed graph of streams from sources through stateless
// operators (Map, Filter, FlatMap), keys (KeyBy), keyed stateful operators
// (Reduce, Aggregate, Count, Process, WindowAggregate, SessionAggregate) to
// sinks and views. Any stream can be keyed, any number of times: a
// source's, or one that a stateful operator makes (Process's Out, a
// table's Updates, window Results).
//
// Users see this package through flows, which aliases its user types and
// forwards its user functions (flows/doc.go says why aliases, not a split
// along an interface); everything else exported here is plumbing for the
// packages that run flows — actor, cluster, recovery, sim, flowstest,
// bench — and internal keeps it out of users' reach. Compile is a
// function, not a method of Flow, so that flows.Flow shows only what a
// user calls.
//
// A flow is only a description. Compile validates it and compiles it into
// a Plan, which makes the two things an engine runs:
//
//   - a Reader per source partition: it reads a batch of events, runs the
//     stateless operators before the first key, and routes (key, value,
//     offset) records into one pending batch per fragment;
//   - a Fragment per key group: it applies batches in order to its keyed
//     state, fires timers, feeds views and sinks, answers queries, and
//     sends the records it re-keys to the fragments that own their new
//     keys (exchanges, see exchange.go).
//
// Both are plain, single-threaded state machines: no goroutines, no clock
// (time comes in through SetNow and Advance), no network. One exception
// is read-only and safe at any time: QueryPublished answers a keyed view's
// ?top= from the best entries the fragment last published (Publish, which
// the driver calls between messages; topindex.go), so that such a query
// need not wait for a batch being applied. Publish also moves the
// fragment's generation, with which a table shown as a view stamps the
// keys that change (a window operator under a KeyedView or WindowView its
// state, an aggregate view its partial), so that a watch can ask which
// entries changed since (splice.OpChanges, viewchanges.go). The rules that
// decide which batches a fragment applies, and what happens after a
// failure, are recovery.Machine's; the actor package and the flowstest
// harness carry them out.
//
// # Channels and exchanges
//
// A fragment's inputs are channels: the sources, then the exchanges (Plan
// Channels). A source channel's partitions are the source's; an exchange's
// partitions are the upstream fragments, whose outputs on it carry a
// sequence number as source events carry an offset. A fragment keeps one
// offset vector over all of them. An exchange's outputs leave their
// fragment once a durable checkpoint covers them: a restored fragment
// never contradicts what it sent, however its inputs interleave on
// replay. Each stage therefore sees its input one checkpoint interval
// after the stage before made it (at the end of a bounded input, the
// engine checkpoints at once: Fragment.EndedUnreleased).
//
// # Outputs
//
// Every output has an OutputID fixed by its cause: the input event (its
// channel, partition and offset, and its record among the event's), or a
// timer or window of a key (the operator, the key, the time). Sinks are
// delivered at once (To) or once a durable checkpoint covers the outputs
// (To with OnCheckpoint): the first is exactly-once for an idempotent sink
// only when the outputs do not depend on how partitions interleave, the
// second always. Who calls Released decides when: the engine and the
// simulation run recovery's strong rule, which calls it once the
// checkpoint's standby copy is confirmed synced (at once without a
// standby), and the outputs on an exchange leave for the fragments
// downstream then too. Fragment.LagReleases, for a driver that replicates
// checkpoints without confirmations, delays both to the checkpoint after
// the one that covers them; no driver here uses it.
//
// # User functions that fail
//
// A user function that panics is caught at the event: Apply stops there
// and returns an *EventError naming the event. The fragment's state is
// then untrusted (the event may be half applied): the engine restores the
// fragment from its last checkpoint and replays, and after MaxAttempts
// skips the event and dead-letters it (recovery.Machine). Before the key
// (in readers), the event is dead-lettered and the batch goes on. A timer
// function that panics is dead-lettered: a timer fires once.
//
// # Event time
//
// A source given WithEventTime stamps its events and emits per-partition
// watermarks. Each channel has its own watermark in a fragment — the
// minimum over its partitions — and the stages it feeds follow it: their
// event-time timers fire and their windows (tumbling, sliding; merging
// sessions) close as it passes. An exchange carries the watermark of the
// stage it re-keys, as of the checkpoint that released its records, so a
// stage's timers and windows fire after the records before them arrived.
// Sliding windows with a merge (WindowAggregateMerge) and tumbling ones
// keep a key's events in slices that windows share, so an event costs one
// update whatever the overlap (windowslice.go); with an inverse
// (WindowAggregateInvertible) a window fires from the key's running total.
// Allowed lateness gives
// late refinements; later events go to TooLate.
// Restamp gives records after a key a new event time (a trip emitted
// when it is confirmed, dated by its departure): downstream they may
// arrive late, and windows take them within their allowed lateness.
// Process with InEventTimeOrder sees its events in event-time order
// between its timers, so its results depend on the events only; the
// events waiting for the watermark are checkpointed in segments (one
// entry for those added between two checkpoints, deleted once all are
// applied) beside the place of the last one applied. State TTL
// expires a key by the watermark, after its due timers, and never while it
// has timers of its own pending. A table (Count, Reduce, Aggregate)
// without a TTL checkpoints its keys in blocks of 32, two entries each:
// the block's values, rewritten when any of them changed, and its keys,
// rewritten only when the block got keys (tableblocks.go); with a TTL, one
// entry per key.
//
// The hot path is typed end to end with generics: events are never boxed
// and never encoded in-process; batches of records cross goroutines. A
// record carries the key hash its reader routed it by, and a table of
// string or integer keys finds the key by that hash (tableindex.go); a
// table nobody subscribed to applies a batch in one loop, and so does one
// whose updates are subscribed to when it is its stage's one subscriber,
// calling them per record (fragStage).
package flowcore
