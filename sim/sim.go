package sim

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/internal/flowcore"
)

// Config is a simulated cluster's clock, failure detector and faults.
// Zero fields take the defaults.
type Config struct {
	// Seed makes every random choice: message delays and faults, torn
	// writes at a crash, the nodes' tick phases. A run replays identically
	// from its seed.
	Seed uint64
	// Faults of the network between nodes.
	Faults Faults
	// Tick is how often a node polls its readers, ticks its fragments and
	// looks at its failure detector (default 50ms).
	Tick time.Duration
	// Heartbeat is how often a node tells every other node it is alive
	// (default 250ms); Detect how long a node goes unheard before it is
	// declared dead (default 2s); Settle how long a starting node waits
	// for its member list to stop changing before it places (default 1s).
	Heartbeat, Detect, Settle time.Duration
	// PauseLimit is how long a node's process may stand still (Pause)
	// before it treats its fragments as taken over when it runs again
	// (recovery.PauseClock, the engine's rule). It is the least silence
	// after which the others may declare the node dead, as
	// cluster.PauseLimit is for a real cluster (default Detect −
	// Heartbeat: the last heartbeat a node sent before it stopped may be
	// up to a heartbeat older than its last reading of the clock, and the
	// others place as soon as they declare it dead).
	PauseLimit time.Duration
	// CheckpointInterval is how often a fragment checkpoints (default 1s).
	CheckpointInterval time.Duration
	// HandoffWait bounds a gained fragment's wait for its old owner's last
	// checkpoint (default 10s, as the engine's).
	HandoffWait time.Duration
	// LostAnswerWait is how soon a fragment that lacks a copy gathers
	// again when a member left its ask unanswered (default 1s, as the
	// engine's).
	LostAnswerWait time.Duration
	// BatchSize is the records per batch a reader sends (default 64);
	// PollSize the records it reads per poll (default 256).
	BatchSize, PollSize int
	// Latency is the base delay of a message between nodes (default 1ms).
	Latency time.Duration
	// Start is the virtual clock's start (default 2026-01-01 UTC).
	Start time.Time
	// Logger receives the simulation's trace at Debug (default: discard).
	Logger *slog.Logger
}

