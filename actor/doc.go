// Package actor runs a flow's readers and fragments as protoactor-go actors.
//
// A reader actor owns one source partition: it polls the flowcore.Reader,
// sends each fragment its pending records as one batch message, and keeps at
// most Credits unacknowledged batches in flight per fragment (protoactor's
// mailboxes are unbounded; the bound is ours). A full batch is sent at once;
// a partial one after BatchDelay. When a fragment is out of credits the
// reader stops reading until it acknowledges: back-pressure reaches the
// source. These rules (and when a partition is finished, when credits
// that never came back are taken back, and up to where the source is
// committed) are recovery.Credits, a pure state machine the reader actor
// carries out.
//
// A fragment actor carries out one fragment's recovery.Machine: it hands
// it the batches, acknowledgements, ticks and checkpoint results that
// arrive, and does what its Ready says — acknowledge, ask readers or
// upstream fragments to send again, send exchange batches to other
// fragments (by pointer on this node, per destination node in wire.Batches
// otherwise), tell upstream fragments what its durable checkpoint covers,
// dead-letter, restore from the store. The rules live in the machine, so
// the flowstest harness checks the same ones. A user function that panics
// makes the machine restore the fragment from its last checkpoint and
// replay (after MaxAttempts the event is skipped and dead-lettered); other
// fragments never notice. A panic that escapes (a bug in the engine) makes
// protoactor restart the actor; the machine lives outside the actor and
// survives the restart.
//
// The machines run recovery's strong rule (MachineConfig.Confirm; the
// package doc of recovery says why). The writer sends each durable
// checkpoint to the fragment's standby, whose replica actor writes it and,
// once synced, confirms it to the owner (wire.Copied): only then, and once
// a majority of the placement's members knows of the checkpoint
// (recovery.Known: the owner and the standby, and members that answered
// the owner's wire.Settled with wire.Known once they synced it), does the
// machine release the checkpoint's exchange outputs and OnCheckpoint
// deliveries and take the next periodic checkpoint; a fragment without a
// standby confirms at once. A fragment whose inputs all ended while its
// exchange outputs wait for a checkpoint takes one at once rather than at
// the next interval, so that a bounded pipeline's later stages end a
// checkpoint write after the first instead of up to an interval later. A
// copy unconfirmed for RewindTimeout goes again whole (Recopy). A standby
// that has no copy yet is sent the last durable checkpoint whole at once:
// when a placement gives a kept fragment another standby (a checkpoint
// that waited for a dead standby's confirmation is confirmed by the new
// one), and when a fragment starts running from a copy (gained, handed
// off, or its own after a wait); FragmentStats.StandbyEpoch says when the
// standby confirmed one, after which the owner may die (toNewStandby).
// Acknowledgements of exchange batches carry how far
// the receiver applied the sender (wire.Acks.ends), and name their batch
// by a number that no earlier actor of the fragment in this process sent,
// nor, from a random start per process, most likely one of an earlier
// process at this address: a late acknowledgement meant for one of those
// is taken for no batch of this one (recovery.MachineConfig.FirstSend). A
// restored fragment that finds a downstream fragment ahead of its copy,
// or is told it is behind its own durable checkpoint (wire.Behind),
// refuses — it applies, checkpoints and releases nothing, counted in
// FragmentStats.Stale — and
// asks every node for a newer copy (wire.Fetch) every RewindTimeout until
// one offers it. A hand-off of an older lineage than this node's own copy
// is not taken over that copy, and it ends a wait for a hand-off, as a
// NoHandoff does, only if made under the placement the wait began under or
// a newer one (an answer to a HandoffAsk carries the ask's): one of an
// older placement, such as the answer to a request of the node's previous
// process that a peer delivers once the node listens again, may predate
// the sender's own run of the fragment, whose hand-off is still to come.
// A hand-off is judged by its lineage (wire.CheckpointChunk.Lineage,
// recovery.Machine.HandoffEpoch), even when the lineage took no checkpoint
// yet, and the own copy it replaces is kept aside (in memory) and offered
// to the fragment if the lineage's copy proves stale.
//
// The engine owns every goroutine it starts (the actor system, the workers
// that run its fragments', readers' and inbox's mailboxes, the ticker,
// retry timers) and Stop waits for them.
//
// # A paused node
//
// A node whose process was stopped (SIGSTOP, a paused VM, a stall of the
// whole process) long enough for the others to declare it dead has had its
// fragments placed elsewhere under placements it never applied: it
// computes epochs from the members' metadata, and its own view always
// includes itself, so it may rejoin under a placement identical to the one
// it last applied and, left alone, go on from the state it held when it
// stopped, releasing outputs the interim owner had already delivered.
// It notices the pause itself (pause.go): every fragment, before it
// handles a message, and the engine's ticker read a shared clock, and a
// gap longer than Config.PauseLimit between two readings (the least time
// after which the others may have taken its fragments over; cluster sets
// it) counts one pause, found by whichever reading comes first; Resumed
// counts one too (the membership refuted the node's death). The rule is
// recovery.PauseClock and recovery.Machine.FollowPauses, which the
// simulation (package sim) runs too; this package only guards the clock
// with a lock and pokes idle fragments. After a pause every fragment
// drops its in-memory state and pending outputs, releases nothing,
// restores its last durable checkpoint (once one being written lands)
// and waits for a hand-off (recovery.Machine.Resumed): the node
// that owned it meanwhile hands it back when it applies the placement
// that returns the fragment, and the fragment goes on from that
// checkpoint; without one within handoffWait (nobody took it over: the
// others had not declared the node dead yet), from its own. The alert
// owner drops the step it has not committed and catches up again, as at
// a placement change (recovery.AlertLog.Resumed); its older placement
// keeps it fenced until it applies the others'. Readers keep their state:
// their batches carry the old epoch and are fenced by the interim owners,
// and fragments rewind them where they need. What no reading can catch:
// a sink write already in flight when the process stopped, which the
// sink must refuse itself (the Kafka sink's transactions do, and its
// Writes watch for a pause: one that initialised its producer only after
// the stop would fence the new owner instead).
//
// # A node without a majority
//
// Fence (placement.go) is what cluster.Node calls when its node sees no
// majority of the last agreed membership (shard.Majority; cluster's doc,
// "Quorum"): every local fragment and reader stops at once — no final
// checkpoint, no hand-off, nothing released, no source read or committed —
// and the layout routes every fragment to the owner the others are assumed
// to give it (the same members without this node). The store keeps the
// checkpoints taken before; the others' lineages are newer (their
// placement epochs are higher) and replace them. When the node sees a
// majority again, the next Place finds every fragment it is given gained
// from a live owner and waits for its hand-off; when no newer placement
// came meanwhile, Resume starts the fragments and readers of the same one
// again from the local store, as after a crash, since no node can own
// them under that epoch but this one. The replica actor keeps
// taking standby copies meanwhile. The alert log is fenced too
// (recovery.AlertLog.Fence): as owner the node evaluates and commits
// nothing, as standby it refuses every prepare, and it catches up again
// before it evaluates once Place or Resume gives it the alerts back.
//
// # Queries
//
// A view query asks every fragment it needs: local fragments directly, on
// the asker's goroutine under the fragment's read lock (the actor holds
// the write lock for each message it handles, so a query waits for at most
// one message, never for the mailbox's queue), other nodes' through their
// query actors, at once. A ?top= query of a keyed view does not even wait
// for that message: the fragment publishes its view's best entries when it
// ends each message (flowcore.Fragment.Publish), and the query reads them
// without the lock, checking with a sequence count of the messages that
// the answer's offsets are those of what it read (readpath.go). A node that does not answer is probed; once
// it is unreachable (its remote refuses connections, or the membership
// declared it dead) the query stops waiting for it and asks its fragments'
// standbys, which answer from the live fragment if they have taken it over,
// else from their copy of its last replicated checkpoint, marked stale.
// What no one can answer fails the query at once with a
// splice.UnavailableError naming the fragments (a 503 with Retry-After).
// Within about half a second of a node's death, a query answers; it never
// waits for the transport's own timeouts, and no transport error reaches
// the user. Alerts never use standby copies. The rules and timings are in
// query.go.
//
// A snapshot read (splice.Cutter, cut.go) holds every reader of the
// flow, on every node, still at a batch boundary once every fragment
// applied exactly what it read: the readers' positions are one cut. In a
// flow that keys again, rounds of checkpoints then release every stage's
// outputs up to the cut until every stage applied them. See cut.go for
// the protocol, its lease and its cost.
//
// # Alerts
//
// A flow's alerts (flows.Alert) are evaluated on the spliced windowed views
// by one node: on a single node, its engine; in a cluster, the owner the
// placement gives the alerts (cluster.Place: the owner and the standby of a
// pseudo-fragment after the fragments and the source partitions, by the
// same rendezvous hashing, computed alike on every node), so that a
// crossing is raised once for the cluster, not once per node. Every node
// keeps a copy of the alert log (the records raised, numbered from 0, and
// every alert's state) and answers /v1/alerts from it. recovery.AlertLog
// holds the rules; alerts.go carries out its writes and messages.
//
// A step of the owner: it evaluates the windows completed since its last
// step (a query to every fragment) and sends the records raised and the
// alerts' new states to every other member, which stores them, synced, as
// the step it holds prepared (kept through a restart) and acknowledges;
// once its standby and, with the owner, a majority of the members did (in
// a cluster of three the standby is enough; an owner cut off with its
// standby goes on until its lease runs out, and must not commit a step the
// other side does not hold) the owner writes them with the states in one
// synced batch, announces them (a Warn log line, Config.OnAlert), and sends
// them to every node, which appends them to its copy. Fragments keep the
// windows the committed states have not evaluated yet (Fragment.SetHold):
// each node derives the hold from its copy. On a single node, or in a
// cluster of one, a step is written and announced at once, as before.
//
// When the owner dies, the placement moves the alerts to its standby, the
// next node in rendezvous order. A new owner evaluates nothing before it
// has asked every node of its placement what it holds, and has every
// answer: it appends the longest copy, then a step prepared with it that
// extends the copy. Where the owner died in a step:
//
//   - while evaluating, or before its standby held the step: nothing of it
//     was written or announced; the new owner evaluates those windows
//     again from the committed states and raises their crossings, once;
//   - after its standby held the step, before writing it: the new owner
//     takes the prepared step over and commits it as its own; it had not
//     been announced, and is now, once;
//   - after writing and announcing it, before the others had it: the
//     standby's prepared step is that step, taken over as above. The log
//     holds it once and every node lists it once, but the log line and
//     OnAlert see it again, on the new owner: across a failover they are
//     at-least-once (a window of one disk sync and one message), with the
//     alert and window as a record's identity, as sinks see outputs. (A
//     single node that crashes between its write and OnAlert does not call
//     it again after a restart: at-most-once, as before.)
//
// A node answers a new owner only once it applied that placement, and from
// then on refuses (fences) the steps of an older placement or of another
// owner: a stale owner (stopped, then resumed before it learned of the new
// placement) can no longer commit. A node whose copy is behind is sent what
// it lacks, with the states at the owner's version. All this holds while
// one of the owner and its standby survives each placement change, as the
// fragments' replicated checkpoints assume; if both die at once, the steps
// only they held are evaluated again by the next owner (raised a second
// time), and a node whose membership view lags by a settle interval may
// accept a stale owner's step (two owners at once), as it may a stale
// owner's batches.
package actor
