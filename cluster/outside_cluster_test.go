package cluster_test

// Outside-in scenarios on a real cluster: flows unlike the examples' run
// on two to four node processes on 127.0.0.1 (this test binary, started
// again as a node: one protoactor remote per process), which are killed
// and started again while a client reads them as a user would. Every
// answer is checked against a plain-Go program over the same input.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/cluster"
	"github.com/tessera-streams/tessera/connectors/file"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/internal/exampletest"
	"github.com/tessera-streams/tessera/splice"
)

// ocChildArg, as the first argument, makes this test binary a node of
// a scenario's flow (ocSpec.Flow) instead of running tests.
const ocChildArg = "-outside-cluster-node"

func init() {
	if len(os.Args) > 1 && os.Args[1] == ocChildArg {
		os.Exit(ocNodeMain(os.Args[2:]))
	}
}

// ocNodeMain runs one node until SIGTERM (a graceful leave) or SIGKILL.
func ocNodeMain(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fs := flag.NewFlagSet("outside", flag.ContinueOnError)
	specJSON := fs.String("spec", "", "the scenario's input (JSON)")
	var sink io.Closer
	err := cluster.Run(ctx, fs, args, os.Stdout, os.Stderr, func(node *cluster.Flags) (*flows.Flow, error) {
		var sp ocSpec
		if err := json.Unmarshal([]byte(*specJSON), &sp); err != nil {
			return nil, fmt.Errorf("-spec: %w", err)
		}
		dir := filepath.Join(node.Data, "sink")
		switch sp.Flow {
		case "":
			s, err := file.NewSink[OcSummary](dir, nil)
			if err != nil {
				return nil, err
			}
			sink = s
			return ocFlow(sp, node.Fragments, s), nil
		case osFlowName:
			s, err := file.NewSink[OsSession](dir, nil)
			if err != nil {
				return nil, err
			}
			sink = s
			return osFlow(sp, node.Fragments, s), nil
		}
		return nil, fmt.Errorf("-spec: no flow %q", sp.Flow)
	}, [][2]string{{"/v1/cluster", "cluster"}})
	if sink != nil {
		sink.Close()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "outside node:", err)
		return 1
	}
	return 0
}

// The input: partition p has Limits[p] pings of Subs[p] subscribers, one
// a minute of event time from ocBase (at :30 s), each ping's subscriber
// drawn at random; Subs[p] == 1 is one hot subscriber. Subscriber 0 of
// partition 1 is the empty string.
type ocSpec struct {
	// Flow names the flow the nodes run: "" is ocFlow, osFlowName osFlow
	// (outside_sessions_test.go), whose input reads Limits, Subs and Seed
	// its own way.
	Flow   string
	Limits []int64
	Subs   []int
	Rate   float64   // pings a second per partition (0: unthrottled)
	Rates  []float64 // when set, each partition's own Rate
	// Silent: partition p reads nothing for Silent[p] after it is opened
	// (again after every opening), then its Limits[p] pings.
	Silent []time.Duration
	Seed   uint64
	// PoisonEvery: every PoisonEvery-th ping of a partition is poisoned,
	// alternately for the function before the key and the process
	// function, which panic on it.
	PoisonEvery int64
	// Grown: the flow has one more stateful stage at its end (see
	// outside_grow_test.go).
	Grown bool
}

// OcPing is a subscriber seen at a time.
type OcPing struct {
	Sub    string
	At     time.Time
	Poison int // 1: the map before the key panics; 2: the process function
}

// OcSummary is what the process function emits when a subscriber's
// ten-minute bucket closes: the pings in it, and the pings since its
// state began (a TTL expiry starts it afresh).
type OcSummary struct {
	Sub   string
	At    time.Time // the bucket's end
	N     int64
	Total int64
}

type ocState struct {
	N, Total int64
}

var ocBase = time.Date(2026, 5, 4, 0, 0, 0, 30e9, time.UTC)

const (
	ocBucket = 10 * time.Minute
	// ocTTL ends at :45 s, never on a ping (:30) or a bucket's end (:00).
	ocTTL    = 30*time.Minute + 15*time.Second
	ocWindow = 6 * time.Hour
)

func (sp ocSpec) sub(p int, off int64) string {
	if sp.Subs[p] == 1 {
		return fmt.Sprintf("hot%d", p)
	}
	j := int(ocMix(sp.Seed^uint64(p)<<40, uint64(off)) % uint64(sp.Subs[p]))
	if p == 1 && j == 0 {
		return ""
	}
	return fmt.Sprintf("p%d-s%02d", p, j)
}

// rate is partition p's pings a second (0: unthrottled).
func (sp ocSpec) rate(p int) float64 {
	if p < len(sp.Rates) {
		return sp.Rates[p]
	}
	return sp.Rate
}

func (sp ocSpec) event(p int, off int64) OcPing {
	e := OcPing{Sub: sp.sub(p, off), At: ocBase.Add(time.Duration(off) * time.Minute)}
	if sp.PoisonEvery > 0 && off%sp.PoisonEvery == sp.PoisonEvery-1 {
		e.Poison = 1 + int(off/sp.PoisonEvery)%2
	}
	return e
}

