package actor

// A fifth round of flows written as an outside user would write them:
// aggregate views (package splice's algebras: sums, counts, max,
// histograms, distinct counts, top-k) at several points of one flow — on
// the keyed events after a Map and a Filter, on a table's Updates, on
// window results, and after an exchange that restamps the results — beside
// keyed and windowed views, over a skewed event-time input of three
// partitions, one of which ends midway. The engine runs on a pebble store
// on disk and crashes (no final checkpoint) right after a checkpoint, with
// a round applied since its last checkpoint, and at the very end of the
// input, and is stopped and started again; after every round and restart
// every view must be a plain Go model's, built from the flows and splice
// docs.

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/splice"
)

type o5Sale struct {
	User, Shop string
	At         time.Time
	Amt, Fee   int64
}

type o5Buy struct {
	User, Shop string
	At         time.Time
	Net        int64
}

type o5Acc struct{ N, Sum int64 }

func o5Region(shop string) string {
	if shop < "s3" {
		return "north"
	}
	return "south"
}

// o5Bounds are the histogram's upper bounds (inclusive).
var o5Bounds = []float64{5, 20, 50}

// o5Value is an aggregate view's value, printed.
func o5Value(e *Engine, view string) string {
	res, err := splice.Evaluate(context.Background(), e, splice.Request{View: view})
	if err != nil {
		return "error: " + err.Error()
	}
	return fmt.Sprint(res.Value)
}

// o5Model is what the docs promise of every view, from the buys kept (in
// the order of their partition; a user's buys are all in one partition)
// and the window results fired at a watermark.
type o5Model struct {
	aggs    map[string]string                            // aggregate view -> value, printed
	users   map[string]any                               // keyed view "users"
	regions map[string]any                               // keyed view "regions", printed values
	w2      map[int64]any                                // windowed view "w2sum", by start
	results map[string]flows.WindowResult[string, o5Acc] // fired results by shop/start
}

