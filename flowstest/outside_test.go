package flowstest_test

// Tests written as an outside user of the flows API would write them:
// flows unlike the repository's examples, each checked against a plain
// Go model of what it should compute.

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/splice"
)

// ---------------------------------------------------------------------------
// A per-subscriber Process in event-time order with a state TTL, whose
// events set, reset and delete event-time timers, clear the state while
// timers are pending ("logout"), and start timers that set the next one
// from OnTimer ("repeat"); its outputs go to a sink on checkpoints, a sink
// at once, and are re-keyed by kind into a Count. Many subscribers (more
// than a block of rows) with a hot one, skewed partitions (one may stay
// empty until the end), random batches, checkpoints, crashes and restarts.
// The handler's logic is shared by the engine and the model: the model
// only plays the engine's documented schedule (timers, expiries and events
// of a key in time order; at one time timers, then the expiry, then the
// events; an expiry that finds timers of the key's own pending waits for
// the latest; a timer set for a time the handler reached fires as soon as
// it returns).

type subEv struct {
	User string
	At   time.Time
	Act  int // see subOnEvent: 0 count, 1 timer, 2 delete a timer, 3 logout, 4 repeating timer, 5 ping, 6 poisoned
	D    int // minutes to the timer an event sets
}

type subState struct {
	N      int64
	Timers []int64 // the timers the handler set and knows pending
	Rep    int     // repeats left: a timer that fires sets the next 7 minutes on
}

type subOut struct {
	User string
	Kind string
	At   int64
	N    int64
}

// subCtx is what the shared handler needs of a Process context.
type subCtx interface {
	key() string
	state() (subState, bool)
	setState(subState)
	clearState()
	setTimer(int64)
	delTimer(int64)
	emit(subOut)
	poisoned(at int64) bool // OnTimer panics at at
}

// subTimerPoisoned is whether a timer at at panics, with poisoned timers.
func subTimerPoisoned(at int64) bool { return at%5 == 3 }

const subRepeat = 7 * time.Minute

func subOnEvent(c subCtx, e subEv) {
	if e.Act == 6 {
		panic(fmt.Sprintf("poisoned event of %q at %v", e.User, e.At))
	}
	ts := e.At.UnixNano()
	s, ok := c.state()
	if e.Act == 3 { // logout: the state goes, its timers stay pending
		if ok {
			c.emit(subOut{User: c.key(), Kind: "logout", At: ts, N: s.N})
			c.clearState()
		}
		return
	}
	s.N++
	s.Timers = slices.Clone(s.Timers)
	switch e.Act {
	case 1, 4:
		t := ts + int64(e.D)*int64(time.Minute)
		c.setTimer(t)
		if !slices.Contains(s.Timers, t) {
			s.Timers = append(s.Timers, t)
		}
		if e.Act == 4 {
			s.Rep = 2
		}
	case 2:
		if len(s.Timers) > 0 {
			i := slices.Index(s.Timers, slices.Min(s.Timers))
			c.delTimer(s.Timers[i])
			s.Timers = slices.Delete(s.Timers, i, i+1)
		}
	case 5:
		c.emit(subOut{User: c.key(), Kind: "ping", At: ts, N: s.N})
	}
	c.setState(s)
}

func subOnTimer(c subCtx, at int64) {
	if c.poisoned(at) {
		panic(fmt.Sprintf("poisoned timer of %q at %d", c.key(), at))
	}
	s, ok := c.state()
	if !ok {
		c.emit(subOut{User: c.key(), Kind: "orphan", At: at, N: -1})
		return
	}
	s.N += 100
	s.Timers = slices.Clone(s.Timers)
	if i := slices.Index(s.Timers, at); i >= 0 {
		s.Timers = slices.Delete(s.Timers, i, i+1)
	}
	if s.Rep > 0 {
		s.Rep--
		t := at + int64(subRepeat)
		c.setTimer(t)
		s.Timers = append(s.Timers, t)
	}
	c.emit(subOut{User: c.key(), Kind: "timer", At: at, N: s.N})
	c.setState(s)
}

// engineSubCtx adapts a flows.Context.
type engineSubCtx struct {
	c      *flows.Context[string, subState, subOut]
	poison bool
}

func (e engineSubCtx) key() string             { return e.c.Key() }
func (e engineSubCtx) state() (subState, bool) { return e.c.State() }
func (e engineSubCtx) setState(s subState)     { e.c.SetState(s) }
func (e engineSubCtx) clearState()             { e.c.ClearState() }
func (e engineSubCtx) setTimer(at int64)       { e.c.SetEventTimer(time.Unix(0, at)) }
func (e engineSubCtx) delTimer(at int64)       { e.c.DeleteEventTimer(time.Unix(0, at)) }
func (e engineSubCtx) emit(o subOut)           { e.c.Emit(o) }
func (e engineSubCtx) poisoned(at int64) bool  { return e.poison && subTimerPoisoned(at) }
func subHandler(poison bool) flows.Handler[string, subEv, subState, subOut] {
	return flows.Handler[string, subEv, subState, subOut]{
		OnEvent: func(c *flows.Context[string, subState, subOut], e subEv) { subOnEvent(engineSubCtx{c, poison}, e) },
		OnTimer: func(c *flows.Context[string, subState, subOut], at time.Time) {
			subOnTimer(engineSubCtx{c, poison}, at.UnixNano())
		},
	}
}

// subModel is one key's sequential run.
type subModel struct {
	k       string
	ttl     int64
	has     bool
	s       subState
	pending map[int64]bool // timers of the key's own
	hasLast bool           // an expiry at exp
	exp     int64
	waiting bool // a wait at waitAt (the expiry waits for timers)
	waitAt  int64
	reached int64
	dueNow  []int64
	out     []subOut
	poison  bool
	failed  []int64 // the poisoned timers that fired
}

func (m *subModel) key() string             { return m.k }
func (m *subModel) state() (subState, bool) { return m.s, m.has }
func (m *subModel) setState(s subState)     { m.s, m.has = s, true }
func (m *subModel) clearState()             { m.s, m.has = subState{}, false }
func (m *subModel) emit(o subOut)           { m.out = append(m.out, o) }
func (m *subModel) poisoned(at int64) bool  { return m.poison && subTimerPoisoned(at) }

// onTimer fires the handler's timer at at: a poisoned one panics at once
// (the engine dead-letters it, and it does nothing).
func (m *subModel) onTimer(at int64) {
	if m.poisoned(at) {
		m.failed = append(m.failed, at)
		return
	}
	subOnTimer(m, at)
}
func (m *subModel) setTimer(at int64) {
	if at > m.reached || m.pending[at] {
		m.pending[at] = true
		return
	}
	if !slices.Contains(m.dueNow, at) {
		m.dueNow = append(m.dueNow, at)
	}
}

func (m *subModel) delTimer(at int64) {
	if i := slices.Index(m.dueNow, at); i >= 0 {
		m.dueNow = slices.Delete(m.dueNow, i, i+1)
	}
	delete(m.pending, at)
}

func (m *subModel) fireDueNow() {
	var fired []int64
	for len(m.dueNow) > 0 {
		t := m.dueNow[0]
		m.dueNow = m.dueNow[1:]
		if slices.Contains(fired, t) {
			continue
		}
		fired = append(fired, t)
		m.onTimer(t)
	}
}

// runSubModel runs key k's events (sorted by time) up to the watermark wm.
func runSubModel(k string, evs []subEv, ttl, wm int64, poison bool) *subModel {
	m := &subModel{k: k, ttl: ttl, pending: map[int64]bool{}, poison: poison}
	for i := 0; ; {
		next, what := int64(math.MaxInt64), 0
		for t := range m.pending {
			if what == 0 || t < next {
				next, what = t, 1
			}
		}
		x, hasX := m.exp, m.hasLast
		if m.waiting {
			x, hasX = m.waitAt, true
		}
		if hasX && (what == 0 || x < next) {
			next, what = x, 2
		}
		if i < len(evs) && (what == 0 || evs[i].At.UnixNano() < next) {
			next, what = evs[i].At.UnixNano(), 3
		}
		if what == 0 || next > wm {
			return m
		}
		switch what {
		case 1:
			delete(m.pending, next)
			m.reached = next
			m.onTimer(next)
			m.fireDueNow()
		case 2:
			m.hasLast, m.waiting = false, false
			if len(m.pending) > 0 {
				m.waiting, m.waitAt = true, slices.Max(slices.Collect(maps.Keys(m.pending)))
			} else {
				m.clearState()
			}
		case 3:
			e := evs[i]
			i++
			ts := e.At.UnixNano()
			m.hasLast, m.exp, m.waiting = true, ts+ttl, false
			m.reached = ts
			subOnEvent(m, e)
			m.fireDueNow()
		}
	}
}

// drawNetwork is, half the time, a network that loses, duplicates and
// reorders batches and acknowledgements.
func drawNetwork(t *rapid.T, rng *rand.Rand) flowstest.Faults {
	if !rapid.Bool().Draw(t, "network faults") {
		return flowstest.Faults{}
	}
	return flowstest.Faults{Rand: rand.New(rand.NewPCG(rng.Uint64(), 41)),
		Drop:      rapid.Float64Range(0, 0.15).Draw(t, "drop"),
		Duplicate: rapid.Float64Range(0, 0.3).Draw(t, "duplicate"),
		Reorder:   rapid.Float64Range(0, 0.4).Draw(t, "reorder")}
}

