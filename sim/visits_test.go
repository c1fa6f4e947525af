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
		v := newVisitsFlow(seed, 1+int(seed%5), 1+int(seed%3))
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
func TestRandomVisitSchedules(t *testing.T) {
	n := *schedules
	if n == 0 {
		n = 100
		if raceDetector {
			n = 10
		}
	}
	if testing.Short() {
		n = min(n, 10)
	}
	runSchedules(t, n, "TestRandomVisitSchedules", newVisitsWorld)
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
//     completed. (The actor engine's reader does the same on a credit
//     check.) Cause: internal/flowcore/runtime.go, Reader.RewindFor.
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
//     next moves, which depends on batching. Cause: sim/frag.go askHandoff
//     and actor/replica.go handoffAsk answer NoHandoff whenever the node
//     does not own the fragment.
var fixedVisitSeeds = []uint64{409, 498, 885}

// TestFixedVisitSeeds replays the schedules fixedVisitSeeds name.
func TestFixedVisitSeeds(t *testing.T) {
	for _, seed := range fixedVisitSeeds {
		log, problems := runSchedule(seed, true, newVisitsWorld)
		if len(problems) > 0 {
			t.Errorf("seed %d is not exact (replay: go test ./sim -run TestRandomVisitSchedules -schedules 1 -seed %d):\n%s\nschedule:\n%s",
				seed, seed, strings.Join(problems, "\n"), strings.Join(log, "\n"))
		}
	}
}

// TestStandbyLeavingAfterItsOwnerCrashed replays seed 275 of the visits
// world (three nodes, two fragments, one partition):
//
//	push 553, run 1.975s, run 2.626s, push 531, end of input,
//	run 81ms, kill n2, run 2.794s, leave n3, run 1.307s,
//	slow-disk n1 115ms, faults duplicate=0.14 reorder=0.13 delay=5ms,
//	run 2.267s, slow-disk n1 1.307s, run 1.74s, slow-disk n1 1.042s,
//	start n4, heal, resume, restart
//
// It ends with "sink counts: 22 outputs delivered again with another
// value, first 0/e/2/0/141/0/0: c19=3 then late21=1". n2 owned both
// fragments and n3 kept their standby copies (epoch 3, up to checkpoint
// 3 at 4.3s, which confirmed the outputs the sinks got). n2 crashed at
// 4.68s, and n3 left at 7.48s, before the others had placed without n2.
// The placement at 9.24s gave both fragments to n1 with n3 leaving: their
// old owner was dead, so n1 waited for no hand-off and restored its own
// copies — it had none — and started both from nothing; n3 owned nothing,
// so it handed nothing off and left at 9.29s with the only copies. The
// new lineage replayed the input in other batches, and the count updates
// it released under the ids of the first one differ (a late hit's visit
// is emitted when the watermark next moves). With a source that trims
// what was committed, the events before the copies would be lost.
//
// Cause: a node leaves once it owns nothing (sim/node.go, node.tick; the
// engine's cluster.Node.handOff, cluster/placement.go, alike), whatever
// standby copies it keeps; and a fragment gained from a dead owner starts
// from the local copy only (shard.Changes: Handoff only from a live
// owner; actor/placement.go's Gain case, sim/node.go place). The fix to
// make: when a fragment's old owner is dead and its old standby is a live
// member (leaving or not) other than the new owner, the new owner waits
// for a hand-off from that standby (shard.Changes naming it as From, with
// the placement's standbys), and the standby hands its copy off (as
// forward does) and stays, as a leaver with a pending hand-off, until it
// was taken.
func TestStandbyLeavingAfterItsOwnerCrashed(t *testing.T) {
	log, problems := runSchedule(275, true, newVisitsWorld)
	if len(problems) > 0 {
		t.Errorf("seed 275 is not exact:\n%s\nschedule:\n%s", strings.Join(problems, "\n"), strings.Join(log, "\n"))
	}
}
