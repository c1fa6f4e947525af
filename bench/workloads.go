package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/tessera-streams/tessera/actor"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/splice"
)

// lastLatencies are the keyed count's sampled latencies, for the plot.
var lastLatencies []float64

func stateless(in *input, p params, w io.Writer) (Result, error) {
	want := statelessLoop(in)
	var loop, par, eng costs
	var lat, rss []float64
	for round := 1; round <= p.rounds; round++ {
		runtime.GC()
		loop = append(loop, measure(func() { statelessLoop(in) }))
		runtime.GC()
		var got int64
		par = append(par, measure(func() { got = statelessParallel(in, p) }))
		if got != want {
			return Result{}, fmt.Errorf("parallel baseline kept %d, want %d", got, want)
		}
		r, err := runEngine(in, p, engineRun{stateless: true, repeat: 1, checkpoint: -1})
		if err != nil {
			return Result{}, err
		}
		if r.kept != want {
			return Result{}, fmt.Errorf("engine kept %d, want %d", r.kept, want)
		}
		eng = append(eng, r.cost)
		rss = append(rss, r.peakRSS)
		lat = append(lat, r.lat...)
		fmt.Fprintf(w, "  round %d: loop %v, parallel %v, engine %v\n", round, loop.last(), par.last(), eng.last())
	}
	n := len(in.idx)
	r := Result{Name: "stateless", Events: n, Rounds: p.rounds, Versus: "plain Go",
		Baseline:  "faster of one loop and one goroutine per partition (CPU: the cheaper)",
		PeakRSSMB: medianF(rss), Note: "map+filter, no key: readers only"}
	r.against(eng.rate(n), eng.cpuPerEvent(n), max(loop.rate(n), par.rate(n)), cheapest(n, loop, par))
	r.P50Ms, r.P99Ms = percentile(lat, 0.5), percentile(lat, 0.99)
	return r, nil
}

func keyedCount(in *input, p params, w io.Writer) (Result, error) {
	want := countMap(in)
	var cmap, sharded, eng costs
	var lat, rss []float64
	for round := 1; round <= p.rounds; round++ {
		runtime.GC()
		cmap = append(cmap, measure(func() { countMap(in) }))
		runtime.GC()
		var got map[string]int64
		sharded = append(sharded, measure(func() { got = countSharded(in, p) }))
		if err := same(want, got); err != nil {
			return Result{}, fmt.Errorf("sharded baseline: %w", err)
		}
		r, err := runEngine(in, p, engineRun{fragments: p.fragments, repeat: 1, checkpoint: -1, counts: true})
		if err != nil {
			return Result{}, err
		}
		if err := same(want, r.counts); err != nil {
			return Result{}, fmt.Errorf("engine: %w", err)
		}
		eng = append(eng, r.cost)
		lat = append(lat, r.lat...)
		rss = append(rss, r.peakRSS)
		fmt.Fprintf(w, "  round %d: map %v, sharded %v, engine %v\n", round, cmap.last(), sharded.last(), eng.last())
	}
	lastLatencies = append([]float64(nil), lat...)
	n := len(in.idx)
	m, s := cmap.rate(n), sharded.rate(n)
	mc, sc := cmap.cpuPerEvent(n), sharded.cpuPerEvent(n)
	r := Result{Name: "keyed-count", Events: n, Rounds: p.rounds, Versus: "plain Go", Goal: atLeast("ratio", 0.8),
		Baseline:        "faster of one map and sharded goroutines fed by channels (CPU: the cheaper)",
		MapEventsPerSec: m, ShardedEventsPerSec: s, MapCPUNsPerEvent: mc, ShardedCPUNsPerEvent: sc, PeakRSSMB: medianF(rss),
		Note: fmt.Sprintf("%d events, %d keys, %d fragments; map %.2fM/s %.0f ns/event, sharded %.2fM/s %.0f ns/event", n, len(in.keys), p.fragments, m/1e6, mc, s/1e6, sc)}
	r.against(eng.rate(n), eng.cpuPerEvent(n), max(m, s), min(mc, sc))
	r.P50Ms, r.P99Ms = percentile(lat, 0.5), percentile(lat, 0.99)
	return r, nil
}

