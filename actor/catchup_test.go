package actor

import (
	"slices"
	"testing"

	"github.com/tessera-streams/tessera/internal/wire"
	"github.com/tessera-streams/tessera/shard"
)

// A node catches up with what was settled before its placement once what
// the members told it after they applied the placement knows of all of
// it (shard.CatchUp): they hold majorities of the memberships before it,
// down to one that one of them caught up with. Reports of another
// placement do not count; one of a placement the node has not applied
// yet counts once it does.
func TestCatchUpFromMembersReports(t *testing.T) {
	plan, _ := onePartition(t, 10)
	const epoch = 7
	addr := freeAddr(t)
	cfg := Config{Store: diskStore(t), Logger: quiet()}
	bcd := []string{"b", "c", "d"}
	cfg.Cluster = &ClusterConfig{Self: "a", Remote: addr, Epoch: epoch, Fragments: slices.Repeat([]string{"a"}, plan.Fragments()),
		Readers: []string{"a"}, Remotes: map[string]string{"a": addr, "b": addr, "c": addr, "d": addr},
		Agreement: shard.Agreement{Placed: shard.Placed{Epoch: epoch, Members: []string{"a", "b", "c", "d"}},
			Before: []shard.Placed{{Epoch: 6, Members: bcd}, {Epoch: 3, Members: bcd}}, Cut: true}}
	e, err := Start(plan, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	report := func(placement uint64, from string, caught uint64) {
		t.Helper()
		if !e.settledNews(&wire.Settled{Flow: plan.Name(), Fragments: []uint32{1}, Epochs: []uint64{5<<32 + 3},
			Placement: placement, From: from, Caught: caught}) {
			t.Fatalf("the news of %s's report was not kept", from)
		}
	}
	if e.CaughtUp(epoch) {
		t.Fatal("caught up with nobody heard")
	}
	report(epoch-1, "d", 6) // of an older placement
	report(epoch, "b", 0)
	report(epoch, "c", 0)
	if e.CaughtUp(epoch) {
		t.Fatal("caught up from b and c, a majority of 6 and 3, neither caught up with 3")
	}
	report(epoch, "d", 3)
	if !e.CaughtUp(epoch) || e.CaughtUp(epoch+1) {
		t.Fatalf("after d's report: caught up %v with %d, %v with %d; want only %d",
			e.CaughtUp(epoch), epoch, e.CaughtUp(epoch+1), epoch+1, epoch)
	}
	if got := e.settledOf(1); got != 5<<32+3 {
		t.Fatalf("the reports' news: fragment 1 settled %#x", got)
	}

	// A report of the next placement, before the node applies it: with
	// the node's own, a majority of [a b c d].
	report(epoch+1, "b", epoch)
	next := *e.cfg.Cluster
	next.Epoch, next.Caught = epoch+1, epoch
	next.Agreement = shard.Agreement{Placed: shard.Placed{Epoch: epoch + 1, Members: []string{"a", "b", "c"}},
		Before: []shard.Placed{{Epoch: epoch, Members: []string{"a", "b", "c", "d"}}}, Cut: true}
	if err := e.Place(&next); err != nil {
		t.Fatal(err)
	}
	if !e.CaughtUp(epoch + 1) {
		t.Fatal("the report that came before the placement was not counted")
	}
}
