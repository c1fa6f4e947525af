package actor

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	pa "github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/internal/wire"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/shard"
	"github.com/tessera-streams/tessera/splice"
)

// Config configures an Engine. Zero fields take the defaults.
type Config struct {
	BatchSize    int           // records per batch message; default 512 (see defaults)
	BatchDelay   time.Duration // longest a partial batch waits; default 5ms
	Credits      int           // unacknowledged batches per reader and fragment; default 4
	PollSize     int           // events read per poll; default 512
	IdleDelay    time.Duration // wait before polling a source that had nothing; default 10ms
	TickInterval time.Duration // resolution of timers and checkpoint intervals; default 50ms
	// QueryTimeout bounds a query to fragments whose nodes can be reached;
	// default 10s. Fragments on a node that cannot be reached answer from
	// a standby's copy, or the query fails at once (query.go).
	QueryTimeout time.Duration
	// CheckpointInterval is how often each fragment checkpoints; default 1s,
	// negative for never (a final checkpoint is still taken at Stop, and
	// Checkpoint takes one). A flow that keys again after a stateful stage
	// sends its outputs across the exchange only as checkpoints cover them:
	// with never, its later stages get their input, and a bounded input its
	// end, only at Checkpoint and Stop.
	CheckpointInterval time.Duration
	// MaxAttempts is how often an event on which a user function fails is
	// tried, each time after restoring the fragment, before it goes to the
	// dead-letter output; default 3.
	MaxAttempts int
	// RetryBackoff is how long a failed fragment waits, times the attempt,
	// before it asks its readers to replay; meanwhile it serves its restored
	// state and drops what it is sent, so its readers and every other
	// fragment go on. Default 100ms.
	RetryBackoff time.Duration
	// Epoch is the placement epoch that batches carry; fragments drop
	// batches of an older one. A single node has one placement: 1.
	Epoch uint64
	// Store keeps checkpoints. Nil: an in-memory store that lives as long as
	// the engine (recovery within the run, nothing across restarts).
	Store  *recovery.Store
	Logger *slog.Logger
	// LogActors passes protoactor's own Info and Debug logs through; by
	// default only its warnings and errors reach Logger.
	LogActors bool
	// Now is the processing-time clock; time.Now if nil. The engine's own
	// delays run on it too: BatchDelay, CheckpointInterval, RetryBackoff
	// and the credits' timeout. A clock that does not move holds partial
	// batches and checkpoints until it does: a test's virtual clock must
	// be advanced, as processing-time timers need anyway.
	Now func() time.Time
	// OnDeadLetters receives dead letters (malformed input, failed user
	// functions) in addition to the flow's dead-letter sink. It is called
	// from actor goroutines and must not block.
	OnDeadLetters func([]flows.DeadLetter)
	// OnCheckpoint is told of each durable checkpoint of a fragment on
	// this node: how long it took from being taken to being durable, and
	// the bytes it wrote. It is called from actor goroutines and must not
	// block.
	OnCheckpoint func(fragment int, took time.Duration, bytes int)
	// Cluster places the engine on one node of a cluster: it runs the
	// fragments and source partitions the placement gives it, and reaches
	// the others over protoactor remote. Nil: one node runs everything.
	Cluster *ClusterConfig
	// OnAlert receives each alert once it is durable (in a cluster, on the
	// node that raised it; see doc.go). It must not block.
	OnAlert func(flows.AlertRecord)
	// AlertInterval is how often alerts are evaluated; default 100ms.
	AlertInterval time.Duration
	// Live reports whether a node (by name) is a live member of the
	// cluster, as the membership sees it: a query stops waiting for a node
	// that is not. Nil: only whether its remote accepts connections
	// counts. It must be safe for concurrent use and must not block.
	Live func(node string) bool
	// PauseLimit, in a cluster, is how long the node's process may stand
	// still (SIGSTOP, a paused VM, a stall) before the others may have
	// declared it dead and placed its fragments elsewhere: after a longer
	// gap in its own clock, every fragment drops its state and pending
	// outputs, restores its last durable checkpoint and waits for a
	// hand-off from the node that owned it meanwhile (doc.go, "A paused
	// node"). cluster.Node sets it from its gossip timings. Zero: the
	// clock is not watched (Resumed still works).
	PauseLimit time.Duration
	// RemoteTLS, in a cluster, makes node-to-node messages mutual TLS: it
	// is the gRPC server's and every connection's configuration, so it
	// holds this node's certificate, the CA as RootCAs and ClientCAs, and
	// requires client certificates. Nil: plaintext.
	RemoteTLS *tls.Config
	// RemoteWait, in a cluster, bounds how long a placement waits for the
	// other nodes' remotes to accept connections before it goes on
	// without them (see awaitRemotes); default 10s. Tests whose placement
	// names a node that never listens set it short.
	RemoteWait time.Duration
	// UncleanAfter, in a cluster, lets a fragment that waited this long
	// for a copy of the newest checkpoint it settled — every such copy is
	// on members that are down (recovery.Settled) — start from the newest
	// copy the live members have, or from nothing, as Kafka's unclean
	// leader election does. Outputs it already delivered may then be
	// delivered again with other values under the same ids, and what the
	// lost copies held is lost: it is for a member that will not come
	// back (its disk is gone). Zero, the default: the fragment waits
	// until such a member is back.
	UncleanAfter time.Duration
}

