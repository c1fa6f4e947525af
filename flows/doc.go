// Package flows is what a flow's author writes against: a Flow is a typed
// graph of streams from sources (From) through stateless operators (Map,
// Filter, FlatMap), keys (KeyBy), keyed stateful operators (Reduce,
// Aggregate, Count, Process, WindowAggregate, WindowAggregateMerge,
// WindowAggregateInvertible, SessionAggregate) to sinks (To) and views (Table.View, Processed.View,
// Windowed.KeyedView, AggregateView, WindowView) and alerts (Alert). Any
// stream can be keyed, any number of times: a source's, or one that a
// stateful operator makes (Processed.Out, Table.Updates, Windowed.Results).
//
// A flow is only a description. An engine runs it: package cluster on one
// node or many (cluster.Run, or cluster.Config's Flow), package flowstest
// in a test, with a virtual clock and injected faults. Validate reports
// every problem of a flow at once, before anything runs.
//
// # Keys and fragments
//
// The state of a flow is split into a fixed number of fragments (key
// groups, WithFragments; default DefaultFragments): a key's state lives in
// one fragment, which one node owns at a time, and every fragment
// checkpoints and recovers on its own. A view answers from all fragments
// spliced: a keyed view is the union of their keys, an aggregate view
// merges their partials with the view's algebra (package splice).
//
// A key's fragment is its hash mod the fragments. A source whose producers
// put each key in partition KeyPartition(key, partitions) says so with
// WithKeyedPartitions: in a cluster each partition is then read on the
// node that owns its keys' fragments, and its records cross no nodes.
//
// # Outputs
//
// Every output has an OutputID fixed by its cause: the input event (its
// channel, partition and offset, and its record among the event's), or a
// timer or window of a key (the operator, the key, the time). A replay
// after a crash emits the same outputs with the same ids. Sinks get them
// at once (To) or once a durable checkpoint covers them (To with
// OnCheckpoint): the first is exactly-once for an idempotent sink only
// when the outputs do not depend on how partitions interleave, the second
// always.
//
// # User functions that fail
//
// A user function that panics on an event after KeyBy makes the engine
// restore the event's fragment from its last checkpoint and replay; after
// a few attempts the event is skipped and dead-lettered (WithDeadLetters).
// Before the key the event is dead-lettered at once and the batch goes on.
// A timer function that panics is dead-lettered: a timer fires once.
// Malformed source records (ReadBatch.Bad) are dead letters too.
//
// # Event time
//
// A source given WithEventTime stamps its events and emits per-partition
// watermarks; each stage follows its input's watermark, the smallest over
// the input's partitions.
// Event-time timers fire and windows (Tumbling, Sliding, Global; merging
// sessions) close as the watermark passes them. AllowedLateness gives late
// refinements; later events go to Windowed.TooLate, never dropped
// silently. Restamp dates the records after a key anew (a trip emitted
// when it is confirmed, dated by its departure). Process with
// InEventTimeOrder sees its events in event-time order between its
// timers, so that its results depend on the events only. WithStateTTL
// expires a key's state by the watermark.
//
// # Sources, sinks and codecs
//
// A Source is partitioned and replayable from any offset it produced (its
// PartitionReader fills a ReadBatch); a reader that also implements
// Committer is told how far every fragment's checkpoint covers its
// partition. A Sink receives batches of Output; a RestoredSink is told
// when a fragment delivers outputs again after a restore. Events, keys
// and state are encoded only for checkpoints and between nodes, with
// DefaultCodec and DefaultKeyCodec unless WithEventCodec, WithKeyCodec or
// WithStateCodec says otherwise; the codec options are typed, and one of
// the wrong type fails Validate.
//
// # This package and the engine
//
// flows holds only what a flow's author calls. The implementation is
// internal/flowcore, which also holds what only engines use (the compiled
// Plan, the Reader and Fragment state machines, batches and their wire
// form, deltas, the alert evaluator) for actor, cluster, recovery, sim and
// flowstest. The types here are aliases of flowcore's (type Stream[T any]
// = flowcore.Stream[T]) and the functions forward to it: a value crosses
// with no conversion and the event path is flowcore's alone, while the
// operators and the machines that run them stay one piece — an operator's
// node in the graph is the code that applies it in a fragment, and
// splitting the two would put an interface call on every event. Each type's
// comment lists its methods, since go doc shows an alias without them.
//
// Like flowcore, flows is pure: no goroutines, no clock, no network.
package flows
