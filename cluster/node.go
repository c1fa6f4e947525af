package cluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tessera-streams/tessera/actor"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/internal/wire"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/splice"
)

// Config configures a node.
type Config struct {
	Flow     *flows.Flow
	Name     string // node name; the host name if empty
	HTTPAddr string // listen address, e.g. 127.0.0.1:8080 (port 0 picks one)
	// DataDir is where the node keeps its checkpoints (DataDir/checkpoints)
	// and dead letters. Empty: checkpoints in memory, lost with the process.
	DataDir string
	Logger  *slog.Logger
	Engine  actor.Config // engine tuning; zero values take defaults
	// RateInterval is how often events/s figures are refreshed; default 1s.
	RateInterval time.Duration
	// Pages are the program's own GET routes beside the API (a page and
	// its assets, say), by path pattern ("/transport", "/transport/{file}").
	// Like the dashboard they stay open when tokens guard the API: a page
	// holds no data a token would guard, and reads the views through /v1/.
	Pages map[string]http.Handler

	// Cluster: with a gossip address, the node joins the nodes at Join
	// (none: it starts a cluster), waits for Expect members (default 1)
	// and a settled member list, and runs the fragments and source
	// partitions the placement gives it, reaching the others over
	// protoactor remote at Remote.
	Gossip string
	Join   []string
	Remote string
	Expect int

	// Security: TLS, tokens, gossip encryption, node-to-node TLS
	// (security.go). The zero value protects nothing.
	Security Security

	// Streams take events pushed over HTTP at POST
	// /v1/streams/{stream}/events (connectors/ingest makes them for a
	// single node, kafka.NewIngest and nats.NewIngest for a cluster). A
	// stream whose events live only on this node (NodeLocal) is refused in
	// a cluster: the node would acknowledge what its death could lose.
	Streams []Stream
}

// Stream is a stream that takes pushed events: its handler answers POST
// /v1/streams/{Name}/events, and must answer 200 only once the events are
// durable. Handlers are called concurrently.
type Stream interface {
	http.Handler
	Name() string
	// NodeLocal is true when acknowledged events are kept on this node
	// only (an embedded log), not in a replicated store.
	NodeLocal() bool
}

// Validate checks the configuration and the flow.
func (c *Config) Validate() error {
	var errs []error
	if c.Flow == nil {
		errs = append(errs, errors.New("no flow"))
	} else if err := c.Flow.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Engine.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.HTTPAddr == "" {
		errs = append(errs, errors.New("no HTTP address"))
	} else if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		errs = append(errs, fmt.Errorf("HTTP address %q: %w", c.HTTPAddr, err))
	}
	if c.Gossip != "" {
		for what, addr := range map[string]string{"gossip": c.Gossip, "remote": c.Remote} {
			if _, _, err := net.SplitHostPort(addr); err != nil {
				errs = append(errs, fmt.Errorf("%s address %q: %w", what, addr, err))
			}
		}
		if c.Expect < 0 {
			errs = append(errs, fmt.Errorf("expect %d members", c.Expect))
		}
	} else if len(c.Join) > 0 || c.Remote != "" {
		errs = append(errs, errors.New("join and remote need a gossip address"))
	}
	if k := len(c.Security.GossipKey); k != 0 && k != 16 && k != 24 && k != 32 {
		errs = append(errs, fmt.Errorf("gossip key of %d bytes: want 16, 24 or 32", k))
	}
	if c.Gossip == "" && (c.Security.GossipKey != nil || c.Security.RemoteTLS != nil) {
		errs = append(errs, errors.New("a gossip key and node-to-node TLS need a gossip address"))
	}
	if c.RateInterval < 0 {
		errs = append(errs, fmt.Errorf("rate interval %v is negative", c.RateInterval))
	}
	streams := map[string]bool{}
	for _, s := range c.Streams {
		if streams[s.Name()] {
			errs = append(errs, fmt.Errorf("stream %q given twice", s.Name()))
		}
		streams[s.Name()] = true
		if c.Gossip != "" && s.NodeLocal() {
			errs = append(errs, fmt.Errorf("stream %q keeps pushed events on this node only, and a cluster member must not acknowledge what its death could lose: "+
				"HTTP ingest into the embedded log needs a single node (no gossip address); in a cluster, push into Kafka or JetStream (kafka.NewIngest, nats.NewIngest)", s.Name()))
		}
	}
	for pattern, h := range c.Pages {
		if err := checkPage(pattern, h); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// checkPage refuses a page that would shadow or clash with the API's
// routes (ServeMux panics on a clash).
func checkPage(pattern string, h http.Handler) (err error) {
	if h == nil || !strings.HasPrefix(pattern, "/") || strings.HasPrefix(pattern, "/v1/") || pattern == "/" || pattern == "/{$}" {
		return fmt.Errorf("page %q: a page needs a handler and a path of its own, outside / and /v1/", pattern)
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("page %q: %v", pattern, r)
		}
	}()
	mux := http.NewServeMux()
	for _, p := range []string{"GET /metrics", "GET /healthz", "GET /readyz", "GET /{$}", "GET /dashboard/{file}", "/"} {
		mux.Handle(p, http.NotFoundHandler())
	}
	mux.Handle("GET "+pattern, h)
	return nil
}

