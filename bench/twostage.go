package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/tessera-streams/tessera/actor"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/splice"
)

// The two-stage workload: count per key, then re-key every count update by
// its value and count those — the "count of counts" (spectrum[v]: how
// many keys reached v). On the engine the second stage is an exchange:
// its input leaves a first-stage fragment once a checkpoint covers it.

// spectrumMap is the plain loop.
func spectrumMap(in *input) map[int64]int64 {
	counts := make(map[string]int64)
	spec := make(map[int64]int64)
	for _, i := range in.idx {
		k := in.keys[i]
		counts[k]++
		spec[counts[k]]++
	}
	return spec
}

// spectrumSharded is the same over goroutines: producers hash keys to
// first-stage shards, which send each new count to the second-stage shard
// of its value, all over channels in batches.
func spectrumSharded(in *input, p params) map[int64]int64 {
	shards := runtime.GOMAXPROCS(0)
	first := make([]chan []string, shards)
	second := make([]chan []int64, shards)
	specs := make([]map[int64]int64, shards)
	var w2 sync.WaitGroup
	for s := range shards {
		second[s] = make(chan []int64, 64)
		specs[s] = make(map[int64]int64)
		w2.Add(1)
		go func() {
			defer w2.Done()
			m := specs[s]
			for b := range second[s] {
				for _, v := range b {
					m[v]++
				}
			}
		}()
	}
	var w1 sync.WaitGroup
	for s := range shards {
		first[s] = make(chan []string, 64)
		w1.Add(1)
		go func() {
			defer w1.Done()
			counts := make(map[string]int64)
			out := make([][]int64, shards)
			for b := range first[s] {
				for _, k := range b {
					counts[k]++
					v := counts[k]
					t := int(uint64(v) % uint64(shards))
					out[t] = append(out[t], v)
					if len(out[t]) == 1024 {
						second[t] <- out[t]
						out[t] = nil
					}
				}
			}
			for t, b := range out {
				if len(b) > 0 {
					second[t] <- b
				}
			}
		}()
	}
	feedShards(in, p, p.baselineBatch, first, func(k string, _ int64) string { return k })
	w1.Wait()
	for _, c := range second {
		close(c)
	}
	w2.Wait()
	out := make(map[int64]int64)
	for _, m := range specs {
		for v, n := range m {
			out[v] += n
		}
	}
	return out
}

// twoStageInterval is how often the engine's fragments checkpoint in the
// two-stage run (to memory): the second stage's input is released by them.
const twoStageInterval = 100 * time.Millisecond

func twoStageEngine(in *input, p params) (cost, map[int64]int64, float64, error) {
	src := &sliceSource{in: in, parts: p.partitions, repeat: 1}
	f := flows.New("two-stage", flows.WithFragments(p.fragments))
	counts := flows.Count(flows.KeyBy(flows.From(f, "keys", flows.Source[bev](src)), func(e bev) string { return e.K }))
	flows.Count(flows.KeyBy(counts.Updates(), func(kv flows.KV[string, int64]) int64 { return kv.Value })).View("spectrum")
	plan, err := flowcore.Compile(f)
	if err != nil {
		return cost{}, nil, 0, err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	dir, err := os.MkdirTemp("", "tessera-bench-")
	if err != nil {
		return cost{}, nil, 0, err
	}
	defer os.RemoveAll(dir)
	store, err := recovery.Open(dir, nil, logger)
	if err != nil {
		return cost{}, nil, 0, err
	}
	defer store.Close()
	resetPeakRSS()
	if profile != "" {
		stop, err := startProfile(profile)
		if err != nil {
			return cost{}, nil, 0, err
		}
		defer stop()
	}
	cpu, start := cpuTime(), time.Now()
	e, err := actor.Start(plan, actor.Config{Logger: logger, BatchSize: p.batch, PollSize: p.batch, CheckpointInterval: twoStageInterval,
		Store: store})
	if err != nil {
		return cost{}, nil, 0, err
	}
	defer e.Stop()
	<-e.Drained()
	c := cost{time.Since(start), cpuTime() - cpu}
	rss := peakRSSMB()
	if err := e.Err(); err != nil {
		return c, nil, rss, err
	}
	ans, err := splice.Evaluate(context.Background(), e, splice.Request{View: "spectrum", Op: splice.OpEntries, Query: splice.Query{Limit: splice.MaxLimit}})
	if err != nil {
		return c, nil, rss, err
	}
	got := make(map[int64]int64, len(ans.Entries))
	for _, en := range ans.Entries {
		v, err := strconv.ParseInt(en.Key, 10, 64)
		if err != nil {
			return c, nil, rss, err
		}
		got[v] = en.Value.(int64)
	}
	return c, got, rss, nil
}

func twoStage(in *input, p params, w io.Writer) (Result, error) {
	want := spectrumMap(in)
	var loop, sharded, eng costs
	var rss []float64
	for round := 1; round <= p.rounds; round++ {
		runtime.GC()
		loop = append(loop, measure(func() { spectrumMap(in) }))
		runtime.GC()
		var got map[int64]int64
		sharded = append(sharded, measure(func() { got = spectrumSharded(in, p) }))
		if err := sameSpectrum(want, got); err != nil {
			return Result{}, fmt.Errorf("sharded baseline: %w", err)
		}
		runtime.GC()
		c, got, r, err := twoStageEngine(in, p)
		if err != nil {
			return Result{}, err
		}
		if err := sameSpectrum(want, got); err != nil {
			return Result{}, fmt.Errorf("engine: %w", err)
		}
		eng, rss = append(eng, c), append(rss, r)
		fmt.Fprintf(w, "  round %d: loop %v, sharded %v, engine %v\n", round, loop.last(), sharded.last(), eng.last())
	}
	n := len(in.idx)
	l, s := loop.rate(n), sharded.rate(n)
	r := Result{Name: "two-stage", Events: n, Rounds: p.rounds, Versus: "plain Go", Goal: atLeast("ratio", 0.5),
		Baseline:  "faster of one loop and two stages of sharded goroutines fed by channels (CPU: the cheaper)",
		PeakRSSMB: medianF(rss),
		Note: fmt.Sprintf("count per key, re-keyed by count, count of counts; %d fragments, checkpoints to disk every %v; loop %.2fM/s, sharded %.2fM/s",
			p.fragments, twoStageInterval, l/1e6, s/1e6)}
	r.against(eng.rate(n), eng.cpuPerEvent(n), max(l, s), cheapest(n, loop, sharded))
	return r, nil
}

func sameSpectrum(want, got map[int64]int64) error {
	if len(want) != len(got) {
		return fmt.Errorf("spectrum of %d counts, want %d", len(got), len(want))
	}
	for v, n := range want {
		if got[v] != n {
			return fmt.Errorf("spectrum[%d] = %d, want %d", v, got[v], n)
		}
	}
	return nil
}
