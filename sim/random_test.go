package sim_test

import (
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/sim"
)

var (
	schedules = flag.Int("schedules", 0, "TestRandomSchedules: how many seeded fault schedules to run (0: 1,000, or 100 with the race detector on)")
	allFaults = flag.Bool("allfaults", true, "TestRandomSchedules: draw every fault for every flow (false: the draw before the majority rule, in which two-stage flows drew no partitions, cuts or pauses; fixedDrawnSeeds were found with it)")
	maxFail   = flag.Int("maxfail", 3, "TestRandomSchedules: stop after this many failing seeds")
	firstSeed = flag.Uint64("seed", 1, "TestRandomSchedules: the first seed (a failure names its seed: -schedules 1 -seed N replays it)")
)

// TestRandomSchedules runs seeded random fault schedules on simulated
// clusters while events stream in: nodes crash (with torn unsynced
// writes), restart, leave and join, disks fill up or get slow; the network loses,
// duplicates, delays and reorders messages and is cut one way or
// partitioned. After the faults stop (heal, restart), every schedule must
// end exact: the views equal a sequential count and the sink holds one
// output per event, never two values for one output id. A failure prints
// its seed and the schedule; the same seed replays it identically
// (TestReplayIsIdentical).
//
// Every schedule draws every fault, for one-stage and two-stage flows
// alike; -allfaults=false replays the draw used before the majority rule
// (below), in which two-stage flows drew no partitions, one-way cuts or
// pauses, because those were known failures: a split brain.
//
// The split brain, fixed: a partition, or a one-way cut that makes the
// others declare a node dead, or a long pause, let both sides own a
// fragment and release outputs; with no quorum each side placed alone, and
// when they met again one lineage replaced the other while fragments
// downstream had applied outputs of both (-allfaults failed 14 of seeds
// 1–1,000 so; 76 before strong productions,
// recovery.MachineConfig.Confirm, the pause rule and trim points kept in
// checkpoints). A node now owns only while the members of its last agreed
// membership that hear it hold a majority of it (shard.Majority, the lowest
// member breaking an even tie); one that loses it stops its fragments and
// readers before the majority can place them elsewhere, and joins again
// as a restarted node when it sees a majority (the package doc,
// "Quorum"). Those seeds are in fixedSeeds now. So is 3812 (the default
// draw then), the same two-lineage class without a partition: fragment 1's
// owner (n2, killed) and standby (n4, full disk) were down together, as
// was every copy of fragment 0; the one node left (n3) started both from
// nothing, and when n2 and n4 came back the old copies met the new
// lineage, which had passed the position check. n3 holds no majority now
// (its agreed membership was n2 n3 after n1 left: the even tie goes to
// n2): it waits for the others instead of starting a lineage.
//
// Known failures: none among seeds 1–6,000 with every fault drawn (make
// test runs the first 1,000; the 6,000 were run once, after the fix of
// 3950 below). What the schedules do not draw, because the rule does not cover
// it: a graceful leave while a link is cut (see the leave case in
// runSchedule). The others may never hear it, keep the leaver in their
// agreed membership and, with an even one whose lowest member left,
// stop for good: only an operator could take a member out of the agreed
// membership, and no command does yet.
//
// With the race detector on, the default is the first 100 seeds: they
// cover all but a few rare branches of the single-goroutine machines that
// the thousand cover, and the race detector sees the same concurrency
// (pebble's goroutines, schedules side by side) in each. make test runs
// the thousand again without it.
func TestRandomSchedules(t *testing.T) {
	runSchedules(t, scheduleCount(t, 1000), "TestRandomSchedules", newCountWorld)
}

// The same schedules over a source partitioned by the key: fragments move
// in groups, each with its partition's reader (shard.Spec).
func TestRandomKeyedSchedules(t *testing.T) {
	runSchedules(t, scheduleCount(t, 300), "TestRandomKeyedSchedules", newKeyedCountWorld)
}

// scheduleCount is how many schedules a random test runs: -schedules, or
// full, a tenth of it with the race detector on or -short.
func scheduleCount(t *testing.T, full int) int {
	n := *schedules
	if n == 0 {
		n = full
		if raceDetector {
			n = full / 10
			t.Logf("race detector on: %d schedules (make test runs %d without it)", n, full)
		}
	}
	if testing.Short() {
		n = min(n, full/10)
	}
	return n
}

