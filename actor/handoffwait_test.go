package actor

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	pa "github.com/asynkron/protoactor-go/actor"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/internal/wire"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/splice"
)

// A node restarted under placement 11 waits for the hand-off of a
// fragment that another node ran while it was away. The answer to the
// hand-off request its previous process sent under placement 8 reaches it
// first (the other node's remote delivers what it queued for the node's
// address once the node listens again): a copy of an older lineage than
// the node's own, or word that the other node had none. That answer must
// not end the wait. The fragment takes the hand-off of the placement it
// waits under: a newer lineage (the other node ran the fragment since
// placement 8 and released its outputs), though behind the node's own
// copy on the source partition.
//
// Ended by the old answer, the wait started the fragment from its own
// copy (never confirmed by its standby: its outputs were never released),
// and the current hand-off was refused as not ahead of the running
// fragment. The own copy's outputs then reached the fragments downstream,
// every copy of the fragment became stale, and it waited for a newer one
// for good, its reader at the end of its partition (internal/alarms
// TestRollingKillsExact, a run in some twenty).
func TestAnswerToAnOlderWaitDoesNotEndTheWait(t *testing.T) {
	for _, old := range []string{"hand-off", "no hand-off"} {
		t.Run(old, func(t *testing.T) { answerToAnOlderWait(t, old == "hand-off") })
	}
}

// onePartition is a count flow over one source partition of events, and
// copyOf makes a whole checkpoint of one of its fragments at epoch that
// has applied the partition up to end.
func onePartition(t *testing.T, events int64) (plan *flowcore.Plan, copyOf func(epoch uint64, end int64) *recovery.Checkpoint) {
	t.Helper()
	src, _ := gen.New(gen.Config{Partitions: 1, Seed: 3, Events: events}, word)
	plan = countFlow(t, src, "")
	return plan, func(epoch uint64, end int64) *recovery.Checkpoint {
		return &recovery.Checkpoint{Full: true, Manifest: recovery.Manifest{Epoch: epoch, Fragments: plan.Fragments(),
			Offsets: map[recovery.PartitionID]int64{{Source: 0, Partition: 0}: end}}}
	}
}

// handledBy returns once fragment actor pid of e handled what was sent it
// before: its mailbox takes one sender's messages in order.
func handledBy(t *testing.T, e *Engine, pid *pa.PID) {
	t.Helper()
	if _, err := e.sys.Root.RequestFuture(pid, ckptReq{}, 10*time.Second).Result(); err != nil {
		t.Fatal(err)
	}
}

// waitsIn reports whether the view "total" of e answers that fragment f
// is unavailable, and what it answered.
func waitsIn(e *Engine, f int) (bool, error) {
	_, err := splice.Evaluate(context.Background(), e, splice.Request{View: "total"})
	var ue *splice.UnavailableError
	return errors.As(err, &ue) && slices.Contains(ue.Fragments, f), err
}

// startAlone starts plan with cfg (quiet, if it has no logger) on node a
// of a cluster at placement epoch, which gives a every fragment and node
// reader the source partition; the remotes are a's and others' (names
// that share a's address: nothing is sent to another process). await:
// the fragments that wait for a hand-off.
func startAlone(t *testing.T, plan *flowcore.Plan, cfg Config, epoch uint64, reader string, others []string, await []bool) *Engine {
	t.Helper()
	return startAloneCold(t, plan, cfg, epoch, reader, others, await, false)
}

