package flowstest_test

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/splice"
)

// wev is an event of the window reference tests.
type wev struct {
	Key string
	At  time.Time
	W   int64
}

// wstats is a commutative group that names its events well: a count, a
// sum and a sum of squares of their weights.
type wstats struct{ N, Sum, Sq int64 }

func addW(s wstats, e wev) wstats { return wstats{s.N + 1, s.Sum + e.W, s.Sq + e.W*e.W} }
func mergeW(a, b wstats) wstats   { return wstats{a.N + b.N, a.Sum + b.Sum, a.Sq + b.Sq} }
func subW(a, b wstats) wstats     { return wstats{a.N - b.N, a.Sum - b.Sum, a.Sq - b.Sq} }
func (s wstats) String() string   { return fmt.Sprintf("%d/%d/%d", s.N, s.Sum, s.Sq) }
func noW() wstats                 { return wstats{} }

// wop is a step of a window reference case: push an event to a
// partition, drain, checkpoint (after a drain), crash a fragment, or
// restart.
type wop struct {
	kind int // opPush, opDrain, opCheckpoint, opCrash, opRestart
	part int
	ev   wev
	frag int
}

const (
	opPush = iota
	opDrain
	opCheckpoint
	opCrash
	opRestart
)

type winCase struct {
	size, slide, delay, lateness time.Duration
	partitions, fragments, batch int
	layout                       windowLayout
	gap                          time.Duration // > 0: session windows of this gap (size: the span late events reach back)
	ttl                          time.Duration // > 0: tables with this state TTL
	ops                          []wop
	crashAtEnd                   int // -1: none; else a fragment crashed once the input closed, before its last drain
	restartAtEnd                 bool
}