// checkpointOverhead runs the keyed count three times over, with
// checkpoints to disk and with none, interleaved.
func checkpointOverhead(in *input, p params, w io.Writer) (Result, error) {
	const repeat = 3
	interval := time.Second
	if p.quick {
		interval = 20 * time.Millisecond // short runs: checkpoint often enough to count
	}
	var none, ckpt costs
	var lat, rss []float64
	for round := 1; round <= p.rounds; round++ {
		r, err := runEngine(in, p, engineRun{fragments: p.fragments, repeat: repeat, checkpoint: -1})
		if err != nil {
			return Result{}, err
		}
		none = append(none, r.cost)
		dir, err := os.MkdirTemp("", "tessera-bench-")
		if err != nil {
			return Result{}, err
		}
		store, err := recovery.Open(dir, nil, nil)
		if err != nil {
			return Result{}, err
		}
		r2, err := runEngine(in, p, engineRun{fragments: p.fragments, repeat: repeat, checkpoint: interval, store: store})
		written := store.BytesWritten()
		store.Close()
		os.RemoveAll(dir)
		if err != nil {
			return Result{}, err
		}
		ckpt = append(ckpt, r2.cost)
		lat = append(lat, r2.lat...)
		rss = append(rss, r2.peakRSS)
		fmt.Fprintf(w, "  round %d: no checkpoints %v, checkpoints every %v %v (%d MB written)\n", round,
			none.last(), interval, ckpt.last(), written>>20)
	}
	n := len(in.idx) * repeat
	res := Result{Name: "checkpoint-overhead", Events: n, Rounds: p.rounds, Goal: atLeast("ratio", 0.9),
		Baseline: "the engine without checkpoints", Versus: "no checkpoints",
		CheckpointIntervalMs: float64(interval.Milliseconds()), PeakRSSMB: medianF(rss),
		Note: fmt.Sprintf("keyed count, checkpoints to disk every %v", interval)}
	res.against(ckpt.rate(n), ckpt.cpuPerEvent(n), none.rate(n), none.cpuPerEvent(n))
	res.P50Ms, res.P99Ms = percentile(lat, 0.5), percentile(lat, 0.99)
	return res, nil
}

// recoveryRun measures a fragment holding every key: restoring it from its
// checkpoint, and a restart that restores it and catches up on the last
// tenth of the stream.
func recoveryRun(in *input, p params, w io.Writer) (Result, error) {
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
	first := engineRun{fragments: 1, repeat: 1, upto: 0.9, checkpoint: -1, store: store}
	var restores []time.Duration
	var catchups costs
	var entries int64 // the restored checkpoint's store entries (a table's keys go 32 to an entry)
	var keys int
	var rss []float64
	for round := 1; round <= p.rounds; round++ {
		if err := store.Drop("bench"); err != nil {
			return Result{}, err
		}
		// Reads 90% of every partition; Stop checkpoints it.
		if _, err := runEngine(in, p, first); err != nil {
			return Result{}, err
		}
		plan, err := benchPlan()
		if err != nil {
			return Result{}, err
		}
		start := time.Now()
		rs, err := recovery.Restore(store, plan, 0)
		if err != nil {
			return Result{}, err
		}
		restores = append(restores, time.Since(start))
		entries = rs.Manifest.Entries
		r, err := runEngine(in, p, engineRun{fragments: 1, repeat: 1, checkpoint: -1, store: store, counts: true})
		if err != nil {
			return Result{}, err
		}
		var total int64
		for _, c := range r.counts {
			total += c
		}
		if total != int64(len(in.idx)) {
			return Result{}, fmt.Errorf("%d events counted after the restart, want %d", total, len(in.idx))
		}
		keys = len(r.counts)
		catchups = append(catchups, r.cost)
		rss = append(rss, r.peakRSS)
		fmt.Fprintf(w, "  round %d: restore %v, restart + catch-up of %d events %v\n", round,
			restores[len(restores)-1].Round(time.Microsecond), r.events, catchups.last())
	}
	n := len(in.idx) / 10
	rest, catch := median(restores), catchups.wall()
	return Result{Name: "recovery", Events: n, Rounds: p.rounds, Goal: atMost("restore_ms", 1000),
		EventsPerSec: catchups.rate(n), CPUNsPerEvent: catchups.cpuPerEvent(n), RestoreMs: float64(rest.Microseconds()) / 1000,
		CatchUpMs: float64(catch.Microseconds()) / 1000, Keys: keys, PeakRSSMB: medianF(rss),
		Note: fmt.Sprintf("restore of a %d-key fragment (%d store entries) %.1f ms; restart + catch-up %.0f ms (events/s and CPU: the catch-up's, restore included)", keys, entries,
			float64(rest.Microseconds())/1000, float64(catch.Microseconds())/1000)}, nil
}

