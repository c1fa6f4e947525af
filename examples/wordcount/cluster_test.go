package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/internal/exampletest"
)

// Three processes on 127.0.0.1 form a cluster: each reads some generator
// partitions and owns a share of the fragments; every node answers with
// the global view, equal to a sequential count.
func TestThreeNodesExact(t *testing.T) {
	const n = 1_000_000
	bin := exampletest.Build(t, "wordcount")
	var gossip []string
	for range 3 {
		gossip = append(gossip, exampletest.FreePort(t))
	}
	var procs []*exampletest.Proc
	for i := range 3 {
		args := []string{"-events", fmt.Sprint(n), "-seed", "9", "-fragments", "32", "-progress", "0", "-log-level", "warn",
			"-node", fmt.Sprintf("n%d", i), "-http", exampletest.FreePort(t), "-gossip", gossip[i],
			"-remote", exampletest.FreePort(t), "-expect", "3", "-data", t.TempDir()}
		if i > 0 {
			args = append(args, "-join", gossip[0])
		}
		procs = append(procs, exampletest.Start(t, bin, args...))
	}
	for _, p := range procs {
		p.WaitURL(t)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		var total struct{ Value int64 }
		getJSON(t, procs[0].Base+"/v1/views/total", &total)
		if total.Value == n {
			break
		}
		if total.Value > n || time.Now().After(deadline) {
			t.Fatalf("total %d, want %d", total.Value, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	want := sequentialCounts(n, 4, 9)
	for i, p := range procs {
		got := allWords(t, p.Base)
		if len(got) != len(want) {
			t.Fatalf("node %d: %d words, want %d", i, len(got), len(want))
		}
		for w, c := range want {
			if got[w] != c {
				t.Fatalf("node %d: %s = %d, want %d", i, w, got[w], c)
			}
		}
	}
	var st struct {
		Members   []struct{ Name, Status string }
		Placement struct {
			Epoch     uint64
			Fragments []string
		}
		Fragments []struct{ Fragment int }
	}
	getJSON(t, procs[1].Base+"/v1/cluster", &st)
	if len(st.Members) != 3 || len(st.Fragments) != 32 || len(st.Placement.Fragments) != 32 || st.Placement.Epoch == 0 {
		t.Fatalf("cluster state: %+v", st)
	}
}