func ocMix(a, b uint64) uint64 {
	z := a*0x9e3779b97f4a7c15 + b*0xbf58476d1ce4e5b9 + 0x94d049bb133111eb
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func ocClass(s OcSummary) string {
	switch {
	case s.N == 1:
		return ""
	case s.N >= 6:
		return "big"
	}
	return fmt.Sprintf("n%d", s.N)
}

func ocFlow(sp ocSpec, fragments int, sink flows.Sink[OcSummary]) *flows.Flow {
	f := flows.New("outside", flows.WithFragments(fragments))
	pings := flows.From(f, "pings", &ocSource[OcPing]{sp: sp, event: sp.event}, flows.WithEventTime(func(p OcPing) time.Time { return p.At }, time.Minute))
	pings = flows.Map(pings, func(p OcPing) OcPing {
		if p.Poison == 1 {
			panic("poisoned before the key")
		}
		return p
	})
	sums := flows.Process(flows.KeyBy(pings, func(p OcPing) string { return p.Sub }), flows.Handler[string, OcPing, ocState, OcSummary]{
		OnEvent: func(c *flows.Context[string, ocState, OcSummary], p OcPing) {
			if p.Poison == 2 {
				panic("poisoned in the process function")
			}
			s, _ := c.State()
			s.N++
			s.Total++
			c.SetState(s)
			c.SetEventTimer(p.At.Truncate(ocBucket).Add(ocBucket))
		},
		OnTimer: func(c *flows.Context[string, ocState, OcSummary], at time.Time) {
			s, ok := c.State()
			if !ok || s.N == 0 {
				return
			}
			c.Emit(OcSummary{Sub: c.Key(), At: at, N: s.N, Total: s.Total})
			s.N = 0
			c.SetState(s)
		},
	}, flows.InEventTimeOrder(), flows.WithStateTTL(ocTTL)).Out()
	flows.Count(flows.KeyBy(sums, ocClass)).View("classes")
	flows.Count(flows.KeyBy(sums, func(s OcSummary) string { return s.Sub })).View("bysub")
	flows.WindowAggregate(flows.KeyBy(sums, ocClass), flows.Tumbling(ocWindow),
		func() int64 { return 0 }, func(n int64, s OcSummary) int64 { return n + s.N }).KeyedView("sixhourly", 10*365*24*time.Hour)
	flows.AggregateView(sums, "pings", splice.Sum[int64](), func(s OcSummary) int64 { return s.N })
	flows.To(sums, sink, flows.OnCheckpoint())
	if sp.Grown {
		flows.Count(flows.KeyBy(pings, func(p OcPing) string { return p.Sub })).View("since")
	}
	return f
}

// ocSource reads ocSpec's partitions, event(p, off) at each offset, at
// their rate from where a partition was first opened (a replay from an
// older offset catches up at full speed).
type ocSource[T any] struct {
	sp    ocSpec
	event func(p int, off int64) T
	mu    sync.Mutex
	start map[int]ocSchedule
}

type ocSchedule struct {
	t0 time.Time
	at int64
}

func (s *ocSource[T]) Partitions() int { return len(s.sp.Limits) }

func (s *ocSource[T]) Open(p int, from int64) (flows.PartitionReader[T], error) {
	if p < 0 || p >= len(s.sp.Limits) || from < 0 {
		return nil, fmt.Errorf("no partition %d at %d", p, from)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.start == nil {
		s.start = map[int]ocSchedule{}
	}
	sc, ok := s.start[p]
	if !ok || sc.due(time.Now(), s.sp.rate(p)) < from {
		sc = ocSchedule{t0: time.Now(), at: from}
		s.start[p] = sc
	}
	r := &ocReader[T]{s: s, p: p, next: from, sched: sc}
	if p < len(s.sp.Silent) {
		r.silent = time.Now().Add(s.sp.Silent[p])
	}
	return r, nil
}

func (sc ocSchedule) due(now time.Time, rate float64) int64 {
	return sc.at + int64(now.Sub(sc.t0).Seconds()*rate)
}

type ocReader[T any] struct {
	s      *ocSource[T]
	p      int
	next   int64
	sched  ocSchedule
	silent time.Time // reads nothing until then
}

func (r *ocReader[T]) Read(_ context.Context, b *flows.ReadBatch[T], max int) error {
	b.End = r.next
	if time.Now().Before(r.silent) {
		return nil
	}
	limit := r.s.sp.Limits[r.p]
	n := min(int64(max), limit-r.next)
	if rate := r.s.sp.rate(r.p); rate > 0 {
		n = min(n, r.sched.due(time.Now(), rate)-r.next)
	}
	for range n {
		b.Events = append(b.Events, r.s.event(r.p, r.next))
		b.Offsets = append(b.Offsets, r.next)
		r.next++
	}
	b.End = r.next
	if r.next >= limit {
		return io.EOF
	}
	return nil
}

func (r *ocReader[T]) Close() error { return nil }

// ocModel is the flow computed by a plain sequential program.
type ocModel struct {
	outs     map[ocOutKey]OcSummary
	classes  map[string]int64
	bysub    map[string]int64
	windows  map[string]map[time.Time]int64 // class → window start → pings
	pings    int64
	poisoned map[ocPos]int // partition and offset → the kind of poison
	end      map[string]int64
}

type ocOutKey struct {
	Sub string
	At  int64
}

type ocPos struct {
	Partition int
	Offset    int64
}

func (sp ocSpec) model() *ocModel {
	m := &ocModel{outs: map[ocOutKey]OcSummary{}, classes: map[string]int64{}, bysub: map[string]int64{},
		windows: map[string]map[time.Time]int64{}, poisoned: map[ocPos]int{}, end: map[string]int64{}}
	bySub := map[string][]OcPing{}
	var subs []string
	for p, lim := range sp.Limits {
		m.end[fmt.Sprintf("pings/%d", p)] = lim
		for off := range lim {
			e := sp.event(p, off)
			if e.Poison != 0 {
				m.poisoned[ocPos{p, off}] = e.Poison
				continue
			}
			if _, ok := bySub[e.Sub]; !ok {
				subs = append(subs, e.Sub)
			}
			bySub[e.Sub] = append(bySub[e.Sub], e)
		}
	}
	emit := func(s OcSummary) {
		m.outs[ocOutKey{s.Sub, s.At.UnixNano()}] = s
		m.classes[ocClass(s)]++
		m.bysub[s.Sub]++
		c := ocClass(s)
		if m.windows[c] == nil {
			m.windows[c] = map[time.Time]int64{}
		}
		m.windows[c][s.At.Truncate(ocWindow)] += s.N
		m.pings += s.N
	}
	for _, sub := range subs {
		var st *ocState
		var last, timer time.Time
		fire := func() {
			if !timer.IsZero() && st != nil && st.N > 0 {
				emit(OcSummary{Sub: sub, At: timer, N: st.N, Total: st.Total})
				st.N = 0
			}
			timer = time.Time{}
		}
		for _, e := range bySub[sub] { // each subscriber is in one partition, in event-time order
			if !timer.IsZero() && timer.Before(e.At) {
				fire()
			}
			if st != nil && e.At.Sub(last) > ocTTL {
				st = nil
			}
			if st == nil {
				st = &ocState{}
			}
			st.N++
			st.Total++
			last, timer = e.At, e.At.Truncate(ocBucket).Add(ocBucket)
		}
		fire()
	}
	return m
}

// ocNode is a node process of a scenario.
type ocNode struct {
	name, gossip, dir string
	p                 *exampletest.Proc
}

type ocCluster struct {
	t      *testing.T
	bin    string
	common []string
	seed   string // the first node's gossip address
	nodes  []*ocNode
}

func ocStart(t *testing.T, sp ocSpec, n int, extra ...string) *ocCluster {
	t.Helper()
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := json.Marshal(sp)
	c := &ocCluster{t: t, bin: bin, common: append([]string{ocChildArg, "-spec", string(spec), "-fragments", "16",
		"-checkpoint-interval", "100ms", "-progress", "0", "-log-level", "warn"}, extra...)}
	for i := range n {
		nd := &ocNode{name: fmt.Sprintf("n%d", i), gossip: exampletest.FreePort(t), dir: t.TempDir()}
		if i == 0 {
			c.seed = nd.gossip
		}
		c.nodes = append(c.nodes, nd)
		c.launch(nd, n)
	}
	for _, nd := range c.nodes {
		nd.p.WaitURL(t)
	}
	return c
}

// launch starts nd's process (again, after a kill: same name and data).
func (c *ocCluster) launch(nd *ocNode, expect int) {
	args := append(slices.Clone(c.common), "-node", nd.name, "-http", exampletest.FreePort(c.t), "-gossip", nd.gossip,
		"-remote", exampletest.FreePort(c.t), "-expect", strconv.Itoa(expect), "-data", nd.dir)
	if to := c.joinTo(nd); to != "" {
		args = append(args, "-join", to)
	}
	nd.p = exampletest.Start(c.t, c.bin, args...)
}

// joinTo is the gossip address nd joins: the first node's, unless nd is
// the first node or the first node is down, and then another live
// node's ("" for the first node's first start: it begins the cluster).
func (c *ocCluster) joinTo(nd *ocNode) string {
	if first := c.nodes[0]; nd != first && !first.down() {
		return c.seed
	}
	for _, o := range c.live() {
		if o != nd {
			return o.gossip
		}
	}
	return ""
}

// down says whether nd's process was started and has exited.
func (nd *ocNode) down() bool {
	if nd.p == nil {
		return false
	}
	select {
	case <-nd.p.Exited:
		return true
	default:
		return false
	}
}

// join starts a new node that joins the running cluster.
func (c *ocCluster) join(name string) *ocNode {
	nd := &ocNode{name: name, gossip: exampletest.FreePort(c.t), dir: c.t.TempDir()}
	c.nodes = append(c.nodes, nd)
	c.launch(nd, 1)
	nd.p.WaitURL(c.t)
	return nd
}

// survivable waits until /v1/cluster shows the live nodes as the
// members, every fragment owned by one of them and with a live standby
// that confirmed a copy of it since it became its standby
// (standby_epoch), unless it has none yet, and no hand-off unconfirmed:
// the cluster can lose one more node.
func (c *ocCluster) survivable(limit time.Duration) {
	c.t.Helper()
	live := map[string]bool{}
	for _, nd := range c.live() {
		live[nd.name] = true
	}
	ocUntilWhy(c.t, limit, "every fragment to have a live standby with its copy", func() string {
		var st struct {
			Members   []struct{ Name string }
			Fragments []struct {
				Fragment       int
				Owner, Standby string
				Epoch          uint64
				StandbyEpoch   uint64 `json:"standby_epoch"`
			}
			Network map[string]struct {
				HandoffsPending int64 `json:"handoffs_pending"`
			}
		}
		if !exampletest.TryJSON(c.live()[0].p.Base+"/v1/cluster", &st) {
			return "no answer"
		}
		if len(st.Members) != len(live) {
			return fmt.Sprintf("members %+v", st.Members)
		}
		for _, f := range st.Fragments {
			if !live[f.Owner] || !live[f.Standby] || (f.Epoch > 0 && f.StandbyEpoch == 0) {
				return fmt.Sprintf("fragment %+v", f)
			}
		}
		for n, ns := range st.Network {
			if ns.HandoffsPending > 0 {
				return fmt.Sprintf("%s: %d hand-offs pending", n, ns.HandoffsPending)
			}
		}
		return ""
	})
}

func (c *ocCluster) kill(nd *ocNode) {
	if err := nd.p.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		c.t.Fatal(err)
	}
	nd.p.Wait()
	nd.p.Base = ""
}

func (c *ocCluster) live() []*ocNode {
	var l []*ocNode
	for _, nd := range c.nodes {
		if nd.p != nil && nd.p.Base != "" {
			l = append(l, nd)
		}
	}
	return l
}

type ocClusterState struct {
	Complete bool
	Readers  []struct {
		Partition int
		Position  int64
		Done      bool
	}
}

// read is how many pings the readers read, in all, by node's account.
func (c *ocCluster) read(nd *ocNode) (int64, bool) {
	var st ocClusterState
	if !exampletest.TryJSON(nd.p.Base+"/v1/cluster", &st) {
		return 0, false
	}
	var n int64
	done := len(st.Readers) > 0
	for _, r := range st.Readers {
		n += r.Position
		done = done && r.Done
	}
	return n, done
}

// ocUntil polls cond every 20 ms until it holds, or fails after limit.
func ocUntil(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	ocUntilWhy(t, limit, what, func() string {
		if cond() {
			return ""
		}
		return "not yet"
	})
}

// ocUntilWhy polls check every 20 ms until it says nothing is wrong, or
// fails after limit with what it said last.
func ocUntilWhy(t *testing.T, limit time.Duration, what string, check func() string) {
	t.Helper()
	for deadline := time.Now().Add(limit); ; time.Sleep(20 * time.Millisecond) {
		why := check()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s: %s", limit, what, why)
		}
	}
}