// queryLatency queries the keyed count's views while it ingests at full
// speed: point lookups and the aggregate, through the same evaluation as
// the HTTP API. A top-10 follows every other lookup: at one in ten, a run
// had about 20 of them, and their p99 was their slowest.
func queryLatency(in *input, p params, w io.Writer) (Result, error) {
	dur := 5 * time.Second
	if p.quick {
		dur = time.Second
	}
	var point, agg []float64
	var ingested int64
	r, err := runEngine(in, p, engineRun{fragments: p.fragments, repeat: 0, checkpoint: time.Second, during: func(e *actor.Engine) {
		ctx := context.Background()
		end := time.Now().Add(dur)
		for i := 0; time.Now().Before(end); i++ {
			start := time.Now()
			_, err := splice.Evaluate(ctx, e, splice.Request{View: "counts", Op: splice.OpKey, Key: in.keys[i%len(in.keys)]})
			if err != nil && err != splice.ErrNotFound {
				return
			}
			point = append(point, float64(time.Since(start).Microseconds())/1000)
			if i%2 == 0 {
				start = time.Now()
				if _, err := splice.Evaluate(ctx, e, splice.Request{View: "counts", Op: splice.OpEntries, Query: splice.Query{Top: 10}}); err != nil {
					return
				}
				agg = append(agg, float64(time.Since(start).Microseconds())/1000)
			}
			time.Sleep(time.Millisecond)
		}
		for _, rs := range e.Readers() {
			ingested += rs.Events.Load()
		}
	}})
	if err != nil {
		return Result{}, err
	}
	if len(point) == 0 {
		return Result{}, fmt.Errorf("no query answered")
	}
	ingest := float64(ingested) / r.cost.wall.Seconds()
	p50, p99 := percentile(point, 0.5), percentile(point, 0.99)
	a50, a99 := percentile(agg, 0.5), percentile(agg, 0.99)
	fmt.Fprintf(w, "  %d point lookups: p50 %.2f ms, p99 %.2f ms; %d top-10 queries over every fragment: p50 %.2f ms, p99 %.2f ms; ingest %.2fM events/s\n",
		len(point), p50, p99, len(agg), a50, a99, ingest/1e6)
	return Result{Name: "query-latency", Goal: atMost("p99_ms", 5), And: atMost("top_p99_ms", 20), TopP50Ms: a50, TopP99Ms: a99,
		Events: int(ingested), EventsPerSec: ingest,
		CPUNsPerEvent: float64(r.cost.cpu.Nanoseconds()) / float64(max(ingested, 1)), P50Ms: p50, P99Ms: p99, PeakRSSMB: r.peakRSS,
		Note: fmt.Sprintf("point lookup p50/p99 under full-speed ingest (CPU per event: the queries' included); top-10 over %d fragments p50 %.2f ms, p99 %.2f ms (%d queries)", p.fragments, a50, a99, len(agg))}, nil
}