// o5Expect models the views for buys (each partition's, in push order)
// with the first-stage windows fired by watermark w.
func o5Expect(buys []o5Buy, w time.Time) o5Model {
	m := o5Model{aggs: map[string]string{}, users: map[string]any{}, regions: map[string]any{}, w2: map[int64]any{},
		results: map[string]flows.WindowResult[string, o5Acc]{}}
	// Before the table: every kept buy.
	var sum int64
	mx := splice.Opt[int64]{}
	hist := splice.Histogram{Bounds: o5Bounds, Counts: make([]int64, len(o5Bounds)+1)}
	dc := splice.DistinctCount()
	dp := dc.Zero()
	for _, b := range buys {
		sum += b.Net
		if !mx.Valid || b.Net > mx.Value {
			mx = splice.Opt[int64]{Value: b.Net, Valid: true}
		}
		i := sort.SearchFloat64s(o5Bounds, float64(b.Net)) // first bound >= v: inclusive upper bounds
		hist.Counts[i]++
		hist.Sum += float64(b.Net)
		hist.Count++
		dp = dc.Add(dp, []byte(b.User))
	}
	m.aggs["net"] = fmt.Sprint(sum)
	m.aggs["netmax"] = fmt.Sprint(mx)
	m.aggs["nethist"] = fmt.Sprint(hist)
	// "splicing fragments gives exactly the sketch of processing every
	// item in one place"
	m.aggs["buyers"] = fmt.Sprint(dc.Result(dp))
	// The table's updates: "the key and its new value, after every event".
	totals := map[string]int64{}
	var updN, updSum int64
	updMax := splice.Opt[int64]{}
	for _, b := range buys {
		totals[b.User] += b.Net
		updN++
		updSum += totals[b.User]
		if !updMax.Valid || totals[b.User] > updMax.Value {
			updMax = splice.Opt[int64]{Value: totals[b.User], Valid: true}
		}
	}
	var top []splice.Scored // "a key seen more than once keeps its highest score": totals only grow
	for u, v := range totals {
		m.users[u] = v
		top = append(top, splice.Scored{Key: u, Score: float64(v)})
	}
	sort.Slice(top, func(i, j int) bool {
		if top[i].Score != top[j].Score {
			return top[i].Score > top[j].Score
		}
		return top[i].Key < top[j].Key
	})
	m.aggs["updates"] = fmt.Sprint(updN)
	m.aggs["updsum"] = fmt.Sprint(updSum)
	m.aggs["updmax"] = fmt.Sprint(updMax)
	m.aggs["updtop"] = fmt.Sprint(top[:min(3, len(top))])
	// The one-minute windows per shop that w passed the end of: one OnTime
	// result each (no lateness, no trigger, no event late).
	for _, b := range buys {
		st := b.At.Truncate(time.Minute)
		if !w.After(st.Add(time.Minute)) {
			continue
		}
		k := b.Shop + "/" + st.Format("15:04")
		r := m.results[k]
		r.Key, r.Start, r.End, r.Firing = b.Shop, st, st.Add(time.Minute), flows.OnTime
		r.Value = o5Acc{r.Value.N + 1, r.Value.Sum + b.Net}
		m.results[k] = r
	}
	var nRes, resSum int64
	maxN := splice.Opt[int64]{}
	regions := map[string]o5Acc{}
	for _, r := range m.results {
		nRes++
		resSum += r.Value.Sum
		if !maxN.Valid || r.Value.N > maxN.Value {
			maxN = splice.Opt[int64]{Value: r.Value.N, Valid: true}
		}
		a := regions[o5Region(r.Key)]
		regions[o5Region(r.Key)] = o5Acc{a.N + 1, a.Sum + r.Value.Sum}
		// restamped to its start, in the five-minute windows after the
		// exchange, within their allowed lateness
		s5 := r.Start.Truncate(5 * time.Minute).UnixNano()
		n, _ := m.w2[s5].(int64)
		m.w2[s5] = n + r.Value.Sum
	}
	for k, a := range regions {
		m.regions[k] = fmt.Sprint(a)
	}
	m.aggs["results"] = fmt.Sprint(nRes)
	m.aggs["ressum"] = fmt.Sprint(resSum)
	m.aggs["resmaxn"] = fmt.Sprint(maxN)
	m.aggs["regionsum"] = fmt.Sprint(resSum)
	return m
}

