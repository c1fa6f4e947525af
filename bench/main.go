// Command bench runs Tessera's workloads against baselines in the same
// process, interleaved, and prints one table:
//
//	go run ./bench           # the full suite (a few minutes on 2 cores)
//	go run ./bench -quick    # a smaller version, about a minute
//
// Every engine run is checked for exact results. The table gives, per
// workload, the median events/s over the rounds and the median CPU time
// per event (user + system: the machine-independent figure on a shared
// machine; see cpu.go), the same for the row's baseline (vs: the faster
// plain-Go program, the engine without checkpoints, one node), their
// ratios, the p50/p99 end-to-end latency (an event read from the source →
// the state it changes updated, sampled every 1024th event), and the peak
// RSS of the run (the process's high-water mark, reset before it; it
// includes the shared input, about 50 MB in the full run). The status
// checks the row's goal, if it has one (goal.go).
//
// A workload is one entry of the steps in run: a function that returns
// its Result, built with against for the engine and its baseline.
//
// Results (latest.json and the plots) go to -out, by default
// bench/results/local/, which git ignores: an ordinary run never changes a
// tracked file. bench/results/ holds the committed reference run, which
// only `make bench-reference` (-out bench/results) refreshes; a -quick run
// may not write there.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

type params struct {
	events     int
	keyed      int // the keyed count's and the sweep's events, if more than events
	keys       int
	fragments  int
	partitions int
	// keyedParts, if positive, makes the cluster workloads' source keyed
	// (flows.WithKeyedPartitions) with that many partitions, in place of
	// partitions: the three-nodes-keyed row.
	keyedParts int
	rounds     int
	batch      int // the engine's records per batch
	// baselineBatch is the sharded baselines' records per batch, kept
	// apart from the engine's so that tuning the engine cannot slow its
	// baseline: at 512 they ran up to a fifth slower than at 1024.
	baselineBatch int
	quick         bool
	in            *input // the cluster workloads' input, which the nodes generate again
}

// Where results go: the committed reference run, refreshed on purpose,
// and the default for every other run, ignored by git.
const (
	referenceDir = "bench/results"
	localDir     = "bench/results/local"
)

// profile is where to write a CPU profile of the engine runs ("" for none).
var profile string

var profileRuns int

// memProfile, with profile, is where an allocation profile is written
// after each profiled run.
var memProfile string

// tracePath is where cluster nodes write execution traces ("" for none).
var tracePath string

// only lists the workloads to run ("" for all).
var only string

// startProfile profiles one engine run; later runs write numbered files.
func startProfile(path string) (func(), error) {
	profileRuns++
	if profileRuns > 1 {
		path = fmt.Sprintf("%s.%d", path, profileRuns)
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
		if memProfile != "" {
			// The allocations of the whole process so far: the engine's
			// run dominates them.
			path := memProfile
			if profileRuns > 1 {
				path = fmt.Sprintf("%s.%d", path, profileRuns)
			}
			if m, err := os.Create(path); err == nil {
				pprof.Lookup("allocs").WriteTo(m, 0)
				m.Close()
			}
		}
	}, nil
}