// Node runs a flow and serves its API.
type Node struct {
	cfg     Config
	ready   chan struct{}
	ran     atomic.Bool // Run was called: a node runs once
	addr    string
	eng     *actor.Engine
	reg     *prometheus.Registry
	mem     *Membership // nil for a single node
	placeMu sync.Mutex
	place   Placement
	changes chan struct{} // the members changed
	dead    chan struct{} // the others declared this node dead (it refuted)
	peers   *http.Client  // asks the other nodes
	dl      deadLetters
	rates   rates
	hist    history
	met     *metrics
	shared  sharedState // the merged cluster state the dashboard's watchers share
}

// NewNode returns a node; Run validates and starts it.
func NewNode(cfg Config) *Node {
	return &Node{cfg: cfg, ready: make(chan struct{})}
}

// Ready is closed once the node serves HTTP and its engine runs.
func (n *Node) Ready() <-chan struct{} { return n.ready }

// Addr is the HTTP address the node listens on, once Ready.
func (n *Node) Addr() string { return n.addr }

// URL is the node's base URL (http:// or https://), once Ready.
func (n *Node) URL() string { return n.cfg.Security.scheme() + "://" + n.addr }

// Engine is the node's engine, once Ready.
func (n *Node) Engine() *actor.Engine { return n.eng }

