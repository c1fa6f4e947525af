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
// A fragment actor owns one flows.Fragment: it judges each batch against its
// offset vector (recovery.Vector), applies it, acknowledges it, fires
// processing-time timers on ticks, and answers view queries between batches.
// A user function that panics is caught at the event by the flows runtime:
// the event goes to the dead-letter output with its partition and offset and
// the fragment goes on; other fragments never notice. A panic that escapes
// (a bug in the engine) makes protoactor restart the actor; the fragment's
// state lives outside the actor and survives the restart.
//
// The engine owns every goroutine it starts (the actor system, the ticker,
// retry timers) and Stop waits for them.
package actor
