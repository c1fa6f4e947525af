package actor

// More flows written as an outside user would write them, run by Start
// with a pebble store on disk and checked against plain Go models built
// from what the flows package documents: session windows with allowed
// lateness re-keyed into a second stage, a Process with event-time and
// processing-time timers under a state TTL re-keyed into a Reduce,
// sliding windows with early triggers read through windowed views while
// they run, and windows of windows (through ByKey and through KeyBy).
// Each crashes (no final checkpoint) and restarts on the same store at
// the places where wrong answers hide: right after a checkpoint, with
// input applied since, at the very end of the input.

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/splice"
)

// ohNode is an engine on the pebble store in a directory. Stopping it or
// crashing it closes the store; a test that fails midway leaves neither
// open (t.Cleanup), so that goleak and the next test see nothing of it.
type ohNode struct {
	e     *Engine
	store *recovery.Store
	done  bool
}

// ohStartOn starts an engine of f on the store in dir.
func ohStartOn(t *testing.T, dir string, f *flows.Flow, cfg func(*recovery.Store) Config) *ohNode {
	t.Helper()
	n := &ohNode{store: oeOpen(t, dir)}
	t.Cleanup(n.stop)
	n.e = oeStart(t, f, cfg(n.store))
	return n
}

func (n *ohNode) end(crash bool) {
	if n.done {
		return
	}
	n.done = true
	switch {
	case n.e == nil:
	case crash:
		oeCrash(n.e)
	default:
		n.e.Stop()
	}
	n.store.Close()
}

// stop stops the engine (a final checkpoint) and closes the store.
func (n *ohNode) stop() { n.end(false) }

// crash stops the engine as a crash would (oeCrash) and closes the store.
func (n *ohNode) crash() { n.end(true) }

// ohComplete reports whether every fragment applied its inputs to their
// end and sent everything downstream.
func ohComplete(e *Engine) bool {
	for _, fr := range e.Fragments() {
		if !fr.Complete.Load() {
			return false
		}
	}
	return true
}

// ohWatermarkAt reports whether every fragment's watermark is at least wm.
func ohWatermarkAt(e *Engine, wm time.Time) bool {
	for _, fr := range e.Fragments() {
		if fr.Watermark.Load() < wm.UnixNano() {
			return false
		}
	}
	return true
}

// ohReadWhile calls read again and again, a millisecond apart, until the
// stop it returns is called (at the latest when the test ends, before the
// engine it reads stops).
func ohReadWhile(t *testing.T, read func()) (stop func()) {
	done, quit := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			default:
			}
			read()
			time.Sleep(time.Millisecond)
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { close(quit); <-done }) }
	t.Cleanup(stop)
	return stop
}

// ohDrained waits for e to drain.
func ohDrained(t *testing.T, e *Engine, what string) {
	t.Helper()
	select {
	case <-e.Drained():
	case <-e.Failed():
		t.Fatalf("%s: the engine failed: %v", what, e.Err())
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: not drained in 20 s", what)
	}
}

// ---------------------------------------------------------------------------
// Clicks in per-user sessions (gap 10 s) with two minutes of allowed
// lateness, over a skewed input: a hot user with most of the clicks, in
// bursts that leave gaps between sessions, almost all in one partition;
// a third partition that stays empty (idle after a timeout, so that it
// does not hold the watermark back). The input comes in rounds of a
// minute of event time; from the second round on, each round also
// carries clicks of the minute before, late behind the watermark, some
// of which bridge two fired sessions of the hot user (the sessions merge,
// across batches). The session results are re-keyed by a group of users
// into an Aggregate of the longest session of the group (events and
// span), kept as a view, and sunk on checkpoints; too-late clicks are sunk
// too. The engine crashes right after a checkpoint, then with rounds
// applied since its last checkpoint, then right as the input ends, and
// is stopped and started again on the same store at the end.
//
// No click is too late whatever the watermark: a click of round r is at
// most a minute older than round r, and the watermark is at most the
// newest click pushed (round r's end) less the delay, so its session
// ends within the lateness, and no session it overlaps has been dropped.
// So the final sessions are those of all the clicks (overlapping
// [t, t+gap) merged), whatever the batches and crashes: each must come
// out with its whole value, every result is a session of the clicks
// inside its bounds, and the group maxima are the final sessions'.

type ohClick struct {
	User string
	At   time.Time
	V    int64
}

type ohSess struct{ N, Sum int64 }

type ohGroupMax struct{ N, SpanMS int64 }

func ohGroup(user string) string {
	if user == "hot" {
		return "g-hot"
	}
	var h int
	for _, c := range user {
		h += int(c)
	}
	return fmt.Sprintf("g%d", h%3)
}

type ohSession struct {
	user       string
	start, end time.Time
	val        ohSess
}

// ohSessions merges each user's clicks into sessions: [t, t+gap) of
// clicks that overlap.
func ohSessions(clicks []ohClick, gap time.Duration) map[string][]ohSession {
	by := map[string][]ohClick{}
	for _, c := range clicks {
		by[c.User] = append(by[c.User], c)
	}
	out := map[string][]ohSession{}
	for u, cs := range by {
		sort.SliceStable(cs, func(i, j int) bool { return cs[i].At.Before(cs[j].At) })
		var ss []ohSession
		for _, c := range cs {
			if n := len(ss) - 1; n >= 0 && c.At.Before(ss[n].end) {
				ss[n].end = c.At.Add(gap) // the clicks are in time order
				ss[n].val.N++
				ss[n].val.Sum += c.V
				continue
			}
			ss = append(ss, ohSession{user: u, start: c.At, end: c.At.Add(gap), val: ohSess{1, c.V}})
		}
		out[u] = ss
	}
	return out
}