// Validate reports a configuration that cannot work: negative sizes,
// counts or durations (zero takes the default; only CheckpointInterval
// may be negative, for never), or a cluster placement without a node.
func (c *Config) Validate() error {
	var errs []error
	for _, n := range []struct {
		name string
		v    int64
	}{
		{"BatchSize", int64(c.BatchSize)}, {"BatchDelay", int64(c.BatchDelay)}, {"Credits", int64(c.Credits)},
		{"PollSize", int64(c.PollSize)}, {"IdleDelay", int64(c.IdleDelay)}, {"TickInterval", int64(c.TickInterval)},
		{"QueryTimeout", int64(c.QueryTimeout)}, {"MaxAttempts", int64(c.MaxAttempts)},
		{"RetryBackoff", int64(c.RetryBackoff)}, {"AlertInterval", int64(c.AlertInterval)},
		{"PauseLimit", int64(c.PauseLimit)}, {"RemoteWait", int64(c.RemoteWait)}, {"UncleanAfter", int64(c.UncleanAfter)},
	} {
		if n.v < 0 {
			errs = append(errs, fmt.Errorf("%s is negative (%d); zero takes the default", n.name, n.v))
		}
	}
	if cl := c.Cluster; cl != nil {
		if cl.Self == "" {
			errs = append(errs, errors.New("Cluster.Self is empty: the node needs a name"))
		}
		if cl.Remote == "" {
			errs = append(errs, errors.New("Cluster.Remote is empty: the node needs a protoactor remote address"))
		}
	}
	return errors.Join(errs...)
}

