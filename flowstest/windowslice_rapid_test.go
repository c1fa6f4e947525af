package flowstest_test

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/splice"
)

// tick is an event of the slicing property: a key, a time and a weight.
type tick struct {
	Key string
	At  time.Time
	W   int64
}

// tickStats is a commutative accumulator: the per-window operator adds
// events in arrival order, slices combine in time order.
type tickStats struct {
	N   int64
	Sum int64
}

func addTick(s tickStats, e tick) tickStats { return tickStats{s.N + 1, s.Sum + e.W} }

func mergeTicks(a, b tickStats) tickStats { return tickStats{a.N + b.N, a.Sum + b.Sum} }

func subtractTicks(a, b tickStats) tickStats { return tickStats{a.N - b.N, a.Sum - b.Sum} }

// How a run of the slicing property keeps its windows.
type windowLayout int

const (
	perWindow    windowLayout = iota // WindowAggregate: a state per window
	sliced                           // WindowAggregateMerge: slices, a window combined from them
	runningTotal                     // WindowAggregateInvertible: slices and a running total per key
	// runningTotal with another subscriber of the keyed stream (a Count,
	// declared after the windows): the windows take the records one by
	// one, not a batch's at once.
	runningTotalByRecord
)

// sliceRun is what a run of the slicing property leaves: every output
// with its id, sorted (a replay after a crash repeats outputs, and may
// fire a window with other values where its batches cut the input
// elsewhere, window by window as in slices), and the views' answers at
// every probe.
type sliceRun struct {
	results []string
	answers []string
}

type sliceCase struct {
	ticks                                []tick
	size, slide, delay, lateness, retain time.Duration
	fragments, batch                     int
	checkpoints, crashes                 map[int]bool // after the event at this position
}

func runSliceCase(t *rapid.T, c sliceCase, layout windowLayout) sliceRun {
	in := flowstest.NewInput[tick](1)
	f := flows.New("slices", flows.WithFragments(c.fragments))
	ks := flows.KeyBy(flows.From(f, "ticks", in, flows.WithEventTime(func(e tick) time.Time { return e.At }, c.delay)),
		func(e tick) string { return e.Key })
	opts := []flows.WindowOption{flows.AllowedLateness(c.lateness)}
	var w flows.Windowed[string, tick, tickStats]
	zero := func() tickStats { return tickStats{} }
	switch layout {
	case perWindow:
		w = flows.WindowAggregate(ks, flows.Sliding(c.size, c.slide), zero, addTick, opts...)
	case sliced:
		w = flows.WindowAggregateMerge(ks, flows.Sliding(c.size, c.slide), zero, addTick, mergeTicks, opts...)
	case runningTotal, runningTotalByRecord:
		w = flows.WindowAggregateInvertible(ks, flows.Sliding(c.size, c.slide), zero, addTick, mergeTicks, subtractTicks, opts...)
	}
	w = w.KeyedView("keys", c.retain)
	flows.WindowView(w, "sum", splice.Sum[int64](), func(_ string, s tickStats) int64 { return s.Sum }, c.retain)
	if layout == runningTotalByRecord {
		flows.Count(ks)
	}
	results := flowstest.Collect(w.Results())
	tooLate := flowstest.Collect(w.TooLate())
	d, err := flowstest.New(f, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.BatchSize = c.batch
	var run sliceRun
	probe := func() {
		all := splice.Query{From: math.MinInt64, Limit: 1 << 20}
		var b strings.Builder
		kw, err := splice.Evaluate(context.Background(), d, splice.Request{View: "keys", Op: splice.OpWindowEntries, Query: all})
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range kw.KeyedWindows {
			fmt.Fprintf(&b, "%v+%d keys %d complete %v:", w.Start.UnixNano(), w.End.Sub(w.Start), w.Keys, w.Complete)
			for _, e := range w.Entries {
				fmt.Fprintf(&b, " %s=%v", e.Key, e.Value)
			}
			b.WriteString("; ")
		}
		for _, k := range []string{"a", "b", "c"} {
			kr, err := splice.Evaluate(context.Background(), d, splice.Request{View: "keys", Op: splice.OpWindowKey, Key: k, Query: all})
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range kr.KeyedWindows {
				fmt.Fprintf(&b, "%s@%v=%v ", k, w.Start.UnixNano(), w.Entries)
			}
		}
		sw, err := splice.Evaluate(context.Background(), d, splice.Request{View: "sum", Op: splice.OpWindows, Query: all})
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range sw.Windows {
			fmt.Fprintf(&b, "sum %v=%v %v; ", w.Start.UnixNano(), w.Value, w.Complete)
		}
		fmt.Fprintf(&b, "horizon %d", kw.Horizon)
		run.answers = append(run.answers, b.String())
	}
	for i, e := range c.ticks {
		in.Push(0, e)
		if c.checkpoints[i] || c.crashes[i] {
			if err := d.Drain(); err != nil {
				t.Fatal(err)
			}
			probe()
		}
		if c.checkpoints[i] {
			if err := d.Checkpoint(); err != nil {
				t.Fatal(err)
			}
		}
		if c.crashes[i] {
			if err := d.Crash(i % c.fragments); err != nil {
				t.Fatal(err)
			}
		}
	}
	in.Close()
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	probe()
	for _, o := range results.Outputs() {
		r := o.Value
		run.results = append(run.results, fmt.Sprintf("%s: %s %v..%v %+v %s", o.ID, r.Key, r.Start.UnixNano(), r.End.UnixNano(), r.Value, r.Firing))
	}
	for _, o := range tooLate.Outputs() {
		run.results = append(run.results, fmt.Sprintf("%s: too late %+v", o.ID, o.Value))
	}
	slices.Sort(run.results)
	return run
}

// Sliced sliding windows (WindowAggregateMerge) emit exactly what windows
// kept one by one (WindowAggregate) emit — every result with its id, value
// and firing, every too-late event — and their views answer the same, for
// random events (out of order, late, too late, before 1970 too), window
// sizes and slides, lateness, retention, fragments, batches, checkpoints
// and crashes.
func TestSlicedWindowsEqualWindowByWindow(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := drawSliceCase(t)
		sameRuns(t, runSliceCase(t, c, perWindow), runSliceCase(t, c, sliced), "sliced", "window by window")
	})
}

