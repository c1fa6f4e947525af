package actor

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/splice"
)

// The tests of strong productions (recovery.MachineConfig.Confirm) on the
// engine: nodes are child processes on 127.0.0.1, each with its own pebble
// on disk, running a two-stage flow (count per word, then the count
// updates re-keyed by value and counted: how many words reached each
// count). This process runs no remote: protoactor's remote.Start sets
// gRPC's global logger, which races with the connections a remote of an
// earlier test leaves closing.

const stagesEnv = "TESSERA_ACTOR_TEST_STAGES"

// stageSpec is what a child process needs to run one engine of the
// two-stage flow.
type stageSpec struct {
	Self      string
	Dir       string
	Epoch     uint64
	Events    int64
	Remotes   map[string]string
	Fragments []string
	Standbys  []string
	Readers   []string
}

func spectrumPlan(events int64) (*flowcore.Plan, error) {
	src, err := gen.New(gen.Config{Partitions: 4, Seed: 11, Events: events}, word)
	if err != nil {
		return nil, err
	}
	f := flows.New("spectrum", flows.WithFragments(16))
	ks := flows.KeyBy(flows.From(f, "gen", src), flows.Identity[string])
	counts := flows.Count(ks)
	flows.Count(flows.KeyBy(counts.Updates(), func(kv flows.KV[string, int64]) int64 { return kv.Value })).View("spectrum")
	flows.AggregateView(ks.Values(), "total", splice.Count[string](), flows.Identity[string])
	return flowcore.Compile(f)
}

// wantSpectrum is the flow's answer for the first events of the source:
// for each count c, how many words reached it.
func wantSpectrum(events int64) map[string]int64 {
	g, _ := gen.New(gen.Config{Partitions: 4, Seed: 11, Events: events}, word)
	per := map[string]int64{}
	for p := range 4 {
		for o := range g.Limit(p) {
			per[g.Event(p, o)]++
		}
	}
	out := map[string]int64{}
	for _, n := range per {
		for c := int64(1); c <= n; c++ {
			out[strconv.FormatInt(c, 10)]++
		}
	}
	return out
}

// runStageNode runs one engine of the two-stage flow as a child process,
// until its standard input closes; it answers "stale" (how many of its
// fragments refuse their restored copy), "fenced" (standby copies it
// refused from an owner of an older placement), "views" (the spectrum and
// the total, spliced from every node, as JSON), "checkpoint" and "place"
// (the same placement under the next epoch).
func runStageNode(spec string) {
	var ns stageSpec
	if err := json.Unmarshal([]byte(spec), &ns); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	err := func() error {
		plan, err := spectrumPlan(ns.Events)
		if err != nil {
			return err
		}
		store, err := recovery.Open(ns.Dir, nil, quiet())
		if err != nil {
			return err
		}
		defer store.Close()
		e, err := Start(plan, Config{Logger: quiet(), BatchSize: 256, CheckpointInterval: 50 * time.Millisecond, Store: store,
			Cluster: &ClusterConfig{Self: ns.Self, Remote: ns.Remotes[ns.Self], Epoch: ns.Epoch, Fragments: ns.Fragments,
				Standbys: ns.Standbys, Readers: ns.Readers, Remotes: ns.Remotes}})
		if err != nil {
			return err
		}
		defer e.Stop()
		fmt.Println("ready")
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			switch in.Text() {
			case "stale":
				n := 0
				for _, f := range e.Fragments() {
					if f.Stale.Load() {
						n++
					}
				}
				fmt.Println(n)
			case "fenced":
				fmt.Println(e.NetStats().FencedChunks)
			case "views":
				got, total := spectrumOf(e)
				js, _ := json.Marshal(views{Spectrum: got, Total: total})
				fmt.Println(string(js))
			case "checkpoint":
				if err := e.Checkpoint(context.Background()); err != nil {
					return err
				}
				fmt.Println(0)
			case "place":
				ns.Epoch++
				if err := e.Place(&ClusterConfig{Epoch: ns.Epoch, Fragments: ns.Fragments, Standbys: ns.Standbys,
					Readers: ns.Readers, Remotes: ns.Remotes}); err != nil {
					return err
				}
				fmt.Println(0)
			}
		}
		return nil
	}()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// views is a node's answer to "views".
type views struct {
	Spectrum map[string]int64
	Total    int64
}

// stageNode is a child process running runStageNode.
type stageNode struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Reader
	killed bool
}

