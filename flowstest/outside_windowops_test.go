package flowstest_test

// Window operators used as an outside user would use them: flows unlike
// the repository's examples, each checked against a plain Go model worked
// out from the events alone (which windows an event belongs to, what the
// watermark makes late or too late), as the flows package documents them.

import (
	"context"
	"errors"
	"fmt"
	"maps"
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

// owEv is an event of these tests: a key, a time and a weight.
type owEv struct {
	Key string
	At  time.Time
	W   int64
}

func owSum(n int64, e owEv) int64 { return n + e.W }
func owZero() int64               { return 0 }

// owT0 is where the tests' event time starts: a Monday at midnight.
var owT0 = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)

func owAt(d time.Duration) time.Time { return owT0.Add(d) }

// owEnd ends the input (closeInput), perhaps crashes a fragment right at
// the end and restarts the whole flow after it has read the end, and
// settles: every output is made and every checkpoint taken.
func owEnd(t *rapid.T, d *flowstest.Driver, closeInput func(), fragments int) {
	closeInput()
	if rapid.Bool().Draw(t, "crash at end") {
		must(t, d.Crash(rapid.IntRange(0, fragments-1).Draw(t, "end frag")))
	}
	must(t, d.Drain())
	if rapid.Bool().Draw(t, "restart at end") {
		must(t, d.Restart())
	}
	must(t, d.Settle())
	must(t, d.Checkpoint())
	must(t, d.Settle())
}

// owResult prints a window result as the models do.
func owResult[V any](r flows.WindowResult[string, V]) string {
	return fmt.Sprintf("%s %s..%s %v %v", r.Key, r.Start.Sub(owT0), r.End.Sub(owT0), r.Value, r.Firing)
}

// ---------------------------------------------------------------------------
// Windows of windows: hourly sums per key summed again per key in
// two-hour windows (tumbling, or sliding by the hour), in the same
// fragment (ByKey, no shuffle) or through an exchange (Results re-keyed).
// Each hourly result is an event at its window's last instant, emitted as
// the watermark passes the hour's end: no later than any two-hour window
// over it closes. So every two-hour window fires once, on time, with the
// sums of its hours, and no hourly result is too late — whether the
// watermark moves hour by hour or the end of the input fires everything
// at once.
func TestOutsideWindowsOfWindows(t *testing.T) {
	for _, via := range []string{"ByKey", "exchange"} {
		for _, slide := range []time.Duration{2 * time.Hour, time.Hour} {
			for _, stepwise := range []bool{true, false} {
				t.Run(fmt.Sprintf("%s/slide=%v/stepwise=%v", via, slide, stepwise), func(t *testing.T) {
					windowsOfWindows(t, via, slide, stepwise)
				})
			}
		}
	}
}

// owHourly is a flow of hourly sums per key, and their results keyed by
// key again: in the same fragment (via "ByKey") or through an exchange.
func owHourly(name, via string) (*flows.Flow, *flowstest.Input[owEv], flows.KeyedStream[string, flows.WindowResult[string, int64]]) {
	in := flowstest.NewInput[owEv](1)
	f := flows.New(name, flows.WithFragments(2))
	ks := flows.KeyBy(flows.From(f, "events", in, flows.WithEventTime(func(e owEv) time.Time { return e.At }, 0)),
		func(e owEv) string { return e.Key })
	hourly := flows.WindowAggregate(ks, flows.Tumbling(time.Hour), owZero, owSum)
	byKey := hourly.ByKey()
	if via == "exchange" {
		byKey = flows.KeyBy(hourly.Results(), func(r flows.WindowResult[string, int64]) string { return r.Key })
	}
	return f, in, byKey
}

