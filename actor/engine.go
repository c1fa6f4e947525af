package actor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	pa "github.com/asynkron/protoactor-go/actor"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/splice"
)

// Config configures an Engine. Zero fields take the defaults.
type Config struct {
	BatchSize    int           // records per batch message; default 1024
	BatchDelay   time.Duration // longest a partial batch waits; default 5ms
	Credits      int           // unacknowledged batches per reader and fragment; default 4
	PollSize     int           // events read per poll; default 1024
	IdleDelay    time.Duration // wait before polling a source that had nothing; default 10ms
	TickInterval time.Duration // resolution of processing-time timers; default 50ms
	QueryTimeout time.Duration // per query; default 10s
	Logger       *slog.Logger
	// LogActors passes protoactor's own Info and Debug logs through; by
	// default only its warnings and errors reach Logger.
	LogActors bool
	// Now is the processing-time clock; time.Now if nil.
	Now func() time.Time
	// OnDeadLetters receives dead letters (malformed input, failed user
	// functions) in addition to the flow's dead-letter sink. It is called
	// from actor goroutines and must not block.
	OnDeadLetters func([]flows.DeadLetter)
}

func (c *Config) defaults() {
	if c.BatchSize <= 0 {
		c.BatchSize = 1024
	}
	if c.BatchDelay <= 0 {
		c.BatchDelay = 5 * time.Millisecond
	}
	if c.Credits <= 0 {
		c.Credits = 4
	}
	if c.PollSize <= 0 {
		c.PollSize = 1024
	}
	if c.IdleDelay <= 0 {
		c.IdleDelay = 10 * time.Millisecond
	}
	if c.TickInterval <= 0 {
		c.TickInterval = 50 * time.Millisecond
	}
	if c.QueryTimeout <= 0 {
		c.QueryTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Engine runs one flow's readers and fragments on one node.
type Engine struct {
	plan    *flows.Plan
	cfg     Config
	sys     *pa.ActorSystem
	frags   []*pa.PID
	fstats  []*FragmentStats
	readers []*pa.PID
	rstats  []*ReaderStats
	live    sync.WaitGroup // readers that have not finished
	drained chan struct{}
	stop    chan struct{}
	bg      sync.WaitGroup // the ticker and retry timers
	failed  atomic.Value   // first fatal reader error
	once    sync.Once
}

// FragmentStats are a fragment's counters, safe to read concurrently.
type FragmentStats struct {
	ID         int
	Events     atomic.Int64 // records applied
	Batches    atomic.Int64
	Duplicates atomic.Int64 // batches dropped as duplicates
	Gaps       atomic.Int64
	Failures   atomic.Int64 // events dead-lettered after a user function failed
	mu         sync.Mutex
	offsets    map[string]int64
}

// Offsets copies the fragment's offset vector, by partition name.
func (s *FragmentStats) Offsets() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.offsets)
}

// ReaderStats are a reader's counters.
type ReaderStats struct {
	Source    string
	Partition int
	Position  atomic.Int64
	Events    atomic.Int64
	Bad       atomic.Int64 // malformed records
	Stalls    atomic.Int64 // times it waited for credits
	Done      atomic.Bool  // the partition is exhausted and everything was applied
}

