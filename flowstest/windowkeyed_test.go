package flowstest_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/splice"
)

type journey struct { // a trip between zones, for keyed window views
	From, To string
	At       time.Time
	Minutes  int64
}

type odStats struct {
	Trips   int64
	Minutes int64
}

func journeyOD(t journey) string { return t.From + "->" + t.To }

// odFlow counts trips per origin→destination pair in hourly windows
// ("od"), and trips and minutes in one-hour windows every 20 minutes,
// ranked by minutes ("od-minutes"): two keyed window views.
func odFlow(in flows.Source[journey], fragments int, delay, lateness, retain time.Duration) *flows.Flow {
	f := flows.New("od", flows.WithFragments(fragments))
	src := flows.From(f, "trips", in, flows.WithEventTime(func(t journey) time.Time { return t.At }, delay))
	od := flows.KeyBy(src, journeyOD)
	flows.WindowAggregate(od, flows.Tumbling(time.Hour), func() int64 { return 0 },
		func(n int64, _ journey) int64 { return n + 1 }, flows.AllowedLateness(lateness)).
		KeyedView("od", retain)
	flows.WindowAggregate(od, flows.Sliding(time.Hour, 20*time.Minute), func() odStats { return odStats{} },
		func(s odStats, t journey) odStats { return odStats{s.Trips + 1, s.Minutes + t.Minutes} }, flows.AllowedLateness(lateness)).
		KeyedView("od-minutes", retain, flows.ScoreBy(func(s odStats) float64 { return float64(s.Minutes) }))
	return f
}

// walkJourneys makes n trips between zones, a random step of up to maxStep
// apart, each up to jitter earlier than its place in the walk.
func walkJourneys(rng *rand.Rand, n, zones int, maxStep, jitter time.Duration) []journey {
	clock := time.Date(2026, 11, 2, 5, 0, 0, 0, time.UTC)
	out := make([]journey, 0, n)
	for range n {
		clock = clock.Add(time.Duration(rng.Int64N(int64(maxStep))))
		at := clock
		if jitter > 0 {
			at = at.Add(-time.Duration(rng.Int64N(int64(jitter))))
		}
		out = append(out, journey{From: fmt.Sprintf("z%02d", rng.IntN(zones)), To: fmt.Sprintf("z%02d", rng.IntN(zones)),
			At: at, Minutes: 5 + rng.Int64N(60)})
	}
	return out
}

// refOD is a keyed window view computed by brute force from the events.
type refOD struct {
	size, slide int64
	keep        int64 // max(retain, allowed lateness): how long past its end a window stays
	value       func(odStats) any
	score       func(odStats) float64
	wins        map[int64]map[string]odStats
}

func newRefOD(view string, keep time.Duration) *refOD {
	r := &refOD{keep: int64(keep), wins: map[int64]map[string]odStats{}}
	if view == "od" {
		r.size, r.slide = int64(time.Hour), int64(time.Hour)
		r.value = func(s odStats) any { return s.Trips }
		r.score = func(s odStats) float64 { return float64(s.Trips) }
	} else {
		r.size, r.slide = int64(time.Hour), int64(20*time.Minute)
		r.value = func(s odStats) any { return s }
		r.score = func(s odStats) float64 { return float64(s.Minutes) }
	}
	return r
}

func (r *refOD) add(t journey) {
	ts := t.At.UnixNano()
	for s := ts - ((ts%r.slide)+r.slide)%r.slide; s > ts-r.size; s -= r.slide {
		if r.wins[s] == nil {
			r.wins[s] = map[string]odStats{}
		}
		st := r.wins[s][journeyOD(t)]
		r.wins[s][journeyOD(t)] = odStats{st.Trips + 1, st.Minutes + t.Minutes}
	}
}

// state is what the view must hold: the windows not yet dropped (dropWM,
// the watermark before the input ended, passed their end by keep) and
// the watermark that says which are complete.
type state struct {
	wm, dropWM int64
}

func (r *refOD) present(st state, s int64) bool {
	return st.dropWM == flowcore.NoWatermark || s+r.size+r.keep > st.dropWM
}