func TestEngineOutsideHuntSessionsRekeyedAcrossCrashes(t *testing.T) {
	const (
		gap      = 10 * time.Second
		lateness = 2 * time.Minute
		delay    = 2 * time.Second
		rounds   = 11
	)
	t0 := time.Date(2032, 3, 1, 0, 0, 0, 0, time.UTC)
	in := flowstest.NewInput[ohClick](3)
	results := newOESink[flows.WindowResult[string, ohSess]]()
	tooLate := newOESink[ohClick]()
	build := func() *flows.Flow {
		f := flows.New("hunt-sessions", flows.WithFragments(8))
		src := flows.From(f, "clicks", flows.Source[ohClick](in),
			flows.WithEventTime(func(c ohClick) time.Time { return c.At }, delay), flows.WithIdleTimeout(30*time.Millisecond))
		ks := flows.KeyBy(src, func(c ohClick) string { return c.User })
		w := flows.SessionAggregate(ks, gap, func() ohSess { return ohSess{} },
			func(a ohSess, c ohClick) ohSess { return ohSess{a.N + 1, a.Sum + c.V} },
			func(a, b ohSess) ohSess { return ohSess{a.N + b.N, a.Sum + b.Sum} }, flows.AllowedLateness(lateness))
		flows.To(w.Results(), flows.Sink[flows.WindowResult[string, ohSess]](results), flows.OnCheckpoint())
		flows.To(w.TooLate(), flows.Sink[ohClick](tooLate), flows.OnCheckpoint())
		flows.AggregateView(ks.Values(), "clicks", splice.Count[ohClick](), flows.Identity[ohClick])
		groups := flows.KeyBy(w.Results(), func(r flows.WindowResult[string, ohSess]) string { return ohGroup(r.Key) })
		flows.Aggregate(groups, func() ohGroupMax { return ohGroupMax{} }, func(a ohGroupMax, r flows.WindowResult[string, ohSess]) ohGroupMax {
			return ohGroupMax{max(a.N, r.Value.N), max(a.SpanMS, r.End.Sub(r.Start).Milliseconds())}
		}).View("groups")
		return f
	}

	rng := rand.New(rand.NewPCG(21, 22))
	var clicks []ohClick
	pushed, newest := int64(0), t0
	push := func(p int, c ohClick) {
		in.Push(p, c)
		clicks = append(clicks, c)
		pushed++
		if c.At.After(newest) {
			newest = c.At
		}
	}
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	// round r: clicks in [t0+r min, t0+(r+1) min) and, from r = 1, late
	// ones in the minute before; partition 2 gets nothing.
	round := func(r int) {
		base := t0.Add(time.Duration(r) * time.Minute)
		var evs []struct {
			p int
			c ohClick
		}
		add := func(p int, c ohClick) {
			evs = append(evs, struct {
				p int
				c ohClick
			}{p, c})
		}
		hotP := func() int {
			if rng.IntN(10) == 0 {
				return 1
			}
			return 0
		}
		// the hot user's bursts: [0 s, 20 s) and [35 s, 50 s), a click
		// every 0.5 to 3 s, so that each burst is one session.
		for _, b := range [][2]int{{0, 20_000}, {35_000, 50_000}} {
			for at := b[0] + rng.IntN(1000); at < b[1]; at += 500 + rng.IntN(2500) {
				add(hotP(), ohClick{User: "hot", At: base.Add(ms(at)), V: 1 + rng.Int64N(9)})
			}
		}
		for range 12 {
			p := 0
			if rng.IntN(5) < 2 {
				p = 1
			}
			add(p, ohClick{User: fmt.Sprintf("u%02d", rng.IntN(15)), At: base.Add(ms(rng.IntN(60_000))), V: 1 + rng.Int64N(9)})
		}
		if r >= 1 {
			prev := base.Add(-time.Minute)
			// bridges between the previous round's hot bursts (the first
			// ends between 27 s and 30 s, the second starts by 36 s): most
			// overlap both.
			for range 1 + rng.IntN(2) {
				add(hotP(), ohClick{User: "hot", At: prev.Add(ms(26_500 + rng.IntN(3000))), V: 1 + rng.Int64N(9)})
			}
			for range 4 {
				add(rng.IntN(2), ohClick{User: fmt.Sprintf("u%02d", rng.IntN(15)), At: prev.Add(ms(rng.IntN(60_000))), V: 1 + rng.Int64N(9)})
			}
		}
		// the round's clicks in time order per partition, the late ones
		// among them at random places
		var onTime, lateOnes []int
		for i, e := range evs {
			if e.c.At.Before(base) {
				lateOnes = append(lateOnes, i)
			} else {
				onTime = append(onTime, i)
			}
		}
		sort.SliceStable(onTime, func(i, j int) bool { return evs[onTime[i]].c.At.Before(evs[onTime[j]].c.At) })
		for _, i := range lateOnes {
			at := rng.IntN(len(onTime) + 1)
			onTime = append(onTime[:at], append([]int{i}, onTime[at:]...)...)
		}
		for _, i := range onTime {
			push(evs[i].p, evs[i].c)
		}
	}
	dir := t.TempDir()
	cfg := func(s *recovery.Store) Config {
		return Config{Store: s, TickInterval: 5 * time.Millisecond, CheckpointInterval: 30 * time.Millisecond, BatchSize: 32, PollSize: 40}
	}
	r := 0
	rounds0 := func(e *Engine, n, run int) {
		for end := r + n; r < end && r < rounds; r++ {
			round(r)
			// every partition idle: the watermark is the newest click's
			wm := newest.Add(-delay)
			oeWait(t, fmt.Sprintf("round %d applied (run %d)", r, run), func() bool {
				return oeValue(e, "clicks") == pushed && ohWatermarkAt(e, wm)
			})
		}
	}
	// Run 0: four rounds, a checkpoint, a crash right after it.
	n := ohStartOn(t, dir, build(), cfg)
	rounds0(n.e, 4, 0)
	if err := n.e.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	n.crash()
	// Run 1: four rounds, a crash as soon as the last is applied.
	n = ohStartOn(t, dir, build(), cfg)
	if got := oeValue(n.e, "clicks"); got < 0 || got > pushed {
		t.Fatalf("after the first crash the clicks view holds %d, of %d pushed", got, pushed)
	}
	rounds0(n.e, 4, 1)
	n.crash()
	// Run 2: the last rounds, the end of the input, a crash as soon as
	// every click is applied.
	n = ohStartOn(t, dir, build(), cfg)
	rounds0(n.e, rounds, 2)
	in.Close()
	ohDrained(t, n.e, "run 2")
	n.crash()

	sessions := ohSessions(clicks, gap)
	nSessions := 0
	wantGroups := map[string]any{}
	for u, ss := range sessions {
		nSessions += len(ss)
		for _, s := range ss {
			g, _ := wantGroups[ohGroup(u)].(ohGroupMax)
			wantGroups[ohGroup(u)] = ohGroupMax{max(g.N, s.val.N), max(g.SpanMS, s.end.Sub(s.start).Milliseconds())}
		}
	}
	type bounds struct {
		user       string
		start, end int64
	}
	// finalOut: each final session has come out with its whole value.
	finalOut := func() (missing []ohSession) {
		have := map[bounds]map[ohSess]bool{}
		for _, v := range results.values() {
			b := bounds{v.Key, v.Start.UnixNano(), v.End.UnixNano()}
			if have[b] == nil {
				have[b] = map[ohSess]bool{}
			}
			have[b][v.Value] = true
		}
		for _, ss := range sessions {
			for _, s := range ss {
				if !have[bounds{s.user, s.start.UnixNano(), s.end.UnixNano()}][s.val] {
					missing = append(missing, s)
				}
			}
		}
		return missing
	}
	// Run 3: from the end of the input to a stop.
	n = ohStartOn(t, dir, build(), cfg)
	e := n.e
	ohDrained(t, e, "run 3")
	oeWait(t, "every fragment complete (run 3)", func() bool { return ohComplete(e) })
	if err := e.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(finalOut()) > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := oeValue(e, "clicks"); got != pushed {
		t.Fatalf("clicks view: %d, want %d", got, pushed)
	}
	checkGroups := func(run string) {
		t.Helper()
		got := oeEntries(t, e, "groups")
		for _, g := range oeSortedKeys(wantGroups) {
			if got[g] != wantGroups[g] {
				t.Fatalf("%s: groups view %s = %+v, want %+v", run, g, got[g], wantGroups[g])
			}
		}
		if len(got) != len(wantGroups) {
			t.Fatalf("%s: groups view has %d groups, want %d: %v", run, len(got), len(wantGroups), got)
		}
	}
	checkGroups("run 3")
	if err := e.Err(); err != nil {
		t.Fatal(err)
	}
	n.stop()
	// Run 4: started again on the same store after the stop.
	e = ohStartOn(t, dir, build(), cfg).e
	ohDrained(t, e, "run 4")
	oeWait(t, "every fragment complete (run 4)", func() bool { return ohComplete(e) })
	checkGroups("run 4")
	if err := e.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}

	results.checkConflicts(t, "session results")
	tooLate.checkConflicts(t, "too late")
	if n := tooLate.len(); n != 0 {
		t.Fatalf("%d clicks went to TooLate, e.g. %+v; none is later than the allowed lateness whatever the watermark", n, tooLate.values()[0])
	}
	if missing := finalOut(); len(missing) > 0 {
		s := missing[0]
		var all string
		for _, v := range results.values() {
			if v.Key == s.user && !v.End.Before(s.start) && !v.Start.After(s.end) {
				all += fmt.Sprintf("\n\t%s..%s %+v %v", v.Start.Format("15:04:05.000"), v.End.Format("15:04:05.000"), v.Value, v.Firing)
			}
		}
		t.Fatalf("%d of %d final sessions never came out with their value, e.g. %s %s..%s %+v; results around it:%s",
			len(missing), nSessions, s.user, s.start.Format("15:04:05.000"), s.end.Format("15:04:05.000"), s.val, all)
	}
	// Every result is a session of clicks inside one final session: it
	// starts at a click, ends a gap after one, and holds at most the
	// clicks between.
	byUser := map[string][]ohClick{}
	for _, c := range clicks {
		byUser[c.User] = append(byUser[c.User], c)
	}
	late, merged := 0, map[bounds]int{} // merged: final sessions by the results strictly inside them
	for _, v := range results.values() {
		if v.Firing == flows.Late {
			late++
		}
		var in ohSess
		startsAt, endsAfter := false, false
		for _, c := range byUser[v.Key] {
			startsAt = startsAt || c.At.Equal(v.Start)
			endsAfter = endsAfter || c.At.Add(gap).Equal(v.End)
			if !c.At.Before(v.Start) && c.At.Add(gap).Compare(v.End) <= 0 {
				in.N++
				in.Sum += c.V
			}
		}
		inside := false
		for _, s := range sessions[v.Key] {
			if !v.Start.Before(s.start) && !v.End.After(s.end) {
				inside = true
				if v.Start.After(s.start) || v.End.Before(s.end) {
					merged[bounds{s.user, s.start.UnixNano(), s.end.UnixNano()}]++
				}
			}
		}
		if !startsAt || !endsAfter || !inside || v.Value.N > in.N || v.Value.Sum > in.Sum {
			t.Fatalf("result %s %s..%s %+v %v: not a session of the user's clicks (clicks inside %+v, starts at one %v, ends a gap after one %v, inside a final session %v)",
				v.Key, v.Start.Format("15:04:05.000"), v.End.Format("15:04:05.000"), v.Value, v.Firing, in, startsAt, endsAfter, inside)
		}
	}
	if late == 0 {
		t.Fatalf("no Late refinement among %d results: the late clicks did not come after their sessions fired", results.len())
	}
	bridged := 0 // final sessions of the hot user that came out in two or more parts first
	for b, n := range merged {
		if b.user == "hot" && n >= 2 {
			bridged++
		}
	}
	if bridged == 0 {
		t.Fatal("no final session of the hot user came out in parts first: no late click merged fired sessions")
	}
	t.Logf("%d clicks, %d final sessions, %d results (%d late refinements), %d groups; %d hot sessions came out in parts first",
		len(clicks), nSessions, results.len(), late, len(wantGroups), bridged)
}