// drawWinCase draws a case whose every event meets the same fate — on
// time, a late refinement of some of its windows, too late — however the
// input is batched, replayed or interleaved: an event that moves its
// partition's watermark comes within the out-of-orderness of its
// partition's newest event (it can be late for no window), and events
// behind the watermark come only on partition 0, only while partition 0
// holds the watermark at the value the last checkpoint saw (partition 0
// has not moved since and is the slowest), so that a replay from that
// checkpoint judges them by the same watermark as the first run.
func drawWinCase(t *rapid.T, sessions, ttl bool) winCase {
	sec := func(lo, hi int, name string) time.Duration {
		return time.Duration(rapid.IntRange(lo, hi).Draw(t, name)) * time.Second
	}
	c := winCase{slide: sec(1, 7, "slide"), delay: sec(0, 5, "delay"), lateness: sec(0, 12, "lateness"),
		partitions: rapid.IntRange(1, 3).Draw(t, "partitions"), fragments: rapid.IntRange(1, 4).Draw(t, "fragments"),
		batch: rapid.IntRange(1, 25).Draw(t, "batch"), crashAtEnd: -1,
		layout: windowLayout(rapid.IntRange(int(perWindow), int(runningTotal)).Draw(t, "layout"))}
	c.size = c.slide * time.Duration(rapid.IntRange(1, 5).Draw(t, "slides"))
	switch {
	case ttl:
		c.ttl = sec(1, 30, "ttl")
		c.size, c.slide, c.lateness = c.ttl, c.ttl, 0
	case sessions:
		c.gap = sec(1, 15, "gap")
		c.size, c.slide = c.gap, c.gap
	case rapid.Bool().Draw(t, "ragged") && c.slide > time.Second:
		c.size += sec(1, int(c.slide/time.Second)-1, "extra") // size not a multiple of slide
	}
	origin := rapid.SampledFrom([]int64{0, -3600, 1_767_225_600}).Draw(t, "origin") // 1970, before it, 2026
	origin += int64(rapid.IntRange(-30, 30).Draw(t, "shift"))
	// Many keys (more than a block of rows) and a hot one.
	nkeys := rapid.SampledFrom([]int{1, 3, 40, 300}).Draw(t, "keys")
	hot := rapid.Float64Range(0, 0.9).Draw(t, "hot")

	clock := make([]time.Time, c.partitions)
	maxTS := make([]int64, c.partitions)
	for p := range clock {
		clock[p] = time.Unix(origin, 0)
		if p > 0 {
			clock[p] = clock[p].Add(sec(0, 40, "lead")) // partition 0 holds the watermark more often
		}
		maxTS[p] = flowcore.NoWatermark
	}
	wm := func() int64 {
		low := int64(math.MaxInt64)
		for _, m := range maxTS {
			if m == flowcore.NoWatermark {
				return flowcore.NoWatermark
			}
			low = min(low, m-int64(c.delay))
		}
		return low
	}
	// What the last checkpoint saw, and whether partition 0 moved since.
	cpWM, p0Moved := int64(flowcore.NoWatermark), true
	w := int64(0)
	key := func(p int) string {
		w++
		prefix := ""
		if c.ttl > 0 {
			prefix = fmt.Sprintf("p%d.", p) // a key's events all come on one partition
		}
		if rapid.Float64Range(0, 1).Draw(t, "coin") < hot {
			return prefix + "hot"
		}
		return fmt.Sprintf("%sk%d", prefix, rapid.IntRange(0, nkeys-1).Draw(t, "key"))
	}
	for range rapid.IntRange(1, 40).Draw(t, "steps") {
		// Partition 0 holds the watermark: a checkpoint now lets events
		// behind it come.
		lateOK := maxTS[0] != flowcore.NoWatermark && wm() == maxTS[0]-int64(c.delay)
		switch k := rapid.IntRange(0, 9).Draw(t, "step"); {
		case k <= 3 || (k <= 5 && !lateOK): // on time
			for range rapid.IntRange(1, 12).Draw(t, "n") {
				p := rapid.IntRange(0, c.partitions-1).Draw(t, "part")
				clock[p] = clock[p].Add(time.Duration(rapid.Int64Range(0, int64(4*time.Second)).Draw(t, "advance")))
				at := clock[p].Add(-time.Duration(rapid.Int64Range(0, int64(c.delay)).Draw(t, "jitter")))
				ts := at.UnixNano()
				if ts > maxTS[p] {
					maxTS[p] = ts
					if p == 0 {
						p0Moved = true
					}
				}
				c.ops = append(c.ops, wop{kind: opPush, part: p, ev: wev{Key: key(p), At: at, W: w}})
			}
		case k <= 5 && lateOK: // behind the watermark, on partition 0
			if p0Moved || cpWM != wm() {
				c.ops = append(c.ops, wop{kind: opCheckpoint})
				cpWM, p0Moved = wm(), false
			}
			for range rapid.IntRange(1, 8).Draw(t, "n") {
				// Mostly within a window and its lateness behind the
				// watermark, some beyond, some not behind it.
				lo, hi := c.delay, c.delay+c.size+c.lateness // late for some window, within its lateness
				switch rapid.IntRange(0, 3).Draw(t, "how late") {
				case 0:
					lo, hi = 0, c.delay // not behind the watermark
				case 1:
					lo, hi = hi-c.slide, hi+5*time.Second // too late for some windows or all
				}
				if c.ttl > 0 {
					// Not so late that the watermark passed the event's
					// time plus the TTL: TestStateTTLLateEventBehindExpiry
					// shows what tables do with those.
					lo, hi = min(lo, c.delay+c.ttl-1), min(hi, c.delay+c.ttl-1)
				}
				lag := time.Duration(rapid.Int64Range(int64(lo), int64(hi)).Draw(t, "lag"))
				if rapid.Bool().Draw(t, "on boundary") {
					lag = lag.Truncate(c.slide) // events exactly at window starts and ends
				}
				at := time.Unix(0, maxTS[0]).Add(-lag)
				c.ops = append(c.ops, wop{kind: opPush, part: 0, ev: wev{Key: key(0), At: at, W: w}})
			}
		case k == 6:
			c.ops = append(c.ops, wop{kind: opDrain})
		case k == 7:
			c.ops = append(c.ops, wop{kind: opCheckpoint})
			cpWM, p0Moved = wm(), false
		case k == 8:
			c.ops = append(c.ops, wop{kind: opCrash, frag: rapid.IntRange(0, c.fragments-1).Draw(t, "frag")})
		case k == 9:
			c.ops = append(c.ops, wop{kind: opRestart})
		}
	}
	if rapid.Bool().Draw(t, "crash at end") {
		c.crashAtEnd = rapid.IntRange(0, c.fragments-1).Draw(t, "end frag")
	}
	c.restartAtEnd = rapid.Bool().Draw(t, "restart at end")
	return c
}