func subOutString(o subOut) string { return fmt.Sprintf("%q %s %d %d", o.User, o.Kind, o.At, o.N) }

func TestOutsideSubscribersTimersTTLAndSinks(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) { checkSubscribers(t, false) })
}

// The same with poisoned events and timers: the handler panics on them.
// On an event the engine restores and replays, and after a few attempts
// skips the event (as if the fragment had no record of it) and
// dead-letters it; a timer is dead-lettered and does nothing. The model
// leaves both out.
func TestOutsidePoisonedSubscribers(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) { checkSubscribers(t, true) })
}

func checkSubscribers(t *rapid.T, poison bool) {
	rng := rand.New(rand.NewPCG(rapid.Uint64().Draw(t, "seed"), 17))
	nusers := rapid.IntRange(1, 300).Draw(t, "users")
	long := strings.Repeat("s", rapid.SampledFrom([]int{0, 40, 200}).Draw(t, "prefix"))
	users := make([]string, nusers)
	for i := range users {
		users[i] = fmt.Sprintf("%s%d", long, i)
	}
	users[0] = ""
	hot := rapid.SampledFrom([]float64{0, 0.5, 0.9}).Draw(t, "hot share")
	ttl := int64(rapid.IntRange(1, 15).Draw(t, "ttl minutes")) * int64(time.Minute)
	const delay = 3 * time.Minute
	partitions := rapid.IntRange(1, 4).Draw(t, "partitions")
	emptyLast := partitions > 1 && rapid.Bool().Draw(t, "last partition empty until the end")
	fragments := rapid.IntRange(1, 8).Draw(t, "fragments")
	n := rapid.IntRange(1, 400).Draw(t, "events")

	// Events at distinct times, each a distinct number of nanoseconds
	// past its minute (timers of different events never coincide);
	// each partition's arrive out of order by less than the delay:
	// none is late.
	t0 := time.Date(2026, 3, 1, 6, 0, 0, 0, time.UTC).UnixNano()
	clock := t0
	parts := make([][]subEv, partitions)
	arrive := make([][]int64, partitions)
	byUser := map[string][]subEv{}
	for range n {
		clock += int64(rng.IntN(4))*int64(time.Minute) + int64(1+rng.IntN(300))
		u := users[rng.IntN(len(users))]
		if rng.Float64() < hot {
			u = users[len(users)-1]
		}
		e := subEv{User: u, At: time.Unix(0, clock).UTC(), Act: []int{0, 1, 1, 2, 3, 4, 5, 5}[rng.IntN(8)], D: rng.IntN(26)}
		if rng.IntN(10) == 0 {
			e.D = 0 // a timer at the event's own time
		}
		if poison && rng.IntN(12) == 0 {
			e.Act = 6
		}
		p := 0
		if rng.IntN(3) != 0 { // partition 0 takes most
			p = rng.IntN(partitions)
		}
		if emptyLast && p == partitions-1 {
			p = 0
		}
		parts[p] = append(parts[p], e)
		arrive[p] = append(arrive[p], clock+rng.Int64N(int64(delay)))
		if e.Act != 6 {
			byUser[u] = append(byUser[u], e)
		}
	}
	for p := range parts {
		idx := make([]int, len(parts[p]))
		for i := range idx {
			idx[i] = i
		}
		slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(arrive[p][a], arrive[p][b]) })
		sorted := make([]subEv, len(idx))
		for i, j := range idx {
			sorted[i] = parts[p][j]
		}
		parts[p] = sorted
	}

	in := flowstest.NewInput[subEv](partitions)
	f := flows.New("subscribers", flows.WithFragments(fragments))
	ks := flows.KeyBy(flows.From(f, "events", in, flows.WithEventTime(func(e subEv) time.Time { return e.At }, delay)),
		func(e subEv) string { return e.User })
	p := flows.Process(ks, subHandler(poison), flows.InEventTimeOrder(), flows.WithStateTTL(time.Duration(ttl))).View("subs")
	onCP := flowstest.Collect(p.Out(), flows.OnCheckpoint())
	atOnce := newIDSink()
	flows.To(flows.Map(p.Out(), subOutString), flows.SinkFunc[string](atOnce.write))
	flows.Count(flows.KeyBy(p.Out(), func(o subOut) string { return o.Kind })).View("kinds")
	d := startDriver(t, f, time.Unix(0, 0))
	defer d.Close()
	d.BatchSize = rapid.IntRange(1, 30).Draw(t, "batch")
	d.Faults = drawNetwork(t, rng)

	// check compares the view with the model at the watermark the
	// events pushed so far make.
	pushed := make([]int, partitions)
	check := func(wm int64, when string) {
		want := map[string]subState{}
		for u, evs := range byUser {
			var mine []subEv
			for _, e := range evs {
				if e.At.UnixNano() <= wm {
					mine = append(mine, e)
				}
			}
			if m := runSubModel(u, mine, ttl, wm, poison); m.has {
				want[u] = m.s
			}
		}
		got := viewMap[subState](t, d, "subs")
		same := func(a, b subState) bool {
			return a.N == b.N && a.Rep == b.Rep && slices.Equal(a.Timers, b.Timers)
		}
		if !maps.EqualFunc(got, want, same) {
			for u := range byUser {
				g, gok := got[u]
				w, wok := want[u]
				if gok != wok || !same(g, w) {
					t.Fatalf("%s (watermark %v after the start): key %q holds %+v (%v), want %+v (%v)",
						when, time.Duration(wm-t0), u, g, gok, w, wok)
				}
			}
			t.Fatalf("%s: views differ: %v, want %v", when, got, want)
		}
	}
	watermark := func() int64 {
		return pushedWatermark(parts, pushed, func(e subEv) time.Time { return e.At }, delay)
	}
	restarts := 0
	for more, round := true, 0; more; round++ {
		more = pushSome(in, parts, pushed, rng, 25)
		must(t, d.Drain())
		switch rng.IntN(6) {
		case 0:
			must(t, d.Checkpoint())
		case 1:
			must(t, d.Crash(rng.IntN(fragments)))
		case 2:
			must(t, d.Restart())
			restarts++
		}
		if round%4 == 3 {
			must(t, d.Settle())
			check(watermark(), fmt.Sprintf("round %d", round))
		}
	}
	must(t, d.Settle())
	check(watermark(), "all pushed")
	must(t, endInput(d, rng, fragments, in.Close))
	check(math.MaxInt64, "the end")

	var want []string
	kinds := map[string]int64{}
	failedTimers := map[string]bool{} // "user at" of each poisoned timer that fired
	for u, evs := range byUser {
		m := runSubModel(u, evs, ttl, math.MaxInt64, poison)
		for _, at := range m.failed {
			failedTimers[fmt.Sprintf("%s %d", u, at)] = true
		}
		for _, o := range m.out {
			want = append(want, subOutString(o))
			kinds[o.Kind]++
		}
	}
	slices.Sort(want)
	if got := idValues(t, "on-checkpoint outputs", onCP.Outputs(), subOutString); !slices.Equal(got, want) {
		t.Fatalf("on-checkpoint outputs (%d):\n%s\nwant (%d):\n%s", len(got), strings.Join(got, "\n"), len(want), strings.Join(want, "\n"))
	}
	checkIDSink(t, "at-once", atOnce, want)
	if gotKinds := viewMap[int64](t, d, "kinds"); !maps.Equal(gotKinds, kinds) {
		t.Fatalf("outputs counted by kind downstream: %v, want %v", gotKinds, kinds)
	}
	// Each poisoned event dead-lettered, nothing else; once unless the
	// process restarted (a restarted fragment forgets the events it
	// skipped, and tries and dead-letters them again, as a reader opened
	// anew reports again the dead letters it reads again).
	wantDead := map[string]int{}
	for p := range parts {
		for off, e := range parts[p] {
			if e.Act == 6 {
				wantDead[fmt.Sprintf("%d/%d", p, off)] = 1
			}
		}
	}
	// A poisoned timer is dead-lettered at each firing (a replay may fire
	// it again): every one that fired, whatever restores came after it,
	// and no other.
	must(t, d.Advance(time.Second))
	gotDead := map[string]int{}
	gotTimers := map[string]bool{}
	for _, dl := range d.DeadLetters() {
		if i := strings.Index(dl.Error, "poisoned timer of "); i >= 0 {
			var u string
			var at int64
			if _, err := fmt.Sscanf(dl.Error[i+len("poisoned timer of "):], "%q at %d", &u, &at); err != nil {
				t.Fatalf("dead letter %+v: %v", dl, err)
			}
			gotTimers[fmt.Sprintf("%s %d", u, at)] = true
			continue
		}
		gotDead[fmt.Sprintf("%d/%d", dl.Partition, dl.Offset)]++
	}
	for k := range gotTimers {
		if !failedTimers[k] {
			t.Fatalf("timer %s dead-lettered, but the model's poisoned timers that fired are %v", k, failedTimers)
		}
	}
	for k := range failedTimers {
		if !gotTimers[k] {
			t.Fatalf("poisoned timer %s fired but was not dead-lettered (dead letters %+v)", k, d.DeadLetters())
		}
	}
	if restarts > 0 {
		for k, n := range gotDead {
			if wantDead[k] == 1 {
				wantDead[k] = n
			}
		}
	}
	if !maps.Equal(gotDead, wantDead) {
		t.Fatalf("dead letters by partition/offset %v, want %v: %+v", gotDead, wantDead, d.DeadLetters())
	}
}

