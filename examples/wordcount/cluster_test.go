package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/internal/exampletest"
)

// Three processes on 127.0.0.1 form a cluster: each reads some generator
// partitions and owns a share of the fragments; every node answers with
// the global view, equal to a sequential count. Once the bounded input is
// applied, a snapshot read says complete, and its cut is the whole input;
// a min_offsets beyond the input's end is a JSON 504 that says what it
// waited for, not a hang.
func TestThreeNodesExact(t *testing.T) {
	t.Parallel()
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
		exampletest.GetJSON(t, procs[0].Base+"/v1/views/total", &total)
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
	exampletest.GetJSON(t, procs[1].Base+"/v1/cluster", &st)
	if len(st.Members) != 3 || len(st.Fragments) != 32 || len(st.Placement.Fragments) != 32 || st.Placement.Epoch == 0 {
		t.Fatalf("cluster state: %+v", st)
	}
	snapshotComplete(t, procs, n)
}

// startCluster starts n wordcount processes that form a cluster (the first
// starts it, the others join it) and waits for their URLs.
func startCluster(t *testing.T, bin string, n int, common ...string) (procs []*exampletest.Proc, gossip []string) {
	t.Helper()
	for range n {
		gossip = append(gossip, exampletest.FreePort(t))
	}
	for i := range n {
		procs = append(procs, startNode(t, bin, fmt.Sprintf("n%d", i), gossip[i], gossip[0], n, common...))
	}
	for _, p := range procs {
		p.WaitURL(t)
	}
	return procs, gossip
}

func startNode(t *testing.T, bin, name, gossip, seed string, expect int, common ...string) *exampletest.Proc {
	args := append([]string{"-node", name, "-http", exampletest.FreePort(t), "-gossip", gossip,
		"-remote", exampletest.FreePort(t), "-expect", fmt.Sprint(expect), "-data", t.TempDir(),
		"-progress", "0", "-log-level", "warn"}, common...)
	if gossip != seed {
		args = append(args, "-join", seed)
	}
	return exampletest.Start(t, bin, args...)
}