func (c *Config) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Tick, 50*time.Millisecond)
	def(&c.Heartbeat, 250*time.Millisecond)
	def(&c.Detect, 2*time.Second)
	def(&c.Settle, time.Second)
	def(&c.PauseLimit, c.Detect-c.Heartbeat)
	def(&c.CheckpointInterval, time.Second)
	def(&c.HandoffWait, 10*time.Second)
	def(&c.LostAnswerWait, time.Second)
	def(&c.Latency, time.Millisecond)
	if c.BatchSize <= 0 {
		c.BatchSize = 64
	}
	if c.PollSize <= 0 {
		c.PollSize = 256
	}
	if c.Start.IsZero() {
		c.Start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// Validate reports what is wrong with the configuration.
func (c Config) Validate() error {
	var errs []error
	f := c.Faults
	for name, p := range map[string]float64{"drop": f.Drop, "duplicate": f.Duplicate, "reorder": f.Reorder} {
		if p < 0 || p > 1 {
			errs = append(errs, fmt.Errorf("sim: %s probability %v is not in [0, 1]", name, p))
		}
	}
	if f.Delay < 0 {
		errs = append(errs, fmt.Errorf("sim: negative delay %v", f.Delay))
	}
	if c.Detect > 0 && c.Heartbeat > 0 && c.Detect <= 2*c.Heartbeat {
		errs = append(errs, fmt.Errorf("sim: detect timeout %v should be more than two heartbeats (%v)", c.Detect, c.Heartbeat))
	}
	if c.PauseLimit < 0 {
		errs = append(errs, fmt.Errorf("sim: negative pause limit %v", c.PauseLimit))
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

// Faults are the network's misbehaviour between nodes (messages within a
// node are never lost, duplicated or reordered: they do not leave the
// process). Every choice is drawn from the cluster's seed.
type Faults struct {
	Delay     time.Duration // a message takes up to this much longer than Latency
	Drop      float64       // a message is lost
	Duplicate float64       // a message arrives twice
	Reorder   float64       // a message is held back up to 20 × (Latency + Delay), overtaken by later ones
}

// Counts are what the simulation did and what its faults cost.
type Counts struct {
	Messages, Dropped, Duplicated, Reordered, Cut int64 // between nodes
	Placements, Handoffs, Replicated, Fenced      int64
	Stale                                         int64 // fragments that restored a copy older than what downstream applied
	Crashes, Restarts, DiskFull                   int64
	// Fences counts nodes that lost their majority and stopped owning;
	// Resumes those that took their old placement up again after one,
	// the cluster having placed nothing newer meanwhile.
	Fences, Resumes int64
	// Resumed counts fragments that dropped their state after their
	// node's pause (recovery.Machine.FollowPauses).
	Resumed int64
	// On slow disks (SlowDisk): checkpoints written to be synced later,
	// those a crash cut short, and hand-offs that waited for a write.
	SlowWrites, TornWrites, HandoffsAfterWrite int64
}

// Cluster is a simulated cluster running one flow: nodes in one process,
// over an in-memory network and a virtual clock. It is not safe for
// concurrent use: one goroutine drives it (Run and the fault methods).
type Cluster struct {
	plan   *flowcore.Plan
	cfg    Config
	rng    *rand.Rand
	now    time.Time
	events eventHeap
	seq    uint64
	nodes  map[string]*node
	names  []string                 // every node ever started, sorted
	cut    map[[2]string]bool       // from → to: messages are lost
	parts  []partRef                // every source partition, in source order
	dead   []flows.DeadLetter       // dead letters of every node
	errs   []error                  // failures a node reported (sinks, checkpoints)
	full   map[string]bool          // nodes whose disk is full
	slow   map[string]time.Duration // nodes whose disk syncs this much later
	counts Counts
	trace  func(format string, args ...any)
}

type partRef struct{ source, partition int }

// New makes a cluster for flow, with no node yet (Start adds them).
func New(f *flows.Flow, cfg Config) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.defaults()
	plan, err := flowcore.Compile(f)
	if err != nil {
		return nil, err
	}
	c := &Cluster{plan: plan, cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 0x7e55e7a)), now: cfg.Start,
		nodes: map[string]*node{}, cut: map[[2]string]bool{}, full: map[string]bool{}, slow: map[string]time.Duration{}}
	for si, s := range plan.Sources() {
		for p := range s.Partitions {
			c.parts = append(c.parts, partRef{si, p})
		}
	}
	c.trace = func(format string, args ...any) {
		if cfg.Logger.Enabled(context.Background(), slog.LevelDebug) {
			cfg.Logger.Debug(fmt.Sprintf(format, args...), "t", c.Elapsed())
		}
	}
	return c, nil
}

// Plan is the flow's plan, shared by every node.
func (c *Cluster) Plan() *flowcore.Plan { return c.plan }

// Now is the virtual clock.
func (c *Cluster) Now() time.Time { return c.now }

// Elapsed is the virtual time since the start.
func (c *Cluster) Elapsed() time.Duration { return c.now.Sub(c.cfg.Start) }

// Counts are what happened so far.
func (c *Cluster) Counts() Counts { return c.counts }

// DeadLetters are the dead letters of every node so far.
func (c *Cluster) DeadLetters() []flows.DeadLetter { return c.dead }

// ErrRefused is what a sink of the world returns for a write it refuses
// on purpose: a fault the world injects, which the engine's rules take
// (the fragment restores and makes the outputs again), not a failure of
// the run. Err leaves such refusals out.
var ErrRefused = errors.New("sim: the sink refuses the write")

