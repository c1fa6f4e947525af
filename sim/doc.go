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
//   - when a node places, fences and resumes is decided by its
//     shard.Follower, the rule cluster.Node follows: a placement once the
//     member list and epoch stood still (the lease longer without a member
//     that died), a fence at once when no majority hears the node, and
//     back from a fence the old placement resumed (actor.Engine.Resume) or
//     a newer one applied;
//   - placement is the flow's layout over a node's live members
//     (flowcore.Plan.LayoutSpec, as cluster.Place lays it out: keyed
//     sources' partitions beside their fragments), and a change
//     is carried out from shard.Changes, the plan actor.Engine.Place
//     carries out too: kept fragments learn the epoch, lost ones take a
//     final checkpoint and are handed off, gained ones restore their
//     newest local copy or wait for a live owner's hand-off (judged by
//     its lineage: recovery.Machine.HandoffEpoch), and ones gained from
//     a dead owner gather the live members' copies (recovery.Gather);
//     no fragment starts from a copy older than the newest checkpoint it
//     settled, which every node hears of (recovery.Settled), and a
//     confirmed checkpoint is released only once a majority of the
//     placement's members knows of it (recovery.Known), as the engine's
//     settled.go and fragment actor;
//   - a node reads its pause clock (recovery.PauseClock) on every tick
//     and before any fragment handles a message, as the engine does, and
//     after a gap longer than Config.PauseLimit every fragment drops its
//     state and waits for a hand-off (recovery.Machine.FollowPauses);
//   - checkpoints go to a real pebble store per node (recovery.Store on
//     pebble's crashable in-memory file system) and are replicated to the
//     fragment's standby, which refuses copies from a stale owner and
//     confirms the others once synced: the machines run recovery's strong
//     rule (MachineConfig.Confirm), and a fragment that finds its copy
//     stale fetches a newer one from every other member. The actor engine
//     runs the same rule over protoactor remote (standby confirmations,
//     receivers' ends in acknowledgements, fetches and offers between
//     replica actors); its tests on real processes lose an owner and its
//     standby at once (actor/confirm_test.go).
//
// Membership is modelled: each node hears every other's heartbeats and
// declares a node dead after Config.Detect unheard; on a change it raises
// its epoch past every epoch it has seen, and the placement epoch is the
// largest epoch of a live member — the rules of cluster.Membership over
// memberlist. A partition therefore makes each side declare the other
// dead, as gossip would.
//
// Quorum. Only a side that holds a majority of the last agreed membership
// places and owns (shard.Agreement.Quorum, the rule cluster.Node applies
// too; until a member of the side caught up with what was settled before
// the last placement, a majority of the memberships before it as well:
// each node tells every other all it knows once it applies a placement,
// and counts who told it, shard.CatchUp, as the engine does): the
// agreed membership is the member list of the last placement applied (the
// newest a node knows of, its own or one a peer's heartbeat carries, by
// placement epoch; a graceful leaver is not in it), and of an even split
// the half that holds its lowest-ordered member goes on. A node counts the
// members that hear it, not those it hears: every heartbeat says when the
// sender last heard each node, and a member counts while it confirmed one
// of this node's heartbeats within Detect − Heartbeat — before the others
// may declare it dead, so a node cut off, even one way, learns that it
// lost its majority before the majority can place its fragments
// elsewhere. It then stops every fragment and reader at once, keeping its
// store (fence): nothing is released, checkpointed or read on that side,
// and what its fragments held is dropped; as actor.Engine.Fence, it takes
// the others to own everything under its last epoch. When it sees a
// majority again and the view stood still for the Follower's Resume
// time, it resumes its old placement from its own checkpoints if the
// epoch did not move (nobody else can own its fragments under it), or
// applies the newer one, waiting for the hand-offs of what it gains.
// This is consistency over availability: a
// side without a majority (a minority, the half of an even split without
// the lowest member, or the last nodes after more than half died at once)
// processes nothing until the others are back: a user of that side sees
// its views stand still or unavailable, never two histories that later
// contradict each other. Before the rule both sides
// placed alone, and with an exchange fragments downstream applied the
// outputs of two lineages of a fragment (TestRandomSchedules names the
// seeds). A node that joins a running cluster (the others are its seeds)
// counts as having a majority only once a peer heard it, until it applies
// a placement: alone, with no agreed membership of its own, it would start
// every fragment anew beside the lineage of nodes that are only down (a
// real node's Join fails while no seed answers). What the rule does not
// cover: a member that leaves gracefully
// while cut off from the others stays in their agreed membership.
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
// themselves (their failures appear as the faults above; a node that the
// others declared dead learns it from its lapsed majority, not from
// memberlist's refutation), the engine's
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