// ---------------------------------------------------------------------------
// A processing-time timer of a key under a state TTL: the key's expiry
// finds its timer pending and waits for it ("a key with timers of its own
// pending keeps its state until they have fired"), and once the timer
// fired, the state goes when the watermark moves on. Two clocks:
//
//   - behind the event times (the harness's clock starts at 1970 in every
//     test; a cluster's wall clock is behind events dated in the future):
//     the wait must not spin;
//   - a year ahead of them (a cluster replaying last year's events): the
//     state must not outlive its fired timer until the watermark reaches
//     a time of the processing-time clock.
func TestOutsideProcessingTimerUnderStateTTL(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		clock time.Time
	}{
		{"clock a year ahead", t0.AddDate(1, 0, 0)},
		{"clock behind", time.Unix(0, 0)},
	} {
		for _, restart := range []bool{false, true} {
			name := tc.name
			if restart {
				name += ", restarted while the state waits"
			}
			t.Run(name, func(t *testing.T) { processingTimerUnderTTL(t, t0, tc.clock, restart) })
		}
	}
}

func processingTimerUnderTTL(t *testing.T, t0, clock time.Time, restart bool) {
	in, f, ks := clickFlow("ptimer-ttl", 1, 1, 0)
	fired := 0
	flows.Process(ks, flows.Handler[string, click, int, string]{
		OnEvent: func(c *flows.Context[string, int, string], e click) {
			n, _ := c.State()
			c.SetState(n + 1)
			if c.Key() == "k" {
				c.SetProcessingTimer(c.Now().Add(time.Hour)) // a reminder an hour on
			}
		},
		OnTimer: func(c *flows.Context[string, int, string], at time.Time) {
			if c.TimeDomain() == flows.ProcessingTime {
				fired++
			}
		},
	}, flows.WithStateTTL(10*time.Minute)).View("n")
	d := startDriver(t, f, clock)
	// The driver is not safe to use after a step that did not return
	// within the limit: the test fails, and the step's goroutine keeps
	// spinning until the test binary exits.
	stuck := false
	defer func() {
		if !stuck {
			d.Close()
		}
	}()
	step := func(what string, fn func() error) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- fn() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		case <-time.After(10 * time.Second):
			stuck = true
			t.Fatalf("%s did not return in 10s: the engine loops", what)
		}
	}
	push := func(user string, at time.Duration) func() error {
		return func() error {
			in.Push(0, click{User: user, At: t0.Add(at)})
			return d.Drain()
		}
	}
	step("the first event", push("k", 0))
	step("an event past k's expiry", push("other", 20*time.Minute))
	if restart {
		// The wait is in the checkpoint, with the timer it waits for.
		step("a checkpoint", d.Checkpoint)
		step("a restart", d.Restart)
	}
	if v, err := d.Get("n", "k"); err != nil || v != 1 {
		t.Fatalf("while its processing-time timer is pending, k = %v, %v; want 1", v, err)
	}
	step("the timer's hour", func() error { return d.Advance(time.Hour + time.Second) })
	if fired != 1 {
		t.Fatalf("the processing-time timer fired %d times, want 1", fired)
	}
	step("an event after the timer fired", push("other", 40*time.Minute))
	if v, err := d.Get("n", "k"); !errors.Is(err, splice.ErrNotFound) {
		t.Fatalf("k's timer fired and the watermark is 30 minutes past its expiry: k = %v, %v; want it expired", v, err)
	}
}

// ---------------------------------------------------------------------------
// Orders fanned out into line items before the key (FlatMap: zero to four
// lines an order, some for another customer, all at the order's time),
// keyed by customer into a Process in event-time order that numbers each
// customer's lines and keeps the last few, and counted; after the key the
// lines are fanned out again (zero to two copies each) into an at-once
// sink. Orders of different partitions share times: the documented order
// is time, then channel, partition and offset (and a line's place among
// its order's). Every sink holds each output once by id, with one value,
// equal to the sequential model.

type order struct {
	Cust string
	At   time.Time
	N    int // lines
	Gift int // a line index that goes to the next customer (-1: none)
	Seq  int
}

type line struct {
	Cust string
	Item string
	At   time.Time
}

type lineState struct {
	N    int64
	Last string
}

func orderLines(o order, custs []string, emit func(line)) {
	for j := range o.N {
		c := o.Cust
		if j == o.Gift {
			c = custs[(slices.Index(custs, o.Cust)+1)%len(custs)]
		}
		emit(line{Cust: c, Item: fmt.Sprintf("%d.%d", o.Seq, j), At: o.At})
	}
}

func lineStep(s lineState, l line) (lineState, string) {
	s.N++
	s.Last = s.Last + "," + l.Item
	if len(s.Last) > 24 {
		s.Last = s.Last[len(s.Last)-24:]
	}
	return s, fmt.Sprintf("%s #%d %s after %s", l.Cust, s.N, l.Item, s.Last)
}

func TestOutsideFannedOutLinesInEventTimeOrder(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rng := rand.New(rand.NewPCG(rapid.Uint64().Draw(t, "seed"), 23))
		custs := []string{"", "acme", "bolt", "cog", strings.Repeat("d", 150)}[:rapid.IntRange(1, 5).Draw(t, "customers")]
		partitions := rapid.IntRange(1, 3).Draw(t, "partitions")
		fragments := rapid.IntRange(1, 5).Draw(t, "fragments")
		n := rapid.IntRange(0, 200).Draw(t, "orders")
		const delay = 2 * time.Minute
		t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
		type placed struct {
			o         order
			part, off int
		}
		parts := make([][]order, partitions)
		clocks := make([]time.Time, partitions)
		for p := range clocks {
			clocks[p] = t0
		}
		var all []placed
		for i := range n {
			p := rng.IntN(partitions)
			// Whole minutes: orders of different partitions share times;
			// within a partition they run back by less than the delay.
			clocks[p] = clocks[p].Add(time.Duration(rng.IntN(3)) * time.Minute)
			at := clocks[p]
			if rng.IntN(3) == 0 {
				at = at.Add(-time.Minute)
			}
			o := order{Cust: custs[rng.IntN(len(custs))], At: at, N: []int{0, 1, 1, 2, 3, 4}[rng.IntN(6)], Gift: rng.IntN(5) - 1, Seq: i}
			all = append(all, placed{o, p, len(parts[p])})
			parts[p] = append(parts[p], o)
		}

		// The model: per customer, its lines by time, partition, offset and
		// place in the order.
		type mline struct {
			l              line
			part, off, sub int
		}
		byCust := map[string][]mline{}
		copies := 0
		for _, pl := range all {
			j := 0
			orderLines(pl.o, custs, func(l line) {
				byCust[l.Cust] = append(byCust[l.Cust], mline{l, pl.part, pl.off, j})
				copies += j % 3
				j++
			})
		}
		var want []string
		counts := map[string]int64{}
		for c, ls := range byCust {
			slices.SortFunc(ls, func(a, b mline) int {
				return cmp.Or(a.l.At.Compare(b.l.At), cmp.Compare(a.part, b.part), cmp.Compare(a.off, b.off), cmp.Compare(a.sub, b.sub))
			})
			var s lineState
			for _, ml := range ls {
				var out string
				s, out = lineStep(s, ml.l)
				want = append(want, out)
			}
			counts[c] = int64(len(ls))
		}
		slices.Sort(want)

		in := flowstest.NewInput[order](partitions)
		f := flows.New("orders", flows.WithFragments(fragments))
		orders := flows.From(f, "orders", in, flows.WithEventTime(func(o order) time.Time { return o.At }, delay))
		lines := flows.FlatMap(orders, func(o order, emit func(line)) { orderLines(o, custs, emit) })
		ks := flows.KeyBy(lines, func(l line) string { return l.Cust })
		p := flows.Process(ks, flows.Handler[string, line, lineState, string]{
			OnEvent: func(c *flows.Context[string, lineState, string], l line) {
				s, _ := c.State()
				s, out := lineStep(s, l)
				c.SetState(s)
				c.Emit(out)
			},
		}, flows.InEventTimeOrder())
		onCP := newIDSink()
		flows.To(p.Out(), flows.SinkFunc[string](onCP.write), flows.OnCheckpoint())
		atOnce := newIDSink()
		flows.To(p.Out(), flows.SinkFunc[string](atOnce.write))
		flows.Count(ks).View("lines")
		// A second key of the lines, whose one subscriber is a count
		// with a sink of its updates (the count applies batches in bulk).
		updates := flowstest.Collect(flows.Count(flows.KeyBy(lines, func(l line) string { return l.Cust })).Updates(), flows.OnCheckpoint())
		// After the key, each line again into zero to two copies.
		fan := newIDSink()
		flows.To(flows.FlatMap(ks.Values(), func(l line, emit func(string)) {
			var j int
			fmt.Sscanf(l.Item[strings.IndexByte(l.Item, '.')+1:], "%d", &j)
			for c := range j % 3 {
				emit(fmt.Sprintf("%s/%s/%d", l.Cust, l.Item, c))
			}
		}), flows.SinkFunc[string](fan.write))

		d := startDriver(t, f, time.Unix(0, 0))
		defer d.Close()
		d.BatchSize = rapid.IntRange(1, 20).Draw(t, "batch")
		must(t, pushInChunks(d, in, parts, rng, 15))
		must(t, endInput(d, rng, fragments, in.Close))

		checkIDSink(t, "on-checkpoint", onCP, want)
		checkIDSink(t, "at-once", atOnce, want)
		if len(fan.clash) > 0 {
			t.Fatalf("fan-out sink: ids with two values: %q", fan.clash)
		}
		if got := len(fan.values()); got != copies {
			t.Fatalf("fan-out sink holds %d outputs by id, want %d", got, copies)
		}
		if got := viewMap[int64](t, d, "lines"); !maps.Equal(got, counts) {
			t.Fatalf("lines counted: %v, want %v", got, counts)
		}
		// Each customer's count updates: 1 to its lines, once each.
		ups := map[string][]int64{}
		seenUp := map[flows.OutputID]flows.KV[string, int64]{}
		for _, o := range updates.Outputs() {
			if prev, ok := seenUp[o.ID]; ok {
				if prev != o.Value {
					t.Fatalf("count update %v delivered as %v, then %v", o.ID, prev, o.Value)
				}
				continue
			}
			seenUp[o.ID] = o.Value
			ups[o.Value.Key] = append(ups[o.Value.Key], o.Value.Value)
		}
		for c, n := range counts {
			vs := ups[c]
			slices.Sort(vs)
			if int64(len(vs)) != n || (n > 0 && (vs[0] != 1 || vs[n-1] != n)) || len(slices.Compact(vs)) != int(n) {
				t.Fatalf("customer %q: count updates %v, want 1 to %d once each", c, vs, n)
			}
		}
		if len(ups) != len(counts) {
			t.Fatalf("count updates of %d customers, want %d", len(ups), len(counts))
		}
	})
}