// refWindows runs the windows sequentially, one event at a time, each
// judged by the watermark of the events pushed before it (the smallest
// over the partitions of the newest event less the out-of-orderness):
// every result ("key start end value firing") and every too-late event.
func refWindows(c winCase) (results, tooLate []string) {
	size, slide, late := int64(c.size), int64(c.slide), int64(c.lateness)
	type win struct {
		key   string
		start int64
	}
	type st struct {
		acc   wstats
		fired bool
	}
	state := map[win]*st{}
	maxTS := make([]int64, c.partitions)
	for p := range maxTS {
		maxTS[p] = flowcore.NoWatermark
	}
	wm := int64(flowcore.NoWatermark)
	emit := func(w win, s *st, f flows.Firing) {
		results = append(results, fmt.Sprintf("%s %d %d %v %v", w.key, w.start, w.start+size, s.acc, f))
	}
	advance := func(to int64) {
		wm = max(wm, to)
		for w, s := range state {
			if !s.fired && w.start+size <= wm {
				s.fired = true
				emit(w, s, flows.OnTime)
			}
			if w.start+size+late <= wm {
				delete(state, w)
			}
		}
	}
	for _, o := range c.ops {
		if o.kind != opPush {
			continue
		}
		e := o.ev
		ts := e.At.UnixNano()
		placed := false
		for s := ts - mod(ts, slide); s > ts-size; s -= slide {
			end := s + size
			if wm != flowcore.NoWatermark && end+late <= wm {
				continue
			}
			placed = true
			w := win{e.Key, s}
			x := state[w]
			if x == nil {
				x = &st{}
				state[w] = x
			}
			x.acc = addW(x.acc, e)
			if x.fired || (wm != flowcore.NoWatermark && end <= wm) {
				x.fired = true
				emit(w, x, flows.Late)
			}
		}
		if !placed {
			tooLate = append(tooLate, fmt.Sprintf("%s %d %d", e.Key, ts, e.W))
		}
		maxTS[o.part] = max(maxTS[o.part], ts)
		if low := refWatermark(maxTS, c.delay); low != flowcore.NoWatermark {
			advance(low)
		}
	}
	advance(math.MaxInt64) // the end of the input completes event time
	slices.Sort(results)
	slices.Sort(tooLate)
	return results, tooLate
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

// idValues checks that a sink had every output id with one value only,
// and returns the values, one per id, sorted.
func idValues[T any](t interface{ Fatalf(string, ...any) }, what string, outs []flows.Output[T], format func(T) string) []string {
	seen := map[flows.OutputID]string{}
	var vals []string
	for _, o := range outs {
		v := format(o.Value)
		if prev, ok := seen[o.ID]; ok {
			if prev != v {
				t.Fatalf("%s: output %v delivered as %q, then %q", what, o.ID, prev, v)
			}
			continue
		}
		seen[o.ID] = v
		vals = append(vals, v)
	}
	slices.Sort(vals)
	return vals
}

func runWinCase(t *rapid.T, c winCase) {
	in := flowstest.NewInput[wev](c.partitions)
	f := flows.New("winref", flows.WithFragments(c.fragments))
	ks := flows.KeyBy(flows.From(f, "events", in, flows.WithEventTime(func(e wev) time.Time { return e.At }, c.delay)),
		func(e wev) string { return e.Key })
	ws := flows.Sliding(c.size, c.slide)
	opt := flows.AllowedLateness(c.lateness)
	var w flows.Windowed[string, wev, wstats]
	switch {
	case c.gap > 0:
		w = flows.SessionAggregate(ks, c.gap, noW, addW, mergeW, opt)
	case c.layout == perWindow:
		w = flows.WindowAggregate(ks, ws, noW, addW, opt)
	case c.layout == sliced:
		w = flows.WindowAggregateMerge(ks, ws, noW, addW, mergeW, opt)
	default:
		w = flows.WindowAggregateInvertible(ks, ws, noW, addW, mergeW, subW, opt)
	}
	committed := flowstest.Collect(w.Results(), flows.OnCheckpoint())
	atOnce := flowstest.Collect(w.Results())
	committedLate := flowstest.Collect(w.TooLate(), flows.OnCheckpoint())
	d, err := flowstest.New(f, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.BatchSize = c.batch
	must(t, runOps(d, in, c.ops))
	must(t, c.end(d, in.Close))

	format := func(r flows.WindowResult[string, wstats]) string {
		return fmt.Sprintf("%s %d %d %v %v", r.Key, r.Start.UnixNano(), r.End.UnixNano(), r.Value, r.Firing)
	}
	wantResults, wantLate := refWindows(c)
	if c.gap > 0 {
		wantResults, wantLate = refSessions(c)
	}
	got := idValues(t, "committed results", committed.Outputs(), format)
	if !slices.Equal(got, wantResults) {
		t.Fatalf("committed results differ from the reference:\n%s", diffLines(got, wantResults))
	}
	if got := idValues(t, "results", atOnce.Outputs(), format); !slices.Equal(got, wantResults) {
		t.Fatalf("results (at once) differ from the reference:\n%s", diffLines(got, wantResults))
	}
	gotLate := idValues(t, "too late", committedLate.Outputs(), func(e wev) string {
		return fmt.Sprintf("%s %d %d", e.Key, e.At.UnixNano(), e.W)
	})
	if !slices.Equal(gotLate, wantLate) {
		t.Fatalf("too-late events differ from the reference:\n%s", diffLines(gotLate, wantLate))
	}
}

// diffLines lists the lines only one of two sorted lists holds.
func diffLines(got, want []string) string {
	var out []string
	i, j := 0, 0
	for i < len(got) || j < len(want) {
		switch {
		case j == len(want) || (i < len(got) && got[i] < want[j]):
			out = append(out, "+ "+got[i])
			i++
		case i == len(got) || want[j] < got[i]:
			out = append(out, "- "+want[j])
			j++
		default:
			i++
			j++
		}
	}
	if len(out) > 30 {
		out = append(out[:30], fmt.Sprintf("... (%d more)", len(out)-30))
	}
	return fmt.Sprintf("%d got, %d want; + only got, - only want:\n%s", len(got), len(want), joinLines(out))
}

func joinLines(ls []string) string {
	s := ""
	for _, l := range ls {
		s += l + "\n"
	}
	return s
}

// Tumbling and sliding windows (sizes a multiple of the slide or not), in
// each of their three layouts, over several partitions and fragments,
// many keys and a hot one, times before and after 1970 and events on
// window boundaries, emit exactly what a sequential reference emits —
// every on-time result, every late refinement, every too-late event, one
// value per output id — whatever the batches, checkpoints, crashes and
// restarts, including right as the input ends.
func TestWindowsEqualSequentialReference(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		runWinCase(t, drawWinCase(t, false, false))
	})
}