// horizon is the largest end of a dropped window.
func (r *refOD) horizon(st state) int64 {
	h := int64(0)
	for s := range r.wins {
		if !r.present(st, s) {
			h = max(h, s+r.size)
		}
	}
	return h
}

type refEntry struct {
	key string
	val odStats
}

func (r *refOD) sorted(s int64, prefix string) []refEntry {
	var out []refEntry
	for k, v := range r.wins[s] {
		if strings.HasPrefix(k, prefix) {
			out = append(out, refEntry{k, v})
		}
	}
	slices.SortFunc(out, func(a, b refEntry) int { return strings.Compare(a.key, b.key) })
	return out
}

// windows are the present starts in q's range, or the latest complete one.
func (r *refOD) windows(st state, q splice.Query) ([]int64, error) {
	var starts []int64
	for s := range r.wins {
		if r.present(st, s) && s >= q.From && (q.To == 0 || s < q.To) {
			starts = append(starts, s)
		}
	}
	slices.Sort(starts)
	if q.Latest {
		for i := len(starts) - 1; i >= 0; i-- {
			if starts[i]+r.size <= st.wm {
				return starts[i : i+1], nil
			}
		}
		return nil, splice.ErrNotFound
	}
	return starts, nil
}

func (r *refOD) window(st state, s int64) splice.KeyedWindow {
	return splice.KeyedWindow{Start: time.Unix(0, s).UTC(), End: time.Unix(0, s+r.size).UTC(), Complete: s+r.size <= st.wm,
		Keys: int64(len(r.wins[s]))}
}

// expect is the answer to an entries query. A page is one range of keys
// in every window: up to the smallest limit-th key after q.After of any
// window that has more than limit.
func (r *refOD) expect(st state, q splice.Query) (splice.Result, error) {
	starts, err := r.windows(st, q)
	if err != nil {
		return splice.Result{}, err
	}
	res := splice.Result{Horizon: r.horizon(st), Latest: q.Latest}
	bound := ""
	if q.Top <= 0 {
		for _, s := range starts {
			var after []refEntry
			for _, e := range r.sorted(s, q.Prefix) {
				if e.key > q.After {
					after = append(after, e)
				}
			}
			if len(after) > q.Limit && (!res.More || after[q.Limit-1].key < bound) {
				res.More, bound = true, after[q.Limit-1].key
			}
		}
	}
	for _, s := range starts {
		kw := r.window(st, s)
		es := r.sorted(s, q.Prefix)
		if q.Top > 0 {
			slices.SortStableFunc(es, func(a, b refEntry) int { return cmp.Compare(r.score(b.val), r.score(a.val)) })
			es = es[:min(len(es), q.Top)]
		} else {
			es = slices.DeleteFunc(es, func(e refEntry) bool { return e.key <= q.After })
			n := len(es)
			if res.More {
				n, _ = slices.BinarySearchFunc(es, bound, func(e refEntry, b string) int { return strings.Compare(e.key, b) })
				if n < len(es) && es[n].key == bound {
					n++
				}
			}
			kw.More = n < len(es)
			es = es[:n]
		}
		for _, e := range es {
			kw.Entries = append(kw.Entries, splice.Entry{Key: e.key, Value: r.value(e.val)})
		}
		res.KeyedWindows = append(res.KeyedWindows, kw)
	}
	res.NextAfter = bound
	return res, nil
}

// expectKey is the answer to a key lookup.
func (r *refOD) expectKey(st state, key string, q splice.Query) (splice.Result, error) {
	starts, err := r.windows(st, q)
	if err != nil {
		return splice.Result{}, err
	}
	res := splice.Result{Horizon: r.horizon(st), Latest: q.Latest}
	for _, s := range starts {
		if v, ok := r.wins[s][key]; ok {
			kw := r.window(st, s)
			kw.Entries = []splice.Entry{{Key: key, Value: r.value(v)}}
			res.KeyedWindows = append(res.KeyedWindows, kw)
		}
	}
	if len(res.KeyedWindows) == 0 {
		return res, splice.ErrNotFound
	}
	return res, nil
}

