package actor

// Tests of the single-node engine written as an outside user of the flows
// API would write them: flows unlike the repository's examples, run by
// Start with a pebble store on disk, through the engine's own glue (its
// ticker, sinks at once and on checkpoints, dead letters, Drained, Stop,
// and restarts from the store), each checked against a plain Go model.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/splice"
)

// oeOpen opens the pebble store in dir.
func oeOpen(t *testing.T, dir string) *recovery.Store {
	t.Helper()
	s, err := recovery.Open(dir, nil, quiet())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// oeStart compiles f and starts an engine on it with cfg.
func oeStart(t *testing.T, f *flows.Flow, cfg Config) *Engine {
	t.Helper()
	plan, err := flowcore.Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	e, err := Start(plan, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// oeCrash stops e as a crash would leave it: no final checkpoint (the
// checkpoints already handed to the writer land).
func oeCrash(e *Engine) { e.once.Do(func() { e.shutdown(false) }) }

// oeWait waits until cond holds, failing after 20 s.
func oeWait(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("20 s without %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// oeValue is an aggregate view's value, or -1.
func oeValue(e *Engine, view string) int64 {
	res, err := splice.Evaluate(context.Background(), e, splice.Request{View: view})
	if err != nil {
		return -1
	}
	n, ok := res.Value.(int64)
	if !ok {
		return -1
	}
	return n
}

// oeEntries is a keyed view's entries.
func oeEntries(t *testing.T, e *Engine, view string) map[string]any {
	t.Helper()
	res, err := splice.Evaluate(context.Background(), e, splice.Request{View: view, Op: splice.OpEntries, Query: splice.Query{Limit: 100_000}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]any{}
	for _, en := range res.Entries {
		out[en.Key] = en.Value
	}
	return out
}

// oeSink collects a sink's outputs by id: each id must keep one value.
// fail, if set, makes a write fail (nothing of it is kept).
type oeSink[T comparable] struct {
	mu        sync.Mutex
	byID      map[flows.OutputID]T
	order     []flows.OutputID
	writes    int
	failed    int
	delivered int // outputs received, repeats included
	conflicts []string
	restored  []int
	fail      func(n int) bool
}

func newOESink[T comparable]() *oeSink[T] { return &oeSink[T]{byID: map[flows.OutputID]T{}} }

func (s *oeSink[T]) Write(out []flows.Output[T]) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	if s.fail != nil && s.fail(s.writes) {
		s.failed++
		return fmt.Errorf("sink write %d refused", s.writes)
	}
	for _, o := range out {
		s.delivered++
		if v, ok := s.byID[o.ID]; ok {
			if v != o.Value {
				s.conflicts = append(s.conflicts, fmt.Sprintf("%v: %v then %v", o.ID, v, o.Value))
			}
			continue
		}
		s.byID[o.ID] = o.Value
		s.order = append(s.order, o.ID)
	}
	return nil
}

func (s *oeSink[T]) Restored(fragment int) {
	s.mu.Lock()
	s.restored = append(s.restored, fragment)
	s.mu.Unlock()
}

func (s *oeSink[T]) values() []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]T, 0, len(s.order))
	for _, id := range s.order {
		out = append(out, s.byID[id])
	}
	return out
}

func (s *oeSink[T]) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byID)
}

func (s *oeSink[T]) checkConflicts(t *testing.T, name string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.conflicts) > 0 {
		t.Fatalf("%s: %d ids delivered with two values, e.g. %s", name, len(s.conflicts), s.conflicts[0])
	}
}

// ---------------------------------------------------------------------------
// A sink before the key (called by the readers) that refuses a write.
// When the refused write is not the partition's last read, the engine
// reports it (Failed, Err); when the same write comes with the end of a
// bounded partition, it must not vanish either: the engine must report
// it or deliver the outputs, never drain as if they had gone out.

