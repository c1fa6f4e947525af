package main

import (
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/tessera-streams/tessera/internal/exampletest"
)

// The owner of every fragment killed with SIGKILL, and their standby told
// to leave (SIGTERM) right after, before the third node noticed the
// death: the third node, which owns none and keeps no copy, takes both
// fragments over. It must start them from the leaving standby's copies,
// not from nothing: both stages of the flow are in those two fragments,
// so nothing downstream would prove a fresh start stale, and its new
// lineage would deliver count updates under the old one's ids with other
// values. The leaver stays until the others would have placed without the
// dead owner (cluster's leaveHold), hands its copies over, and leaves once
// they are taken; the new owner gathers the live members' copies
// (recovery.Gather). The cluster ends exact.
func TestOwnerKilledWhileItsStandbyLeavesExact(t *testing.T) {
	t.Parallel()
	// Two fragments over n0 n1 n2: n2 owns both, n1 keeps their copies,
	// n0 reads (shard.LayOut).
	sp, want, nodes := watchedCluster(t, 4_000, "-fragments", "2")
	st := waitRead(t, nodes[0], (sp.Hot+sp.Warm)/4)
	for _, f := range state(t, nodes[0].p.Base).Fragments {
		if f.Owner != "n2" || f.Standby != "n1" {
			t.Fatalf("fragment %d: owner %s, standby %s; the test needs n2 and n1", f.Fragment, f.Owner, f.Standby)
		}
	}
	owner, standby := nodes[2], nodes[1]
	owner.kill(t)
	if err := standby.p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	t.Logf("n2 killed and n1 told to leave with %d of %d readings read", read(st), sp.Hot+sp.Warm)
	standby.p.Wait() // it leaves once its copies are taken (or after 15 s)
	exampletest.TryJSON(nodes[0].p.Base+"/v1/cluster", &st)
	t.Logf("n1 left; n0 owns %d fragments", owned(st, "n0"))
	checkExact(t, nodes, want)
}

// Five nodes, one fragment: its owner and its standby are killed with
// SIGKILL together, once its checkpoints have settled and their outputs
// reached the sink. The three left hold a majority and take the fragment
// over, but none of them keeps a copy of it. Started from nothing, it
// would deliver count updates under the old lineage's ids with other
// values (both stages of the flow are in the one fragment: nothing
// downstream proves the fresh start stale). It waits instead: its new
// owner knows the newest checkpoint it settled (recovery.Settled) and
// says so in its log. Restarted, the two nodes bring their copies back,
// the fragment goes on from the newest, and the cluster ends exact.
func TestOwnerAndStandbyKilledTheFragmentWaitsForTheirCopies(t *testing.T) {
	t.Parallel()
	sp, want, nodes := watchedClusterOf(t, 5, 4_000, "-fragments", "1")
	st := waitRead(t, nodes[0], (sp.Hot+sp.Warm)/4)
	var owner, standby *node
	waitFor(t, "the fragment's owner and standby", func() bool {
		st = state(t, nodes[0].p.Base)
		if len(st.Fragments) != 1 || st.Fragments[0].Standby == "" {
			return false
		}
		owner, standby = victimOf(t, nodes, st.Fragments[0].Owner), victimOf(t, nodes, st.Fragments[0].Standby)
		return true
	})
	var left []*node
	for _, n := range nodes {
		if n != owner && n != standby {
			left = append(left, n)
		}
	}
	owner.kill(t)
	standby.kill(t)
	t.Logf("%s (owner) and %s (standby) killed with %d of %d readings read", owner.name, standby.name, read(st), sp.Hot+sp.Warm)
	var heir *node
	waitFor(t, "a node left saying the fragment waits for a copy of its settled checkpoint", func() bool {
		for _, n := range left {
			if strings.Contains(n.proc().Stderr(), "it waits for one") {
				heir = n
				return true
			}
		}
		return false
	})
	t.Logf("%s waits for the fragment's copies; restarting %s and %s", heir.name, owner.name, standby.name)
	// Together: a node starts serving once the cluster has its five.
	bin := exampletest.Build(t, "alarms")
	adopt(t, []*node{owner, standby}, []*exampletest.Proc{owner.spawn(t, bin, left[0].gossip), standby.spawn(t, bin, left[0].gossip)})
	checkExact(t, nodes, want)
}