type ocEntries struct {
	Entries []struct {
		Key   string
		Value int64
	}
	More      bool
	NextAfter *string `json:"next_after"`
	Complete  bool
	Stale     bool
}

// ocGet GETs u: the status, the body and the Retry-After header.
func ocGet(u string) (int, []byte, string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header.Get("Retry-After"), err
}

// keyed lists a keyed view on the nodes given, page after page, each
// page from the next node in turn; ok is false if a page was not a 200
// or the answer not complete.
func ocPages(t *testing.T, bases []string, view string, limit int) (map[string]int64, bool, string) {
	t.Helper()
	got := map[string]int64{}
	var after *string
	for page := 0; ; page++ {
		u := fmt.Sprintf("%s/v1/views/%s?limit=%d", bases[page%len(bases)], view, limit)
		if after != nil {
			u += "&after=" + url.QueryEscape(*after)
		}
		code, body, _, err := ocGet(u)
		if err != nil || code != 200 {
			return nil, false, fmt.Sprintf("GET %s: %d %s %v", u, code, body, err)
		}
		var es ocEntries
		if err := json.Unmarshal(body, &es); err != nil {
			t.Fatalf("GET %s: %v: %s", u, err, body)
		}
		if !es.Complete {
			return nil, false, fmt.Sprintf("GET %s: not complete", u)
		}
		for _, e := range es.Entries {
			if _, dup := got[e.Key]; dup {
				t.Fatalf("paging %s by %d: key %q on two pages (page %d from %s)", view, limit, e.Key, page, bases[page%len(bases)])
			}
			if after != nil && e.Key <= *after {
				t.Fatalf("paging %s: key %q after %q", view, e.Key, *after)
			}
			got[e.Key] = e.Value
		}
		if !es.More {
			return got, true, ""
		}
		if es.NextAfter == nil {
			t.Fatalf("GET %s: more, but no next_after: %s", u, body)
		}
		after = es.NextAfter
	}
}