func TestEngineOutsideReaderSinkErrorAtEnd(t *testing.T) {
	for _, closed := range []bool{false, true} {
		t.Run(fmt.Sprintf("closed=%v", closed), func(t *testing.T) {
			in := flowstest.NewInput[string](1)
			for i := range 10 {
				in.Push(0, fmt.Sprintf("w%d", i%3))
			}
			if closed {
				in.Close()
			}
			f := flows.New("readersink", flows.WithFragments(4))
			s := flows.From(f, "words", flows.Source[string](in))
			sink := newOESink[string]()
			sink.fail = func(n int) bool { return n == 1 } // the first write only
			flows.To(flows.Map(s, func(w string) string { return "<" + w + ">" }), flows.Sink[string](sink))
			ks := flows.KeyBy(s, flows.Identity[string])
			flows.Count(ks).View("words")
			store := oeOpen(t, t.TempDir())
			defer store.Close()
			e := oeStart(t, f, Config{Store: store, CheckpointInterval: 20 * time.Millisecond})
			defer e.Stop() // before the store closes
			select {
			case <-e.Failed():
			case <-e.Drained():
			case <-time.After(20 * time.Second):
				t.Fatal("neither failed nor drained in 20 s")
			}
			if e.Err() == nil && sink.len() != 10 {
				t.Fatalf("the engine drained with no error, and the sink has %d of the 10 outputs (writes %d, refused %d)",
					sink.len(), sink.writes, sink.failed)
			}
			if e.Err() == nil {
				t.Fatal("the engine went on with no error after its sink refused a write")
			}
		})
	}
}

// ---------------------------------------------------------------------------
// A per-account Process with processing-time timers, on the engine's own
// clock (Config.Now, moved by the test) and ticker: the first deposit of
// an account opens a 10 s processing-time period, later deposits join it,
// and the timer emits the period's total and clears the state. Outputs go
// to a sink on checkpoints and to a sink at once. Between two periods the
// engine is stopped with timers pending and started again on the same
// store: each period's total comes out once, with the right sum.

type oeDeposit struct {
	Acct string
	Amt  int64
}

type oeTotal struct {
	Acct string
	Sum  int64
	At   int64 // the timer's processing time, unix ns
}

// oePeriods is an account's processing-time periods: its first deposit
// opens one of length period, later ones join it, and its timer emits the
// period's total and clears the state.
func oePeriods(period time.Duration) flows.Handler[string, oeDeposit, int64, oeTotal] {
	return flows.Handler[string, oeDeposit, int64, oeTotal]{
		OnEvent: func(c *flows.Context[string, int64, oeTotal], d oeDeposit) {
			n, ok := c.State()
			if !ok {
				c.SetProcessingTimer(c.Now().Add(period))
			}
			c.SetState(n + d.Amt)
		},
		OnTimer: func(c *flows.Context[string, int64, oeTotal], at time.Time) {
			n, _ := c.State()
			c.Emit(oeTotal{Acct: c.Key(), Sum: n, At: at.UnixNano()})
			c.ClearState()
		},
	}
}

// oeClock is the wall clock moved ahead by the test.
type oeClock struct{ skew atomic.Int64 }

func (c *oeClock) now() time.Time          { return time.Now().Add(time.Duration(c.skew.Load())) }
func (c *oeClock) advance(d time.Duration) { c.skew.Add(int64(d)) }