// Run validates the configuration and the flow (returning their errors
// before anything starts), listens, runs the flow, and serves until ctx is
// done; then it stops everything it started and returns.
//
// A fatal error of the engine (a source partition that fails, checkpoints
// that cannot be written) stops the node too, and Run returns that error:
// a node never goes on serving a flow that no longer moves. Until it has
// stopped, /readyz answers 503 and /v1/cluster carries the error.
//
// A Node runs once: a second call to Run returns an error.
func (n *Node) Run(ctx context.Context) error {
	if n.ran.Swap(true) {
		return errors.New("cluster: Run called twice on one node (make a new Node to run again)")
	}
	cfg := &n.cfg
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("node config: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Name == "" {
		cfg.Name, _ = os.Hostname()
		if cfg.Gossip != "" { // several nodes may share a host
			cfg.Name += "-" + cfg.Gossip
		}
	}
	if cfg.RateInterval == 0 {
		cfg.RateInterval = time.Second
	}
	plan, err := cfg.Flow.Plan()
	if err != nil {
		return err
	}
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		n.dl.path = filepath.Join(cfg.DataDir, "deadletters.jsonl")
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err)
	}
	n.addr = ln.Addr().String()
	if cfg.Security.TLS != nil {
		ln = tls.NewListener(ln, cfg.Security.TLS.Clone())
	}
	n.peers = cfg.Security.peerClient()
	defer n.peers.CloseIdleConnections()
	n.met = newMetrics()
	var parts []string
	for _, s := range plan.Sources() {
		for p := range s.Partitions {
			parts = append(parts, fmt.Sprintf("%s/%d", s.Name, p))
		}
	}
	n.hist.init(parts)

	ecfg := cfg.Engine
	ecfg.Logger = cfg.Logger
	ecfg.OnDeadLetters = n.dl.add
	ecfg.OnCheckpoint = func(_ int, took time.Duration, _ int) { n.met.ckpt.Observe(took.Seconds()) }
	if cfg.Gossip != "" {
		meta := &wire.Meta{Remote: cfg.Remote, Http: n.addr, Flow: plan.Name(), Fragments: uint32(plan.Fragments()), Version: plan.Version()}
		n.changes, n.dead = make(chan struct{}, 1), make(chan struct{}, 1)
		n.mem, err = Join(MemberConfig{Name: cfg.Name, Bind: cfg.Gossip, Seeds: cfg.Join, Meta: meta, Logger: cfg.Logger, Key: cfg.Security.GossipKey,
			OnMember: func(ev MemberEvent) {
				if ev.Node != cfg.Name {
					n.hist.member(ev, time.Now())
				}
			},
			OnChange: func() {
				select {
				case n.changes <- struct{}{}:
				default:
				}
			},
			OnDeclaredDead: func() {
				select {
				case n.dead <- struct{}{}:
				default:
				}
			}})
		if err != nil {
			ln.Close()
			return err
		}
		defer func() {
			if err := n.mem.Leave(time.Second); err != nil {
				cfg.Logger.Warn("leave the cluster", "err", err)
			}
		}()
		if n.place, err = n.settle(ctx, n.mem, plan, max(cfg.Expect, 1)); err != nil {
			ln.Close()
			return err
		}
		ecfg.Cluster = n.place.engine(cfg.Name)
		ecfg.Live = n.mem.Alive
		if ecfg.PauseLimit == 0 {
			ecfg.PauseLimit = PauseLimit
		}
		// A node restarted under the name of one the others saw die refutes
		// that death as it joins: nothing of its old run is in memory.
		select {
		case <-n.dead:
		default:
		}
		ecfg.RemoteTLS = cfg.Security.RemoteTLS
		n.joinRunning(ctx, plan, ecfg.Cluster)
		cfg.Logger.Info("placed", "epoch", n.place.Epoch, "members", n.place.Members)
	}
	if cfg.DataDir != "" {
		store, err := recovery.Open(filepath.Join(cfg.DataDir, "checkpoints"), nil, cfg.Logger)
		if err != nil {
			ln.Close()
			return err
		}
		defer func() {
			if err := store.Close(); err != nil {
				cfg.Logger.Error("close checkpoint store", "err", err)
			}
		}()
		ecfg.Store = store
	}
	n.eng, err = actor.Start(plan, ecfg)
	if err != nil {
		ln.Close()
		return err
	}
	defer n.eng.Stop()
	if n.mem != nil {
		if err := n.mem.SetRunning(); err != nil {
			cfg.Logger.Warn("announce running", "err", err)
		}
	}
	n.registerMetrics()

	stopping := make(chan struct{})
	mux := http.NewServeMux()
	n.routes(mux, stopping)
	srv := &http.Server{Handler: n.met.timed(cfg.Security.guard(mux)), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn)}
	var wg sync.WaitGroup
	serveErr := make(chan error, 1)
	wg.Add(2)
	if n.mem != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.follow(stopping, plan)
		}()
	}
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			serveErr <- err
		}
	}()
	go func() {
		defer wg.Done()
		n.rates.run(n.eng, &n.hist, cfg.RateInterval, stopping)
	}()
	n.hist.event(Event{At: time.Now(), Kind: "started", Node: cfg.Name, Epoch: n.place.Epoch})
	close(n.ready)
	cfg.Logger.Info("node running", "node", cfg.Name, "flow", plan.Name(), "http", n.URL())

	select {
	case <-ctx.Done():
		err = nil
	case err = <-serveErr:
		err = fmt.Errorf("http server: %w", err)
	case <-n.eng.Failed():
		// A reader stopped or checkpoints broke: the node would serve
		// views that no longer move while looking healthy. Stop loudly;
		// a supervisor restarts it from its checkpoints, and in a cluster
		// the others take over its fragments.
		err = n.eng.Err()
		cfg.Logger.Error("the flow failed; stopping the node", "err", err)
	}
	if n.mem != nil && err == nil {
		n.handOff()
	}
	close(stopping)
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if serr := srv.Shutdown(sctx); serr != nil {
		srv.Close()
	}
	wg.Wait()
	n.eng.Stop()
	n.dl.close()
	if err == nil {
		err = n.eng.Err()
	}
	return err
}

