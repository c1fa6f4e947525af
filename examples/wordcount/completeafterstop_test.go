package main

import (
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/internal/exampletest"
)

// A bounded input on three nodes, and one owner killed the moment the
// input ends: an answer says complete only when it counts all of it, on
// the nodes that stay, while the killed node's fragments restore from
// their standbys' copies and replay; a snapshot read says complete, with
// the whole input, once they have. Watches end at the final view, with
// no input after the kill to send them the changes they might miss.
func TestCompleteOnlyWhenAllCountedAfterOwnerKilled(t *testing.T) {
	t.Parallel()
	completeAfterOwnerStops(t, 53, syscall.SIGKILL)
}

// The same with the owner leaving (SIGTERM) as the input ends: its
// fragments are handed off whole, and the new owners say complete once
// they restored them, with all the input.
func TestCompleteOnlyWhenAllCountedAfterOwnerLeaves(t *testing.T) {
	t.Parallel()
	completeAfterOwnerStops(t, 67, syscall.SIGTERM)
}

func completeAfterOwnerStops(t *testing.T, seed uint64, sig syscall.Signal) {
	const n, frags = 600_000, 16
	bin := exampletest.Build(t, "wordcount")
	o := newInputOracle(n, 4, seed, frags, oracleWords...)
	procs, _ := startCluster(t, bin, 3, "-events", fmt.Sprint(n), "-seed", fmt.Sprint(seed), "-fragments", fmt.Sprint(frags),
		"-rate", "150000", "-checkpoint-interval", "500ms")
	bases := []string{procs[0].Base, procs[1].Base, procs[2].Base}
	countedAtLeast(t, bases[0], 50_000)
	converged := followWatches(t, o, frags, bases[0], bases[1])
	probes := newReadProbes(t)
	for _, node := range []int{0, 1} {
		for _, path := range readPaths {
			probes.loop(node, bases[node], path)
		}
	}
	// The moment the victim's own fragments have counted the input's
	// end, before their next checkpoint reaches the standbys.
	until(t, 60*time.Second, "the input to end", func() bool {
		var total struct{ Value int64 }
		return exampletest.TryJSON(bases[2]+"/v1/views/total", &total) && total.Value == n
	})
	if err := procs[2].Cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	procs[2].Wait()
	stopped := time.Now()
	t.Logf("stopped at %s", stopped.Format("15:04:05.000"))
	// Until a snapshot read says complete on both nodes that stay.
	for _, node := range []int{0, 1} {
		until(t, 60*time.Second, "a complete snapshot answer", func() bool {
			var a snapAnswer
			return exampletest.TryJSON(bases[node]+"/v1/views/total?consistency=snapshot&timeout=8s", &a) && a.Complete
		})
	}
	t.Logf("complete %v after it stopped", time.Since(stopped).Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond) // answers after it too
	answers := probes.stop()
	checkReads(t, o, frags, answers)
	complete := 0
	for _, a := range answers {
		if a.start.After(stopped) && a.status == http.StatusOK && strings.Contains(string(a.body), `"complete":true`) {
			complete++
		}
	}
	if complete == 0 {
		t.Errorf("no answer after it stopped said complete")
	}
	converged(n, seed)
}