// windowsOf reads a windowed keyed view's windows of key from base.
func ocWindows(base, view, key string) (map[time.Time]int64, bool, string) {
	u := fmt.Sprintf("%s/v1/views/%s/keys/%s?from=2026-01-01T00:00:00Z&to=2027-01-01T00:00:00Z", base, view, url.PathEscape(key))
	code, body, _, err := ocGet(u)
	if err != nil || code != 200 {
		return nil, false, fmt.Sprintf("GET %s: %d %s %v", u, code, body, err)
	}
	var a struct {
		Windows []struct {
			Start time.Time
			Value int64
		}
		Complete bool
	}
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, false, fmt.Sprintf("GET %s: %v", u, err)
	}
	got := map[time.Time]int64{}
	for _, w := range a.Windows {
		got[w.Start.UTC()] = w.Value
	}
	return got, a.Complete, ""
}

// rotations lists, for each live node, the live nodes' HTTP bases
// starting from its own: a check reads each node, paging on through the
// others.
func (c *ocCluster) rotations() [][]string {
	var bases []string
	for _, nd := range c.live() {
		bases = append(bases, nd.p.Base)
	}
	var out [][]string
	for i := range bases {
		out = append(out, append(slices.Clone(bases[i:]), bases[:i]...))
	}
	return out
}