// Start validates nothing (the plan is valid), spawns the fragments and the
// readers, and starts reading every source partition from offset 0.
func Start(plan *flows.Plan, cfg Config) (*Engine, error) {
	cfg.defaults()
	e := &Engine{plan: plan, cfg: cfg, drained: make(chan struct{}), stop: make(chan struct{})}
	logger := cfg.Logger.With("lib", "protoactor")
	if !cfg.LogActors {
		logger = slog.New(minLevel{logger.Handler(), slog.LevelWarn})
	}
	e.sys = pa.NewActorSystem(
		pa.WithLoggerFactory(func(*pa.ActorSystem) *slog.Logger { return logger }),
		// Acks to readers that stopped first are expected at shutdown; the
		// throttle's goroutine lives one interval, so keep it short.
		pa.WithDeadLetterThrottleInterval(10*time.Millisecond),
		pa.WithDeadLetterRequestLogging(false),
	)
	root := e.sys.Root
	for i := range plan.Fragments() {
		st := &FragmentStats{ID: i, offsets: map[string]int64{}}
		fa := &fragmentActor{e: e, frag: plan.NewFragment(i), stats: st}
		pid, err := root.SpawnNamed(pa.PropsFromProducer(func() pa.Actor { return fa }), fmt.Sprintf("%s/kg-%03d", plan.Name(), i))
		if err != nil {
			e.shutdown()
			return nil, fmt.Errorf("spawn fragment %d: %w", i, err)
		}
		e.frags = append(e.frags, pid)
		e.fstats = append(e.fstats, st)
	}
	for si, s := range plan.Sources() {
		for p := range s.Partitions {
			r, err := plan.OpenReader(si, p, 0, cfg.BatchSize)
			if err != nil {
				e.shutdown()
				return nil, err
			}
			st := &ReaderStats{Source: s.Name, Partition: p}
			ra := &readerActor{e: e, r: r, stats: st, credits: make([]int, plan.Fragments()), blocked: make([]bool, plan.Fragments())}
			for i := range ra.credits {
				ra.credits[i] = cfg.Credits
			}
			e.live.Add(1)
			pid, err := root.SpawnNamed(pa.PropsFromProducer(func() pa.Actor { return ra }), fmt.Sprintf("%s/reader-%s-%d", plan.Name(), s.Name, p))
			if err != nil {
				e.live.Done()
				r.Close()
				e.shutdown()
				return nil, fmt.Errorf("spawn reader %s/%d: %w", s.Name, p, err)
			}
			e.readers = append(e.readers, pid)
			e.rstats = append(e.rstats, st)
		}
	}
	e.bg.Add(2)
	go func() {
		defer e.bg.Done()
		e.live.Wait()
		close(e.drained)
	}()
	go e.tick()
	for _, pid := range e.readers {
		root.Send(pid, pollMsg{})
	}
	return e, nil
}

func (e *Engine) tick() {
	defer e.bg.Done()
	t := time.NewTicker(e.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			now := e.cfg.Now()
			for _, pid := range e.frags {
				e.sys.Root.Send(pid, tickMsg{now: now})
			}
		}
	}
}

// Plan is the plan the engine runs.
func (e *Engine) Plan() *flows.Plan { return e.plan }

// Drained is closed when every source partition is exhausted and every
// record read has been applied. Unbounded sources never drain.
func (e *Engine) Drained() <-chan struct{} { return e.drained }

// Err is the first error that stopped a reader, or nil.
func (e *Engine) Err() error {
	if err, ok := e.failed.Load().(error); ok {
		return err
	}
	return nil
}

// Fragments returns the fragments' counters.
func (e *Engine) Fragments() []*FragmentStats { return e.fstats }

// Readers returns the readers' counters.
func (e *Engine) Readers() []*ReaderStats { return e.rstats }

// Views implements splice.Gatherer.
func (e *Engine) Views() []splice.Spec { return e.plan.Views() }

// Gather implements splice.Gatherer: it asks the fragments' actors, which
// answer between batches.
func (e *Engine) Gather(ctx context.Context, req splice.Request, only int) ([]splice.Answer, error) {
	var futs []*pa.Future
	timeout := e.cfg.QueryTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	for i, pid := range e.frags {
		if only >= 0 && i != only {
			continue
		}
		futs = append(futs, e.sys.Root.RequestFuture(pid, queryMsg{req: req}, timeout))
	}
	out := make([]splice.Answer, 0, len(futs))
	for _, f := range futs {
		res, err := f.Result()
		if err != nil {
			return nil, fmt.Errorf("query %s: %w", req.View, err)
		}
		r := res.(queryReply)
		if r.err != nil {
			return nil, r.err
		}
		out = append(out, r.ans)
	}
	return out, nil
}

// Freshness implements splice.Gatherer from the fragments' counters.
func (e *Engine) Freshness() []splice.Freshness {
	out := make([]splice.Freshness, len(e.fstats))
	for i, st := range e.fstats {
		out[i] = splice.Freshness{Fragment: i, Offsets: st.Offsets()}
	}
	return out
}

// Stop stops the readers, lets the fragments apply what was sent, stops
// them, and waits for every goroutine the engine started. Safe to call
// twice.
func (e *Engine) Stop() {
	e.once.Do(e.shutdown)
}

func (e *Engine) shutdown() {
	close(e.stop)
	for _, pid := range e.readers {
		_ = e.sys.Root.PoisonFuture(pid).Wait()
	}
	for _, pid := range e.frags {
		_ = e.sys.Root.PoisonFuture(pid).Wait()
	}
	// Readers that stopped before their partition ended will never finish.
	for _, st := range e.rstats {
		if !st.Done.Load() {
			st.Done.Store(true)
			e.live.Done()
		}
	}
	e.bg.Wait()
	e.sys.Shutdown()
}