func TestEngineOutsideProcessingTimersAcrossRestart(t *testing.T) {
	const period = 30 * time.Second
	clk := &oeClock{}
	in := flowstest.NewInput[oeDeposit](2)
	committed, atOnce := newOESink[oeTotal](), newOESink[oeTotal]()
	build := func() *flows.Flow {
		f := flows.New("periods", flows.WithFragments(8))
		ks := flows.KeyBy(flows.From(f, "deposits", flows.Source[oeDeposit](in)), func(d oeDeposit) string { return d.Acct })
		p := flows.Process(ks, oePeriods(period))
		p.View("open")
		flows.AggregateView(ks.Values(), "deposits", splice.Count[oeDeposit](), func(d oeDeposit) oeDeposit { return d })
		flows.To(p.Out(), flows.Sink[oeTotal](committed), flows.OnCheckpoint())
		flows.To(p.Out(), flows.Sink[oeTotal](atOnce))
		return f
	}
	rng := rand.New(rand.NewPCG(5, 6))
	type acctSum struct {
		acct string
		sum  int64
	}
	want := map[acctSum]int{}
	nwant := 0
	pushed := int64(0)
	push := func(n int, open map[string]int64) {
		for range n {
			d := oeDeposit{Acct: fmt.Sprintf("a%02d", rng.IntN(40)), Amt: 1 + rng.Int64N(100)}
			if rng.IntN(3) == 0 {
				d.Acct = "hot"
			}
			in.Push(rng.IntN(2), d)
			open[d.Acct] += d.Amt
			pushed++
		}
	}
	closePeriod := func(open map[string]int64) {
		for a, n := range open {
			want[acctSum{a, n}]++
			nwant++
		}
	}
	dir := t.TempDir()
	cfg := func(s *recovery.Store) Config {
		return Config{Store: s, Now: clk.now, TickInterval: 5 * time.Millisecond, CheckpointInterval: 100 * time.Millisecond}
	}
	store := oeOpen(t, dir)
	e := oeStart(t, build(), cfg(store))
	// Period 1, fired by the ticker once the clock is moved past it.
	open := map[string]int64{}
	push(300, open)
	oeWait(t, "period 1's deposits applied", func() bool { return oeValue(e, "deposits") == pushed })
	clk.advance(period + time.Second)
	closePeriod(open)
	oeWait(t, "period 1's totals at once", func() bool { return atOnce.len() == nwant })
	// Period 2 opens; the engine stops with its timers pending.
	open = map[string]int64{}
	push(200, open)
	oeWait(t, "period 2's first deposits applied", func() bool { return oeValue(e, "deposits") == pushed })
	e.Stop()
	store.Close()

	store = oeOpen(t, dir)
	defer store.Close()
	e = oeStart(t, build(), cfg(store))
	defer e.Stop()
	if got := oeValue(e, "deposits"); got != pushed {
		t.Fatalf("after the restart the deposits view holds %d, want %d", got, pushed)
	}
	if n := len(oeEntries(t, e, "open")); n != len(open) {
		t.Fatalf("after the restart %d accounts have an open period, want %d", n, len(open))
	}
	push(200, open) // join period 2, or open one now for new accounts
	oeWait(t, "period 2's later deposits applied", func() bool { return oeValue(e, "deposits") == pushed })
	if atOnce.len() != nwant {
		t.Fatalf("a period-2 timer fired early: %d totals, want %d", atOnce.len(), nwant)
	}
	clk.advance(period + time.Second)
	closePeriod(open)
	oeWait(t, "period 2's totals at once", func() bool { return atOnce.len() >= nwant })
	if err := e.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	oeWait(t, "every total on checkpoints", func() bool { return committed.len() >= nwant })
	if err := e.Err(); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*oeSink[oeTotal]{"at once": atOnce, "on checkpoints": committed} {
		s.checkConflicts(t, name)
		got := map[acctSum]int{}
		for _, v := range s.values() {
			got[acctSum{v.Acct, v.Sum}]++
		}
		for k, n := range want {
			if got[k] != n {
				t.Fatalf("%s: total %s = %d came out %d times, want %d (%d totals, want %d)", name, k.acct, k.sum, got[k], n, s.len(), nwant)
			}
		}
		if s.len() != nwant {
			t.Fatalf("%s: %d totals, want %d", name, s.len(), nwant)
		}
	}
	if n := len(oeEntries(t, e, "open")); n != 0 {
		t.Fatalf("%d accounts keep an open period after every timer fired", n)
	}
}

// ---------------------------------------------------------------------------
// Sensor readings in one-minute event-time windows with two minutes of
// allowed lateness, summed per sensor; results go to a sink on
// checkpoints, too-late readings to another one. The input comes in
// rounds, each a minute later than the one before, with readings late
// by under a minute (refinements, within the lateness whatever the
// watermark) and readings past the lateness when their round comes (too
// late then; a replay after a crash, whose batches span rounds, may find
// the watermark lower and take them as refinements: where the watermark
// stands within a batch is the engine's choice); the engine crashes (no
// final checkpoint) in the middle, once right after a checkpoint and
// once with rounds applied since, and starts again on the same store.
// Both sinks see one history of each fragment: each window's last result
// is the sum of its readings that did not go to TooLate, only readings
// that may be too late go there, and none twice.

type oeReading struct {
	Sensor string
	At     time.Time
	V      int64
	Seq    int
}