// ocKeyedEqual reads each keyed view of want in pages of each size of
// limits, each page from the next node of bases in turn, and says how the
// first that is not complete and equal to want differs ("" if none).
func ocKeyedEqual(t *testing.T, bases []string, want map[string]map[string]int64, limits ...int) string {
	for view, w := range want {
		for _, lim := range limits {
			got, ok, why := ocPages(t, bases, view, lim)
			if !ok {
				return why
			}
			if d := exampletest.DiffMap(got, w); d != "" {
				return fmt.Sprintf("%s from %s, pages of %d: %s", view, bases[0], lim, d)
			}
		}
	}
	return ""
}

// checkViews waits until every live node's views are complete and equal
// the model: every keyed view paged across the nodes, the windows of
// every class, and the aggregate.
func (c *ocCluster) checkViews(m *ocModel, limit time.Duration) {
	t := c.t
	t.Helper()
	defer c.dumpOnFailure()
	ocUntilWhy(t, limit, "every node's views to equal the model", func() string {
		for _, rot := range c.rotations() {
			if why := ocKeyedEqual(t, rot, map[string]map[string]int64{"classes": m.classes, "bysub": m.bysub}, 1, 7, 1000); why != "" {
				return why
			}
			for class, want := range m.windows {
				got, complete, why := ocWindows(rot[0], "sixhourly", class)
				if why != "" {
					return why
				}
				if !complete {
					return fmt.Sprintf("sixhourly %q on %s: not complete", class, rot[0])
				}
				if !mapsEqualTime(got, want) {
					return fmt.Sprintf("sixhourly %q on %s: %v, want %v", class, rot[0], got, want)
				}
			}
			if why := ocAggregateEqual(rot[0], "pings", m.pings); why != "" {
				return why
			}
		}
		return ""
	})
}

// ocAggregateEqual says how the aggregate view on base differs from a
// complete answer of want ("" if it does not).
func ocAggregateEqual(base, view string, want int64) string {
	var agg struct {
		Value    int64
		Complete bool
	}
	if !exampletest.TryJSON(base+"/v1/views/"+view, &agg) || !agg.Complete || agg.Value != want {
		return fmt.Sprintf("%s on %s: %+v, want %d", view, base, agg, want)
	}
	return ""
}

// dumpOnFailure logs what every live node says of itself, once the test
// failed.
func (c *ocCluster) dumpOnFailure() {
	if !c.t.Failed() {
		return
	}
	for _, nd := range c.live() {
		_, body, _, err := ocGet(nd.p.Base + "/v1/cluster?scope=local")
		c.t.Logf("%s /v1/cluster?scope=local (%v):\n%s", nd.name, err, body)
		c.t.Logf("%s stderr:\n%s", nd.name, nd.p.Stderr())
	}
	for _, nd := range c.nodes {
		if nd.p.Base == "" {
			c.t.Logf("%s (down) stderr:\n%s", nd.name, nd.p.Stderr())
		}
	}
}

func mapsEqualTime(a, b map[time.Time]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}

// sinkLines calls line with the id and the value of every whole line of
// every node's sink files, and returns how many there were.
func (c *ocCluster) sinkLines(line func(file, id string, value json.RawMessage)) int {
	t := c.t
	t.Helper()
	var files []string
	for _, nd := range c.nodes {
		fs, err := filepath.Glob(filepath.Join(nd.dir, "sink", "*.jsonl")) // the file sink's, one per fragment
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, fs...)
	}
	lines := 0
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for l := range strings.Lines(string(b)) {
			if !strings.HasSuffix(l, "\n") {
				continue // cut by a kill mid-write: that write never returned
			}
			var ln struct {
				ID    string          `json:"id"`
				Value json.RawMessage `json:"value"`
			}
			if err := json.Unmarshal([]byte(l), &ln); err != nil {
				t.Fatalf("%s: line %q: %v", name, l, err)
			}
			lines++
			line(name, ln.ID, ln.Value)
		}
	}
	return lines
}