func (e *Engine) fail(err error) {
	e.failed.CompareAndSwap(nil, err)
	e.cfg.Logger.Error("reader stopped", "err", err)
}

func (e *Engine) deadLetters(dls []flows.DeadLetter) {
	if len(dls) == 0 {
		return
	}
	now := e.cfg.Now()
	for i := range dls {
		if dls[i].Time.IsZero() {
			dls[i].Time = now
		}
	}
	if sink := e.plan.DeadLetters(); sink != nil {
		if err := sink.WriteDeadLetters(dls); err != nil {
			e.cfg.Logger.Error("dead-letter sink", "err", err)
		}
	}
	if e.cfg.OnDeadLetters != nil {
		e.cfg.OnDeadLetters(dls)
	}
}

// after sends msg to pid after d, unless the engine stops first.
func (e *Engine) after(d time.Duration, pid *pa.PID, msg any) {
	e.bg.Add(1)
	go func() {
		defer e.bg.Done()
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-e.stop:
		case <-t.C:
			e.sys.Root.Send(pid, msg)
		}
	}()
}

type (
	pollMsg  struct{}
	batchMsg struct {
		b      *flows.Batch
		reader *pa.PID
	}
	ackMsg     struct{ fragment int }
	tickMsg    struct{ now time.Time }
	queryMsg   struct{ req splice.Request }
	queryReply struct {
		ans splice.Answer
		err error
	}
)

type readerActor struct {
	e         *Engine
	r         *flows.Reader
	stats     *ReaderStats
	credits   []int
	blocked   []bool // a full batch waits for a credit
	nblocked  int
	inflight  int
	polling   bool // a pollMsg is on its way
	eof       bool
	finished  bool
	lastFlush time.Time
}

func (ra *readerActor) Receive(c pa.Context) {
	switch m := c.Message().(type) {
	case pollMsg:
		ra.polling = false
		ra.poll(c)
	case ackMsg:
		ra.credits[m.fragment]++
		ra.inflight--
		if ra.blocked[m.fragment] {
			ra.blocked[m.fragment] = false
			ra.nblocked--
			ra.send(c, m.fragment)
		}
		if ra.eof {
			ra.flushAll(c)
		}
		ra.schedule(c, 0)
	case *pa.Stopping:
		if err := ra.r.Close(); err != nil {
			ra.e.cfg.Logger.Warn("close source", "source", ra.stats.Source, "partition", ra.stats.Partition, "err", err)
		}
	}
}

// schedule asks for another poll, after d, unless one is coming, reading is
// blocked, or the partition is exhausted.
func (ra *readerActor) schedule(c pa.Context, d time.Duration) {
	if ra.polling || ra.nblocked > 0 || ra.eof {
		return
	}
	ra.polling = true
	if d == 0 {
		c.Send(c.Self(), pollMsg{})
	} else {
		ra.e.after(d, c.Self(), pollMsg{})
	}
}

func (ra *readerActor) poll(c pa.Context) {
	if ra.nblocked > 0 || ra.eof {
		return
	}
	n, err := ra.r.Poll(context.Background(), ra.e.cfg.PollSize)
	ra.stats.Events.Add(int64(n))
	ra.stats.Position.Store(ra.r.Position())
	ra.deadLetters()
	if err != nil && !errors.Is(err, io.EOF) {
		ra.e.fail(fmt.Errorf("%s: %w", ra.e.plan.PartitionName(ra.r.Source(), ra.r.Partition()), err))
		ra.eof = true
		return
	}
	for _, f := range ra.r.Full() {
		if ra.credits[f] == 0 {
			if !ra.blocked[f] {
				ra.blocked[f] = true
				ra.nblocked++
				ra.stats.Stalls.Add(1)
			}
			continue
		}
		ra.send(c, f)
	}
	if err != nil { // io.EOF
		ra.eof = true
		ra.flushAll(c)
		return
	}
	now := ra.e.cfg.Now()
	if now.Sub(ra.lastFlush) >= ra.e.cfg.BatchDelay {
		ra.lastFlush = now
		ra.flushAll(c)
	}
	if n == 0 {
		ra.schedule(c, min(ra.e.cfg.IdleDelay, ra.e.cfg.BatchDelay))
	} else {
		ra.schedule(c, 0)
	}
}

