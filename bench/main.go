// Command bench runs Tessera workloads against plain-Go baselines in the
// same process, interleaved, and prints events/s and the ratios.
//
//	go run ./bench           # 10M events, 100k keys, 64 fragments, 3 rounds
//	go run ./bench -quick    # a smaller version, in seconds
//
// Workload keyed-count: count events per key. The input is a pre-generated
// sequence of key indexes shared by every contender, so all of them do the
// same work from the same memory:
//
//   - map: one goroutine and a map, the sequential floor;
//   - sharded: producer goroutines hash keys into per-shard batches of 1024
//     and send them over channels to one goroutine per shard, each with its
//     own map: the best plain Go on several cores;
//   - engine: the same keys as a partitioned source through a flow
//     (KeyBy, Count) on the actor engine with 64 fragments, timed from start
//     until every event is applied.
//
// Every run's counts are checked against the map baseline.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/tessera-streams/tessera/actor"
	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/shard"
	"github.com/tessera-streams/tessera/splice"
)

// profile is where to write a CPU profile of the engine runs ("" for none).
var profile string

var profileRuns int

// startProfile profiles one engine run; later runs append to a numbered file.
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
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

type params struct {
	events     int
	keys       int
	fragments  int
	partitions int
	rounds     int
	batch      int
}