func (c *Config) defaults() {
	// 512 records a batch: a reader fills one batch per fragment at
	// once, and with 64 fragments 1024 records of 56 bytes each (3.6 MB)
	// no longer fit the caches it writes them through. At 512 the keyed
	// count bench took 78 ns of CPU an event against 89-90 at 1024, and
	// its p99 latency fell from 52 to 22 ms (`go run ./bench -only
	// keyed-count -batch 512`, then `-batch 1024`).
	if c.BatchSize <= 0 {
		c.BatchSize = 512
	}
	if c.BatchDelay <= 0 {
		c.BatchDelay = 5 * time.Millisecond
	}
	if c.Credits <= 0 {
		c.Credits = recovery.DefaultCredits
	}
	if c.PollSize <= 0 {
		c.PollSize = 512
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
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = time.Second
	}
	if c.Epoch == 0 {
		c.Epoch = 1
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 3
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = 100 * time.Millisecond
	}
	if c.AlertInterval <= 0 {
		c.AlertInterval = 100 * time.Millisecond
	}
	if c.RemoteWait <= 0 {
		c.RemoteWait = defaultRemoteWait
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// ClusterConfig is the engine's place in a cluster.
type ClusterConfig struct {
	Self   string // this node's name
	Remote string // this node's protoactor remote address, host:port
	// Placement: the owner of every fragment and of every source partition
	// (in Plan.Sources order, partitions in order), the remote address of
	// every node, and the placement epoch that batches carry.
	Epoch     uint64
	Fragments []string
	Standbys  []string // the standby of each fragment ("" for none): it keeps a copy of the checkpoints
	Readers   []string
	Remotes   map[string]string
	// Leaving: the nodes that are leaving (name → remote address). They
	// own nothing in this placement but are alive, and hand off what they
	// owned.
	Leaving map[string]string
	// For a node joining a running cluster: AwaitHandoff marks the
	// fragments a live node owns now and hands off to this one when it
	// sees it (they wait for that checkpoint instead of replaying from the
	// local store); ReaderFrom, per source partition (in Readers order),
	// where the cluster committed it (-1 unknown): a reader this node takes
	// over starts there rather than at the start of its empty store.
	AwaitHandoff []bool
	ReaderFrom   []int64
	// HandoffFrom, per fragment that awaits a hand-off, the node that
	// owns it now ("" unknown): it is asked whether it has the fragment
	// at all, and the wait ends at once if it has not.
	HandoffFrom []string
	// ColdStart: the first placement of a restarted node that found no
	// member running (cluster.Node's joinRunning). Who owned its fragments
	// while it was away is unknown, and the live members may keep a newer
	// lineage than its own copy, whose outputs were released: every
	// fragment it owns gathers their copies before it starts
	// (recovery.Gather), as one gained from a dead owner.
	ColdStart bool
	// Alerts: the node that evaluates the flow's alerts and its standby,
	// if any (a flow with alerts needs them; see doc.go).
	Alerts []string
	// Agreement: this placement's agreed membership and the ones before
	// it (shard.Agreement); Caught: the newest placement epoch this node
	// caught up with. The engine tells every member all it knows once it
	// applies a placement, and reports when what it heard knows of every
	// checkpoint settled before it (CaughtUp; shard.CatchUp).
	Agreement shard.Agreement
	Caught    uint64
}

func (c *ClusterConfig) awaitHandoff(f int) bool {
	return c != nil && f < len(c.AwaitHandoff) && c.AwaitHandoff[f]
}

func (c *ClusterConfig) readerFrom(i int) int64 {
	if c == nil || i >= len(c.ReaderFrom) {
		return -1
	}
	return c.ReaderFrom[i]
}

// Engine runs one flow's readers and fragments on one node.
type Engine struct {
	plan     *flowcore.Plan
	cfg      Config
	store    *recovery.Store
	ownStore bool
	sys      *pa.ActorSystem
	workers  *workers // runs the fragments', readers' and inbox's mailboxes
	layout   atomic.Pointer[layout]
	placeMu  sync.Mutex             // one placement change at a time
	allParts []recovery.PartitionID // every source partition, in source order
	remote   *remote.Remote
	querier  *pa.PID
	inbox    *pa.PID       // in a cluster: other nodes' batches in, acknowledgements and announcements out
	replica  *pa.PID       // in a cluster: standby copies and hand-offs in
	started  chan struct{} // closed when Start returns
	// replicated counts checkpoints sent to standbys; fencedChunks the
	// checkpoint chunks refused from a stale owner.
	replicated   atomic.Int64
	fencedChunks atomic.Int64
	// malformed counts messages from other nodes that did not decode or
	// were for another flow; handoffs the hand-offs sent and not yet
	// confirmed by the new owner; handedOff, per fragment, the placement
	// epoch of a hand-off that arrived before its placement, and
	// handedOffFrom the sender's remote address, to confirm it to
	// (placeMu).
	malformed     atomic.Int64
	handoffs      atomic.Int64
	handedOff     map[int]uint64
	handedOffFrom map[int]handoffRef

	// superseded are this node's own copies that a hand-off of a newer
	// lineage replaced although they held a later checkpoint (supMu):
	// offered to the fragment here if the lineage's copy proves stale.
	supMu      sync.Mutex
	superseded map[int]*recovery.Checkpoint

	// sent, per fragment: the largest number of a batch its actors sent
	// downstream, from a random start per process. The fragment's next
	// actor here numbers its sends past it, so that a late
	// acknowledgement of an earlier actor's batch (or, through
	// protoactor's remote, of an earlier process's) finds none of its own
	// (recovery.MachineConfig.FirstSend).
	sent []atomic.Uint64

	// settled: the newest checkpoint each fragment settled, as far as this
	// node knows (settledMu; settled.go).
	settledMu sync.Mutex
	settled   recovery.Settled
	// catch: how far the node caught up with what was settled before its
	// placement (catchMu; catchup.go).
	catchMu sync.Mutex
	catch   shard.CatchUp

	self      string // this node's name in a cluster; "" for a single node
	writes    chan writeReq
	settling  func() // tests: runs as settleWrites begins
	drained   chan struct{}
	stop      chan struct{}
	stopMu    sync.Mutex            // stop closes under it: e.bg takes no Add after its Wait
	bg        sync.WaitGroup        // the ticker, the writer, retry timers and probes
	failed    atomic.Pointer[error] // the first fatal error
	failedCh  chan struct{}         // closed with the first fatal error
	once      sync.Once
	mu        sync.Mutex // guards the drain count
	unfinish  int        // readers not finished, plus rewinds not yet handled
	drainOnce sync.Once
	hold      atomic.Int64 // window views keep windows ending after it (alerts)
	down      sync.Map     // remote address → when a query found it unreachable (query.go)
	alerts    alertLog
	pause     *pauseClock // in a cluster: notices that the process was stopped
}

// Start restores every fragment from its last checkpoint (failing if one
// cannot be trusted, or if the store's checkpoints were written by another
// layout of the flow: recovery.Store.CheckLayout), spawns the fragments
// and the readers, and starts each reader at the smallest offset any
// fragment still needs.
//
// With Config.Cluster, the engine is one node of a cluster: one per process
// (protoactor's remote.Start sets gRPC's global logger, which races with the
// gRPC connections of another node in the same process).
func Start(plan *flowcore.Plan, cfg Config) (e *Engine, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("engine config: %w", err)
	}
	cfg.defaults()
	e = &Engine{plan: plan, cfg: cfg, store: cfg.Store, drained: make(chan struct{}), stop: make(chan struct{}), started: make(chan struct{}),
		failedCh: make(chan struct{}),
		writes:   make(chan writeReq, plan.Fragments()), handedOff: map[int]uint64{}, handedOffFrom: map[int]handoffRef{}, superseded: map[int]*recovery.Checkpoint{}}
	e.sent = make([]atomic.Uint64, plan.Fragments())
	base := rand.Uint64N(1 << 62) // a process's machines number below 1<<63 (FirstSend)
	for i := range e.sent {
		e.sent[i].Store(base)
	}
	if e.store == nil {
		if e.store, err = recovery.Open("checkpoints", vfs.NewMem(), cfg.Logger); err != nil {
			return nil, err
		}
		e.ownStore = true
	}
	grew, err := e.store.CheckLayout(plan.Name(), plan.Layout())
	if err != nil {
		e.closeStore()
		return nil, err
	}
	if grew {
		cfg.Logger.Info(recovery.LayoutGrew, "flow", plan.Name())
	}
	if e.settled, err = e.store.Settled(plan.Name()); err != nil {
		e.closeStore()
		return nil, err
	}
	cl := cfg.Cluster
	owns := func(owner []string, i int) bool { return cl == nil || owner[i] == cl.Self }
	if cl != nil {
		parts := 0
		for _, s := range plan.Sources() {
			parts += s.Partitions
		}
		if len(cl.Fragments) != plan.Fragments() || len(cl.Readers) != parts {
			e.closeStore()
			return nil, fmt.Errorf("placement of %d fragments and %d partitions for a flow of %d and %d",
				len(cl.Fragments), len(cl.Readers), plan.Fragments(), parts)
		}
		e.self = cl.Self
		e.pause = newPauseClock(cfg.PauseLimit)
		cfg.Epoch = max(cfg.Epoch, cl.Epoch)
		e.cfg.Epoch = cfg.Epoch
	}
	restored := make([]*recovery.Restored, plan.Fragments())
	for i := range restored {
		if !owns(cl.fragments(), i) {
			continue
		}
		r, err := recovery.Restore(e.store, plan, i)
		if err != nil {
			e.closeStore()
			return nil, err
		}
		restored[i] = &r
	}
	if err = e.loadAlerts(); err != nil {
		e.closeStore()
		return nil, err
	}
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
	e.workers = newWorkers(300) // protoactor's default throughput
	e.bg.Add(1)
	go e.writer()
	eng := e // the results are nil when an error returns
	defer func() {
		if err != nil {
			eng.shutdown(false)
		}
	}()
	defer close(eng.started) // before the clean-up above
	// silent: the members whose remote does not answer (layout.silent).
	var silent *silence
	if cl != nil {
		// The replica actor runs from here on, but handles nothing until
		// Start returns (started) and placements wait for placeMu: the
		// nodes that owned this node's fragments hand them off as soon as
		// its remote answers, and the hand-offs find the fragments waiting.
		e.placeMu.Lock()
		defer e.placeMu.Unlock()
		if e.remote, err = startRemote(e.sys, cl.Remote, cfg.RemoteTLS); err != nil {
			return nil, err
		}
		if e.replica, err = e.sys.Root.SpawnNamed(pa.PropsFromProducer(func() pa.Actor { return &replicaActor{e: e, partial: map[uint32]*assembly{}} }),
			plan.Name()+"/replica"); err != nil {
			return nil, fmt.Errorf("spawn replica actor: %w", err)
		}
		// One inbox for the engine's life: restarted after a panic, it
		// keeps what it holds and knows whether the fragments run.
		in := newInboxActor(e)
		if e.inbox, err = e.sys.Root.SpawnNamed(pa.PropsFromProducer(func() pa.Actor { return in }, pa.WithDispatcher(e.workers)),
			plan.Name()+"/inbox"); err != nil {
			return nil, fmt.Errorf("spawn inbox actor: %w", err)
		}
		if inboxStarted != nil {
			inboxStarted(e)
		}
		silent = e.awaitRemotes(cl)
	}
	root := e.sys.Root
	l := &layout{epoch: cfg.Epoch, silent: silent}
	// In a cluster, a fragment restored from a checkpoint (its own, a
	// standby copy or a hand-off that came before) asks every reader to
	// replay from its offsets: readers on other nodes may have gone past
	// them with nothing more to send that would show the gap (found by the
	// simulation). On one node the readers start where the fragments are.
	var replay []bool
	others := liveOthers(cl)
	gathers := map[int][]string{}
	for i, r := range restored {
		if r == nil {
			l.route = append(l.route, e.pidOf(cl.Fragments[i], e.fragName(i)))
			l.local = append(l.local, -1)
			continue
		}
		wait, gather, lacking := cl.awaitHandoff(i), []string(nil), false
		if cl != nil && cl.ColdStart && !wait && len(others) > 0 {
			wait, gather = true, others
		} else if cl != nil && !wait && recovery.Short(r.Manifest.Epoch, e.settledOf(i)) {
			// Its copy is behind the newest checkpoint it settled: as
			// Place, it gathers the live members' copies first.
			wait, gather = true, others
			lacking = len(gather) == 0
		}
		pid, st, err := e.spawnFragment(i, *r, cfg.Epoch, wait, gather, others, cl.members())
		if err != nil {
			return nil, err
		}
		if lacking {
			root.Send(pid, lackMsg{})
		}
		if gather != nil {
			gathers[i] = gather // asked once the layout routes to it
		}
		replay = append(replay, r.Found && cl != nil && !wait)
		l.local = append(l.local, len(l.frags))
		l.route = append(l.route, pid)
		l.frags = append(l.frags, pid)
		l.fstats = append(l.fstats, st)
	}
	reader := 0
	for si, s := range plan.Sources() {
		for p := range s.Partitions {
			part := recovery.PartitionID{Source: si, Partition: p}
			e.allParts = append(e.allParts, part)
			if !owns(cl.readers(), reader) {
				l.allRead = append(l.allRead, e.pidOf(cl.Readers[reader], e.readerName(reader)))
				reader++
				continue
			}
			// Start at the smallest offset a local fragment needs; a remote
			// fragment that needs an earlier one asks for a rewind.
			from := int64(-1)
			for _, r := range restored {
				if r == nil {
					continue
				}
				if end := r.Vector.End(part); from < 0 || end < from {
					from = end
				}
			}
			rpid, st, err := e.spawnReader(reader, max(from, cl.readerFrom(reader), 0))
			if err != nil {
				return nil, err
			}
			reader++
			l.readers = append(l.readers, rpid)
			l.rstats = append(l.rstats, st)
			l.rparts = append(l.rparts, part)
			l.allRead = append(l.allRead, rpid)
		}
	}
	if cl != nil {
		// Before the layout is published: fragments read it (Recopy, Fetch).
		l.standby, l.cl = e.standbys(cl), cl
	}
	e.layout.Store(l)
	if cl != nil {
		e.agree(cl)
		e.tellAllSettled(l)
	}
	for j, pid := range l.frags {
		root.Send(pid, startMsg{replay: replay[j]})
	}
	if e.inbox != nil {
		root.Send(e.inbox, inboxReadyMsg{}) // after the fragments' start
	}
	for f := range restored {
		if restored[f] != nil && cl.awaitHandoff(f) && f < len(cl.HandoffFrom) {
			e.askHandoff(f, cl.HandoffFrom[f], cfg.Epoch)
		}
		for _, m := range gathers[f] {
			e.askHandoff(f, m, cfg.Epoch)
		}
	}
	if cl != nil {
		if e.querier, err = root.SpawnNamed(pa.PropsFromProducer(func() pa.Actor { return &queryActor{e: e} }),
			plan.Name()+"/query"); err != nil {
			return nil, fmt.Errorf("spawn query actor: %w", err)
		}
		if err = e.startAlerts(cl); err != nil {
			return nil, err
		}
	}
	e.bg.Add(1)
	go e.tick()
	if e.alerts.m != nil {
		e.bg.Add(1)
		go e.alertLoop()
	}
	for _, pid := range l.readers {
		root.Send(pid, pollMsg{})
	}
	return e, nil
}

// inboxStarted, if set (by a test), runs in Start once the inbox and the
// remote run and before the fragments do.
var inboxStarted func(e *Engine)

// layout is where the engine's actors are: the local fragments and
// readers, and every fragment's and reader's actor, local or remote. A
// placement change swaps in a new one.
type layout struct {
	epoch   uint64
	frags   []*pa.PID // the local fragments' actors
	fstats  []*FragmentStats
	readers []*pa.PID // the local readers' actors
	rstats  []*ReaderStats
	rparts  []recovery.PartitionID
	route   []*pa.PID      // every fragment's actor, local or remote
	local   []int          // fragment → index in frags, or -1
	allRead []*pa.PID      // every reader's actor, local or remote (in allParts order)
	standby []*pa.PID      // per fragment: the replica actor of its standby node, nil for none
	cl      *ClusterConfig // the placement (nil for a single node); not modified
	// silent: the members whose remote did not answer when the placement
	// was applied (awaitRemotes). They are not sent news of settled
	// checkpoints until a probe finds them (probeSilent; nil: none).
	silent *silence
}

func (e *Engine) fragName(i int) string { return fmt.Sprintf("%s/kg-%03d", e.plan.Name(), i) }

func (e *Engine) readerName(i int) string {
	p := e.allPartsAt(i)
	return fmt.Sprintf("%s/reader-%s-%d", e.plan.Name(), e.plan.Sources()[p.Source].Name, p.Partition)
}

// partIndex is the index of source partition p in allParts, or -1.
func (e *Engine) partIndex(p recovery.PartitionID) int {
	i := 0
	for si, s := range e.plan.Sources() {
		if si == p.Source {
			if p.Partition < 0 || p.Partition >= s.Partitions {
				return -1
			}
			return i + p.Partition
		}
		i += s.Partitions
	}
	return -1
}

// allPartsAt is source partition i in source order.
func (e *Engine) allPartsAt(i int) recovery.PartitionID {
	for si, s := range e.plan.Sources() {
		if i < s.Partitions {
			return recovery.PartitionID{Source: si, Partition: i}
		}
		i -= s.Partitions
	}
	return recovery.PartitionID{Source: -1}
}

// pidOf is the actor name on owner's node.
func (e *Engine) pidOf(owner, name string) *pa.PID {
	cl := e.cfg.Cluster
	if cl == nil || owner == cl.Self {
		return pa.NewPID(e.sys.Address(), name)
	}
	return pa.NewPID(cl.Remotes[owner], name)
}

// standbys are the replica actors of the fragments' standby nodes.
func (e *Engine) standbys(cl *ClusterConfig) []*pa.PID {
	out := make([]*pa.PID, len(cl.Fragments))
	for f := range out {
		if sb := standbyOf(cl, f); sb != "" {
			out[f] = e.pidOf(sb, e.plan.Name()+"/replica")
		}
	}
	return out
}

// standbyOf is fragment f's standby in cl ("" for none, or this node).
func standbyOf(cl *ClusterConfig, f int) string {
	if f < len(cl.Standbys) && cl.Standbys[f] != cl.Self {
		return cl.Standbys[f]
	}
	return ""
}

// spawnFragment starts fragment i's actor from its restored state. A
// fragment that waits for a hand-off takes no input until its old owner's
// last checkpoint arrives (or handoffWait passes).
func (e *Engine) spawnFragment(i int, r recovery.Restored, epoch uint64, waitHandoff bool, gather, others, members []string) (*pa.PID, *FragmentStats, error) {
	st := &FragmentStats{ID: i, offsets: map[string]int64{}, durable: r.Vector.Snapshot(), channelWMs: make([]atomic.Int64, len(e.plan.Channels()))}
	st.RestoredEpoch.Store(r.Manifest.Epoch)
	st.RestoredEvents.Store(r.Manifest.Events)
	st.storeWatermarks(r.Fragment)
	st.Epoch.Store(r.Manifest.Epoch)
	st.CkptTime.Store(r.Manifest.Time)
	st.Events.Store(r.Manifest.Events)
	for p, end := range st.durable {
		st.offsets[e.plan.PartitionName(p.Source, p.Partition)] = end
	}
	// Strong productions (recovery's package doc): a checkpoint's outputs
	// leave once its standby confirmed its copy (at once on a single node
	// or without a standby: ckptDone.copying), and a fragment started from
	// any copy checks it against what its downstream fragments applied.
	m := recovery.NewMachine(e.plan, i, r, epoch, waitHandoff, recovery.MachineConfig{MaxAttempts: e.cfg.MaxAttempts,
		Backoff: e.cfg.RetryBackoff, RewindTimeout: recovery.DefaultRewindTimeout, Replicated: true, Confirm: true,
		FirstSend: e.sent[i].Load() + 1})
	m.SetNow(e.cfg.Now())
	fa := &fragmentActor{e: e, id: i, m: m, stats: st, lastCkpt: e.cfg.Now(), pauses: e.pauseCount(),
		// The standby's copy may be of another lineage (an owner that
		// restored an older copy reuses checkpoint epochs): its first
		// checkpoint goes whole.
		fullNext: e.self != "",
		// A fragment that starts empty checkpoints its whole state first.
		fromEmpty:     e.self != "" && r.Manifest.Epoch == 0 && !waitHandoff,
		waitCounted:   waitHandoff,
		waitPlacement: epoch,
		others:        others,
		members:       members}
	if gather != nil {
		fa.gather = recovery.NewGather[handoffMsg](gather)
	}
	st.fa = fa
	if waitHandoff {
		e.drainCount(+1)
	}
	props := pa.PropsFromProducer(func() pa.Actor { return fa }, pa.WithMailbox(pa.UnboundedPriority()),
		pa.WithDispatcher(e.workers))
	pid, err := e.sys.Root.SpawnNamed(props, e.fragName(i))
	if err != nil {
		return nil, nil, fmt.Errorf("spawn fragment %d: %w", i, err)
	}
	if waitHandoff {
		e.after(handoffWait, pid, handoffTimeoutMsg{})
	}
	return pid, st, nil
}

// spawnReader starts the reader of source partition i (in source order)
// at offset from; it polls once sent a pollMsg.
func (e *Engine) spawnReader(i int, from int64) (*pa.PID, *ReaderStats, error) {
	part := e.allPartsAt(i)
	src := e.plan.Sources()[part.Source]
	r, err := e.plan.OpenReader(part.Source, part.Partition, from, e.cfg.BatchSize)
	if err != nil {
		return nil, nil, err
	}
	st := &ReaderStats{Source: src.Name, Partition: part.Partition}
	st.Position.Store(from)
	st.Committed.Store(-1)
	g := e.plan.Fragments()
	ra := &readerActor{e: e, r: r, stats: st, cr: recovery.NewCredits(g, e.cfg.Credits, e.cfg.Now()),
		out: map[string]*wire.Batches{}, outBytes: map[string]int{}}
	e.mu.Lock()
	e.unfinish++
	e.mu.Unlock()
	rpid, err := e.sys.Root.SpawnNamed(pa.PropsFromProducer(func() pa.Actor { return ra }, pa.WithDispatcher(e.workers)), e.readerName(i))
	if err != nil {
		r.Close()
		return nil, nil, fmt.Errorf("spawn reader %s/%d: %w", src.Name, part.Partition, err)
	}
	return rpid, st, nil
}

func (e *Engine) tick() {
	defer e.bg.Done()
	t := time.NewTicker(e.cfg.TickInterval)
	defer t.Stop()
	var lastCheck time.Time
	pauses := e.pauseCount()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			if e.pause != nil {
				e.watchPause(time.Now(), &pauses)
			}
			now := e.cfg.Now()
			l := e.layout.Load()
			for _, pid := range l.frags {
				e.sys.Root.Send(pid, tickMsg{now: now})
			}
			if e.self != "" && now.Sub(lastCheck) >= time.Second {
				lastCheck = now
				for _, pid := range l.readers {
					e.sys.Root.Send(pid, creditCheckMsg{})
				}
			}
		}
	}
}

