package actor

// A second round of flows written as an outside user would write them,
// unlike those of outside_hunt_test.go: two sources in one flow (one in
// event time, skewed, with a partition that never has an event; one
// without), a table with a state TTL whose updates are re-keyed into
// tumbling windows with allowed lateness; and a Process in event-time
// order whose event-time timers and late events feed a Count, sunk at
// once by an idempotent sink. Each runs on a pebble store on disk,
// crashes (no final checkpoint) right after a checkpoint, with input
// applied since, and at the very end of the input, and is checked
// against a plain Go model built from what the flows package documents.

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/splice"
)

// o2Half is half a second: event times lie on half seconds, watermarks
// on quarter seconds, TTLs and window bounds on whole seconds, so that no
// comparison the model makes is a tie.
const o2Half = 500 * time.Millisecond

// o2Windows is a windowed view's windows, by start (unix ns).
func o2Windows(t *testing.T, e *Engine, view string) map[int64]splice.Window {
	t.Helper()
	res, err := splice.Evaluate(context.Background(), e, splice.Request{View: view, Op: splice.OpWindows,
		Query: splice.Query{From: math.MinInt64, Limit: 100_000}})
	if err != nil {
		t.Fatalf("view %s: %v", view, err)
	}
	out := map[int64]splice.Window{}
	for _, w := range res.Windows {
		out[w.Start.UnixNano()] = w
	}
	return out
}

// o2WindowDiff compares a windowed view's windows with want, and their
// Complete with whether w passed their ends; "" if they agree.
func o2WindowDiff(got map[int64]splice.Window, want map[int64]any, w time.Time) string {
	for _, st := range o2SortedStarts(want) {
		g, ok := got[st]
		if !ok || g.Value != want[st] {
			return fmt.Sprintf("window %s: %v (there %v), want %v", time.Unix(0, st).UTC().Format("15:04:05"), g.Value, ok, want[st])
		}
		if g.Complete != w.After(g.End) {
			return fmt.Sprintf("window %s..%s: complete %v at watermark %s", g.Start.Format("15:04:05"), g.End.Format("15:04:05"), g.Complete, w.Format("15:04:05.00"))
		}
	}
	for st, g := range got {
		if _, ok := want[st]; !ok {
			return fmt.Sprintf("window %s: %v, want none", time.Unix(0, st).UTC().Format("15:04:05"), g.Value)
		}
	}
	return ""
}

// o2Watermarks checks that every fragment answers view with watermark w
// (none if w is zero); "" if they do.
func o2Watermarks(e *Engine, view string, w time.Time) string {
	res, err := splice.Evaluate(context.Background(), e, splice.Request{View: view, Op: splice.OpWindows,
		Query: splice.Query{From: math.MinInt64, Limit: 1}})
	if err != nil {
		res, err = splice.Evaluate(context.Background(), e, splice.Request{View: view, Op: splice.OpEntries, Query: splice.Query{Limit: 1}})
	}
	if err != nil {
		return err.Error()
	}
	for _, f := range res.Freshness {
		switch {
		case w.IsZero() && f.Watermark != nil:
			return fmt.Sprintf("fragment %d answers view %s with watermark %v, its stage has no event time", f.Fragment, view, f.Watermark)
		case !w.IsZero() && (f.Watermark == nil || !f.Watermark.Equal(w)):
			return fmt.Sprintf("fragment %d answers view %s with watermark %v, want %v", f.Fragment, view, f.Watermark, w)
		}
	}
	return ""
}