func windowsOfWindows(t *testing.T, via string, slide time.Duration, stepwise bool) {
	f, in, byKey := owHourly("winwin", via)
	twoHours := flows.WindowAggregate(byKey, flows.Sliding(2*time.Hour, slide), owZero,
		func(n int64, r flows.WindowResult[string, int64]) int64 { return n + r.Value })
	got := flowstest.Collect(twoHours.Results())
	late := flowstest.Collect(twoHours.TooLate())
	d := startDriver(t, f, time.Unix(0, 0))
	defer d.Close()
	evs := []owEv{{"a", owAt(10 * time.Minute), 1}, {"b", owAt(20 * time.Minute), 16}, {"a", owAt(70 * time.Minute), 2},
		{"a", owAt(130 * time.Minute), 4}, {"b", owAt(200 * time.Minute), 32}, {"a", owAt(250 * time.Minute), 8}}
	for _, e := range evs {
		in.Push(0, e)
		if stepwise {
			must(t, d.Settle())
		}
	}
	in.Close()
	must(t, d.Settle())

	// The model: hourly sums, each an event at its hour's last instant,
	// in every two-hour window over that instant.
	hours := map[string]map[int64]int64{}
	for _, e := range evs {
		h := e.At.Sub(owT0).Truncate(time.Hour)
		if hours[e.Key] == nil {
			hours[e.Key] = map[int64]int64{}
		}
		hours[e.Key][int64(h)] += e.W
	}
	wins := map[string]int64{}
	for k, hs := range hours {
		for h, sum := range hs {
			at := h + int64(time.Hour) - 1
			for s := at - at%int64(slide); s > at-int64(2*time.Hour); s -= int64(slide) {
				wins[fmt.Sprintf("%s %s..%s", k, time.Duration(s), time.Duration(s)+2*time.Hour)] += sum
			}
		}
	}
	var want []string
	for w, sum := range wins {
		want = append(want, fmt.Sprintf("%s %d on-time", w, sum))
	}
	owCheckResults(t, "two-hour windows", got.Values(), want, late.Values())
}

// owCheckResults compares the results of windows over hourly sums with
// want, and requires that no hourly sum was too late for them.
func owCheckResults(t *testing.T, what string, got []flows.WindowResult[string, int64], want []string, late []flows.WindowResult[string, int64]) {
	t.Helper()
	var gotS []string
	for _, r := range got {
		gotS = append(gotS, owResult(r))
	}
	slices.Sort(gotS)
	slices.Sort(want)
	if !slices.Equal(gotS, want) {
		t.Errorf("%s of hourly sums differ from the model:\n%s", what, diffLines(gotS, want))
	}
	if len(late) != 0 {
		var ls []string
		for _, r := range late {
			ls = append(ls, owResult(r))
		}
		t.Errorf("%d hourly results too late for the %s: %q", len(ls), what, ls)
	}
}

