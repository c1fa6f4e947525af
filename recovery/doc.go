// Package recovery holds the rules of exactly-once state and the store
// that keeps it.
//
//   - Machine is one fragment's rules as a pure state machine (fencing,
//     admission against the offset vector, gaps and rewinds, failures,
//     restores and backoff, hand-off waits, exchange outputs and their
//     trims, checkpoints and their durability). It does no I/O: the actor
//     package and flowstest carry out its Ready actions.
//   - Credits is a source partition reader's flow control as a pure state
//     machine: credits per fragment, blocking, taking back credits that
//     never came back, when the partition is finished, and up to where the
//     source may be committed.
//   - PauseClock is a node's rule for noticing that its process stood
//     still long enough for the others to take its fragments over, and
//     Machine.FollowPauses (AlertLog.FollowPauses) what a fragment (the
//     alert log) does about it: the engine and the simulation both run it.
//   - Vector is a fragment's offset vector over its input channels (source
//     partitions and exchange partitions) and Admit its rule for a batch.
//   - Take, Restore and Store write and read checkpoints in pebble (through
//     a vfs.FS, so that tests crash it): each checkpoint is one atomic
//     batch of the state changed since the last one, with its vector;
//     checkpoints queued together share one disk sync.
//   - AlertLog is, the same way, the rules of a flow's alert log in a
//     cluster: one node evaluates the alerts, prepares each step with its
//     standby before it writes and announces it, and every node keeps a
//     copy; a new owner catches up from every node before it evaluates, so
//     that no crossing is raised twice or skipped across a failover.
package recovery
