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
//     checkpoints queued together share one disk sync. The store records
//     the layout of the flow that wrote them, and CheckLayout refuses a
//     flow of another.
//   - Strong productions (MachineConfig.Confirm) are how a pipeline stays
//     exact when a fragment restarts from a copy. A fragment's outputs on
//     an exchange depend on how its input partitions interleaved, which a
//     replay does not repeat; so what a fragment downstream applied must
//     never be newer than the copy the fragment restarts from. Three rules
//     make it so, all in the Machine:
//     (1) a checkpoint's outputs (exchanges, OnCheckpoint sinks) leave, and
//     upstream fragments learn what it covers of theirs (trims), only once
//     the standby confirms it holds the checkpoint synced (Copied; at once
//     without a standby), and the next checkpoint waits for that — state,
//     input position and outputs durable together in two places, as
//     MillWheel's strong productions and Kafka Streams' exactly-once
//     commits (there a replicated topic; here the standby's pebble);
//     (2) a fragment started from any copy asks every fragment downstream
//     where it is (the acknowledgement of its first batch carries the
//     receiver's end) and checkpoints nothing until all answered; one that
//     applied more than the copy holds proves it stale: the fragment
//     applies, checkpoints and releases nothing and fetches a newer copy
//     from the other nodes until one comes — it refuses, loudly, rather
//     than contradict what was applied. A downstream's answer counts only
//     once it has heard from every upstream since its own restore, since
//     its own copy may yet prove stale: until then it answers "unknown",
//     and once it has heard from all it answers those probes again with
//     its end (fragments that feed each other settle in one round trip,
//     not a timer's); (3) a downstream fragment that asks
//     for records its upstream no longer keeps (its own durable checkpoint
//     covered them) restored an older copy than its own: told so (Behind),
//     it stops and fetches the same way. Every start from a copy begins a
//     new lineage, numbered past those of older placements (epoch =
//     placement << 32 and up), so a hand-off or a fetched copy replaces a
//     node's own copy only if it is newer. A hand-off is judged by its
//     lineage even before the lineage took a checkpoint
//     (Machine.HandoffEpoch: it still verifies the copy it started from,
//     and upstream fragments may have verified against it); the own copy
//     it replaces stays with the node, offered to the fragment if the
//     lineage's copy proves stale.
//     Why not the alternative, deterministic replay from an order log of
//     the input interleaving: the log would have to be durable in two
//     places before outputs leave anyway (rule 1), and then the checkpoint
//     itself is; rules 2–3 catch what replication alone cannot (both
//     copies of the newest checkpoint lost at once) without logging every
//     batch. The cost is latency: a stage sees its input one standby round
//     trip after the checkpoint, and a start waits for its downstream
//     fragments' answers (a round trip; a RewindTimeout when one is away;
//     a tenth of it when an answer went astray: a probe to a fragment not
//     placed yet, or a replay that an upstream which had not placed yet
//     sent to the fragment's old owner, are asked again that soon).
//     A network partition must not let both sides own a fragment and
//     release outputs (when they met, one lineage would replace the other
//     and downstream fragments may have applied both): only a side with a
//     majority of the last agreed membership owns (shard.Majority, applied
//     by cluster.Node and by the simulation), and a side without one stops
//     its fragments and readers. A side stops only once its lease runs
//     out, and an owner cut off with its standby may settle checkpoints
//     until then: a confirmed checkpoint is released only once a majority
//     of the members knows of it (Known), so that the side that takes the
//     fragment over learns of it (Settled) and waits for the copy instead
//     of starting from an older one.
//     The actor engine and the simulation (package sim) both carry the
//     rules out: a standby confirms a copy once it is synced (wire.Copied),
//     a member says it knows of one once the news is synced (wire.Known),
//     acknowledgements of exchange batches carry the receiver's end
//     (wire.Acks) and name their batch by a number that no earlier
//     machine of the fragment at that address sent
//     (MachineConfig.FirstSend: an end taken for another batch's proves
//     or settles nothing), and a stale fragment asks every node for its
//     copy (wire.Fetch). A fragment without a standby (a single node, or a
//     cluster of one) confirms at once: durable here is all there is.
//     Fragment.LagReleases (Replicated without Confirm) is what a driver
//     that cannot confirm copies would have to fall back to; neither does.
//   - AlertLog is, the same way, the rules of a flow's alert log in a
//     cluster: one node evaluates the alerts, prepares each step with its
//     standby and a majority of the members (which store it, synced)
//     before it writes and announces it, and every node keeps a
//     copy; a new owner catches up from every node before it evaluates, so
//     that no crossing is raised twice or skipped across a failover.
package recovery