// ---------------------------------------------------------------------------
// Three keyed stages in a row, with few keys over many fragments (most
// fragments of every stage hold no key, and forward only watermarks): a
// per-user Process in event-time order closes sessions with an event-time
// timer (a TTL shorter than the gap makes every expiry wait for it), whose
// sessions are re-keyed by size into a second Process in event-time order
// that totals them per hour with a timer at the hour's end (and a TTL
// that waits for it too), whose totals are re-keyed by hour into an
// Aggregate. Sinks: the sessions at once, the hourly totals on
// checkpoints. Everything equals a sequential model, whatever the
// batches, partition skew, checkpoints, crashes and restarts.

type sess struct {
	User       string
	N          int
	Start, End int64 // the first event; the timer that closed it (its time)
}

type hourly struct {
	Bucket   string
	Hour     int64
	Sessions int
	Events   int
}

func sessBucket(s sess) string {
	switch {
	case s.N == 1:
		return "single"
	case s.N < 5:
		return "few"
	}
	return "many"
}

type sessOpen struct {
	N            int
	Start, Timer int64
}

// sessionStage is a per-user session Process in event-time order (and
// opts): each event moves the user's timer to its time plus the gap, and
// the timer emits the session and clears the state (a timer that finds no
// session panics).
func sessionStage(ks flows.KeyedStream[string, click], gap time.Duration, opts ...flows.StateOption) flows.Processed[string, sessOpen, sess] {
	return flows.Process(ks, flows.Handler[string, click, sessOpen, sess]{
		OnEvent: func(c *flows.Context[string, sessOpen, sess], e click) {
			s, ok := c.State()
			if !ok {
				s.Start = e.At.UnixNano()
			} else {
				c.DeleteEventTimer(time.Unix(0, s.Timer))
			}
			s.N++
			s.Timer = e.At.Add(gap).UnixNano()
			c.SetEventTimer(time.Unix(0, s.Timer))
			c.SetState(s)
		},
		OnTimer: func(c *flows.Context[string, sessOpen, sess], at time.Time) {
			s, ok := c.State()
			if !ok {
				panic(fmt.Sprintf("timer of %q at %v without a session", c.Key(), at))
			}
			c.Emit(sess{User: c.Key(), N: s.N, Start: s.Start, End: at.UnixNano()})
			c.ClearState()
		},
	}, append([]flows.StateOption{flows.InEventTimeOrder()}, opts...)...)
}

// sessionModel is the sessions of evs (any order) up to the watermark wm:
// those closed, and per user the one open.
func sessionModel(evs []click, gap time.Duration, wm int64) (closed []sess, open map[string]sessOpen) {
	byUser := map[string][]int64{}
	for _, c := range evs {
		if ts := c.At.UnixNano(); ts <= wm {
			byUser[c.User] = append(byUser[c.User], ts)
		}
	}
	open = map[string]sessOpen{}
	for u, ts := range byUser {
		slices.Sort(ts)
		s := sessOpen{Start: ts[0]}
		for i, x := range ts {
			if i > 0 && x >= ts[i-1]+int64(gap) {
				closed = append(closed, sess{u, s.N, s.Start, ts[i-1] + int64(gap)})
				s = sessOpen{Start: x}
			}
			s.N++
			s.Timer = x + int64(gap)
		}
		if s.Timer <= wm {
			closed = append(closed, sess{u, s.N, s.Start, s.Timer})
		} else {
			open[u] = s
		}
	}
	return closed, open
}

func TestOutsideSessionsIntoHourlyTotals(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rng := rand.New(rand.NewPCG(rapid.Uint64().Draw(t, "seed"), 29))
		users := []string{"hot", "a", "", "b"}[:rapid.IntRange(1, 4).Draw(t, "users")]
		gap := time.Duration(rapid.IntRange(2, 30).Draw(t, "gap minutes")) * time.Minute
		ttl := time.Duration(rapid.IntRange(1, int(gap/time.Minute)-1).Draw(t, "ttl minutes")) * time.Minute
		const delay = time.Minute
		partitions := rapid.IntRange(1, 3).Draw(t, "partitions")
		fragments := rapid.IntRange(1, 8).Draw(t, "fragments")
		parts := make([][]click, partitions)
		var all []click
		for p := range parts {
			// The hot user makes most events.
			us := append([]string{}, users...)
			for range 6 {
				us = append(us, users[0])
			}
			parts[p] = walkClicks(rng, rapid.IntRange(0, 200).Draw(t, "events"), us, 4*time.Minute, delay-time.Nanosecond)
			all = append(all, parts[p]...)
		}

		// The model.
		sessions, _ := sessionModel(all, gap, math.MaxInt64)
		type bh struct {
			b string
			h int64
		}
		totals := map[bh]hourly{}
		perHour := map[string]int64{}
		poisoned := map[string]bool{} // the sessions of 7 events: the second stage fails on them
		for _, s := range sessions {
			if s.N == 7 {
				poisoned[fmt.Sprint(s)] = true
				continue
			}
			h := time.Unix(0, s.End).Truncate(time.Hour).UnixNano()
			k := bh{sessBucket(s), h}
			x := totals[k]
			x.Bucket, x.Hour = k.b, h
			x.Sessions++
			x.Events += s.N
			totals[k] = x
			perHour[time.Unix(0, h).UTC().Format(time.RFC3339)] += int64(s.N)
		}
		var wantSess, wantHourly []string
		for _, s := range sessions {
			wantSess = append(wantSess, fmt.Sprint(s))
		}
		for _, x := range totals {
			wantHourly = append(wantHourly, fmt.Sprint(x))
		}
		slices.Sort(wantSess)
		slices.Sort(wantHourly)

		in, f, ks := clickFlow("hourly", partitions, fragments, delay)
		s1 := sessionStage(ks, gap, flows.WithStateTTL(ttl))
		sessSink := newIDSink()
		flows.To(flows.Map(s1.Out(), func(s sess) string { return fmt.Sprint(s) }), flows.SinkFunc[string](sessSink.write))
		type tally struct{ Hour, Sessions, Events int64 }
		s2 := flows.Process(flows.KeyBy(s1.Out(), sessBucket), flows.Handler[string, sess, tally, hourly]{
			OnEvent: func(c *flows.Context[string, tally, hourly], s sess) {
				if s.N == 7 {
					panic(fmt.Sprintf("a session of seven: %v", s))
				}
				h := c.Timestamp().Truncate(time.Hour)
				x, ok := c.State()
				if ok && x.Hour != h.UnixNano() {
					panic(fmt.Sprintf("bucket %q: a session at %v while hour %v is open", c.Key(), c.Timestamp(), time.Unix(0, x.Hour)))
				}
				x.Hour = h.UnixNano()
				x.Sessions++
				x.Events += int64(s.N)
				c.SetState(x)
				c.SetEventTimer(h.Add(time.Hour))
			},
			OnTimer: func(c *flows.Context[string, tally, hourly], at time.Time) {
				x, _ := c.State()
				c.Emit(hourly{Bucket: c.Key(), Hour: x.Hour, Sessions: int(x.Sessions), Events: int(x.Events)})
				c.ClearState()
			},
		}, flows.InEventTimeOrder(), flows.WithStateTTL(20*time.Minute))
		hourSink := flowstest.Collect(s2.Out(), flows.OnCheckpoint())
		// Aggregate views of the sessions, spliced over the fragments.
		flows.AggregateView(s1.Out(), "sessions", splice.Count[sess](), flows.Identity[sess])
		flows.AggregateView(s1.Out(), "session events", splice.Sum[int64](), func(s sess) int64 { return int64(s.N) })
		flows.AggregateView(s1.Out(), "longest session", splice.Max[int64](), func(s sess) int64 { return s.End - s.Start })
		flows.AggregateView(s2.Out(), "hours", splice.Count[hourly](), flows.Identity[hourly])
		flows.Aggregate(flows.KeyBy(s2.Out(), func(x hourly) string { return time.Unix(0, x.Hour).UTC().Format(time.RFC3339) }),
			func() int64 { return 0 }, func(a int64, x hourly) int64 { return a + int64(x.Events) }).View("per hour")

		d := startDriver(t, f, time.Unix(0, 0))
		defer d.Close()
		d.BatchSize = rapid.IntRange(1, 40).Draw(t, "batch")
		d.Faults = drawNetwork(t, rng)
		must(t, pushInChunks(d, in, parts, rng, 30))
		must(t, endInput(d, rng, fragments, in.Close))
		// Each session of seven dead-lettered (once, or again after a
		// restart), nothing else.
		gotPoisoned := map[string]bool{}
		for _, dl := range d.DeadLetters() {
			i := strings.Index(dl.Error, "a session of seven: ")
			if i < 0 {
				t.Fatalf("dead letter %+v", dl)
			}
			v := dl.Error[i+len("a session of seven: "):]
			gotPoisoned[v[:strings.IndexByte(v, '}')+1]] = true
		}
		if !maps.Equal(gotPoisoned, poisoned) {
			t.Fatalf("sessions dead-lettered %v, want %v", gotPoisoned, poisoned)
		}
		checkIDSink(t, "sessions", sessSink, wantSess)
		got := idValues(t, "hourly totals", hourSink.Outputs(), func(x hourly) string { return fmt.Sprint(x) })
		if !slices.Equal(got, wantHourly) {
			t.Fatalf("hourly totals:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantHourly, "\n"))
		}
		if gotHour := viewMap[int64](t, d, "per hour"); !maps.Equal(gotHour, perHour) {
			t.Fatalf("events per hour: %v, want %v", gotHour, perHour)
		}
		var events, longest int64
		for _, s := range sessions {
			events += int64(s.N)
			longest = max(longest, s.End-s.Start)
		}
		for view, want := range map[string]any{
			"sessions": int64(len(sessions)), "session events": events,
			"longest session": splice.Opt[int64]{Value: longest, Valid: len(sessions) > 0}, "hours": int64(len(totals)),
		} {
			if got, err := d.Value(view); err != nil || got != want {
				t.Fatalf("view %s: %v, %v; want %v", view, got, err, want)
			}
		}
	})
}