// o2Until retries check until it returns "" and fails with its last
// answer after 20 s.
func o2Until(t *testing.T, what string, check func() string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		diff := check()
		if diff == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s", what, diff)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// o2Diff compares a keyed view's entries with want; "" if they agree.
// skip names keys the model cannot decide.
func o2Diff(got, want map[string]any, skip map[string]bool) string {
	for _, k := range oeSortedKeys(want) {
		if !skip[k] && got[k] != want[k] {
			return fmt.Sprintf("%s = %v, want %v", k, got[k], want[k])
		}
	}
	for _, k := range oeSortedKeys(got) {
		if _, ok := want[k]; !ok && !skip[k] {
			return fmt.Sprintf("%s = %v, want no entry", k, got[k])
		}
	}
	return ""
}

// ---------------------------------------------------------------------------
// Two sources in one flow. "pings" has event time and an idle timeout:
// partition 0 holds ~90% of the pings (four hot devices), partition 1 the
// rest, partition 2 never has one. Noise pings are filtered out, and a
// FlatMap makes an echo item for some pings (device+"e", twice the value).
// Items are summed per device by an Aggregate with a state TTL (a view),
// whose updates go to a sink at once and are re-keyed by region (an
// exchange) into one-minute tumbling windows with allowed lateness,
// counted and summed, with three windowed views over the regions (one
// retained only 150 s) and the results on a sink on checkpoints.
// "orders" has no event time: counted per product (a view), a top-5
// aggregate view over the counts' updates, and a sum of the amounts.
//
// The input comes in rounds of a minute of event time, each pushed in two
// halves; from the second round on, the second half of partition 0 also
// carries pings of hot devices from the 20 s before the round, which come
// once the first half moved the watermark past the round's start (late:
// Late refinements of fired windows, within the lateness whatever the
// watermark). After each round, with every partition idle, the watermark
// is the newest ping's less the delay, and every view must be the model's
// at that watermark; then the engine takes a checkpoint. It crashes right
// after one (round 3), with a round applied since (round 7), and right as
// the input ends, and is stopped and started again at the end.
//
// The model: each device's items are in one partition, in time order but
// for the late ones, so the Aggregate sees them in that order, and the
// generator keeps only items whose fate under the TTL is the same
// whatever the watermark is when they are applied (at most the newest
// ping pushed less the delay: a replay covers at most a round) and
// whichever event "last" is (the latest in time or in arrival): "an
// event d after the key's last one starts it afresh", and a state whose
// last event plus d is past every watermark it may meet is not expired.
// An update is dated by its item's time; the windows then hold every
// update (none too late), whatever the crashes.

type o2Ping struct {
	Dev   string
	At    time.Time
	V     int64
	Echo  bool
	Noise bool
}

type o2Item struct {
	Dev string
	At  time.Time
	V   int64
}

type o2Acc struct{ N, Sum int64 }

type o2Order struct {
	Product string
	Amt     int64
}

func o2Region(dev string) string {
	switch {
	case len(dev) > 2 && dev[len(dev)-1] == 'e':
		return "echo"
	case dev == "h0" || dev == "h1":
		return "north"
	case dev[0] == 'h':
		return "south"
	case dev[0] == 'm':
		return "east"
	}
	return "west"
}

// o2Items is what the Filter and FlatMap make of a ping.
func o2Items(p o2Ping, emit func(o2Item)) {
	emit(o2Item{Dev: p.Dev, At: p.At, V: p.V})
	if p.Echo {
		emit(o2Item{Dev: p.Dev + "e", At: p.At, V: 2 * p.V})
	}
}

// o2Dev is the generator's and the model's view of one device.
type o2Dev struct {
	seen          bool
	maxT, lastArr time.Time
	sum           int64
}

// o2Fate is what the TTL does to an item of the device at t, when no
// watermark it may meet exceeds maxW: "fresh", "continue", or "" when it
// depends on the watermark or on which event counts as the last.
func (d *o2Dev) fate(t, maxW time.Time, ttl time.Duration) string {
	if !d.seen {
		return "fresh"
	}
	var out []string
	for _, last := range []time.Time{d.maxT, d.lastArr} {
		gap, exp := t.Sub(last), last.Add(ttl)
		switch {
		case gap > ttl+time.Second:
			out = append(out, "fresh")
		case gap < ttl-time.Second && exp.After(maxW.Add(time.Second)):
			out = append(out, "continue")
		default:
			return ""
		}
	}
	if out[0] != out[1] {
		return ""
	}
	return out[0]
}

func (d *o2Dev) apply(t time.Time, v int64, fate string) int64 {
	if fate == "fresh" {
		d.sum = 0
	}
	d.seen = true
	d.sum += v
	if t.After(d.maxT) {
		d.maxT = t
	}
	d.lastArr = t
	return d.sum
}

// o2Alive says whether the device's state outlives the watermark w: 1
// yes, 0 no, -1 it depends on which event counts as the last.
func (d *o2Dev) alive(w time.Time, ttl time.Duration) int {
	if !d.seen {
		return 0
	}
	a, b := !w.After(d.maxT.Add(ttl)), !w.After(d.lastArr.Add(ttl))
	switch {
	case a && b:
		return 1
	case !a && !b:
		return 0
	}
	return -1
}

func TestEngineOutsideHunt2TwoSourcesTTLWindows(t *testing.T) {
	const (
		delay    = 2*time.Second + 250*time.Millisecond
		ttl      = 90 * time.Second
		lateness = 2 * time.Minute
		recent   = 150 * time.Second // wrecent's retention
		rounds   = 12
	)
	type kvs = flows.KV[string, int64]
	type res = flows.WindowResult[string, o2Acc]
	t0 := time.Date(2036, 4, 1, 0, 0, 0, 0, time.UTC)
	pingsIn, ordersIn := flowstest.NewInput[o2Ping](3), flowstest.NewInput[o2Order](2)
	updates := newOESink[kvs]()
	results := newOESink[res]()
	tooLate := newOESink[o2Item]()
	build := func() *flows.Flow {
		f := flows.New("hunt2-two-sources", flows.WithFragments(8))
		pings := flows.From(f, "pings", flows.Source[o2Ping](pingsIn),
			flows.WithEventTime(func(p o2Ping) time.Time { return p.At }, delay), flows.WithIdleTimeout(50*time.Millisecond))
		orders := flows.From(f, "orders", flows.Source[o2Order](ordersIn))
		items := flows.FlatMap(flows.Filter(pings, func(p o2Ping) bool { return !p.Noise }), o2Items)
		byDev := flows.KeyBy(items, func(it o2Item) string { return it.Dev })
		flows.AggregateView(byDev.Values(), "items", splice.Count[o2Item](), flows.Identity[o2Item])
		tbl := flows.Aggregate(byDev, func() int64 { return 0 }, func(n int64, it o2Item) int64 { return n + it.V },
			flows.WithStateTTL(ttl)).View("devs")
		flows.To(tbl.Updates(), flows.Sink[kvs](updates))
		byRegion := flows.KeyBy(tbl.Updates(), func(kv kvs) string { return o2Region(kv.Key) })
		w := flows.WindowAggregate(byRegion, flows.Tumbling(time.Minute), func() o2Acc { return o2Acc{} },
			func(a o2Acc, kv kvs) o2Acc { return o2Acc{a.N + 1, a.Sum + kv.Value} }, flows.AllowedLateness(lateness))
		flows.WindowView(w, "wcount", splice.Sum[int64](), func(_ string, a o2Acc) int64 { return a.N }, 1000*time.Hour)
		flows.WindowView(w, "wmax", splice.Max[int64](), func(_ string, a o2Acc) int64 { return a.Sum }, 1000*time.Hour)
		flows.WindowView(w, "wrecent", splice.Sum[int64](), func(_ string, a o2Acc) int64 { return a.N }, recent)
		flows.To(w.Results(), flows.Sink[res](results), flows.OnCheckpoint())
		flows.To(flows.Map(w.TooLate(), func(kv kvs) o2Item { return o2Item{Dev: kv.Key, V: kv.Value} }),
			flows.Sink[o2Item](tooLate), flows.OnCheckpoint())
		byProduct := flows.KeyBy(orders, func(o o2Order) string { return o.Product })
		counts := flows.Count(byProduct).View("products")
		flows.AggregateView(counts.Updates(), "top", splice.Top(5), func(kv kvs) splice.Scored {
			return splice.Scored{Key: kv.Key, Score: float64(kv.Value)}
		})
		flows.AggregateView(byProduct.Values(), "amount", splice.Sum[int64](), func(o o2Order) int64 { return o.Amt })
		return f
	}

	// The input, up front, and the model, which follows each partition's
	// pings in the order they are pushed (a device's items are in one
	// partition, so the Aggregate applies them in that order).
	rng := rand.New(rand.NewPCG(61, 62))
	devs := map[string]*o2Dev{}
	dev := func(name string) *o2Dev {
		if devs[name] == nil {
			devs[name] = &o2Dev{}
		}
		return devs[name]
	}
	type cause struct {
		p   int
		off int64
		dev string
	}
	wantUpd := map[cause]int64{} // every update, by the item that made it
	type wk struct {
		region string
		start  int64
	}
	wantWin := map[wk]o2Acc{}
	var (
		pingsR  [rounds][2][]o2Ping
		ordersR [rounds][2][]o2Order
		itemsR  [rounds][2]int64  // by half round
		split   [rounds][2]int    // where the second half of each partition's pings starts
		halfAt  [rounds]time.Time // the newest ping of the first halves
		amtR    [rounds]int64
		newestR [rounds]time.Time        // the newest ping pushed by the end of each round
		snap    [rounds]map[string]o2Dev // each device at the end of each round
		winR    [rounds]map[wk]o2Acc     // each window at the end of each round
		off     [2]int64
	)
	newest := t0
	dropped, refreshed, latePings := 0, 0, 0
	sparseOn := func(name string, r int) bool { // one round in four: the state expires between
		h := 0
		for _, c := range name {
			h += int(c)
		}
		return (r+h)%4 == 0
	}
	for r := range rounds {
		base := t0.Add(time.Duration(r) * time.Minute)
		// no watermark an item of this round meets passes the round's end
		// less the delay (a replay covers at most the round)
		maxW := base.Add(time.Minute - delay)
		halfAt[r] = newest
		hot := []string{"h0", "h1", "h2", "h3"}
		if r == 5 || r == 6 {
			hot = hot[:3] // h3 pauses past its TTL
		}
		cands := func(p int) []string {
			all, pct := []string{"m0", "m1", "m2", "m3"}, 30
			sparse := []string{"s8", "s9", "s10", "s11"}
			if p == 0 {
				all, pct = hot, 15
				sparse = []string{"s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"}
			}
			if rng.IntN(100) >= pct {
				return all
			}
			var on []string
			for _, s := range sparse {
				if sparseOn(s, r) {
					on = append(on, s)
				}
			}
			if len(on) == 0 {
				return all
			}
			return on
		}
		// pick makes a ping at at of the first candidate whose item's fate
		// the model can tell, in time order for the device unless late.
		pick := func(cs []string, at time.Time, late bool) (o2Ping, bool) {
			for _, i := range rng.Perm(len(cs)) {
				d := dev(cs[i])
				if !late && d.seen && !at.After(d.maxT) || d.fate(at, maxW, ttl) == "" {
					continue
				}
				pg := o2Ping{Dev: cs[i], At: at, V: 1 + rng.Int64N(20)}
				if e := dev(cs[i] + "e"); !late && rng.IntN(6) == 0 && (!e.seen || at.After(e.maxT)) && e.fate(at, maxW, ttl) != "" {
					pg.Echo = true
				}
				return pg, true
			}
			return o2Ping{}, false
		}
		for p, n := range []int{130, 14} {
			type slot struct {
				at   time.Time
				late bool
			}
			var slots []slot
			for i := range n {
				at := base.Add(time.Duration(i) * time.Minute / time.Duration(n)).Truncate(time.Second).
					Add(o2Half + time.Duration(rng.IntN(3)-1)*time.Second)
				slots = append(slots, slot{at: at})
			}
			if p == 0 && r >= 1 {
				// late pings from the 20 s before the round, in the second
				// half of the round's
				for range 6 {
					at := base.Add(-time.Duration(1+rng.IntN(19))*time.Second - o2Half)
					pos := n/2 + rng.IntN(len(slots)-n/2+1)
					slots = append(slots[:pos], append([]slot{{at, true}}, slots[pos:]...)...)
				}
			}
			for i, sl := range slots {
				if i == n/2 {
					split[r][p] = len(pingsR[r][p])
				}
				half := 0
				if i >= n/2 {
					half = 1
				}
				pg := o2Ping{Dev: "noise", At: sl.at, Noise: true}
				if sl.late || rng.IntN(15) != 0 {
					cs := hot
					if !sl.late {
						cs = cands(p)
					}
					var ok bool
					if pg, ok = pick(cs, sl.at, sl.late); !ok {
						dropped++
						continue
					}
				}
				if sl.late {
					latePings++
				}
				pingsR[r][p] = append(pingsR[r][p], pg)
				if pg.At.After(newest) {
					newest = pg.At
				}
				if half == 0 && pg.At.After(halfAt[r]) {
					halfAt[r] = pg.At
				}
				if !pg.Noise {
					o2Items(pg, func(it o2Item) {
						d := dev(it.Dev)
						fate := d.fate(it.At, maxW, ttl)
						if fate == "fresh" && d.seen {
							refreshed++
						}
						sum := d.apply(it.At, it.V, fate)
						wantUpd[cause{p, off[p], it.Dev}] = sum
						k := wk{o2Region(it.Dev), it.At.Truncate(time.Minute).UnixNano()}
						a := wantWin[k]
						wantWin[k] = o2Acc{a.N + 1, a.Sum + sum}
						itemsR[r][half]++
					})
				}
				off[p]++
			}
		}
		newestR[r] = newest
		winR[r] = map[wk]o2Acc{}
		for k, a := range wantWin {
			winR[r][k] = a
		}
		snap[r] = map[string]o2Dev{}
		for name, d := range devs {
			snap[r][name] = *d
		}
		for range 40 {
			o := o2Order{Product: fmt.Sprintf("p%02d", int(math.Pow(rng.Float64(), 2.5)*30)), Amt: 1 + rng.Int64N(99)}
			p := 0
			if rng.IntN(5) == 0 {
				p = 1
			}
			ordersR[r][p] = append(ordersR[r][p], o)
			amtR[r] += o.Amt
		}
	}
	// windowViews is what the windowed views hold of the windows win at
	// watermark w: every window, and in wrecent those w has not passed by
	// the retention.
	windowViews := func(win map[wk]o2Acc, w time.Time) map[string]map[int64]any {
		out := map[string]map[int64]any{"wcount": {}, "wmax": {}, "wrecent": {}}
		for k, a := range win {
			n, _ := out["wcount"][k.start].(int64)
			out["wcount"][k.start] = n + a.N
			m, _ := out["wmax"][k.start].(splice.Opt[int64])
			out["wmax"][k.start] = splice.Opt[int64]{Value: max(m.Value, a.Sum), Valid: true}
			if !w.After(time.Unix(0, k.start).Add(time.Minute + recent)) {
				n, _ := out["wrecent"][k.start].(int64)
				out["wrecent"][k.start] = n + a.N
			}
		}
		return out
	}

	// Driving the engine.
	dir := t.TempDir()
	cfg := func(s *recovery.Store) Config {
		return Config{Store: s, TickInterval: 5 * time.Millisecond, CheckpointInterval: 30 * time.Millisecond, BatchSize: 32, PollSize: 40}
	}
	var pushedItems, pushedAmt int64
	products := map[string]int64{}
	// push pushes half a round: the first half with the orders, the
	// second with the late pings.
	push := func(r, half int) {
		for p := range 2 {
			if half == 0 {
				pingsIn.Push(p, pingsR[r][p][:split[r][p]]...)
				ordersIn.Push(p, ordersR[r][p]...)
				for _, o := range ordersR[r][p] {
					products[o.Product]++
				}
			} else {
				pingsIn.Push(p, pingsR[r][p][split[r][p]:]...)
			}
		}
		pushedItems += itemsR[r][half]
		if half == 0 {
			pushedAmt += amtR[r]
		}
	}
	applied := func(e *Engine, what string) {
		t.Helper()
		oeWait(t, what, func() bool { return oeValue(e, "items") == pushedItems && oeValue(e, "amount") == pushedAmt })
	}
	checkOrders := func(e *Engine, what string) {
		t.Helper()
		want := map[string]any{}
		var top []splice.Scored
		for _, k := range oeSortedKeys(products) {
			want[k] = products[k]
			top = append(top, splice.Scored{Key: k, Score: float64(products[k])})
		}
		sort.SliceStable(top, func(i, j int) bool { return top[i].Score > top[j].Score })
		top = top[:min(5, len(top))]
		o2Until(t, what+": products view", func() string { return o2Diff(oeEntries(t, e, "products"), want, nil) })
		res, err := splice.Evaluate(context.Background(), e, splice.Request{View: "top"})
		if err != nil {
			t.Fatalf("%s: top view: %v", what, err)
		}
		if fmt.Sprint(res.Value) != fmt.Sprint(top) {
			t.Fatalf("%s: top view %v, want %v", what, res.Value, top)
		}
	}
	// quiet: every partition idle, the watermark is the newest ping's
	// less the delay (at every stage); then the devices the model can
	// tell are in the view with their sums, or expired.
	quiet := func(e *Engine, r int, what string) {
		t.Helper()
		wq := newestR[r].Add(-delay)
		oeWait(t, what+": the watermark", func() bool { return ohWatermarkAt(e, wq) })
		want, skip := map[string]any{}, map[string]bool{}
		for name, d := range snap[r] {
			switch d.alive(wq, ttl) {
			case 1:
				want[name] = d.sum
			case -1:
				skip[name] = true
			}
		}
		o2Until(t, what+": devs view", func() string { return o2Diff(oeEntries(t, e, "devs"), want, skip) })
		for view, want := range windowViews(winR[r], wq) {
			o2Until(t, what+": view "+view, func() string { return o2WindowDiff(o2Windows(t, e, view), want, wq) })
		}
		for view, w := range map[string]time.Time{"devs": wq, "items": wq, "wcount": wq, "products": {}, "amount": {}} {
			o2Until(t, what+": freshness", func() string { return o2Watermarks(e, view, w) })
		}
	}
	round := func(e *Engine, r int) {
		t.Helper()
		what := fmt.Sprintf("round %d", r)
		push(r, 0)
		applied(e, what+", first half")
		// the windows before the round fire before its late pings come
		oeWait(t, what+": the first half's watermark", func() bool { return ohWatermarkAt(e, halfAt[r].Add(-delay)) })
		push(r, 1)
		applied(e, what)
		quiet(e, r, what)
		checkOrders(e, what)
		if err := e.Checkpoint(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	r := 0
	// Run 0: rounds 0-3, and a crash right after the last one's checkpoint.
	n := ohStartOn(t, dir, build(), cfg)
	for ; r < 4; r++ {
		round(n.e, r)
	}
	n.crash()
	// Run 1: all of it back from the checkpoint; rounds 4-6; round 7
	// applied and a crash.
	n = ohStartOn(t, dir, build(), cfg)
	applied(n.e, "run 1 restored")
	quiet(n.e, r-1, "run 1 restored")
	checkOrders(n.e, "run 1 restored")
	for ; r < 7; r++ {
		round(n.e, r)
	}
	push(r, 0)
	push(r, 1)
	applied(n.e, "round 7")
	r++
	n.crash()
	// Run 2: round 7 again from the last checkpoint; the rest; the end
	// of the input, and a crash as soon as it drained.
	n = ohStartOn(t, dir, build(), cfg)
	applied(n.e, "run 2 restored")
	quiet(n.e, r-1, "run 2 restored")
	checkOrders(n.e, "run 2 restored")
	for ; r < rounds; r++ {
		round(n.e, r)
	}
	pingsIn.Close()
	ordersIn.Close()
	ohDrained(t, n.e, "run 2")
	n.crash()

	// Runs 3 and 4: from the end of the input, to a stop; and again.
	final := func(e *Engine, what string) {
		t.Helper()
		ohDrained(t, e, what)
		oeWait(t, what+": every fragment complete", func() bool { return ohComplete(e) })
		// Every fragment says its state is final ("sent everything
		// downstream: its state is final"), so the input's end completed
		// the watermark and every window fired (see
		// TestEngineOutsideHunt2CompleteBeforeWindowsFire).
		for _, w := range o2Windows(t, e, "wcount") {
			if !w.Complete {
				t.Fatalf("%s: every fragment complete, yet window %s..%s of wcount is not (the input ended)", what, w.Start.Format("15:04"), w.End.Format("15:04"))
			}
		}
		oeWait(t, what+": the complete watermark", func() bool { return ohWatermarkAt(e, time.Unix(0, math.MaxInt64)) })
		applied(e, what)
		checkOrders(e, what)
		// the input ended: the watermark is complete, every state expired
		o2Until(t, what+": devs view", func() string { return o2Diff(oeEntries(t, e, "devs"), map[string]any{}, nil) })
		// "when a bounded input ends, the windows retained then stay":
		// then, every partition was idle at the newest ping less the delay
		for view, want := range windowViews(wantWin, newestR[rounds-1].Add(-delay)) {
			if diff := o2WindowDiff(o2Windows(t, e, view), want, time.Unix(0, math.MaxInt64)); diff != "" {
				t.Fatalf("%s: view %s: %s", what, view, diff)
			}
		}
		if err := e.Checkpoint(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := e.Err(); err != nil {
			t.Fatal(err)
		}
	}
	n = ohStartOn(t, dir, build(), cfg)
	final(n.e, "run 3")
	lastOf := func() map[wk]o2Acc {
		last := map[wk]o2Acc{}
		for _, v := range results.values() {
			last[wk{v.Key, v.Start.UnixNano()}] = v.Value
		}
		return last
	}
	o2Until(t, "every window's last result on checkpoints", func() string {
		last := lastOf()
		for k, a := range wantWin {
			if last[k] != a {
				return fmt.Sprintf("window %s %s: last result %+v, want %+v", k.region, time.Unix(0, k.start).UTC().Format("15:04"), last[k], a)
			}
		}
		return ""
	})
	n.stop()
	n = ohStartOn(t, dir, build(), cfg)
	final(n.e, "run 4")
	n.stop()

	// The sinks.
	if n := tooLate.len(); n != 0 {
		t.Fatalf("%d updates went to TooLate, e.g. %+v; none is later than the allowed lateness whatever the watermark", n, tooLate.values()[0])
	}
	results.checkConflicts(t, "window results")
	updates.checkConflicts(t, "updates at once")
	results.mu.Lock()
	late := 0
	seq := map[wk][]res{}
	for _, id := range results.order {
		v := results.byID[id]
		k := wk{v.Key, v.Start.UnixNano()}
		if _, ok := wantWin[k]; !ok || v.End.Sub(v.Start) != time.Minute {
			t.Fatalf("result %v %+v: no such window", id, v)
		}
		seq[k] = append(seq[k], v)
	}
	for k, vs := range seq {
		for i, v := range vs {
			if v.Firing == flows.Late {
				late++
			}
			bad := i > 0 && (v.Firing != flows.Late || v.Value.N <= vs[i-1].Value.N) || v.Firing == flows.Early
			if bad || i == len(vs)-1 && v.Value != wantWin[k] {
				var all string
				for _, v := range vs {
					all += fmt.Sprintf("\n\t%v %+v", v.Firing, v.Value)
				}
				results.mu.Unlock()
				t.Fatalf("window %s %s: results not one history ending at %+v:%s", k.region, time.Unix(0, k.start).UTC().Format("15:04"), wantWin[k], all)
			}
		}
	}
	results.mu.Unlock()
	if len(seq) != len(wantWin) {
		t.Fatalf("%d windows have results, want %d", len(seq), len(wantWin))
	}
	if late == 0 {
		t.Fatal("no Late refinement: the late pings came before their windows fired")
	}
	updates.mu.Lock()
	defer updates.mu.Unlock()
	got := map[cause]int64{}
	for _, id := range updates.order {
		kv := updates.byID[id]
		c := cause{id.Partition, id.Offset, kv.Key}
		if id.Cause != flows.CauseEvent || id.Source != 0 {
			t.Fatalf("update %v %+v: not caused by a ping", id, kv)
		}
		if _, dup := got[c]; dup {
			t.Fatalf("update %v %+v: a second id for the item of partition %d offset %d", id, kv, c.p, c.off)
		}
		got[c] = kv.Value
	}
	for c, v := range wantUpd {
		if g, ok := got[c]; !ok || g != v {
			t.Fatalf("update of %s by pings/%d@%d: %d (delivered %v), want %d", c.dev, c.p, c.off, g, ok, v)
		}
	}
	if len(got) != len(wantUpd) {
		t.Fatalf("%d updates at once, want %d", len(got), len(wantUpd))
	}
	t.Logf("%d items (%d pings dropped by the generator, %d late pings), %d states started afresh; %d windows, %d results (%d late); %d updates delivered %d times",
		len(wantUpd), dropped, latePings, refreshed, len(wantWin), results.len(), late, len(got), updates.delivered)
}

func o2SortedStarts(m map[int64]any) []int64 {
	out := make([]int64, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// ---------------------------------------------------------------------------
// Taps of users counted per 10 s bucket by a Process in event-time order:
// a tap adds to its bucket's count in the state and sets an event-time
// timer at the bucket's end, which emits the count (a flush); a tap that
// comes after its bucket was flushed (late, behind the watermark: it runs
// at once) emits the refined count itself. The state keeps the buckets
// of the last five minutes (a slice the handler changes in place, as a
// user would). The flushes go to a sink at once that keeps each output id
// once, and are re-keyed by user into a Count with a view.
//
// Three partitions, each user in one: partition 0 has four hot users and
// ~87% of the taps, partition 2 three taps a round, so that it sets the
// watermark. No idle timeout: the watermark is the least over the
// partitions. From the second round on, partitions 0 and 1 carry late taps
// from the minute behind the watermark the round before reached, of users
// whose bucket is flushed by then; the engine takes a checkpoint after
// every round, so that a restore gives back that watermark at least and
// the late taps are late whatever the batches and crashes. The model is
// the documented sequential run: the taps in time order between the
// timers, each late one at once. So every output, with its id, is fixed
// by the input alone.

type o2Tap struct {
	User string
	At   time.Time
}

type o2Buckets struct {
	F    int64   // the last flushed bucket's end, unix ns
	Ends []int64 // bucket ends, increasing
	Ns   []int64
}

type o2Flush struct {
	User string
	End  int64
	N    int64
	Late bool
}

const o2Keep = 5 * time.Minute

func o2Bucketer(bucket time.Duration) flows.Handler[string, o2Tap, o2Buckets, o2Flush] {
	return flows.Handler[string, o2Tap, o2Buckets, o2Flush]{
		OnEvent: func(c *flows.Context[string, o2Buckets, o2Flush], tp o2Tap) {
			s, _ := c.State()
			end := tp.At.Truncate(bucket).Add(bucket).UnixNano()
			i := sort.Search(len(s.Ends), func(i int) bool { return s.Ends[i] >= end })
			if i == len(s.Ends) || s.Ends[i] != end {
				s.Ends = append(s.Ends, 0)
				s.Ns = append(s.Ns, 0)
				copy(s.Ends[i+1:], s.Ends[i:])
				copy(s.Ns[i+1:], s.Ns[i:])
				s.Ends[i], s.Ns[i] = end, 0
			}
			s.Ns[i]++
			if end <= s.F {
				c.Emit(o2Flush{User: c.Key(), End: end, N: s.Ns[i], Late: true})
			} else {
				c.SetEventTimer(time.Unix(0, end))
			}
			c.SetState(s)
		},
		OnTimer: func(c *flows.Context[string, o2Buckets, o2Flush], at time.Time) {
			s, _ := c.State()
			end := at.UnixNano()
			s.F = max(s.F, end)
			var n int64
			keep := 0
			for i, e := range s.Ends {
				if e == end {
					n = s.Ns[i]
				}
				if e >= end-int64(o2Keep) {
					s.Ends[keep], s.Ns[keep] = e, s.Ns[i]
					keep++
				}
			}
			s.Ends, s.Ns = s.Ends[:keep], s.Ns[:keep]
			c.Emit(o2Flush{User: c.Key(), End: end, N: n})
			c.SetState(s)
		},
	}
}

func TestEngineOutsideHunt2EventOrderLateTapsAtOnce(t *testing.T) {
	const (
		bucket = 10 * time.Second
		delay  = 2*time.Second + 250*time.Millisecond
		rounds = 12
	)
	t0 := time.Date(2037, 8, 1, 9, 0, 0, 0, time.UTC)
	in := flowstest.NewInput[o2Tap](3)
	out := newOESink[o2Flush]()
	build := func() *flows.Flow {
		f := flows.New("hunt2-taps", flows.WithFragments(8))
		src := flows.From(f, "taps", flows.Source[o2Tap](in), flows.WithEventTime(func(tp o2Tap) time.Time { return tp.At }, delay))
		ks := flows.KeyBy(src, func(tp o2Tap) string { return tp.User })
		flows.AggregateView(ks.Values(), "taps", splice.Count[o2Tap](), flows.Identity[o2Tap])
		p := flows.Process(ks, o2Bucketer(bucket), flows.InEventTimeOrder()).View("users")
		flows.To(p.Out(), flows.Sink[o2Flush](out))
		flows.Count(flows.KeyBy(p.Out(), func(fl o2Flush) string { return fl.User })).View("flushes")
		return f
	}

	// The input, up front.
	type tap struct {
		o2Tap
		p     int
		off   int64
		round int
		late  bool
	}
	users := [3][]string{{"u0", "u1", "u2", "u3"}, {"v0", "v1", "v2", "v3", "v4", "v5"}, {"w0", "w1"}}
	rng := rand.New(rand.NewPCG(71, 72))
	var all []tap
	var roundsIn [rounds][3][]o2Tap
	var wmR [rounds]time.Time // the watermark once round r is applied
	var newestP [3]time.Time
	var off [3]int64
	type ub struct {
		user string
		end  int64
	}
	onTime := map[ub]int64{} // taps not late, by user and bucket
	endOf := func(at time.Time) int64 { return at.Truncate(bucket).Add(bucket).UnixNano() }
	lates, dropped := 0, 0
	for r := range rounds {
		base := t0.Add(time.Duration(r) * time.Minute)
		for p, n := range []int{100, 12, 3} {
			var seq []tap
			for i := range n {
				at := base.Add(time.Duration(i) * time.Minute / time.Duration(n)).Truncate(time.Second).
					Add(o2Half + time.Duration(rng.IntN(3)-1)*time.Second)
				seq = append(seq, tap{o2Tap: o2Tap{User: users[p][rng.IntN(len(users[p]))], At: at}})
			}
			if r >= 1 && p < 2 {
				// late taps, behind the watermark the last round reached,
				// of users whose bucket is flushed by then
				w := wmR[r-1]
				for range []int{8, 2}[p] {
					at := w.Add(-time.Duration(2+rng.IntN(119))*o2Half - 250*time.Millisecond)
					var cands []string
					for _, u := range users[p] {
						for e := endOf(at); e < w.UnixNano(); e += int64(bucket) {
							if onTime[ub{u, e}] > 0 {
								cands = append(cands, u)
								break
							}
						}
					}
					if len(cands) == 0 {
						dropped++
						continue
					}
					pos := rng.IntN(len(seq) + 1)
					seq = append(seq[:pos], append([]tap{{o2Tap: o2Tap{User: cands[rng.IntN(len(cands))], At: at}, late: true}}, seq[pos:]...)...)
					lates++
				}
			}
			for _, tp := range seq {
				tp.p, tp.off, tp.round = p, off[p], r
				off[p]++
				all = append(all, tp)
				roundsIn[r][p] = append(roundsIn[r][p], tp.o2Tap)
				if tp.At.After(newestP[p]) {
					newestP[p] = tp.At
				}
				if !tp.late {
					onTime[ub{tp.User, endOf(tp.At)}]++
				}
			}
		}
		wmR[r] = newestP[0]
		for _, nw := range newestP[1:] {
			if nw.Before(wmR[r]) {
				wmR[r] = nw
			}
		}
		wmR[r] = wmR[r].Add(-delay)
	}

	// The model at watermark w of the taps of rounds up to r (every timer
	// with w: the end of the input): the outputs by cause, the flushes per
	// user, and the states.
	type model struct {
		timers  map[ub]o2Flush       // by user and bucket end
		lateOut map[[2]int64]o2Flush // by partition and offset
		flushes map[string]any
		states  map[string]any
	}
	run := func(r int, w time.Time) model {
		m := model{timers: map[ub]o2Flush{}, lateOut: map[[2]int64]o2Flush{}, flushes: map[string]any{}, states: map[string]any{}}
		ran := map[ub]int64{}       // taps run, by bucket
		fired := map[string]int64{} // the last flush per user
		for k, n := range onTime {
			if k.end < w.UnixNano() {
				m.timers[k] = o2Flush{User: k.user, End: k.end, N: n}
				fired[k.user] = max(fired[k.user], k.end)
				c, _ := m.flushes[k.user].(int64)
				m.flushes[k.user] = c + 1
			}
		}
		lateN := map[ub]int64{}
		for _, tp := range all {
			if tp.round > r {
				break
			}
			k := ub{tp.User, endOf(tp.At)}
			switch {
			case tp.late:
				lateN[k]++
				ran[k]++
				m.lateOut[[2]int64{int64(tp.p), tp.off}] = o2Flush{User: tp.User, End: k.end, N: onTime[k] + lateN[k], Late: true}
				c, _ := m.flushes[tp.User].(int64)
				m.flushes[tp.User] = c + 1
			case tp.At.Before(w):
				ran[k]++
			}
		}
		byUser := map[string]*o2Buckets{}
		for k, n := range ran {
			s := byUser[k.user]
			if s == nil {
				s = &o2Buckets{F: fired[k.user]}
				byUser[k.user] = s
			}
			if s.F == 0 || k.end >= s.F-int64(o2Keep) {
				s.Ends = append(s.Ends, k.end)
				s.Ns = append(s.Ns, n)
			}
		}
		for u, s := range byUser {
			idx := make([]int, len(s.Ends))
			for i := range idx {
				idx[i] = i
			}
			sort.Slice(idx, func(a, b int) bool { return s.Ends[idx[a]] < s.Ends[idx[b]] })
			var es, ns []int64
			for _, i := range idx {
				es, ns = append(es, s.Ends[i]), append(ns, s.Ns[i])
			}
			m.states[u] = fmt.Sprint(o2Buckets{F: s.F, Ends: es, Ns: ns})
		}
		return m
	}
	printed := func(got map[string]any) map[string]any {
		out := map[string]any{}
		for k, v := range got {
			out[k] = fmt.Sprint(v)
		}
		return out
	}
	var pushed int64
	check := func(e *Engine, r int, w time.Time, what string) {
		t.Helper()
		oeWait(t, what+": taps applied", func() bool { return oeValue(e, "taps") == pushed })
		oeWait(t, what+": the watermark", func() bool { return ohWatermarkAt(e, w) })
		m := run(r, w)
		o2Until(t, what+": users view", func() string { return o2Diff(printed(oeEntries(t, e, "users")), m.states, nil) })
		o2Until(t, what+": flushes view", func() string { return o2Diff(oeEntries(t, e, "flushes"), m.flushes, nil) })
		o2Until(t, what+": the sink", func() string {
			n := len(m.timers) + len(m.lateOut)
			if got := out.len(); got != n {
				return fmt.Sprintf("%d outputs, want %d", got, n)
			}
			return ""
		})
	}
	round := func(e *Engine, r int, ckpt bool) {
		t.Helper()
		for p := range 3 {
			in.Push(p, roundsIn[r][p]...)
			pushed += int64(len(roundsIn[r][p]))
		}
		if !ckpt {
			oeWait(t, fmt.Sprintf("round %d applied", r), func() bool { return oeValue(e, "taps") == pushed })
			return
		}
		check(e, r, wmR[r], fmt.Sprintf("round %d", r))
		if err := e.Checkpoint(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	cfg := func(s *recovery.Store) Config {
		return Config{Store: s, TickInterval: 5 * time.Millisecond, CheckpointInterval: 30 * time.Millisecond, BatchSize: 32, PollSize: 40}
	}
	r := 0
	// Run 0: rounds 0-3, a crash right after the last one's checkpoint.
	n := ohStartOn(t, dir, build(), cfg)
	for ; r < 4; r++ {
		round(n.e, r, true)
	}
	n.crash()
	// Run 1: rounds 4-6; round 7 applied, and a crash.
	n = ohStartOn(t, dir, build(), cfg)
	check(n.e, r-1, wmR[r-1], "run 1 restored")
	for ; r < 7; r++ {
		round(n.e, r, true)
	}
	round(n.e, r, false)
	r++
	n.crash()
	// Run 2: round 7 again; the rest; the end of the input, and a crash
	// as soon as it drained.
	n = ohStartOn(t, dir, build(), cfg)
	check(n.e, r-1, wmR[r-1], "run 2 restored")
	if err := n.e.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	for ; r < rounds; r++ {
		round(n.e, r, true)
	}
	in.Close()
	ohDrained(t, n.e, "run 2")
	n.crash()
	// Runs 3 and 4: from the end of the input to a stop, and again.
	end := time.Unix(0, math.MaxInt64)
	for run := 3; run <= 4; run++ {
		n = ohStartOn(t, dir, build(), cfg)
		what := fmt.Sprintf("run %d", run)
		ohDrained(t, n.e, what)
		oeWait(t, what+": every fragment complete", func() bool { return ohComplete(n.e) })
		check(n.e, rounds-1, end, what)
		if err := n.e.Err(); err != nil {
			t.Fatal(err)
		}
		n.stop()
	}

	// The sink at once, by id: every output once, with the model's value.
	m := run(rounds-1, end)
	out.checkConflicts(t, "flushes at once")
	out.mu.Lock()
	defer out.mu.Unlock()
	seen := 0
	for _, id := range out.order {
		v := out.byID[id]
		var want o2Flush
		var ok bool
		switch id.Cause {
		case flows.CauseEventTimer:
			want, ok = m.timers[ub{id.Key, id.At}]
			ok = ok && id.Key == v.User
		case flows.CauseEvent:
			want, ok = m.lateOut[[2]int64{int64(id.Partition), id.Offset}]
			ok = ok && id.Source == 0
		}
		if !ok || v != want || id.Index != 0 {
			t.Fatalf("output %v %+v: want %+v (in the model %v)", id, v, want, ok)
		}
		seen++
	}
	if want := len(m.timers) + len(m.lateOut); seen != want {
		t.Fatalf("%d outputs at once, want %d", seen, want)
	}
	if len(m.lateOut) == 0 {
		t.Fatal("no late tap refined a flushed bucket: the test needs some")
	}
	t.Logf("%d taps (%d late, %d late ones dropped by the generator), %d flushes, %d refinements; %d deliveries",
		len(all), lates, dropped, len(m.timers), len(m.lateOut), out.delivered)
}

// ---------------------------------------------------------------------------
// The smallest flow found to answer "complete" too early: a bounded
// source in event time, keyed, keyed again (an exchange), in one-minute
// windows whose results are counted per key (a keyed view, after another
// exchange). Once an answer of that view says complete — "the answer is
// final (a bounded input fully processed)" (splice.Result.Complete), each
// fragment's "state is final" (splice.Freshness.Complete) — it must hold
// every window of every key: the input ended, so its watermark completed
// and every window fired.
func TestEngineOutsideHunt2CompleteBeforeWindowsFire(t *testing.T) {
	t0 := time.Date(2036, 4, 1, 0, 0, 0, 0, time.UTC)
	in := flowstest.NewInput[o2Item](2)
	for j := range 300 { // five devices, a ping a second for five minutes
		in.Push(j%2, o2Item{Dev: fmt.Sprint("d", j%5), At: t0.Add(time.Duration(j)*time.Second + o2Half)})
	}
	in.Close()
	want := map[string]any{"d0": int64(5), "d1": int64(5), "d2": int64(5), "d3": int64(5), "d4": int64(5)}
	f := flows.New("hunt2-complete", flows.WithFragments(4))
	src := flows.From(f, "pings", flows.Source[o2Item](in), flows.WithEventTime(func(it o2Item) time.Time { return it.At }, time.Second))
	dev := func(it o2Item) string { return it.Dev }
	again := flows.KeyBy(flows.KeyBy(src, dev).Values(), dev)
	w := flows.WindowAggregate(again, flows.Tumbling(time.Minute), func() int64 { return 0 }, func(n int64, _ o2Item) int64 { return n + 1 })
	flows.Count(flows.KeyBy(w.Results(), func(r flows.WindowResult[string, int64]) string { return r.Key })).View("fired")
	n := ohStartOn(t, t.TempDir(), f, func(s *recovery.Store) Config {
		return Config{Store: s, TickInterval: 5 * time.Millisecond, CheckpointInterval: 30 * time.Millisecond}
	})
	defer n.stop()
	o2Until(t, "an answer that says complete", func() string {
		res, err := splice.Evaluate(context.Background(), n.e, splice.Request{View: "fired", Op: splice.OpEntries, Query: splice.Query{Limit: 100}})
		if err != nil || !res.Complete() {
			return "none yet"
		}
		got := map[string]any{}
		for _, en := range res.Entries {
			got[en.Key] = en.Value
		}
		if diff := o2Diff(got, want, nil); diff != "" {
			var wms string
			for _, fr := range n.e.Fragments() {
				wms += " " + time.Unix(0, fr.Watermark.Load()).UTC().Format("2006-01-02T15:04:05")
			}
			t.Fatalf("the fired view answered complete with windows missing: %s (all: %v); fragments' watermarks:%s", diff, got, wms)
		}
		return ""
	})
}