// waitExact waits until base's global total is n, then compares every
// word with a sequential count.
func waitExact(t *testing.T, base string, n int64, seed uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var total struct{ Value int64 }
		resp, err := http.Get(base + "/v1/views/total")
		if err == nil {
			if resp.StatusCode == 200 {
				json.NewDecoder(resp.Body).Decode(&total)
			}
			resp.Body.Close()
		}
		if total.Value == n {
			break
		}
		if total.Value > n {
			t.Fatalf("total %d exceeds %d: counted twice", total.Value, n)
		}
		if time.Now().After(deadline) {
			if resp, err := http.Get(base + "/v1/cluster"); err == nil {
				var st json.RawMessage
				json.NewDecoder(resp.Body).Decode(&st)
				resp.Body.Close()
				t.Logf("cluster state: %s", st)
			}
			t.Fatalf("total %d after 90s, want %d", total.Value, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	got := allWords(t, base)
	for w, c := range sequentialCounts(n, 4, seed) {
		if got[w] != c {
			t.Fatalf("%s = %d, want %d", w, got[w], c)
		}
	}
}

// A node killed mid-stream: its fragments and source partitions move to
// the others, which replay what they miss; the result is exact. While it
// dies, a client queries another node every 100 ms: every answer comes
// quickly and is a 200 or a JSON 503 that names the moving fragments
// (checkAnswers).
func TestNodeKilledMidStreamExact(t *testing.T) {
	t.Parallel()
	const n = 2_000_000
	bin := exampletest.Build(t, "wordcount")
	// At 250,000 events/s the input lasts past the failover: the queries
	// meet fragments that move and replay.
	procs, _ := startCluster(t, bin, 3, "-events", fmt.Sprint(n), "-seed", "21", "-fragments", "32", "-rate", "250000",
		"-checkpoint-interval", "200ms")
	waitTotalAtLeast(t, procs[0].Base, 100_000)
	q := startQueries(t, procs[0].Base, []string{"/v1/views/words?top=3", "/v1/views/total", "/v1/views/words/keys/w0000"})
	for q.count() < 10 { // a second of answers before the kill
		time.Sleep(20 * time.Millisecond)
	}
	type fragment struct {
		Fragment       int
		Owner, Standby string
		Epoch          uint64
		RestoredEpoch  uint64 `json:"restored_epoch"`
		RestoredEvents int64  `json:"restored_events"`
	}
	var before struct{ Fragments []fragment }
	exampletest.GetJSON(t, procs[2].Base+"/v1/cluster?scope=local", &before)
	q.kill(func() {
		if err := procs[2].Cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	})
	procs[2].Wait()
	waitFresh(t, procs[0].Base, q.killed())
	checkAnswers(t, q.stop())
	waitExact(t, procs[0].Base, n, 21)
	t.Logf("exact %v after the kill", time.Since(q.killed()))
	var st struct {
		Members   []struct{ Name string }
		Fragments []fragment
	}
	exampletest.GetJSON(t, procs[1].Base+"/v1/cluster", &st)
	if len(st.Members) != 2 || len(st.Fragments) != 32 {
		t.Fatalf("after the kill: %d members, %d fragments", len(st.Members), len(st.Fragments))
	}
	// The killed node's fragments restarted on their standbys from the
	// copies of their checkpoints, not from nothing.
	if len(before.Fragments) == 0 {
		t.Fatal("the killed node owned no fragment")
	}
	for _, b := range before.Fragments {
		a := st.Fragments[b.Fragment]
		if b.Standby == "" || a.Owner != b.Standby || a.RestoredEpoch == 0 || a.RestoredEvents == 0 {
			t.Fatalf("fragment %d (epoch %d on n2, standby %q) now on %s from checkpoint %d (%d events)",
				b.Fragment, b.Epoch, b.Standby, a.Owner, a.RestoredEpoch, a.RestoredEvents)
		}
	}
}

// until polls cond every 50 ms until it holds, or fails after limit.
func until(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", limit, what)
		}
	}
}

// countedAtLeast waits until the cluster counted at least min events: a fault
// injected then lands mid-stream, however slowly the nodes started.
func countedAtLeast(t *testing.T, base string, min int64) {
	t.Helper()
	until(t, 60*time.Second, fmt.Sprintf("%d events counted", min), func() bool {
		var total struct{ Value int64 }
		return exampletest.TryJSON(base+"/v1/views/total", &total) && total.Value >= min
	})
}