func (n *Node) routes(mux *http.ServeMux, stopping chan struct{}) {
	splice.Register(mux, n.eng, splice.HandlerConfig{Done: stopping, Logger: n.cfg.Logger})
	mux.HandleFunc("GET /v1/cluster", n.cluster)
	mux.HandleFunc("GET /v1/cluster/history", n.history)
	mux.HandleFunc("GET /v1/cluster/watch", func(w http.ResponseWriter, r *http.Request) { n.clusterWatch(w, r, stopping) })
	streams := map[string]Stream{}
	for _, s := range n.cfg.Streams {
		streams[s.Name()] = s
	}
	mux.HandleFunc("POST /v1/streams/{stream}/events", func(w http.ResponseWriter, r *http.Request) {
		s, ok := streams[r.PathValue("stream")]
		if !ok {
			splice.WriteError(w, http.StatusNotFound, fmt.Sprintf("no stream %q", r.PathValue("stream")))
			return
		}
		s.ServeHTTP(w, r)
	})
	mux.HandleFunc("POST /v1/checkpoint", func(w http.ResponseWriter, r *http.Request) {
		if err := n.eng.Checkpoint(r.Context()); err != nil {
			splice.WriteError(w, http.StatusInternalServerError, err.Error())
			return
		}
		splice.WriteJSON(w, http.StatusOK, n.eng.Freshness())
	})
	mux.HandleFunc("GET /v1/deadletters", n.deadLetters)
	mux.HandleFunc("GET /v1/alerts", n.alertList)
	mux.HandleFunc("GET /v1/alerts/watch", func(w http.ResponseWriter, r *http.Request) { n.alertWatch(w, r, stopping) })
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		splice.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := n.eng.Err(); err != nil {
			splice.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "failed", "error": err.Error()})
			return
		}
		splice.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /{$}", n.dashboard)
	mux.Handle("GET /dashboard/{file}", dashboardAssets)
	for pattern, h := range n.cfg.Pages {
		mux.Handle("GET "+pattern, h)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// Not a route: 405 if the path exists for GET, else 404.
		for _, m := range []string{http.MethodGet, http.MethodPost} {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pat := mux.Handler(probe); pat != "/" && pat != "" && m != r.Method {
				w.Header().Set("Allow", m)
				splice.WriteError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: only %s is allowed", r.Method, r.URL.Path, m))
				return
			}
		}
		splice.WriteError(w, http.StatusNotFound, fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
	})
}

