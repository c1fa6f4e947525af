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
	"slices"
	"strings"
	"testing"
	"time"

	pa "github.com/asynkron/protoactor-go/actor"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/internal/freeport"
	"github.com/tessera-streams/tessera/internal/wire"
	"github.com/tessera-streams/tessera/shard"
	"github.com/tessera-streams/tessera/splice"
)

func freeAddr(t *testing.T) string {
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// nodeSpec is what a child process needs to run one engine of a cluster.
type nodeSpec struct {
	Self      string
	Remotes   map[string]string
	Fragments []string
	Readers   []string
	Events    int64
	Keyed     bool // keyedFlow, not the count of words
	Binary    bool // words of bytes that are not valid UTF-8 (binaryWord)
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
	words := word
	if ns.Binary {
		words = binaryWord
	}
	src, _ := gen.New(gen.Config{Partitions: 4, Seed: 5, Events: ns.Events}, words)
	plan, err := wordsFlow(src)
	if ns.Keyed {
		plan, err = keyedFlow(ns.Events)
	}
	if err == nil {
		var e *Engine
		// Checkpoints only when told to: the test sees what a reader
		// commits while these fragments have none.
		e, err = Start(plan, Config{Logger: quiet(), BatchSize: 256, CheckpointInterval: time.Hour,
			Cluster: &ClusterConfig{Self: ns.Self, Remote: ns.Remotes[ns.Self], Epoch: 3, Fragments: ns.Fragments, Readers: ns.Readers, Remotes: ns.Remotes}})
		if err == nil {
			fmt.Println("ready")
			in := bufio.NewScanner(os.Stdin)
			for in.Scan() {
				switch in.Text() {
				case "checkpoint":
					if err := e.Checkpoint(context.Background()); err != nil {
						fmt.Fprintln(os.Stderr, err)
						os.Exit(1)
					}
					fmt.Println("checkpointed")
				case "malformed":
					var batches int64
					for _, f := range e.Fragments() {
						batches += f.Malformed.Load()
					}
					fmt.Println(e.NetStats().Malformed, batches)
				}
			}
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
// every fragment's answer, exactly. A reader commits its source only up to
// what every fragment, on every node, checkpointed.
func TestEnginesAcrossRemote(t *testing.T) {
	const n = 300_000
	g, _ := gen.New(gen.Config{Partitions: 4, Seed: 5, Events: n}, word)
	src := &committingSource{Source: g, commits: map[int][]int64{}}
	want := map[string]int64{}
	for p := range 4 {
		for o := range g.Limit(p) {
			want[g.Event(p, o)]++
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
	var children []child
	for _, nd := range nodes[1:] {
		children = append(children, startChild(t, nodeSpec{Self: nd, Remotes: remotes, Fragments: frags, Readers: readers, Events: n}))
	}
	e, err := Start(countFlow(t, src, ""), Config{Logger: quiet(), BatchSize: 256, CheckpointInterval: 20 * time.Millisecond,
		Cluster: &ClusterConfig{Self: "a", Remote: remotes["a"], Epoch: 3, Fragments: frags, Readers: readers, Remotes: remotes}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	// Every node waits at its start for the others' remotes: the children
	// are ready once this one is.
	for i, ch := range children {
		if line, err := ch.out.ReadString('\n'); err != nil || line != "ready\n" {
			t.Fatalf("node %s: %q, %v", nodes[i+1], line, err)
		}
	}
	t.Logf("this node: %d of 64 fragments, %d of 4 readers", len(e.Fragments()), len(e.Readers()))
	ctx := context.Background()
	waitTotal(t, e, n)
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

	// Everything is applied and this node's fragments checkpoint every
	// 20ms, but the other nodes' fragments have no checkpoint: nothing
	// may be committed.
	if len(e.Readers()) == 0 {
		t.Fatal("this node reads no partition")
	}
	if err := e.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // several local checkpoints
	src.mu.Lock()
	early := fmt.Sprint(src.commits)
	src.mu.Unlock()
	if early != "map[]" {
		t.Fatalf("committed %s before the other nodes' fragments checkpointed", early)
	}
	for i := range e.Readers() {
		if c := e.Committed(i); c != -1 {
			t.Fatalf("reader %d: committed %d before every fragment checkpointed", i, c)
		}
	}
	// Once they have, every partition read here is committed to its end.
	for _, ch := range children {
		fmt.Fprintln(ch.stdin, "checkpoint")
		if line, err := ch.out.ReadString('\n'); err != nil || line != "checkpointed\n" {
			t.Fatalf("child checkpoint: %q, %v", line, err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for i, r := range e.Readers() {
		for c := e.Committed(i); c != g.Limit(r.Partition); c = e.Committed(i) {
			if time.Now().After(deadline) {
				t.Fatalf("partition %d committed %d, want %d", r.Partition, c, g.Limit(r.Partition))
			}
			time.Sleep(10 * time.Millisecond)
		}
		src.mu.Lock()
		last := lastOf(src.commits[r.Partition])
		src.mu.Unlock()
		if last != g.Limit(r.Partition) {
			t.Fatalf("partition %d: source committed %d, want %d", r.Partition, last, g.Limit(r.Partition))
		}
	}

	// Malformed and unknown messages to node b are dropped and counted:
	// batches for another flow, with parts that do not match, for a
	// fragment that does not exist, of records that do not decode; a
	// message its inbox does not know; a checkpoint chunk for another flow.
	bFrag := uint32(0)
	for f, owner := range frags {
		if owner == "b" {
			bFrag = uint32(f)
			break
		}
	}
	root, b := e.sys.Root, remotes["b"]
	self := e.sys.Address()
	root.Send(pa.NewPID(b, "count/inbox"), &wire.Batches{Flow: "other", ReaderAddress: self, ReaderId: "r", Fragments: []uint32{bFrag}, Records: [][]byte{{0}}})
	root.Send(pa.NewPID(b, "count/inbox"), &wire.Batches{Flow: "count", ReaderAddress: self, ReaderId: "r", Fragments: []uint32{bFrag, bFrag}, Records: [][]byte{{0}}})
	root.Send(pa.NewPID(b, "count/inbox"), &wire.Batches{Flow: "count", ReaderAddress: self, ReaderId: "r", Fragments: []uint32{999}, Records: [][]byte{{0}}})
	root.Send(pa.NewPID(b, "count/inbox"), &wire.Batches{Flow: "count", ReaderAddress: self, ReaderId: "r", Fragments: []uint32{bFrag}, Records: [][]byte{{0xff, 0xff, 0xff}}})
	root.Send(pa.NewPID(b, "count/inbox"), &wire.Meta{Flow: "count"})
	root.Send(pa.NewPID(b, "count/replica"), &wire.CheckpointChunk{Flow: "other", Last: true})
	for {
		fmt.Fprintln(children[0].stdin, "malformed")
		line, err := children[0].out.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		var msgs, batches int
		fmt.Sscan(line, &msgs, &batches)
		if msgs == 5 && batches == 1 {
			break
		}
		if msgs > 5 || batches > 1 || time.Now().After(deadline) {
			t.Fatalf("node b counted %d malformed messages and %d malformed batches, want 5 and 1", msgs, batches)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// keyedRec is an event whose key is one of its fields: batches of them to
// other nodes are encoded as the reader routes them.
type keyedRec struct {
	K string
	N int64
}

func keyedGen(events int64) *gen.Source[keyedRec] {
	g, _ := gen.New(gen.Config{Partitions: 4, Seed: 9, Events: events}, func(_ int, o int64, r *gen.Rand) keyedRec {
		return keyedRec{K: fmt.Sprintf("key-%05d", r.Intn(2000)), N: o}
	})
	return g
}

// keyedFlow counts keyedGen's events per key.
func keyedFlow(events int64) (*flowcore.Plan, error) {
	f := flows.New("keyed", flows.WithFragments(64))
	ks := flows.KeyBy(flows.From(f, "gen", keyedGen(events)), func(e keyedRec) string { return e.K })
	flows.Count(ks).View("counts")
	flows.AggregateView(ks.Values(), "total", splice.Count[keyedRec](), func(e keyedRec) keyedRec { return e })
	return flowcore.Compile(f)
}

// Two nodes, this process reading every partition: the batches for the
// other node's fragments are encoded as their records are routed
// (flowcore.Reader.EncodeAhead), and the counts are exact.
func TestEnginesAcrossRemoteEncodedAhead(t *testing.T) {
	const n = 200_000
	g := keyedGen(n)
	want := map[string]int64{}
	for p := range 4 {
		for o := range g.Limit(p) {
			want[g.Event(p, o).K]++
		}
	}
	remotes, frags := twoNodes(t)
	readers := []string{"a", "a", "a", "a"}
	b := startChild(t, nodeSpec{Self: "b", Remotes: remotes, Fragments: frags, Readers: readers, Events: n, Keyed: true})
	plan, err := keyedFlow(n)
	if err != nil {
		t.Fatal(err)
	}
	e, err := Start(plan, Config{Logger: quiet(), BatchSize: 256, CheckpointInterval: time.Hour,
		Cluster: &ClusterConfig{Self: "a", Remote: remotes["a"], Epoch: 3, Fragments: frags, Readers: readers, Remotes: remotes}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	if line, err := b.out.ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("node b: %q, %v", line, err)
	}
	if len(e.Fragments()) == 64 || len(e.Fragments()) == 0 {
		t.Fatalf("this node owns %d of 64 fragments", len(e.Fragments()))
	}
	waitTotal(t, e, n)
	checkView(t, e, "counts", want)
	if m := e.NetStats().Malformed; m != 0 {
		t.Fatalf("%d malformed messages", m)
	}
}

// wordsFlow counts the words of src (view "words") and all of them
// ("total"), in 64 fragments.
func wordsFlow(src flows.Source[string]) (*flowcore.Plan, error) {
	f := flows.New("count", flows.WithFragments(64))
	ks := flows.KeyBy(flows.From(f, "gen", src), flows.Identity[string])
	flows.Count(ks).View("words")
	flows.AggregateView(ks.Values(), "total", splice.Count[string](), flows.Identity[string])
	return flowcore.Compile(f)
}

// twoNodes places 64 fragments on the nodes a and b, whose remotes are at
// free addresses.
func twoNodes(t *testing.T) (remotes map[string]string, frags []string) {
	remotes = map[string]string{"a": freeAddr(t), "b": freeAddr(t)}
	tab := shard.Assign([]string{"a", "b"}, 64, 1)
	frags = make([]string, 64)
	for f := range frags {
		frags[f] = tab.Owner(f)
	}
	return remotes, frags
}

// binaryWord is a word of two bytes that are not valid UTF-8: 0xff, then
// one of 60 bytes.
func binaryWord(_ int, _ int64, r *gen.Rand) string {
	return string([]byte{0xff, byte(0x80 + r.Intn(60))})
}

// Words that are not valid UTF-8 counted on two nodes: this one finds each
// by its bytes, whichever node owns it, and pages after one and by a
// prefix of such bytes go on from it on both nodes. A query's key, after
// and prefix crossed nodes as protobuf strings, which refuse such bytes:
// the query to the other node was never sent and timed out.
func TestEnginesAcrossRemoteKeysNotUTF8(t *testing.T) {
	const n = 20_000
	g, _ := gen.New(gen.Config{Partitions: 4, Seed: 5, Events: n}, binaryWord)
	want := map[string]int64{}
	for p := range 4 {
		for o := range g.Limit(p) {
			want[g.Event(p, o)]++
		}
	}
	remotes, frags := twoNodes(t)
	readers := []string{"a", "a", "b", "b"}
	b := startChild(t, nodeSpec{Self: "b", Remotes: remotes, Fragments: frags, Readers: readers, Events: n, Binary: true})
	src, _ := gen.New(gen.Config{Partitions: 4, Seed: 5, Events: n}, binaryWord)
	plan, err := wordsFlow(src)
	if err != nil {
		t.Fatal(err)
	}
	e, err := Start(plan, Config{Logger: quiet(), BatchSize: 256, CheckpointInterval: time.Hour, QueryTimeout: 5 * time.Second,
		Cluster: &ClusterConfig{Self: "a", Remote: remotes["a"], Epoch: 3, Fragments: frags, Readers: readers, Remotes: remotes}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	if line, err := b.out.ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("node b: %q, %v", line, err)
	}
	waitTotal(t, e, n)
	ctx := context.Background()
	spec, err := splice.FindSpec(e, "words")
	if err != nil {
		t.Fatal(err)
	}
	remote := 0
	for k, c := range want {
		if fr, _ := spec.FragmentOf(k); frags[fr] == "b" {
			remote++
		}
		one, err := splice.Evaluate(ctx, e, splice.Request{View: "words", Op: splice.OpKey, Key: k})
		if err != nil || len(one.Entries) != 1 || one.Entries[0].Value != c {
			t.Fatalf("word %q: %+v, %v; want %d", k, one.Entries, err, c)
		}
	}
	if remote == 0 {
		t.Fatal("no word of node b was asked for")
	}
	// Pages of 7 after the last word of the page before, and of a prefix.
	for _, prefix := range []string{"", "\xff"} {
		got := map[string]int64{}
		q := splice.Query{Limit: 7, Prefix: prefix}
		for {
			res, err := splice.Evaluate(ctx, e, splice.Request{View: "words", Op: splice.OpEntries, Query: q})
			if err != nil {
				t.Fatalf("prefix %q, after %q: %v", prefix, q.After, err)
			}
			for _, en := range res.Entries {
				if _, dup := got[en.Key]; dup {
					t.Fatalf("prefix %q: word %q twice", prefix, en.Key)
				}
				got[en.Key] = en.Value.(int64)
			}
			if !res.More {
				break
			}
			q.After, q.HasAfter = res.Entries[len(res.Entries)-1].Key, true
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("prefix %q: pages held %v, want %v", prefix, got, want)
		}
	}
}

// A node whose remote address is taken fails to start with an error that
// names it, and leaves nothing running.
func TestStartFailsOnTakenRemote(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	g, _ := gen.New(gen.Config{Partitions: 2, Seed: 1, Events: 10}, word)
	_, err = Start(countFlow(t, g, ""), Config{Logger: quiet(),
		Cluster: &ClusterConfig{Self: "a", Remote: addr, Epoch: 1, Fragments: slices.Repeat([]string{"a"}, 64),
			Readers: []string{"a", "a"}, Remotes: map[string]string{"a": addr}}})
	if err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Start on a taken remote address: %v", err)
	}
}

// waitTotal waits until the "total" view counts n events: the view is
// exact once every event is applied.
func waitTotal(t *testing.T, e *Engine, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		res, err := splice.Evaluate(context.Background(), e, splice.Request{View: "total"})
		if err == nil && res.Value == int64(n) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("total %v (%v) after 60s, want %d", res.Value, err, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// child is a node of a test running in a process of its own (nodeEnv):
// its standard input and output.
type child struct {
	stdin io.WriteCloser
	out   *bufio.Reader
}

// startChild starts node spec.Self in a process of its own; the test's
// cleanup closes its input, which stops it, and waits for it.
func startChild(t *testing.T, spec nodeSpec) child {
	t.Helper()
	cmd, stdin, stdout := execNode(t, nodeEnv, spec)
	t.Cleanup(func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("node %s: %v", spec.Self, err)
		}
	})
	return child{stdin, stdout}
}

// execNode starts this test binary as a node process that runs no test:
// env (nodeEnv or stagesEnv) holds spec as JSON, and the node reads its
// orders from stdin and writes its answers to stdout.
func execNode(t *testing.T, env string, spec any) (*exec.Cmd, io.WriteCloser, *bufio.Reader) {
	t.Helper()
	js, _ := json.Marshal(spec)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env+"="+string(js))
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, stdin, bufio.NewReader(stdout)
}