// ocSinkByID reads every node's sink files as outputs of type V, each
// made ready by norm, which returns its key: an id written again must
// carry the same value, and a key must stand under one id. It returns
// the outputs by id, the ids by key and the lines read.
func ocSinkByID[V comparable](c *ocCluster, norm func(*V) ocOutKey) (map[string]V, map[ocOutKey]string, int) {
	t := c.t
	t.Helper()
	byID := map[string]V{}
	idOf := map[ocOutKey]string{}
	lines := c.sinkLines(func(name, id string, value json.RawMessage) {
		var out V
		if err := json.Unmarshal(value, &out); err != nil {
			t.Fatalf("%s: %s: %v", name, value, err)
		}
		k := norm(&out)
		if prev, ok := byID[id]; ok && prev != out {
			t.Errorf("output %s delivered as %+v and as %+v", id, prev, out)
		}
		byID[id] = out
		if prev, ok := idOf[k]; ok && prev != id {
			t.Errorf("%q's output at %v delivered under two ids: %s and %s", k.Sub, time.Unix(0, k.At).UTC(), prev, id)
		}
		idOf[k] = id
	})
	return byID, idOf, lines
}

// ocExtra reports the outputs of the sink (byID, idOf) the model (outs)
// never emits, the first five of them as errors, and returns how many.
func ocExtra[V, W any](t *testing.T, byID map[string]V, idOf map[ocOutKey]string, outs map[ocOutKey]W) int {
	t.Helper()
	extra := 0
	for k, id := range idOf {
		if _, ok := outs[k]; !ok {
			if extra++; extra <= 5 {
				t.Errorf("sink has %s = %+v, which the model never emits", id, byID[id])
			}
		}
	}
	return extra
}

// checkSink reads every node's sink file: each output id once in effect
// (an id written again carries the same value), every output of the
// model under exactly one id, and nothing else.
func (c *ocCluster) checkSink(m *ocModel) {
	t := c.t
	t.Helper()
	byID, idOf, lines := ocSinkByID(c, func(out *OcSummary) ocOutKey {
		out.At = out.At.UTC()
		return ocOutKey{out.Sub, out.At.UnixNano()}
	})
	missing, wrong := 0, 0
	for k, want := range m.outs {
		id, ok := idOf[k]
		switch {
		case !ok:
			if missing++; missing <= 5 {
				t.Errorf("sink lacks %+v", want)
			}
		case byID[id] != want:
			if wrong++; wrong <= 5 {
				t.Errorf("sink has %s = %+v, want %+v", id, byID[id], want)
			}
		}
	}
	extra := ocExtra(t, byID, idOf, m.outs)
	t.Logf("sink: %d lines, %d ids, %d outputs in the model (%d missing, %d wrong, %d extra)", lines, len(byID), len(m.outs), missing, wrong, extra)
}

// waitRead waits until node's readers read at least n pings in all.
func (c *ocCluster) waitRead(nd *ocNode, n int64, limit time.Duration) {
	c.t.Helper()
	ocUntil(c.t, limit, fmt.Sprintf("%d pings read", n), func() bool {
		r, _ := c.read(nd)
		return r >= n
	})
}

// waitReadOut waits until node's readers read the whole input.
func (c *ocCluster) waitReadOut(nd *ocNode, limit time.Duration) {
	c.t.Helper()
	ocUntil(c.t, limit, "the input read out", func() bool {
		_, done := c.read(nd)
		return done
	})
}

// ocTotal is how many pings sp holds in all.
func ocTotal(sp ocSpec) (n int64) {
	for _, l := range sp.Limits {
		n += l
	}
	return n
}

// A process function with event-time timers and a state TTL, keyed
// again into counts and windows, with its outputs delivered on
// checkpoints: a node is killed mid-input, a fourth joins, and once
// every fragment's standby holds its copy another node is killed just as
// the input is read out. The sink holds each of the model's outputs
// under one id with the model's values, and every surviving node's
// views equal the model. (Fragments whose checkpoint waited for the
// dead node's confirmation as their standby once sent the new standby
// nothing until the next Recopy: the second kill left them with no live
// copy as new as what they settled, and their next owner waited for
// good.)
func TestOutsideClusterProcessKillJoinKillExact(t *testing.T) {
	t.Parallel()
	sp := ocSpec{Limits: []int64{1100, 1100, 1100, 1100}, Subs: []int{12, 12, 12, 12}, Rate: 300, Seed: 1}
	m := sp.model()
	c := ocStart(t, sp, 3)
	n0, n1, n2 := c.nodes[0], c.nodes[1], c.nodes[2]
	c.waitRead(n0, ocTotal(sp)/4, 30*time.Second)
	c.kill(n2)
	c.join("n3")
	c.survivable(30 * time.Second)
	c.waitReadOut(n0, 30*time.Second)
	c.kill(n1)
	c.checkViews(m, 40*time.Second)
	c.checkSink(m)
}

