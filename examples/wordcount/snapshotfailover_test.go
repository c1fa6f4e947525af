package main

import (
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/internal/exampletest"
)

// A snapshot read asked as the node that reads a source partition dies
// cannot have a cut at first — the partition's reader is gone — but it
// goes on trying within its timeout, and the cluster places the reader on
// another node within a few seconds: a read answers once a cut can be
// had, as a read asked later does, not only when protoactor gives up on
// the dead node (about 10 s) or its timeout ends (a 504).
func TestSnapshotReadDuringFailoverAnswersOnceACutIsHad(t *testing.T) {
	t.Parallel()
	bin := exampletest.Build(t, "wordcount")
	procs, _ := startCluster(t, bin, 3, "-seed", "59", "-fragments", "16", "-rate", "100000", "-checkpoint-interval", "200ms")
	countedAtLeast(t, procs[0].Base, 50_000)
	// The victim reads a source partition: a cut needs its reader.
	victim := readerNode(t, procs)
	var stay []int
	for i := range procs {
		if i != victim {
			stay = append(stay, i)
		}
	}
	probes := newReadProbes(t)
	for _, node := range stay {
		probes.every(node, procs[node].Base, "/v1/views/total?consistency=snapshot&timeout=30s", 250*time.Millisecond)
	}
	until(t, 30*time.Second, "snapshot reads before the kill", func() bool { return probes.count() >= 8 })
	if err := procs[victim].Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	procs[victim].Wait()
	killed := time.Now()
	waitFresh(t, procs[stay[0]].Base, killed)
	// Until every read asked before the cluster served again has
	// answered, and more after.
	until(t, 60*time.Second, "the reads asked at the kill to answer", func() bool {
		probes.mu.Lock()
		defer probes.mu.Unlock()
		after := 0
		for _, a := range probes.answers {
			if a.start.After(killed.Add(5 * time.Second)) {
				after++
			}
		}
		return after >= 8 && len(probes.answers) >= int(time.Since(killed)/(250*time.Millisecond))*len(stay)
	})
	answers := probes.stop()
	// No read answers long after one asked after it, on the same node,
	// answered with a cut: it could have had that cut too. (The margin is
	// the later read's own time twice over, and a second: EvaluateRead
	// tries again every 100 ms at most.)
	bad := 0
	for _, a := range answers {
		if a.err != nil {
			t.Errorf("no answer: %v\n  %s", a.err, a)
			continue
		}
		for _, b := range answers {
			if b.node != a.node || !b.start.After(a.start) || b.status != http.StatusOK {
				continue
			}
			if late := a.end.Sub(b.end); late > 2*b.end.Sub(b.start)+time.Second {
				if bad++; bad <= 5 {
					t.Errorf("a snapshot read asked %v after the kill answered %v after one asked %v after it had its cut:\n  %s\n  %s",
						a.start.Sub(killed).Round(time.Millisecond), late.Round(time.Millisecond), b.start.Sub(a.start).Round(time.Millisecond), a, b)
				}
				break
			}
		}
	}
	t.Logf("%d snapshot reads, %d answered late", len(answers), bad)
}

// readerNode is the index of a node in procs that reads a source
// partition (the last one that does).
func readerNode(t *testing.T, procs []*exampletest.Proc) int {
	t.Helper()
	victim := -1
	for i, p := range procs {
		var st struct{ Readers []struct{ Partition int } }
		exampletest.GetJSON(t, p.Base+"/v1/cluster?scope=local", &st)
		if len(st.Readers) > 0 {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatal("no node reads a partition")
	}
	return victim
}