func main() {
	var p params
	quick := flag.Bool("quick", false, "a small run (1M events, 10k keys)")
	flag.IntVar(&p.events, "events", 10_000_000, "events per run")
	flag.IntVar(&p.keys, "keys", 100_000, "distinct keys")
	flag.IntVar(&p.fragments, "fragments", 64, "engine fragments")
	flag.IntVar(&p.partitions, "partitions", runtime.GOMAXPROCS(0), "source partitions (and baseline producers)")
	flag.IntVar(&p.rounds, "rounds", 3, "interleaved rounds; medians are reported")
	flag.IntVar(&p.batch, "batch", 1024, "records per batch (engine and sharded baseline)")
	out := flag.String("out", "bench/results/latest.json", "JSON results file ('' for none)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the engine runs to this file")
	flag.Parse()
	profile = *cpuprofile
	if *quick {
		p.events, p.keys = 1_000_000, 10_000
	}
	if err := run(p, *out, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// Result is one workload's figures, as written to the results file.
type Result struct {
	Name                 string  `json:"name"`
	Status               string  `json:"status"`
	Events               int     `json:"events"`
	EventsPerSec         float64 `json:"events_per_sec"`
	BaselineEventsPerSec float64 `json:"baseline_events_per_sec"` // keyed-count: the faster baseline; checkpoint-overhead: no checkpoints
	Ratio                float64 `json:"ratio"`
	MapEventsPerSec      float64 `json:"map_baseline_events_per_sec,omitempty"`
	ShardedEventsPerSec  float64 `json:"sharded_baseline_events_per_sec,omitempty"`
	Rounds               int     `json:"rounds"`
	Machine              string  `json:"machine"`
	CheckpointIntervalMs float64 `json:"checkpoint_interval_ms,omitempty"`
	RestoreMs            float64 `json:"restore_ms,omitempty"`  // recovery: load a fragment's checkpoint
	CatchUpMs            float64 `json:"catch_up_ms,omitempty"` // recovery: restart, restore and catch up
	Keys                 int     `json:"keys,omitempty"`
}

func run(p params, out string, w io.Writer) error {
	fmt.Fprintf(w, "keyed-count: %d events, %d keys, %d fragments, %d partitions, GOMAXPROCS %d, %d rounds\n",
		p.events, p.keys, p.fragments, p.partitions, runtime.GOMAXPROCS(0), p.rounds)
	keys := make([]string, p.keys)
	for i := range keys {
		keys[i] = fmt.Sprintf("key-%07d", i)
	}
	idx := make([]uint32, p.events)
	r := gen.Rand{}
	for i := range idx {
		idx[i] = uint32(r.Intn(p.keys))
	}
	want := countMap(keys, idx)
	var tMap, tSharded, tEngine []time.Duration
	for round := 1; round <= p.rounds; round++ {
		runtime.GC()
		start := time.Now()
		countMap(keys, idx)
		tMap = append(tMap, time.Since(start))
		fmt.Fprintf(w, "  round %d: map %v", round, tMap[len(tMap)-1].Round(time.Millisecond))

		runtime.GC()
		start = time.Now()
		got := countSharded(keys, idx, p)
		tSharded = append(tSharded, time.Since(start))
		if err := same(want, got); err != nil {
			return fmt.Errorf("sharded baseline: %w", err)
		}
		fmt.Fprintf(w, ", sharded %v", tSharded[len(tSharded)-1].Round(time.Millisecond))

		runtime.GC()
		d, got, err := countEngine(keys, idx, p)
		if err != nil {
			return err
		}
		if err := same(want, got); err != nil {
			return fmt.Errorf("engine: %w", err)
		}
		tEngine = append(tEngine, d)
		fmt.Fprintf(w, ", engine %v\n", d.Round(time.Millisecond))
	}
	rate := func(ds []time.Duration) float64 {
		return float64(p.events) / median(ds).Seconds()
	}
	res := Result{Name: "keyed-count", Status: "ok", Events: p.events, Rounds: p.rounds,
		MapEventsPerSec: rate(tMap), ShardedEventsPerSec: rate(tSharded), EventsPerSec: rate(tEngine),
		Machine: fmt.Sprintf("%s/%s, %d CPUs", runtime.GOOS, runtime.GOARCH, runtime.NumCPU())}
	res.BaselineEventsPerSec = max(res.MapEventsPerSec, res.ShardedEventsPerSec)
	res.Ratio = res.EventsPerSec / res.BaselineEventsPerSec

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tcontender\tevents/s (median)\tratio to faster baseline\t")
	fmt.Fprintf(tw, "keyed-count\tmap (1 goroutine)\t%.2fM\t%.2f\t\n", res.MapEventsPerSec/1e6, res.MapEventsPerSec/res.BaselineEventsPerSec)
	fmt.Fprintf(tw, "keyed-count\tsharded channels\t%.2fM\t%.2f\t\n", res.ShardedEventsPerSec/1e6, res.ShardedEventsPerSec/res.BaselineEventsPerSec)
	fmt.Fprintf(tw, "keyed-count\ttessera engine\t%.2fM\t%.2f\t\n", res.EventsPerSec/1e6, res.Ratio)
	tw.Flush()
	results := []Result{res}

	interval := time.Second
	if p.events < 5_000_000 {
		interval = 20 * time.Millisecond // short runs: checkpoint often enough to measure
	}
	fmt.Fprintf(w, "checkpoint-overhead: %d events, checkpoints to disk every %v against none\n", 3*p.events, interval)
	ck, err := checkpointOverhead(keys, idx, p, interval, w)
	if err != nil {
		return err
	}
	ck.Machine = res.Machine
	fmt.Fprintf(w, "recovery: one fragment with every key, restored from its checkpoint\n")
	rec, err := recoveryRun(keys, idx, p, w)
	if err != nil {
		return err
	}
	rec.Machine = res.Machine
	results = append(results, ck, rec)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "workload\tfigure\tvalue\t")
	fmt.Fprintf(tw, "checkpoint-overhead\tevents/s with checkpoints every %v\t%.2fM\t\n", interval, ck.EventsPerSec/1e6)
	fmt.Fprintf(tw, "checkpoint-overhead\tevents/s without\t%.2fM\t\n", ck.BaselineEventsPerSec/1e6)
	fmt.Fprintf(tw, "checkpoint-overhead\tratio (goal >= 0.90)\t%.2f\t\n", ck.Ratio)
	fmt.Fprintf(tw, "recovery\trestore a %d-key fragment (goal <= 1s)\t%.1f ms\t\n", rec.Keys, rec.RestoreMs)
	fmt.Fprintf(tw, "recovery\trestart + catch up %d events\t%.1f ms\t\n", rec.Events, rec.CatchUpMs)
	tw.Flush()
	if out == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(results, "", "  ")
	return os.WriteFile(out, append(b, '\n'), 0o644)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func same(want, got map[string]int64) error {
	if len(want) != len(got) {
		return fmt.Errorf("%d keys, want %d", len(got), len(want))
	}
	for k, n := range want {
		if got[k] != n {
			return fmt.Errorf("%s = %d, want %d", k, got[k], n)
		}
	}
	return nil
}

func countMap(keys []string, idx []uint32) map[string]int64 {
	m := make(map[string]int64)
	for _, i := range idx {
		m[keys[i]]++
	}
	return m
}

func countSharded(keys []string, idx []uint32, p params) map[string]int64 {
	shards := runtime.GOMAXPROCS(0)
	chans := make([]chan []string, shards)
	maps := make([]map[string]int64, shards)
	var workers sync.WaitGroup
	for s := range shards {
		chans[s] = make(chan []string, 64)
		maps[s] = make(map[string]int64)
		workers.Add(1)
		go func() {
			defer workers.Done()
			m := maps[s]
			for b := range chans[s] {
				for _, k := range b {
					m[k]++
				}
			}
		}()
	}
	var producers sync.WaitGroup
	per := (len(idx) + p.partitions - 1) / p.partitions
	for part := range p.partitions {
		lo, hi := min(part*per, len(idx)), min((part+1)*per, len(idx))
		producers.Add(1)
		go func() {
			defer producers.Done()
			bufs := make([][]string, shards)
			for _, i := range idx[lo:hi] {
				k := keys[i]
				s := shard.Fragment(shard.String(k), shards)
				bufs[s] = append(bufs[s], k)
				if len(bufs[s]) == p.batch {
					chans[s] <- bufs[s]
					bufs[s] = make([]string, 0, p.batch)
				}
			}
			for s, b := range bufs {
				if len(b) > 0 {
					chans[s] <- b
				}
			}
		}()
	}
	producers.Wait()
	for _, c := range chans {
		close(c)
	}
	workers.Wait()
	out := make(map[string]int64)
	for _, m := range maps {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// sliceSource serves contiguous ranges of the key sequence, repeated
// repeat times, as partitions; upto (0, 1] makes each partition end early,
// with the same offsets.
type sliceSource struct {
	keys   []string
	idx    []uint32
	parts  int
	repeat int
	upto   float64
}

func (s *sliceSource) Partitions() int { return s.parts }

func (s *sliceSource) Open(p int, from int64) (flows.PartitionReader[string], error) {
	n := len(s.idx) * max(s.repeat, 1)
	per := (n + s.parts - 1) / s.parts
	lo, hi := min(p*per, n), min((p+1)*per, n)
	if s.upto > 0 && s.upto < 1 {
		hi = lo + int(float64(hi-lo)*s.upto)
	}
	return &sliceReader{s: s, lo: lo, next: lo + int(from), hi: hi}, nil
}

type sliceReader struct {
	s            *sliceSource
	lo, next, hi int
}

func (r *sliceReader) Read(_ context.Context, b *flows.ReadBatch[string], max int) error {
	end := min(r.hi, r.next+max)
	n := len(r.s.idx)
	for i := r.next; i < end; i++ {
		b.Events = append(b.Events, r.s.keys[r.s.idx[i%n]])
		b.Offsets = append(b.Offsets, int64(i-r.lo))
	}
	r.next = end
	b.End = int64(end - r.lo)
	if r.next >= r.hi {
		return io.EOF
	}
	return nil
}

func (r *sliceReader) Close() error { return nil }

// engineRun is one run of the keyed count on the engine.
type engineRun struct {
	fragments  int
	repeat     int
	upto       float64
	checkpoint time.Duration // the interval; negative for none
	store      *recovery.Store
	counts     bool // read the counts back
}

func countEngine(keys []string, idx []uint32, p params) (time.Duration, map[string]int64, error) {
	return runEngine(keys, idx, p, engineRun{fragments: p.fragments, checkpoint: -1, counts: true})
}

func runEngine(keys []string, idx []uint32, p params, run engineRun) (time.Duration, map[string]int64, error) {
	f := flows.New("bench", flows.WithFragments(run.fragments))
	src := &sliceSource{keys: keys, idx: idx, parts: p.partitions, repeat: run.repeat, upto: run.upto}
	flows.Count(flows.KeyBy(flows.From(f, "keys", flows.Source[string](src)), flows.Identity[string])).View("counts")
	plan, err := f.Plan()
	if err != nil {
		return 0, nil, err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if profile != "" {
		stop, err := startProfile(profile)
		if err != nil {
			return 0, nil, err
		}
		defer stop()
	}
	start := time.Now()
	e, err := actor.Start(plan, actor.Config{Logger: logger, BatchSize: p.batch, PollSize: p.batch,
		CheckpointInterval: run.checkpoint, Store: run.store})
	if err != nil {
		return 0, nil, err
	}
	defer e.Stop()
	<-e.Drained()
	d := time.Since(start)
	if err := e.Err(); err != nil {
		return 0, nil, err
	}
	if !run.counts {
		return d, nil, nil
	}
	res, err := splice.Evaluate(context.Background(), e, splice.Request{View: "counts", Op: splice.OpEntries, Query: splice.Query{Limit: splice.MaxLimit}})
	if err != nil {
		return 0, nil, err
	}
	got := make(map[string]int64, len(res.Entries))
	for _, en := range res.Entries {
		got[en.Key] = en.Value.(int64)
	}
	return d, got, nil
}

// checkpointOverhead runs the keyed count three times over on the engine,
// with checkpoints to disk at interval and with none, interleaved.
func checkpointOverhead(keys []string, idx []uint32, p params, interval time.Duration, w io.Writer) (Result, error) {
	const repeat = 3
	var tNone, tCkpt []time.Duration
	var bytes int64
	for round := 1; round <= p.rounds; round++ {
		runtime.GC()
		d, _, err := runEngine(keys, idx, p, engineRun{fragments: p.fragments, repeat: repeat, checkpoint: -1})
		if err != nil {
			return Result{}, err
		}
		tNone = append(tNone, d)
		dir, err := os.MkdirTemp("", "tessera-bench-")
		if err != nil {
			return Result{}, err
		}
		store, err := recovery.Open(dir, nil, nil)
		if err != nil {
			return Result{}, err
		}
		runtime.GC()
		d2, _, err := runEngine(keys, idx, p, engineRun{fragments: p.fragments, repeat: repeat, checkpoint: interval, store: store})
		bytes = store.BytesWritten()
		store.Close()
		os.RemoveAll(dir)
		if err != nil {
			return Result{}, err
		}
		tCkpt = append(tCkpt, d2)
		fmt.Fprintf(w, "  round %d: no checkpoints %v, checkpoints every %v %v (%d MB written)\n", round,
			d.Round(time.Millisecond), interval, d2.Round(time.Millisecond), bytes>>20)
	}
	n := float64(len(idx) * repeat)
	none, with := n/median(tNone).Seconds(), n/median(tCkpt).Seconds()
	return Result{Name: "checkpoint-overhead", Status: "ok", Events: int(n), Rounds: p.rounds,
		EventsPerSec: with, BaselineEventsPerSec: none, Ratio: with / none,
		CheckpointIntervalMs: float64(interval.Milliseconds())}, nil
}

// recoveryRun measures a fragment holding every key: restoring it from its
// checkpoint, and a restart that restores it and catches up on the last
// tenth of the stream.
func recoveryRun(keys []string, idx []uint32, p params, w io.Writer) (Result, error) {
	dir, err := os.MkdirTemp("", "tessera-bench-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(dir)
	store, err := recovery.Open(dir, nil, nil)
	if err != nil {
		return Result{}, err
	}
	defer store.Close()
	// The first run reads 90% of every partition; Stop checkpoints.
	if _, _, err := runEngine(keys, idx, p, engineRun{fragments: 1, upto: 0.9, checkpoint: -1, store: store}); err != nil {
		return Result{}, err
	}
	f := flows.New("bench", flows.WithFragments(1))
	flows.Count(flows.KeyBy(flows.From(f, "keys", flows.Source[string](&sliceSource{keys: keys, idx: idx, parts: p.partitions})), flows.Identity[string])).View("counts")
	plan, err := f.Plan()
	if err != nil {
		return Result{}, err
	}
	var restores []time.Duration
	var entries int64
	for range p.rounds {
		start := time.Now()
		r, err := recovery.Restore(store, plan, 0)
		if err != nil {
			return Result{}, err
		}
		restores = append(restores, time.Since(start))
		entries = r.Manifest.Entries
	}
	var catchups []time.Duration
	for range p.rounds {
		// A restart from the same checkpoint each round: no final
		// checkpoint is kept (a copy of the store would be as good).
		d, counts, err := runEngine(keys, idx, p, engineRun{fragments: 1, checkpoint: -1, store: store, counts: true})
		if err != nil {
			return Result{}, err
		}
		var total int64
		for _, c := range counts {
			total += c
		}
		if total != int64(len(idx)) {
			return Result{}, fmt.Errorf("recovery: %d events counted after the restart, want %d", total, len(idx))
		}
		catchups = append(catchups, d)
		// Put the 90% checkpoint back for the next round.
		if _, _, err := runEngine(keys, idx, p, engineRun{fragments: 1, upto: 0.9, checkpoint: -1, store: resetStore(store)}); err != nil {
			return Result{}, err
		}
	}
	rest, catch := median(restores), median(catchups)
	fmt.Fprintf(w, "  restore of a %d-key fragment: %v; restart + catch-up of %d events: %v\n", entries, rest.Round(time.Microsecond), len(idx)/10, catch.Round(time.Millisecond))
	return Result{Name: "recovery", Status: "ok", Events: len(idx) / 10, Rounds: p.rounds, RestoreMs: float64(rest.Microseconds()) / 1000,
		CatchUpMs: float64(catch.Microseconds()) / 1000, Keys: int(entries)}, nil
}

// resetStore drops the flow's checkpoints.
func resetStore(s *recovery.Store) *recovery.Store {
	_ = s.Drop("bench")
	return s
}
