package main

import (
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