// ClusterState is the answer of GET /v1/cluster.
type ClusterState struct {
	Node         string    `json:"node"`
	Flow         FlowInfo  `json:"flow"`
	Members      []Member  `json:"members"`
	Placement    Placement `json:"placement"`
	EventsPerSec float64   `json:"events_per_sec"`
	DeadLetters  int64     `json:"dead_letters"`
	// Complete: every fragment (of this node, with scope=local) applied
	// all its input to the end and sent everything downstream — a bounded
	// input is fully processed and the views are final.
	Complete  bool            `json:"complete"`
	Fragments []FragmentState `json:"fragments"`
	Readers   []ReaderState   `json:"readers"`
	// Network: per node, checkpoints replicated, chunks fenced, malformed
	// or unknown messages dropped, hand-offs not yet confirmed.
	Network map[string]actor.NetStats `json:"network"`
	// Error is the fatal error that is stopping this node, if any.
	Error string `json:"error,omitempty"`
	// Gone: the members that left or died, as the node that answers saw
	// them (and that have not come back).
	Gone []Gone `json:"gone,omitempty"`
}

// FlowInfo identifies the flow a node runs.
type FlowInfo struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	Fragments int    `json:"fragments"`
}

// Member is a node of the cluster.
type Member struct {
	Name   string `json:"name"`
	Gossip string `json:"gossip,omitempty"` // gossip address
	Remote string `json:"remote,omitempty"` // protoactor remote address
	HTTP   string `json:"http"`
	Epoch  uint64 `json:"epoch,omitempty"` // the node's placement epoch
	// Running: its engine runs (a node still starting, or one that has
	// not yet joined a placement, is not).
	Running bool   `json:"running"`
	Status  string `json:"status"`
}

// FragmentState is one fragment in GET /v1/cluster.
type FragmentState struct {
	Fragment        int              `json:"fragment"`
	Owner           string           `json:"owner"`
	Standby         string           `json:"standby,omitempty"` // keeps a copy of its checkpoints, takes over if the owner dies
	Events          int64            `json:"events"`
	Lag             int64            `json:"lag"` // source offsets read but not yet applied here, over the partitions it has seen
	EventsPerSec    float64          `json:"events_per_sec"`
	Batches         int64            `json:"batches"`
	Duplicates      int64            `json:"duplicate_batches"`
	Gaps            int64            `json:"gaps"`
	Fenced          int64            `json:"fenced"`          // batches of an older placement epoch, dropped
	Failures        int64            `json:"failures"`        // user-function failures, each followed by a restore
	DeadLetters     int64            `json:"dead_letters"`    // events skipped after their last attempt
	Restores        int64            `json:"restores"`        // restores from a checkpoint
	Replayed        int64            `json:"replayed"`        // source offsets received again after a restore or restart
	Epoch           uint64           `json:"epoch"`           // of the last durable checkpoint
	RestoredEpoch   uint64           `json:"restored_epoch"`  // the checkpoint it started from on this node (0: none)
	RestoredEvents  int64            `json:"restored_events"` // the events that checkpoint had counted
	CheckpointAt    *time.Time       `json:"checkpoint_at"`   // when it was taken
	CheckpointAge   float64          `json:"checkpoint_age_sec"`
	CheckpointTook  float64          `json:"checkpoint_duration_sec"` // the last one, from being taken to being durable
	CheckpointBytes int64            `json:"checkpoint_bytes"`        // written in all
	CheckpointErr   string           `json:"checkpoint_error,omitempty"`
	Watermark       *time.Time       `json:"watermark,omitempty"` // event-time watermark, for flows with event time
	TooLate         int64            `json:"too_late"`            // events later than every window's allowed lateness
	Offsets         map[string]int64 `json:"offsets"`
	Retained        int64            `json:"retained"` // outputs kept for downstream fragments' checkpoints
	Complete        bool             `json:"complete"` // every input ended and was applied, every output sent
}