// ---------------------------------------------------------------------------
// Meter readings per device in a Process in event-time order with a
// state TTL of 25.5 s: every reading adds to the device's running total
// and sets an event-time timer at the end of its 10 s bucket, which
// emits the total so far ("flush"); a reading flagged as an alarm, when
// none is pending, sets a processing-time timer an hour on (on the
// engine's clock, moved by the test), which emits the total then
// ("alarm"). A pending alarm keeps the state from expiring. The outputs
// are re-keyed by site into a Reduce that sums them (a view), and go to a
// sink on checkpoints and to a sink at once. The input is skewed: a hot
// device with most readings in one partition, and a partition that
// stays empty until the engine has been stopped and started again, so
// that every reading before waits, in the checkpoint, for a watermark.
// Then the watermark moves and the clock jumps two hours (the pending
// alarms fire), the engine crashes with readings applied since its last
// checkpoint, and again right as the input ends, and starts once more.
//
// The model runs each device's readings sequentially in time order with
// the documented schedule (timers due before a reading fire first, then
// the state expires if its TTL passed and no timer of its own is
// pending; an alarm fires with the state as of the watermark when the
// clock jumps). Times keep off each other's boundaries (readings at
// half seconds, watermarks at quarter seconds, buckets and expiries at
// whole seconds), so the model needs no tie rule.

type ohReading struct {
	Dev   string
	At    time.Time
	Amt   int64
	Alarm bool
}

type ohDevState struct{ Total, N, Alarm int64 } // Alarm: the pending alarm's time, unix ns, or 0

type ohDevOut struct {
	Dev      string
	Kind     string // "flush" or "alarm"
	At       int64  // flush: the bucket's end, unix ns
	Total, N int64
}

type ohSiteSum struct {
	Site                   string
	Outputs, Alarms, Total int64
}

func ohSite(dev string) string {
	if dev == "hot" {
		return "s-hot"
	}
	return "s" + dev[len(dev)-1:]
}

// ohMeter is the devices' Process handler.
func ohMeter(bucket time.Duration) flows.Handler[string, ohReading, ohDevState, ohDevOut] {
	return flows.Handler[string, ohReading, ohDevState, ohDevOut]{
		OnEvent: func(c *flows.Context[string, ohDevState, ohDevOut], r ohReading) {
			s, _ := c.State()
			s.Total += r.Amt
			s.N++
			c.SetEventTimer(r.At.Truncate(bucket).Add(bucket))
			if r.Alarm && s.Alarm == 0 {
				at := c.Now().Add(time.Hour)
				c.SetProcessingTimer(at)
				s.Alarm = at.UnixNano()
			}
			c.SetState(s)
		},
		OnTimer: func(c *flows.Context[string, ohDevState, ohDevOut], at time.Time) {
			s, ok := c.State()
			if !ok {
				c.Emit(ohDevOut{Dev: c.Key(), Kind: "timer without state", At: at.UnixNano()})
				return
			}
			if c.TimeDomain() == flows.EventTime {
				c.Emit(ohDevOut{Dev: c.Key(), Kind: "flush", At: at.UnixNano(), Total: s.Total, N: s.N})
				return
			}
			c.Emit(ohDevOut{Dev: c.Key(), Kind: "alarm", Total: s.Total, N: s.N})
			s.Alarm = 0
			c.SetState(s)
		},
	}
}

// ohDevModel is one device's sequential run.
type ohDevModel struct {
	exists      bool
	total, n    int64
	alarm       bool
	last        time.Time
	timers      []time.Time // pending event-time timers, in time order
	ttl, bucket time.Duration
	dev         string
	out         []ohDevOut
	expired     int // states expired
	held        int // readings that found their state kept past its TTL by a pending alarm
}

// to moves the device's event time to t (exclusive): its timers before t
// fire, then its state expires if the TTL passed and nothing is pending.
func (m *ohDevModel) to(t time.Time) {
	for len(m.timers) > 0 && m.timers[0].Before(t) {
		m.out = append(m.out, ohDevOut{Dev: m.dev, Kind: "flush", At: m.timers[0].UnixNano(), Total: m.total, N: m.n})
		m.timers = m.timers[1:]
	}
	if m.exists && !m.alarm && len(m.timers) == 0 && m.last.Add(m.ttl).Before(t) {
		m.exists, m.total, m.n = false, 0, 0
		m.expired++
	}
}