// ---------------------------------------------------------------------------
// Devices with int64 ids (negative ones, and the extremes) in a source
// partitioned by key (WithKeyedPartitions, each device's readings in the
// partition KeyPartition names, out of order by less than the delay),
// summed per device with a state TTL, and their peaks kept by a Process
// whose view publishes only peaks of at least 50 and ranks by peak. The
// views' answers — every entry in key order, pages of random sizes
// through After, prefixes of the printed keys, the top entries and single
// keys — equal a model's at every check, with checkpoints, crashes and
// restarts between. Each partition also carries a heartbeat device so
// that the watermark moves.

type reading struct {
	Dev int64
	At  time.Time
	V   int64
}

type peak struct {
	Peak, N int64
}

func TestOutsideIntDeviceViews(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rng := rand.New(rand.NewPCG(rapid.Uint64().Draw(t, "seed"), 31))
		partitions := rapid.IntRange(1, 4).Draw(t, "partitions")
		fragments := partitions * rapid.IntRange(1, 3).Draw(t, "fragments per partition")
		ttl := int64(rapid.IntRange(2, 20).Draw(t, "ttl minutes")) * int64(time.Minute)
		const delay = time.Minute
		devs := []int64{math.MinInt64, math.MaxInt64, 0, -1, 1, -10, 10, -123, 123, 1 << 40, -(1 << 40), 19, -19, 100, -100}
		devs = devs[:rapid.IntRange(1, len(devs)).Draw(t, "devices")]
		hb := make([]int64, partitions) // a heartbeat device per partition
		for p := range hb {
			for x := int64(7_000_001); ; x++ {
				if q, _ := flows.KeyPartition(x, partitions); q == p {
					hb[p] = x
					break
				}
			}
		}
		part := func(dev int64) int {
			p, err := flows.KeyPartition(dev, partitions)
			if err != nil {
				t.Fatal(err)
			}
			return p
		}

		in := flowstest.NewInput[reading](partitions)
		f := flows.New("devices", flows.WithFragments(fragments))
		src := flows.From(f, "readings", in, flows.WithEventTime(func(r reading) time.Time { return r.At }, delay), flows.WithKeyedPartitions())
		ks := flows.KeyBy(src, func(r reading) int64 { return r.Dev })
		flows.Aggregate(ks, func() int64 { return 0 }, func(a int64, r reading) int64 { return a + r.V }, flows.WithStateTTL(time.Duration(ttl))).View("sum")
		flows.Process(ks, flows.Handler[int64, reading, peak, int64]{
			OnEvent: func(c *flows.Context[int64, peak, int64], r reading) {
				s, _ := c.State()
				s.Peak = max(s.Peak, r.V)
				s.N++
				c.SetState(s)
			},
		}).View("peak", flows.PublishIf(func(p peak) bool { return p.Peak >= 50 }), flows.ScoreBy(func(p peak) float64 { return float64(p.Peak) }))
		d := startDriver(t, f, time.Unix(0, 0))
		defer d.Close()
		d.BatchSize = rapid.IntRange(1, 20).Draw(t, "batch")

		// The model: per device in arrival order (one partition each):
		// the sum since the last gap of the TTL, alive while the
		// watermark is before its last event plus the TTL.
		type dstate struct {
			sum, last int64
			has       bool
			peak      peak
		}
		model := map[int64]*dstate{}
		maxTS := make([]int64, partitions)
		for p := range maxTS {
			maxTS[p] = math.MinInt64
		}
		apply := func(r reading) {
			s := model[r.Dev]
			if s == nil {
				s = &dstate{}
				model[r.Dev] = s
			}
			ts := r.At.UnixNano()
			if s.has && ts >= s.last+ttl {
				s.has, s.sum = false, 0
			}
			if !s.has {
				s.has, s.last = true, ts
			}
			s.sum += r.V
			s.last = max(s.last, ts)
			s.peak.Peak = max(s.peak.Peak, r.V)
			s.peak.N++
		}
		expire := func(wm int64) {
			for _, s := range model {
				if s.has && wm >= s.last+ttl {
					s.has, s.sum = false, 0
				}
			}
		}
		format := func(k int64) string { return fmt.Sprint(k) }
		checkViews := func(when string) {
			type kv struct {
				k int64
				v any
			}
			var sums, peaks []kv
			for k, s := range model {
				if s.has {
					sums = append(sums, kv{k, s.sum})
				}
				if s.peak.Peak >= 50 {
					peaks = append(peaks, kv{k, s.peak})
				}
			}
			for _, view := range []struct {
				name string
				want []kv
			}{{"sum", sums}, {"peak", peaks}} {
				slices.SortFunc(view.want, func(a, b kv) int { return cmp.Compare(a.k, b.k) })
				var wantKeys []string
				wantVal := map[string]any{}
				for _, e := range view.want {
					wantKeys = append(wantKeys, format(e.k))
					wantVal[format(e.k)] = e.v
				}
				keysOf := func(es []splice.Entry) []string {
					var ks []string
					for _, e := range es {
						ks = append(ks, e.Key)
						if e.Value != wantVal[e.Key] {
							t.Fatalf("%s: view %s: key %s = %v, want %v", when, view.name, e.Key, e.Value, wantVal[e.Key])
						}
					}
					return ks
				}
				all, err := d.Entries(view.name, splice.Query{})
				if err != nil {
					t.Fatal(err)
				}
				if got := keysOf(all); !slices.Equal(got, wantKeys) {
					t.Fatalf("%s: view %s holds keys %v, want %v", when, view.name, got, wantKeys)
				}
				// Pages.
				limit := 1 + rng.IntN(4)
				var paged []string
				for after := ""; ; {
					es, err := d.Entries(view.name, splice.Query{Limit: limit, After: after, HasAfter: len(paged) > 0})
					if err != nil {
						t.Fatal(err)
					}
					paged = append(paged, keysOf(es)...)
					if len(es) < limit {
						break
					}
					after = es[len(es)-1].Key
					if len(paged) > len(wantKeys) {
						break
					}
				}
				if !slices.Equal(paged, wantKeys) {
					t.Fatalf("%s: view %s in pages of %d: %v, want %v", when, view.name, limit, paged, wantKeys)
				}
				// Prefixes.
				for _, pre := range []string{"-", "1", "-1", "9", "0"} {
					var want []string
					for _, k := range wantKeys {
						if strings.HasPrefix(k, pre) {
							want = append(want, k)
						}
					}
					es, err := d.Entries(view.name, splice.Query{Prefix: pre})
					if err != nil {
						t.Fatal(err)
					}
					if got := keysOf(es); !slices.Equal(got, want) {
						t.Fatalf("%s: view %s with prefix %q: %v, want %v", when, view.name, pre, got, want)
					}
				}
				// The top entries: their scores.
				top := 1 + rng.IntN(4)
				score := func(v any) float64 {
					switch x := v.(type) {
					case int64:
						return float64(x)
					case peak:
						return float64(x.Peak)
					}
					t.Fatalf("a value %T", v)
					return 0
				}
				var wantScores, gotScores []float64
				for _, e := range view.want {
					wantScores = append(wantScores, score(e.v))
				}
				slices.Sort(wantScores)
				slices.Reverse(wantScores)
				wantScores = wantScores[:min(top, len(wantScores))]
				es, err := d.Entries(view.name, splice.Query{Top: top})
				if err != nil {
					t.Fatal(err)
				}
				keysOf(es)
				for _, e := range es {
					gotScores = append(gotScores, score(e.Value))
				}
				if !slices.Equal(gotScores, wantScores) {
					t.Fatalf("%s: view %s top %d: scores %v, want %v", when, view.name, top, gotScores, wantScores)
				}
				// Single keys, present or not.
				for _, k := range devs {
					w, ok := wantVal[format(k)]
					checkGet(t, d, when, view.name, format(k), w, ok)
				}
			}
		}

		clock := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
		rounds := rapid.IntRange(1, 12).Draw(t, "rounds")
		for round := range rounds {
			pending := make([][]reading, partitions)
			for range rng.IntN(30) {
				clock = clock.Add(time.Duration(rng.Int64N(int64(4 * time.Minute))))
				r := reading{Dev: devs[rng.IntN(len(devs))], At: clock.Add(-time.Duration(rng.Int64N(int64(delay)))), V: rng.Int64N(120) - 20}
				pending[part(r.Dev)] = append(pending[part(r.Dev)], r)
			}
			for p := range pending {
				pending[p] = append(pending[p], reading{Dev: hb[p], At: clock, V: 0})
				for _, r := range pending[p] {
					apply(r)
					maxTS[p] = max(maxTS[p], r.At.UnixNano())
				}
				in.Push(p, pending[p]...)
			}
			must(t, d.Drain())
			must(t, randomFault(d, rng, 5))
			must(t, d.Settle())
			expire(refWatermark(maxTS, delay))
			checkViews(fmt.Sprintf("round %d", round))
		}
		in.Close()
		must(t, d.Settle())
		expire(math.MaxInt64)
		checkViews("the end")
	})
}

