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

func rate(n int, ds []time.Duration) float64 { return float64(n) / median(ds).Seconds() }

func stateless(in *input, p params, w io.Writer) (Result, error) {
	want := statelessLoop(in)
	var tLoop, tPar, tEng []time.Duration
	var lat []float64
	var rss []float64
	for round := 1; round <= p.rounds; round++ {
		runtime.GC()
		start := time.Now()
		statelessLoop(in)
		tLoop = append(tLoop, time.Since(start))
		runtime.GC()
		start = time.Now()
		if got := statelessParallel(in, p); got != want {
			return Result{}, fmt.Errorf("parallel baseline kept %d, want %d", got, want)
		}
		tPar = append(tPar, time.Since(start))
		r, err := runEngine(in, p, engineRun{stateless: true, repeat: 1, checkpoint: -1})
		if err != nil {
			return Result{}, err
		}
		if r.kept != want {
			return Result{}, fmt.Errorf("engine kept %d, want %d", r.kept, want)
		}
		tEng = append(tEng, r.d)
		rss = append(rss, r.peakRSS)
		lat = append(lat, r.lat...)
		fmt.Fprintf(w, "  round %d: loop %v, parallel %v, engine %v\n", round, round3(tLoop), round3(tPar), round3(tEng))
	}
	base := max(rate(len(in.idx), tLoop), rate(len(in.idx), tPar))
	eng := rate(len(in.idx), tEng)
	r := Result{Name: "stateless", Events: len(in.idx), Rounds: p.rounds, EventsPerSec: eng,
		BaselineEventsPerSec: base, Baseline: "faster of one loop and one goroutine per partition", Ratio: eng / base,
		PeakRSSMB: medianF(rss), Note: "map+filter, no key: readers only"}
	r.P50Ms, r.P99Ms = percentile(lat, 0.5), percentile(lat, 0.99)
	return r, nil
}

func round3(ds []time.Duration) time.Duration { return ds[len(ds)-1].Round(time.Millisecond) }

func keyedCount(in *input, p params, w io.Writer) (Result, error) {
	want := countMap(in)
	var tMap, tSharded, tEng []time.Duration
	var lat, rss []float64
	for round := 1; round <= p.rounds; round++ {
		runtime.GC()
		start := time.Now()
		countMap(in)
		tMap = append(tMap, time.Since(start))
		runtime.GC()
		start = time.Now()
		if err := same(want, countSharded(in, p)); err != nil {
			return Result{}, fmt.Errorf("sharded baseline: %w", err)
		}
		tSharded = append(tSharded, time.Since(start))
		r, err := runEngine(in, p, engineRun{fragments: p.fragments, repeat: 1, checkpoint: -1, counts: true})
		if err != nil {
			return Result{}, err
		}
		if err := same(want, r.counts); err != nil {
			return Result{}, fmt.Errorf("engine: %w", err)
		}
		tEng = append(tEng, r.d)
		lat = append(lat, r.lat...)
		rss = append(rss, r.peakRSS)
		fmt.Fprintf(w, "  round %d: map %v, sharded %v, engine %v\n", round, round3(tMap), round3(tSharded), round3(tEng))
	}
	lastLatencies = append([]float64(nil), lat...)
	m, s, e := rate(len(in.idx), tMap), rate(len(in.idx), tSharded), rate(len(in.idx), tEng)
	r := Result{Name: "keyed-count", Events: len(in.idx), Rounds: p.rounds, EventsPerSec: e,
		BaselineEventsPerSec: max(m, s), Baseline: "faster of one map and sharded goroutines fed by channels", Ratio: e / max(m, s),
		MapEventsPerSec: m, ShardedEventsPerSec: s, PeakRSSMB: medianF(rss),
		Note: fmt.Sprintf("%d keys, %d fragments; map %.2fM/s, sharded %.2fM/s", len(in.keys), p.fragments, m/1e6, s/1e6)}
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
	var tNone, tCkpt []time.Duration
	var lat, rss []float64
	for round := 1; round <= p.rounds; round++ {
		r, err := runEngine(in, p, engineRun{fragments: p.fragments, repeat: repeat, checkpoint: -1})
		if err != nil {
			return Result{}, err
		}
		tNone = append(tNone, r.d)
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
		tCkpt = append(tCkpt, r2.d)
		lat = append(lat, r2.lat...)
		rss = append(rss, r2.peakRSS)
		fmt.Fprintf(w, "  round %d: no checkpoints %v, checkpoints every %v %v (%d MB written)\n", round,
			r.d.Round(time.Millisecond), interval, r2.d.Round(time.Millisecond), written>>20)
	}
	n := len(in.idx) * repeat
	none, with := rate(n, tNone), rate(n, tCkpt)
	res := Result{Name: "checkpoint-overhead", Events: n, Rounds: p.rounds, Goal: atLeast("ratio", 0.9),
		EventsPerSec: with, BaselineEventsPerSec: none, Baseline: "the engine without checkpoints", Ratio: with / none,
		CheckpointIntervalMs: float64(interval.Milliseconds()), PeakRSSMB: medianF(rss),
		Note: fmt.Sprintf("keyed count, checkpoints to disk every %v", interval)}
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
	var restores, catchups []time.Duration
	var entries int64
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
		catchups = append(catchups, r.d)
		rss = append(rss, r.peakRSS)
		fmt.Fprintf(w, "  round %d: restore %v, restart + catch-up of %d events %v\n", round,
			restores[len(restores)-1].Round(time.Microsecond), r.events, r.d.Round(time.Millisecond))
	}
	rest, catch := median(restores), median(catchups)
	return Result{Name: "recovery", Events: len(in.idx) / 10, Rounds: p.rounds, Goal: atMost("restore_ms", 1000),
		EventsPerSec: float64(len(in.idx)/10) / catch.Seconds(), RestoreMs: float64(rest.Microseconds()) / 1000,
		CatchUpMs: float64(catch.Microseconds()) / 1000, Keys: int(entries), PeakRSSMB: medianF(rss),
		Note: fmt.Sprintf("restore of a %d-key fragment %.1f ms; restart + catch-up %.0f ms", entries,
			float64(rest.Microseconds())/1000, float64(catch.Microseconds())/1000)}, nil
}