// A fourth node joins mid-stream and takes over fragments; then a node
// leaves gracefully (SIGTERM) and hands its fragments off. Exact.
func TestJoinAndLeaveExact(t *testing.T) {
	t.Parallel()
	const n = 3_000_000
	bin := exampletest.Build(t, "wordcount")
	common := []string{"-events", fmt.Sprint(n), "-seed", "23", "-fragments", "30", "-rate", "400000", "-checkpoint-interval", "200ms"}
	procs, gossip := startCluster(t, bin, 3, common...)
	countedAtLeast(t, procs[0].Base, n/5)
	type reader struct {
		Partition        int
		Position, Events int64
	}
	var before struct{ Readers []reader }
	exampletest.GetJSON(t, procs[0].Base+"/v1/cluster", &before)
	p4 := startNode(t, bin, "n3", exampletest.FreePort(t), gossip[0], 1, common...)
	p4.WaitURL(t)
	type fragment struct {
		Fragment       int
		Owner          string
		Events         int64
		RestoredEvents int64 `json:"restored_events"`
	}
	// Until the new node runs what the placement gave it: a source
	// partition, and fragments that each took a checkpoint of their own
	// since they started (one that waits for its hand-off takes none; the
	// checks below say what each restored).
	until(t, 30*time.Second, "the new node to run fragments and a partition", func() bool {
		var st struct {
			Fragments []struct {
				Epoch         uint64
				RestoredEpoch uint64 `json:"restored_epoch"`
			}
			Readers []reader
		}
		if !exampletest.TryJSON(p4.Base+"/v1/cluster?scope=local", &st) || len(st.Fragments) == 0 || len(st.Readers) == 0 {
			return false
		}
		for _, f := range st.Fragments {
			if f.Epoch <= f.RestoredEpoch {
				return false
			}
		}
		return true
	})
	// The fragments the new node took waited for their old owners'
	// hand-offs: each restored what its old owner had counted, and asked
	// the readers to replay only what followed, while the fragment moved.
	// (Starting from its empty store instead, each would ask every reader
	// for its partition again from offset 0: more than all read before the
	// join.)
	var st struct{ Fragments []fragment }
	exampletest.GetJSON(t, p4.Base+"/v1/cluster?scope=local", &st)
	if len(st.Fragments) == 0 {
		t.Fatal("the new node took no fragment")
	}
	for _, f := range st.Fragments {
		if f.RestoredEvents == 0 {
			t.Errorf("fragment %d on the new node restored nothing from a hand-off", f.Fragment)
		}
	}
	// With 30 fragments, the new node also takes source partition 0: it
	// reads it from where the cluster committed it, not from the start.
	var own struct{ Readers []reader }
	exampletest.GetJSON(t, p4.Base+"/v1/cluster?scope=local", &own)
	if len(own.Readers) == 0 {
		t.Error("the new node took no source partition")
	}
	for _, r := range own.Readers {
		if r.Events >= r.Position {
			t.Errorf("partition %d: the new node read %d events to reach %d: it started from the beginning", r.Partition, r.Events, r.Position)
		}
	}
	var joined struct{ Readers []reader }
	exampletest.GetJSON(t, p4.Base+"/v1/cluster", &joined)
	for _, b := range before.Readers {
		for _, r := range joined.Readers {
			if r.Partition == b.Partition && r.Events-r.Position >= b.Position {
				t.Errorf("partition %d: read again %d events after the join, of %d read before it", r.Partition, r.Events-r.Position, b.Position)
			}
		}
	}
	var leaving struct{ Fragments []fragment }
	exampletest.GetJSON(t, procs[1].Base+"/v1/cluster?scope=local", &leaving)
	if err := procs[1].Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := procs[1].Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, procs[1].Stderr())
	}
	// The leaving node handed its fragments over with a checkpoint taken
	// as it left: no older than what it had counted before.
	var after struct{ Fragments []fragment }
	exampletest.GetJSON(t, p4.Base+"/v1/cluster", &after)
	if len(leaving.Fragments) == 0 {
		t.Fatal("the leaving node owned no fragment")
	}
	for _, b := range leaving.Fragments {
		if a := after.Fragments[b.Fragment]; a.RestoredEvents < b.Events {
			t.Fatalf("fragment %d: %d events on the leaving node, restored on %s from %d", b.Fragment, b.Events, a.Owner, a.RestoredEvents)
		}
	}
	waitExact(t, p4.Base, n, 23)
}