// ---------------------------------------------------------------------------
// Count triggers on sliding windows (FireEvery: each window keeps its own
// count, and an event counts in every window over it), with allowed
// lateness: a window emits an Early result at every n-th event it takes
// before the watermark closes it, its OnTime result when the watermark
// passes its end, and a Late refinement for each event within the
// lateness after; events too late for every window go to TooLate. Sizes
// that are not a multiple of the slide, events on window boundaries,
// several fragments, random batches, checkpoints, crashes and restarts
// (including right at the end of the input): every sink holds each
// output id once with one value, and the values equal a sequential model.
// Events behind the watermark come only right after a checkpoint at that
// watermark, so that a replay judges them by the same watermark.
func TestOutsideCountTriggeredSlidingWindows(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		sec := func(lo, hi int, name string) time.Duration {
			return time.Duration(rapid.IntRange(lo, hi).Draw(t, name)) * time.Second
		}
		slide := sec(1, 6, "slide")
		size := slide * time.Duration(rapid.IntRange(1, 4).Draw(t, "slides"))
		if slide > time.Second && rapid.Bool().Draw(t, "ragged") {
			size += sec(1, int(slide/time.Second)-1, "extra")
		}
		every := rapid.IntRange(1, 4).Draw(t, "every")
		delay, lateness := sec(0, 4, "delay"), sec(0, 8, "lateness")
		fragments := rapid.IntRange(1, 3).Draw(t, "fragments")
		keys := rapid.SampledFrom([]int{1, 2, 5}).Draw(t, "keys")

		in := flowstest.NewInput[owEv](1)
		f := flows.New("fireevery", flows.WithFragments(fragments))
		ks := flows.KeyBy(flows.From(f, "events", in, flows.WithEventTime(func(e owEv) time.Time { return e.At }, delay)),
			func(e owEv) string { return e.Key })
		w := flows.WindowAggregate(ks, flows.Sliding(size, slide), noW,
			func(s wstats, e owEv) wstats { return addW(s, wev(e)) },
			flows.FireEvery(every), flows.AllowedLateness(lateness))
		committed := flowstest.Collect(w.Results(), flows.OnCheckpoint())
		atOnce := flowstest.Collect(w.Results())
		tooLate := flowstest.Collect(w.TooLate(), flows.OnCheckpoint())
		d := startDriver(t, f, time.Unix(0, 0))
		defer d.Close()
		d.BatchSize = rapid.IntRange(1, 12).Draw(t, "batch")

		var evs []owEv
		maxTS, cpWM := int64(math.MinInt64), int64(math.MinInt64)
		clock := owT0.Add(sec(-20, 20, "origin"))
		for range rapid.IntRange(1, 25).Draw(t, "steps") {
			wm := maxTS - int64(delay)
			switch k := rapid.IntRange(0, 9).Draw(t, "step"); {
			case k <= 4 || maxTS == math.MinInt64: // within the out-of-orderness of the newest event
				for range rapid.IntRange(1, 6).Draw(t, "n") {
					clock = clock.Add(time.Duration(rapid.Int64Range(0, int64(3*time.Second)).Draw(t, "advance")))
					at := clock.Add(-time.Duration(rapid.Int64Range(0, int64(delay)).Draw(t, "jitter")))
					if rapid.Bool().Draw(t, "whole second") {
						at = at.Truncate(time.Second) // window boundaries
						if at.UnixNano() < wm {
							at = at.Add(time.Second)
						}
						if at.After(clock) {
							clock = at
						}
					}
					e := owEv{fmt.Sprintf("k%d", rapid.IntRange(0, keys-1).Draw(t, "key")), at, int64(len(evs) + 1)}
					evs = append(evs, e)
					in.Push(0, e)
					maxTS = max(maxTS, at.UnixNano())
				}
			case k <= 6: // behind the watermark, right after a checkpoint at it
				must(t, d.Drain())
				if cpWM != wm {
					must(t, d.Checkpoint())
					cpWM = wm
				}
				for range rapid.IntRange(1, 4).Draw(t, "n") {
					lag := time.Duration(rapid.Int64Range(0, int64(size+lateness+2*slide)).Draw(t, "lag"))
					if rapid.Bool().Draw(t, "on boundary") {
						lag = lag.Truncate(slide)
					}
					e := owEv{fmt.Sprintf("k%d", rapid.IntRange(0, keys-1).Draw(t, "key")), time.Unix(0, wm).Add(-lag), int64(len(evs) + 1)}
					evs = append(evs, e)
					in.Push(0, e)
				}
			case k == 7:
				must(t, d.Drain())
				must(t, d.Checkpoint())
				cpWM = wm
			case k == 8:
				must(t, d.Crash(rapid.IntRange(0, fragments-1).Draw(t, "frag")))
			case k == 9:
				must(t, d.Restart())
			}
		}
		owEnd(t, d, in.Close, fragments)

		wantResults, wantLate := owCountTriggerModel(evs, size, slide, delay, lateness, every)
		format := func(r flows.WindowResult[string, wstats]) string {
			return fmt.Sprintf("%s %d %d %v %v", r.Key, r.Start.UnixNano(), r.End.UnixNano(), r.Value, r.Firing)
		}
		if got := idValues(t, "committed results", committed.Outputs(), format); !slices.Equal(got, wantResults) {
			t.Fatalf("committed results differ from the model:\n%s", diffLines(got, wantResults))
		}
		if got := idValues(t, "results at once", atOnce.Outputs(), format); !slices.Equal(got, wantResults) {
			t.Fatalf("results at once differ from the model:\n%s", diffLines(got, wantResults))
		}
		gotLate := idValues(t, "too late", tooLate.Outputs(), func(e owEv) string { return fmt.Sprintf("%s %d %d", e.Key, e.At.UnixNano(), e.W) })
		if !slices.Equal(gotLate, wantLate) {
			t.Fatalf("too-late events differ from the model:\n%s", diffLines(gotLate, wantLate))
		}
	})
}