func TestEngineOutsideHunt5AggregateViewsEverywhere(t *testing.T) {
	const (
		delay  = 2*time.Second + 250*time.Millisecond
		rounds = 10
		ends   = 4 // partition 2 ends after this round
	)
	type res = flows.WindowResult[string, o5Acc]
	t0 := time.Date(2037, 6, 1, 0, 0, 0, 0, time.UTC)
	in := flowstest.NewInput[o5Sale](3)
	build := func() *flows.Flow {
		f := flows.New("hunt5-aggregates", flows.WithFragments(8))
		sales := flows.From(f, "sales", flows.Source[o5Sale](in), flows.WithEventTime(func(s o5Sale) time.Time { return s.At }, delay))
		buys := flows.Filter(flows.Map(sales, func(s o5Sale) o5Buy { return o5Buy{s.User, s.Shop, s.At, s.Amt - s.Fee} }),
			func(b o5Buy) bool { return b.Net > 0 })
		byUser := flows.KeyBy(buys, func(b o5Buy) string { return b.User })
		flows.AggregateView(byUser.Values(), "net", splice.Sum[int64](), func(b o5Buy) int64 { return b.Net })
		flows.AggregateView(byUser.Values(), "netmax", splice.Max[int64](), func(b o5Buy) int64 { return b.Net })
		flows.AggregateView(byUser.Values(), "nethist", splice.NewHistogram(o5Bounds...), func(b o5Buy) float64 { return float64(b.Net) })
		flows.AggregateView(byUser.Values(), "buyers", splice.DistinctCount(), func(b o5Buy) []byte { return []byte(b.User) })
		tbl := flows.Aggregate(byUser, func() int64 { return 0 }, func(n int64, b o5Buy) int64 { return n + b.Net }).View("users")
		flows.AggregateView(tbl.Updates(), "updates", splice.Count[flows.KV[string, int64]](), flows.Identity[flows.KV[string, int64]])
		flows.AggregateView(tbl.Updates(), "updsum", splice.Sum[int64](), func(kv flows.KV[string, int64]) int64 { return kv.Value })
		flows.AggregateView(tbl.Updates(), "updmax", splice.Max[int64](), func(kv flows.KV[string, int64]) int64 { return kv.Value })
		flows.AggregateView(tbl.Updates(), "updtop", splice.Top(3), func(kv flows.KV[string, int64]) splice.Scored {
			return splice.Scored{Key: kv.Key, Score: float64(kv.Value)}
		})
		byShop := flows.KeyBy(buys, func(b o5Buy) string { return b.Shop })
		w := flows.WindowAggregate(byShop, flows.Tumbling(time.Minute), func() o5Acc { return o5Acc{} },
			func(a o5Acc, b o5Buy) o5Acc { return o5Acc{a.N + 1, a.Sum + b.Net} })
		flows.AggregateView(w.Results(), "results", splice.Count[res](), flows.Identity[res])
		flows.AggregateView(w.Results(), "ressum", splice.Sum[int64](), func(r res) int64 { return r.Value.Sum })
		flows.AggregateView(w.Results(), "resmaxn", splice.Max[int64](), func(r res) int64 { return r.Value.N })
		// Restamped to their window's start: behind the watermark that fired
		// them, late downstream, within the hour of lateness.
		byRegion := flows.KeyBy(flows.Restamp(w.Results(), func(r res) time.Time { return r.Start }),
			func(r res) string { return o5Region(r.Key) })
		flows.AggregateView(byRegion.Values(), "regionsum", splice.Sum[int64](), func(r res) int64 { return r.Value.Sum })
		flows.Aggregate(byRegion, func() o5Acc { return o5Acc{} }, func(a o5Acc, r res) o5Acc { return o5Acc{a.N + 1, a.Sum + r.Value.Sum} }).View("regions")
		w2 := flows.WindowAggregate(byRegion, flows.Tumbling(5*time.Minute), func() int64 { return 0 },
			func(n int64, r res) int64 { return n + r.Value.Sum }, flows.AllowedLateness(time.Hour))
		flows.WindowView(w2, "w2sum", splice.Sum[int64](), func(_ string, n int64) int64 { return n }, 1000*time.Hour)
		return f
	}
	if err := build().Validate(); err != nil {
		t.Fatalf("the flow: %v", err)
	}

	// The input: rounds of a minute of event time; partition 0 holds the
	// hot users (~75% of the sales), partitions 1 and 2 the others; every
	// open partition has sales every round, in time order, and a user's
	// sales are all in one partition.
	rng := rand.New(rand.NewPCG(505, 5))
	var (
		roundIn [rounds][3][]o5Sale
		kept    [rounds][]o5Buy // the buys kept, cumulative, by round
		newest  [3]time.Time
		wmR     [rounds]time.Time // the watermark once a round is read
	)
	var all []o5Buy
	for r := range rounds {
		base := t0.Add(time.Duration(r) * time.Minute)
		for p, n := range []int{60, 13, 7} {
			if p == 2 && r > ends {
				continue
			}
			for i := range n {
				at := base.Add(time.Duration(i) * time.Minute / time.Duration(n)).Truncate(time.Second).Add(500 * time.Millisecond)
				var user string
				switch p {
				case 0:
					user = fmt.Sprintf("h%d", int(math.Pow(rng.Float64(), 2)*4))
				default:
					user = fmt.Sprintf("u%d", p+3*rng.IntN(6))
				}
				s := o5Sale{User: user, Shop: fmt.Sprintf("s%d", rng.IntN(6)), At: at, Amt: 1 + rng.Int64N(60), Fee: rng.Int64N(8)}
				if rng.IntN(10) == 0 {
					s.Fee = s.Amt // a refund: filtered out
				}
				roundIn[r][p] = append(roundIn[r][p], s)
				if s.Amt > s.Fee {
					all = append(all, o5Buy{s.User, s.Shop, s.At, s.Amt - s.Fee})
				}
				newest[p] = at
			}
		}
		kept[r] = append([]o5Buy(nil), all...)
		// the smallest of the open partitions' newest, less the delay ("a
		// partition that ended ... holds nothing back")
		wm := time.Unix(0, math.MaxInt64)
		for p := range 3 {
			if p == 2 && r >= ends {
				continue
			}
			if w := newest[p].Add(-delay); w.Before(wm) {
				wm = w
			}
		}
		wmR[r] = wm
	}
	final := o5Expect(all, time.Unix(0, math.MaxInt64))

	dir := t.TempDir()
	cfg := func(s *recovery.Store) Config {
		return Config{Store: s, TickInterval: 5 * time.Millisecond, CheckpointInterval: -1, BatchSize: 16, PollSize: 24}
	}
	// check compares the views with m; with exchanged, also those after the
	// exchange, which gets its outputs only once a checkpoint releases
	// them (actor/doc.go: "does the machine release the checkpoint's
	// exchange outputs"), and the checkpoints here are only those asked for.
	check := func(e *Engine, m o5Model, wm time.Time, what string, exchanged bool) {
		t.Helper()
		if !wm.IsZero() {
			o2Until(t, what+": the watermark of the stage after the key", func() string { return o2Watermarks(e, "net", wm) })
		}
		views := make([]string, 0, len(m.aggs))
		for v := range m.aggs {
			views = append(views, v)
		}
		sort.Strings(views)
		for _, v := range views {
			if !exchanged && v == "regionsum" {
				continue
			}
			o2Until(t, what+": aggregate view "+v, func() string {
				if got := o5Value(e, v); got != m.aggs[v] {
					return fmt.Sprintf("%s, want %s", got, m.aggs[v])
				}
				return ""
			})
		}
		o2Until(t, what+": keyed view users", func() string { return o2Diff(oeEntries(t, e, "users"), m.users, nil) })
		if !exchanged {
			return
		}
		if !wm.IsZero() {
			o2Until(t, what+": the watermark after the exchange", func() string { return o2Watermarks(e, "regionsum", wm) })
		}
		o2Until(t, what+": keyed view regions", func() string {
			got := map[string]any{}
			for k, v := range oeEntries(t, e, "regions") {
				got[k] = strings.TrimPrefix(fmt.Sprint(v), "&")
			}
			return o2Diff(got, m.regions, nil)
		})
		o2Until(t, what+": windowed view w2sum", func() string {
			got := o2Windows(t, e, "w2sum")
			for st, want := range m.w2 {
				if g, ok := got[st]; !ok || g.Value != want {
					return fmt.Sprintf("window %s: %v (there %v), want %v", time.Unix(0, st).UTC().Format("15:04"), g.Value, ok, want)
				}
			}
			for st, g := range got {
				if _, ok := m.w2[st]; !ok {
					return fmt.Sprintf("window %s: %v, want none", time.Unix(0, st).UTC().Format("15:04"), g.Value)
				}
			}
			return ""
		})
	}
	push := func(r int) {
		for p := range 3 {
			in.Push(p, roundIn[r][p]...)
		}
		if r == ends {
			in.ClosePartition(2)
		}
	}
	checkpoint := func(e *Engine) {
		t.Helper()
		if err := e.Checkpoint(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	atRound := func(e *Engine, r int, what string, exchanged bool) {
		t.Helper()
		check(e, o5Expect(kept[r], wmR[r]), wmR[r], what, exchanged)
	}
	round := func(e *Engine, r int) {
		t.Helper()
		push(r)
		atRound(e, r, fmt.Sprintf("round %d", r), false)
		checkpoint(e)
		atRound(e, r, fmt.Sprintf("round %d checkpointed", r), true)
	}

	r := 0
	// Run 0: rounds 0-2, a crash right after the last one's checkpoint.
	n := ohStartOn(t, dir, build(), cfg)
	for ; r < 3; r++ {
		round(n.e, r)
	}
	n.crash()
	// Run 1: back from the checkpoint; rounds 3-5 (partition 2 ends in
	// round 4); round 6 applied, no checkpoint, a crash.
	n = ohStartOn(t, dir, build(), cfg)
	atRound(n.e, r-1, "run 1 restored", false)
	checkpoint(n.e)
	atRound(n.e, r-1, "run 1 restored, checkpointed", true)
	for ; r < 6; r++ {
		round(n.e, r)
	}
	push(r)
	atRound(n.e, r, "round 6, before the crash", false)
	r++
	n.crash()
	// Run 2: round 6 again from the checkpoint of round 5; the rest; the
	// end of the input, and a crash as soon as it drained.
	n = ohStartOn(t, dir, build(), cfg)
	atRound(n.e, r-1, "run 2 restored", false)
	checkpoint(n.e)
	atRound(n.e, r-1, "run 2 restored, checkpointed", true)
	for ; r < rounds; r++ {
		round(n.e, r)
	}
	in.Close()
	// No periodic checkpoint (CheckpointInterval < 0): the stage after the
	// exchange gets the end of its input only at a checkpoint ("with never,
	// its later stages get their input, and a bounded input its end, only
	// at Checkpoint and Stop").
	oeWait(t, "run 2 drained, checkpointed", func() bool {
		select {
		case <-n.e.Drained():
			return true
		default:
		}
		checkpoint(n.e)
		return false
	})
	check(n.e, final, time.Unix(0, math.MaxInt64), "run 2 drained", true)
	n.crash()
	// Runs 3 and 4: from the end of the input, to a stop; and again.
	for _, what := range []string{"run 3", "run 4"} {
		n = ohStartOn(t, dir, build(), cfg)
		ohDrained(t, n.e, what)
		oeWait(t, what+": every fragment complete", func() bool { return ohComplete(n.e) })
		check(n.e, final, time.Unix(0, math.MaxInt64), what, true)
		for _, w := range o2Windows(t, n.e, "w2sum") {
			if !w.Complete {
				t.Fatalf("%s: every fragment complete, yet window %s of w2sum is not", what, w.Start.Format("15:04"))
			}
		}
		if err := n.e.Err(); err != nil {
			t.Fatal(err)
		}
		n.stop()
	}
	t.Logf("%d buys, %d window results, %d users, distinct estimate %s", len(all), len(final.results), len(final.users), final.aggs["buyers"])
}

// TestEngineOutsideHunt5AggregateViewBeforeKey: "The stream must come
// after KeyBy" (flows.AggregateView). An aggregate view declared on a
// source's stream after a Map and a Filter must make the flow fail
// Validate, not run with a view that some fragment never folds.
func TestEngineOutsideHunt5AggregateViewBeforeKey(t *testing.T) {
	in := flowstest.NewInput[o5Sale](2)
	f := flows.New("hunt5-before-key", flows.WithFragments(4))
	buys := flows.Filter(flows.Map(flows.From(f, "sales", flows.Source[o5Sale](in)),
		func(s o5Sale) o5Buy { return o5Buy{s.User, s.Shop, s.At, s.Amt - s.Fee} }), func(b o5Buy) bool { return b.Net > 0 })
	var declared any
	func() {
		defer func() { declared = recover() }()
		flows.AggregateView(buys, "net", splice.Sum[int64](), func(b o5Buy) int64 { return b.Net })
	}()
	if declared != nil {
		t.Fatalf("AggregateView before KeyBy panicked (%v); Validate should report it", declared)
	}
	if err := f.Validate(); err == nil {
		t.Fatal("an aggregate view on a stream before KeyBy passes Validate; its doc says the stream must come after KeyBy")
	} else {
		t.Logf("Validate: %v", err)
	}
}
