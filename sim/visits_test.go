package sim_test

import (
	"strings"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/splice"
)

// TestVisitsInOneProcessEqualReference runs the visits flow in one
// process with no faults (flowstest) and checks every sink against the
// sequential reference: the reference and the flow agree before any
// cluster fault is thrown at them.
func TestVisitsInOneProcessEqualReference(t *testing.T) {
	seeds := uint64(12)
	if raceDetector {
		seeds = 4 // each costs ten times as much, and finds no other race
	}
	for seed := uint64(1); seed <= seeds; seed++ {
		v := newVisitsFlow(seed, 1+int(seed%5), 1+int(seed%3), false)
		d, err := flowstest.New(v.f, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		if err != nil {
			t.Fatal(err)
		}
		d.BatchSize = 16 + int(seed)*8
		for range 6 {
			v.push(300)
			if err := d.Drain(); err != nil {
				t.Fatal(err)
			}
		}
		v.end()
		for _, step := range []func() error{d.Settle, d.Checkpoint, d.Settle} {
			if err := step(); err != nil {
				t.Fatal(err)
			}
		}
		problems := v.outputProblems()
		for _, view := range []string{"open", "visits"} {
			if es, err := d.Entries(view, splice.Query{Limit: 1 << 20}); err != nil || len(es) > 0 {
				t.Errorf("seed %d: view %s: %d entries left (%v)", seed, view, len(es), err)
			}
		}
		if len(d.DeadLetters()) > 0 {
			t.Errorf("seed %d: dead letters %v", seed, d.DeadLetters())
		}
		want := v.reference()
		if len(want.visits) == 0 || len(want.windows) == 0 || len(want.counts) == 0 || v.lates == 0 {
			t.Errorf("seed %d: the reference is too thin: %d visits, %d windows, %d counts, %d late hits",
				seed, len(want.visits), len(want.windows), len(want.counts), v.lates)
		}
		if len(problems) > 0 {
			t.Errorf("seed %d (%d hits, jitter %v):\n%s", seed, len(v.hits), v.jitter, strings.Join(problems, "\n"))
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRandomVisitSchedules runs TestRandomSchedules' fault schedules over
// the visits world (visitsworld_test.go): skewed keys, event time, a
// Process with timers and a TTL, windows and a count with a TTL after
// exchanges, sinks by output id, and an input that ends while faults go
// on, a node crashing right at its end half the time. Every schedule must
// end exact: every sink holds the reference's outputs, one value per id.
//
// Known failures: lostCopySeeds (a fragment gained from a dead owner
// starts from nothing while every copy is on members that are down).
func TestRandomVisitSchedules(t *testing.T) {
	runSchedules(t, scheduleCount(t, 100), "TestRandomVisitSchedules", newVisitsWorld)
}

// The same schedules with a sink at once that refuses writes: the
// fragments hold the refused outputs and write them again (recovery's
// holdSinks), in every placement, hand-off and fault the schedules
// make.
func TestRandomRefusingVisitSchedules(t *testing.T) {
	runSchedules(t, scheduleCount(t, 30), "TestRandomRefusingVisitSchedules", newRefusingVisitsWorld)
}

// The same schedules over hits partitioned by user: fragments move in
// groups, each with its partition's reader (shard.Spec).
func TestRandomKeyedVisitSchedules(t *testing.T) {
	runSchedules(t, scheduleCount(t, 50), "TestRandomKeyedVisitSchedules", newKeyedVisitsWorld)
}

// fixedVisitSeeds are schedules of the visits world that ended inexact:
//
//   - 885 (four nodes, a fifth started; the input ends before the first
//     placement; a partition n2 n4 n5 | n1 n3 that a sixth node bridges)
//     delivered 31 of 45 visits, no window and 31 of 45 counts, and left
//     22 counts in their view: fragment 6 (n5) never learned that
//     partition hits/2 had ended. The reader's only batch to it that
//     counted — an empty one at the reader's position, 33, the end,
//     saying where it starts and that it is done — was cut by the
//     partition. When its credit expired, Credits.Expire named 33, the
//     position, and Reader.RewindFor(-1, 33) neither rewound nor reminded
//     any fragment (Remind(-1) does nothing), so the batch was never sent
//     again and fragment 6's watermark, and every stage's after it, never
//     completed (the actor engine's reader did the same on a credit
//     check), until Reader.RewindFor(-1, position) reminded every
//     fragment (internal/flowcore/runtime.go).
//   - 409 (three nodes; a full disk, a leave, the new node killed at the
//     end of the input) and 498 (two nodes; a one-way cut, message loss,
//     a kill) delivered count updates of two histories: "sink counts: 14
//     outputs delivered again with another value, first 0/e/2/0/124/0/0:
//     c19=2 then late24=1" (498: 246, c27=3 then late18=1). A node that
//     had owned fragments, and was fenced (409: n3, which had taken n2's
//     hand-offs) or crashed and came back (498: n1, which had run
//     fragments 0 and 1 alone under epoch 3 and released their outputs),
//     was asked for their hand-off by their new owner, answered that it
//     had none since it owned them no longer — although its store held
//     their newest checkpoints — and the new owner started them from an
//     older lineage's copy (498) or from nothing (409). Nothing showed
//     them stale: their downstream stages restarted with them. The count
//     updates, whose ids are exchange positions, differ between the two
//     histories because a late hit's visit is emitted when the watermark
//     next moves, which depends on batching. sim/frag.go askHandoff and
//     actor/replica.go handoffAsk answered none whenever the node did not
//     own the fragment, until they handed off the copy the node keeps.
//   - 2403 (two nodes, a third started; kills, message loss): n1 handed
//     fragments 0, 1 and 2 to n3, whose confirmation of 0 and 1 never
//     came back (n3 crashed at the end of the input), so n1 still counted
//     them as hand-offs pending. After the restarts n2, given 0 and 1,
//     asked n1 for their hand-off, and the simulation's askHandoff
//     ignored the ask while one was pending, where the engine's
//     handoffAsk answers it: n2 waited 10 s and started from its own copy
//     of an older lineage ("sink counts: 194 outputs delivered again with
//     another value, first 2/e/2/2/12/0/0: c04=3 then late20=1"), until
//     the simulation answered as the engine does.
//   - 275, 1361 and 2037: a fragment gained from a dead owner started
//     from the gaining node's own copy — an older one, or none — while a
//     newer copy, whose outputs the sinks had, was on another live node;
//     the new lineage replayed the input in other batches and released
//     count updates under the old one's ids with other values (a late
//     hit's visit is emitted when the watermark next moves, which depends
//     on batching). 275 (three nodes, two fragments): n2 owned both, n3
//     kept their copies; n2 crashed at 4.68s and n3 started to leave at
//     7.48s, before the others placed without n2; the placement at 9.24s
//     gave both to n1, which had no copy and started from nothing, and n3,
//     owning nothing, left at 9.29s with the only copies ("sink counts: 22
//     outputs delivered again with another value, first 0/e/2/0/141/0/0:
//     c19=3 then late21=1"). 2037 the same, three nodes. 1361: n3 joined
//     and became the standby of n2's fragments but fenced their first copy
//     (it had not placed yet); n2 crashed, and n3, their new owner,
//     started both from nothing beside n1's copies ("84 outputs"). Since:
//     a fragment gained from a dead owner gathers the copies of every live
//     member, leaving ones included, and starts from the newest lineage
//     among them and its own (recovery.Gather; shard.Change.Orphaned); a
//     leaving member hands its copy of such a fragment off unasked and
//     stays until that is confirmed; and a hand-off that comes before its
//     placement is confirmed once written, which it was not (a leaver
//     stayed its whole 15 s: the scenario leave_mid_stream ended exact
//     after 14.25 s, now 2.25 s).
//   - 1123 and 2383: a fragment gained from a dead owner started from
//     nothing while no live member kept a copy, and the copies came back
//     later; the new lineage released count updates under the old one's
//     ids with other values. 1123 (three nodes): n3 (the standby)
//     crashed at 3.99s and n2 (the owner) at 7.16s, before the placement
//     without n3 could give them a new standby; n1, with a majority of
//     the agreed n1 n2 (the lowest member of an even split), started both
//     fragments from nothing ("sink counts: 50 outputs delivered again
//     with another value, first 0/e/2/0/6/0/0: c20=1 then late7=1").
//     2383 (four nodes, two fragments): a partition n1 n3 | n2 n4 left
//     both fragments' owners and standbys (n2 and n4, each the other's)
//     on the side without the lowest member; n3, then n1 alone while n3
//     was paused, started both from nothing, and n2's and n4's copies
//     came back after the heal ("224 outputs"). A node's own placement
//     history could not tell: in 1123 the survivor was the owner's
//     standby in the last placement, named after the real standby had
//     died, and never got a copy. Since: every node knows the newest
//     checkpoint each fragment settled (recovery.Settled; an owner tells
//     every member when one settles, and every node tells the others all
//     it knows at each placement), and a fragment that would start from
//     a copy older than that stays unavailable and gathers again until a
//     member that keeps one is back.
//   - 3669 (five nodes, a sixth started; two leaves, kills, a full disk):
//     with that rule, fragment 4 waited for good. Its owner n4 was told
//     to leave, was fenced (no majority) while its gather ran, and left
//     as soon as it saw a majority again: fenced, it owned nothing, its
//     placement was over live members, and it kept the fragment's newest
//     copy, which its standby n2, gone in an earlier leave, had had too.
//     A leaving node now leaves only once it applies a placement (it is
//     not fenced), and hands such copies over first (cluster.Node's
//     handOff).
//   - 8311 (five nodes and a sixth; partitions, slow disks): a partition
//     n1 n3 n4 n5 | n2 n6 left fragment 5's owner n6 and its standby n2
//     on the minority side. For the 1.4 s until their lease ran out they
//     went on, and settled two checkpoints whose news reached no member
//     of the majority. n4 then took the fragment over, gathered, found
//     no copy and knew of no settled checkpoint, and started it from
//     nothing ("sink counts: 12 outputs delivered again with another
//     value, first 5/e/2/5/18/0/0: c21=4 then late10=1"). Since: an owner
//     releases a checkpoint only once a majority of its placement's
//     members knows of it (recovery.Known), so a side that owns the
//     fragment later holds a member that tells its gather.
//   - 6345 (two nodes, then three more started): every node of the
//     first cluster went down (n2 left, n1 was killed, n3's disk filled),
//     and n4 and n5, started after with each other as seeds, formed a
//     cluster of their own and started both fragments from nothing under
//     placement 2. When n1 and n3 came back, the two histories met: the
//     old one's settled checkpoints were newer than every copy of the
//     new one, and a fragment waited for good. A node that joined now
//     places only once a member that applied a placement, or the node
//     that began the cluster, heard it (node.seeded; cluster.Node's
//     settle).
//   - 10488 (two nodes, a third started; kills, a full disk): n2 owned
//     both fragments and was killed; n3, started after, took them over
//     from n1's standby copies under placement 5 and released their
//     outputs. Then n1 was killed and n3's disk filled, and all three
//     restarted at once. n2 placed first, saw no member running, and
//     started both fragments from its own copies of placement 2, as a
//     cluster that starts did; it knew of no newer settled checkpoint
//     (the news went to placement 5's members, who pass it on only once
//     they place). Count updates came again with other values. A
//     restarted node's first placement that finds no member running now
//     gathers the live members' copies of every fragment it gains
//     (node.place's cold; actor.ClusterConfig.ColdStart).
//   - 19205 (five nodes; partitions, kills): n4, restarted, gained
//     fragment 0 at its first placement and waited for the hand-off of
//     n1, which the layout over the running members named its old owner.
//     n1 had none, and knew of no newer settled checkpoint. While the
//     fragment waited, it answered a downstream fragment's request with
//     its own copy's outputs, of an older lineage than the one a majority
//     ran meanwhile; once the news of that lineage came, it took it over,
//     and the outputs downstream contradicted it: the fragment waited for
//     a newer copy for good. A waiting fragment answers no request now
//     (recovery.Machine.Resend), and one whose old owner has none to hand
//     off gathers the live members' copies if it keeps one of its own
//     (noHandoff); either alone makes the seed pass.
//   - 20409 (two nodes, a third started; a partition, slow disks, a full
//     disk, a kill): n2, fenced while a checkpoint of fragments 0, 1, 4
//     and 5 was written but not yet synced, placed again, restored that
//     checkpoint from its store and waited for a hand-off. Waiting, it
//     answered a downstream fragment's request with the checkpoint's
//     outputs. n2 was killed, the unsynced checkpoint was gone, and the
//     fragments restarted from nothing behind what fragment 2 applied:
//     they waited for a newer copy for good. A waiting fragment answers
//     no request now.
//   - 24836 (three nodes; a partition, duplicated and reordered
//     messages): fragment 3 asked n2's reader to replay partition hits/1
//     from 0, the reader had sent up to 595, and the replay came in
//     parts, reordered: 512–595 first (dropped as a gap), then 0–256 and
//     256–512. The first part kept the wait on, the second ended it at
//     512, and nothing asked for the rest. The wait keeps how far the
//     sender had sent (recovery.Machine.Step, beyond).
//   - 32097 (three nodes, two more started; a partition, a pause, a kill):
//     n4, new, asked n3, which the layout over the running members named
//     as the old owner of both fragments, for their hand-off. n3, fenced
//     since placement 3, owned neither but kept copies from then, and
//     handed those off when asked; n4 started both fragments from them
//     while n1 kept the newer copies of placement 4, whose outputs were
//     released: 22 count updates came again with other values. Such a
//     copy now starts a gather of the live members' copies (askedCopy;
//     wire.CheckpointChunk.asked).
//   - 22890 (three nodes; two kills, two restarts, partitions): n2 alone
//     (placement 5, [n2]) settled checkpoints of fragments 0 and 1. n1,
//     restarted, joined it (placement 6, [n1 n2]), and was cut off from
//     it before n2's news reached it. Half of two with the lowest member,
//     n1 placed alone and started both fragments from nothing; n2 then
//     waited for good for a copy as new as its settled ones. A side now
//     needs a member caught up with what was settled before its placement,
//     or majorities of the memberships before it too
//     (shard.Agreement.Quorum): neither side goes on until the heal.
//     Checking only the membership just before was not enough, and asking
//     its members to have caught up with the one before that stalled
//     1123, 3669 and 5068 for good after a placement no member caught up
//     with; graceful leavers must stay until the others caught up with a
//     placement without them (count world seed 7368).
//   - 1099, 5068, 6779 and 7390 ended not converged under the first
//     forms of that rule: 1099 and 7390 lost a leaver's report before it
//     left (reports are now told again to the members that gossip they
//     have not caught up, and a leaver stays until they have); 5068 after
//     a placement no member caught up with; 6779 waited for a standby
//     copy a crash had lost, which the standby had already told as
//     settled (it now notes a copy only once it is durable).
//   - 38150 (five nodes, one partition, messages dropped and
//     duplicated) delivered 393 of 411 visits: the reader sent fragment 1
//     its last three batches, the network duplicated the first and lost
//     the last, and the duplicate's acknowledgement returned the lost
//     batch's credit. Nothing was in flight, the partition finished, and
//     fragment 1 never had its last 55 hits. An acknowledgement now names
//     its batch (recovery.Credits.Ack, wire.Acks.starts), and a second
//     one of the same batch returns no credit.
//   - 36115 (four nodes; a pause, a kill, a slow disk) did not converge:
//     n2, on a slow disk, was fenced while a checkpoint of fragment 1 was
//     being written. The fence dropped the write unsynced, the next
//     placement restored the fragment from it, and its outputs reached
//     fragment 0; a crash then lost it, and fragment 1 waited for good for
//     a copy as new as what fragment 0 had applied. The fence now syncs
//     the write first, as the engine's Fence commits what was queued.
//   - 53505 (two nodes; one left, a third started, the last original
//     killed at the end of the input and restarted, a fourth started)
//     delivered 598 count updates again with other values: the fourth
//     node placed while no member ran, as a cluster's first start, and
//     started both fragments from nothing beside the restarted node's
//     copies. A first placement that finds no member running now gathers
//     the live members' copies if the cluster placed before — this node
//     did, or a member gossips it did — (cluster.Node's ColdStart too).
//   - 84150 (four nodes, a fifth started; messages dropped, a leave, a
//     long pause) ended not converged: n2 left and handed fragment 5 to
//     n4, which was paused for 2.3 s right after, fenced itself once back,
//     and gained its fragments again at the next placement, with new
//     machines. Fragment 1, which n5 took from n2 at the leave, had not
//     heard from fragment 2 on n4 since (the probe was dropped): it had
//     answered the probes of fragment 5's machine of before the pause
//     "unknown", and answered them again with its ends once fragment 2's
//     new machine probed it. The new machine of fragment 5 numbered its
//     sends from 1 again and took the answer on channel 2 (93) for its
//     own batch of that number on channel 1 (covered up to 87): "fragment
//     4 applied them up to 93". It found its copy stale — the newest
//     there was, which no fetch could better — and waited for good. A
//     fragment's next machine on a node now numbers its sends past every
//     earlier one's (recovery.MachineConfig.FirstSend).
//   - 123884 (two nodes; a kill and a restart, messages dropped, a leave)
//     did not converge: n2, restarted, gained fragment 4 with no copy of
//     its own and gathered the members' copies just as n1 began to leave;
//     n1's answer was dropped. The gather ended a hand-off wait later with
//     no answer, and the fragment lacking a copy gathered again only a
//     hand-off wait after that, by when n1, which stays 5 s past the wait,
//     was gone with the only copy. A gather a member left unanswered is
//     now followed by another after a second (LostAnswerWait, the
//     engine's lostAnswerWait).
var fixedVisitSeeds = []uint64{275, 409, 498, 885, 1099, 1123, 1361, 2037, 2383, 2403, 3669, 5068, 6779, 7390, 8311, 6345, 10488,
	19205, 20409, 22890, 24836, 32097, 36115, 38150, 53505, 84150, 123884}

// TestFixedVisitSeeds replays the schedules fixedVisitSeeds name.
func TestFixedVisitSeeds(t *testing.T) { replayVisitSeeds(t, fixedVisitSeeds) }

// replayVisitSeeds runs the visits world's schedules of seeds and fails
// for each that does not end exact.
func replayVisitSeeds(t *testing.T, seeds []uint64) {
	t.Helper()
	for _, seed := range seeds {
		log, problems := runSchedule(seed, true, newVisitsWorld)
		if len(problems) > 0 {
			t.Errorf("seed %d is not exact (replay: go test ./sim -run TestRandomVisitSchedules -schedules 1 -seed %d):\n%s\nschedule:\n%s",
				seed, seed, strings.Join(problems, "\n"), strings.Join(log, "\n"))
		}
	}
}