// runSchedules runs the schedules of n seeds from -seed over the worlds mk
// makes and fails the test on every one that does not end exact, naming
// the test that replays it.
func runSchedules(t *testing.T, n int, test string, mk worldMaker) {
	// Schedules are independent clusters, each driven by one goroutine:
	// they run side by side, their reports in seed order.
	type result struct {
		log, problems []string
	}
	results := make([]chan result, n)
	for i := range results {
		results[i] = make(chan result, 1)
	}
	next := make(chan int)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				log, problems := runSchedule(*firstSeed+uint64(i), *allFaults, mk)
				results[i] <- result{log, problems}
			}
		}()
	}
	go func() {
		defer close(next)
		for i := range n {
			select {
			case next <- i:
			case <-stop:
				return
			}
		}
	}()
	defer wg.Wait()
	defer close(stop)
	failed := 0
	for i := range n {
		seed := *firstSeed + uint64(i)
		r := <-results[i]
		if testing.Verbose() {
			t.Logf("seed %d: %s", seed, r.log[len(r.log)-1])
		}
		if len(r.problems) > 0 {
			failed++
			t.Errorf("seed %d is not exact (replay: go test ./sim -run %s -schedules 1 -seed %d):\n%s\nschedule:\n%s",
				seed, test, seed, strings.Join(r.problems, "\n"), strings.Join(r.log, "\n"))
			if failed >= *maxFail {
				t.Errorf("stopped after %d failures", failed)
				return
			}
		}
	}
}

// fixedSeeds are seeds that failed with every fault drawn:
//   - 161, 344, 964 (owner and standby lost together), 426 (a node
//     restarted within the failure detection window), a full disk, and
//     their kin, until strong productions (recovery.MachineConfig.Confirm):
//     two-stage schedules whose fragments started again from copies older
//     than what their downstream fragments applied;
//   - 76 (a pause, a crash and slow disks), until exchanges kept their trim
//     points in their checkpoints: an upstream fragment restarted on the
//     crashed node resent a downstream one that had restored an older copy
//     the records after a hole, as if they followed;
//   - 1105 (one stage: a partition and a paused node), which lost events
//     until a reader sent every fragment that moved a batch at its
//     position (recovery.Credits.Moved);
//   - 88, 90, 129, 216, 300, 411, 519, 676, 684, 736, 845, 920, 924, 981
//     (two stages; a partition, a one-way cut or a long pause): a split
//     brain, both sides owning fragments and releasing outputs that
//     downstream fragments applied (miscounts, or not converged when a
//     fragment waited for a copy only the other lineage had), until a
//     node without a majority of its agreed membership stopped owning
//     (shard.Majority);
//   - 3950 (two stages, message loss, a leave) ended not converged: the
//     leaver's hand-off of a fragment was lost, and the leaver left at its
//     deadline just as the new owner's wait for the hand-off ended; that
//     owner's own copy was stale and the only newer one gone. A leaver
//     now stays past the new owners' wait (cluster.Node, Cluster.Leave);
//   - 6892 (two stages; a pause, two kills, a new node) ended not
//     converged: with n3 paused and n1 and n2 dead, the new node n4 heard
//     no peer, placed over itself alone (it had no agreed membership) and
//     started every fragment anew; once the others came back, their
//     fragments' own copies were older than what downstream fragments had
//     applied of the new lineage, and waited for a newer copy forever. A
//     node that joins a cluster now places only once a peer heard it, as
//     a real node's Join fails while no seed answers;
//   - 1833 (two stages; a kill, partitions, a new node, a restart) ended
//     with 445 events without an output once restored fragments asked
//     their upstreams again sooner: a fragment verified for good. A batch
//     it had answered while it waited for a hand-off was sent again from
//     records the receiver's confirmed checkpoint covered, which Resend
//     answers Behind, not with a batch, and the probe it waited on was
//     gone; a lost batch is now sent again from the receiver's trim point
//     (recovery.Machine.resendLost);
//   - 6458 (two stages; a pause, a slow disk, a new node) counted stage 2
//     wrong: with n2 paused, the new node n4 started fragments 0 and 1
//     from nothing (the node it asked had none to hand off), and fragment
//     0 verified against fragment 1's new, empty lineage and counted its
//     outputs anew. Fragment 1, still verifying, was handed back to n2
//     with no checkpoint of its lineage ("epoch 0"), and n2 kept its own
//     copy from before the pause, which had applied fragment 0's old
//     outputs up to 315, then applied the new ones from 315 on. A hand-off
//     is now judged by its lineage (recovery.Machine.HandoffEpoch), and a
//     node keeps the own copy it replaced aside for a fetch should the
//     lineage's copy prove stale (seed 7837 otherwise waited for good);
//   - 7368 (two stages; a kill, a pause, two leaves) ended not converged
//     under the first form of the catching-up rule (shard.CatchUp): n1,
//     leaving, owned nothing and left before the placement without it,
//     and n3, alone in that one, waited for n1's report for good. A
//     leaver now stays until it applied a placement without it and its
//     members caught up (cluster.Node.othersCaughtUp).
var fixedSeeds = []uint64{17, 51, 76, 88, 90, 97, 129, 161, 216, 265, 274, 300, 344, 350, 367, 377, 411, 426, 449, 519, 571,
	676, 684, 724, 736, 787, 801, 811, 845, 857, 909, 920, 924, 964, 981, 1105, 1833, 3950, 6458, 6892, 7368, 7837}