// A node cut off from the others (stopped with SIGSTOP, so it misses the
// failure detection and the new placement) comes back still believing it
// owns its fragments: it finds that no majority heard it lately and stops
// owning (cluster's doc, "Quorum"), and what it sent under its old
// placement epoch before it noticed is fenced; it rejoins, and the result
// is exact.
func TestStaleOwnerFencedExact(t *testing.T) {
	t.Parallel()
	const n = 2_000_000
	bin := exampletest.Build(t, "wordcount")
	procs, _ := startCluster(t, bin, 3, "-events", fmt.Sprint(n), "-seed", "29", "-fragments", "32", "-rate", "300000",
		"-checkpoint-interval", "200ms")
	countedAtLeast(t, procs[0].Base, n/5)
	stale := procs[2]
	if err := stale.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// Wait until the others placed its fragments elsewhere.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var st struct{ Members []struct{ Name string } }
		exampletest.GetJSON(t, procs[0].Base+"/v1/cluster?scope=local", &st)
		if len(st.Members) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the stopped node was never declared dead")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Until the survivors run the new placement: they own every fragment.
	until(t, 30*time.Second, "the survivors to own every fragment", func() bool {
		owned := 0
		for _, p := range procs[:2] {
			var st struct{ Fragments []struct{ Fragment int } }
			if !exampletest.TryJSON(p.Base+"/v1/cluster?scope=local", &st) {
				return false
			}
			owned += len(st.Fragments)
		}
		return owned == 32
	})
	if err := stale.Cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitExact(t, procs[0].Base, n, 29)
	var st struct {
		Members   []struct{ Name string }
		Fragments []struct{ Fenced int64 }
		Network   map[string]struct {
			Fenced int64 `json:"checkpoint_chunks_fenced"`
		}
	}
	exampletest.GetJSON(t, procs[0].Base+"/v1/cluster", &st)
	var fenced int64
	for _, f := range st.Fragments {
		fenced += f.Fenced
	}
	for _, nw := range st.Network {
		fenced += nw.Fenced
	}
	var h struct{ Timeline []struct{ Kind string } }
	exampletest.GetJSON(t, stale.Base+"/v1/cluster/history?scope=local", &h)
	itself := slices.ContainsFunc(h.Timeline, func(ev struct{ Kind string }) bool { return ev.Kind == "fenced" })
	if fenced == 0 && !itself {
		t.Fatal("nothing from the stale owner was fenced, and it did not stop owning itself")
	}
	t.Logf("%d members after the stale node came back; %d batches and checkpoint chunks fenced; it stopped owning itself: %v",
		len(st.Members), fenced, itself)
	waitExact(t, stale.Base, n, 29)
}

// The whole cluster stopped at once mid-stream (SIGTERM to every node, as
// make demo's Ctrl-C does) keeps every fragment in its owner's final
// checkpoint; started again on the same data, it ends exact, and its
// fragments restored those checkpoints rather than replaying from nothing.
func TestClusterStoppedAndRestartedExact(t *testing.T) {
	t.Parallel()
	const n = 2_000_000
	bin := exampletest.Build(t, "wordcount")
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	start := func() []*exampletest.Proc {
		var gossip []string
		for range 3 {
			gossip = append(gossip, exampletest.FreePort(t))
		}
		var procs []*exampletest.Proc
		for i := range 3 {
			procs = append(procs, startNode(t, bin, fmt.Sprintf("n%d", i), gossip[i], gossip[0], 3, "-events", fmt.Sprint(n),
				"-seed", "31", "-fragments", "32", "-rate", "400000", "-checkpoint-interval", "200ms", "-data", dirs[i]))
		}
		for _, p := range procs {
			p.WaitURL(t)
		}
		return procs
	}
	procs := start()
	countedAtLeast(t, procs[0].Base, n/5)
	for _, p := range procs {
		if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range procs {
		if err := p.Wait(); err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, p.Stderr())
		}
	}
	procs = start()
	var st struct {
		Fragments []struct {
			Fragment       int
			RestoredEvents int64 `json:"restored_events"`
		}
	}
	exampletest.GetJSON(t, procs[0].Base+"/v1/cluster", &st)
	restored := 0
	for _, f := range st.Fragments {
		if f.RestoredEvents > 0 {
			restored++
		}
	}
	if len(st.Fragments) != 32 || restored != 32 {
		t.Fatalf("after the restart: %d of %d fragments restored a checkpoint", restored, len(st.Fragments))
	}
	waitExact(t, procs[1].Base, n, 31)
}
