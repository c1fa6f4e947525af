package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"syscall"
	"time"

	"github.com/tessera-streams/tessera/cluster"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/internal/freeport"
	"github.com/tessera-streams/tessera/internal/syncbuf"
)

// The cluster workloads run the keyed count on nodes that are child
// processes of this program (TESSERA_BENCH_NODE=1), on 127.0.0.1, each
// generating the same input and reading the partitions the placement gives
// it. The parent watches them over HTTP.

const nodeEnv = "TESSERA_BENCH_NODE"

// nodeProfileEnv names the file a bench node writes its CPU profile to
// (set from -cpuprofile: the parent's path with the node's name appended).
// A node that holds its input profiles the measured span only (spanProfile).
const nodeProfileEnv = "TESSERA_BENCH_NODE_CPUPROFILE"

// spanEnd is appended to the hold file's name for the file the parent
// writes once it has read the nodes' CPU time at the end of the span.
const spanEnd = ".end"

// nodeTraceEnv names the file a bench node writes its execution trace to
// (set from -trace, named like the profiles): `go tool trace -pprof=sched`
// shows the time goroutines were ready to run but had no CPU, -pprof=sync
// and -pprof=net where they waited.
const nodeTraceEnv = "TESSERA_BENCH_NODE_TRACE"

// nodeMain runs one node of a bench cluster: the keyed count over the
// bench input, with the shared node flags.
func nodeMain(args []string) int {
	fs := flag.NewFlagSet("bench-node", flag.ContinueOnError)
	events := fs.Int("events", 1_000_000, "events")
	keys := fs.Int("keys", 10_000, "distinct keys")
	parts := fs.Int("partitions", 2, "source partitions")
	keyed := fs.Bool("keyed", false, "partition the source by key (flows.WithKeyedPartitions)")
	hold := fs.String("hold", "", "read no input until this file exists")
	var nf cluster.Flags
	if err := nf.Parse(fs, args); err != nil {
		fmt.Fprintln(os.Stderr, "bench node:", err)
		return 2
	}
	logger, err := nf.Logger(os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench node:", err)
		return 2
	}
	if path := os.Getenv(nodeProfileEnv); path != "" {
		f, err := os.Create(path)
		if err == nil && *hold == "" {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench node: cpu profile:", err)
			return 2
		}
		if *hold == "" {
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		} else {
			stop := spanProfile(f, *hold)
			defer func() { stop(); f.Close() }()
		}
	}
	if path := os.Getenv(nodeTraceEnv); path != "" {
		f, err := os.Create(path)
		if err == nil {
			err = trace.Start(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench node: trace:", err)
			return 2
		}
		defer func() { trace.Stop(); f.Close() }()
	}
	in := newInput(*events, *keys)
	var src flows.Source[bev]
	var opts []flows.SourceOption
	var gate *fileGate
	if *hold != "" {
		gate = &fileGate{path: *hold}
	}
	if *keyed {
		ks, err := newKeyedSource(in, *parts, gate)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench node:", err)
			return 2
		}
		src, opts = ks, []flows.SourceOption{flows.WithKeyedPartitions()}
	} else {
		src = &sliceSource{in: in, parts: *parts, repeat: 1, gate: gate}
	}
	f := benchFlow(src, nf.Fragments, false, &latencySink{}, nil, opts...)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := nf.Serve(ctx, f, io.Discard, logger, nil); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "bench node:", err)
		return 1
	}
	return 0
}

// spanProfile writes the node's CPU profile to f from the release of the
// input (the file hold exists) to the end of the measured span (the parent
// writes hold+spanEnd once it has read the nodes' CPU time), so that the
// profile shows what the CPU per event counts: not the node's start-up
// (generating the input, placement, restore) nor its shutdown (the
// store's flush), which made a profile of the whole run overstate the
// checkpoints. stop ends the profile, if it began, and waits.
func spanProfile(f *os.File, hold string) (stop func()) {
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		started := false
		defer func() {
			if started {
				pprof.StopCPUProfile()
			}
		}()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if started {
				if _, err := os.Stat(hold + spanEnd); err == nil {
					return
				}
				continue
			}
			if _, err := os.Stat(hold); err == nil {
				if err := pprof.StartCPUProfile(f); err != nil {
					fmt.Fprintln(os.Stderr, "bench node: cpu profile:", err)
					return
				}
				started = true
			}
		}
	}()
	return func() { close(done); <-finished }
}