// drainCount moves the count of unfinished readers and pending rewinds.
func (e *Engine) drainCount(d int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.unfinish += d
	if e.unfinish == 0 {
		e.drainOnce.Do(func() { close(e.drained) })
	}
}

// Plan is the plan the engine runs.
func (e *Engine) Plan() *flowcore.Plan { return e.plan }

// Drained is closed when every source partition is exhausted and every
// record read has been applied. Unbounded sources never drain.
func (e *Engine) Drained() <-chan struct{} { return e.drained }

// Err is the first error that stopped a reader or broke checkpointing, or
// nil.
func (e *Engine) Err() error {
	if err := e.failed.Load(); err != nil {
		return *err
	}
	return nil
}

// Failed is closed when the engine meets its first fatal error (Err): a
// reader stopped, or checkpoints or alerts can no longer be written. The
// engine keeps serving what it holds; what to do is the caller's choice
// (cluster.Node stops).
func (e *Engine) Failed() <-chan struct{} { return e.failedCh }

// Fragments returns the local fragments' counters.
func (e *Engine) Fragments() []*FragmentStats { return e.layout.Load().fstats }

// Readers returns the local readers' counters.
func (e *Engine) Readers() []*ReaderStats { return e.layout.Load().rstats }

// Committed is the offset of a local reader's partition up to which every
// fragment of the flow, on this node or another, has a durable checkpoint:
// what the source was committed.
func (e *Engine) Committed(reader int) int64 {
	l := e.layout.Load()
	if reader >= len(l.rstats) {
		return -1
	}
	return l.rstats[reader].Committed.Load()
}