// refSessions runs session windows sequentially, one event at a time,
// each judged by the watermark of the events pushed before it: every
// result and every too-late event.
func refSessions(c winCase) (results, tooLate []string) {
	gap, late := int64(c.gap), int64(c.lateness)
	type sess struct {
		start, end int64
		acc        wstats
		fired      bool
	}
	state := map[string][]sess{}
	maxTS := make([]int64, c.partitions)
	for p := range maxTS {
		maxTS[p] = flowcore.NoWatermark
	}
	wm := int64(flowcore.NoWatermark)
	emit := func(k string, s sess, f flows.Firing) {
		results = append(results, fmt.Sprintf("%s %d %d %v %v", k, s.start, s.end, s.acc, f))
	}
	advance := func(to int64) {
		wm = max(wm, to)
		for k, ss := range state {
			var keep []sess
			for _, s := range ss {
				if !s.fired && s.end <= wm {
					s.fired = true
					emit(k, s, flows.OnTime)
				}
				if s.end+late > wm {
					keep = append(keep, s)
				}
			}
			state[k] = keep
		}
	}
	for _, o := range c.ops {
		if o.kind != opPush {
			continue
		}
		e := o.ev
		ts := e.At.UnixNano()
		if wm != flowcore.NoWatermark && ts+gap+late <= wm {
			tooLate = append(tooLate, fmt.Sprintf("%s %d %d", e.Key, ts, e.W))
		} else {
			n := sess{start: ts, end: ts + gap, acc: addW(wstats{}, e)}
			var keep []sess
			for _, s := range state[e.Key] {
				if s.start < n.end && n.start < s.end {
					n.start, n.end, n.acc = min(n.start, s.start), max(n.end, s.end), mergeW(n.acc, s.acc)
					continue
				}
				keep = append(keep, s)
			}
			n.fired = wm != flowcore.NoWatermark && n.end <= wm
			if n.fired {
				emit(e.Key, n, flows.Late)
			}
			state[e.Key] = append(keep, n)
		}
		maxTS[o.part] = max(maxTS[o.part], ts)
		if low := refWatermark(maxTS, c.delay); low != flowcore.NoWatermark {
			advance(low)
		}
	}
	advance(math.MaxInt64)
	slices.Sort(results)
	slices.Sort(tooLate)
	return results, tooLate
}