// ReaderState is one source partition in GET /v1/cluster.
type ReaderState struct {
	Source       string  `json:"source"`
	Partition    int     `json:"partition"`
	Owner        string  `json:"owner"`
	Position     int64   `json:"position"`
	Events       int64   `json:"events"`
	EventsPerSec float64 `json:"events_per_sec"`
	Committed    int64   `json:"committed"` // every fragment's checkpoint covers the partition up to here
	Malformed    int64   `json:"malformed"`
	Stalls       int64   `json:"stalls"`
	Rewinds      int64   `json:"rewinds"`
	Done         bool    `json:"done"`
}

// State reports the node's view of the cluster.
func (n *Node) State() ClusterState {
	plan := n.eng.Plan()
	total := n.rates.all()
	st := ClusterState{
		Node:         n.cfg.Name,
		Flow:         FlowInfo{Name: plan.Name(), Version: plan.Version(), Fragments: plan.Fragments()},
		Members:      []Member{{Name: n.cfg.Name, HTTP: n.addr, Status: "alive"}},
		Placement:    n.placement(),
		EventsPerSec: total,
		DeadLetters:  n.dl.count(),
		Network:      map[string]actor.NetStats{n.cfg.Name: n.eng.NetStats()},
	}
	if err := n.eng.Err(); err != nil {
		st.Error = err.Error()
	}
	if n.mem != nil {
		st.Members = n.mem.Members()
		st.Gone = n.hist.departed()
	}
	now := time.Now()
	for _, f := range n.eng.Fragments() {
		fs := FragmentState{Fragment: f.ID, Owner: n.cfg.Name, Events: f.Events.Load(), Batches: f.Batches.Load(),
			Duplicates: f.Duplicates.Load(), Gaps: f.Gaps.Load(), Fenced: f.Fenced.Load(), Failures: f.Failures.Load(), DeadLetters: f.Dead.Load(),
			Restores: f.Restores.Load(), Replayed: f.Replayed.Load(), TooLate: f.TooLate.Load(), Epoch: f.Epoch.Load(),
			CheckpointBytes: f.CkptBytes.Load(), Offsets: f.Offsets(), RestoredEpoch: f.RestoredEpoch.Load(), RestoredEvents: f.RestoredEvents.Load(),
			Retained: f.Retained.Load(), Complete: f.Complete.Load()}
		if f.ID < len(st.Placement.Standbys) {
			fs.Standby = st.Placement.Standbys[f.ID]
		}
		if ns := f.CkptTime.Load(); ns != 0 {
			at := time.Unix(0, ns).UTC()
			fs.CheckpointAt, fs.CheckpointAge = &at, now.Sub(at).Seconds()
			fs.CheckpointTook = time.Duration(f.CkptTook.Load()).Seconds()
		}
		if err := f.CheckpointError(); err != nil {
			fs.CheckpointErr = err.Error()
		}
		if wm := f.Watermark.Load(); wm != flows.NoWatermark {
			t := time.Unix(0, wm).UTC()
			fs.Watermark = &t
		}
		fs.EventsPerSec = n.rates.fragment(f)
		st.Fragments = append(st.Fragments, fs)
	}
	for i, r := range n.eng.Readers() {
		rs := ReaderState{Source: r.Source, Partition: r.Partition, Owner: n.cfg.Name, Position: r.Position.Load(),
			Events: r.Events.Load(), Committed: n.eng.Committed(i), Malformed: r.Bad.Load(), Stalls: r.Stalls.Load(),
			Rewinds: r.Rewinds.Load(), Done: r.Done.Load()}
		rs.EventsPerSec = n.rates.reader(r)
		st.Readers = append(st.Readers, rs)
	}
	st.lag()
	return st
}

// lag sets each fragment's lag from the positions of the readers st has.
func (st *ClusterState) lag() {
	pos := map[string]int64{}
	for _, r := range st.Readers {
		pos[fmt.Sprintf("%s/%d", r.Source, r.Partition)] = r.Position
	}
	for i := range st.Fragments {
		f := &st.Fragments[i]
		f.Lag = 0
		for p, off := range f.Offsets {
			if at, ok := pos[p]; ok && at > off {
				f.Lag += at - off
			}
		}
	}
}

