package actor

import (
	"testing"

	pa "github.com/asynkron/protoactor-go/actor"

	"github.com/tessera-streams/tessera/recovery"
)

// The ends of a wait for a hand-off when the node named as the old owner
// does not hand the fragment off (noOldOwner, the asked copy of
// handedOff, and a placement that drops a member a gather waits for).
// The simulation found each rule (seeds 19205, 32097); these run them in
// the engine. Node a waits for fragment 0 of a count under placement 8,
// with b named as its old owner and c another live member; the messages
// b's and c's replicas would send are handed to the fragment's actor.
func TestWhenTheOldOwnerHandsNothingOff(t *testing.T) {
	plan, copyOf := onePartition(t, 1000)
	const f = 0
	var (
		own    = copyOf(2<<32+1, 40) // a's copy, from before it went down
		offer  = copyOf(3<<32+4, 60) // b's: a copy it keeps, not its hand-off
		newest = copyOf(5<<32+2, 90) // c's: the lineage the majority ran since
	)
	// start starts a, with own in its store if withOwn, waiting for
	// fragment 0's hand-off from b; the reader is b's, so nothing reads.
	start := func(t *testing.T, withOwn bool) (*Engine, *pa.PID, *FragmentStats) {
		t.Helper()
		store := diskStore(t)
		if withOwn {
			if _, err := store.Write(plan.Name(), f, own); err != nil {
				t.Fatal(err)
			}
		}
		await := make([]bool, plan.Fragments())
		await[f] = true
		e := startAlone(t, plan, Config{Store: store}, 8, "b", []string{"b", "c"}, await)
		l := e.layout.Load()
		return e, l.frags[l.local[f]], l.fstats[l.local[f]]
	}
	waits := func(e *Engine) bool {
		w, _ := waitsIn(e, f)
		return w
	}
	runsFrom := func(t *testing.T, st *FragmentStats, want *recovery.Checkpoint, why string) {
		t.Helper()
		if got := st.RestoredEpoch.Load(); got != want.Manifest.Epoch {
			t.Fatalf("%s: the fragment runs from epoch %#x, want %#x (own %#x, b's offer %#x, c's %#x)",
				why, got, want.Manifest.Epoch, own.Manifest.Epoch, offer.Manifest.Epoch, newest.Manifest.Epoch)
		}
	}

	t.Run("none to hand off, none here: it starts from nothing", func(t *testing.T) {
		e, pid, st := start(t, false)
		e.sys.Root.Send(pid, noHandoffMsg{from: "b", placement: 8})
		handledBy(t, e, pid)
		if waits(e) {
			t.Fatal("still waiting after b had none to hand off and a keeps no copy")
		}
		if got := st.RestoredEpoch.Load(); got != 0 {
			t.Fatalf("the fragment runs from epoch %#x, want nothing", got)
		}
	})

	t.Run("none to hand off, a copy here: it gathers the live members' copies", func(t *testing.T) {
		e, pid, st := start(t, true)
		e.sys.Root.Send(pid, noHandoffMsg{from: "b", placement: 8})
		handledBy(t, e, pid)
		if !waits(e) {
			t.Fatalf("started from its own copy (epoch %#x) without asking the live members", st.RestoredEpoch.Load())
		}
		e.sys.Root.Send(pid, handoffMsg{cp: newest, lineage: newest.Manifest.Epoch, placement: 8, from: "c", asked: true})
		e.sys.Root.Send(pid, noHandoffMsg{from: "b", placement: 8})
		handledBy(t, e, pid)
		runsFrom(t, st, newest, "both answered the gather")
	})

	t.Run("an offered copy is not a hand-off: it gathers", func(t *testing.T) {
		e, pid, st := start(t, true)
		// Ahead of a's own copy: taken as a hand-off, it would run.
		e.sys.Root.Send(pid, handoffMsg{cp: offer, lineage: offer.Manifest.Epoch, placement: 8, from: "b", asked: true})
		handledBy(t, e, pid)
		if !waits(e) {
			t.Fatalf("took b's offered copy as a hand-off: runs from %#x", st.RestoredEpoch.Load())
		}
		// b answers the gather with the same copy; c with the newest.
		e.sys.Root.Send(pid, handoffMsg{cp: offer, lineage: offer.Manifest.Epoch, placement: 8, from: "b", asked: true})
		e.sys.Root.Send(pid, handoffMsg{cp: newest, lineage: newest.Manifest.Epoch, placement: 8, from: "c", asked: true})
		handledBy(t, e, pid)
		runsFrom(t, st, newest, "the gather's newest copy")
	})

	t.Run("a placement without the member a gather waits for ends it", func(t *testing.T) {
		e, pid, st := start(t, true)
		e.sys.Root.Send(pid, noHandoffMsg{from: "b", placement: 8})
		e.sys.Root.Send(pid, handoffMsg{cp: newest, lineage: newest.Manifest.Epoch, placement: 8, from: "c", asked: true})
		handledBy(t, e, pid)
		if !waits(e) {
			t.Fatalf("the gather ended with b unanswered: runs from %#x", st.RestoredEpoch.Load())
		}
		// b, unanswered, is gone from placement 9: the gather has every
		// answer it can get.
		e.sys.Root.Send(pid, epochMsg{epoch: 9, live: []string{"c"}, members: []string{"a", "c"}})
		handledBy(t, e, pid)
		runsFrom(t, st, newest, "the members left answered")
	})
}