type benchNode struct {
	cmd    *exec.Cmd
	base   string
	stderr *syncbuf.Buffer
	done   chan struct{}
	// cpu is the node's CPU time at its latest reading (readCPU), cpu0 at
	// the start of the measured span.
	cpu, cpu0 time.Duration
}

// readCPU reads the CPU time of every node still running (procCPU). A
// node that has exited keeps its last reading: read them all just before
// killing one.
func readCPU(nodes []*benchNode) error {
	for _, n := range nodes {
		select {
		case <-n.done:
			continue
		default:
		}
		c, err := procCPU(n.cmd.Process.Pid)
		if err != nil {
			return fmt.Errorf("node %s: cpu: %w", n.base, err)
		}
		n.cpu = c
	}
	return nil
}

func freePort() (string, error) { return freeport.Addr() }

// startNodes starts k nodes of a bench cluster, which read no input until
// the file hold exists, and waits until every one answers HTTP (a node
// answers once it is placed and its engine runs). tag names the cluster
// in the nodes' profile and trace files.
func startNodes(p params, k int, dir, hold, tag string) ([]*benchNode, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var gossip []string
	for range k {
		g, err := freePort()
		if err != nil {
			return nil, err
		}
		gossip = append(gossip, g)
	}
	var nodes []*benchNode
	for i := range k {
		httpAddr, err := freePort()
		if err != nil {
			return nodes, err
		}
		remote, err := freePort()
		if err != nil {
			return nodes, err
		}
		args := []string{"-node", fmt.Sprintf("n%d", i), "-http", httpAddr, "-gossip", gossip[i], "-remote", remote,
			"-expect", fmt.Sprint(k), "-data", filepath.Join(dir, fmt.Sprintf("n%d", i)), "-fragments", fmt.Sprint(p.fragments),
			"-events", fmt.Sprint(len(p.in.idx)), "-keys", fmt.Sprint(len(p.in.keys)), "-partitions", fmt.Sprint(p.partitions),
			"-log-level", "warn", "-progress", "0", "-checkpoint-interval", "1s", "-hold", hold}
		if p.keyedParts > 0 {
			args = append(args, "-keyed")
		}
		if i > 0 {
			args = append(args, "-join", gossip[0])
		}
		cmd := exec.Command(exe, args...)
		cmd.Env = append(os.Environ(), nodeEnv+"=1")
		if profile != "" {
			cmd.Env = append(cmd.Env, fmt.Sprintf("%s=%s.%s.n%d", nodeProfileEnv, profile, tag, i))
		}
		if tracePath != "" {
			cmd.Env = append(cmd.Env, fmt.Sprintf("%s=%s.%s.n%d", nodeTraceEnv, tracePath, tag, i))
		}
		errBuf := new(syncbuf.Buffer)
		cmd.Stderr = errBuf
		if err := cmd.Start(); err != nil {
			return nodes, err
		}
		n := &benchNode{cmd: cmd, base: "http://" + httpAddr, stderr: errBuf, done: make(chan struct{})}
		go func() { cmd.Wait(); close(n.done) }()
		nodes = append(nodes, n)
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, n := range nodes {
		for {
			resp, err := http.Get(n.base + "/v1/cluster?scope=local")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case <-n.done:
				return nodes, fmt.Errorf("node %s exited", n.base)
			default:
			}
			if time.Now().After(deadline) {
				return nodes, fmt.Errorf("node %s does not answer", n.base)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nodes, nil
}

func stopNodes(nodes []*benchNode) {
	for _, n := range nodes {
		if profile != "" {
			// Let the node stop its CPU profile.
			n.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-n.done:
				continue
			case <-time.After(15 * time.Second):
			}
		}
		n.cmd.Process.Kill()
		<-n.done
	}
}

// clusterView is what the bench reads of GET /v1/cluster.
type clusterView struct {
	Members   []struct{ Name string }
	Readers   []struct{ Stalls, Crossed int64 }
	Fragments []struct {
		Fragment int
		Owner    string
		Events   int64
		Batches  int64
	}
}

func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// applied is the number of events every fragment of the cluster applied,
// and how many fragments answered.
func applied(base string) (int64, int, error) {
	var st clusterView
	if err := getJSON(base+"/v1/cluster", &st); err != nil {
		return 0, 0, err
	}
	var n int64
	for _, f := range st.Fragments {
		n += f.Events
	}
	return n, len(st.Fragments), nil
}

// appliedLocal is the number of events the fragments of the running
// nodes applied, each node asked for its own (scope=local). The run's
// progress is read every 10 ms: through one node, which asked every other
// node and merged their answers, the reads cost three nodes a twentieth
// of their CPU during the measured span (one node, answering alone, a
// fiftieth): the cost of watching them, which the cluster would not have
// spent on the events. Each node answering for its own fragments costs
// the three what one node costs for all of them.
func appliedLocal(nodes []*benchNode) (int64, error) {
	var total int64
	for _, nd := range nodes {
		select {
		case <-nd.done: // killed: its fragments answer from their new owners
			continue
		default:
		}
		var st clusterView
		if err := getJSON(nd.base+"/v1/cluster?scope=local", &st); err != nil {
			return 0, err
		}
		for _, f := range st.Fragments {
			total += f.Events
		}
	}
	return total, nil
}

// viewCounts reads the keyed count's whole view from a node.
func viewCounts(base string) (map[string]int64, error) {
	var es struct {
		Entries []struct {
			Key   string
			Value int64
		}
		More bool
	}
	if err := getJSON(base+"/v1/views/counts?limit=10000000", &es); err != nil {
		return nil, err
	}
	if es.More {
		return nil, fmt.Errorf("more than 10 million keys")
	}
	out := make(map[string]int64, len(es.Entries))
	for _, e := range es.Entries {
		out[e.Key] = e.Value
	}
	return out, nil
}

// clusterSpan is what a cluster run measured from the release of its
// input to its last applied event.
type clusterSpan struct {
	rate  float64 // events/s
	cpu   float64 // CPU ns per event, summed over the nodes
	cores float64 // CPU time over the span's wall time, summed over the nodes
	// stalls is how often a reader waited for a fragment's credits: few
	// stalls and cores near the machine's share say the run is paced by
	// CPU, not by acknowledgements.
	stalls int64
	exact  time.Time // when the view was first read exact
	// batches is how many batches the fragments applied, switches how
	// often a node's thread left its core, a second.
	batches  int64
	switches float64
	crossed  int64 // records the readers sent to fragments on other nodes
}

// clusterRun runs the keyed count on k nodes until every event is applied
// and the view is exact. The nodes hold their input until every one runs;
// throughput and CPU per event are measured from its release to the last
// applied event (observed every 10 ms, each node asked for its own
// fragments: appliedLocal), so the cluster's start-up is
// excluded and even a small input spans a measurable time. The CPU is
// every node's, read from /proc/<pid>/stat at both ends of the span while
// the node runs (a node killed meanwhile counts until its kill), so
// neither a node's start-up (each generates the input) nor its shutdown is
// counted, which getrusage(RUSAGE_CHILDREN) over the nodes' lives would.
// kill, if set, is called with the nodes once a third of the events are
// applied.
func clusterRun(p params, k int, want map[string]int64, kill func([]*benchNode) error) (clusterSpan, error) {
	return clustersRun(p, []int{k}, want, kill)
}

// clustersRun is clusterRun for clusters of the sizes given, separate
// from each other and all on this machine, each counting the whole input:
// their input is released together, and the span and CPU are theirs
// together, per event of each (sizes {1, 1, 1}: three one-node
// processes at once, sharing the machine as three nodes of one cluster
// do, but crossing no nodes).
func clustersRun(p params, sizes []int, want map[string]int64, kill func([]*benchNode) error) (clusterSpan, error) {
	dir, err := os.MkdirTemp("", "tessera-bench-cluster")
	if err != nil {
		return clusterSpan{}, err
	}
	defer os.RemoveAll(dir)
	hold := filepath.Join(dir, "release")
	var nodes []*benchNode
	var heads []*benchNode // each cluster's first node
	defer func() { stopNodes(nodes) }()
	for c, k := range sizes {
		cdir, tag := dir, fmt.Sprintf("%dnodes", k)
		if len(sizes) > 1 {
			cdir, tag = filepath.Join(dir, fmt.Sprint(c)), fmt.Sprintf("%dnodes-%d", k, c)
		}
		if err := os.MkdirAll(cdir, 0o755); err != nil {
			return clusterSpan{}, err
		}
		ns, err := startNodes(p, k, cdir, hold, tag)
		nodes = append(nodes, ns...)
		if err != nil {
			return clusterSpan{}, nodeErr(err, nodes)
		}
		heads = append(heads, ns[0])
	}
	if err := readCPU(nodes); err != nil {
		return clusterSpan{}, err
	}
	for _, nd := range nodes {
		nd.cpu0 = nd.cpu
	}
	v0, i0 := switches(nodes)
	start := time.Now()
	if err := os.WriteFile(hold, nil, 0o644); err != nil {
		return clusterSpan{}, err
	}
	total := int64(len(sizes)) * int64(len(p.in.idx))
	killed := kill == nil
	deadline := start.Add(10 * time.Minute)
	for {
		n, err := appliedLocal(nodes)
		if err == nil && !killed && n >= total/3 {
			killed = true
			if err := readCPU(nodes); err != nil {
				return clusterSpan{}, err
			}
			if err := kill(nodes); err != nil {
				return clusterSpan{}, err
			}
		}
		if err == nil && n == total && killed {
			break
		}
		if n > total {
			return clusterSpan{}, fmt.Errorf("%d events applied of %d: counted twice", n, total)
		}
		if time.Now().After(deadline) {
			return clusterSpan{}, nodeErr(fmt.Errorf("%d of %d events applied after 10 minutes", n, total), nodes)
		}
		time.Sleep(10 * time.Millisecond)
	}
	span := time.Since(start)
	if err := readCPU(nodes); err != nil {
		return clusterSpan{}, err
	}
	v1, i1 := switches(nodes)
	if err := os.WriteFile(hold+spanEnd, nil, 0o644); err != nil {
		return clusterSpan{}, err
	}
	var cpu time.Duration
	for _, nd := range nodes {
		cpu += nd.cpu - nd.cpu0
	}
	res := clusterSpan{rate: float64(total) / span.Seconds(), cpu: float64(cpu.Nanoseconds()) / float64(total),
		cores: cpu.Seconds() / span.Seconds(), switches: float64(v1-v0+i1-i0) / span.Seconds()}
	for _, h := range heads {
		var st clusterView
		if err := getJSON(h.base+"/v1/cluster", &st); err != nil {
			res.stalls = -1 // only reported
			break
		}
		for _, r := range st.Readers {
			res.stalls += r.Stalls
			res.crossed += r.Crossed
		}
		for _, f := range st.Fragments {
			res.batches += f.Batches
		}
	}
	for _, h := range heads {
		if res.exact, err = waitExact(h.base, want, time.Minute); err != nil {
			return res, nodeErr(err, nodes)
		}
	}
	return res, nil
}

// switches is the number of times the nodes' threads were switched off a
// core, voluntarily (to wait) and not (preempted), from
// /proc/<pid>/task/*/status; a node that cannot be read counts none.
func switches(nodes []*benchNode) (voluntary, preempted int64) {
	for _, n := range nodes {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", n.cmd.Process.Pid))
		for _, t := range tasks {
			b, err := os.ReadFile(t)
			if err != nil {
				continue
			}
			voluntary += statusField(b, "voluntary_ctxt_switches:")
			preempted += statusField(b, "nonvoluntary_ctxt_switches:")
		}
	}
	return voluntary, preempted
}

// statusField is the number after name at the start of a line of a
// /proc status file, or 0.
func statusField(b []byte, name string) int64 {
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte(name)); ok {
			n, _ := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			return n
		}
	}
	return 0
}