// owCountTriggerModel runs sliding windows with a count trigger over one
// partition's events in order, each judged by the watermark of the
// events before it (the newest time less the delay).
func owCountTriggerModel(evs []owEv, size, slide, delay, lateness time.Duration, every int) (results, tooLate []string) {
	type win struct {
		key   string
		start int64
	}
	type st struct {
		acc   wstats
		n     int
		fired bool
	}
	sz, sl, late := int64(size), int64(slide), int64(lateness)
	state := map[win]*st{}
	emit := func(w win, s *st, f flows.Firing) {
		results = append(results, fmt.Sprintf("%s %d %d %v %v", w.key, w.start, w.start+sz, s.acc, f))
	}
	wm, maxTS := int64(math.MinInt64), int64(math.MinInt64)
	for _, e := range evs {
		ts := e.At.UnixNano()
		placed := false
		for s := ts - mod(ts, sl); s > ts-sz; s -= sl {
			if wm != math.MinInt64 && s+sz+late <= wm {
				continue
			}
			placed = true
			w := win{e.Key, s}
			x := state[w]
			if x == nil {
				x = &st{}
				state[w] = x
			}
			x.acc = addW(x.acc, wev{W: e.W})
			x.n++
			if x.fired || (wm != math.MinInt64 && s+sz <= wm) {
				x.fired = true
				emit(w, x, flows.Late)
				continue
			}
			if x.n >= every {
				x.n = 0
				emit(w, x, flows.Early)
			}
		}
		if !placed {
			tooLate = append(tooLate, fmt.Sprintf("%s %d %d", e.Key, ts, e.W))
		}
		maxTS = max(maxTS, ts)
		wm = maxTS - int64(delay)
		for w, x := range state {
			if !x.fired && w.start+sz <= wm {
				x.fired = true
				emit(w, x, flows.OnTime)
			}
			if w.start+sz+late <= wm {
				delete(state, w)
			}
		}
	}
	for w, x := range state { // the end of the input fires the rest
		if !x.fired {
			emit(w, x, flows.OnTime)
		}
	}
	slices.Sort(results)
	slices.Sort(tooLate)
	return results, tooLate
}

// ---------------------------------------------------------------------------
// A keyed window view and a window view over two partitions, one of which
// has no event at first and goes idle (WithIdleTimeout), then has events
// again — behind the watermark the other partition made (a late
// refinement and a too-late event) and ahead of it — while windows fire,
// are refined, leave the operator after their lateness and the views after
// their retention. After every step (and a checkpoint, a crash or a
// restart between steps) the views answer what a model of the windows
// holds at the watermark the step leaves: every window with its keys and
// values, which are complete, the latest complete one (window=latest, for
// the view and for each key), and the per-window totals; the results and
// too-late events equal the model's once the input ends.
func TestOutsideWindowViewsWithIdlePartition(t *testing.T) {
	for _, fault := range []string{"none", "checkpoint", "crash", "restart"} {
		t.Run(fault, func(t *testing.T) { windowViewsWithIdlePartition(t, fault) })
	}
}

// owViewModel is tumbling windows with allowed lateness and views with
// a retention, driven by the events and the watermark.
type owViewModel struct {
	size, lateness, retain int64
	wm                     int64 // math.MinInt64: none yet
	wins                   map[int64]map[string]int64
	fired                  map[int64]bool
	results, tooLate       []string
}

func (m *owViewModel) add(e owEv) {
	ts := e.At.UnixNano()
	s := ts - mod(ts, m.size)
	if m.wm != math.MinInt64 && s+m.size+m.lateness <= m.wm {
		m.tooLate = append(m.tooLate, fmt.Sprintf("%s %s", e.Key, e.At.Sub(owT0)))
		return
	}
	if m.wins[s] == nil {
		m.wins[s] = map[string]int64{}
	}
	m.wins[s][e.Key] += e.W
	if m.wm != math.MinInt64 && s+m.size <= m.wm {
		m.results = append(m.results, m.result(s, e.Key, flows.Late))
	}
}

func (m *owViewModel) result(s int64, k string, f flows.Firing) string {
	return fmt.Sprintf("%s %s..%s %d %v", k, time.Duration(s-owT0.UnixNano()), time.Duration(s-owT0.UnixNano()+m.size), m.wins[s][k], f)
}

func (m *owViewModel) advance(wm int64) {
	m.wm = max(m.wm, wm)
	for s, keys := range m.wins {
		if s+m.size <= m.wm && !m.fired[s] {
			m.fired[s] = true
			for k := range keys {
				m.results = append(m.results, m.result(s, k, flows.OnTime))
			}
		}
	}
}

