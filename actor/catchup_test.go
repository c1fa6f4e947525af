package actor

import (
	"slices"
	"testing"
	"time"

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

// A member whose remote did not answer when the placement was applied
// (silent) is sent nothing: protoactor would keep the connection it
// failed to set up. Once its remote answers, the node's next retell finds
// it and sends it the report it missed. Before, it heard nothing until
// the next placement, and could not catch up meanwhile.
func TestSilentMemberIsToldOnceItAnswers(t *testing.T) {
	k := &knownRig{addr: freeAddr(t)} // nothing listens there yet
	addr := freeAddr(t)
	e, err := Start(knownPlan(t), Config{Store: diskStore(t), Logger: quiet(), RemoteWait: 50 * time.Millisecond,
		Cluster: &ClusterConfig{Self: "a", Remote: addr, Epoch: 3, Fragments: []string{"a"}, Readers: []string{"a"},
			Remotes: map[string]string{"a": addr, "b": k.addr},
			Agreement: shard.Agreement{Placed: shard.Placed{Epoch: 3, Members: []string{"a", "b"}},
				Before: []shard.Placed{{Epoch: 2, Members: []string{"b"}}}, Cut: true}}})
	if err != nil {
		t.Fatal(err)
	}
	k.e = e
	if !e.layout.Load().silent.has("b") {
		t.Fatal("b's remote did not answer, yet b is not silent")
	}
	e.Retell([]string{"b"})
	k.startMembers(t)
	t.Cleanup(e.Stop) // before the members' process stops
	for deadline := time.Now().Add(30 * time.Second); e.layout.Load().silent.has("b"); {
		if time.Now().After(deadline) {
			t.Fatal("b's remote answers, and b is still silent after 30s of retells")
		}
		e.Retell([]string{"b"})
		time.Sleep(20 * time.Millisecond)
	}
	k.order("wait report")
	if got := k.line(t); got != "report 3 a 0" {
		t.Fatalf("b heard %q, want a's report of placement 3", got)
	}
}