// Two nodes run the flow, and both are killed with SIGKILL once their
// outputs reached the sink. Two new nodes start, each told to join the
// other: neither has applied a placement, and neither began the cluster
// (both have -join). Placed over themselves, they would start every
// fragment from nothing, and their new history would deliver count
// updates under the old one's ids with other values (sim visits seed
// 6345). They wait instead, and say why; the old nodes restart, the four
// place together, and the cluster ends exact.
func TestNewNodesWaitForTheClusterTheyJoin(t *testing.T) {
	t.Parallel()
	sp, want, nodes := watchedClusterOf(t, 2, 4_000)
	st := waitRead(t, nodes[0], (sp.Hot+sp.Warm)/4)
	for _, n := range nodes {
		n.kill(t)
	}
	t.Logf("n0 and n1 killed with %d of %d readings read", read(st), sp.Hot+sp.Warm)
	bin := exampletest.Build(t, "alarms")
	fresh := make([]*node, 2)
	for i := range fresh {
		fresh[i] = &node{name: fmt.Sprintf("n%d", len(nodes)+i), gossip: exampletest.FreePort(t), remote: exampletest.FreePort(t),
			dir: t.TempDir(), args: nodes[0].args, expect: 2}
	}
	// A node serves once it has placed: the new ones are not waited for.
	procs := []*exampletest.Proc{fresh[0].spawn(t, bin, fresh[1].gossip), fresh[1].spawn(t, bin, fresh[0].gossip)}
	waitFor(t, "both new nodes saying they wait for a member that placed", func() bool {
		for _, p := range procs {
			if !strings.Contains(p.Stderr(), "no member seen has applied a placement or began the cluster") {
				return false
			}
		}
		return true
	})
	t.Log("the new nodes wait; restarting n0 and n1")
	procs = append(procs, nodes[0].spawn(t, bin, fresh[0].gossip), nodes[1].spawn(t, bin, fresh[0].gossip))
	all := append(fresh, nodes...)
	adopt(t, all, procs)
	checkExact(t, all, want)
}

// Three nodes, one fragment: its owner is killed with SIGKILL, another
// node takes the fragment over from its standby copy and releases
// outputs, and then the other two are killed as well. All three restart
// at once, and the old owner owns the fragment again. No node runs when
// it places: it cannot tell who owned the fragment while it was away, and
// its own copy is older than the lineage the others ran and released.
// Started from it, the fragment would deliver count updates under that
// lineage's ids with other values (sim visits seed 10488). It gathers
// the others' copies first (actor.ClusterConfig.ColdStart) and goes on
// from the newest, and the cluster ends exact.
func TestClusterRestartedAfterTheOwnerMovedExact(t *testing.T) {
	t.Parallel()
	sp, want, nodes := watchedClusterOf(t, 3, 4_000, "-fragments", "1")
	waitRead(t, nodes[0], (sp.Hot+sp.Warm)/5)
	var owner *node
	waitFor(t, "the fragment's owner", func() bool {
		st := state(t, nodes[0].p.Base)
		if len(st.Fragments) != 1 || st.Fragments[0].Owner == "" {
			return false
		}
		owner = victimOf(t, nodes, st.Fragments[0].Owner)
		return true
	})
	var rest []*node
	for _, n := range nodes {
		if n != owner {
			rest = append(rest, n)
		}
	}
	owner.kill(t)
	st := state(t, rest[0].p.Base)
	t.Logf("%s (owner) killed with %d of %d readings read", owner.name, read(st), sp.Hot+sp.Warm)
	// The fragment runs elsewhere and its outputs are released: the
	// readers commit on past where the owner was killed.
	from := read(st)
	waitFor(t, "another node to run the fragment well past the kill", func() bool {
		st = clusterState{}
		return exampletest.TryJSON(rest[0].p.Base+"/v1/cluster", &st) && len(st.Fragments) == 1 &&
			st.Fragments[0].Owner != owner.name && read(st) >= from+(sp.Hot+sp.Warm)/5
	})
	t.Logf("%s runs the fragment, %d readings read; killing the other two", st.Fragments[0].Owner, read(st))
	for _, n := range rest {
		n.kill(t)
	}
	bin := exampletest.Build(t, "alarms")
	procs := make([]*exampletest.Proc, len(nodes))
	for i, n := range nodes {
		procs[i] = n.spawn(t, bin, nodes[(i+1)%len(nodes)].gossip)
	}
	adopt(t, nodes, procs)
	checkExact(t, nodes, want)
}