// Sliding windows fired from running totals (WindowAggregateInvertible)
// emit exactly what windows combined from their slices at every firing
// (WindowAggregateMerge) emit, and their views answer the same, with
// events out of order, late and too late, checkpoints and crashes (a
// restored fragment has no running totals: it combines a key's slices at
// its first firing).
func TestRunningTotalsEqualRecombinedSlices(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := drawSliceCase(t)
		sameRuns(t, runSliceCase(t, c, sliced), runSliceCase(t, c, runningTotal), "running totals", "recombined")
	})
}

// Windows that take a batch's records at once (their keyed stream's one
// subscriber: rows looked up ahead) emit and answer exactly what they do
// taking them one by one (another subscriber beside them), for tumbling
// and sliding windows, events out of order, late and too late, batches of
// every size, checkpoints and crashes.
func TestBatchedEventsEqualOneByOne(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := drawSliceCase(t)
		sameRuns(t, runSliceCase(t, c, runningTotalByRecord), runSliceCase(t, c, runningTotal), "batched", "one by one")
	})
}

// drawSliceCase draws events (out of order, late, too late, before 1970
// too), window sizes and slides, lateness, retention, fragments, batches,
// checkpoints and crashes.
func drawSliceCase(t *rapid.T) sliceCase {
	sec := func(lo, hi int, name string) time.Duration {
		return time.Duration(rapid.IntRange(lo, hi).Draw(t, name)) * time.Second
	}
	c := sliceCase{slide: sec(1, 6, "slide"), delay: sec(0, 5, "delay"), lateness: sec(0, 10, "lateness"),
		retain: sec(0, 20, "retain"), fragments: rapid.IntRange(1, 3).Draw(t, "fragments"),
		batch: rapid.IntRange(1, 20).Draw(t, "batch"), checkpoints: map[int]bool{}, crashes: map[int]bool{}}
	c.size = c.slide * time.Duration(rapid.IntRange(1, 6).Draw(t, "slides"))
	if rapid.Bool().Draw(t, "ragged") {
		c.size += sec(0, int(c.slide/time.Second)-1, "extra") // size not a multiple of slide
	}
	clock := time.Unix(0, 0).Add(sec(-60, 60, "origin"))
	n := rapid.IntRange(1, 150).Draw(t, "events")
	for i := range n {
		clock = clock.Add(time.Duration(rapid.Int64Range(0, int64(3*time.Second)).Draw(t, "step")))
		at := clock.Add(-time.Duration(rapid.Int64Range(0, int64(c.delay)).Draw(t, "jitter")))
		if rapid.IntRange(0, 9).Draw(t, "late") == 0 {
			at = clock.Add(-c.delay - sec(0, 30, "lag"))
		}
		c.ticks = append(c.ticks, tick{Key: rapid.SampledFrom([]string{"a", "b", "c"}).Draw(t, "key"), At: at, W: int64(i)})
	}
	for range rapid.IntRange(0, 4).Draw(t, "faults") {
		at := rapid.IntRange(0, n-1).Draw(t, "at")
		c.checkpoints[at] = true
		if crash := at + rapid.IntRange(0, 20).Draw(t, "crash after"); crash < n {
			c.crashes[crash] = true
		}
	}
	return c
}

// sameRuns fails unless got emitted and answered what want did.
func sameRuns(t *rapid.T, want, got sliceRun, gotName, wantName string) {
	if len(want.results) == 0 {
		t.Fatalf("no results")
	}
	if !slices.Equal(got.results, want.results) {
		for i := range min(len(got.results), len(want.results)) {
			if got.results[i] != want.results[i] {
				t.Fatalf("%s output %q, %s %q (of %d and %d outputs)", gotName, got.results[i], wantName, want.results[i], len(got.results), len(want.results))
			}
		}
		t.Fatalf("%s emitted %d outputs, %s %d", gotName, len(got.results), wantName, len(want.results))
	}
	if len(got.answers) != len(want.answers) {
		t.Fatalf("%s probed %d times, %s %d", gotName, len(got.answers), wantName, len(want.answers))
	}
	for i := range want.answers {
		if got.answers[i] != want.answers[i] {
			t.Fatalf("probe %d: %s views answer\n%s\n%s\n%s", i, gotName, got.answers[i], wantName, want.answers[i])
		}
	}
}