// queryLatency queries the keyed count's views while it ingests at full
// speed: point lookups and the aggregate, through the same evaluation as
// the HTTP API.
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
			if i%10 == 0 {
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
	ingest := float64(ingested) / r.d.Seconds()
	p50, p99 := percentile(point, 0.5), percentile(point, 0.99)
	a50, a99 := percentile(agg, 0.5), percentile(agg, 0.99)
	fmt.Fprintf(w, "  %d point lookups: p50 %.2f ms, p99 %.2f ms; %d top-10 queries over every fragment: p50 %.2f ms, p99 %.2f ms; ingest %.2fM events/s\n",
		len(point), p50, p99, len(agg), a50, a99, ingest/1e6)
	return Result{Name: "query-latency", Goal: atMost("p99_ms", 5), Events: int(ingested), EventsPerSec: ingest, P50Ms: p50, P99Ms: p99,
		PeakRSSMB: r.peakRSS,
		Note:      fmt.Sprintf("point lookup p50/p99 under full-speed ingest; top-10 over %d fragments p50 %.2f ms, p99 %.2f ms", p.fragments, a50, a99)}, nil
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
		pt := sweepPoint{g, float64(len(in.idx)) / r.d.Seconds()}
		out = append(out, pt)
		fmt.Fprintf(w, "  %3d fragments: %.2fM events/s\n", g, pt.perSec/1e6)
	}
	return out, nil
}

// windowed counts per key in event-time windows on the engine and in one
// goroutine with a map, and checks that both emit the same windows.
func windowed(in *input, p params, name string, size, slide, gap time.Duration, limit int, w io.Writer) (Result, error) {
	if limit < len(in.idx) {
		in = &input{keys: in.keys, idx: in.idx[:limit]}
	}
	baseline := func() (int64, int64) {
		if gap > 0 {
			return sessionMap(in, p, int64(gap))
		}
		return windowMap(in, p, int64(size), int64(slide))
	}
	var tMap, tEng []time.Duration
	var rss []float64
	wantN, wantSum := baseline()
	for round := 1; round <= p.rounds; round++ {
		runtime.GC()
		start := time.Now()
		baseline()
		tMap = append(tMap, time.Since(start))
		r, n, sum, err := windowRun(in, p, flows.Windows{}, gap)
		if gap <= 0 {
			r, n, sum, err = windowRun(in, p, flows.Sliding(size, slide), 0)
		}
		if err != nil {
			return Result{}, err
		}
		if n != wantN || sum != wantSum {
			return Result{}, fmt.Errorf("engine emitted %d windows summing %d, want %d summing %d", n, sum, wantN, wantSum)
		}
		tEng = append(tEng, r.d)
		rss = append(rss, r.peakRSS)
		fmt.Fprintf(w, "  round %d: map %v, engine %v (%d windows)\n", round, round3(tMap), round3(tEng), n)
	}
	m, e := rate(len(in.idx), tMap), rate(len(in.idx), tEng)
	res := Result{Name: name, Events: len(in.idx), Rounds: p.rounds, EventsPerSec: e,
		BaselineEventsPerSec: m, Baseline: "one goroutine with a map per key and window", Ratio: e / m, PeakRSSMB: medianF(rss),
		Note: fmt.Sprintf("count per key, %v windows every %v over %v of event time; %d window results", size, slide, time.Duration(eventSpan), wantN)}
	if gap > 0 {
		res.Baseline = "one goroutine: every key's times sorted and cut at gaps"
		res.Note = fmt.Sprintf("count per key in sessions with a %v gap over %v of event time; %d sessions", gap, time.Duration(eventSpan), wantN)
	}
	return res, nil
}