// ---------------------------------------------------------------------------
// Window results re-keyed downstream, as a dashboard would keep them:
// each key's window's latest value (on time, then late refinements) is
// kept by a Process keyed by key and window, which sends the change of
// the window's value on, re-keyed by window into a sum over its keys;
// the results are also counted per window, and the too-late events per
// key. The windows are the sequential reference's cases (tumbling and
// sliding, three layouts, late and too-late events, crashes and restarts
// up to the end of the input): every downstream view equals what the
// reference's results make.

func TestOutsideWindowResultsRekeyedDownstream(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := drawWinCase(t, false, false)
		in := flowstest.NewInput[wev](c.partitions)
		f := flows.New("winrekey", flows.WithFragments(c.fragments))
		ks := flows.KeyBy(flows.From(f, "events", in, flows.WithEventTime(func(e wev) time.Time { return e.At }, c.delay)),
			func(e wev) string { return e.Key })
		ws := flows.Sliding(c.size, c.slide)
		opt := flows.AllowedLateness(c.lateness)
		var w flows.Windowed[string, wev, wstats]
		switch c.layout {
		case perWindow:
			w = flows.WindowAggregate(ks, ws, noW, addW, opt)
		case sliced:
			w = flows.WindowAggregateMerge(ks, ws, noW, addW, mergeW, opt)
		default:
			w = flows.WindowAggregateInvertible(ks, ws, noW, addW, mergeW, subW, opt)
		}
		type change struct {
			Start int64
			DN    int64
			DSum  int64
		}
		byKeyWindow := flows.KeyBy(w.Results(), func(r flows.WindowResult[string, wstats]) string {
			return fmt.Sprintf("%s@%d", r.Key, r.Start.UnixNano())
		})
		latest := flows.Process(byKeyWindow, flows.Handler[string, flows.WindowResult[string, wstats], wstats, change]{
			OnEvent: func(c *flows.Context[string, wstats, change], r flows.WindowResult[string, wstats]) {
				s, _ := c.State()
				if r.Value.N <= s.N { // an older value: refinements only grow
					return
				}
				c.Emit(change{Start: r.Start.UnixNano(), DN: r.Value.N - s.N, DSum: r.Value.Sum - s.Sum})
				c.SetState(r.Value)
			},
		}).View("latest")
		type total struct{ N, Sum int64 }
		flows.Aggregate(flows.KeyBy(latest.Out(), func(ch change) int64 { return ch.Start }),
			func() total { return total{} }, func(a total, ch change) total { return total{a.N + ch.DN, a.Sum + ch.DSum} }).View("window totals")
		flows.Count(flows.KeyBy(w.Results(), func(r flows.WindowResult[string, wstats]) int64 { return r.Start.UnixNano() })).View("firings")
		flows.Count(flows.KeyBy(w.TooLate(), func(e wev) string { return e.Key })).View("too late")
		d := startDriver(t, f, time.Unix(0, 0))
		defer d.Close()
		d.BatchSize = c.batch
		must(t, runOps(d, in, c.ops))
		must(t, c.end(d, in.Close))

		results, tooLate := refWindows(c)
		wantLatest := map[string]wstats{}
		wantTotals := map[string]total{}
		wantFirings := map[string]int64{}
		for _, r := range results {
			var key, firing string
			var start, end int64
			var v wstats
			if _, err := fmt.Sscanf(r, "%s %d %d %d/%d/%d %s", &key, &start, &end, &v.N, &v.Sum, &v.Sq, &firing); err != nil {
				t.Fatalf("reference result %q: %v", r, err)
			}
			k := fmt.Sprintf("%s@%d", key, start)
			if v.N > wantLatest[k].N {
				wantLatest[k] = v
			}
			wantFirings[fmt.Sprint(start)]++
		}
		for k, v := range wantLatest {
			var start int64
			fmt.Sscanf(k[strings.LastIndexByte(k, '@')+1:], "%d", &start)
			x := wantTotals[fmt.Sprint(start)]
			wantTotals[fmt.Sprint(start)] = total{x.N + v.N, x.Sum + v.Sum}
		}
		wantTooLate := map[string]int64{}
		for _, e := range tooLate {
			wantTooLate[strings.Fields(e)[0]]++
		}
		check := func(name string, want map[string]any) {
			if got := viewMap[any](t, d, name); !maps.Equal(got, want) {
				t.Fatalf("view %s:\n%v\nwant\n%v", name, got, want)
			}
		}
		check("latest", anyValues(wantLatest))
		check("window totals", anyValues(wantTotals))
		check("firings", anyValues(wantFirings))
		check("too late", anyValues(wantTooLate))
	})
}

// ---------------------------------------------------------------------------
// Three sources in one flow, far apart in event time: clicks in 2026,
// orders in 1999 (another out-of-orderness, other partitions), and tags
// without event time. Clicks and orders each go through a per-key
// session Process in event-time order (gaps of their own) whose sessions
// are re-keyed and counted; tags are counted. Each stage follows its own
// source's watermark only: the open sessions of each source at every
// check are a model's at that source's watermark, and the counts at the
// end are the model's, with checkpoints, crashes and restarts between.