// snapshotReads reads the keyed count's top 10 from one cut every 10 ms
// while it ingests at full speed: each read holds the readers still until
// every fragment applied what they read (actor/cut.go), so this row shows
// what a snapshot read costs its asker (p50/p99) and the ingest (events/s,
// to compare with query-latency's).
func snapshotReads(in *input, p params, w io.Writer) (Result, error) {
	dur := 5 * time.Second
	if p.quick {
		dur = time.Second
	}
	var lat []float64
	var ingested int64
	var readErr error
	r, err := runEngine(in, p, engineRun{fragments: p.fragments, repeat: 0, checkpoint: time.Second, during: func(e *actor.Engine) {
		end := time.Now().Add(dur)
		for time.Now().Before(end) {
			start := time.Now()
			if _, err := splice.EvaluateRead(context.Background(), e, splice.Request{View: "counts", Op: splice.OpEntries, Query: splice.Query{Top: 10}},
				splice.ReadOptions{Consistency: splice.Snapshot}); err != nil {
				readErr = err
				return
			}
			lat = append(lat, float64(time.Since(start).Microseconds())/1000)
			time.Sleep(10 * time.Millisecond)
		}
		for _, rs := range e.Readers() {
			ingested += rs.Events.Load()
		}
	}})
	if err == nil {
		err = readErr
	}
	if err != nil {
		return Result{}, err
	}
	ingest := float64(ingested) / r.cost.wall.Seconds()
	p50, p99 := percentile(lat, 0.5), percentile(lat, 0.99)
	fmt.Fprintf(w, "  %d snapshot top-10 reads: p50 %.2f ms, p99 %.2f ms; ingest %.2fM events/s\n", len(lat), p50, p99, ingest/1e6)
	return Result{Name: "snapshot-reads", Events: int(ingested), EventsPerSec: ingest,
		CPUNsPerEvent: float64(r.cost.cpu.Nanoseconds()) / float64(max(ingested, 1)), P50Ms: p50, P99Ms: p99, PeakRSSMB: r.peakRSS,
		Note: fmt.Sprintf("top-10 over %d fragments from one cut every 10 ms (%d reads), under full-speed ingest that each read pauses; events/s to compare with query-latency's", p.fragments, len(lat))}, nil
}

type sweepPoint struct {
	fragments int
	perSec    float64
}

// fragmentSweep runs the keyed count at several fragment counts.
func fragmentSweep(in *input, p params, w io.Writer) ([]sweepPoint, error) {
	var out []sweepPoint
	for _, g := range []int{1, 4, 16, 64, 256} {
		r, err := runEngine(in, p, engineRun{fragments: g, repeat: 1, checkpoint: -1})
		if err != nil {
			return nil, err
		}
		pt := sweepPoint{g, float64(len(in.idx)) / r.cost.wall.Seconds()}
		out = append(out, pt)
		fmt.Fprintf(w, "  %3d fragments: %.2fM events/s, %.0f ns CPU/event\n", g, pt.perSec/1e6,
			float64(r.cost.cpu.Nanoseconds())/float64(len(in.idx)))
	}
	return out, nil
}

