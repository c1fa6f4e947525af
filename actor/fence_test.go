package actor

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/splice"
)

// A node that lost its majority is fenced mid-stream: at once it owns no
// fragment and no reader, and the layout routes every fragment to the
// owner the others are assumed to give it. When it sees a majority again
// and is given every fragment back (the old owner it assumed is gone),
// the fragments start from the checkpoints taken before the fence, the
// readers replay from them, and every count is exact.
//
// Given back either by a newer placement (Place, epoch 2) or, when the
// cluster placed nothing new while it was fenced, by the same one again
// (Resume, epoch 1: a fence no membership change followed, as on a
// loaded machine where every node's round trips overran the lease at
// once). Place at the same epoch does nothing: that was the stall.
func TestFenceStopsEverythingThenPlaceResumesExactly(t *testing.T) {
	for _, tc := range []struct {
		name  string
		epoch uint64
	}{{"place", 2}, {"resume", 1}} {
		t.Run(tc.name, func(t *testing.T) { fenceThenBack(t, tc.epoch) })
	}
}

func fenceThenBack(t *testing.T, epoch uint64) {
	const events = 300_000
	src, _ := gen.New(gen.Config{Partitions: 3, Seed: 11, Events: events, Rate: 600_000}, word)
	want := map[string]int64{}
	for p := range 3 {
		for o := range src.Limit(p) {
			want[src.Event(p, o)]++
		}
	}
	addr, gone := freeAddr(t), freeAddr(t)
	plan := countFlow(t, src, "")
	// RemoteWait short: resumed, the placement names b, whose address
	// nothing serves, and the engine waits that long for it.
	e, err := Start(plan, Config{Logger: quiet(), Store: diskStore(t), CheckpointInterval: 20 * time.Millisecond,
		RemoteWait: 500 * time.Millisecond,
		Cluster: &ClusterConfig{Self: "a", Remote: addr, Epoch: 1, Fragments: slices.Repeat([]string{"a"}, 64),
			Readers: slices.Repeat([]string{"a"}, 3), Remotes: map[string]string{"a": addr}}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	for e.Readers()[0].Position.Load() < 20_000 {
		time.Sleep(time.Millisecond)
	}
	var read int64
	for _, r := range e.Readers() {
		read += r.Position.Load()
	}
	if read >= events {
		t.Fatal("the input was read to its end before the fence: the test needs a fence mid-stream")
	}
	err = e.Fence(&ClusterConfig{Fragments: slices.Repeat([]string{"b"}, 64), Readers: slices.Repeat([]string{"b"}, 3),
		Remotes: map[string]string{"b": gone}})
	if err != nil {
		t.Fatal(err)
	}
	if f, r := len(e.Fragments()), len(e.Readers()); f != 0 || r != 0 {
		t.Fatalf("fenced, the node still runs %d fragments and %d readers", f, r)
	}
	back := func() *ClusterConfig {
		remotes := map[string]string{"a": addr}
		if epoch == 1 {
			// Resumed, b is a live member, as the others are in a
			// cluster: a fragment gained from it would wait for its
			// hand-off under a newer placement, never when resumed. (The
			// engine first waits RemoteWait for b's address, which
			// nothing serves here.)
			remotes["b"] = gone
		}
		return &ClusterConfig{Epoch: epoch, Fragments: slices.Repeat([]string{"a"}, 64), Readers: slices.Repeat([]string{"a"}, 3),
			Remotes: remotes}
	}
	if epoch == 1 {
		if err := e.Place(back()); err != nil {
			t.Fatal(err)
		}
		if f := len(e.Fragments()); f != 0 {
			t.Fatalf("Place at the fenced epoch started %d fragments", f)
		}
		err = e.Resume(back())
	} else {
		err = e.Place(back())
	}
	if err != nil {
		t.Fatal(err)
	}
	if f, r := len(e.Fragments()), len(e.Readers()); f != 64 || r != 3 {
		t.Fatalf("placed again, the node runs %d fragments and %d readers, want 64 and 3", f, r)
	}
	// Drained does not serve here: it counts the readers the engine
	// started, and the fenced ones stopped before their end. The total
	// reaches the input's size once every event is applied, and never
	// passes it: a count over it fails at once.
	deadline := time.Now().Add(60 * time.Second)
	for {
		res, err := splice.Evaluate(context.Background(), e, splice.Request{View: "total"})
		if err != nil {
			t.Fatal(err)
		}
		if res.Value == int64(events) {
			break
		}
		if n, _ := res.Value.(int64); n > events {
			t.Fatalf("total = %d, more than the %d events of the input", n, events)
		}
		if time.Now().After(deadline) {
			t.Fatalf("total = %v after 60s, want %d", res.Value, events)
		}
		time.Sleep(10 * time.Millisecond)
	}
	checkWords(t, e, want)
}
