package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tessera-streams/tessera/actor"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/internal/wire"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/shard"
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
	agr     agreed      // place's agreed membership, the ones before it, and what the node caught up with
	fenced  atomic.Bool // no majority of the last agreed membership: it owns nothing (follow)
	// follower decides when the node places, fences and resumes (settle,
	// follow); only their goroutine uses it.
	follower *shard.Follower
	changes  chan struct{} // the members changed
	dead     chan struct{} // the others declared this node dead (it refuted)
	peers    *http.Client  // asks the other nodes
	dl       deadLetters
	rates    rates
	hist     history
	met      *metrics
	shared   sharedState // the merged cluster state the dashboard's watchers share
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
	plan, err := flowcore.Compile(cfg.Flow)
	if err != nil {
		return err
	}
	var dataStore *recovery.Store // with a data directory
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		n.dl.path = filepath.Join(cfg.DataDir, "deadletters.jsonl")
		store, err := recovery.Open(filepath.Join(cfg.DataDir, "checkpoints"), nil, cfg.Logger)
		if err != nil {
			return err
		}
		defer func() {
			if err := store.Close(); err != nil {
				cfg.Logger.Error("close checkpoint store", "err", err)
			}
		}()
		// Checkpoints of another layout of the flow fail the node before it
		// joins (the engine checks again as it starts).
		grew, err := store.CheckLayout(plan.Name(), plan.Layout())
		if err != nil {
			return err
		}
		if grew {
			cfg.Logger.Info(recovery.LayoutGrew, "flow", plan.Name())
		}
		dataStore = store
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
	if dataStore != nil {
		ecfg.Store = dataStore
	}
	var first shard.Step // the follower's first placement, carried out when the engine starts
	ecfg.Logger = cfg.Logger
	ecfg.OnDeadLetters = n.dl.add
	ecfg.OnCheckpoint = func(_ int, took time.Duration, _ int) { n.met.ckpt.Observe(took.Seconds()) }
	if cfg.Gossip != "" {
		meta := &wire.Meta{Remote: cfg.Remote, Http: n.addr, Flow: plan.Name(), Fragments: uint32(plan.Fragments()), Version: plan.Version(),
			Layout: plan.LayoutHash(), Founder: len(cfg.Join) == 0}
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
		kept, err := loadAgreed(cfg.DataDir)
		if err != nil {
			ln.Close()
			return err
		}
		if ecfg.Cluster, first, err = n.placeFirst(ctx, plan, kept); err != nil {
			ln.Close()
			return err
		}
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
		cfg.Logger.Info("placed", "epoch", n.place.Epoch, "members", n.place.Members)
	}
	n.eng, err = actor.Start(plan, ecfg)
	if err != nil {
		ln.Close()
		return err
	}
	defer n.eng.Stop()
	if n.mem != nil {
		n.follower.Done(first, nil)
		if err := n.mem.SetRunning(); err != nil {
			cfg.Logger.Warn("announce running", "err", err)
		}
	}
	n.registerMetrics()

	stopping := make(chan struct{})
	mux := http.NewServeMux()
	n.routes(mux, stopping)
	srv := &http.Server{Handler: n.met.timed(cfg.Security.guard(cleanPaths(mux))), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn)}
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
		if r.URL.RawQuery != "" {
			splice.WriteError(w, http.StatusBadRequest, "/v1/checkpoint takes no parameters: it checkpoints every fragment of this node")
			return
		}
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

// cleanPaths answers, as the routes answer bad requests, what the mux
// would answer with a redirect or a bare status before any route saw it:
// a path with an empty, . or .. segment (the mux redirects it to its clean
// form, which may be another route: the lookup of the key ".." in
// /v1/views/v/keys/.. to the listing of v), a request for * but OPTIONS
// (which the server answers), and CONNECT.
func cleanPaths(mux http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.EscapedPath(); {
		case r.Method == http.MethodConnect:
			w.Header().Set("Allow", "GET, POST")
			splice.WriteError(w, http.StatusMethodNotAllowed, "CONNECT: this node is no proxy")
		case r.RequestURI == "*":
			splice.WriteError(w, http.StatusBadRequest, r.Method+" *: a request names a path")
		case p != "" && p != cleanPath(p):
			splice.WriteError(w, http.StatusBadRequest, fmt.Sprintf("path %q has an empty, . or .. segment (cleaned, it is %s): "+
				"in a key, escape / as %%2F and a key . or .. as %%2E or %%2E%%2E", p, cleanPath(p)))
		default:
			mux.ServeHTTP(w, r)
		}
	})
}

// cleanPath is p as http.ServeMux cleans it: without empty, . and ..
// segments, its trailing slash kept.
func cleanPath(p string) string {
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}