func (m *ohDevModel) event(r ohReading) {
	m.to(r.At)
	if m.exists && m.last.Add(m.ttl).Before(r.At) {
		m.held++
	}
	m.exists = true
	m.total += r.Amt
	m.n++
	m.last = r.At
	at := r.At.Truncate(m.bucket).Add(m.bucket)
	i := sort.Search(len(m.timers), func(i int) bool { return !m.timers[i].Before(at) })
	if i == len(m.timers) || !m.timers[i].Equal(at) {
		m.timers = append(m.timers[:i], append([]time.Time{at}, m.timers[i:]...)...)
	}
	if r.Alarm && !m.alarm {
		m.alarm = true
	}
}

// fireAlarm fires the device's pending alarm, if any.
func (m *ohDevModel) fireAlarm() {
	if m.alarm {
		m.out = append(m.out, ohDevOut{Dev: m.dev, Kind: "alarm", Total: m.total, N: m.n})
		m.alarm = false
	}
}

type ohPlaced struct {
	r   ohReading
	p   int
	off int
}

func TestEngineOutsideHuntTimersTTLRekeyedReduce(t *testing.T) {
	const (
		bucket = 10 * time.Second
		ttl    = 25*time.Second + 500*time.Millisecond
		delay  = 3*time.Second + 250*time.Millisecond
	)
	t0 := time.Date(2033, 6, 1, 12, 0, 0, 0, time.UTC)
	clk := &oeClock{}
	in := flowstest.NewInput[ohReading](3)
	committed, atOnce := newOESink[ohDevOut](), newOESink[ohDevOut]()
	build := func() *flows.Flow {
		f := flows.New("hunt-meters", flows.WithFragments(8))
		src := flows.From(f, "readings", flows.Source[ohReading](in), flows.WithEventTime(func(r ohReading) time.Time { return r.At }, delay))
		ks := flows.KeyBy(src, func(r ohReading) string { return r.Dev })
		flows.AggregateView(ks.Values(), "readings", splice.Count[ohReading](), flows.Identity[ohReading])
		p := flows.Process(ks, ohMeter(bucket), flows.InEventTimeOrder(), flows.WithStateTTL(ttl)).View("devices")
		flows.To(p.Out(), flows.Sink[ohDevOut](committed), flows.OnCheckpoint())
		flows.To(p.Out(), flows.Sink[ohDevOut](atOnce))
		sums := flows.Map(p.Out(), func(o ohDevOut) ohSiteSum {
			s := ohSiteSum{Site: ohSite(o.Dev), Outputs: 1, Total: o.Total}
			if o.Kind == "alarm" {
				s.Alarms = 1
			}
			return s
		})
		flows.Reduce(flows.KeyBy(sums, func(s ohSiteSum) string { return s.Site }), func(a, b ohSiteSum) ohSiteSum {
			return ohSiteSum{Site: a.Site, Outputs: a.Outputs + b.Outputs, Alarms: a.Alarms + b.Alarms, Total: a.Total + b.Total}
		}).View("sites")
		return f
	}

	// The input, up front: partition 0 is hot (the hot device, without
	// alarms, with a minute's pause in the middle, and some others), partition 1 has the
	// others and a little of the hot device, partition 2 few readings
	// over the same time. Readings are at half seconds, out of order by
	// less than the delay within their partition.
	rng := rand.New(rand.NewPCG(31, 32))
	var parts [3][]ohReading
	for p, spec := range []struct {
		n       int
		stepMax int // seconds
		hot     int // per cent
	}{{700, 2, 70}, {300, 4, 10}, {90, 13, 0}} {
		cursor := t0.Add(5 * time.Second)
		for range spec.n {
			cursor = cursor.Add(time.Duration(rng.IntN(spec.stepMax+1)) * time.Second)
			r := ohReading{Dev: fmt.Sprintf("d%02d", rng.IntN(20)), Amt: 1 + rng.Int64N(20), Alarm: rng.IntN(20) == 0}
			if rng.IntN(100) < spec.hot && (cursor.Sub(t0) < 300*time.Second || cursor.Sub(t0) > 360*time.Second) {
				r.Dev, r.Alarm = "hot", false // an alarm would keep its state past the pause
			}
			r.At = cursor.Add(-time.Duration(rng.IntN(3))*time.Second + 500*time.Millisecond)
			parts[p] = append(parts[p], r)
		}
	}
	// Phases: the first quarter of partitions 0 and 1; then partition 2's
	// first half and the second quarter of 0 and 1; then the third
	// quarters; then the rest.
	cut := func(p, q int) int { return len(parts[p]) * q / 4 }
	var pushedEv []ohPlaced
	var pos [3]int
	pushTo := func(p, end int) {
		for ; pos[p] < end; pos[p]++ {
			in.Push(p, parts[p][pos[p]])
			pushedEv = append(pushedEv, ohPlaced{parts[p][pos[p]], p, pos[p]})
		}
	}
	// watermark: the smallest over the partitions of the newest reading
	// pushed less the delay (none while a partition has none).
	watermark := func() (time.Time, bool) {
		var low time.Time
		for p := range parts {
			if pos[p] == 0 {
				return time.Time{}, false
			}
			var newest time.Time
			for _, r := range parts[p][:pos[p]] {
				if r.At.After(newest) {
					newest = r.At
				}
			}
			if w := newest.Add(-delay); low.IsZero() || w.Before(low) {
				low = w
			}
		}
		return low, true
	}
	// model runs every device over the readings pushed before wm (all
	// with end), with the alarms pending at alarmAt (if not zero) fired
	// there; it returns the devices' models.
	model := func(wm time.Time, end bool, alarmAt time.Time) map[string]*ohDevModel {
		evs := append([]ohPlaced(nil), pushedEv...)
		sort.SliceStable(evs, func(i, j int) bool {
			a, b := evs[i], evs[j]
			if !a.r.At.Equal(b.r.At) {
				return a.r.At.Before(b.r.At)
			}
			if a.p != b.p {
				return a.p < b.p
			}
			return a.off < b.off
		})
		ms := map[string]*ohDevModel{}
		alarmed := alarmAt.IsZero()
		for _, e := range evs {
			if !end && !e.r.At.Before(wm) {
				break
			}
			if !alarmed && !e.r.At.Before(alarmAt) {
				for _, m := range ms {
					m.to(alarmAt)
					m.fireAlarm()
				}
				alarmed = true
			}
			m := ms[e.r.Dev]
			if m == nil {
				m = &ohDevModel{dev: e.r.Dev, ttl: ttl, bucket: bucket}
				ms[e.r.Dev] = m
			}
			m.event(e.r)
		}
		if !alarmed {
			for _, m := range ms {
				m.to(alarmAt)
				m.fireAlarm()
			}
		}
		for _, m := range ms {
			if end {
				m.to(time.Unix(0, math.MaxInt64))
			} else {
				m.to(wm)
			}
		}
		return ms
	}
	// checkDevices compares the devices view with the models' states.
	checkDevices := func(e *Engine, ms map[string]*ohDevModel) string {
		got := oeEntries(t, e, "devices")
		for dev, m := range ms {
			v, ok := got[dev]
			if ok != m.exists {
				return fmt.Sprintf("device %s: in the view %v (%+v), in the model %v (%d readings, last %s)", dev, ok, v, m.exists, m.n, m.last.Format("15:04:05.0"))
			}
			if !ok {
				continue
			}
			s, _ := v.(ohDevState)
			if s.Total != m.total || s.N != m.n || (s.Alarm != 0) != m.alarm {
				return fmt.Sprintf("device %s: %+v, want total %d of %d readings, alarm pending %v", dev, s, m.total, m.n, m.alarm)
			}
		}
		for dev := range got {
			if ms[dev] == nil {
				return fmt.Sprintf("device %s in the view, with no reading run", dev)
			}
		}
		return ""
	}
	waitDevices := func(e *Engine, what string, ms map[string]*ohDevModel) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			diff := checkDevices(e, ms)
			if diff == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s", what, diff)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	applied := func(e *Engine, what string) {
		t.Helper()
		n := int64(len(pushedEv))
		oeWait(t, what, func() bool { return oeValue(e, "readings") == n })
	}
	dir := t.TempDir()
	cfg := func(s *recovery.Store) Config {
		return Config{Store: s, Now: clk.now, TickInterval: 5 * time.Millisecond, CheckpointInterval: 30 * time.Millisecond, BatchSize: 64, PollSize: 80}
	}

	// Run 0: partition 2 has nothing, so no watermark: every reading waits.
	n := ohStartOn(t, dir, build(), cfg)
	e := n.e
	pushTo(0, cut(0, 1))
	pushTo(1, cut(1, 1))
	applied(e, "run 0's readings applied")
	if got := oeEntries(t, e, "devices"); len(got) != 0 {
		t.Fatalf("with a partition without readings, %d devices ran readings (no watermark passed any)", len(got))
	}
	n.stop()

	// Run 1: the waiting readings come back from the checkpoint;
	// partition 2 starts, and the watermark moves.
	n = ohStartOn(t, dir, build(), cfg)
	e = n.e
	applied(e, "run 1's restored readings")
	pushTo(2, len(parts[2])/2)
	pushTo(0, cut(0, 2))
	pushTo(1, cut(1, 2))
	applied(e, "run 1's readings applied")
	w1, ok := watermark()
	if !ok {
		t.Fatal("no watermark after run 1's readings")
	}
	oeWait(t, "run 1's watermark", func() bool { return ohWatermarkAt(e, w1) })
	waitDevices(e, "at run 1's watermark", model(w1, false, time.Time{}))
	// The clock jumps past every pending alarm, which fire with the
	// state as of w1; a checkpoint covers them before any crash.
	alarmsAt1 := 0
	for _, m := range model(w1, false, time.Time{}) {
		if m.alarm {
			alarmsAt1++
		}
	}
	if alarmsAt1 == 0 {
		t.Fatal("no alarm pending at run 1's watermark: the test needs some")
	}
	clk.advance(2 * time.Hour)
	oeWait(t, "the first alarms at once", func() bool {
		n := 0
		for _, o := range atOnce.values() {
			if o.Kind == "alarm" {
				n++
			}
		}
		return n >= alarmsAt1
	})
	if err := e.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	pushTo(0, cut(0, 3))
	pushTo(1, cut(1, 3))
	pushTo(2, len(parts[2])*3/4)
	applied(e, "run 1's last readings applied")
	n.crash()

	// Run 2: the rest of the input, and a crash as soon as it is applied.
	n = ohStartOn(t, dir, build(), cfg)
	for p := range parts {
		pushTo(p, len(parts[p]))
	}
	in.Close()
	ohDrained(t, n.e, "run 2")
	n.crash()

	// Run 3: from the end of the input. Every timer fired and every state
	// expired but those an alarm keeps; then the clock jumps again and
	// the alarms fire with the final totals.
	e = ohStartOn(t, dir, build(), cfg).e
	ohDrained(t, e, "run 3")
	final := model(time.Time{}, true, w1)
	waitDevices(e, "at the end of the input", final)
	clk.advance(2 * time.Hour)
	for _, m := range final {
		m.fireAlarm()
	}
	var want []ohDevOut
	wantFlush := map[[2]any]ohDevOut{}
	wantAlarms := map[ohDevOut]int{}
	wantSites := map[string]any{}
	for _, m := range final {
		want = append(want, m.out...)
		for _, o := range m.out {
			if o.Kind == "flush" {
				wantFlush[[2]any{o.Dev, o.At}] = o
			} else {
				wantAlarms[o]++
			}
			s, _ := wantSites[ohSite(o.Dev)].(ohSiteSum)
			s.Site = ohSite(o.Dev)
			s.Outputs++
			s.Total += o.Total
			if o.Kind == "alarm" {
				s.Alarms++
			}
			wantSites[s.Site] = s
		}
	}
	oeWait(t, "every output at once", func() bool { return atOnce.len() >= len(want) })
	oeWait(t, "every fragment complete", func() bool { return ohComplete(e) })
	if err := e.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	oeWait(t, "every output on checkpoints", func() bool { return committed.len() >= len(want) })
	if err := e.Err(); err != nil {
		t.Fatal(err)
	}

	// The sink on checkpoints: one history, so every output once: the
	// flushes by their timer's id, the alarms by value.
	committed.checkConflicts(t, "on checkpoints")
	atOnce.checkConflicts(t, "at once")
	check := func(name string, s *oeSink[ohDevOut], alarmsOnce bool) {
		t.Helper()
		s.mu.Lock()
		defer s.mu.Unlock()
		flushes, alarms := 0, map[ohDevOut]int{}
		for _, id := range s.order {
			o := s.byID[id]
			switch o.Kind {
			case "flush":
				w, ok := wantFlush[[2]any{o.Dev, o.At}]
				if !ok || w != o || id.Cause != flows.CauseEventTimer || id.Key != o.Dev || id.At != o.At {
					t.Fatalf("%s: %v %+v, want %+v (in the model %v)", name, id, o, w, ok)
				}
				flushes++
			case "alarm":
				if wantAlarms[o] == 0 {
					t.Fatalf("%s: alarm %+v, not the model's; the model's: %v", name, o, wantAlarms)
				}
				alarms[o]++
			default:
				t.Fatalf("%s: output %v %+v", name, id, o)
			}
		}
		if flushes != len(wantFlush) {
			t.Fatalf("%s: %d flushes, want %d", name, flushes, len(wantFlush))
		}
		for o, n := range wantAlarms {
			if alarms[o] < n || alarmsOnce && alarms[o] != n {
				t.Fatalf("%s: alarm %+v came %d times, want %d", name, o, alarms[o], n)
			}
		}
	}
	check("on checkpoints", committed, true)
	// At once, a Process in event-time order makes each event-time output
	// once, whatever the crashes; an alarm set again by a replay fires
	// under another id, with the same value.
	check("at once", atOnce, false)
	oeWait(t, "the sites view", func() bool {
		got := oeEntries(t, e, "sites")
		for s, v := range wantSites {
			if got[s] != v {
				return false
			}
		}
		return len(got) == len(wantSites)
	})
	// The alarms fired, the watermark is complete: no state is left.
	oeWait(t, "every state expired after the last alarms", func() bool { return len(oeEntries(t, e, "devices")) == 0 })
	alarmsPending, expired, held := 0, 0, 0
	for _, m := range final {
		if m.exists {
			alarmsPending++
		}
		expired += m.expired
		held += m.held
	}
	if expired == 0 || held == 0 || final["hot"].expired == 0 {
		t.Fatalf("states expired %d times (the hot device's %d), %d readings found theirs kept by an alarm: the test needs all three",
			expired, final["hot"].expired, held)
	}
	t.Logf("%d readings, %d devices, %d flushes, %d alarms (%d at run 1's watermark, %d pending at the end), %d expiries, %d readings held by an alarm; %d outputs at once",
		len(pushedEv), len(final), len(wantFlush), len(want)-len(wantFlush), alarmsAt1, alarmsPending, expired, held, atOnce.len())
}

