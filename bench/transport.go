package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"time"

	"github.com/tessera-streams/tessera/actor"
	"github.com/tessera-streams/tessera/examples/transport/pipeline"
	"github.com/tessera-streams/tessera/examples/transport/sim"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/splice"
)

// The transport workload: the transport example's pipeline (trip
// detection per subscriber with event-time timers, TTL and event-time
// order; OD matrices, travel times and crowds downstream) over simulated
// pings, on one node with checkpoints to disk, against the same
// computation as a plain sequential program in this process.

// transportMax caps the simulated pings: the simulation is held in memory.
const transportMax = 2_000_000

// transportGoal is the pings/s goal on one node; transportRatio the goal
// against the sequential program.
const (
	transportGoal  = 1.5e6
	transportRatio = 0.3
)

func transportEngine(s *sim.Sim, net pipeline.Network, o pipeline.Options, p params) (cost, int64, float64, error) {
	plan, err := flowcore.Compile(pipeline.Flow(s.Source(0, nil), net, o))
	if err != nil {
		return cost{}, 0, 0, err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	dir, err := os.MkdirTemp("", "tessera-bench-")
	if err != nil {
		return cost{}, 0, 0, err
	}
	defer os.RemoveAll(dir)
	store, err := recovery.Open(dir, nil, logger)
	if err != nil {
		return cost{}, 0, 0, err
	}
	defer store.Close()
	resetPeakRSS()
	if profile != "" {
		stop, err := startProfile(profile)
		if err != nil {
			return cost{}, 0, 0, err
		}
		defer stop()
	}
	cpu, start := cpuTime(), time.Now()
	e, err := actor.Start(plan, actor.Config{Logger: logger, BatchSize: p.batch, PollSize: p.batch, CheckpointInterval: twoStageInterval,
		Store: store})
	if err != nil {
		return cost{}, 0, 0, err
	}
	defer e.Stop()
	<-e.Drained()
	c := cost{time.Since(start), cpuTime() - cpu}
	rss := peakRSSMB()
	if err := e.Err(); err != nil {
		return c, 0, rss, err
	}
	res, err := splice.Evaluate(context.Background(), e, splice.Request{View: "trips", Op: splice.OpValue})
	if err != nil {
		return c, 0, rss, err
	}
	return c, res.Value.(int64), rss, nil
}

func transport(p params, w io.Writer) (Result, error) {
	c := sim.DefaultConfig()
	n := min(p.events, transportMax)
	c.Subscribers = max(1, n/sim.PingsPerSubscriberDay)
	c.Partitions = p.partitions
	s, err := sim.Simulate(c)
	if err != nil {
		return Result{Name: "transport"}, err
	}
	net := pipeline.NetworkOf(s)
	o := pipeline.DefaultOptions()
	o.Fragments, o.Params.MaxDelay = p.fragments, c.MaxDelay()
	o.Crowd = 1 << 40 // no alerts: they would log every window
	pings := s.Pings()
	var seq, eng costs
	var rss []float64
	for round := 1; round <= p.rounds; round++ {
		runtime.GC()
		var want pipeline.Result
		seq = append(seq, measure(func() { want = pipeline.Sequential(s.Parts, net, o) }))
		runtime.GC()
		cst, trips, r, err := transportEngine(s, net, o, p)
		if err != nil {
			return Result{Name: "transport"}, err
		}
		if trips != int64(len(want.Trips)) {
			return Result{Name: "transport"}, fmt.Errorf("engine detected %d trips, the sequential program %d", trips, len(want.Trips))
		}
		eng, rss = append(eng, cst), append(rss, r)
		fmt.Fprintf(w, "  round %d: sequential %v, engine %v\n", round, seq.last(), eng.last())
	}
	r := Result{Name: "transport", Events: pings, Rounds: p.rounds, Versus: "sequential", Goal: atLeast("events_per_sec", transportGoal),
		Baseline:  "the same pipeline as a plain sequential program (pipeline.Sequential) in this process",
		PeakRSSMB: medianF(rss)}
	r.against(eng.rate(pings), eng.cpuPerEvent(pings), seq.rate(pings), seq.cpuPerEvent(pings))
	ratioVerdict := statusOK
	if r.Ratio < transportRatio {
		ratioVerdict = statusMissed
	}
	r.Note = fmt.Sprintf("simulated pings of %d subscribers; %d fragments, checkpoints to disk every %v; goal ratio >= %g: %s",
		c.Subscribers, p.fragments, twoStageInterval, transportRatio, ratioVerdict)
	return r, nil
}