func TestOutsideSourcesApartInEventTime(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rng := rand.New(rand.NewPCG(rapid.Uint64().Draw(t, "seed"), 37))
		fragments := rapid.IntRange(1, 6).Draw(t, "fragments")
		type src struct {
			name  string
			start time.Time
			delay time.Duration
			gap   time.Duration
			parts [][]click
			in    *flowstest.Input[click]
			pos   []int
		}
		srcs := []*src{
			{name: "clicks", start: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), delay: time.Minute, gap: 5 * time.Minute},
			{name: "orders", start: time.Date(1999, 12, 31, 23, 0, 0, 0, time.UTC), delay: 5 * time.Minute, gap: 12 * time.Minute},
		}
		users := []string{"ann", "bob", "cy", ""}
		for _, s := range srcs {
			s.parts = make([][]click, rapid.IntRange(1, 3).Draw(t, s.name+" partitions"))
			for p := range s.parts {
				clock := s.start
				for range rapid.IntRange(0, 80).Draw(t, s.name+" events") {
					clock = clock.Add(time.Duration(rng.Int64N(int64(3 * time.Minute))))
					s.parts[p] = append(s.parts[p], click{User: users[rng.IntN(len(users))], At: clock.Add(-time.Duration(rng.Int64N(int64(s.delay))))})
				}
			}
			s.in = flowstest.NewInput[click](len(s.parts))
			s.pos = make([]int, len(s.parts))
		}
		tags := flowstest.NewInput[string](2)
		var allTags []string

		f := flows.New("apart", flows.WithFragments(fragments))
		var sinks []*flowstest.Collector[sess]
		for _, s := range srcs {
			ks := keyedClicks(f, s.name, s.in, s.delay)
			p := sessionStage(ks, s.gap).View("open " + s.name)
			flows.Count(flows.KeyBy(p.Out(), sessBucket)).View("buckets " + s.name)
			sinks = append(sinks, flowstest.Collect(p.Out(), flows.OnCheckpoint()))
		}
		flows.Count(flows.KeyBy(flows.From(f, "tags", tags), flows.Identity[string])).View("tags")
		d := startDriver(t, f, time.Unix(0, 0))
		defer d.Close()
		d.BatchSize = rapid.IntRange(1, 30).Draw(t, "batch")

		check := func(when string, final bool) {
			for _, s := range srcs {
				var pushed []click
				for p := range s.parts {
					pushed = append(pushed, s.parts[p][:s.pos[p]]...)
				}
				wm := int64(math.MaxInt64)
				if !final {
					wm = pushedWatermark(s.parts, s.pos, func(c click) time.Time { return c.At }, s.delay)
				}
				_, open := sessionModel(pushed, s.gap, wm)
				if got := viewMap[sessOpen](t, d, "open "+s.name); !maps.Equal(got, open) {
					t.Fatalf("%s: open %s sessions %v, want %v (watermark %v)", when, s.name, got, open, time.Unix(0, wm).UTC())
				}
			}
			want := map[string]int64{}
			for _, tg := range allTags {
				want[tg]++
			}
			if got := viewMap[int64](t, d, "tags"); !maps.Equal(got, want) {
				t.Fatalf("%s: tags %v, want %v", when, got, want)
			}
		}
		for round := 0; ; round++ {
			more := false
			for _, s := range srcs {
				if pushSome(s.in, s.parts, s.pos, rng, 12) {
					more = true
				}
			}
			for range rng.IntN(4) {
				tg := []string{"x", "y", "z"}[rng.IntN(3)]
				tags.Push(rng.IntN(2), tg)
				allTags = append(allTags, tg)
			}
			must(t, d.Drain())
			must(t, randomFault(d, rng, 6))
			if round%3 == 2 || !more {
				must(t, d.Settle())
				check(fmt.Sprintf("round %d", round), false)
			}
			if !more {
				break
			}
		}
		must(t, endInput(d, rng, fragments, func() {
			for _, s := range srcs {
				s.in.Close()
			}
		}))
		check("the end", true)
		for i, s := range srcs {
			var all []click
			for _, p := range s.parts {
				all = append(all, p...)
			}
			closed, _ := sessionModel(all, s.gap, math.MaxInt64)
			var want []string
			buckets := map[string]int64{}
			for _, x := range closed {
				want = append(want, fmt.Sprint(x))
				buckets[sessBucket(x)]++
			}
			slices.Sort(want)
			got := idValues(t, s.name+" sessions", sinks[i].Outputs(), func(x sess) string { return fmt.Sprint(x) })
			if !slices.Equal(got, want) {
				t.Fatalf("%s sessions:\n%s", s.name, diffLines(got, want))
			}
			if gotB := viewMap[int64](t, d, "buckets "+s.name); !maps.Equal(gotB, buckets) {
				t.Fatalf("%s buckets %v, want %v", s.name, gotB, buckets)
			}
		}
	})
}

// ---------------------------------------------------------------------------
// Reminders on the processing-time clock, without event time: every
// event of a key asks for a reminder some minutes on (none: at once; the
// same time twice: one reminder), and a reminder reports the key's
// events so far; the reminders are counted per key downstream and sunk
// at once and on checkpoints. The clock moves in steps between rounds of
// events, and the driver checkpoints and restarts (or crashes a
// fragment) right after checkpoints, which loses nothing. Each key's
// events are in one partition (their order is the partition's).

type remindEv struct {
	Key string
	D   int // minutes
}

type remindOut struct {
	Key string
	At  int64
	N   int
}

func TestOutsideProcessingTimeReminders(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rng := rand.New(rand.NewPCG(rapid.Uint64().Draw(t, "seed"), 43))
		keys := []string{"a", "b", "c", "", "e", "f"}[:rapid.IntRange(1, 6).Draw(t, "keys")]
		partitions := rapid.IntRange(1, 3).Draw(t, "partitions")
		fragments := rapid.IntRange(1, 5).Draw(t, "fragments")
		partOf := map[string]int{}
		for _, k := range keys {
			partOf[k] = rng.IntN(partitions)
		}
		in := flowstest.NewInput[remindEv](partitions)
		f := flows.New("reminders", flows.WithFragments(fragments))
		type st struct{ N, Fired int }
		p := flows.Process(flows.KeyBy(flows.From(f, "events", in), func(e remindEv) string { return e.Key }),
			flows.Handler[string, remindEv, st, remindOut]{
				OnEvent: func(c *flows.Context[string, st, remindOut], e remindEv) {
					s, _ := c.State()
					s.N++
					c.SetState(s)
					c.SetProcessingTimer(c.Now().Add(time.Duration(e.D) * time.Minute))
				},
				OnTimer: func(c *flows.Context[string, st, remindOut], at time.Time) {
					if c.TimeDomain() != flows.ProcessingTime {
						panic("an event-time timer")
					}
					s, _ := c.State()
					s.Fired++
					c.SetState(s)
					c.Emit(remindOut{Key: c.Key(), At: at.UnixNano(), N: s.N})
				},
			}).View("reminders")
		onCP := flowstest.Collect(p.Out(), flows.OnCheckpoint())
		atOnce := flowstest.Collect(p.Out())
		flows.Count(flows.KeyBy(p.Out(), func(o remindOut) string { return o.Key })).View("fired")
		start := time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)
		d := startDriver(t, f, start)
		defer d.Close()
		d.BatchSize = rapid.IntRange(1, 10).Draw(t, "batch")

		// The model.
		type mk struct {
			n, fired int
			pending  map[int64]bool
		}
		model := map[string]*mk{}
		for _, k := range keys {
			model[k] = &mk{pending: map[int64]bool{}}
		}
		var want []string
		fire := func(k string, at int64) {
			m := model[k]
			m.fired++
			want = append(want, fmt.Sprint(remindOut{k, at, m.n}))
		}
		clock := start
		for round := range rapid.IntRange(1, 25).Draw(t, "rounds") {
			for range rng.IntN(8) {
				e := remindEv{Key: keys[rng.IntN(len(keys))], D: []int{0, 1, 2, 3, 5, 5, 10}[rng.IntN(7)]}
				in.Push(partOf[e.Key], e)
				m := model[e.Key]
				m.n++
				at := clock.Add(time.Duration(e.D) * time.Minute).UnixNano()
				if at <= clock.UnixNano() && !m.pending[at] {
					fire(e.Key, at)
				} else {
					m.pending[at] = true
				}
			}
			must(t, d.Drain())
			switch rng.IntN(6) {
			case 0:
				must(t, d.Checkpoint())
				must(t, d.Restart())
			case 1:
				must(t, d.Checkpoint())
				must(t, d.Crash(rng.IntN(fragments)))
			case 2:
				must(t, d.Checkpoint())
			}
			step := time.Duration(rng.IntN(4)) * time.Minute
			if rng.IntN(4) == 0 {
				step += time.Duration(rng.IntN(60)) * time.Second
			}
			clock = clock.Add(step)
			must(t, d.Advance(step))
			// Due reminders fire in time order; at one time, any key order.
			type due struct {
				k  string
				at int64
			}
			var dues []due
			for k, m := range model {
				for at := range m.pending {
					if at <= clock.UnixNano() {
						dues = append(dues, due{k, at})
						delete(m.pending, at)
					}
				}
			}
			slices.SortFunc(dues, func(a, b due) int { return cmp.Compare(a.at, b.at) })
			for _, x := range dues {
				fire(x.k, x.at)
			}
			// The states now.
			for k, m := range model {
				checkGet(t, d, fmt.Sprintf("round %d", round), "reminders", k, st{m.n, m.fired}, m.n > 0)
			}
		}
		in.Close()
		must(t, d.Settle())
		must(t, d.Checkpoint())
		must(t, d.Settle())
		slices.Sort(want)
		format := func(o remindOut) string { return fmt.Sprint(o) }
		if got := idValues(t, "on checkpoint", onCP.Outputs(), format); !slices.Equal(got, want) {
			t.Fatalf("reminders on checkpoints:\n%s", diffLines(got, want))
		}
		if got := idValues(t, "at once", atOnce.Outputs(), format); !slices.Equal(got, want) {
			t.Fatalf("reminders at once:\n%s", diffLines(got, want))
		}
		for k, m := range model {
			checkGet(t, d, "the end", "fired", k, int64(m.fired), m.fired > 0)
		}
	})
}