func main() {
	if os.Getenv(nodeEnv) != "" {
		os.Exit(nodeMain(os.Args[1:]))
	}
	var p params
	flag.BoolVar(&p.quick, "quick", false, "a small run (1M events, 5M for the keyed count and the sweep; 10k keys)")
	flag.IntVar(&p.events, "events", 10_000_000, "events per run")
	flag.IntVar(&p.keys, "keys", 100_000, "distinct keys")
	flag.IntVar(&p.fragments, "fragments", 64, "engine fragments")
	flag.IntVar(&p.partitions, "partitions", runtime.GOMAXPROCS(0), "source partitions (and baseline producers)")
	flag.IntVar(&p.rounds, "rounds", 3, "interleaved rounds; medians are reported")
	flag.IntVar(&p.batch, "batch", 512, "the engine's records per batch")
	flag.IntVar(&p.baselineBatch, "baseline-batch", 1024, "the sharded baselines' records per batch")
	out := flag.String("out", localDir, "directory for latest.json and the plots ('' for none); "+referenceDir+" is the committed reference run")
	flag.StringVar(&only, "only", "", "run only these workloads (comma-separated names), without the sweep")
	flag.StringVar(&memProfile, "memprofile", "", "with -cpuprofile, write an allocation profile after each engine run to this file")
	flag.StringVar(&profile, "cpuprofile", "", "write a CPU profile of each engine run to this file (numbered after the first)")
	flag.StringVar(&tracePath, "trace", "", "write an execution trace of each cluster node to this file with the node count and name appended")
	flag.Parse()
	if p.quick {
		p.events, p.keys = 1_000_000, 10_000
		// Like the full run, the keyed count is timed from the engine's
		// start, as its baselines are from theirs: start-up is a cost every
		// run pays. At 1M events it was a tenth to a half of an engine run
		// here (10-80 ms to start 64 fragments and apply a first batch,
		// against 100-200 ms of counting); at 5M it is a few percent.
		p.keyed = 5_000_000
		if *out != "" && filepath.Clean(*out) == referenceDir {
			fmt.Fprintf(os.Stderr, "bench: a -quick run does not replace the reference run in %s\n", referenceDir)
			os.Exit(2)
		}
	}
	if err := run(p, *out, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// Result is one workload's figures, as written to latest.json.
type Result struct {
	Name   string `json:"name"`
	Status string `json:"status"` // see status
	Goal   *Goal  `json:"goal,omitempty"`
	// And is a second goal the row must keep as well (query-latency: the
	// top-10's p99 besides the point lookups').
	And                  *Goal   `json:"and_goal,omitempty"`
	Events               int     `json:"events,omitempty"`
	EventsPerSec         float64 `json:"events_per_sec"`
	BaselineEventsPerSec float64 `json:"baseline_events_per_sec"`
	Baseline             string  `json:"baseline,omitempty"` // what the baseline is
	Versus               string  `json:"versus,omitempty"`   // the baseline in a word or two, for the table
	Ratio                float64 `json:"ratio"`              // events/s over the baseline's: above 1, the engine is faster
	// CPU time (user + system) per event, in ns: the engine's and the
	// baseline's, and the engine's over the baseline's (above 1, the engine
	// spends more). See cpu.go for how each is measured.
	CPUNsPerEvent         float64 `json:"cpu_ns_per_event"`
	BaselineCPUNsPerEvent float64 `json:"baseline_cpu_ns_per_event"`
	CPURatio              float64 `json:"cpu_ratio"`
	P50Ms                 float64 `json:"p50_ms"`
	P99Ms                 float64 `json:"p99_ms"`
	// TopP50Ms, TopP99Ms: query-latency's top-10 queries over every fragment.
	TopP50Ms             float64 `json:"top_p50_ms,omitempty"`
	TopP99Ms             float64 `json:"top_p99_ms,omitempty"`
	PeakRSSMB            float64 `json:"peak_rss_mb"`
	Rounds               int     `json:"rounds,omitempty"`
	Machine              string  `json:"machine"`
	Note                 string  `json:"note,omitempty"`
	MapEventsPerSec      float64 `json:"map_baseline_events_per_sec,omitempty"`
	ShardedEventsPerSec  float64 `json:"sharded_baseline_events_per_sec,omitempty"`
	MapCPUNsPerEvent     float64 `json:"map_baseline_cpu_ns_per_event,omitempty"`
	ShardedCPUNsPerEvent float64 `json:"sharded_baseline_cpu_ns_per_event,omitempty"`
	CheckpointIntervalMs float64 `json:"checkpoint_interval_ms,omitempty"`
	RestoreMs            float64 `json:"restore_ms,omitempty"`
	CatchUpMs            float64 `json:"catch_up_ms,omitempty"`
	Keys                 int     `json:"keys,omitempty"`
	// VsTumbling: the sliding row's events/s over the tumbling row's.
	VsTumbling float64 `json:"vs_tumbling,omitempty"`
	// The window rows' baseline's peak RSS, and the engine's over it.
	BaselinePeakRSSMB float64 `json:"baseline_peak_rss_mb,omitempty"`
	RSSRatio          float64 `json:"rss_ratio,omitempty"`
	// The three-nodes row: the CPU per event of three separate one-node
	// processes run at once (sharing the machine, crossing no nodes).
	SeparateCPUNsPerEvent float64 `json:"separate_cpu_ns_per_event,omitempty"`
}

func run(p params, out string, w io.Writer) error {
	machine := fmt.Sprintf("%s/%s, %d CPUs, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(w, "tessera bench: %d events, %d keys, %d fragments, %d partitions, %d rounds, on %s\n",
		p.events, p.keys, p.fragments, p.partitions, p.rounds, machine)
	if p.keyed > p.events {
		fmt.Fprintf(w, "  keyed-count and the sweep: %d events\n", p.keyed)
	}
	in := newInput(p.events, p.keys)
	kin := in
	if p.keyed > p.events {
		kin = newInput(p.keyed, p.keys)
	}
	var results []Result
	add := func(r Result, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", r.Name, err)
		}
		r.Machine = machine
		r.Status = status(r)
		results = append(results, r)
		return nil
	}
	steps := []struct {
		name string
		fn   func() (Result, error)
	}{
		{"stateless", func() (Result, error) { return stateless(in, p, w) }},
		{"keyed-count", func() (Result, error) { return keyedCount(kin, p, w) }},
		{"two-stage", func() (Result, error) { return twoStage(kin, p, w) }},
		{"transport", func() (Result, error) { return transport(p, w) }},
		{"tumbling-1m", func() (Result, error) {
			return windowed(in, p, "tumbling-1m", time.Minute, time.Minute, 0, len(in.idx), w)
		}},
		// Sliced: an event updates one slice, not the 30 windows over it.
		// Its goal is the tumbling row's throughput (when that row ran).
		{"sliding-30m", func() (Result, error) {
			r, err := windowed(in, p, "sliding-30m", 30*time.Minute, time.Minute, 0, len(in.idx), w)
			r.Goal = atLeast("vs_tumbling", 0.8)
			for _, t := range results {
				if t.Name == "tumbling-1m" {
					r.VsTumbling = ratio(r.EventsPerSec, t.EventsPerSec)
					r.Note += fmt.Sprintf("; %.2f× the tumbling row's events/s, %.2f× its CPU per event", r.VsTumbling, ratio(r.CPUNsPerEvent, t.CPUNsPerEvent))
				}
			}
			return r, err
		}},
		{"session-windows", func() (Result, error) {
			r, err := windowed(in, p, "session-windows", 0, 0, 5*time.Minute, len(in.idx), w)
			r.Goal = atLeast("ratio", 0.5)
			return r, err
		}},
		{"checkpoint-overhead", func() (Result, error) { return checkpointOverhead(in, p, w) }},
		{"recovery", func() (Result, error) { return recoveryRun(in, p, w) }},
		{"query-latency", func() (Result, error) { return queryLatency(in, p, w) }},
		{"snapshot-reads", func() (Result, error) { return snapshotReads(in, p, w) }},
		{"watchers", func() (Result, error) { return watchers(in, p, w) }},
		{"http-ingest", func() (Result, error) { return httpIngest(in, p, w) }},
		{"kafka-ingest", func() (Result, error) { return kafkaIngest(in, p, w) }},
		{"nats-ingest", func() (Result, error) { return natsIngest(in, p, w) }},
		{"three-nodes", func() (Result, error) { return threeNodes(in, p, w) }},
		{"three-nodes-keyed", func() (Result, error) { return threeNodesKeyed(in, p, w) }},
		{"failover", func() (Result, error) { return failover(in, p, w) }},
		{"kafka-source", func() (Result, error) { return kafkaSource(in, p, w) }},
		{"kafka-eos-sink", func() (Result, error) { return kafkaEOSSink(in, p, w) }},
	}
	if only != "" {
		names := strings.Split(only, ",")
		steps = slices.DeleteFunc(steps, func(s struct {
			name string
			fn   func() (Result, error)
		}) bool {
			return !slices.Contains(names, s.name)
		})
		if len(steps) == 0 {
			return fmt.Errorf("-only %q names no workload", only)
		}
	}
	for i, s := range steps {
		fmt.Fprintf(w, "[%d/%d] %s\n", i+1, len(steps), s.name)
		r, err := s.fn()
		if r.Name == "" {
			r.Name = s.name
		}
		if err := add(r, err); err != nil {
			return err
		}
	}
	if only != "" {
		printTable(w, results)
		return nil
	}
	fmt.Fprintf(w, "[sweep] keyed-count throughput by fragment count\n")
	sweep, err := fragmentSweep(kin, p, w)
	if err != nil {
		return err
	}
	printTable(w, results)
	if out == "" {
		return nil
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(results, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "latest.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := plotSweep(sweep, filepath.Join(out, "throughput-by-fragments.png")); err != nil {
		return err
	}
	if err := plotLatency(lastLatencies, filepath.Join(out, "latency-keyed-count.png")); err != nil {
		return err
	}
	fmt.Fprintf(w, "wrote %s/latest.json, throughput-by-fragments.png, latency-keyed-count.png\n", out)
	return nil
}

func printTable(w io.Writer, rs []Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "workload\tstatus\tgoal\tevents/s\tCPU ns/event\tvs\tbaseline events/s\tbaseline CPU ns/event\tratio\tCPU ratio\tp50 ms\tp99 ms\tpeak RSS MB\tnote")
	num := func(v float64, f string) string {
		if v == 0 {
			return "-"
		}
		return fmt.Sprintf(f, v)
	}
	for _, r := range rs {
		vs := r.Versus
		if vs == "" {
			vs = "-"
		}
		goal := r.Goal.String()
		if r.And != nil {
			goal += " and " + r.And.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Status, goal,
			num(r.EventsPerSec/1e6, "%.2fM"), num(r.CPUNsPerEvent, "%.0f"), vs,
			num(r.BaselineEventsPerSec/1e6, "%.2fM"), num(r.BaselineCPUNsPerEvent, "%.0f"), num(r.Ratio, "%.2f"), num(r.CPURatio, "%.2f"),
			num(r.P50Ms, "%.2f"), num(r.P99Ms, "%.2f"), num(r.PeakRSSMB, "%.0f"), r.Note)
	}
	tw.Flush()
}

// against sets the engine's and the baseline's throughput and CPU per
// event, and their ratios (a ratio is left out when a side has no figure).
func (r *Result) against(rate, cpu, baseRate, baseCPU float64) {
	r.EventsPerSec, r.CPUNsPerEvent = rate, cpu
	r.BaselineEventsPerSec, r.BaselineCPUNsPerEvent = baseRate, baseCPU
	r.Ratio, r.CPURatio = ratio(rate, baseRate), ratio(cpu, baseCPU)
}

// ratio is a/b, or 0 (no figure) unless both are positive: a baseline too
// quick to measure must not make an infinite ratio.
func ratio(a, b float64) float64 {
	if a > 0 && b > 0 {
		return a / b
	}
	return 0
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func medianF(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// percentile of xs (sorted in place).
func percentile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	return xs[min(len(xs)-1, int(q*float64(len(xs))))]
}
