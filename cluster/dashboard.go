package cluster

import (
	"bufio"
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/tessera-streams/tessera/splice"
)

// The dashboard is a page and its assets, embedded in the binary: no CDN,
// it works offline. Its charts are drawn by uPlot (vendored from its npm
// package, MIT, dashboard/uPlot.LICENSE). It reads only the /v1/ API, so
// with tokens it asks the user for one and sends it as a bearer token.
//
//go:embed dashboard
var dashboardFS embed.FS

var dashboardAssets = func() http.Handler {
	sub, err := fs.Sub(dashboardFS, "dashboard")
	if err != nil {
		panic(err) // the embedded directory is part of the binary
	}
	// Each file is written as it is: a file server would answer a name
	// it does not have in plain text, and redirect index.html to a
	// directory that is no route.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("file")
		b, err := fs.ReadFile(sub, name)
		if err != nil || name == "index.html" {
			splice.WriteError(w, http.StatusNotFound, fmt.Sprintf("no dashboard file %q: the dashboard is at /", name))
			return
		}
		if ct := mime.TypeByExtension(path.Ext(name)); ct != "" {
			w.Header().Set("Content-Type", ct)
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Header().Set("Cache-Control", "no-cache")
		w.Write(b)
	})
}()

func (n *Node) dashboard(w http.ResponseWriter, r *http.Request) {
	page, err := dashboardFS.ReadFile("dashboard/index.html")
	if err != nil {
		splice.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(page)
}

// merged is GET /v1/cluster's answer: this node's state and, unless
// local, the other members' fragments and readers.
func (n *Node) merged(ctx context.Context, local bool) ClusterState {
	st := n.State()
	if !local && n.mem != nil {
		n.mergePeers(ctx, &st)
	}
	st.Complete = len(st.Fragments) == st.Flow.Fragments || local
	for _, f := range st.Fragments {
		st.Complete = st.Complete && f.Complete
	}
	return st
}

// sharedState is the merged cluster state that every watcher of one node
// reads: one evaluation (and one round of questions to the other nodes)
// per interval, however many dashboards are open.
type sharedState struct {
	mu sync.Mutex
	at time.Time
	st ClusterState
	// The merged timeline, on its own lock: its questions to the others
	// must not hold up the state's.
	tlMu sync.Mutex
	tlAt time.Time
	tl   []Event
}

// sharedTimeline returns the timeline merged over the members, computed
// anew if the last one is older than fresh; a single node's is its own.
// Shared like sharedMerged's answer.
func (n *Node) sharedTimeline(fresh time.Duration) []Event {
	if n.mem == nil {
		return n.hist.tail(watchTimeline)
	}
	s := &n.shared
	s.tlMu.Lock()
	defer s.tlMu.Unlock()
	if time.Since(s.tlAt) >= fresh {
		timelines := map[string][]Event{n.cfg.Name: n.hist.tail(keepEvents)}
		for _, other := range n.peerHistories(context.Background(), true) {
			if other.Node != "" && other.Node != n.cfg.Name {
				timelines[other.Node] = other.Timeline
			}
		}
		s.tl, s.tlAt = mergeTimelines(timelines, watchTimeline), time.Now()
	}
	return s.tl
}

// sharedMerged returns the merged state, computed anew if the last one is
// older than fresh. The answer is shared: callers must not change it.
func (n *Node) sharedMerged(fresh time.Duration) ClusterState {
	s := &n.shared
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.at) >= fresh {
		// Not the watcher's context: one leaving must not cut the
		// answer the others wait for (mergePeers bounds it to 2 s).
		s.st, s.at = n.merged(context.Background(), false), time.Now()
	}
	return s.st
}