// ---------------------------------------------------------------------------
// An event-time timer whose function panics is dead-lettered ("a timer
// function that panics is dead-lettered: a timer fires once"), whatever
// happens to its fragment after a checkpoint that covers the firing, and
// before the fragment's processing-time clock ticks: nothing, the failure
// of another event (the fragment restores that checkpoint), a crash, or a
// restart of the process. The timer does not fire again (the checkpoint
// holds it fired), so its dead letter is the only trace of the failure.
func TestOutsideFailedEventTimerDeadLetteredAcrossRestore(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	for _, then := range []string{"nothing", "another event fails", "a crash", "a restart"} {
		t.Run(then, func(t *testing.T) {
			in, f, ks := clickFlow("timer-panic", 1, 1, 0)
			flows.Process(ks, flows.Handler[string, click, int, string]{
				OnEvent: func(c *flows.Context[string, int, string], e click) {
					if e.User == "poison" {
						panic("a poisoned event")
					}
					n, _ := c.State()
					c.SetState(n + 1)
					if c.Key() == "k" {
						c.SetEventTimer(e.At.Add(time.Minute))
					}
				},
				OnTimer: func(c *flows.Context[string, int, string], at time.Time) { panic("a failing reminder") },
			}).View("n")
			d := startDriver(t, f, time.Unix(0, 0))
			defer d.Close()
			in.Push(0, click{User: "k", At: t0})
			must(t, d.Drain())
			must(t, d.Checkpoint())
			in.Push(0, click{User: "other", At: t0.Add(2 * time.Minute)})
			must(t, d.Drain()) // k's timer fires, and its function panics
			must(t, d.Checkpoint())
			switch then {
			case "another event fails":
				in.Push(0, click{User: "poison", At: t0.Add(3 * time.Minute)})
			case "a crash":
				must(t, d.Crash(0))
			case "a restart":
				must(t, d.Restart())
			}
			must(t, d.Drain())
			must(t, d.Advance(time.Second)) // the clock ticks
			var timers, events int
			for _, dl := range d.DeadLetters() {
				switch {
				case strings.Contains(dl.Error, "a failing reminder") && dl.Key == "k":
					timers++
				case strings.Contains(dl.Error, "a poisoned event"):
					events++
				default:
					t.Errorf("a dead letter of nothing that failed: %+v", dl)
				}
			}
			if timers != 1 {
				t.Errorf("k's failed timer dead-lettered %d times, want once (dead letters %+v)", timers, d.DeadLetters())
			}
			if want := map[bool]int{true: 1}[then == "another event fails"]; events != want {
				t.Errorf("the poisoned event dead-lettered %d times, want %d", events, want)
			}
			if v, err := d.Get("n", "k"); err != nil || v != 1 {
				t.Errorf("k = %v, %v; want 1", v, err)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Context.Timestamp in OnTimer: an event-time timer's time, and the zero
// time in a processing-time timer ("the zero time for sources without
// event time, and in processing-time timers") — one fired by the clock
// and one set for the batch's processing time, which fires as soon as
// the event's handler returns; likewise Context.TimeDomain.
func TestOutsideTimestampInTimers(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	in, f, ks := clickFlow("timestamps", 1, 2, 0)
	type seen struct {
		Dom flows.TimeDomain
		At  time.Time
		TS  time.Time
	}
	var got []seen
	flows.Process(ks, flows.Handler[string, click, int, int]{
		OnEvent: func(c *flows.Context[string, int, int], e click) {
			c.SetState(1)
			switch e.User {
			case "event":
				c.SetEventTimer(e.At.Add(time.Minute))
			case "clock":
				c.SetProcessingTimer(c.Now().Add(time.Minute))
			case "now":
				c.SetProcessingTimer(c.Now())
			}
		},
		OnTimer: func(c *flows.Context[string, int, int], at time.Time) {
			got = append(got, seen{c.TimeDomain(), at, c.Timestamp()})
		},
	}).View("n")
	start := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	d := startDriver(t, f, start)
	defer d.Close()
	for i, u := range []string{"event", "clock", "now"} {
		in.Push(0, click{User: u, At: t0.Add(time.Duration(i) * time.Second)})
	}
	in.Push(0, click{User: "later", At: t0.Add(time.Hour)})
	must(t, d.Drain())
	must(t, d.Advance(2*time.Minute))
	want := []seen{
		{flows.ProcessingTime, start, time.Time{}},                  // "now", at once
		{flows.EventTime, t0.Add(time.Minute), t0.Add(time.Minute)}, // "event", by the watermark
		{flows.ProcessingTime, start.Add(time.Minute), time.Time{}}, // "clock", by the clock
	}
	keys := func(ss []seen) []string {
		ks := make([]string, len(ss))
		for i, s := range ss {
			ks[i] = fmt.Sprintf("%v %v %v", s.Dom, s.At.UTC(), s.TS.UTC())
		}
		slices.Sort(ks)
		return ks
	}
	if g, w := keys(got), keys(want); !slices.Equal(g, w) {
		t.Errorf("timers (domain, time, Timestamp):\n%s\nwant\n%s", strings.Join(g, "\n"), strings.Join(w, "\n"))
	}
}

// ---------------------------------------------------------------------------
// Helpers the tests above share.

// keyedClicks is f's source named source, of in, with event time and the
// out-of-orderness delay, keyed by user.
func keyedClicks(f *flows.Flow, source string, in *flowstest.Input[click], delay time.Duration) flows.KeyedStream[string, click] {
	return flows.KeyBy(flows.From(f, source, in, flows.WithEventTime(func(c click) time.Time { return c.At }, delay)),
		func(c click) string { return c.User })
}

// clickFlow is a new flow named name of the given fragments, an input of
// the given partitions, and the flow's source "clicks" of it (keyedClicks).
func clickFlow(name string, partitions, fragments int, delay time.Duration) (*flowstest.Input[click], *flows.Flow, flows.KeyedStream[string, click]) {
	in := flowstest.NewInput[click](partitions)
	f := flows.New(name, flows.WithFragments(fragments))
	return in, f, keyedClicks(f, "clicks", in, delay)
}

// checkIDSink checks that the sink s (named name) had every output id
// with one value only, and that its values by id are want (sorted).
func checkIDSink(t *rapid.T, name string, s *idSink, want []string) {
	if len(s.clash) > 0 {
		t.Fatalf("%s sink: ids with two values: %q", name, s.clash)
	}
	if got := s.values(); !slices.Equal(got, want) {
		t.Fatalf("%s sink holds %d outputs by id:\n%s\nwant %d:\n%s", name, len(got), strings.Join(got, "\n"), len(want), strings.Join(want, "\n"))
	}
}

// endInput closes the input (closeInput), half the time crashes one of
// the fragments right as the end of the input makes everything due, and
// settles d.
func endInput(d *flowstest.Driver, rng *rand.Rand, fragments int, closeInput func()) error {
	closeInput()
	if rng.IntN(2) == 0 {
		if err := d.Crash(rng.IntN(fragments)); err != nil {
			return err
		}
	}
	return d.Settle()
}

// pushSome pushes to each partition p of in the next 0 to most-1 events
// of parts[p] (pos[p] counts those pushed so far), and says whether any
// are left.
func pushSome[T any](in *flowstest.Input[T], parts [][]T, pos []int, rng *rand.Rand, most int) bool {
	more := false
	for p := range parts {
		k := min(len(parts[p])-pos[p], rng.IntN(most))
		in.Push(p, parts[p][pos[p]:pos[p]+k]...)
		pos[p] += k
		more = more || pos[p] < len(parts[p])
	}
	return more
}

// anyValues is m with its values as any, to compare with a view's.
func anyValues[V any](m map[string]V) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// checkGet checks view's value of key (at when): want if ok, else none.
func checkGet(t *rapid.T, d *flowstest.Driver, when, view, key string, want any, ok bool) {
	v, err := d.Get(view, key)
	switch {
	case !ok && !errors.Is(err, splice.ErrNotFound):
		t.Fatalf("%s: view %s key %q: %+v, %v; want none", when, view, key, v, err)
	case ok && (err != nil || v != want):
		t.Fatalf("%s: view %s key %q: %+v, %v; want %+v", when, view, key, v, err, want)
	}
}

// startDriver is a driver of f with its clock at clock; the caller
// closes it.
func startDriver(t fataler, f *flows.Flow, clock time.Time) *flowstest.Driver {
	t.Helper()
	d, err := flowstest.New(f, clock)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// viewMap is every entry of view, by key.
func viewMap[V any](t fataler, d *flowstest.Driver, view string) map[string]V {
	t.Helper()
	es, err := flowstest.EntriesOf[V](d, view, splice.Query{})
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]V{}
	for _, e := range es {
		m[e.Key] = e.Value
	}
	return m
}

// pushedWatermark is the watermark the first pos[p] events of each
// partition p make (refWatermark).
func pushedWatermark[T any](parts [][]T, pos []int, at func(T) time.Time, delay time.Duration) int64 {
	maxTS := make([]int64, len(parts))
	for p := range parts {
		maxTS[p] = math.MinInt64
		for _, e := range parts[p][:pos[p]] {
			maxTS[p] = max(maxTS[p], at(e).UnixNano())
		}
	}
	return refWatermark(maxTS, delay)
}