// fixedDrawnSeeds are seeds beyond the thousand make test runs that failed
// with the draw before the majority rule (-allfaults=false):
//   - 4934 (one stage: a partition, a pause, a full disk) lost 12 events
//     until a fragment asked a reader whose batch showed a gap for a
//     rewind even while a replay asked of whoever reads the partition was
//     under way (recovery.Machine's gap rule): after the heal the reader
//     its placement named answered at its end, and the reader that had
//     read further for its old owner never learned;
//   - 3296 (two stages) ended not converged because a node left while
//     the only other running one had a full disk: the hand-off crashed
//     it and the leaver was gone with the only copies. The schedules no
//     longer do that (see the leave case in runSchedule);
//   - 7979 (two stages) ended not converged: it filled the disks of both
//     its nodes, a node started later alone began every fragment anew,
//     and the old nodes came back with the older lineage. The schedules
//     fill a disk only while another running node's disk works;
//   - 3812 (two stages; disk full, leave, kill and restart) miscounted:
//     a lone node started fragments from nothing while their owners and
//     standbys were down, and their old copies came back later (see
//     above); fixed by the majority rule.
var fixedDrawnSeeds = []uint64{3296, 3812, 4934, 7979}

// TestFixedSeeds replays the schedules that failed before the fix that
// fixedSeeds (with every fault drawn) and fixedDrawnSeeds name.
func TestFixedSeeds(t *testing.T) {
	for _, seed := range fixedSeeds {
		log, problems := runSchedule(seed, true, newCountWorld)
		if len(problems) > 0 {
			t.Errorf("seed %d is not exact (replay: go test ./sim -run TestRandomSchedules -schedules 1 -seed %d):\n%s\nschedule:\n%s",
				seed, seed, strings.Join(problems, "\n"), strings.Join(log, "\n"))
		}
	}
	for _, seed := range fixedDrawnSeeds {
		log, problems := runSchedule(seed, false, newCountWorld)
		if len(problems) > 0 {
			t.Errorf("seed %d is not exact (replay: go test ./sim -run TestRandomSchedules -allfaults=false -schedules 1 -seed %d):\n%s\nschedule:\n%s",
				seed, seed, strings.Join(problems, "\n"), strings.Join(log, "\n"))
		}
	}
}

// failure is a schedule that could not go on (a fault the simulation
// refused).
type failure struct{ err error }

func must(err error) {
	if err != nil {
		panic(failure{err})
	}
}