// cluster answers GET /v1/cluster: this node's state and, in a cluster,
// every other member's fragments and readers (asked over HTTP), so any node
// shows the whole cluster. ?scope=local: this node's only.
func (n *Node) cluster(w http.ResponseWriter, r *http.Request) {
	local, err := scopeParam(r)
	if err != nil {
		splice.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	splice.WriteJSON(w, http.StatusOK, n.merged(r.Context(), local))
}

// mergePeers adds the other members' fragments and readers to st; a member
// that does not answer within two seconds is marked unreachable.
func (n *Node) mergePeers(ctx context.Context, st *ClusterState) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	type answer struct {
		i  int
		st ClusterState
		ok bool
	}
	ch := make(chan answer, len(st.Members))
	asked := 0
	for i, m := range st.Members {
		if m.Name == n.cfg.Name || m.HTTP == "" {
			continue
		}
		asked++
		go func() {
			other, err := n.peerState(ctx, m.HTTP)
			ch <- answer{i: i, st: other, ok: err == nil}
		}()
	}
	for range asked {
		a := <-ch
		if !a.ok {
			st.Members[a.i].Status = "unreachable"
			continue
		}
		st.EventsPerSec += a.st.EventsPerSec
		st.DeadLetters += a.st.DeadLetters
		st.Fragments = append(st.Fragments, a.st.Fragments...)
		st.Readers = append(st.Readers, a.st.Readers...)
		for k, v := range a.st.Network {
			st.Network[k] = v
		}
	}
	slices.SortFunc(st.Fragments, func(a, b FragmentState) int { return a.Fragment - b.Fragment })
	st.lag()
}

// peerState reads another node's own fragments and readers.
func (n *Node) peerState(ctx context.Context, httpAddr string) (ClusterState, error) {
	var st ClusterState
	err := n.peerGet(ctx, httpAddr, "/v1/cluster?scope=local", &st)
	return st, err
}

// deadLetters keeps the last dead letters and appends all of them to a
// JSON-lines file.
type deadLetters struct {
	mu    sync.Mutex
	path  string
	f     *os.File
	total int64
	last  []flows.DeadLetter
	err   bool
}

const keepDeadLetters = 100

func (d *deadLetters) add(dls []flows.DeadLetter) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.total += int64(len(dls))
	d.last = append(d.last, dls...)
	if len(d.last) > keepDeadLetters {
		d.last = append([]flows.DeadLetter(nil), d.last[len(d.last)-keepDeadLetters:]...)
	}
	if d.path == "" || d.err {
		return
	}
	if d.f == nil {
		f, err := os.OpenFile(d.path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			d.err = true
			slog.Error("dead-letter file", "err", err)
			return
		}
		d.f = f
	}
	var buf []byte
	for _, dl := range dls {
		b, _ := json.Marshal(dl)
		buf = append(append(buf, b...), '\n')
	}
	if _, err := d.f.Write(buf); err != nil {
		d.err = true
		slog.Error("dead-letter file", "err", err)
	}
}

func (d *deadLetters) count() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.total
}

// DeadLetterAnswer is the answer of GET /v1/deadletters.
type DeadLetterAnswer struct {
	Total int64              `json:"total"`
	Last  []flows.DeadLetter `json:"last"`           // the latest, oldest first
	File  string             `json:"file,omitempty"` // scope=local: where this node appends them all
	// Nodes: scope=cluster, each answering member's total.
	Nodes map[string]int64 `json:"nodes,omitempty"`
}

func (d *deadLetters) snapshot() DeadLetterAnswer {
	d.mu.Lock()
	defer d.mu.Unlock()
	return DeadLetterAnswer{Total: d.total, Last: append([]flows.DeadLetter{}, d.last...), File: d.path}
}

