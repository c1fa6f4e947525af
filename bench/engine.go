package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tessera-streams/tessera/actor"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/splice"
)

// engineRun is one run of a workload on the engine.
type engineRun struct {
	stateless  bool // map and filter only; else the keyed count
	fragments  int
	repeat     int     // input repetitions; 0 with until: unbounded
	upto       float64 // see sliceSource
	checkpoint time.Duration
	store      *recovery.Store
	counts     bool // read the counts back
	// during, if set, runs while the engine ingests, and the run ends when
	// it returns (for unbounded runs).
	during func(e *actor.Engine)
}

type engineResult struct {
	cost    cost // from the engine's start to every event applied
	events  int64
	counts  map[string]int64
	kept    int64     // stateless: events kept by the filter
	lat     []float64 // sampled end-to-end latencies, ms
	peakRSS float64
}

// latencySink records, for sampled events, the time from the source read
// to the state update (the sink runs after the fragment applied the batch).
type latencySink struct {
	mu sync.Mutex
	ms []float64
}

func (s *latencySink) Write(out []flows.Output[bev]) error {
	now := time.Now().UnixNano()
	s.mu.Lock()
	for _, o := range out {
		s.ms = append(s.ms, float64(now-o.Value.T)/1e6)
	}
	s.mu.Unlock()
	return nil
}

// benchFlow is the workloads' flow: the keyed count (with a latency sink),
// or the stateless map and filter.
func benchFlow(src flows.Source[bev], fragments int, stateless bool, lat *latencySink, kept *atomic.Int64, opts ...flows.SourceOption) *flows.Flow {
	f := flows.New("bench", flows.WithFragments(max(fragments, 1)))
	events := flows.From(f, "keys", src, opts...)
	if stateless {
		keep := flows.Filter(events, func(e bev) bool { return statelessKeep(e.K) })
		flows.To(keep, flows.SinkFunc[bev](func(out []flows.Output[bev]) error {
			kept.Add(int64(len(out)))
			now := time.Now().UnixNano()
			lat.mu.Lock()
			for _, o := range out {
				if o.Value.T != 0 {
					lat.ms = append(lat.ms, float64(now-o.Value.T)/1e6)
				}
			}
			lat.mu.Unlock()
			return nil
		}))
	} else {
		ks := flows.KeyBy(events, func(e bev) string { return e.K })
		flows.Count(ks).View("counts")
		flows.To(flows.Filter(ks.Values(), func(e bev) bool { return e.T != 0 }), flows.Sink[bev](lat))
	}
	return f
}

// benchPlan is the keyed count's plan with one fragment, for restores.
func benchPlan() (*flowcore.Plan, error) {
	return flowcore.Compile(benchFlow(&sliceSource{parts: 1}, 1, false, &latencySink{}, nil))
}

func runEngine(in *input, p params, run engineRun) (engineResult, error) {
	var res engineResult
	src := &sliceSource{in: in, parts: p.partitions, repeat: run.repeat, upto: run.upto}
	lat := &latencySink{}
	var kept atomic.Int64
	f := benchFlow(src, run.fragments, run.stateless, lat, &kept)
	plan, err := flowcore.Compile(f)
	if err != nil {
		return res, err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	resetPeakRSS()
	if profile != "" {
		stop, err := startProfile(profile)
		if err != nil {
			return res, err
		}
		defer stop()
	}
	cpu, start := cpuTime(), time.Now()
	e, err := actor.Start(plan, actor.Config{Logger: logger, BatchSize: p.batch, PollSize: p.batch,
		CheckpointInterval: run.checkpoint, Store: run.store})
	if err != nil {
		return res, err
	}
	defer e.Stop()
	if run.during != nil {
		run.during(e)
	} else {
		<-e.Drained()
	}
	res.cost = cost{time.Since(start), cpuTime() - cpu}
	res.peakRSS = peakRSSMB()
	if err := e.Err(); err != nil {
		return res, err
	}
	for _, r := range e.Readers() {
		res.events += r.Events.Load()
	}
	res.kept = kept.Load()
	lat.mu.Lock()
	res.lat = lat.ms
	lat.mu.Unlock()
	if !run.counts {
		return res, nil
	}
	res.counts, err = engineCounts(e)
	return res, err
}

// engineCounts reads every entry of the keyed view "counts" of an engine.
func engineCounts(e *actor.Engine) (map[string]int64, error) {
	ans, err := splice.Evaluate(context.Background(), e, splice.Request{View: "counts", Op: splice.OpEntries, Query: splice.Query{Limit: splice.MaxLimit}})
	if err != nil {
		return nil, err
	}
	counts := make(map[string]int64, len(ans.Entries))
	for _, en := range ans.Entries {
		counts[en.Key] = en.Value.(int64)
	}
	return counts, nil
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

// windowRun is one run of a windowed count per key on the engine: in
// windows w, or in sessions with the given gap if it is positive.
func windowRun(in *input, p params, w flows.Windows, sliding bool, gap time.Duration) (engineResult, int64, int64, error) {
	var res engineResult
	src := &sliceSource{in: in, parts: p.partitions, repeat: 1, eventTime: true}
	f := flows.New("bench-windows", flows.WithFragments(p.fragments))
	events := flows.From(f, "keys", flows.Source[bev](src), flows.WithEventTime(func(e bev) time.Time { return time.Unix(0, e.T) }, time.Second))
	ks := flows.KeyBy(events, func(e bev) string { return e.K })
	count := func(n int64, _ bev) int64 { return n + 1 }
	var win flows.Windowed[string, bev, int64]
	add := func(a, b int64) int64 { return a + b }
	switch {
	case gap > 0:
		win = flows.SessionAggregate(ks, gap, func() int64 { return 0 }, count, add)
	case sliding:
		// A count is a group: the windows fire from running totals, as the
		// sliced baseline's do.
		win = flows.WindowAggregateInvertible(ks, w, func() int64 { return 0 }, count, add, func(a, b int64) int64 { return a - b })
	default:
		win = flows.WindowAggregate(ks, w, func() int64 { return 0 }, count)
	}
	var results, sum atomic.Int64
	flows.To(win.Results(), flows.SinkFunc[flows.WindowResult[string, int64]](func(out []flows.Output[flows.WindowResult[string, int64]]) error {
		var s int64
		for _, o := range out {
			s += o.Value.Value
		}
		results.Add(int64(len(out)))
		sum.Add(s)
		return nil
	}))
	plan, err := flowcore.Compile(f)
	if err != nil {
		return res, 0, 0, err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	resetPeakRSS()
	if profile != "" {
		stop, err := startProfile(profile)
		if err != nil {
			return res, 0, 0, err
		}
		defer stop()
	}
	cpu, start := cpuTime(), time.Now()
	e, err := actor.Start(plan, actor.Config{Logger: logger, BatchSize: p.batch, PollSize: p.batch, CheckpointInterval: -1})
	if err != nil {
		return res, 0, 0, err
	}
	defer e.Stop()
	<-e.Drained()
	res.cost = cost{time.Since(start), cpuTime() - cpu}
	res.peakRSS = peakRSSMB()
	return res, results.Load(), sum.Load(), e.Err()
}