// Session windows over several partitions and fragments, many keys and a
// hot one, late events that bridge sessions (fired or not) and too-late
// ones, emit exactly what a sequential reference emits, one value per
// output id, whatever the batches, checkpoints, crashes and restarts,
// including right as the input ends.
func TestSessionsEqualSequentialReference(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		runWinCase(t, drawWinCase(t, true, false))
	})
}

// ttlRow is a key's state in refTables.
type ttlRow struct {
	n    int64
	agg  wstats
	red  string // Reduce: the weights, joined
	last int64
}

// rw is what the Reduce of TestStateTTLTablesEqualSequentialReference
// folds: a key and weights joined in order.
type rw struct{ Key, Ws string }

func joinRW(acc, v rw) rw { return rw{acc.Key, acc.Ws + "," + v.Ws} }

// refTables runs Count, Aggregate and Reduce with a state TTL
// sequentially, each event judged by the watermark of the events pushed
// before it: a key's state expires once the watermark passes its last
// event by the TTL, and an event the TTL after its key's last one starts
// from no state. It returns every update ("key value") of each table, and
// the keys left in each before the input ends.
func refTables(c winCase) (updates [3][]string, left [3][]string) {
	ttl := int64(c.ttl)
	state := map[string]*ttlRow{}
	maxTS := make([]int64, c.partitions)
	for p := range maxTS {
		maxTS[p] = flowcore.NoWatermark
	}
	for _, o := range c.ops {
		if o.kind != opPush {
			continue
		}
		e := o.ev
		ts := e.At.UnixNano()
		r := state[e.Key]
		if r != nil && ts >= r.last+ttl {
			r = nil
		}
		if r == nil {
			r = &ttlRow{last: ts, red: fmt.Sprint(e.W)}
			state[e.Key] = r
		} else {
			r.red += "," + fmt.Sprint(e.W)
		}
		r.n++
		r.agg = addW(r.agg, e)
		r.last = max(r.last, ts)
		updates[0] = append(updates[0], fmt.Sprintf("%s %d", e.Key, r.n))
		updates[1] = append(updates[1], fmt.Sprintf("%s %v", e.Key, r.agg))
		updates[2] = append(updates[2], fmt.Sprintf("%s %s", e.Key, r.red))
		maxTS[o.part] = max(maxTS[o.part], ts)
		wm := int64(math.MaxInt64)
		for _, m := range maxTS {
			wm = min(wm, m-int64(c.delay))
			if m == flowcore.NoWatermark {
				wm = flowcore.NoWatermark
				break
			}
		}
		for k, r := range state {
			if wm != flowcore.NoWatermark && r.last+ttl <= wm {
				delete(state, k)
			}
		}
	}
	for k, r := range state {
		left[0] = append(left[0], fmt.Sprintf("%s %d", k, r.n))
		left[1] = append(left[1], fmt.Sprintf("%s %v", k, r.agg))
		left[2] = append(left[2], fmt.Sprintf("%s %s", k, r.red))
	}
	for i := range 3 {
		slices.Sort(updates[i])
		slices.Sort(left[i])
	}
	return updates, left
}