// startAloneCold is startAlone, as a first placement that found no
// member running if cold (ClusterConfig.ColdStart).
func startAloneCold(t *testing.T, plan *flowcore.Plan, cfg Config, epoch uint64, reader string, others []string, await []bool, cold bool) *Engine {
	t.Helper()
	addr := freeAddr(t)
	remotes := map[string]string{"a": addr}
	for _, o := range others {
		remotes[o] = addr
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	cfg.Cluster = &ClusterConfig{Self: "a", Remote: addr, Epoch: epoch, Fragments: slices.Repeat([]string{"a"}, plan.Fragments()),
		Readers: []string{reader}, Remotes: remotes, AwaitHandoff: await, ColdStart: cold}
	e, err := Start(plan, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	return e
}

func answerToAnOlderWait(t *testing.T, oldHandoff bool) {
	plan, copyOf := onePartition(t, 1000)
	const f = 0
	var (
		own     = copyOf(4<<32+31, 100) // this node's, of the lineage begun under placement 4
		old     = copyOf(4<<32+30, 90)  // the answer under placement 8: the standby's copy then
		current = copyOf(9<<32+6, 80)   // the hand-off of placement 11: the lineage begun under 9
	)
	store := diskStore(t)
	if _, err := store.Write(plan.Name(), f, own); err != nil {
		t.Fatal(err)
	}
	// The source partition's reader is on node b: nothing reads it.
	await := make([]bool, plan.Fragments())
	await[f] = true
	e := startAlone(t, plan, Config{Store: store}, 11, "b", []string{"b"}, await)
	l := e.layout.Load()
	pid, st := l.frags[l.local[f]], l.fstats[l.local[f]]
	if oldHandoff {
		e.sys.Root.Send(pid, handoffMsg{cp: old, lineage: old.Manifest.Epoch, placement: 8, from: "b"})
	} else {
		e.sys.Root.Send(pid, noHandoffMsg{placement: 8})
	}
	e.sys.Root.Send(pid, handoffMsg{cp: current, lineage: current.Manifest.Epoch, placement: 11, from: "b"})
	// Answered once both are handled: the fragment's mailbox takes one
	// sender's messages in order.
	if _, err := e.sys.Root.RequestFuture(pid, ckptReq{final: true}, 10*time.Second).Result(); err != nil {
		t.Fatal(err)
	}
	if got := st.RestoredEpoch.Load(); got != current.Manifest.Epoch {
		t.Fatalf("the fragment runs from the checkpoint of epoch %#x, want the hand-off of the placement it waited under (%#x); "+
			"its own copy is %#x", got, current.Manifest.Epoch, own.Manifest.Epoch)
	}
	if got, want := st.Offsets(), map[string]int64{plan.PartitionName(0, 0): 80}; !maps.Equal(got, want) {
		t.Fatalf("offsets %v, want %v (the current hand-off's)", got, want)
	}
}

// A node's remote delivers what another node queued for its address to
// the next process there. The confirmation of a hand-off that this node's
// previous process sent must not count as the confirmation of one this
// process sent: the node would take that one for taken, and might leave
// while its copy is still the only one. The simulation drops such a
// confirmation the same way (sim handoffDone: the sender's incarnation).
func TestConfirmationOfAnEarlierProcessIsIgnored(t *testing.T) {
	plan, _ := onePartition(t, 10)
	e := startAlone(t, plan, Config{Store: diskStore(t)}, 1, "a", nil, nil)
	e.handoffs.Add(1) // a hand-off this process sent, not yet taken
	e.handoffDone(&wire.HandoffDone{Fragment: 0, To: "the id of an earlier process"})
	if n := e.handoffs.Load(); n != 1 {
		t.Fatalf("%d hand-offs pending after the confirmation of an earlier process's, want 1", n)
	}
	e.handoffDone(&wire.HandoffDone{Fragment: 0, To: e.sys.ID})
	if n := e.handoffs.Load(); n != 0 {
		t.Fatalf("%d hand-offs pending after this process's was confirmed, want 0", n)
	}
}

// A node restarts together with the others: its first placement finds no
// member running (ClusterConfig.ColdStart), and it owns a fragment it
// owned before it went down. Another member ran the fragment meanwhile
// and keeps a newer lineage, whose outputs were released. The fragment
// must not start from the node's own copy: it gathers the live members'
// copies first and starts from the newest (sim visits seed 10488, where
// it started from its own and delivered count updates again with other
// values). Without ColdStart it serves from its own copy at once, as
// before.
func TestColdStartGathersTheOthersCopies(t *testing.T) {
	plan, copyOf := onePartition(t, 1000)
	const f = 0
	own, newer := copyOf(2<<32+1, 40), copyOf(5<<32+2, 90)
	for _, cold := range []bool{true, false} {
		t.Run(fmt.Sprintf("cold %v", cold), func(t *testing.T) {
			store := diskStore(t)
			if _, err := store.Write(plan.Name(), f, own); err != nil {
				t.Fatal(err)
			}
			// The source partition's reader is on b: nothing reads it.
			e := startAloneCold(t, plan, Config{Store: store}, 8, "b", []string{"b"}, nil, cold)
			l := e.layout.Load()
			pid, st := l.frags[l.local[f]], l.fstats[l.local[f]]
			handledBy(t, e, pid)
			if waits, err := waitsIn(e, f); waits != cold {
				t.Fatalf("before b answers, the view answers %v; want fragment %d waiting: %v", err, f, cold)
			}
			if !cold {
				if got := st.RestoredEpoch.Load(); got != own.Manifest.Epoch {
					t.Fatalf("the fragment runs from epoch %#x, want its own copy's %#x", got, own.Manifest.Epoch)
				}
				return
			}
			// b's answer to the gather: its copy of the lineage it ran.
			e.sys.Root.Send(pid, handoffMsg{cp: newer, lineage: newer.Manifest.Epoch, placement: 8, from: "b"})
			handledBy(t, e, pid)
			if got := st.RestoredEpoch.Load(); got != newer.Manifest.Epoch {
				t.Fatalf("the fragment runs from epoch %#x, want b's copy %#x (its own is %#x)", got, newer.Manifest.Epoch, own.Manifest.Epoch)
			}
		})
	}
}