func TestEngineOutsideLateWindowsAcrossCrashes(t *testing.T) {
	t0 := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	in := flowstest.NewInput[oeReading](2)
	results := newOESink[flows.WindowResult[string, int64]]()
	tooLate := newOESink[int]()
	build := func() *flows.Flow {
		f := flows.New("sensors", flows.WithFragments(6))
		src := flows.From(f, "readings", flows.Source[oeReading](in), flows.WithEventTime(func(r oeReading) time.Time { return r.At }, time.Second))
		ks := flows.KeyBy(src, func(r oeReading) string { return r.Sensor })
		w := flows.WindowAggregate(ks, flows.Tumbling(time.Minute), func() int64 { return 0 },
			func(n int64, r oeReading) int64 { return n + r.V }, flows.AllowedLateness(2*time.Minute))
		flows.To(w.Results(), flows.Sink[flows.WindowResult[string, int64]](results), flows.OnCheckpoint())
		flows.To(flows.Map(w.TooLate(), func(r oeReading) int { return r.Seq }), flows.Sink[int](tooLate), flows.OnCheckpoint())
		flows.AggregateView(ks.Values(), "readings", splice.Count[oeReading](), func(r oeReading) oeReading { return r })
		return f
	}
	type wk struct {
		sensor string
		start  int64
	}
	wantLate := map[int]bool{} // the readings that may be too late
	var log []oeReading
	// want: each window's sum of the readings that did not go to TooLate.
	want := map[wk]int64{}
	model := func() {
		late := map[int]bool{}
		for _, sq := range tooLate.values() {
			late[sq] = true
		}
		clear(want)
		for _, rd := range log {
			if !late[rd.Seq] {
				want[wk{rd.Sensor, rd.At.Truncate(time.Minute).UnixNano()}] += rd.V
			}
		}
	}
	readingsOf := func(sensor string, start int64) string {
		var b string
		for _, rd := range log {
			if rd.Sensor == sensor && rd.At.Truncate(time.Minute).UnixNano() == start {
				b += fmt.Sprintf(" %d@%s=%d", rd.Seq, rd.At.Format("15:04:05.0"), rd.V)
			}
		}
		return b
	}
	rng := rand.New(rand.NewPCG(11, 12))
	seq, pushed := 0, int64(0)
	// round r: readings in [t0+r min, t0+(r+1) min) on both partitions;
	// the watermark before it is at most t0+r min - 1 s and after it at
	// most t0+(r+1) min.
	round := func(r int) {
		for p := range 2 {
			base := t0.Add(time.Duration(r) * time.Minute)
			for i := range 40 {
				rd := oeReading{Sensor: fmt.Sprintf("s%d", rng.IntN(7)), At: base.Add(time.Duration(i*1500) * time.Millisecond), V: 1 + rng.Int64N(9)}
				if r >= 1 && i%10 == 3 {
					// late by under a minute: its window [r-1, r) min closes
					// with lateness at r+2 min, past this round's watermark.
					rd.At = base.Add(-time.Duration(1+rng.IntN(50)) * time.Second)
				}
				too := false
				if r >= 5 && i%10 == 7 {
					// a window that ended four minutes before the round:
					// its lateness ended at r-2 min, before the watermark
					// the previous round left (r min - 1 s).
					rd.At = base.Add(-4*time.Minute - time.Duration(rng.IntN(50))*time.Second)
					too = true
				}
				seq++
				rd.Seq = seq
				in.Push(p, rd)
				log = append(log, rd)
				pushed++
				if too {
					wantLate[seq] = true
				}
			}
		}
	}
	dir := t.TempDir()
	cfg := func(s *recovery.Store) Config {
		return Config{Store: s, TickInterval: 5 * time.Millisecond, CheckpointInterval: 30 * time.Millisecond}
	}
	var applied atomic.Int64 // rounds the views show applied, for the waits
	wmAt := func(e *Engine, r int) bool {
		// every fragment has the watermark of round r's end
		for _, fr := range e.Fragments() {
			if fr.Watermark.Load() < t0.Add(time.Duration(r+1)*time.Minute-3*time.Second).UnixNano() {
				return false
			}
		}
		return true
	}
	r := 0
	for run := range 3 {
		store := oeOpen(t, dir)
		e := oeStart(t, build(), cfg(store))
		for end := r + 4; r < end; r++ {
			round(r)
			oeWait(t, fmt.Sprintf("round %d applied (run %d)", r, run), func() bool {
				return oeValue(e, "readings") == pushed && wmAt(e, r)
			})
			applied.Store(int64(r))
		}
		if run == 2 {
			in.Close()
			select {
			case <-e.Drained():
			case <-time.After(20 * time.Second):
				t.Fatal("did not drain")
			}
			if err := e.Checkpoint(context.Background()); err != nil {
				t.Fatal(err)
			}
			// every window fired at the end of the input
			deadline := time.Now().Add(20 * time.Second)
			for {
				if time.Now().After(deadline) {
					break // reported below
				}
				model()
				last := map[wk]int64{}
				for _, v := range results.values() {
					k := wk{v.Key, v.Start.UnixNano()}
					last[k] = max(last[k], v.Value)
				}
				done := len(last) == len(want)
				for k, v := range want {
					done = done && last[k] == v
				}
				if done {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			if err := e.Err(); err != nil {
				t.Fatal(err)
			}
			e.Stop()
			store.Close()
			break
		}
		if run == 0 {
			// right after a checkpoint
			if err := e.Checkpoint(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		oeCrash(e)
		store.Close()
	}
	results.checkConflicts(t, "window results")
	tooLate.checkConflicts(t, "too late")
	model()
	last := map[wk]int64{}
	for _, v := range results.values() {
		k := wk{v.Key, v.Start.UnixNano()}
		if v.End.Sub(v.Start) != time.Minute {
			t.Fatalf("result %+v: not a one-minute window", v)
		}
		last[k] = max(last[k], v.Value)
	}
	var keys []wk
	for k := range want {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i].start < keys[j].start || keys[i].start == keys[j].start && keys[i].sensor < keys[j].sensor
	})
	for _, k := range keys {
		if last[k] != want[k] {
			results.mu.Lock()
			var all string
			for _, id := range results.order {
				if v := results.byID[id]; v.Key == k.sensor && v.Start.UnixNano() == k.start {
					all += fmt.Sprintf("\n\t%v %v %d", id, v.Firing, v.Value)
				}
			}
			results.mu.Unlock()
			lateSeqs := tooLate.values() // a copy
			sort.Ints(lateSeqs)
			var wl []int
			for sq := range wantLate {
				wl = append(wl, sq)
			}
			sort.Ints(wl)
			t.Fatalf("window %s at %v: last result %d, want %d; its results:%s\ntoo late %v\nwant %v; readings of the window: %s", k.sensor, time.Unix(0, k.start).UTC(), last[k], want[k], all, lateSeqs, wl, readingsOf(k.sensor, k.start))
		}
	}
	if len(last) != len(want) {
		t.Fatalf("%d windows have results, want %d", len(last), len(want))
	}
	tooLate.mu.Lock()
	delivered := tooLate.delivered
	tooLate.mu.Unlock()
	n := 0
	for _, sq := range tooLate.values() {
		n++
		if !wantLate[sq] {
			t.Fatalf("reading %d went to TooLate, but its window is within the lateness whatever the watermark", sq)
		}
	}
	if n < len(wantLate)/2 {
		t.Fatalf("%d readings went to TooLate, of %d that may: the rounds did not make them too late", n, len(wantLate))
	}
	t.Logf("%d of %d readings too late (%d deliveries); %d windows", n, len(wantLate), delivered, len(want))
}

// ---------------------------------------------------------------------------
// Orders fanned out into items before the key (FlatMap, zero to three
// items an order, a hot item in half of them); the FlatMap panics on
// "poison" orders (dead-lettered at once, before the key) and the item
// Aggregate panics on "cursed" items (the fragment restores and retries,
// and dead-letters the event after MaxAttempts). The counts' updates go
// to a sink on checkpoints that refuses a third of its writes (retried on
// the next checkpoint). The views are read while the engine runs (no
// count may ever exceed the model's final one), and the engine crashes
// half-way, stops at the end of the input, and starts again there: the
// counts, the sink's last value per item and the dead letters are the
// model's, each once.

type oeOrder struct {
	ID    int
	Items []string
	Bad   int // 1 poison (fails in FlatMap), 2 cursed (fails after the key)
}

type oeItem struct {
	Name   string
	Cursed bool
}

func TestEngineOutsideFanOutFlakySinkDeadLettersRestarts(t *testing.T) {
	in := flowstest.NewInput[oeOrder](3)
	updates := newOESink[flows.KV[string, int64]]()
	var failMu sync.Mutex
	frng := rand.New(rand.NewPCG(1, 2))
	updates.fail = func(int) bool {
		failMu.Lock()
		defer failMu.Unlock()
		return frng.IntN(3) == 0
	}
	var dlMu sync.Mutex
	var dead []flows.DeadLetter
	var deadRun []int // the run of each dead letter
	var curRun atomic.Int64
	build := func() *flows.Flow {
		f := flows.New("orders", flows.WithFragments(16))
		orders := flows.From(f, "orders", flows.Source[oeOrder](in))
		items := flows.FlatMap(orders, func(o oeOrder, emit func(oeItem)) {
			if o.Bad == 1 {
				panic(fmt.Sprintf("poison order %d", o.ID))
			}
			for _, it := range o.Items {
				emit(oeItem{Name: it, Cursed: o.Bad == 2})
			}
		})
		ks := flows.KeyBy(items, func(it oeItem) string { return it.Name })
		tbl := flows.Aggregate(ks, func() int64 { return 0 }, func(n int64, it oeItem) int64 {
			if it.Cursed {
				panic("cursed item " + it.Name)
			}
			return n + 1
		}).View("items")
		flows.To(tbl.Updates(), flows.Sink[flows.KV[string, int64]](updates), flows.OnCheckpoint())
		return f
	}
	// The input, generated up front, and the model.
	rng := rand.New(rand.NewPCG(3, 4))
	want := map[string]int64{}
	wantDead := map[string]bool{} // "partition/offset"
	var parts [3][]oeOrder
	for id := 1; id <= 6000; id++ {
		o := oeOrder{ID: id}
		for range rng.IntN(4) {
			if rng.IntN(2) == 0 {
				o.Items = append(o.Items, "hot")
			} else {
				o.Items = append(o.Items, fmt.Sprintf("i%03d", rng.IntN(150)))
			}
		}
		switch {
		case id%97 == 0:
			o.Bad = 1
		case id%331 == 0:
			o.Bad, o.Items = 2, []string{"cursed"}
		}
		p := rng.IntN(3)
		if o.Bad != 0 {
			wantDead[fmt.Sprintf("%d/%d", p, len(parts[p]))] = true
		} else {
			for _, it := range o.Items {
				want[it]++
			}
		}
		parts[p] = append(parts[p], o)
	}
	var wantItems int64
	for _, n := range want {
		wantItems += n
	}
	pushHalf := func(h int) {
		for p := range parts {
			n := len(parts[p]) / 2
			if h == 0 {
				in.Push(p, parts[p][:n]...)
			} else {
				in.Push(p, parts[p][n:]...)
			}
		}
	}
	// Reads while running: no count above the model's final one.
	var over atomic.Value
	var reads atomic.Int64
	watch := func(e *Engine, stop chan struct{}, done *sync.WaitGroup) {
		defer done.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			res, err := splice.Evaluate(context.Background(), e, splice.Request{View: "items", Op: splice.OpEntries, Query: splice.Query{Limit: 1000}})
			if err == nil {
				reads.Add(1)
				for _, en := range res.Entries {
					if n, _ := en.Value.(int64); n > want[en.Key] {
						over.CompareAndSwap(nil, fmt.Sprintf("%s = %d, above its final %d", en.Key, n, want[en.Key]))
					}
				}
			}
			time.Sleep(time.Millisecond)
		}
	}
	sum := func(e *Engine) int64 { // -1 while a fragment restores after a failure
		res, err := splice.Evaluate(context.Background(), e, splice.Request{View: "items", Op: splice.OpEntries, Query: splice.Query{Limit: 1000}})
		if err != nil {
			return -1
		}
		var n int64
		for _, en := range res.Entries {
			n += en.Value.(int64)
		}
		return n
	}
	dir := t.TempDir()
	cfg := func(s *recovery.Store) Config {
		return Config{Store: s, CheckpointInterval: 20 * time.Millisecond, TickInterval: 5 * time.Millisecond,
			MaxAttempts: 2, RetryBackoff: 10 * time.Millisecond, BatchSize: 64, PollSize: 100,
			OnDeadLetters: func(d []flows.DeadLetter) {
				dlMu.Lock()
				dead = append(dead, d...)
				for range d {
					deadRun = append(deadRun, int(curRun.Load()))
				}
				dlMu.Unlock()
			}}
	}
	run := func(name string, body func(e *Engine)) {
		curRun.Add(1)
		store := oeOpen(t, dir)
		defer store.Close()
		e := oeStart(t, build(), cfg(store))
		defer e.Stop() // before the store closes, also when the body fails
		stop, done := make(chan struct{}), &sync.WaitGroup{}
		done.Add(1)
		go watch(e, stop, done)
		body(e)
		close(stop)
		done.Wait()
		if err := e.Err(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	// Run 1: the first half, then a crash once some of it is applied.
	pushHalf(0)
	run("run 1", func(e *Engine) {
		oeWait(t, "a third of the items applied", func() bool { return sum(e) > wantItems/3 })
		oeCrash(e)
	})
	// Run 2: the second half, to the end of the input; a stop.
	pushHalf(1)
	in.Close()
	run("run 2", func(e *Engine) {
		select {
		case <-e.Drained():
		case <-time.After(20 * time.Second):
			t.Fatal("run 2 did not drain")
		}
		e.Stop()
	})
	// Run 3: at the end of the input; it drains at once, and the sink gets
	// the last values.
	run("run 3", func(e *Engine) {
		defer e.Stop()
		select {
		case <-e.Drained():
		case <-time.After(20 * time.Second):
			t.Fatal("run 3 did not drain")
		}
		got := oeEntries(t, e, "items")
		for _, k := range oeSortedKeys(want) {
			if got[k] != want[k] {
				t.Fatalf("items view: %s = %v, want %d", k, got[k], want[k])
			}
		}
		if len(got) != len(want) {
			t.Fatalf("items view: %d keys, want %d", len(got), len(want))
		}
		oeWait(t, "the sink's last values", func() bool {
			last := map[string]int64{}
			for _, kv := range updates.values() {
				last[kv.Key] = max(last[kv.Key], kv.Value)
			}
			for k, v := range want {
				if last[k] != v {
					return false
				}
			}
			return len(last) == len(want)
		})
	})
	if v := over.Load(); v != nil {
		t.Fatalf("a read while running: %v", v)
	}
	updates.checkConflicts(t, "updates")
	// Every count from 1 to the final one of each item came out once.
	seen := map[flows.KV[string, int64]]int{}
	for _, kv := range updates.values() {
		seen[kv]++
	}
	for k, n := range want {
		for i := int64(1); i <= n; i++ {
			if seen[flows.KV[string, int64]{Key: k, Value: i}] != 1 {
				t.Fatalf("update %s = %d delivered %d times under distinct ids", k, i, seen[flows.KV[string, int64]{Key: k, Value: i}])
			}
		}
	}
	dlMu.Lock()
	defer dlMu.Unlock()
	// Each dead letter once per run at most, and at least once in all:
	// a crash may dead-letter again what the run before did (the replay
	// after it meets the event again), but nothing else may.
	gotDead := map[string]int{}
	perRun := map[[2]string]int{}
	for i, d := range dead {
		k := fmt.Sprintf("%d/%d", d.Partition, d.Offset)
		gotDead[k]++
		perRun[[2]string{fmt.Sprint(deadRun[i]), k}]++
		if !wantDead[k] {
			t.Fatalf("dead letter %s (%s) is not the model's", k, d.Error)
		}
		if deadRun[i] == 3 {
			t.Fatalf("dead letter %s in run 3, which started at the end of the input", k)
		}
	}
	for k := range wantDead {
		if gotDead[k] == 0 {
			t.Fatalf("dead letter %s never came (%d dead letters, %d expected)", k, len(dead), len(wantDead))
		}
	}
	for k, n := range perRun {
		if n != 1 {
			var where string
			for i, d := range dead {
				if fmt.Sprintf("%d/%d", d.Partition, d.Offset) == k[1] {
					where += fmt.Sprintf(" [run %d fragment %d key %q: %s]", deadRun[i], d.Fragment, d.Key, d.Error)
				}
			}
			t.Fatalf("dead letter %s came %d times in run %s:%s", k[1], n, k[0], where)
		}
	}
	t.Logf("%d view reads while running; %d sink writes, %d refused; %d dead letters", reads.Load(), updates.writes, updates.failed, len(dead))
}

func oeSortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ---------------------------------------------------------------------------
// Sinks at once after the key that refuse writes — a burst while the sink
// is down, then one write in four — lose nothing: the fragment keeps the
// refused outputs and writes them again after a backoff, applying nothing
// meanwhile, for outputs of events and of processing-time timers alike.
// The engine goes on without an error, and its views are exact. Each
// account's deposits come in one partition, so a replay (were there one)
// makes each count update with its value again; a processing-time timer
// is set anew by the replay of its event, so a period's total may come
// out more than once, with the sum of one history each: the whole
// period's sum comes out.
func TestEngineOutsideAtOnceSinkRefusalsLoseNothing(t *testing.T) {
	const period = 30 * time.Second
	clk := &oeClock{}
	in := flowstest.NewInput[oeDeposit](3)
	refuse := func(n int) bool { return n >= 3 && n < 40 || n%4 == 0 }
	updates := newOESink[flows.KV[string, int64]]()
	updates.fail = refuse
	var mu sync.Mutex
	writes, refused := 0, 0
	totals := map[string]map[int64]bool{} // every sum delivered, by account
	totalSink := flows.SinkFunc[oeTotal](func(out []flows.Output[oeTotal]) error {
		mu.Lock()
		defer mu.Unlock()
		if writes++; refuse(writes) {
			refused++
			return fmt.Errorf("totals write %d refused", writes)
		}
		for _, o := range out {
			if totals[o.Value.Acct] == nil {
				totals[o.Value.Acct] = map[int64]bool{}
			}
			totals[o.Value.Acct][o.Value.Sum] = true
		}
		return nil
	})
	f := flows.New("refusals", flows.WithFragments(4))
	ks := flows.KeyBy(flows.From(f, "deposits", flows.Source[oeDeposit](in)), func(d oeDeposit) string { return d.Acct })
	flows.To(flows.Count(ks).View("n").Updates(), flows.Sink[flows.KV[string, int64]](updates))
	flows.To(flows.Process(ks, oePeriods(period)).Out(), totalSink)
	store := oeOpen(t, t.TempDir())
	defer store.Close()
	e := oeStart(t, f, Config{Store: store, Now: clk.now, TickInterval: 5 * time.Millisecond,
		CheckpointInterval: 20 * time.Millisecond, RetryBackoff: time.Millisecond})
	defer e.Stop()

	rng := rand.New(rand.NewPCG(8, 9))
	count, sums := map[string]int64{}, map[string]int64{}
	for range 600 {
		a := rng.IntN(31)
		d := oeDeposit{Acct: fmt.Sprintf("a%02d", a), Amt: 1 + rng.Int64N(50)}
		if a == 30 {
			d.Acct = "hot"
		}
		in.Push(a%3, d)
		count[d.Acct]++
		sums[d.Acct] += d.Amt
	}
	nUpdates := 0
	for _, n := range count {
		nUpdates += int(n)
	}
	oeWait(t, "every count update delivered", func() bool { return updates.len() == nUpdates })
	// The clock moves a period at a time until every account's whole
	// sum came out.
	oeWait(t, "every period's whole sum delivered", func() bool {
		clk.advance(period + time.Second)
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		for a, n := range sums {
			if !totals[a][n] {
				return false
			}
		}
		return true
	})
	select {
	case <-e.Failed():
		t.Fatalf("the engine failed: %v", e.Err())
	default:
	}
	updates.checkConflicts(t, "updates")
	seen := map[string][]bool{}
	for _, kv := range updates.values() {
		if seen[kv.Key] == nil {
			seen[kv.Key] = make([]bool, count[kv.Key]+1)
		}
		if kv.Value < 1 || kv.Value > count[kv.Key] || seen[kv.Key][kv.Value] {
			t.Fatalf("update %s=%d: not one of 1..%d once", kv.Key, kv.Value, count[kv.Key])
		}
		seen[kv.Key][kv.Value] = true
	}
	got := oeEntries(t, e, "n")
	for a, n := range count {
		if got[a] != n {
			t.Fatalf("view n: %s = %v, want %d", a, got[a], n)
		}
	}
	updates.mu.Lock()
	defer updates.mu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	if updates.failed == 0 || refused == 0 {
		t.Fatalf("refused writes: %d of the updates, %d of the totals; the test needs both", updates.failed, refused)
	}
	t.Logf("refused %d+%d writes; delivered %d updates (%d distinct)", updates.failed, refused, updates.delivered, nUpdates)
}
