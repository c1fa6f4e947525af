// Package splice merges fragments' answers into views: the merge
// algebras, query evaluation, and the HTTP handlers of views.
//
// Evaluate asks a Gatherer (whatever runs the fragments: an actor.Engine, a
// test harness) and splices the answers; splice never knows the cluster.
// It is pure but for its HTTP layer: the handlers, the watch hub
// (watch.go: watchers of one request and interval share one evaluation,
// and one encoded diff to the next answer; for a keyed view and a
// windowed keyed view's range of windows, built from the entries the
// fragments changed since the last one, OpChanges, watchdelta.go and
// watchwindows.go; for an aggregate or a windowed view, from the
// partials of the fragments and windows that changed; a windowed keyed
// view's window=latest and after= watches evaluate the whole view) and
// EvaluateRead (read.go), which wait on the clock.
//
// # Consistency
//
// A read is Latest by default: each fragment answers from its state at
// that instant, and the answer's Cut gives, per source partition, the
// least offset the fragments applied (every event below it is in the
// answer). A Snapshot read asks a Cutter to hold its input still at one
// cut, evaluates, and checks that every fragment's answer reports exactly
// the cut's offsets (else it asks again, within the read's timeout): every
// fragment as of the same source offsets. A key lookup, which only the
// key's fragment answers, asks every fragment for its offsets too: after
// a fragment restored an older checkpoint, the readers stand behind the
// fragments that did not, and the restored fragment alone is at no cut. In a flow that keys again, the
// cut (Hold) also says, per exchange, how many outputs each upstream
// fragment made from that input (Cut.Exchanges), and each fragment's
// answer must report having applied exactly what its upstream fragments
// sent it of them: every stage is as of the same source offsets.
// ReadOptions.MinOffsets makes a read wait until its answer covers those
// offsets (read-your-writes; for a flow that keys again, a Staged
// gatherer, from a cut, since no fragment's offsets say that the later
// stages applied them); a read that cannot within its timeout fails with
// a CutTimeoutError (504). How a cut is had is the Cutter's business
// (actor/cut.go: readers stand still at a batch boundary, and checkpoints
// release each stage's outputs).
package splice