// history answers GET /v1/cluster/history: throughput and lag sampled
// every rate interval over the last minutes and the timeline, both merged
// over the members (scope=local: this node's own). ?timeline=only leaves
// the samples out (what /v1/cluster/watch asks the others for).
func (n *Node) history(w http.ResponseWriter, r *http.Request) {
	local, only, err := historyParams(r)
	if err != nil {
		splice.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	a := n.hist.answer(n.cfg.Name, n.cfg.RateInterval, keepEvents)
	if !local && n.mem != nil {
		nodes := [][]Sample{a.Samples}
		timelines := map[string][]Event{a.Node: a.Timeline}
		for _, other := range n.peerHistories(r.Context(), only) {
			if slices.Equal(other.Partitions, a.Partitions) {
				nodes = append(nodes, other.Samples)
			}
			if other.Node != "" && other.Node != a.Node {
				timelines[other.Node] = other.Timeline
			}
		}
		a.Samples = mergeSamples(nodes, n.cfg.RateInterval, len(a.Partitions))
		a.Timeline = mergeTimelines(timelines, keepEvents)
	}
	if only {
		a.Samples = []Sample{}
	}
	splice.WriteJSON(w, http.StatusOK, a)
}

func scopeParam(r *http.Request) (local bool, err error) {
	q, err := splice.Params(r)
	if err != nil {
		return false, err
	}
	for k := range q {
		if k != "scope" || (q.Get("scope") != "local" && q.Get("scope") != "cluster") {
			return false, fmt.Errorf("%s takes only scope=local or scope=cluster", r.URL.Path)
		}
	}
	return q.Get("scope") == "local", nil
}

func historyParams(r *http.Request) (local, timelineOnly bool, err error) {
	q, err := splice.Params(r)
	if err != nil {
		return false, false, err
	}
	for k := range q {
		switch v := q.Get(k); {
		case k == "scope" && (v == "local" || v == "cluster"):
		case k == "timeline" && v == "only":
		default:
			return false, false, fmt.Errorf("%s takes only scope=local or scope=cluster, and timeline=only", r.URL.Path)
		}
	}
	return q.Get("scope") == "local", q.Get("timeline") == "only", nil
}

// peerHistories asks the other live members for their own samples; a
// member that does not answer within two seconds is left out.
func (n *Node) peerHistories(ctx context.Context, timelineOnly bool) []HistoryAnswer {
	path := "/v1/cluster/history?scope=local"
	if timelineOnly {
		path += "&timeline=only"
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var mu sync.Mutex
	var out []HistoryAnswer
	var wg sync.WaitGroup
	for _, m := range n.mem.Members() {
		if m.Name == n.cfg.Name || m.HTTP == "" {
			continue
		}
		wg.Go(func() {
			var a HistoryAnswer
			if err := n.peerGet(ctx, m.HTTP, path, &a); err != nil {
				n.cfg.Logger.Debug("read a member's history", "node", m.Name, "err", err)
				return
			}
			mu.Lock()
			out = append(out, a)
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

func (n *Node) peerGet(ctx context.Context, httpAddr, path string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.cfg.Security.scheme()+"://"+httpAddr+path, nil)
	if err != nil {
		return err
	}
	resp, err := n.peers.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s on %s: %s", path, httpAddr, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(into)
}

// Watch intervals of GET /v1/cluster/watch.
const (
	minClusterWatch     = 500 * time.Millisecond
	defaultClusterWatch = time.Second
	watchTimeline       = 50
)

// clusterWatchEvent is the data of each "state" event of
// /v1/cluster/watch.
type clusterWatchEvent struct {
	Cluster  ClusterState `json:"cluster"`
	Timeline []Event      `json:"timeline"` // the latest events, merged over the members, oldest first
}

// clusterWatch streams the merged cluster state as server-sent events
// ("state"), one every interval (?interval=, 500ms to 1m, default 1s).
// Watchers share one evaluation per interval.
func (n *Node) clusterWatch(w http.ResponseWriter, r *http.Request, stopping <-chan struct{}) {
	q, err := splice.Params(r)
	if err != nil {
		splice.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	every := defaultClusterWatch
	for k := range q {
		if k != "interval" {
			splice.WriteError(w, http.StatusBadRequest, fmt.Sprintf("unknown parameter %q (only interval)", k))
			return
		}
		d, err := time.ParseDuration(q.Get(k))
		if err != nil || d < minClusterWatch || d > time.Minute {
			splice.WriteError(w, http.StatusBadRequest, fmt.Sprintf("interval must be a duration in [%v, 1m], got %q", minClusterWatch, q.Get(k)))
			return
		}
		every = d
	}
	fl, ok := splice.StartEvents(w, r)
	if !ok {
		return
	}
	bw := bufio.NewWriter(w)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		// The state and the timeline each ask the other members (for up
		// to 2 s if one hangs): ask at once, not one after the other.
		var tl []Event
		got := make(chan struct{})
		go func() {
			defer close(got)
			tl = n.sharedTimeline(every / 2)
		}()
		ev := clusterWatchEvent{Cluster: n.sharedMerged(every / 2)}
		<-got
		ev.Timeline = tl
		b, err := json.Marshal(ev)
		if err != nil {
			n.cfg.Logger.Error("encode the cluster state", "err", err)
			return
		}
		fmt.Fprintf(bw, "event: state\ndata: %s\n\n", b)
		if bw.Flush() != nil {
			return
		}
		fl.Flush()
		select {
		case <-r.Context().Done():
			return
		case <-stopping:
			return
		case <-t.C:
		}
	}
}