// Count, Aggregate and Reduce with a state TTL, over several partitions
// (a key's events on one), many keys and a hot one, keys that expire and
// come back, events behind the watermark (whose key the watermark may
// have expired, or not), times before and after 1970: their views before
// the input ends and every update their OnCheckpoint sinks get, one value
// per output id, are a sequential reference's, whatever the batches,
// checkpoints, crashes and restarts, including right as the input ends.
func TestStateTTLTablesEqualSequentialReference(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := drawWinCase(t, false, true)
		in := flowstest.NewInput[wev](c.partitions)
		f := flows.New("ttlref", flows.WithFragments(c.fragments))
		src := flows.From(f, "events", in, flows.WithEventTime(func(e wev) time.Time { return e.At }, c.delay))
		ks := flows.KeyBy(src, func(e wev) string { return e.Key })
		ttl := flows.WithStateTTL(c.ttl)
		count := flows.Count(ks, ttl).View("count")
		agg := flows.Aggregate(ks, noW, addW, ttl).View("agg")
		red := flows.Reduce(flows.KeyBy(flows.Map(src, func(e wev) rw { return rw{e.Key, fmt.Sprint(e.W)} }),
			func(r rw) string { return r.Key }), joinRW, ttl).View("reduce")
		sinks := [3]func() []string{}
		cs := flowstest.Collect(count.Updates(), flows.OnCheckpoint())
		as := flowstest.Collect(agg.Updates(), flows.OnCheckpoint())
		rs := flowstest.Collect(red.Updates(), flows.OnCheckpoint())
		sinks[0] = func() []string {
			return idValues(t, "count", cs.Outputs(), func(kv flows.KV[string, int64]) string { return fmt.Sprintf("%s %d", kv.Key, kv.Value) })
		}
		sinks[1] = func() []string {
			return idValues(t, "agg", as.Outputs(), func(kv flows.KV[string, wstats]) string { return fmt.Sprintf("%s %v", kv.Key, kv.Value) })
		}
		sinks[2] = func() []string {
			return idValues(t, "reduce", rs.Outputs(), func(kv flows.KV[string, rw]) string { return fmt.Sprintf("%s %s", kv.Key, kv.Value.Ws) })
		}
		d, err := flowstest.New(f, time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		d.BatchSize = c.batch
		must(t, runOps(d, in, c.ops))
		must(t, d.Drain())
		wantUpdates, wantLeft := refTables(c)
		for i, view := range []string{"count", "agg", "reduce"} {
			es, err := d.Entries(view, splice.Query{})
			must(t, err)
			var got []string
			for _, e := range es {
				v := e.Value
				if r, ok := v.(rw); ok {
					v = r.Ws
				}
				got = append(got, fmt.Sprintf("%s %v", e.Key, v))
			}
			slices.Sort(got)
			if !slices.Equal(got, wantLeft[i]) {
				t.Fatalf("view %s before the end differs from the reference:\n%s", view, diffLines(got, wantLeft[i]))
			}
		}
		must(t, c.end(d, in.Close))
		for i, view := range []string{"count", "agg", "reduce"} {
			if got := sinks[i](); !slices.Equal(got, wantUpdates[i]) {
				t.Fatalf("%s updates differ from the reference:\n%s", view, diffLines(got, wantUpdates[i]))
			}
			if es, err := d.Entries(view, splice.Query{}); err != nil || len(es) != 0 {
				t.Fatalf("view %s after the end of the input holds %v, %v; every key expired", view, es, err)
			}
		}
	})
}

// runOps runs ops against d, pushing to in.
func runOps(d *flowstest.Driver, in *flowstest.Input[wev], ops []wop) error {
	for _, o := range ops {
		var err error
		switch o.kind {
		case opPush:
			in.Push(o.part, o.ev)
		case opDrain:
			err = d.Drain()
		case opCheckpoint:
			if err = d.Drain(); err == nil {
				err = d.Checkpoint()
			}
		case opCrash:
			err = d.Crash(o.frag)
		case opRestart:
			err = d.Restart()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// refWatermark is the references' watermark: the least partition's
// largest event time less the delay, none before every partition has one.
func refWatermark(maxTS []int64, delay time.Duration) int64 {
	low := int64(math.MaxInt64)
	for _, m := range maxTS {
		if m == flowcore.NoWatermark {
			return flowcore.NoWatermark
		}
		low = min(low, m-int64(delay))
	}
	return low
}

// end closes the input (closeInput) and runs the case's end: a fragment
// crashed before the last drain, a restart after it, and the settling
// with a checkpoint between.
func (c winCase) end(d *flowstest.Driver, closeInput func()) error {
	closeInput()
	if c.crashAtEnd >= 0 {
		if err := d.Crash(c.crashAtEnd); err != nil {
			return err
		}
	}
	if err := d.Drain(); err != nil {
		return err
	}
	if c.restartAtEnd {
		if err := d.Restart(); err != nil {
			return err
		}
	}
	for _, step := range []func() error{d.Settle, d.Checkpoint, d.Settle} {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}