// Views implements splice.Gatherer.
func (e *Engine) Views() []splice.Spec { return e.plan.Views() }

// Freshness implements splice.Gatherer from the fragments' counters.
func (e *Engine) Freshness() []splice.Freshness {
	fstats := e.layout.Load().fstats
	out := make([]splice.Freshness, len(fstats))
	for i, st := range fstats {
		out[i] = st.freshness()
	}
	return out
}

// Checkpoint makes every fragment take a checkpoint now and waits until
// all are durable.
func (e *Engine) Checkpoint(ctx context.Context) error { return e.checkpoint(ctx, false) }

// checkpoint is Checkpoint; final (the engine stops) does not wait for
// fragments that cannot checkpoint yet.
func (e *Engine) checkpoint(ctx context.Context, final bool) error {
	timeout := time.Minute
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	var futs []*pa.Future
	l := e.layout.Load()
	for _, pid := range l.frags {
		futs = append(futs, e.sys.Root.RequestFuture(pid, ckptReq{final: final}, timeout))
	}
	var errs []error
	for i, f := range futs {
		res, err := f.Result()
		if err == nil {
			err, _ = res.(error)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("checkpoint fragment %d: %w", l.fstats[i].ID, err))
		}
	}
	return errors.Join(errs...)
}

// Stop stops the readers, lets the fragments apply what was sent, takes a
// final checkpoint of every fragment, stops them, and waits for every
// goroutine the engine started. Safe to call twice.
func (e *Engine) Stop() {
	e.once.Do(func() { e.shutdown(true) })
}

