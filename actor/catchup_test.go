package actor

import (
	"slices"
	"testing"

	"github.com/tessera-streams/tessera/internal/wire"
)

// A node catches up with what was settled before its placement once a
// majority of the membership before it told it all they knew after they
// applied the placement, and one of them (or the node) had caught up with
// the one before that. Reports of another placement do not count; one
// of a placement the node has not applied yet counts once it does.
func TestCatchUpFromMembersReports(t *testing.T) {
	plan, _ := onePartition(t, 10)
	const epoch = 7
	addr := freeAddr(t)
	cfg := Config{Store: diskStore(t), Logger: quiet()}
	cfg.Cluster = &ClusterConfig{Self: "a", Remote: addr, Epoch: epoch, Fragments: slices.Repeat([]string{"a"}, plan.Fragments()),
		Readers: []string{"a"}, Remotes: map[string]string{"a": addr, "b": addr, "c": addr, "d": addr},
		Prev: []string{"b", "c", "d"}}
	e, err := Start(plan, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	report := func(placement uint64, from string, caught bool) {
		t.Helper()
		if !e.settledNews(&wire.Settled{Flow: plan.Name(), Fragments: []uint32{1}, Epochs: []uint64{5<<32 + 3},
			Placement: placement, From: from, Caught: caught}) {
			t.Fatalf("the news of %s's report was not kept", from)
		}
	}
	if e.CaughtUp(epoch) {
		t.Fatal("caught up with nobody heard: a was not a member of the placement before")
	}
	report(epoch-1, "b", true) // of an older placement
	report(epoch, "c", false)
	if e.CaughtUp(epoch) {
		t.Fatal("caught up with one of three heard")
	}
	report(epoch, "d", false)
	if e.CaughtUp(epoch) {
		t.Fatal("caught up from c and d, neither caught up with the one before")
	}
	report(epoch, "b", true)
	if !e.CaughtUp(epoch) || e.CaughtUp(epoch+1) {
		t.Fatalf("after b's report: caught up %v with %d, %v with %d; want only %d",
			e.CaughtUp(epoch), epoch, e.CaughtUp(epoch+1), epoch+1, epoch)
	}
	if got := e.settledOf(1); got != 5<<32+3 {
		t.Fatalf("the reports' news: fragment 1 settled %#x", got)
	}

	// A report of the next placement, before the node applies it: with
	// the node's own, a majority of [a b c].
	report(epoch+1, "b", false)
	next := *e.cfg.Cluster
	next.Epoch, next.Prev, next.PrevCaught = epoch+1, []string{"a", "b", "c"}, true
	if err := e.Place(&next); err != nil {
		t.Fatal(err)
	}
	if !e.CaughtUp(epoch + 1) {
		t.Fatal("the reports that came before the placement were not counted")
	}
}
