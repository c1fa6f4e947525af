// Package actor runs a flow's readers and fragments as protoactor-go actors.
//
// A reader actor owns one source partition: it polls the flows.Reader,
// sends each fragment its pending records as one batch message, and keeps at
// most Credits unacknowledged batches in flight per fragment (protoactor's
// mailboxes are unbounded; the bound is ours). A full batch is sent at once;
// a partial one after BatchDelay. When a fragment is out of credits the
// reader stops reading until it acknowledges: back-pressure reaches the
// source.
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
// The engine owns every goroutine it starts (the actor system, the ticker,
// retry timers) and Stop waits for them.
package actor
