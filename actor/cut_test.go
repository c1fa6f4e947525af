package actor

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/splice"
)

// While a pause holds, no reader reads and every fragment sits exactly at
// the cut, so the total is the cut's sum (one event per offset); released,
// the readers read on. A pause not released ends with its lease.
func TestPauseHoldsReadersAtOneCut(t *testing.T) {
	src, _ := gen.New(gen.Config{Partitions: 3, Seed: 2, Rate: 200_000}, word)
	e, err := Start(countFlow(t, src, ""), Config{Logger: quiet(), BatchSize: 64, Credits: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	for e.Readers()[0].Position.Load() < 1000 {
		time.Sleep(time.Millisecond)
	}
	for range 5 {
		cut, release, err := e.Pause(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var sum int64
		for _, off := range cut.Offsets {
			sum += off
		}
		res, err := splice.Evaluate(context.Background(), e, splice.Request{View: "total"})
		if err != nil {
			t.Fatal(err)
		}
		again, _ := splice.Evaluate(context.Background(), e, splice.Request{View: "total"})
		if res.Value != sum || again.Value != sum {
			t.Fatalf("total %v then %v during a pause at %v (sum %d)", res.Value, again.Value, cut, sum)
		}
		for _, f := range res.Freshness {
			for p, off := range cut.Offsets {
				if f.Offsets[p] != off {
					t.Fatalf("fragment %d at %s %d, cut %d", f.Fragment, p, f.Offsets[p], off)
				}
			}
		}
		release()
		waitPast(t, e, cut.Offsets)
	}
	// Not released: the lease (the deadline and a second) lets go. The
	// deadline leaves the pause time to be taken on a loaded machine.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	cut, _, err := e.Pause(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitPast(t, e, cut.Offsets)
}

// waitPast waits until every reader read beyond the cut.
func waitPast(t *testing.T, e *Engine, cut map[string]int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, r := range e.Readers() {
		name := e.plan.PartitionName(0, r.Partition)
		for r.Position.Load() <= cut[name] {
			if time.Now().After(deadline) {
				t.Fatalf("%s still at %d, the cut's %d", name, r.Position.Load(), cut[name])
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// twoStages counts words (view "counts", and their number "total"), then
// keys the counts' updates again by the count they reached and counts
// those (view "reached"): reached[c] is the number of words counted at
// least c times. At one cut of both stages, reached[1] is the number of
// words in counts and reached sums to total, the events read.
func twoStages(t *testing.T, src flows.Source[string]) *flowcore.Plan {
	f := flows.New("two", flows.WithFragments(16))
	ks := flows.KeyBy(flows.From(f, "gen", src), flows.Identity[string])
	counts := flows.Count(ks).View("counts")
	flows.AggregateView(ks.Values(), "total", splice.Count[string](), flows.Identity[string])
	again := flows.KeyBy(counts.Updates(), func(kv flows.KV[string, int64]) string { return strconv.FormatInt(kv.Value, 10) })
	flows.Count(again).View("reached")
	p, err := flowcore.Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// diskStore is a checkpoint store in pebble on disk, closed after the
// test (and after the engine's Stop, deferred in the test).
func diskStore(t *testing.T) *recovery.Store {
	s, err := recovery.Open(t.TempDir(), nil, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// stagesAgree checks one cut's answers of both stages against each other
// and against the cut's source offsets.
func stagesAgree(t *testing.T, offsets map[string]int64, counts, total, reached splice.Result) {
	t.Helper()
	var read int64
	for _, off := range offsets {
		read += off
	}
	var words, sum int64
	for _, en := range counts.Entries {
		words++
		sum += en.Value.(int64)
	}
	var reachedSum, reached1 int64
	for _, en := range reached.Entries {
		reachedSum += en.Value.(int64)
		if en.Key == "1" {
			reached1 = en.Value.(int64)
		}
	}
	if total.Value != read || sum != read {
		t.Fatalf("first stage: total %v, counts sum to %d, the cut %v read %d", total.Value, sum, offsets, read)
	}
	if reachedSum != read || reached1 != words {
		t.Fatalf("second stage: reached sums to %d (want %d, the events read) and reached[1] = %d (want %d, the words counted) at %v",
			reachedSum, read, reached1, words, offsets)
	}
}

// A pause of a flow that keys again holds every stage at one cut: while
// it holds, the second stage has applied exactly what the first made from
// the cut's input, under continuous ingest; released, the readers read
// on. Without the releases (the readers paused only), the second stage is
// a checkpoint behind and reached falls short. It holds whichever rule
// releases exchange outputs: a single node's (once a checkpoint covering
// them is durable) and a cluster node's (once the checkpoint after that
// one is durable: recovery.MachineConfig.Replicated), here a cluster of
// one.
func TestPauseHoldsEveryStage(t *testing.T) {
	for _, replicated := range []bool{false, true} {
		t.Run(fmt.Sprintf("replicated=%v", replicated), func(t *testing.T) { holdsEveryStage(t, replicated) })
	}
}

func holdsEveryStage(t *testing.T, replicated bool) {
	src, _ := gen.New(gen.Config{Partitions: 3, Seed: 3, Rate: 100_000}, word)
	cfg := Config{Logger: quiet(), BatchSize: 64, Credits: 2, Store: diskStore(t), CheckpointInterval: 50 * time.Millisecond}
	if replicated {
		addr := freeAddr(t)
		cfg.Cluster = &ClusterConfig{Self: "a", Remote: addr, Epoch: 1, Fragments: slices.Repeat([]string{"a"}, 16),
			Readers: slices.Repeat([]string{"a"}, 3), Remotes: map[string]string{"a": addr}}
	}
	e, err := Start(twoStages(t, src), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	for e.Readers()[0].Position.Load() < 1000 {
		time.Sleep(time.Millisecond)
	}
	ask := func(view string) splice.Result {
		t.Helper()
		req := splice.Request{View: view, Op: splice.OpEntries, Query: splice.Query{Limit: 100_000}}
		if view == "total" {
			req = splice.Request{View: view}
		}
		res, err := splice.Evaluate(context.Background(), e, req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	for range 5 {
		hold, release, err := e.Pause(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		counts, total, reached := ask("counts"), ask("total"), ask("reached")
		stagesAgree(t, hold.Offsets, counts, total, reached)
		// Every fragment reports the cut: the sources' offsets, and on the
		// exchange what each upstream fragment sent it of what it made.
		if made := hold.Exchanges["KeyBy#1"]; len(hold.Exchanges) != 1 || len(made) != 16 {
			t.Fatalf("the cut's exchanges are %v, want 16 upstream positions for KeyBy#1", hold.Exchanges)
		}
		for _, f := range reached.Freshness {
			for p, off := range hold.Offsets {
				if f.Offsets[p] != off {
					t.Fatalf("fragment %d at %s %d, cut %d", f.Fragment, p, f.Offsets[p], off)
				}
			}
			for p, end := range hold.Applied[f.Fragment] {
				if f.Offsets[p] != end {
					t.Fatalf("fragment %d applied %s up to %d, the cut's %d", f.Fragment, p, f.Offsets[p], end)
				}
			}
		}
		release()
		waitPast(t, e, hold.Offsets)
	}
}

// A snapshot read of a flow that keys again answers from one cut across
// both stages and states it, exchanges included; a latest read does not
// promise that. On a bounded input, the snapshot read is complete once
// everything is applied, and counts every event.
func TestSnapshotReadAcrossStages(t *testing.T) {
	src, _ := gen.New(gen.Config{Partitions: 2, Seed: 4, Rate: 50_000, Events: 20_000}, word)
	e, err := Start(twoStages(t, src), Config{Logger: quiet(), BatchSize: 64, Credits: 2, Store: diskStore(t),
		CheckpointInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	// Read-your-writes: a latest read with min_offsets of a flow that
	// keys again waits for a cut that covers them, in both stages.
	min := map[string]int64{"gen/0": 3000, "gen/1": 3000}
	res, err := splice.EvaluateRead(context.Background(), e, splice.Request{View: "reached", Op: splice.OpEntries, Query: splice.Query{Limit: 100_000}},
		splice.ReadOptions{MinOffsets: min, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var read, sum int64
	for p, off := range res.Cut.Offsets {
		read += off
		if off < min[p] {
			t.Fatalf("cut %v does not cover %v", res.Cut.Offsets, min)
		}
	}
	for _, en := range res.Entries {
		sum += en.Value.(int64)
	}
	if res.Cut.Consistency != splice.Snapshot || sum != read {
		t.Fatalf("read with min_offsets %v: cut %+v, reached sums to %d, want %d", min, res.Cut, sum, read)
	}
	o := splice.ReadOptions{Consistency: splice.Snapshot, Timeout: 30 * time.Second}
	for {
		res, err := splice.EvaluateRead(context.Background(), e, splice.Request{View: "reached", Op: splice.OpEntries, Query: splice.Query{Limit: 100_000}}, o)
		if err != nil {
			t.Fatal(err)
		}
		var read, sum int64
		for _, off := range res.Cut.Offsets {
			read += off
		}
		for _, en := range res.Entries {
			sum += en.Value.(int64)
		}
		// Every event read updated one count once: the second stage
		// applied one update per event, and the first made one each.
		if sum != read {
			t.Fatalf("reached sums to %d, the cut %v read %d", sum, res.Cut.Offsets, read)
		}
		var made int64
		for _, n := range res.Cut.Exchanges["KeyBy#1"] {
			made += n
		}
		if res.Cut.Consistency != splice.Snapshot || len(res.Cut.Exchanges["KeyBy#1"]) != 16 || made != read {
			t.Fatalf("cut %+v: want a snapshot with the exchange's 16 upstream positions, which made %d (want %d)", res.Cut, made, read)
		}
		if res.Complete() {
			if read != 20_000 {
				t.Fatalf("complete at %v: read %d of 20000", res.Cut.Offsets, read)
			}
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
}