// runSchedule runs the schedule of one seed over the world mk makes and
// returns what it did and what is not exact at its end. The world does
// not change the schedule's draws: a seed makes the same faults over
// every world, but for the end of a bounded input and the crash drawn
// with it, which only a bounded world takes.
func runSchedule(seed uint64, allFaults bool, mk worldMaker) (log, problems []string) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(failure)
			if !ok {
				panic(r)
			}
			problems = append(problems, f.err.Error())
		}
	}()
	rng := rand.New(rand.NewPCG(seed, 0x5c4ed))
	stages := 1 + rng.IntN(2)
	fragments, parts := 2+rng.IntN(7), 1+rng.IntN(3)
	nodes := 2 + rng.IntN(4)
	say := func(format string, args ...any) { log = append(log, fmt.Sprintf(format, args...)) }
	say("%d nodes, %d fragments, %d partitions, %d stages", nodes, fragments, parts, stages)
	// The draw before the majority rule left out of two-stage flows the
	// faults they failed under then (see above).
	splits := stages == 1 || allFaults
	pauses := stages == 1 || allFaults
	cfg := sim.Config{Seed: seed}
	if os.Getenv("SIM_TRACE") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	w, err := mk(cfg, fragments, parts, stages)
	must(err)
	c := w.sim()
	defer func() {
		if err := c.Close(); err != nil {
			problems = append(problems, fmt.Sprintf("close: %v", err))
		}
	}()
	var names []string
	for i := range nodes {
		names = append(names, fmt.Sprintf("n%d", i+1))
	}
	must(c.Start(names...))
	left := map[string]bool{}
	full := map[string]bool{}
	paused := map[string]bool{}
	// Slow disks are drawn from a generator of their own, so that the
	// other faults of a seed stay what they were before slow disks.
	disk := rand.New(rand.NewPCG(seed, 0xd15c))
	slow := map[string]bool{}
	cuts := false // a link is cut (Partition, Cut) until the next heal
	pick := func(xs []string) string { return xs[rng.IntN(len(xs))] }
	// Running nodes that may take a fault: at least one other keeps going.
	// A node told to leave is on its way out (it stops once it handed its
	// fragments off): it is not counted as one that keeps going; nor, for
	// a full disk or a leave, is one whose disk is full.
	running := func() []string {
		var out []string
		for _, n := range c.Up() {
			if !paused[n] && !left[n] {
				out = append(out, n)
			}
		}
		return out
	}
	down := func() []string {
		var out []string
		for _, n := range c.Nodes() {
			if !slices.Contains(c.Up(), n) && !left[n] {
				out = append(out, n)
			}
		}
		return out
	}
	steps := 4 + rng.IntN(6)
	// A bounded input ends at a step drawn from a generator of its own, so
	// that the other draws stay those of an unbounded world; half the
	// time a running node crashes within 400ms of the end, as the end
	// makes every timer and window of the input due.
	ends := rand.New(rand.NewPCG(seed, 0xe0d))
	endAt, ended := ends.IntN(steps), false
	for step := range steps {
		if rng.IntN(2) == 0 {
			k := 50 + rng.IntN(800)
			if !ended {
				w.push(k)
				say("push %d", k)
			}
		}
		if step == endAt && w.end() {
			ended = true
			say("end of input")
			if ends.IntN(2) == 0 {
				dt := time.Duration(ends.IntN(400)) * time.Millisecond
				c.Run(dt)
				say("run %v", dt)
				// Picked after the run: a node whose disk is full may have
				// crashed in it.
				if up := running(); len(up) > 1 {
					n := up[ends.IntN(len(up))]
					must(c.Kill(n))
					say("kill %s", n)
				}
			}
		}
		dt := time.Duration(200+rng.IntN(3000)) * time.Millisecond
		c.Run(dt)
		say("run %v", dt)
		up := running()
		if disk.IntN(6) == 0 && len(up) > 0 {
			n := up[disk.IntN(len(up))]
			d := time.Duration(20+disk.IntN(1500)) * time.Millisecond
			must(c.SlowDisk(n, d))
			slow[n] = true
			say("slow-disk %s %v", n, d)
		} else if disk.IntN(4) == 0 && len(slow) > 0 {
			for _, n := range sortedNames(slow) {
				must(c.SlowDisk(n, 0))
				say("fast-disk %s", n)
			}
			clear(slow)
		}
		switch a := rng.IntN(12); {
		case a == 0 && len(up) > 1:
			n := pick(up)
			must(c.Kill(n))
			say("kill %s", n)
		case a == 1 && len(down()) > 0:
			n := pick(down())
			if full[n] {
				must(c.DiskFull(n, false))
				delete(full, n)
				say("disk-ok %s", n)
			}
			must(c.Restart(n))
			say("restart %s", n)
		case a == 2 && pauses && len(up) > 1:
			n := pick(up)
			must(c.Pause(n))
			paused[n] = true
			say("pause %s", n)
		case a == 3 && len(paused) > 0:
			for _, n := range sortedNames(paused) {
				must(c.Resume(n))
				say("resume %s", n)
			}
			clear(paused)
		case a == 4 && splits && len(up) > 1:
			perm := rng.Perm(len(up))
			k := 1 + rng.IntN(len(up)-1)
			var x, y []string
			for i, j := range perm {
				if i < k {
					x = append(x, up[j])
				} else {
					y = append(y, up[j])
				}
			}
			slices.Sort(x)
			slices.Sort(y)
			must(c.Partition(x, y))
			cuts = true
			say("partition %s | %s", strings.Join(x, " "), strings.Join(y, " "))
		case a == 5 && splits && len(up) > 1:
			from := pick(up)
			to := pick(up)
			if from != to {
				must(c.Cut(from, to))
				cuts = true
				say("cut %s -> %s", from, to)
			}
		case a == 6:
			c.Heal()
			cuts = false
			say("heal")
		case a == 7 && len(up) > 1:
			n := pick(up)
			// One that leaves hands its fragments off and is gone with
			// its store: another running node must take them, and one
			// whose disk is full crashes at its first write. Seed 3296
			// lost the only copies so, as a real node would: the engine
			// too leaves once no other member is alive.
			// A leave is announced to the members the leaver reaches: one
			// cut off from the majority (or on its way out of it) would
			// leave the others counting it in their agreed membership for
			// good, which only an operator could undo (see the known
			// failures): the leaver and the one that takes over own.
			// Nor while a link is cut: the others may not hear the leave.
			// Nor one whose disk is full: it crashes at its final
			// checkpoint and, counted as gone, is never restarted, with
			// what may be the only newest copy of a fragment (seed 2325
			// of the visits world then waited for that copy for good).
			if cuts || full[n] || !c.Owns(n) || !slices.ContainsFunc(up, func(m string) bool { return m != n && !full[m] && c.Owns(m) }) {
				break
			}
			must(c.Leave(n))
			left[n] = true
			say("leave %s", n)
		case a == 8 && len(c.Nodes()) < 7:
			n := fmt.Sprintf("n%d", len(c.Nodes())+1)
			must(c.Start(n))
			say("start %s", n)
		case a == 9 && len(up) > 1:
			n := pick(up)
			// A full disk crashes its node at its next write: it is not
			// one that keeps going (seed 7979 filled both disks of two
			// nodes, and a node started later began every fragment anew).
			if !slices.ContainsFunc(up, func(m string) bool { return m != n && !full[m] }) {
				break
			}
			must(c.DiskFull(n, true))
			full[n] = true
			say("disk-full %s", n)
		case a == 10 || a == 11:
			f := sim.Faults{Delay: time.Duration(rng.IntN(6)) * time.Millisecond}
			if rng.IntN(2) == 0 {
				f.Drop = float64(rng.IntN(11)) / 100
			}
			if rng.IntN(2) == 0 {
				f.Duplicate = float64(rng.IntN(21)) / 100
			}
			if rng.IntN(2) == 0 {
				f.Reorder = float64(rng.IntN(31)) / 100
			}
			must(c.SetFaults(f))
			say("faults drop=%v duplicate=%v reorder=%v delay=%v", f.Drop, f.Duplicate, f.Reorder, f.Delay)
		}
	}
	// The faults stop: the network heals, paused nodes resume, full disks
	// are freed and crashed nodes restart; a schedule that left no node
	// running starts its first node again.
	must(c.SetFaults(sim.Faults{}))
	c.Heal()
	for _, n := range sortedNames(paused) {
		must(c.Resume(n))
	}
	for _, n := range sortedNames(full) {
		must(c.DiskFull(n, false))
	}
	for _, n := range sortedNames(slow) {
		must(c.SlowDisk(n, 0))
	}
	for _, n := range down() {
		must(c.Restart(n))
	}
	if len(running()) == 0 {
		must(c.Restart(names[0]))
		delete(left, names[0])
	}
	say("heal, resume, restart: %v up", c.Up())
	w.last()
	problems = w.settle(3 * time.Minute)
	if len(problems) > 0 && os.Getenv("SIM_TRACE") != "" {
		fmt.Fprintln(os.Stderr, c.Status())
	}
	say("ended at %v: %+v", c.Elapsed(), c.Counts())
	return log, problems
}

func sortedNames(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestReplayIsIdentical runs schedules twice: the same seed does the same
// thing, message for message (what it did and every counter agree).
func TestReplayIsIdentical(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		a, pa := runSchedule(seed, true, newCountWorld)
		b, pb := runSchedule(seed, true, newCountWorld)
		if !slices.Equal(a, b) || !slices.Equal(pa, pb) {
			t.Fatalf("seed %d ran differently:\n%s\n%v\n---\n%s\n%v", seed, strings.Join(a, "\n"), pa, strings.Join(b, "\n"), pb)
		}
	}
}