// A skewed input: one partition holds a single hot subscriber and most of
// the pings, one holds none. The bounded input ends while a node is down;
// the survivors finish it exactly, and so does the node once it is back
// with its data.
func TestOutsideClusterSkewedInputEndsWhileNodeDown(t *testing.T) {
	t.Parallel()
	sp := ocSpec{Limits: []int64{3000, 500, 0, 500}, Subs: []int{1, 15, 4, 15}, Rate: 600, Seed: 2}
	m := sp.model()
	c := ocStart(t, sp, 3)
	n1 := c.nodes[1]
	c.waitRead(c.nodes[0], 600, 30*time.Second)
	c.kill(n1)
	c.waitReadOut(c.nodes[0], 30*time.Second)
	c.checkViews(m, 40*time.Second)
	c.launch(n1, 3)
	n1.p.WaitURL(t)
	c.checkViews(m, 40*time.Second)
	c.checkSink(m)
}

// A client reads every node while a node dies mid-input: keyed pages,
// key lookups (the empty key too) and a windowed key's windows. An
// answer may be a 503 with Retry-After while fragments move; a 200 never
// counts more than the whole input makes, and one that says it is
// complete equals the model.
func TestOutsideClusterQueriesDuringFailover(t *testing.T) {
	t.Parallel()
	sp := ocSpec{Limits: []int64{1200, 1200, 1200, 1200}, Subs: []int{10, 10, 10, 10}, Rate: 300, Seed: 3}
	m := sp.model()
	c := ocStart(t, sp, 3)
	victim := c.nodes[2]
	c.waitRead(c.nodes[0], 1000, 30*time.Second)

	var mu sync.Mutex
	var problems []string
	answers := map[int]int{}
	report := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < 20 {
			problems = append(problems, s)
		}
	}
	keys := slices.Collect(func(yield func(string) bool) {
		for k := range m.bysub {
			if !yield(k) {
				return
			}
		}
	})
	slices.Sort(keys)
	if keys[0] != "" {
		t.Fatalf("the model has no empty subscriber: %q", keys[:3])
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for q, nd := range c.nodes {
		base := nd.p.Base
		isVictim := nd == victim
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(q), 7))
			for {
				select {
				case <-stop:
					return
				default:
				}
				var u string
				kind := rng.IntN(4)
				key := keys[rng.IntN(min(len(keys), 3))] // the empty key often
				if rng.IntN(2) == 0 {
					key = keys[rng.IntN(len(keys))]
				}
				switch kind {
				case 0:
					u = base + "/v1/views/bysub/keys/" + url.PathEscape(key)
				case 1:
					u = base + "/v1/views/bysub?limit=3&after=" + url.QueryEscape(key)
				case 2:
					u = base + "/v1/views/classes?limit=2"
				case 3:
					u = base + "/v1/views/sixhourly/keys/big?from=2026-01-01T00:00:00Z&to=2027-01-01T00:00:00Z"
				}
				start := time.Now()
				code, body, retry, err := ocGet(u)
				took := time.Since(start)
				if err != nil {
					if !isVictim {
						report(fmt.Sprintf("GET %s: %v", u, err))
					}
					if isVictim {
						return
					}
					continue
				}
				mu.Lock()
				answers[code]++
				mu.Unlock()
				if took > 3*time.Second {
					report(fmt.Sprintf("GET %s took %v", u, took))
				}
				switch code {
				case 200:
					if why := ocCheckAnswer(m, kind, key, body); why != "" {
						report(fmt.Sprintf("GET %s: %s: %s", u, why, body))
					}
				case 503:
					if retry == "" || !json.Valid(body) {
						report(fmt.Sprintf("GET %s: 503 without Retry-After or JSON: %s", u, body))
					}
				case 404:
					// A key not applied yet, or only in a fragment restored
					// from an older copy; never once complete.
					var e struct {
						Freshness []struct{ Complete bool }
					}
					json.Unmarshal(body, &e)
					if kind == 0 && len(e.Freshness) > 0 && e.Freshness[0].Complete {
						report(fmt.Sprintf("GET %s: 404 from a complete fragment: %s", u, body))
					}
				default:
					report(fmt.Sprintf("GET %s: %d %s", u, code, body))
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
	time.Sleep(300 * time.Millisecond) // answers before the kill, as a client would see them
	c.kill(victim)
	ocUntil(t, 40*time.Second, "the input applied after the kill", func() bool {
		var st ocClusterState
		return exampletest.TryJSON(c.nodes[0].p.Base+"/v1/cluster", &st) && st.Complete
	})
	close(stop)
	wg.Wait()
	t.Logf("answers by status: %v", answers)
	for _, p := range problems {
		t.Error(p)
	}
	c.checkViews(m, 20*time.Second)
	c.checkSink(m)
}

// ocCheckAnswer says what is wrong with a 200 answer of a query of kind
// (see TestOutsideClusterQueriesDuringFailover), or "".
func ocCheckAnswer(m *ocModel, kind int, key string, body []byte) string {
	switch kind {
	case 0:
		var a struct {
			Key       string
			Value     int64
			Freshness []struct{ Complete bool }
		}
		if err := json.Unmarshal(body, &a); err != nil {
			return err.Error()
		}
		want := m.bysub[key]
		if a.Key != key {
			return fmt.Sprintf("the answer is for %q", a.Key)
		}
		if a.Value > want || (len(a.Freshness) == 1 && a.Freshness[0].Complete && a.Value != want) {
			return fmt.Sprintf("value %d, want %d in the end", a.Value, want)
		}
	case 1, 2:
		var es ocEntries
		if err := json.Unmarshal(body, &es); err != nil {
			return err.Error()
		}
		want := m.bysub
		if kind == 2 {
			want = m.classes
		}
		for i, e := range es.Entries {
			if kind == 1 && e.Key <= key {
				return fmt.Sprintf("key %q is not after %q", e.Key, key)
			}
			if i > 0 && e.Key <= es.Entries[i-1].Key {
				return "not in key order"
			}
			w, ok := want[e.Key]
			if !ok || e.Value > w || (es.Complete && e.Value != w) {
				return fmt.Sprintf("%q = %d, want %d in the end (complete %v)", e.Key, e.Value, w, es.Complete)
			}
		}
		if es.Complete {
			// The keys after key in the model, up to the page's size.
			var ks []string
			for k := range want {
				if kind == 2 || k > key {
					ks = append(ks, k)
				}
			}
			slices.Sort(ks)
			n := min(len(ks), map[int]int{1: 3, 2: 2}[kind])
			if len(es.Entries) != n {
				return fmt.Sprintf("a complete page of %d entries, want %d (%q)", len(es.Entries), n, ks[:n])
			}
			for i := range n {
				if es.Entries[i].Key != ks[i] {
					return fmt.Sprintf("a complete page with %q at %d, want %q", es.Entries[i].Key, i, ks[i])
				}
			}
		}
	case 3:
		var a struct {
			Windows []struct {
				Start time.Time
				Value int64
			}
			Complete bool
		}
		if err := json.Unmarshal(body, &a); err != nil {
			return err.Error()
		}
		want := m.windows["big"]
		got := map[time.Time]int64{}
		for _, w := range a.Windows {
			got[w.Start.UTC()] = w.Value
			if w.Value > want[w.Start.UTC()] {
				return fmt.Sprintf("window %v = %d, want %d in the end", w.Start, w.Value, want[w.Start.UTC()])
			}
		}
		if a.Complete && !mapsEqualTime(got, want) {
			return fmt.Sprintf("complete windows %v, want %v", got, want)
		}
	}
	return ""
}

type ocDeadLetters struct {
	Total int64
	Last  []flows.DeadLetter
	Nodes map[string]int64
}

// A user function that panics on some events, before the key and in the
// process function: every node's cluster-wide dead letters list each
// poisoned event once, with its partition and offset, and nothing else;
// the views count every other event exactly.
func TestOutsideClusterDeadLettersOncePerEvent(t *testing.T) {
	t.Parallel()
	sp := ocSpec{Limits: []int64{400, 400, 400, 400}, Subs: []int{8, 8, 8, 8}, Seed: 4, PoisonEvery: 53}
	m := sp.model()
	if len(m.poisoned) == 0 || len(m.poisoned) > 100 {
		t.Fatalf("%d poisoned events: the cluster-wide answer lists the last 100", len(m.poisoned))
	}
	c := ocStart(t, sp, 3)
	c.checkViews(m, 40*time.Second)
	for _, nd := range c.nodes {
		var dl ocDeadLetters
		exampletest.GetJSON(t, nd.p.Base+"/v1/deadletters?scope=cluster", &dl)
		seen := map[ocPos]int{}
		for _, d := range dl.Last {
			if d.Source != "pings" {
				t.Errorf("%s: dead letter of source %q: %+v", nd.name, d.Source, d)
			}
			pos := ocPos{d.Partition, d.Offset}
			seen[pos]++
			kind, ok := m.poisoned[pos]
			switch {
			case !ok:
				t.Errorf("%s: dead letter of an event that is not poisoned: %+v", nd.name, d)
			case (kind == 1) != (d.Fragment == -1):
				t.Errorf("%s: a poison of kind %d reported from fragment %d: %+v", nd.name, kind, d.Fragment, d)
			}
		}
		for pos, n := range seen {
			if n != 1 {
				t.Errorf("%s: partition %d offset %d reported %d times", nd.name, pos.Partition, pos.Offset, n)
			}
		}
		if len(seen) != len(m.poisoned) || dl.Total != int64(len(m.poisoned)) || len(dl.Nodes) != 3 {
			t.Errorf("%s: %d events dead-lettered (total %d, nodes %v), want %d", nd.name, len(seen), dl.Total, dl.Nodes, len(m.poisoned))
		}
	}
	c.checkSink(m)
}