// show prints what a keyed window answer says (not its freshness, nor
// scores and sort keys, which are the fragments' working values).
func show(res splice.Result, err error) string {
	if err != nil {
		switch {
		case errors.Is(err, splice.ErrNotFound):
			return "not found"
		case errors.Is(err, splice.ErrBadRequest):
			return "bad request"
		}
		return "error: " + err.Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "latest=%v more=%v next=%q horizon=%d\n", res.Latest, res.More, res.NextAfter, res.Horizon)
	for _, kw := range res.KeyedWindows {
		fmt.Fprintf(&b, "  %s–%s complete=%v keys=%d more=%v:", kw.Start.Format(time.TimeOnly), kw.End.Format(time.TimeOnly),
			kw.Complete, kw.Keys, kw.More)
		for _, e := range kw.Entries {
			fmt.Fprintf(&b, " %s=%v", e.Key, e.Value)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func query(d *flowstest.Driver, view string, q splice.Query) (splice.Result, error) {
	return splice.Evaluate(context.Background(), d, splice.Request{View: view, Op: splice.OpEntries, Query: q})
}

func queryKey(d *flowstest.Driver, view, key string, q splice.Query) (splice.Result, error) {
	return splice.Evaluate(context.Background(), d, splice.Request{View: view, Op: splice.OpKey, Key: key, Query: q})
}

// driverState reads the watermark every fragment passed (they are equal
// after a drain: every reader sent every fragment its watermark).
func driverState(t testing.TB, d *flowstest.Driver, st *state) {
	t.Helper()
	wm := int64(math.MaxInt64)
	for _, f := range d.Freshness() {
		if f.Watermark == nil {
			wm = flowcore.NoWatermark
			break
		}
		wm = min(wm, f.Watermark.UnixNano())
	}
	st.wm = wm
	if wm != math.MaxInt64 {
		st.dropWM = wm
	}
}

// Every query form of a keyed window view equals a brute-force computation
// from the events, while windows are open, fire, are refined late, close
// and are dropped after their retention, and once the input ended.
func TestKeyedWindowViewExact(t *testing.T) {
	const (
		delay    = 5 * time.Minute
		lateness = 10 * time.Minute
		retain   = 2 * time.Hour
		zones    = 8
	)
	rng := rand.New(rand.NewPCG(7, 11))
	jitter := delay + lateness/2 // some events are late, none too late
	parts := [][]journey{walkJourneys(rng, 500, zones, 2*time.Minute, jitter), walkJourneys(rng, 400, zones, 3*time.Minute, jitter)}
	in := flowstest.NewInput[journey](len(parts))
	d, err := flowstest.New(odFlow(in, 4, delay, lateness, retain), time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.BatchSize = 16
	refs := map[string]*refOD{"od": newRefOD("od", retain), "od-minutes": newRefOD("od-minutes", retain)}
	st := state{wm: flowcore.NoWatermark, dropWM: flowcore.NoWatermark}
	next := make([]int, len(parts))
	checks := 0
	check := func() {
		t.Helper()
		driverState(t, d, &st)
		for view, r := range refs {
			var starts []int64
			for s := range r.wins {
				if r.present(st, s) {
					starts = append(starts, s)
				}
			}
			slices.Sort(starts)
			all := splice.Query{From: math.MinInt64, Limit: splice.MaxLimit}
			qs := []splice.Query{
				all,
				{From: math.MinInt64, Limit: 1000, Latest: true},
				{From: math.MinInt64, Latest: true, Top: 3},
				{From: math.MinInt64, Top: 5},
				{From: math.MinInt64, Limit: 1000, Prefix: "z03->"},
				{From: math.MinInt64, Limit: 4, Prefix: "z0", After: "z02->z05"},
				{From: math.MinInt64, Limit: 1000, Latest: true, Prefix: "z01->"},
			}
			if len(starts) > 2 {
				// A range from the second window on, three hours long.
				from := starts[1]
				qs = append(qs, splice.Query{From: from, To: from + int64(3*time.Hour), Limit: 1000},
					splice.Query{From: from, To: from + int64(3*time.Hour), Top: 2},
					splice.Query{From: from, To: from + 1, Limit: 1000}) // one window
			}
			for _, q := range qs {
				want, werr := r.expect(st, q)
				got, gerr := query(d, view, q)
				if show(got, gerr) != show(want, werr) {
					t.Fatalf("%s %+v (watermark %v):\ngot  %s\nwant %s", view, q, time.Unix(0, st.wm).UTC(), show(got, gerr), show(want, werr))
				}
				checks++
			}
			// Pages of 5 over every window: every page is what the
			// reference says, and the pages cover every key of every
			// window once.
			seen := map[int64][]string{}
			q := splice.Query{From: math.MinInt64, Limit: 5}
			for page := 0; ; page++ {
				if page > 100 {
					t.Fatalf("%s: paging does not end", view)
				}
				want, werr := r.expect(st, q)
				got, gerr := query(d, view, q)
				if show(got, gerr) != show(want, werr) {
					t.Fatalf("%s page %d %+v:\ngot  %s\nwant %s", view, page, q, show(got, gerr), show(want, werr))
				}
				for _, kw := range got.KeyedWindows {
					for _, e := range kw.Entries {
						seen[kw.Start.UnixNano()] = append(seen[kw.Start.UnixNano()], e.Key)
					}
				}
				if !got.More {
					break
				}
				q.After, q.HasAfter = got.NextAfter, true
			}
			for _, s := range starts {
				var keys []string
				for _, e := range r.sorted(s, "") {
					keys = append(keys, e.key)
				}
				if !slices.Equal(seen[s], keys) {
					t.Fatalf("%s: pages of window %v: %v, want %v", view, time.Unix(0, s).UTC(), seen[s], keys)
				}
			}
			// Keys: ones in some windows, and one in none.
			for _, key := range []string{"z01->z02", "z03->z03", "z05->z00", "z99->z99"} {
				for _, q := range []splice.Query{{From: math.MinInt64}, {From: math.MinInt64, Latest: true}} {
					want, werr := r.expectKey(st, key, q)
					got, gerr := queryKey(d, view, key, q)
					if show(got, gerr) != show(want, werr) {
						t.Fatalf("%s key %s %+v:\ngot  %s\nwant %s", view, key, q, show(got, gerr), show(want, werr))
					}
					checks++
				}
			}
		}
	}
	check() // nothing yet: no windows, and no latest one
	for done := false; !done; {
		done = true
		for p := range parts {
			n := min(len(parts[p])-next[p], rng.IntN(60))
			in.Push(p, parts[p][next[p]:next[p]+n]...)
			for _, e := range parts[p][next[p] : next[p]+n] {
				for _, r := range refs {
					r.add(e)
				}
			}
			next[p] += n
			done = done && next[p] == len(parts[p])
		}
		if err := d.Drain(); err != nil {
			t.Fatal(err)
		}
		check()
	}
	if h := refs["od"].horizon(st); h == 0 {
		t.Fatalf("no window was dropped before the input ended (watermark %v): retention is not exercised", time.Unix(0, st.wm).UTC())
	}
	// The partitions end one after the other (the driver reads them in
	// order): until the last one ends, the watermark is the last one's,
	// and windows it passes by their retention go.
	last := int64(math.MinInt64)
	for _, e := range parts[len(parts)-1] {
		last = max(last, e.At.UnixNano())
	}
	st.dropWM = max(st.dropWM, last-int64(delay))
	in.Close()
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	check()
	if st.wm != math.MaxInt64 {
		t.Fatalf("watermark %v after the input ended", st.wm)
	}
	// The answers must not have been trivially empty.
	res, err := query(d, "od", splice.Query{From: math.MinInt64, Limit: 1000, Latest: true})
	if err != nil || len(res.KeyedWindows) != 1 || !res.KeyedWindows[0].Complete || len(res.KeyedWindows[0].Entries) == 0 {
		t.Fatalf("latest window at the end: %s", show(res, err))
	}
	t.Logf("%d queries checked", checks)
}

// dumpKeyedWindows prints what the keyed window views of odFlow answer to
// a few queries: every window whole, the latest's top, pages, and keys.
func dumpKeyedWindows(t *rapid.T, d *flowstest.Driver) string {
	var b strings.Builder
	for _, view := range []string{"od", "od-minutes"} {
		for _, q := range []splice.Query{
			{From: math.MinInt64, Limit: splice.MaxLimit},
			{From: math.MinInt64, Latest: true, Top: 3},
			{From: math.MinInt64, Limit: 1000, Prefix: "z01->"},
		} {
			res, err := query(d, view, q)
			fmt.Fprintf(&b, "%s %+v: %s", view, q, show(res, err))
		}
		q := splice.Query{From: math.MinInt64, Limit: 3}
		for page := 0; ; page++ {
			if page > 100 {
				t.Fatalf("%s: paging does not end", view)
			}
			res, err := query(d, view, q)
			fmt.Fprintf(&b, "%s page %d: %s", view, page, show(res, err))
			if err != nil || !res.More {
				break
			}
			q.After, q.HasAfter = res.NextAfter, true
		}
		for _, key := range []string{"z00->z01", "z02->z02"} {
			res, err := queryKey(d, view, key, splice.Query{From: math.MinInt64})
			fmt.Fprintf(&b, "%s key %s: %s", view, key, show(res, err))
		}
	}
	return b.String()
}

// A keyed window view answers, after every drain, what an uninterrupted
// run answers, whatever the batch sizes, checkpoints, fragment crashes and
// restarts: its closed windows are checkpointed and restored, and windows
// dropped after their retention stay dropped.
func TestKeyedWindowViewSurvivesCrashes(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		const delay = 2 * time.Minute
		seed := rapid.Uint64().Draw(t, "seed")
		nparts := rapid.IntRange(1, 3).Draw(t, "partitions")
		fragments := rapid.IntRange(1, 6).Draw(t, "fragments")
		retain := time.Duration(rapid.IntRange(0, 3).Draw(t, "retain (hours)")) * time.Hour
		lateness := time.Duration(rapid.IntRange(0, 2).Draw(t, "lateness (10 minutes)")) * 10 * time.Minute
		rng := rand.New(rand.NewPCG(seed, 3))
		// Event times rise in each partition: a replay then brings every
		// partition's watermark back to where it was (out-of-order events
		// may not: the watermark restarts from the replayed events), and
		// both runs close and drop the same windows at the same points.
		parts := make([][]journey, nparts)
		for p := range parts {
			parts[p] = walkJourneys(rng, rapid.IntRange(0, 300).Draw(t, fmt.Sprint("journeys", p)), 6, 3*time.Minute, 0)
		}
		ins := []*flowstest.Input[journey]{flowstest.NewInput[journey](nparts), flowstest.NewInput[journey](nparts)}
		var ds []*flowstest.Driver
		for _, in := range ins {
			d, err := flowstest.New(odFlow(in, fragments, delay, lateness, retain), time.Unix(0, 0))
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			ds = append(ds, d)
		}
		plain, faulty := ds[0], ds[1]
		plain.BatchSize = 64
		next := make([]int, nparts)
		compare := func(when string) string {
			for _, d := range ds {
				if err := d.Drain(); err != nil {
					t.Fatal(err)
				}
			}
			want, got := dumpKeyedWindows(t, plain), dumpKeyedWindows(t, faulty)
			if got != want {
				t.Fatalf("%s:\ngot  %s\nwant %s", when, got, want)
			}
			return got
		}
		for step := 0; ; step++ {
			done := true
			for p := range parts {
				n := min(len(parts[p])-next[p], rng.IntN(50))
				for _, in := range ins {
					in.Push(p, parts[p][next[p]:next[p]+n]...)
				}
				next[p] += n
				done = done && next[p] == len(parts[p])
			}
			faulty.BatchSize = rapid.IntRange(1, 64).Draw(t, "batch")
			if err := faulty.Drain(); err != nil {
				t.Fatal(err)
			}
			var err error
			switch rapid.IntRange(0, 5).Draw(t, "fault") {
			case 1, 2:
				err = faulty.Checkpoint()
			case 3, 4:
				err = faulty.Crash(rapid.IntRange(0, fragments-1).Draw(t, "fragment"))
			case 5:
				err = faulty.Restart()
			}
			if err != nil {
				t.Fatal(err)
			}
			compare(fmt.Sprintf("step %d", step))
			if done {
				break
			}
		}
		for _, in := range ins {
			in.Close()
		}
		if got := compare("at the end"); len(parts[0]) > 0 && !strings.Contains(got, "complete=true") {
			t.Fatalf("no complete window at the end:\n%s", got)
		}
	})
}