// deadLetters answers GET /v1/deadletters: this node's latest dead
// letters and total, or with scope=cluster every member's, the latest
// keepDeadLetters of them all (a member that does not answer within two
// seconds is left out, and missing from Nodes).
func (n *Node) deadLetters(w http.ResponseWriter, r *http.Request) {
	q, err := splice.Params(r)
	if err != nil {
		splice.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	cluster := false
	for k := range q {
		if k != "scope" || (q.Get("scope") != "local" && q.Get("scope") != "cluster") {
			splice.WriteError(w, http.StatusBadRequest, "/v1/deadletters takes only scope=local (the default) or scope=cluster")
			return
		}
		cluster = q.Get("scope") == "cluster"
	}
	a := n.dl.snapshot()
	if !cluster {
		splice.WriteJSON(w, http.StatusOK, a)
		return
	}
	a.File, a.Nodes = "", map[string]int64{n.cfg.Name: a.Total}
	if n.mem != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, m := range n.mem.Members() {
			if m.Name == n.cfg.Name || m.HTTP == "" {
				continue
			}
			wg.Go(func() {
				var other DeadLetterAnswer
				if err := n.peerGet(ctx, m.HTTP, "/v1/deadletters?scope=local", &other); err != nil {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				a.Total += other.Total
				a.Last = append(a.Last, other.Last...)
				a.Nodes[m.Name] = other.Total
			})
		}
		wg.Wait()
	}
	slices.SortStableFunc(a.Last, func(x, y flows.DeadLetter) int { return x.Time.Compare(y.Time) })
	a.Last = a.Last[max(0, len(a.Last)-keepDeadLetters):]
	splice.WriteJSON(w, http.StatusOK, a)
}

func (d *deadLetters) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f != nil {
		d.f.Close()
		d.f = nil
	}
}

// rates samples the engine's counters into events/s, per fragment and
// reader (keyed by their counters: a placement change adds and removes
// them).
type rates struct {
	mu          sync.Mutex
	frag        map[*actor.FragmentStats]float64
	read        map[*actor.ReaderStats]float64
	total       float64
	lastF       map[*actor.FragmentStats]int64
	lastR       map[*actor.ReaderStats]int64
	lastT       time.Time
	initialized bool
}

func (r *rates) run(e *actor.Engine, h *history, every time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	r.sample(e, time.Now())
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			r.sample(e, now)
			r.record(e, h, now)
		}
	}
}

// record adds the rates just sampled to the history.
func (r *rates) record(e *actor.Engine, h *history, now time.Time) {
	r.mu.Lock()
	read := maps.Clone(r.read)
	var applied float64
	for _, v := range r.frag {
		applied += v
	}
	r.mu.Unlock()
	h.record(now, e, read, applied)
}

func (r *rates) sample(e *actor.Engine, now time.Time) {
	curF := map[*actor.FragmentStats]int64{}
	for _, f := range e.Fragments() {
		curF[f] = f.Events.Load()
	}
	curR := map[*actor.ReaderStats]int64{}
	for _, x := range e.Readers() {
		curR[x] = x.Events.Load()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.initialized {
		dt := now.Sub(r.lastT).Seconds()
		r.frag, r.read, r.total = map[*actor.FragmentStats]float64{}, map[*actor.ReaderStats]float64{}, 0
		for f, c := range curF {
			if last, ok := r.lastF[f]; ok {
				r.frag[f] = float64(c-last) / dt
			}
		}
		for x, c := range curR {
			if last, ok := r.lastR[x]; ok {
				r.read[x] = float64(c-last) / dt
				r.total += r.read[x]
			}
		}
	}
	r.lastF, r.lastR, r.lastT, r.initialized = curF, curR, now, true
}

func (r *rates) fragment(f *actor.FragmentStats) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.frag[f]
}

func (r *rates) reader(x *actor.ReaderStats) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.read[x]
}

func (r *rates) all() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}