// windowed counts per key in event-time windows on the engine and in
// plain Go, and checks that both emit the same windows. Tumbling windows
// have two baselines, one goroutine with a map and sharded goroutines (the
// faster and the cheaper count); sliding ones a sliced loop; sessions a
// sort per key. Each baseline's peak RSS is measured as the engine's is.
func windowed(in *input, p params, name string, size, slide, gap time.Duration, limit int, w io.Writer) (Result, error) {
	if limit < len(in.idx) {
		in = &input{keys: in.keys, idx: in.idx[:limit]}
	}
	baseline := func() (int64, int64) {
		switch {
		case gap > 0:
			return sessionMap(in, p, int64(gap))
		case slide < size:
			return windowSliced(in, p, int64(size), int64(slide))
		}
		return windowMap(in, p, int64(size), int64(slide))
	}
	tumbling := gap <= 0 && slide == size
	var base, sharded, eng costs
	var rss, baseRSS []float64
	wantN, wantSum := baseline()
	for round := 1; round <= p.rounds; round++ {
		resetPeakRSS()
		base = append(base, measure(func() { baseline() }))
		baseRSS = append(baseRSS, peakRSSMB())
		if tumbling {
			resetPeakRSS()
			var n, sum int64
			sharded = append(sharded, measure(func() { n, sum = windowSharded(in, p, int64(size), int64(slide)) }))
			baseRSS[len(baseRSS)-1] = min(baseRSS[len(baseRSS)-1], peakRSSMB())
			if n != wantN || sum != wantSum {
				return Result{}, fmt.Errorf("sharded baseline emitted %d windows summing %d, want %d summing %d", n, sum, wantN, wantSum)
			}
		}
		var win flows.Windows // sessions: none
		if gap <= 0 {
			win = flows.Sliding(size, slide)
		}
		r, n, sum, err := windowRun(in, p, win, slide < size, gap)
		if err != nil {
			return Result{}, err
		}
		if n != wantN || sum != wantSum {
			return Result{}, fmt.Errorf("engine emitted %d windows summing %d, want %d summing %d", n, sum, wantN, wantSum)
		}
		eng = append(eng, r.cost)
		rss = append(rss, r.peakRSS)
		if tumbling {
			fmt.Fprintf(w, "  round %d: map %v, sharded %v, engine %v (%d windows)\n", round, base.last(), sharded.last(), eng.last(), n)
		} else {
			fmt.Fprintf(w, "  round %d: plain Go %v, engine %v (%d windows)\n", round, base.last(), eng.last(), n)
		}
	}
	n := len(in.idx)
	res := Result{Name: name, Events: n, Rounds: p.rounds, Versus: "plain Go",
		Baseline: "one goroutine with a map per key and window", PeakRSSMB: medianF(rss), BaselinePeakRSSMB: medianF(baseRSS),
		Note: fmt.Sprintf("count per key, %v windows every %v over %v of event time; %d window results", size, slide, time.Duration(eventSpan), wantN)}
	res.against(eng.rate(n), eng.cpuPerEvent(n), base.rate(n), base.cpuPerEvent(n))
	switch {
	case tumbling:
		m, s := base.rate(n), sharded.rate(n)
		res.Baseline = "faster of one map per key and window and sharded goroutines fed by channels (CPU: the cheaper)"
		res.MapEventsPerSec, res.ShardedEventsPerSec = m, s
		res.MapCPUNsPerEvent, res.ShardedCPUNsPerEvent = base.cpuPerEvent(n), sharded.cpuPerEvent(n)
		res.Note += fmt.Sprintf("; map %.2fM/s %.0f ns/event, sharded %.2fM/s %.0f ns/event", m/1e6, res.MapCPUNsPerEvent, s/1e6, res.ShardedCPUNsPerEvent)
		res.against(eng.rate(n), eng.cpuPerEvent(n), max(m, s), cheapest(n, base, sharded))
		res.Goal = atLeast("ratio", 0.6)
		res.And = atMost("rss_ratio", 2) // RSS at most twice plain Go's
	case slide < size:
		res.Baseline = "one goroutine counting per key and slice (gcd of size and slide), windows summed from slices"
		res.Note += "; the engine's windows are sliced too and fire from running totals (WindowAggregateInvertible)"
	case gap > 0:
		res.Baseline = "one goroutine: every key's times sorted and cut at gaps"
		res.Note = fmt.Sprintf("count per key in sessions with a %v gap over %v of event time; %d sessions", gap, time.Duration(eventSpan), wantN)
	}
	res.RSSRatio = ratio(res.PeakRSSMB, res.BaselinePeakRSSMB)
	res.Note += fmt.Sprintf("; peak RSS %.0f MB, plain Go %.0f MB (%.2f×)", res.PeakRSSMB, res.BaselinePeakRSSMB, res.RSSRatio)
	return res, nil
}
