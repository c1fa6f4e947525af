// Package sim runs a flow on a simulated cluster: N nodes in one process,
// over an in-memory network and a virtual clock, with every random choice
// drawn from one seed, so that a run — faults included — replays
// identically from its seed.
//
// What runs is the engine's own logic, not a model of it:
//   - every fragment is a recovery.Machine (fencing by placement epoch,
//     admission, gaps and rewinds, retries, hand-off waits, exchange
//     resends and trims) and every reader's flow control a
//     recovery.Credits, carried out as the actor package's fragment and
//     reader actors carry them out;
//   - placement is shard.LayOut over a node's live members, and a change
//     is carried out from shard.Changes, the plan actor.Engine.Place
//     carries out too: kept fragments learn the epoch, lost ones take a
//     final checkpoint and are handed off, gained ones restore their
//     newest local copy or wait for a live owner's hand-off;
//   - a node reads its pause clock (recovery.PauseClock) on every tick
//     and before any fragment handles a message, as the engine does, and
//     after a gap longer than Config.PauseLimit every fragment drops its
//     state and waits for a hand-off (recovery.Machine.FollowPauses);
//   - checkpoints go to a real pebble store per node (recovery.Store on
//     pebble's crashable in-memory file system) and are replicated to the
//     fragment's standby, which refuses copies from a stale owner and
//     confirms the others once synced: the machines run recovery's strong
//     rule (MachineConfig.Confirm), and a fragment that finds its copy
//     stale fetches a newer one from every other member. This is one place
//     where the simulation runs ahead of the engine: the actor engine does
//     not yet set Confirm (its wire messages carry no standby confirmation
//     and no receiver's end), so for flows with an exchange the engine
//     keeps the older rule (releases lagged by a checkpoint) and the
//     failovers that rule loses (both copies of the newest checkpoint lost
//     at once) are not yet covered there.
//
// Membership is modelled: each node hears every other's heartbeats and
// declares a node dead after Config.Detect unheard; on a change it raises
// its epoch past every epoch it has seen, and the placement epoch is the
// largest epoch of a live member — the rules of cluster.Membership over
// memberlist. A partition therefore makes each side declare the other
// dead and place alone, as gossip would.
//
// Faults: Kill (a crash: memory lost, the store keeps what was synced and
// a random part of the rest), Restart, Leave (graceful, with hand-offs),
// Partition and Cut (symmetric and one-way) and Heal, Pause and Resume
// (SIGSTOP: a zombie, until its pause clock shows the gap), DiskFull,
// SlowDisk, and the network's Faults: delay, loss, duplication and
// reordering of messages between nodes. On a slow disk every sync ends
// later, as the engine's group-commit writer answers later: fragments go
// on applying input while their checkpoints are written, standby copies
// are confirmed late, and a crash meanwhile tears the write. A full disk
// crashes its node at its next write: pebble treats a failed write-ahead
// log write as fatal (tried with pebble's errorfs: recovery's logger
// panics on pebble's Fatalf), so that is what a real node does too.
//
// What is not simulated: the protoactor transport and memberlist
// themselves (their failures appear as the faults above; so a node that
// ran on while the others declared it dead, on the far side of a
// partition, never learns of it as memberlist's refutation tells a real
// node, and keeps its fragments after the heal), the engine's
// group commit (each checkpoint is synced on its own: at once, or after
// a slow disk's delay; and a fragment that moves away writes its final
// checkpoint at once, not after the write in flight), source
// commits (recovery never starts from them), alerts and queries routed
// between nodes (Gather asks each fragment's owner directly).
//
// A Cluster is driven by one goroutine. Run moves the clock; everything
// due on the way — ticks, messages — runs in the order of its virtual
// time. The scenario files in testdata (run by TestScenarios, rewritten
// with -rewrite) and TestRandomSchedules show its use.
package sim