// held lists the windows the views hold: until the watermark passes
// their end by the retention or the lateness, whichever is longer; the
// end of the input (math.MaxInt64) keeps what is held then.
func (m *owViewModel) held(dropWM int64) []int64 {
	var out []int64
	for s := range m.wins {
		if dropWM == math.MinInt64 || s+m.size+max(m.retain, m.lateness) > dropWM {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// answer is what the keyed view shows of every window held, and of the
// latest complete one.
func (m *owViewModel) answer(dropWM int64) (all, latest string) {
	var b strings.Builder
	latest = "not found"
	for _, s := range m.held(dropWM) {
		complete := m.wm != math.MinInt64 && s+m.size <= m.wm
		fmt.Fprintf(&b, "%s complete=%v keys=%d:", time.Duration(s-owT0.UnixNano()), complete, len(m.wins[s]))
		keys := slices.Sorted(maps.Keys(m.wins[s]))
		for _, k := range keys {
			fmt.Fprintf(&b, " %s=%d", k, m.wins[s][k])
		}
		b.WriteString("\n")
		if complete {
			latest = fmt.Sprintf("%s:", time.Duration(s-owT0.UnixNano()))
			for _, k := range keys {
				latest += fmt.Sprintf(" %s=%d", k, m.wins[s][k])
			}
		}
	}
	return b.String(), latest
}

func owKeyedAnswer(res splice.Result, err error) (all, latest string) {
	if err != nil {
		if errors.Is(err, splice.ErrNotFound) {
			return "not found", "not found"
		}
		return "error: " + err.Error(), ""
	}
	var b strings.Builder
	for _, kw := range res.KeyedWindows {
		fmt.Fprintf(&b, "%s complete=%v keys=%d:", kw.Start.Sub(owT0), kw.Complete, kw.Keys)
		latest = fmt.Sprintf("%s:", kw.Start.Sub(owT0))
		for _, e := range kw.Entries {
			fmt.Fprintf(&b, " %s=%v", e.Key, e.Value)
			latest += fmt.Sprintf(" %s=%v", e.Key, e.Value)
		}
		b.WriteString("\n")
	}
	return b.String(), latest
}

func windowViewsWithIdlePartition(t *testing.T, fault string) {
	const size, lateness, retain, delay = 10 * time.Minute, 5 * time.Minute, 20 * time.Minute, time.Minute
	in := flowstest.NewInput[owEv](2)
	f := flows.New("idleviews", flows.WithFragments(3))
	src := flows.From(f, "events", in, flows.WithEventTime(func(e owEv) time.Time { return e.At }, delay),
		flows.WithIdleTimeout(30*time.Second))
	w := flows.WindowAggregate(flows.KeyBy(src, func(e owEv) string { return e.Key }), flows.Tumbling(size), owZero, owSum,
		flows.AllowedLateness(lateness)).KeyedView("v", retain)
	flows.WindowView(w, "total", splice.Sum[int64](), func(_ string, n int64) int64 { return n }, retain)
	results := flowstest.Collect(w.Results(), flows.OnCheckpoint())
	tooLate := flowstest.Collect(w.TooLate(), flows.OnCheckpoint())
	d := startDriver(t, f, time.Unix(0, 0))
	defer d.Close()

	m := &owViewModel{size: int64(size), lateness: int64(lateness), retain: int64(retain), wm: math.MinInt64,
		wins: map[int64]map[string]int64{}, fired: map[int64]bool{}}
	dropWM := int64(math.MinInt64)
	mins := func(n int) time.Duration { return time.Duration(n) * time.Minute }
	check := func(step string) {
		t.Helper()
		all := splice.Query{From: math.MinInt64, Limit: 1 << 20}
		wantAll, wantLatest := m.answer(dropWM)
		if got, _ := owKeyedAnswer(query(d, "v", all)); got != wantAll {
			t.Fatalf("%s: keyed view\n%s\nwant\n%s", step, got, wantAll)
		}
		if _, got := owKeyedAnswer(query(d, "v", splice.Query{Latest: true, Limit: 1 << 20})); got != wantLatest {
			t.Fatalf("%s: keyed view, window=latest: %s, want %s", step, got, wantLatest)
		}
		for _, k := range []string{"a", "b", "c", "d"} {
			want := "not found"
			if s, ok := m.latestComplete(); ok {
				if v, ok := m.wins[s][k]; ok {
					want = fmt.Sprintf("%s: %s=%d", time.Duration(s-owT0.UnixNano()), k, v)
				}
			}
			if _, got := owKeyedAnswer(queryKey(d, "v", k, splice.Query{Latest: true})); got != want {
				t.Fatalf("%s: key %s of the keyed view, window=latest: %s, want %s", step, k, got, want)
			}
		}
		res, err := splice.Evaluate(context.Background(), d, splice.Request{View: "total", Op: splice.OpWindows, Query: all})
		must(t, err)
		var got, want []string
		for _, w := range res.Windows {
			got = append(got, fmt.Sprintf("%s=%v complete=%v", w.Start.Sub(owT0), w.Value, w.Complete))
		}
		for _, s := range m.held(dropWM) {
			sum := int64(0)
			for _, v := range m.wins[s] {
				sum += v
			}
			want = append(want, fmt.Sprintf("%s=%d complete=%v", time.Duration(s-owT0.UnixNano()), sum, m.wm != math.MinInt64 && s+m.size <= m.wm))
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s: window view %q, want %q", step, got, want)
		}
	}
	push := func(p int, evs ...owEv) {
		in.Push(p, evs...)
		for _, e := range evs {
			m.add(e)
		}
	}
	settle := func(wm time.Duration) {
		t.Helper()
		must(t, d.Drain())
		m.advance(owT0.Add(wm).UnixNano())
		dropWM = m.wm
		switch fault {
		case "checkpoint":
			must(t, d.Checkpoint())
		case "crash": // the readers send the restored fragment what it lacks at the next drain
			must(t, d.Crash(1))
			must(t, d.Drain())
		case "restart":
			must(t, d.Checkpoint())
			must(t, d.Restart())
			must(t, d.Drain())
		}
	}

	// Partition 1 has no event: no watermark, no window complete.
	push(0, owEv{"a", owAt(mins(1)), 1}, owEv{"b", owAt(mins(4)), 2}, owEv{"c", owAt(mins(12)), 4}, owEv{"a", owAt(mins(18)), 8},
		owEv{"d", owAt(mins(25)), 16})
	must(t, d.Drain())
	check("partition 1 without events")
	// Idle: partition 0 alone makes the watermark (25m less the delay).
	must(t, d.Advance(31*time.Second))
	settle(mins(24))
	check("partition 1 idle")
	// Partition 1 again: late for [10m, 20m) (within the lateness), too
	// late for [0, 10m), on time for [20m, 30m). The watermark does not
	// fall back.
	push(1, owEv{"b", owAt(mins(15)), 32}, owEv{"c", owAt(mins(5)), 64}, owEv{"c", owAt(mins(26)), 128})
	settle(mins(24))
	check("partition 1 back")
	// Partition 0 moves on; partition 1 (26m less the delay) holds the
	// watermark: [10m, 20m) leaves the operator, the views keep it.
	push(0, owEv{"a", owAt(mins(40)), 256})
	settle(mins(25))
	check("partition 1 holds the watermark")
	push(1, owEv{"b", owAt(mins(52)), 512}, owEv{"d", owAt(mins(53)), 1024})
	settle(mins(39))
	check("partition 0 holds the watermark")
	push(0, owEv{"a", owAt(mins(71)), 2048})
	settle(mins(51))
	check("retention passed")
	in.Close()
	must(t, d.Settle())
	m.advance(math.MaxInt64)
	check("input ended")
	must(t, d.Checkpoint())
	must(t, d.Settle())

	gotResults := idValues(t, "results", results.Outputs(), owResult[int64])
	slices.Sort(m.results)
	if !slices.Equal(gotResults, m.results) {
		t.Fatalf("results differ from the model:\n%s", diffLines(gotResults, m.results))
	}
	gotLate := idValues(t, "too late", tooLate.Outputs(), func(e owEv) string { return fmt.Sprintf("%s %s", e.Key, e.At.Sub(owT0)) })
	slices.Sort(m.tooLate)
	if !slices.Equal(gotLate, m.tooLate) {
		t.Fatalf("too-late events differ from the model:\n%s", diffLines(gotLate, m.tooLate))
	}
}

// latestComplete is the latest window held that the watermark completed.
func (m *owViewModel) latestComplete() (int64, bool) {
	best, ok := int64(0), false
	for s := range m.wins {
		if m.wm != math.MinInt64 && s+m.size <= m.wm && (!ok || s > best) {
			best, ok = s, true
		}
	}
	return best, ok
}

// ---------------------------------------------------------------------------
// Sessions of window results: hourly sums per key into per-key sessions
// with a 90-minute gap, in the same fragment (ByKey, no shuffle) or
// through an exchange (Results re-keyed). Each hourly result is an event
// at its hour's last instant, made by the watermark that passes the
// hour's end: the sessions see it before that watermark, so an hourly
// result is never too late, even when the watermark jumps hours ahead.
// Hours in a row make one session, an hour more than 90 minutes after
// the last starts another, and every session fires once, on time.
func TestOutsideSessionsOfWindows(t *testing.T) {
	for _, via := range []string{"ByKey", "exchange"} {
		t.Run(via, func(t *testing.T) { sessionsOfWindows(t, via) })
	}
}

func sessionsOfWindows(t *testing.T, via string) {
	f, in, byKey := owHourly("winsess", via)
	sessions := flows.SessionAggregate(byKey, 90*time.Minute, owZero,
		func(n int64, r flows.WindowResult[string, int64]) int64 { return n + r.Value }, func(a, b int64) int64 { return a + b })
	got := flowstest.Collect(sessions.Results())
	late := flowstest.Collect(sessions.TooLate())
	d := startDriver(t, f, time.Unix(0, 0))
	defer d.Close()
	for _, e := range []owEv{{"a", owAt(10 * time.Minute), 1}, {"a", owAt(70 * time.Minute), 2}, {"a", owAt(130 * time.Minute), 4},
		{"a", owAt(250 * time.Minute), 8}, {"b", owAt(400 * time.Minute), 16}} {
		in.Push(0, e)
		must(t, d.Settle())
	}
	in.Close()
	must(t, d.Settle())
	// Hours 0, 1 and 2 of a end at 0:59:59.999999999, 1:59:59… and
	// 2:59:59…: one session up to 90 minutes after the last; hour 4 ends
	// 4:59:59…, more than 90 minutes later.
	last := func(h time.Duration) time.Duration { return h + time.Hour - 1 }
	want := []string{
		fmt.Sprintf("a %s..%s 7 on-time", last(0), last(2*time.Hour)+90*time.Minute),
		fmt.Sprintf("a %s..%s 8 on-time", last(4*time.Hour), last(4*time.Hour)+90*time.Minute),
		fmt.Sprintf("b %s..%s 16 on-time", last(6*time.Hour), last(6*time.Hour)+90*time.Minute),
	}
	owCheckResults(t, "sessions", got.Values(), want, late.Values())
}

// ---------------------------------------------------------------------------
// Windows after Restamp and a re-key: every event of a source keyed by
// user is dated anew by its departure (up to a few seconds before its
// own time, never behind its stage's watermark), re-keyed by zone through
// an exchange, and counted and summed per zone in sliding windows whose
// size is not a multiple of the slide (50s every 20s), with allowed
// lateness. The zones' windows take the departure times: no event is late
// or too late, every window fires once on time with the events departing
// in it, whatever the partitions, fragments, batches, checkpoints,
// crashes and restarts (a fragment of either stage, right up to the end of
// the input). The sink on checkpoints holds each output id once, the keyed
// view at the end every window, both equal to a brute-force model.
func TestOutsideRestampedRekeyedSlidingWindows(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		const size, slide, lateness, jump = 50 * time.Second, 20 * time.Second, 5 * time.Second, 3 * time.Second
		delay := time.Duration(rapid.IntRange(3, 8).Draw(t, "delay")) * time.Second
		partitions := rapid.IntRange(1, 3).Draw(t, "partitions")
		fragments := rapid.IntRange(1, 4).Draw(t, "fragments")
		type trip struct {
			User, Zone string
			At, Depart time.Time
			W          int64
		}
		in := flowstest.NewInput[trip](partitions)
		f := flows.New("restamped", flows.WithFragments(fragments))
		byUser := flows.KeyBy(flows.From(f, "trips", in, flows.WithEventTime(func(e trip) time.Time { return e.At }, delay)),
			func(e trip) string { return e.User })
		dated := flows.Restamp(byUser.Values(), func(e trip) time.Time { return e.Depart })
		w := flows.WindowAggregate(flows.KeyBy(dated, func(e trip) string { return e.Zone }), flows.Sliding(size, slide), noW,
			func(s wstats, e trip) wstats { return addW(s, wev{W: e.W}) }, flows.AllowedLateness(lateness)).
			KeyedView("zones", time.Hour)
		committed := flowstest.Collect(w.Results(), flows.OnCheckpoint())
		tooLate := flowstest.Collect(w.TooLate())
		d := startDriver(t, f, time.Unix(0, 0))
		defer d.Close()
		d.BatchSize = rapid.IntRange(1, 16).Draw(t, "batch")

		// Each partition's clock moves on; an event is up to delay-jump
		// before its partition's clock and departs up to jump before that,
		// so it departs at or after every watermark so far.
		clocks := make([]time.Time, partitions)
		for p := range clocks {
			clocks[p] = owT0.Add(time.Duration(rapid.IntRange(-30, 30).Draw(t, "origin")) * time.Second)
		}
		var trips []trip
		for range rapid.IntRange(1, 30).Draw(t, "steps") {
			switch k := rapid.IntRange(0, 9).Draw(t, "step"); {
			case k <= 5:
				for range rapid.IntRange(1, 8).Draw(t, "n") {
					p := rapid.IntRange(0, partitions-1).Draw(t, "part")
					clocks[p] = clocks[p].Add(time.Duration(rapid.Int64Range(0, int64(6*time.Second)).Draw(t, "advance")))
					at := clocks[p].Add(-time.Duration(rapid.Int64Range(0, int64(delay-jump)).Draw(t, "jitter")))
					dep := at.Add(-time.Duration(rapid.Int64Range(0, int64(jump)).Draw(t, "early")))
					if rapid.Bool().Draw(t, "departs on a boundary") {
						if b := dep.Truncate(10 * time.Second); !b.Before(at.Add(-jump)) {
							dep = b
						}
					}
					tr := trip{User: fmt.Sprintf("u%d", rapid.IntRange(0, 6).Draw(t, "user")),
						Zone: rapid.SampledFrom([]string{"north", "south", "east"}).Draw(t, "zone"), At: at, Depart: dep, W: int64(len(trips) + 1)}
					trips = append(trips, tr)
					in.Push(p, tr)
				}
			case k == 6:
				must(t, d.Drain())
			case k == 7:
				must(t, d.Drain())
				must(t, d.Checkpoint())
			case k == 8:
				must(t, d.Crash(rapid.IntRange(0, fragments-1).Draw(t, "frag")))
			case k == 9:
				must(t, d.Restart())
			}
		}
		owEnd(t, d, in.Close, fragments)

		// The model: every trip in each window over its departure.
		wins := map[string]map[int64]wstats{}
		for _, tr := range trips {
			ts := tr.Depart.UnixNano()
			for s := ts - mod(ts, int64(slide)); s > ts-int64(size); s -= int64(slide) {
				if wins[tr.Zone] == nil {
					wins[tr.Zone] = map[int64]wstats{}
				}
				wins[tr.Zone][s] = addW(wins[tr.Zone][s], wev{W: tr.W})
			}
		}
		var want, wantView []string
		for z, ws := range wins {
			for s, st := range ws {
				want = append(want, fmt.Sprintf("%s %d %d %v on-time", z, s, s+int64(size), st))
				wantView = append(wantView, fmt.Sprintf("%d %s=%v", s, z, st))
			}
		}
		slices.Sort(want)
		slices.Sort(wantView)
		got := idValues(t, "committed results", committed.Outputs(), func(r flows.WindowResult[string, wstats]) string {
			return fmt.Sprintf("%s %d %d %v %v", r.Key, r.Start.UnixNano(), r.End.UnixNano(), r.Value, r.Firing)
		})
		if !slices.Equal(got, want) {
			t.Fatalf("committed results differ from the model:\n%s", diffLines(got, want))
		}
		if n := len(tooLate.Values()); n != 0 {
			t.Fatalf("%d trips too late: %v", n, tooLate.Values())
		}
		res, err := query(d, "zones", splice.Query{From: math.MinInt64, Limit: 1 << 20})
		must(t, err)
		var gotView []string
		for _, kw := range res.KeyedWindows {
			if !kw.Complete {
				t.Fatalf("window %v of the ended input not complete", kw.Start)
			}
			for _, e := range kw.Entries {
				gotView = append(gotView, fmt.Sprintf("%d %s=%v", kw.Start.UnixNano(), e.Key, e.Value))
			}
		}
		slices.Sort(gotView)
		if !slices.Equal(gotView, wantView) {
			t.Fatalf("keyed view differs from the model:\n%s", diffLines(gotView, wantView))
		}
	})
}
