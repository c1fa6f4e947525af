package actor

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/shard"
	"github.com/tessera-streams/tessera/splice"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// nodeSpec is what a child process needs to run one engine of a cluster.
type nodeSpec struct {
	Self      string
	Remotes   map[string]string
	Fragments []string
	Readers   []string
	Events    int64
}

const nodeEnv = "TESSERA_ACTOR_TEST_NODE"

// runChildNode runs one engine as a child process of the test, until its
// standard input closes (the test ended or died).
func runChildNode(spec string) {
	var ns nodeSpec
	if err := json.Unmarshal([]byte(spec), &ns); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	src, _ := gen.New(gen.Config{Partitions: 4, Seed: 5, Events: ns.Events}, word)
	f := flows.New("count", flows.WithFragments(64))
	ks := flows.KeyBy(flows.From(f, "gen", src), flows.Identity[string])
	flows.Count(ks).View("words")
	flows.AggregateView(ks.Values(), "total", splice.Count[string](), flows.Identity[string])
	plan, err := f.Plan()
	if err == nil {
		var e *Engine
		e, err = Start(plan, Config{Logger: quiet(), BatchSize: 256,
			Cluster: &ClusterConfig{Self: ns.Self, Remote: ns.Remotes[ns.Self], Epoch: 3, Fragments: ns.Fragments, Readers: ns.Readers, Remotes: ns.Remotes}})
		if err == nil {
			fmt.Println("ready")
			io.Copy(io.Discard, os.Stdin)
			e.Stop()
			os.Exit(0)
		}
	}
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

// Three nodes on 127.0.0.1 — this process and two child processes — each
// owning a share of the fragments and reading some source partitions:
// batches cross over protoactor remote, and a query on this node splices
// every fragment's answer, exactly.
func TestEnginesAcrossRemote(t *testing.T) {
	const n = 300_000
	src, _ := gen.New(gen.Config{Partitions: 4, Seed: 5, Events: n}, word)
	want := map[string]int64{}
	for p := range 4 {
		for o := range src.Limit(p) {
			want[src.Event(p, o)]++
		}
	}
	nodes := []string{"a", "b", "c"}
	remotes := map[string]string{}
	for _, nd := range nodes {
		remotes[nd] = freeAddr(t)
	}
	tab := shard.Assign(nodes, 64, 1)
	frags := make([]string, 64)
	for f := range frags {
		frags[f] = tab.Owner(f)
	}
	var readers []string
	for p := range 4 {
		readers = append(readers, shard.Place(1000+p, nodes, 1)[0])
	}
	for _, nd := range nodes[1:] {
		spec, _ := json.Marshal(nodeSpec{Self: nd, Remotes: remotes, Fragments: frags, Readers: readers, Events: n})
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), nodeEnv+"="+string(spec))
		cmd.Stderr = os.Stderr
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			stdin.Close()
			if err := cmd.Wait(); err != nil {
				t.Errorf("node %s: %v", nd, err)
			}
		})
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil || line != "ready\n" {
			t.Fatalf("node %s: %q, %v", nd, line, err)
		}
	}
	e, err := Start(countFlow(t, src, ""), Config{Logger: quiet(), BatchSize: 256,
		Cluster: &ClusterConfig{Self: "a", Remote: remotes["a"], Epoch: 3, Fragments: frags, Readers: readers, Remotes: remotes}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	t.Logf("this node: %d of 64 fragments, %d of 4 readers", len(e.Fragments()), len(e.Readers()))
	ctx := context.Background()
	deadline := time.Now().Add(60 * time.Second)
	for {
		res, err := splice.Evaluate(ctx, e, splice.Request{View: "total"})
		if err == nil && res.Value == int64(n) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("total %v (%v) after 60s, want %d", res.Value, err, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	all, err := splice.Evaluate(ctx, e, splice.Request{View: "words", Op: splice.OpEntries, Query: splice.Query{Limit: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Entries) != len(want) || len(all.Freshness) != 64 {
		t.Fatalf("%d words from %d fragments, want %d", len(all.Entries), len(all.Freshness), len(want))
	}
	for _, en := range all.Entries {
		if en.Value != want[en.Key] {
			t.Fatalf("%s = %v, want %d", en.Key, en.Value, want[en.Key])
		}
	}
	for _, w := range []string{"w007", "w123", "w499"} {
		one, err := splice.Evaluate(ctx, e, splice.Request{View: "words", Op: splice.OpKey, Key: w})
		if err != nil || one.Entries[0].Value != want[w] {
			t.Fatalf("%s = %v (%v)", w, one.Entries, err)
		}
	}
	top, err := splice.Evaluate(ctx, e, splice.Request{View: "words", Op: splice.OpEntries, Query: splice.Query{Limit: 10, Top: 3}})
	if err != nil || len(top.Entries) != 3 {
		t.Fatalf("top 3: %v, %v", top.Entries, err)
	}
	for _, fr := range e.Fragments() {
		if fr.Malformed.Load() != 0 || fr.Fenced.Load() != 0 {
			t.Fatalf("fragment %d: %d malformed, %d fenced", fr.ID, fr.Malformed.Load(), fr.Fenced.Load())
		}
	}
}