// waitExact reads the view until it holds exactly want and returns when it
// did, or fails with the last difference once timeout has passed. The
// applied counts of /v1/cluster, gathered from each node's own report, can
// add up to the input before every fragment's state answers with it
// (views short by whole fragments were seen right after a failover), so a
// single read is not a check.
func waitExact(base string, want map[string]int64, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		got, err := viewCounts(base)
		if err == nil {
			if err = same(want, got); err == nil {
				return time.Now(), nil
			}
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("view of %s not exact %v after every event was applied: %w", base, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func nodeErr(err error, nodes []*benchNode) error {
	for _, n := range nodes {
		if s := n.stderr.String(); s != "" {
			slog.Warn("bench node", "node", n.base, "stderr", s)
		}
	}
	return err
}

// threeNodes measures the keyed count on three nodes against one node,
// both over the same HTTP-observed protocol. (keyed-count compares the
// engine with plain Go.) Each round also runs three separate one-node
// processes at once, each counting the whole input: what the three
// processes' sharing two cores costs an event, with nothing crossing
// nodes, which the note reports beside the goal's ratio.
func threeNodes(in *input, p params, w io.Writer) (Result, error) {
	p.in = in
	want := countMap(in)
	var one, three, solo []clusterSpan
	for round := range p.rounds {
		r1, r3, err := oneAndThree(p, want)
		if err != nil {
			return Result{Name: "three-nodes"}, err
		}
		rs, err := clustersRun(p, []int{1, 1, 1}, want, nil)
		if err != nil {
			return Result{Name: "three-nodes"}, fmt.Errorf("three one-node processes: %w", err)
		}
		one, three, solo = append(one, r1), append(three, r3), append(solo, rs)
		fmt.Fprintf(w, "  round %d: 1 node %.2fM events/s %.0f ns CPU/event (%.2f cores, %d stalls, %.0f switches/s), "+
			"3 nodes %.2fM events/s %.0f ns CPU/event (%.2f cores, %d stalls, %.0f switches/s, %.0f records a batch), "+
			"3 one-node processes at once %.0f ns CPU/event (%.0f switches/s)\n",
			round+1, r1.rate/1e6, r1.cpu, r1.cores, r1.stalls, r1.switches, r3.rate/1e6, r3.cpu, r3.cores, r3.stalls, r3.switches,
			float64(len(in.idx))/float64(max(r3.batches, 1)), rs.cpu, rs.switches)
	}
	r1, r3, rs := medianSpan(one), medianSpan(three), medianSpan(solo)
	// The goal is on CPU, not on rate: on one machine three processes
	// share the same cores, so only the CPU each event costs says what
	// crossing nodes adds.
	r := Result{Name: "three-nodes", Events: len(in.idx), Rounds: p.rounds, Versus: "1 node",
		Goal:     atMost("cpu_ratio", 1.5),
		Baseline: "the same keyed count on one node process",
		Note: "3 node processes vs 1 on one machine (127.0.0.1): ratio and CPU ratio are 3 nodes over 1 node; every run exact; " +
			separateNote(rs, r1),
		SeparateCPUNsPerEvent: rs.cpu}
	r.against(r3.rate, r3.cpu, r1.rate, r1.cpu)
	return r, nil
}

// oneAndThree runs the keyed count of p on one node, then on three.
func oneAndThree(p params, want map[string]int64) (r1, r3 clusterSpan, err error) {
	if r1, err = clusterRun(p, 1, want, nil); err != nil {
		return r1, r3, fmt.Errorf("one node: %w", err)
	}
	if r3, err = clusterRun(p, 3, want, nil); err != nil {
		return r1, r3, fmt.Errorf("three nodes: %w", err)
	}
	return r1, r3, nil
}

// keyedParts is the partitions of the three-nodes-keyed row's source,
// halved until they divide the fragments.
const keyedParts = 16

// threeNodesKeyed is threeNodes over a source partitioned by the flow's
// key (flows.WithKeyedPartitions, keyedParts partitions): each partition
// is read on the node that owns the fragments of its keys, so no record
// crosses nodes, and three nodes should spend what one does, but for
// what three processes sharing the machine cost (the three-nodes row's
// control). A record that crossed anyway fails the row: the placement
// did not put a partition beside its keys.
func threeNodesKeyed(in *input, p params, w io.Writer) (Result, error) {
	p.in = in
	parts := keyedParts
	for p.fragments%parts != 0 {
		parts /= 2
	}
	p.partitions, p.keyedParts = parts, parts
	want := countMap(in)
	var one, three []clusterSpan
	for round := range p.rounds {
		r1, r3, err := oneAndThree(p, want)
		if err != nil {
			return Result{Name: "three-nodes-keyed"}, err
		}
		if r3.crossed != 0 {
			return Result{Name: "three-nodes-keyed"}, fmt.Errorf("three nodes: %d records crossed nodes, with every partition beside its keys", r3.crossed)
		}
		one, three = append(one, r1), append(three, r3)
		fmt.Fprintf(w, "  round %d: 1 node %.2fM events/s %.0f ns CPU/event, 3 nodes %.2fM events/s %.0f ns CPU/event (%.2f cores), %d records crossed nodes\n",
			round+1, r1.rate/1e6, r1.cpu, r3.rate/1e6, r3.cpu, r3.cores, r3.crossed)
	}
	r1, r3 := medianSpan(one), medianSpan(three)
	r := Result{Name: "three-nodes-keyed", Events: len(in.idx), Rounds: p.rounds, Versus: "1 node",
		Goal:     atMost("cpu_ratio", 1.5),
		Baseline: "the same keyed count on one node process",
		Note: fmt.Sprintf("as three-nodes, with the source in %d partitions by the flow's key (flows.WithKeyedPartitions): "+
			"each is read beside its keys' fragments, and no record crossed nodes; every run exact", parts)}
	r.against(r3.rate, r3.cpu, r1.rate, r1.cpu)
	return r, nil
}

// separateNote says what three separate one-node processes at once (rs)
// spent an event, against one node alone (r1).
func separateNote(rs, r1 clusterSpan) string {
	vs := "-"
	if r1.cpu > 0 {
		vs = fmt.Sprintf("%.2f", rs.cpu/r1.cpu)
	}
	return fmt.Sprintf("3 separate one-node processes at once, crossing no nodes: %.0f ns CPU/event, %s x 1 node alone "+
		"(threads switched off a core %.0f/s, 1 node alone %.0f/s)", rs.cpu, vs, rs.switches, r1.switches)
}

// medianSpan is the median rate, CPU per event and switches of the runs.
func medianSpan(ss []clusterSpan) clusterSpan {
	rates, cpus, sw := make([]float64, len(ss)), make([]float64, len(ss)), make([]float64, len(ss))
	for i, s := range ss {
		rates[i], cpus[i], sw[i] = s.rate, s.cpu, s.switches
	}
	return clusterSpan{rate: medianF(rates), cpu: medianF(cpus), switches: medianF(sw)}
}

// failover kills one of three nodes mid-stream and measures the time until
// every fragment is served again (from its standby's copy) and until the
// view is exact.
func failover(in *input, p params, w io.Writer) (Result, error) {
	p.in = in
	want := countMap(in)
	var serving, exact []time.Duration
	var cpu []float64
	for round := range p.rounds {
		var killedAt time.Time
		var servingAfter time.Duration
		r, err := clusterRun(p, 3, want, func(nodes []*benchNode) error {
			if err := nodes[2].cmd.Process.Signal(syscall.SIGKILL); err != nil {
				return err
			}
			<-nodes[2].done
			killedAt = time.Now()
			for {
				var st clusterView
				err := getJSON(nodes[0].base+"/v1/cluster", &st)
				if err == nil && len(st.Members) == 2 && len(st.Fragments) == p.fragments && ownedBy(st, "n0", "n1") {
					if _, err := getJSON2(nodes[0].base + "/v1/views/counts?limit=1"); err == nil {
						servingAfter = time.Since(killedAt)
						return nil
					}
				}
				if time.Since(killedAt) > time.Minute {
					return fmt.Errorf("fragments not served a minute after the kill")
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
		if err != nil {
			return Result{Name: "failover"}, err
		}
		exactAfter := r.exact.Sub(killedAt)
		serving, exact, cpu = append(serving, servingAfter), append(exact, exactAfter), append(cpu, r.cpu)
		fmt.Fprintf(w, "  round %d: kill -> all fragments serving %v, kill -> view exact %v; %.0f ns CPU/event\n", round+1,
			servingAfter.Round(time.Millisecond), exactAfter.Round(time.Millisecond), r.cpu)
	}
	s, e := median(serving), median(exact)
	return Result{Name: "failover", Events: len(in.idx), Rounds: p.rounds, CPUNsPerEvent: medianF(cpu), RestoreMs: float64(s.Milliseconds()),
		CatchUpMs: float64(e.Milliseconds()),
		Note: fmt.Sprintf("SIGKILL 1 of 3 nodes at a third of the input: all fragments serving again after %v (failure detection included), view exact after %v (the rest of the input included); CPU per event: the three nodes', the killed one's until its kill, replays included",
			s.Round(time.Millisecond), e.Round(time.Millisecond))}, nil
}

func ownedBy(st clusterView, names ...string) bool {
	for _, f := range st.Fragments {
		ok := false
		for _, n := range names {
			ok = ok || f.Owner == n
		}
		if !ok {
			return false
		}
	}
	return true
}

func getJSON2(url string) (json.RawMessage, error) {
	var raw json.RawMessage
	return raw, getJSON(url, &raw)
}