// Err is every failure a node reported (a sink or a checkpoint that
// failed), nil if none.
func (c *Cluster) Err() error { return errors.Join(c.errs...) }

// Close stops every node and closes their stores.
func (c *Cluster) Close() error {
	var errs []error
	for _, name := range c.names {
		errs = append(errs, c.nodes[name].stop())
	}
	c.events = nil
	return errors.Join(errs...)
}

// event is something that happens at a virtual time: a message arrives
// or a node ticks.
type event struct {
	at  time.Time
	seq uint64
	fn  func()
}

type eventHeap []event

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)   { *h = append(*h, x.(event)) }
func (h *eventHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// at schedules fn at time t (events at one time run in the order they
// were scheduled).
func (c *Cluster) at(t time.Time, fn func()) {
	c.seq++
	heap.Push(&c.events, event{at: t, seq: c.seq, fn: fn})
}

// Run moves the virtual clock by d, running everything due on the way.
func (c *Cluster) Run(d time.Duration) {
	end := c.now.Add(d)
	for len(c.events) > 0 && !c.events[0].at.After(end) {
		e := heap.Pop(&c.events).(event)
		c.now = e.at
		e.fn()
	}
	c.now = end
}

// RunUntil runs until cond holds, checked every step of virtual time,
// for at most limit; it reports whether cond held.
func (c *Cluster) RunUntil(limit, step time.Duration, cond func() bool) bool {
	for waited := time.Duration(0); ; waited += step {
		if cond() {
			return true
		}
		if waited >= limit {
			return false
		}
		c.Run(step)
	}
}

// send carries msg from node from to node to over the simulated network:
// after the latency and the faults' delay, unless a partition cuts the
// link (when it arrives) or a fault drops it; a duplicate arrives twice.
// The message is lost if its destination restarted meanwhile (its
// connections broke).
func (c *Cluster) send(from, to string, msg func(n *node)) {
	dst := c.nodes[to]
	if dst == nil {
		return
	}
	if from == to {
		inc := dst.inc
		c.at(c.now, func() { dst.deliver(inc, msg) })
		return
	}
	c.counts.Messages++
	f := c.cfg.Faults
	if c.fault(f.Drop) {
		c.counts.Dropped++
		return
	}
	copies := 1
	if c.fault(f.Duplicate) {
		c.counts.Duplicated++
		copies = 2
	}
	inc := dst.inc
	for range copies {
		d := c.cfg.Latency
		if f.Delay > 0 {
			d += time.Duration(c.rng.Int64N(int64(f.Delay) + 1))
		}
		if c.fault(f.Reorder) {
			c.counts.Reordered++
			d += time.Duration(c.rng.Int64N(20*int64(c.cfg.Latency+f.Delay) + 1))
		}
		c.at(c.now.Add(d), func() {
			if c.cut[[2]string{from, to}] {
				c.counts.Cut++
				return
			}
			dst.deliver(inc, msg)
		})
	}
}

// deliver runs msg at n, if n still runs the incarnation it was sent to;
// a paused node holds it until it resumes.
func (n *node) deliver(inc int, msg func(*node)) {
	if !n.up || n.inc != inc {
		return
	}
	if n.paused {
		n.held = append(n.held, func() {
			if n.up && n.inc == inc {
				msg(n)
			}
		})
		return
	}
	msg(n)
}

// SetFaults changes the network's faults from now on.
func (c *Cluster) SetFaults(f Faults) error {
	cfg := c.cfg
	cfg.Faults = f
	if err := cfg.Validate(); err != nil {
		return err
	}
	c.cfg.Faults = f
	return nil
}

func (c *Cluster) fault(p float64) bool { return p > 0 && c.rng.Float64() < p }

// crashRand is a generator drawn from the seed, for pebble's crash clones.
func (c *Cluster) crashRand() *rand.Rand {
	return rand.New(rand.NewPCG(c.rng.Uint64(), c.rng.Uint64()))
}
