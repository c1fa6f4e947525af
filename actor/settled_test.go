package actor

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/internal/wire"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/splice"
)

// A node restarts alone (the other members are down) with a copy of a
// fragment older than the newest checkpoint the fragment settled, which
// the node learned of from the fragment's owner (recovery.Settled): the
// outputs of that checkpoint were released, and only the down members
// keep it. The fragment must not start from the older copy — it would
// release other values under the same output ids — and stays
// unavailable, saying why, until a copy at least as new comes. A copy
// that is newer than its own but still older than the settled checkpoint
// does not end the wait either.
//
// Before the fix the fragment started at once from its own copy (sim
// visits seeds 1123 and 2383: from nothing).
func TestFragmentBehindItsSettledCheckpointWaits(t *testing.T) {
	plan, copyOf := onePartition(t, 1000)
	const f = 0
	var (
		own     = copyOf(3<<32+2, 40)  // this node's
		settled = uint64(3<<32 + 5)    // released by the owner, copied by its standby; both down now
		between = copyOf(3<<32+4, 60)  // newer than this node's, older than the settled one
		newest  = copyOf(3<<32+5, 100) // the settled checkpoint, from a member back
	)
	store := diskStore(t)
	if _, err := store.Write(plan.Name(), f, own); err != nil {
		t.Fatal(err)
	}
	if err := store.NoteSettled(plan.Name(), f, settled); err != nil {
		t.Fatal(err)
	}
	// The source partition's reader is on node b, which is not a live
	// member: nothing reads the partition, and a has no one to gather
	// copies from.
	e := startAlone(t, plan, Config{Store: store}, 7, "b", nil, nil)
	l := e.layout.Load()
	pid, st := l.frags[l.local[f]], l.fstats[l.local[f]]
	other := l.frags[l.local[1]] // fragment 1 has no settled checkpoint: it starts

	// Each answer comes once the messages sent before it are handled:
	// the fragment's mailbox takes one sender's messages in order.
	unavailable := func(when string) {
		t.Helper()
		handledBy(t, e, pid)
		_, err := splice.Evaluate(context.Background(), e, splice.Request{View: "total"})
		var ue *splice.UnavailableError
		if !errors.As(err, &ue) || !strings.Contains(ue.Reason, "newest settled checkpoint") {
			t.Fatalf("%s: the view answers %v, want fragment %d unavailable until a copy of its settled checkpoint comes "+
				"(it runs from epoch %#x, its own copy)", when, err, f, st.RestoredEpoch.Load())
		}
	}
	unavailable("started")
	if _, err := e.sys.Root.RequestFuture(other, ckptReq{}, 10*time.Second).Result(); err != nil {
		t.Fatal(err)
	}

	e.sys.Root.Send(pid, handoffMsg{cp: between, lineage: between.Manifest.Epoch, placement: 7, from: "c"})
	unavailable("offered a copy older than the settled checkpoint")

	e.sys.Root.Send(pid, handoffMsg{cp: newest, lineage: newest.Manifest.Epoch, placement: 7, from: "d"})
	handledBy(t, e, pid)
	if got := st.RestoredEpoch.Load(); got != newest.Manifest.Epoch {
		t.Fatalf("the fragment runs from epoch %#x, want the settled checkpoint's copy (%#x)", got, newest.Manifest.Epoch)
	}
	if _, err := splice.Evaluate(context.Background(), e, splice.Request{View: "total"}); err != nil {
		t.Fatalf("with the settled checkpoint's copy, the view answers %v", err)
	}
}

// A member's news of settled checkpoints only ever raises what a node
// knows, survives a restart (the store keeps it), and news for a fragment
// the flow does not have counts as malformed.
func TestSettledNewsIsKept(t *testing.T) {
	plan, _ := onePartition(t, 10)
	store := diskStore(t)
	e := startAlone(t, plan, Config{Store: store}, 1, "a", nil, nil)
	const at = 50 << 32 // past the epochs the fragments settle here
	e.settledNews(&wire.Settled{Flow: plan.Name(), Fragments: []uint32{0, 1}, Epochs: []uint64{at + 9, at + 4}})
	e.settledNews(&wire.Settled{Flow: plan.Name(), Fragments: []uint32{0, 1, 99}, Epochs: []uint64{at + 7, at + 5, 1}})
	if got, want := [2]uint64{e.settledOf(0), e.settledOf(1)}, [2]uint64{at + 9, at + 5}; got != want {
		t.Fatalf("settled %v, want %v", got, want)
	}
	if n := e.malformed.Load(); n != 1 {
		t.Fatalf("%d malformed messages, want 1 (fragment 99)", n)
	}
	e.Stop()
	got, err := store.Settled(plan.Name())
	if err != nil {
		t.Fatal(err)
	}
	if want := (recovery.Settled{0: at + 9, 1: at + 5}); got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("the store keeps %v, want %v", got, want)
	}
}

// With Config.UncleanAfter, a fragment whose settled checkpoint is only
// on members that are down starts without it once it waited that long
// (an operator knows those members will not come back): here from its
// own copy, the newest there is.
func TestUncleanAfterStartsFromTheCopiesThereAre(t *testing.T) {
	plan, copyOf := onePartition(t, 1000)
	const f = 0
	own := copyOf(3<<32+2, 40)
	store := diskStore(t)
	if _, err := store.Write(plan.Name(), f, own); err != nil {
		t.Fatal(err)
	}
	if err := store.NoteSettled(plan.Name(), f, 3<<32+5); err != nil {
		t.Fatal(err)
	}
	e := startAlone(t, plan, Config{Store: store, UncleanAfter: 50 * time.Millisecond}, 7, "b", nil, nil)
	l := e.layout.Load()
	st := l.fstats[l.local[f]]
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := splice.Evaluate(context.Background(), e, splice.Request{View: "total"})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with UncleanAfter 50ms the view still answers %v after 30s", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := st.RestoredEpoch.Load(); got != own.Manifest.Epoch {
		t.Fatalf("the fragment runs from epoch %#x, want its own copy's (%#x)", got, own.Manifest.Epoch)
	}
	if err := (&Config{UncleanAfter: -time.Second}).Validate(); err == nil {
		t.Fatal("a negative UncleanAfter validates")
	}
}