// startStage starts a child node; it is ready once it printed "ready"
// (ready), which it does only once the other nodes' remotes answer.
func startStage(t *testing.T, spec stageSpec) *stageNode {
	t.Helper()
	cmd, stdin, out := execNode(t, stagesEnv, spec)
	n := &stageNode{t: t, name: spec.Self, cmd: cmd, stdin: stdin, out: out}
	t.Cleanup(func() {
		if n.killed {
			return
		}
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("node %s: %v", n.name, err)
		}
	})
	return n
}

func (n *stageNode) ready() {
	n.t.Helper()
	if line, err := n.out.ReadString('\n'); err != nil || line != "ready\n" {
		n.t.Fatalf("node %s: %q, %v", n.name, line, err)
	}
}

func (n *stageNode) ask(q string) int64 {
	n.t.Helper()
	fmt.Fprintln(n.stdin, q)
	line, err := n.out.ReadString('\n')
	if err != nil {
		n.t.Fatalf("node %s: %v", n.name, err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	if err != nil {
		n.t.Fatalf("node %s answered %q to %s", n.name, line, q)
	}
	return v
}

// views asks the node for the spectrum and the total (-1 while some
// fragment cannot answer).
func (n *stageNode) views() (map[string]int64, int64) {
	n.t.Helper()
	fmt.Fprintln(n.stdin, "views")
	line, err := n.out.ReadString('\n')
	if err != nil {
		n.t.Fatalf("node %s: %v", n.name, err)
	}
	var v views
	if err := json.Unmarshal([]byte(line), &v); err != nil {
		n.t.Fatalf("node %s answered %q: %v", n.name, line, err)
	}
	return v.Spectrum, v.Total
}

// kill stops the node at once (SIGKILL): nothing it holds in memory
// survives.
func (n *stageNode) kill() {
	n.killed = true
	_ = n.cmd.Process.Kill()
	_ = n.cmd.Wait()
}

// spectrumOf is the engine's spectrum view and total (-1, -1 while some
// fragment cannot answer).
func spectrumOf(e *Engine) (map[string]int64, int64) {
	ctx := context.Background()
	tot, err := splice.Evaluate(ctx, e, splice.Request{View: "total"})
	if err != nil {
		return nil, -1
	}
	ans, err := splice.Evaluate(ctx, e, splice.Request{View: "spectrum", Op: splice.OpEntries, Query: splice.Query{Limit: splice.MaxLimit}})
	if err != nil {
		return nil, -1
	}
	got := map[string]int64{}
	for _, en := range ans.Entries {
		got[en.Key] = en.Value.(int64)
	}
	total, _ := tot.Value.(int64)
	return got, total
}

// awaitSpectrum waits until the engine's views equal the flow's answer
// for the first events of the source, and fails with the difference if
// they do not within a minute, or at once if they settled on another.
func awaitSpectrum(t *testing.T, n *stageNode, events int64) {
	t.Helper()
	want := wantSpectrum(events)
	deadline := time.Now().Add(time.Minute)
	for {
		got, total := n.views()
		if total == events && spectrumEqual(got, want) {
			return
		}
		settledWrong(t, got, total, events)
		if time.Now().After(deadline) {
			t.Fatalf("after a minute: total %d of %d, spectrum %s", total, events, spectrumDiff(got, want))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// settledWrong fails if the second stage counted some update twice (a
// value above the answer), or applied as many updates as the input has
// events (one each) but not the right ones. Updates only add: neither can
// come right any more.
func settledWrong(t *testing.T, got map[string]int64, total, events int64) {
	t.Helper()
	want := wantSpectrum(events)
	var sum int64
	for k, v := range got {
		sum += v
		if v > want[k] {
			t.Fatalf("the second stage counted updates twice: %s", spectrumDiff(got, want))
		}
	}
	if total == events && sum == events && !spectrumEqual(got, want) {
		t.Fatalf("the second stage applied %d updates for %d events, not the right ones: %s", sum, events, spectrumDiff(got, want))
	}
}

func spectrumEqual(got, want map[string]int64) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func spectrumDiff(got, want map[string]int64) string {
	var diffs []string
	for k, v := range want {
		if got[k] != v {
			diffs = append(diffs, fmt.Sprintf("%s: %d want %d", k, got[k], v))
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: %d want none", k, v))
		}
	}
	slices.Sort(diffs)
	if len(diffs) > 10 {
		diffs = append(diffs[:10], fmt.Sprintf("and %d more", len(diffs)-10))
	}
	return fmt.Sprintf("%d of %d values differ: %s", len(diffs), len(want), strings.Join(diffs, ", "))
}

// The owner of half the fragments and the node with every standby copy
// are lost at once, and the owner comes back with an empty disk while the
// readers (on the owner) replay the sources from the start, in another
// interleaving: its fragments' outputs would differ from the ones the
// surviving node applied, which a replay cannot undo. They refuse (stale)
// until the standby node returns with its copies, then take them, and the
// surviving node's answer is exact. Without the strong rule the owner
// starts from nothing and the surviving node applies two lineages: some
// counts twice, others never.
func TestOwnerAndStandbyLostThenExact(t *testing.T) {
	t.Parallel() // no remote in this process (see TestMain)
	const first, all = 40_000, 80_000
	remotes := map[string]string{"a": freeAddr(t), "b": freeAddr(t), "s": freeAddr(t)}
	frags := make([]string, 16)
	for f := range frags {
		frags[f] = []string{"a", "b"}[f%2]
	}
	spec := stageSpec{Epoch: 3, Remotes: remotes, Fragments: frags, Standbys: slices.Repeat([]string{"s"}, 16),
		Readers: slices.Repeat([]string{"a"}, 4)}
	sSpec, aSpec, bSpec := spec, spec, spec
	sSpec.Self, sSpec.Dir, sSpec.Events = "s", t.TempDir(), first
	aSpec.Self, aSpec.Dir, aSpec.Events = "a", t.TempDir(), first
	bSpec.Self, bSpec.Dir, bSpec.Events = "b", t.TempDir(), all // it reads no partition
	s, a, b := startStage(t, sSpec), startStage(t, aSpec), startStage(t, bSpec)
	s.ready()
	a.ready()
	b.ready()
	awaitSpectrum(t, b, first)

	// Both copies of a's fragments are gone: its disk, and the standby
	// node (down). a comes back empty and reads all of the input.
	a.kill()
	s.kill()
	aSpec.Dir, aSpec.Events = t.TempDir(), all
	a = startStage(t, aSpec)
	a.ready()
	deadline := time.Now().Add(time.Minute)
	for a.ask("stale") == 0 {
		got, total := b.views()
		settledWrong(t, got, total, all)
		if time.Now().After(deadline) {
			t.Fatalf("no fragment on a refused its empty start, though b applied its outputs (total %d of %d, spectrum %s)",
				total, int64(all), spectrumDiff(got, wantSpectrum(all)))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The standby node returns with its copies: a's stale fragments
	// fetch them and go on from there.
	s = startStage(t, sSpec)
	s.ready()
	awaitSpectrum(t, b, all)
	if n := a.ask("stale"); n != 0 {
		t.Fatalf("%d fragments still stale on a", n)
	}
}

// A checkpoint's exchange outputs leave only once its standby confirmed
// its copy: with a standby that refuses every copy (it runs a newer
// placement than the owner), the second stage gets nothing however many
// checkpoints are durable here; once the owner's placement catches up,
// the standby takes the copies, confirms them, and the answer is exact.
func TestStandbyConfirmationGatesRelease(t *testing.T) {
	t.Parallel() // no remote in this process (see TestMain)
	const events = 40_000
	remotes := map[string]string{"p": freeAddr(t), "s": freeAddr(t)}
	spec := stageSpec{Events: events, Remotes: remotes, Fragments: slices.Repeat([]string{"p"}, 16),
		Readers: slices.Repeat([]string{"p"}, 4)}
	sSpec, pSpec := spec, spec
	sSpec.Self, sSpec.Dir, sSpec.Epoch = "s", t.TempDir(), 5
	pSpec.Self, pSpec.Dir, pSpec.Epoch = "p", t.TempDir(), 3
	pSpec.Standbys = slices.Repeat([]string{"s"}, 16)
	s, p := startStage(t, sSpec), startStage(t, pSpec)
	s.ready()
	p.ready()
	deadline := time.Now().Add(time.Minute)
	for {
		if _, total := p.views(); total == events {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first stage did not apply the input within a minute")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Three rounds of checkpoints, each durable on p: outputs released by
	// one are in the second stage's mailboxes before the next round's
	// request, and applied once it returns.
	for range 3 {
		p.ask("checkpoint")
	}
	for s.ask("fenced") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the standby refused no copy within a minute")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got, _ := p.views(); len(got) != 0 {
		t.Fatalf("the second stage applied outputs of checkpoints its standby never confirmed: %s", spectrumDiff(got, nil))
	}
	// The owner's placement catches up with the standby's: the copies it
	// sends again are taken and confirmed.
	p.ask("place") // epoch 4
	p.ask("place") // 5
	p.ask("place") // 6
	awaitSpectrum(t, p, events)
}