func (e *Engine) shutdown(final bool) {
	if e.replica != nil {
		// It writes standby copies and hand-offs to the store, and takes
		// placeMu for hand-offs: stopped first.
		_ = e.sys.Root.PoisonFuture(e.replica).Wait()
	}
	// Readers stop reading and send every fragment what they have, so
	// that the final checkpoints cover everything read.
	e.placeMu.Lock() // no placement change from here
	defer e.placeMu.Unlock()
	l := e.layout.Load()
	if l == nil {
		l = &layout{}
		e.layout.Store(l)
	}
	var futs []*pa.Future
	for _, pid := range l.readers {
		futs = append(futs, e.sys.Root.RequestFuture(pid, stopMsg{}, time.Minute))
	}
	for _, f := range futs {
		_, _ = f.Result()
	}
	for _, pid := range l.readers {
		_ = e.sys.Root.PoisonFuture(pid).Wait()
	}
	if final && len(l.frags) > 0 {
		if err := e.checkpoint(context.Background(), true); err != nil {
			e.cfg.Logger.Error("final checkpoint", "err", err)
		}
		e.finalAlerts()
	}
	e.stopMu.Lock()
	close(e.stop)
	e.stopMu.Unlock()
	e.stopAlerts()
	for _, pid := range l.frags {
		_ = e.sys.Root.PoisonFuture(pid).Wait()
	}
	close(e.writes)
	e.bg.Wait()
	if e.remote != nil {
		e.remote.Shutdown(false)
	}
	e.sys.Shutdown()
	e.workers.Close()
	e.closeStore()
}

func (e *Engine) closeStore() {
	if e.ownStore {
		if err := e.store.Close(); err != nil {
			e.cfg.Logger.Error("close checkpoint store", "err", err)
		}
	}
}

func (e *Engine) fail(err error) {
	// A pointer, not an atomic.Value: a second error of another type
	// would make Value.CompareAndSwap panic.
	if e.failed.CompareAndSwap(nil, &err) {
		close(e.failedCh)
	}
	e.cfg.Logger.Error("engine failure", "err", err)
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