// ---------------------------------------------------------------------------
// Sales per shop in sliding windows (30 s, one every 10 s) of an
// invertible sum, with a count trigger (an Early result every 5th sale
// of a window) and a periodic one (every 40 ms of processing time), kept
// in three views: the sales of each window over every shop, the shops of
// each window, and each shop's value in each window. A hot shop has most
// sales, in one partition; a third partition has a few. No sale is late
// (out of order by less than the delay within its partition). While the
// engine runs, a reader asks the views again and again: no window's value
// may exceed its final one, and a window every fragment's watermark
// passed (Complete) must hold its final value. The engine crashes right
// after a checkpoint and with rounds applied since, and is stopped and
// started again at the end of the input. The results, sunk on
// checkpoints, are one history: each window's OnTime result once with
// its final value, after every Early one; the count trigger's at every
// 5th sale of the window (a multiple of 5 sales each, once); no Early
// result above the final value.

type ohSale struct {
	Shop string
	At   time.Time
	Amt  int64
}

type ohAcc struct{ N, Sum int64 }

func TestEngineOutsideHuntEarlySlidingWindowsReadWhileRunning(t *testing.T) {
	const (
		size, slide = 30 * time.Second, 10 * time.Second
		every       = 5
		delay       = 3 * time.Second
		rounds      = 10
	)
	t0 := time.Date(2034, 9, 1, 6, 0, 0, 0, time.UTC)
	in := flowstest.NewInput[ohSale](3)
	results := newOESink[flows.WindowResult[string, ohAcc]]()
	build := func() *flows.Flow {
		f := flows.New("hunt-sales", flows.WithFragments(8))
		src := flows.From(f, "sales", flows.Source[ohSale](in), flows.WithEventTime(func(s ohSale) time.Time { return s.At }, delay))
		ks := flows.KeyBy(src, func(s ohSale) string { return s.Shop })
		flows.AggregateView(ks.Values(), "count", splice.Count[ohSale](), flows.Identity[ohSale])
		w := flows.WindowAggregateInvertible(ks, flows.Sliding(size, slide), func() ohAcc { return ohAcc{} },
			func(a ohAcc, s ohSale) ohAcc { return ohAcc{a.N + 1, a.Sum + s.Amt} },
			func(a, b ohAcc) ohAcc { return ohAcc{a.N + b.N, a.Sum + b.Sum} },
			func(a, b ohAcc) ohAcc { return ohAcc{a.N - b.N, a.Sum - b.Sum} },
			flows.FireEvery(every), flows.EarlyEvery(40*time.Millisecond))
		flows.WindowView(w, "sales", splice.Sum[int64](), func(_ string, a ohAcc) int64 { return a.Sum }, 1000*time.Hour)
		flows.WindowView(w, "shops", splice.Count[struct{}](), func(string, ohAcc) struct{} { return struct{}{} }, 1000*time.Hour)
		w.KeyedView("byshop", 1000*time.Hour)
		flows.To(w.Results(), flows.Sink[flows.WindowResult[string, ohAcc]](results), flows.OnCheckpoint())
		return f
	}

	// The input, up front, in rounds of 20 s of event time; each
	// partition's sales in time order but for a jitter under the delay:
	// less than a second onto a window boundary before, less than 2 s
	// more.
	rng := rand.New(rand.NewPCG(41, 42))
	var roundsIn [rounds][3][]ohSale
	var all []ohSale
	for r := range rounds {
		base := t0.Add(time.Duration(r) * 20 * time.Second)
		for p, spec := range []struct{ n, hot int }{{60, 80}, {25, 0}, {3, 0}} {
			for i := range spec.n {
				at := base.Add(time.Duration(i) * 20 * time.Second / time.Duration(spec.n)).Add(time.Duration(rng.IntN(300)) * time.Millisecond)
				if b := at.Truncate(slide); at.Sub(b) < time.Second {
					at = b // a window boundary, less than a second back
				}
				at = at.Add(-time.Duration(rng.IntN(2000)) * time.Millisecond)
				s := ohSale{Shop: fmt.Sprintf("shop%d", rng.IntN(12)), At: at, Amt: 1 + rng.Int64N(50)}
				if rng.IntN(100) < spec.hot {
					s.Shop = "hot"
				}
				roundsIn[r][p] = append(roundsIn[r][p], s)
				all = append(all, s)
			}
		}
	}
	type wk struct {
		shop  string
		start int64
	}
	final := map[wk]ohAcc{}
	sales := map[int64]int64{}
	shops := map[int64]int64{}
	for _, s := range all {
		ts := s.At.UnixNano()
		for st := ts - ts%int64(slide); st > ts-int64(size); st -= int64(slide) {
			a := final[wk{s.Shop, st}]
			if a.N == 0 {
				shops[st]++
			}
			final[wk{s.Shop, st}] = ohAcc{a.N + 1, a.Sum + s.Amt}
			sales[st] += s.Amt
		}
	}

	// The reader while running: values never above the final ones, and
	// complete windows at theirs.
	var bad atomic.Value
	var reads, completeSeen, runNo atomic.Int64
	fail := func(format string, args ...any) { bad.CompareAndSwap(nil, fmt.Sprintf(format, args...)) }
	readOnce := func(e *Engine) {
		ctx := context.Background()
		q := splice.Query{From: math.MinInt64, Limit: 100_000}
		for view, want := range map[string]map[int64]int64{"sales": sales, "shops": shops} {
			res, err := splice.Evaluate(ctx, e, splice.Request{View: view, Op: splice.OpWindows, Query: q})
			if err != nil {
				continue
			}
			reads.Add(1)
			for _, w := range res.Windows {
				n, _ := w.Value.(int64)
				st := w.Start.UnixNano()
				if w.End.Sub(w.Start) != size || n > want[st] || w.Complete && n != want[st] {
					fail("run %d, view %s, window %s..%s (complete %v): %v, final %d", runNo.Load(), view, w.Start.Format("15:04:05"), w.End.Format("15:04:05"), w.Complete, w.Value, want[st])
				}
				if w.Complete {
					completeSeen.Add(1)
				}
			}
		}
		res, err := splice.Evaluate(ctx, e, splice.Request{View: "byshop", Op: splice.OpEntries, Query: q})
		if err != nil {
			return
		}
		reads.Add(1)
		for _, kw := range res.KeyedWindows {
			for _, en := range kw.Entries {
				a, _ := en.Value.(ohAcc)
				f := final[wk{en.Key, kw.Start.UnixNano()}]
				if a.N > f.N || a.Sum > f.Sum || kw.Complete && a != f {
					fail("run %d, view byshop, window %s, %s (complete %v): %+v, final %+v", runNo.Load(), kw.Start.Format("15:04:05"), en.Key, kw.Complete, en.Value, f)
				}
			}
		}
	}
	// run reads the views until its stop is called (at the latest when
	// the test ends, before the engine stops).
	run := func(e *Engine) (stop func()) { return ohReadWhile(t, func() { readOnce(e) }) }
	pushed := int64(0)
	round := func(e *Engine, r int) {
		for p := range 3 {
			in.Push(p, roundsIn[r][p]...)
			pushed += int64(len(roundsIn[r][p]))
		}
		oeWait(t, fmt.Sprintf("round %d applied", r), func() bool { return oeValue(e, "count") == pushed })
	}
	dir := t.TempDir()
	cfg := func(s *recovery.Store) Config {
		return Config{Store: s, TickInterval: 5 * time.Millisecond, CheckpointInterval: 30 * time.Millisecond, BatchSize: 16, PollSize: 20}
	}
	r := 0
	for run0 := range 3 {
		runNo.Store(int64(run0))
		n := ohStartOn(t, dir, build(), cfg)
		stop := run(n.e)
		for end := r + 4; r < end && r < rounds; r++ {
			round(n.e, r)
			time.Sleep(50 * time.Millisecond) // a periodic early firing or two
		}
		switch run0 {
		case 0: // right after a checkpoint
			if err := n.e.Checkpoint(context.Background()); err != nil {
				t.Fatal(err)
			}
			stop()
			n.crash()
		case 1: // rounds applied since the last checkpoint
			stop()
			n.crash()
		case 2: // the end of the input, and a stop
			in.Close()
			ohDrained(t, n.e, "run 2")
			stop()
			n.stop()
		}
	}
	runNo.Store(3)
	e := ohStartOn(t, dir, build(), cfg).e
	stop := run(e)
	ohDrained(t, e, "run 3")
	oeWait(t, "every fragment complete", func() bool { return ohComplete(e) })
	readOnce(e)
	stop()
	if v := bad.Load(); v != nil {
		t.Fatalf("a read: %v", v)
	}
	// At the end every window holds its final value.
	q := splice.Query{From: math.MinInt64, Limit: 100_000}
	for view, want := range map[string]map[int64]int64{"sales": sales, "shops": shops} {
		res, err := splice.Evaluate(context.Background(), e, splice.Request{View: view, Op: splice.OpWindows, Query: q})
		if err != nil {
			t.Fatal(err)
		}
		got := map[int64]any{}
		for _, w := range res.Windows {
			if w.Value != int64(0) {
				got[w.Start.UnixNano()] = w.Value
			}
		}
		for st, n := range want {
			if got[st] != n {
				t.Fatalf("view %s, window %s: %v, want %d", view, time.Unix(0, st).UTC().Format("15:04:05"), got[st], n)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("view %s: %d windows with a value, want %d", view, len(got), len(want))
		}
	}
	if err := e.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	onTimeCount := func() int {
		n := 0
		for _, v := range results.values() {
			if v.Firing == flows.OnTime {
				n++
			}
		}
		return n
	}
	oeWait(t, "every OnTime result on checkpoints", func() bool { return onTimeCount() >= len(final) })
	if err := e.Err(); err != nil {
		t.Fatal(err)
	}

	results.checkConflicts(t, "window results")
	results.mu.Lock()
	defer results.mu.Unlock()
	onTime := map[wk]int{}
	counted := map[wk][]int64{} // the count trigger's sales counts, in order
	last := map[wk]ohAcc{}
	periodic := 0
	for _, id := range results.order {
		v := results.byID[id]
		k := wk{v.Key, v.Start.UnixNano()}
		f, ok := final[k]
		desc := fmt.Sprintf("%v %s %s..%s %+v %v (final %+v)", id, v.Key, v.Start.Format("15:04:05"), v.End.Format("15:04:05"), v.Value, v.Firing, f)
		switch {
		case !ok || v.End.Sub(v.Start) != size:
			t.Fatalf("result %s: no such window", desc)
		case onTime[k] > 0:
			t.Fatalf("result %s after the window's OnTime one", desc)
		case v.Value.N < last[k].N || v.Value.Sum < last[k].Sum || v.Value.N > f.N || v.Value.Sum > f.Sum:
			t.Fatalf("result %s: not between the window's previous result %+v and its final value", desc, last[k])
		}
		last[k] = v.Value
		switch v.Firing {
		case flows.OnTime:
			if v.Value != f {
				t.Fatalf("result %s: OnTime without the final value", desc)
			}
			onTime[k]++
		case flows.Early:
			if id.Cause == flows.CauseProcessingTimer {
				periodic++
				break
			}
			counted[k] = append(counted[k], v.Value.N)
		default:
			t.Fatalf("result %s: no sale is late", desc)
		}
	}
	for k, f := range final {
		if onTime[k] != 1 {
			t.Fatalf("window %s %s: %d OnTime results, want 1", k.shop, time.Unix(0, k.start).UTC().Format("15:04:05"), onTime[k])
		}
		var want []int64
		for n := int64(every); n <= f.N; n += every {
			want = append(want, n)
		}
		if fmt.Sprint(counted[k]) != fmt.Sprint(want) {
			t.Fatalf("window %s %s (%d sales): count-triggered Early results at %v sales, want %v",
				k.shop, time.Unix(0, k.start).UTC().Format("15:04:05"), f.N, counted[k], want)
		}
	}
	if periodic == 0 || completeSeen.Load() == 0 {
		t.Fatalf("%d periodic Early results, %d complete windows read while running: the test needs both", periodic, completeSeen.Load())
	}
	t.Logf("%d sales, %d windows of shops, %d results (%d periodic early); %d reads while running, %d complete windows seen",
		len(all), len(final), len(results.order), periodic, reads.Load(), completeSeen.Load())
}

// ---------------------------------------------------------------------------
// Windows of windows: fares per zone in one-minute tumbling windows, whose
// results go on, dated by their window's last instant, into five-minute
// windows of the per-minute sums twice — once through ByKey (the same
// fragment, no shuffle) and once re-keyed through KeyBy (an exchange) —
// and the five-minute sums re-keyed again by region into an Aggregate
// with a view. A minute's result made by a move of the watermark is on
// time for the five-minute windows the same move fires, either way, so
// no result of either stage is late: each five-minute window's OnTime
// result is the sum of its minutes' fares, once, and the region totals
// are every fare's. The input is skewed (a hot zone with most trips in
// one partition, a partition with one trip a minute), out of order by
// less than the delay within each partition, some trips on minute
// boundaries. The engine crashes right after a checkpoint, with rounds
// applied since, and right as the first stage drained the input (the
// later stages still to come), then stops and starts again. Sinks at once
// and on checkpoints alike hold the model's results by id: no value of a
// window depends on how the partitions interleave.

type ohTrip struct {
	Zone string
	At   time.Time
	Fare int64
}

func ohRegion(zone string) string {
	if zone == "z-hot" {
		return "r-hot"
	}
	return "r" + zone[len(zone)-1:]
}

func TestEngineOutsideHuntWindowsOfWindows(t *testing.T) {
	const (
		delay  = 2 * time.Second
		rounds = 16
	)
	type res = flows.WindowResult[string, int64]
	t0 := time.Date(2035, 2, 1, 0, 0, 0, 0, time.UTC)
	in := flowstest.NewInput[ohTrip](4)
	minutes, minutesAtOnce := newOESink[res](), newOESink[res]()
	fiveByKey, fiveByKeyAtOnce, fiveRekeyed := newOESink[res](), newOESink[res](), newOESink[res]()
	tooLate := newOESink[string]()
	build := func() *flows.Flow {
		f := flows.New("hunt-cascade", flows.WithFragments(8))
		src := flows.From(f, "trips", flows.Source[ohTrip](in), flows.WithEventTime(func(tr ohTrip) time.Time { return tr.At }, delay))
		ks := flows.KeyBy(src, func(tr ohTrip) string { return tr.Zone })
		flows.AggregateView(ks.Values(), "trips", splice.Count[ohTrip](), flows.Identity[ohTrip])
		sum := func(n int64, r res) int64 { return n + r.Value }
		zero := func() int64 { return 0 }
		m := flows.WindowAggregate(ks, flows.Tumbling(time.Minute), zero, func(n int64, tr ohTrip) int64 { return n + tr.Fare })
		flows.To(m.Results(), flows.Sink[res](minutes), flows.OnCheckpoint())
		flows.To(m.Results(), flows.Sink[res](minutesAtOnce))
		a := flows.WindowAggregate(m.ByKey(), flows.Tumbling(5*time.Minute), zero, sum)
		flows.To(a.Results(), flows.Sink[res](fiveByKey), flows.OnCheckpoint())
		flows.To(a.Results(), flows.Sink[res](fiveByKeyAtOnce))
		b := flows.WindowAggregate(flows.KeyBy(m.Results(), func(r res) string { return r.Key }), flows.Tumbling(5*time.Minute), zero, sum)
		flows.To(b.Results(), flows.Sink[res](fiveRekeyed), flows.OnCheckpoint())
		// In the same order in every build: a map's order would change the
		// layout between runs (the sinks' state under each other's number).
		for i, w := range []flows.Windowed[string, res, int64]{a, b} {
			name := []string{"by key", "re-keyed"}[i]
			flows.To(flows.Map(w.TooLate(), func(r res) string {
				return fmt.Sprintf("%s: %s %s=%d", name, r.Start.Format("15:04"), r.Key, r.Value)
			}), flows.Sink[string](tooLate), flows.OnCheckpoint())
		}
		flows.Aggregate(flows.KeyBy(b.Results(), func(r res) string { return ohRegion(r.Key) }), zero, sum).View("regions")
		return f
	}

	rng := rand.New(rand.NewPCG(51, 52))
	var roundsIn [rounds][4][]ohTrip
	var all []ohTrip
	for r := range rounds {
		base := t0.Add(time.Duration(r) * time.Minute)
		for p, n := range []int{90, 25, 20, 1} {
			for i := range n {
				at := base.Add(time.Duration(i) * time.Minute / time.Duration(n)).Add(time.Duration(rng.IntN(500)) * time.Millisecond)
				if b := at.Truncate(time.Minute); at.Sub(b) < 700*time.Millisecond {
					at = b // a minute boundary, less than a second back
				} else {
					at = at.Add(-time.Duration(rng.IntN(1200)) * time.Millisecond)
				}
				tr := ohTrip{Zone: fmt.Sprintf("z%02d", rng.IntN(10)), At: at, Fare: 1 + rng.Int64N(40)}
				if p == 0 && rng.IntN(10) < 8 {
					tr.Zone = "z-hot"
				}
				roundsIn[r][p] = append(roundsIn[r][p], tr)
				all = append(all, tr)
			}
		}
	}
	type wk struct {
		zone  string
		start int64
	}
	wantMin, wantFive := map[wk]int64{}, map[wk]int64{}
	wantRegions := map[string]any{}
	for _, tr := range all {
		wantMin[wk{tr.Zone, tr.At.Truncate(time.Minute).UnixNano()}] += tr.Fare
		wantFive[wk{tr.Zone, tr.At.Truncate(5 * time.Minute).UnixNano()}] += tr.Fare
		n, _ := wantRegions[ohRegion(tr.Zone)].(int64)
		wantRegions[ohRegion(tr.Zone)] = n + tr.Fare
	}

	pushed := int64(0)
	dir := t.TempDir()
	cfg := func(s *recovery.Store) Config {
		return Config{Store: s, TickInterval: 5 * time.Millisecond, CheckpointInterval: 30 * time.Millisecond, BatchSize: 32, PollSize: 40}
	}
	r := 0
	for run := range 4 {
		n := ohStartOn(t, dir, build(), cfg)
		e := n.e
		for end := r + 5; run < 3 && r < end && r < rounds; r++ {
			for p := range 4 {
				in.Push(p, roundsIn[r][p]...)
				pushed += int64(len(roundsIn[r][p]))
			}
			oeWait(t, fmt.Sprintf("round %d applied (run %d)", r, run), func() bool { return oeValue(e, "trips") == pushed })
		}
		switch run {
		case 0: // right after a checkpoint
			if err := e.Checkpoint(context.Background()); err != nil {
				t.Fatal(err)
			}
			n.crash()
			continue
		case 1: // rounds applied since the last checkpoint
			n.crash()
			continue
		case 2: // the first stage drained the input; the later ones may not have
			for ; r < rounds; r++ {
				for p := range 4 {
					in.Push(p, roundsIn[r][p]...)
					pushed += int64(len(roundsIn[r][p]))
				}
			}
			in.Close()
			ohDrained(t, e, "run 2")
			n.crash()
			continue
		}
		// Run 3: from the end of the input, to a stop; run 4 starts again.
		ohDrained(t, e, "run 3")
		oeWait(t, "every fragment complete", func() bool { return ohComplete(e) })
		if err := e.Checkpoint(context.Background()); err != nil {
			t.Fatal(err)
		}
		oeWait(t, "every five-minute result on checkpoints", func() bool {
			return fiveByKey.len() >= len(wantFive) && fiveRekeyed.len() >= len(wantFive) && minutes.len() >= len(wantMin)
		})
		n.stop()
	}
	e := ohStartOn(t, dir, build(), cfg).e
	ohDrained(t, e, "run 4")
	oeWait(t, "every fragment complete (run 4)", func() bool { return ohComplete(e) })
	got := oeEntries(t, e, "regions")
	for _, g := range oeSortedKeys(wantRegions) {
		if got[g] != wantRegions[g] {
			t.Fatalf("regions view: %s = %v, want %v", g, got[g], wantRegions[g])
		}
	}
	if len(got) != len(wantRegions) {
		t.Fatalf("regions view: %d regions, want %d", len(got), len(wantRegions))
	}
	if err := e.Err(); err != nil {
		t.Fatal(err)
	}

	if n := tooLate.len(); n != 0 {
		t.Fatalf("%d minute results too late for their five-minute window, e.g. %s", n, tooLate.values()[0])
	}
	check := func(name string, s *oeSink[res], size time.Duration, want map[wk]int64) {
		t.Helper()
		s.checkConflicts(t, name)
		s.mu.Lock()
		defer s.mu.Unlock()
		seen := map[wk]bool{}
		for _, id := range s.order {
			v := s.byID[id]
			k := wk{v.Key, v.Start.UnixNano()}
			if v.Firing != flows.OnTime || v.End.Sub(v.Start) != size || seen[k] || v.Value != want[k] {
				t.Fatalf("%s: %v %s %s..%s = %d %v; want one OnTime result of %d (seen before: %v)",
					name, id, v.Key, v.Start.Format("15:04"), v.End.Format("15:04"), v.Value, v.Firing, want[k], seen[k])
			}
			seen[k] = true
		}
		if len(seen) != len(want) {
			t.Fatalf("%s: %d windows came out, want %d", name, len(seen), len(want))
		}
	}
	check("minutes on checkpoints", minutes, time.Minute, wantMin)
	check("minutes at once", minutesAtOnce, time.Minute, wantMin)
	check("five minutes by key on checkpoints", fiveByKey, 5*time.Minute, wantFive)
	check("five minutes by key at once", fiveByKeyAtOnce, 5*time.Minute, wantFive)
	check("five minutes re-keyed on checkpoints", fiveRekeyed, 5*time.Minute, wantFive)
	t.Logf("%d trips, %d minute windows, %d five-minute windows, %d regions", len(all), len(wantMin), len(wantFive), len(wantRegions))
}