// flushAll sends every fragment that is behind the position and has a
// credit; at the end of the partition, it marks the reader finished once
// everything is acknowledged.
func (ra *readerActor) flushAll(c pa.Context) {
	behind := false
	for f := range ra.credits {
		if !ra.r.Behind(f) {
			continue
		}
		if ra.credits[f] == 0 {
			behind = true
			continue
		}
		ra.send(c, f)
	}
	if ra.eof && !behind && ra.inflight == 0 && !ra.finished {
		ra.finished = true
		ra.stats.Done.Store(true)
		ra.e.live.Done()
	}
}

func (ra *readerActor) send(c pa.Context, f int) {
	b := ra.r.Take(f)
	ra.credits[f]--
	ra.inflight++
	c.Send(ra.e.frags[f], &batchMsg{b: b, reader: c.Self()})
}

func (ra *readerActor) deadLetters() {
	bad := ra.r.TakeBad()
	dls := ra.r.TakeDeadLetters()
	if len(bad) == 0 && len(dls) == 0 {
		return
	}
	ra.stats.Bad.Add(int64(len(bad)))
	for _, b := range bad {
		ra.e.cfg.Logger.Warn("malformed record", "source", ra.stats.Source, "partition", ra.stats.Partition,
			"where", b.Where, "offset", b.Offset, "err", b.Err)
		dls = append(dls, flows.DeadLetter{Flow: ra.e.plan.Name(), Source: ra.stats.Source, Partition: ra.stats.Partition,
			Offset: b.Offset, Fragment: -1, Where: b.Where, Value: string(b.Raw), Error: b.Err.Error()})
	}
	ra.e.deadLetters(dls)
}

type fragmentActor struct {
	e     *Engine
	frag  *flows.Fragment
	stats *FragmentStats
	vec   recovery.Vector
}

func (fa *fragmentActor) Receive(c pa.Context) {
	switch m := c.Message().(type) {
	case *batchMsg:
		fa.apply(m.b)
		c.Send(m.reader, ackMsg{fragment: fa.frag.ID()})
	case tickMsg:
		dls, err := fa.frag.Advance(m.now)
		fa.failed(dls, err)
	case queryMsg:
		ans, err := fa.frag.Query(m.req)
		ans.Freshness = splice.Freshness{Fragment: fa.frag.ID(), Offsets: fa.stats.Offsets()}
		c.Respond(queryReply{ans: ans, err: err})
	case *pa.Restarting:
		fa.e.cfg.Logger.Error("fragment actor restarted after an engine failure", "fragment", fa.frag.ID())
	}
}

func (fa *fragmentActor) apply(b *flows.Batch) {
	defer b.Release()
	p := recovery.PartitionID{Source: b.Source, Partition: b.Partition}
	verdict, min := fa.vec.Admit(p, b.PrevEnd, b.End)
	switch verdict {
	case recovery.Duplicate:
		fa.stats.Duplicates.Add(1)
		return
	case recovery.Gap:
		// Within one process batches are never lost; across nodes the
		// reader rewinds (cluster work). Count it loudly.
		fa.stats.Gaps.Add(1)
		fa.e.cfg.Logger.Error("batch gap", "fragment", fa.frag.ID(), "partition", fa.e.plan.PartitionName(b.Source, b.Partition),
			"recorded", min, "prev_end", b.PrevEnd)
		return
	}
	fa.frag.SetNow(fa.e.cfg.Now())
	dls, err := fa.frag.Apply(b, min)
	fa.failed(dls, err)
	fa.stats.Events.Add(int64(b.Count))
	fa.stats.Batches.Add(1)
	fa.stats.mu.Lock()
	fa.stats.offsets[fa.e.plan.PartitionName(b.Source, b.Partition)] = b.End
	fa.stats.mu.Unlock()
}

func (fa *fragmentActor) failed(dls []flows.DeadLetter, err error) {
	if err != nil {
		fa.e.cfg.Logger.Error("fragment output", "fragment", fa.frag.ID(), "err", err)
	}
	if len(dls) == 0 {
		return
	}
	fa.stats.Failures.Add(int64(len(dls)))
	for _, d := range dls {
		fa.e.cfg.Logger.Warn("user function failed; event dead-lettered", "fragment", d.Fragment,
			"source", d.Source, "partition", d.Partition, "offset", d.Offset, "key", d.Key, "err", d.Error)
	}
	fa.e.deadLetters(dls)
}

// minLevel drops records below a level.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}
func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.min}
}
func (h minLevel) WithGroup(n string) slog.Handler { return minLevel{h.Handler.WithGroup(n), h.min} }
