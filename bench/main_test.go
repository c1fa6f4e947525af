package main

import (
	"encoding/json"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(nodeEnv) != "" {
		os.Exit(nodeMain(os.Args[1:])) // a node of the cluster workloads
	}
	goleak.VerifyTestMain(m)
}

// A tiny run of the whole suite: every engine result is checked against the
// baselines inside, and the results file has what tools read.
func TestSmallRun(t *testing.T) {
	out := t.TempDir()
	p := params{events: 40_000, keys: 500, fragments: 8, partitions: 2, rounds: 1, batch: 64, baselineBatch: 64, quick: true}
	if err := run(p, out, io.Discard); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(out, "latest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rs []Result
	if err := json.Unmarshal(b, &rs); err != nil {
		t.Fatal(err)
	}
	byName := map[string]Result{}
	// The rows with a goal; every other row says it has none.
	goals := map[string]string{"checkpoint-overhead": "ratio >= 0.9", "recovery": "restore_ms <= 1000", "query-latency": "p99_ms <= 5 and top_p99_ms <= 20", "watchers": "p99_ms <= 5", "two-stage": "ratio >= 0.5",
		"http-ingest": "ratio >= 0.4", "kafka-source": "ratio >= 0.5", "kafka-eos-sink": "ratio >= 0.5",
		"kafka-ingest": "ratio >= 0.5", "nats-ingest": "ratio >= 0.5",
		"transport": "events_per_sec >= 1.5e+06", "three-nodes": "cpu_ratio <= 1.5", "three-nodes-keyed": "cpu_ratio <= 1.5",
		"sliding-30m": "vs_tumbling >= 0.8", "session-windows": "ratio >= 0.5", "tumbling-1m": "ratio >= 0.6 and rss_ratio <= 2",
		"keyed-count": "ratio >= 0.8"}
	for _, r := range rs {
		byName[r.Name] = r
		want := goals[r.Name]
		if want == "" {
			want = "-"
		}
		got := r.Goal.String()
		if r.And != nil {
			got += " and " + r.And.String()
		}
		if got != want {
			t.Errorf("%s: goal %s, want %s", r.Name, got, want)
		}
		if r.Status != status(r) {
			t.Errorf("%s: status %q, but its figures say %q", r.Name, r.Status, status(r))
		}
	}
	kc := byName["keyed-count"]
	if kc.EventsPerSec <= 0 || kc.Ratio <= 0 || kc.P99Ms <= 0 {
		t.Fatalf("keyed-count = %+v", kc)
	}
	for _, name := range []string{"stateless", "checkpoint-overhead", "recovery", "query-latency", "tumbling-1m", "sliding-30m", "session-windows", "http-ingest"} {
		if r := byName[name]; r.EventsPerSec <= 0 || r.CPUNsPerEvent <= 0 {
			t.Errorf("%s = %+v", name, r)
		}
	}
	// The rows against a baseline in this process have its CPU per event.
	for _, name := range []string{"stateless", "keyed-count", "checkpoint-overhead", "tumbling-1m", "sliding-30m", "session-windows", "kafka-source", "kafka-eos-sink",
		"transport", "kafka-ingest", "nats-ingest"} {
		r := byName[name]
		if r.BaselineCPUNsPerEvent <= 0 || r.CPURatio != r.CPUNsPerEvent/r.BaselineCPUNsPerEvent {
			t.Errorf("%s: CPU per event %v, baseline %v, ratio %v", name, r.CPUNsPerEvent, r.BaselineCPUNsPerEvent, r.CPURatio)
		}
	}
	// The nodes' CPU is read in 10 ms ticks: one node's share of this tiny
	// input may be under one, and so may each of three separate one-node
	// processes'; three nodes' and a failover's are not.
	if r := byName["three-nodes"]; r.EventsPerSec <= 0 || r.BaselineEventsPerSec <= 0 || r.Ratio != r.EventsPerSec/r.BaselineEventsPerSec || r.CPUNsPerEvent <= 0 ||
		r.SeparateCPUNsPerEvent < 0 || !strings.Contains(r.Note, "3 separate one-node processes at once") {
		t.Errorf("three-nodes = %+v", r)
	}
	if r := byName["three-nodes-keyed"]; r.EventsPerSec <= 0 || r.BaselineEventsPerSec <= 0 || r.CPUNsPerEvent <= 0 ||
		!strings.Contains(r.Note, "no record crossed nodes") {
		t.Errorf("three-nodes-keyed = %+v", r)
	}
	if r := byName["failover"]; r.RestoreMs <= 0 || r.CatchUpMs < r.RestoreMs || r.CPUNsPerEvent <= 0 {
		t.Errorf("failover = %+v", r)
	}
	if r := byName["recovery"]; r.Keys != 500 || r.RestoreMs <= 0 {
		t.Errorf("recovery = %+v", r)
	}
	for _, png := range []string{"throughput-by-fragments.png", "latency-keyed-count.png"} {
		if st, err := os.Stat(filepath.Join(out, png)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", png, err)
		}
	}
}

// A one-node cluster run with -trace: the node writes its execution trace,
// and the span says how much CPU the node had and how often its readers
// waited for credits (what tells a CPU-bound run from a paced one).
func TestClusterRunTrace(t *testing.T) {
	dir := t.TempDir()
	tracePath = filepath.Join(dir, "t")
	defer func() { tracePath = "" }()
	in := newInput(20_000, 100)
	p := params{in: in, fragments: 4, partitions: 2}
	res, err := clusterRun(p, 1, countMap(in), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The node's CPU is read in 10 ms ticks and may be under one here:
	// check that cores is CPU per event times the rate, not its size.
	if res.rate <= 0 || res.stalls < 0 || math.Abs(res.cores-res.cpu*res.rate/1e9) > 1e-9*max(1, res.cores) {
		t.Errorf("span = %+v", res)
	}
	fi, err := os.Stat(tracePath + ".1nodes.n0")
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() == 0 {
		t.Error("empty trace")
	}
}

// Two separate one-node clusters run at once, each counting the whole
// input: the span counts the events of both, each one's view is exact,
// and the fragments' batches and the threads' switches are read.
func TestClustersRunSeparate(t *testing.T) {
	in := newInput(20_000, 100)
	p := params{in: in, fragments: 4, partitions: 2}
	res, err := clustersRun(p, []int{1, 1}, countMap(in), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.rate <= 0 || res.batches <= 0 || res.switches < 0 || res.exact.IsZero() {
		t.Errorf("span = %+v", res)
	}
}

// statusField reads a number from a /proc status file's line, and 0 for
// a line it lacks.
func TestStatusField(t *testing.T) {
	b := []byte("Name:\tbench\nvoluntary_ctxt_switches:\t12\nnonvoluntary_ctxt_switches:\t3\n")
	if v, n, x := statusField(b, "voluntary_ctxt_switches:"), statusField(b, "nonvoluntary_ctxt_switches:"), statusField(b, "Threads:"); v != 12 || n != 3 || x != 0 {
		t.Errorf("voluntary %d, nonvoluntary %d, missing %d", v, n, x)
	}
}

// A one-node cluster run with -cpuprofile: the node profiles the measured
// span (from the input's release to the parent's end mark) and writes the
// profile when it stops.
func TestClusterRunSpanProfile(t *testing.T) {
	dir := t.TempDir()
	profile = filepath.Join(dir, "p")
	defer func() { profile = "" }()
	in := newInput(20_000, 100)
	p := params{in: in, fragments: 4, partitions: 2}
	if _, err := clusterRun(p, 1, countMap(in), nil); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(profile + ".1nodes.n0")
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() == 0 {
		t.Error("empty profile: the node never began it (or never stopped it)")
	}
}

// A keyed source on three nodes, one SIGKILLed a third of the way in:
// its partitions' readers and fragments move together to their groups'
// standbys (shard.Spec), and the count is exact, each event applied once
// (clusterRun fails on more). Nothing crosses nodes, after the kill too:
// a group's new owner reads its partitions.
func TestKeyedSourceNodeKilledExact(t *testing.T) {
	in := newInput(60_000, 300)
	p := params{in: in, fragments: 8, partitions: 4, keyedParts: 4}
	res, err := clusterRun(p, 3, countMap(in), func(nodes []*benchNode) error {
		if err := nodes[2].cmd.Process.Signal(syscall.SIGKILL); err != nil {
			return err
		}
		<-nodes[2].done
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.exact.IsZero() || res.crossed != 0 {
		t.Errorf("span = %+v; want an exact view, and no record crossed nodes", res)
	}
}
