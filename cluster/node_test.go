package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tessera-streams/tessera/actor"
	"github.com/tessera-streams/tessera/connectors/file"
	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/splice"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func quiet() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func word(_ int, off int64, r *gen.Rand) string {
	if off%1000 == 999 {
		return "bad"
	}
	return fmt.Sprintf("k%02d", r.Intn(50))
}

// testFlow counts keys; the key "bad" makes the user function panic.
func testFlow(src flows.Source[string]) *flows.Flow {
	f := flows.New("test", flows.WithFragments(8))
	ks := flows.KeyBy(flows.From(f, "gen", src), flows.Identity[string])
	flows.Aggregate(ks, func() int64 { return 0 }, func(n int64, k string) int64 {
		if k == "bad" {
			panic("bad key")
		}
		return n + 1
	}).View("counts")
	flows.AggregateView(ks.Values(), "total", splice.Count[string](), flows.Identity[string])
	return f
}

type running struct {
	n      *Node
	base   string
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, cfg Config) *running {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	cfg.RateInterval = 50 * time.Millisecond
	// Failing events are dead-lettered at the first failure, and restores
	// replay little: the tests here are about the API.
	cfg.Engine.MaxAttempts, cfg.Engine.RetryBackoff, cfg.Engine.CheckpointInterval = 1, time.Millisecond, 20*time.Millisecond
	n := NewNode(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{n: n, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- n.Run(ctx) }()
	select {
	case <-n.Ready():
	case err := <-r.done:
		cancel()
		t.Fatalf("node did not start: %v", err)
	}
	r.base = "http://" + n.Addr()
	t.Cleanup(func() {
		cancel()
		if err := <-r.done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return r
}

func get(t *testing.T, url string, into any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if into != nil {
		if err := json.Unmarshal(body, into); err != nil {
			t.Fatalf("GET %s: %d %q: %v", url, resp.StatusCode, body, err)
		}
	}
	return resp.StatusCode
}

func waitDone(t *testing.T, r *running) {
	t.Helper()
	select {
	case <-r.n.Engine().Drained():
	case <-time.After(30 * time.Second):
		t.Fatal("not drained in 30s")
	}
}

func TestRoutes(t *testing.T) {
	src, _ := gen.New(gen.Config{Partitions: 2, Seed: 5, Events: 20_000}, word)
	dir := t.TempDir()
	r := start(t, Config{Flow: testFlow(src), Name: "n1", DataDir: dir})
	waitDone(t, r)

	want := map[string]int64{}
	var bad int64
	for p := range 2 {
		for o := range src.Limit(p) {
			if w := src.Event(p, o); w == "bad" {
				bad++
			} else {
				want[w]++
			}
		}
	}
	var total struct {
		View      string
		Value     int64
		Freshness []splice.Freshness
	}
	// The dead-lettered events never reached the total: its operator comes
	// after the failing one.
	if code := get(t, r.base+"/v1/views/total", &total); code != 200 || total.Value != 20_000-bad || len(total.Freshness) != 8 {
		t.Fatalf("total: %d %+v", code, total)
	}
	if total.Freshness[0].Offsets["gen/0"] != 10_000 {
		t.Fatalf("freshness = %+v", total.Freshness[0])
	}
	var key struct {
		Key   string
		Value int64
	}
	if code := get(t, r.base+"/v1/views/counts/keys/k07", &key); code != 200 || key.Value != want["k07"] {
		t.Fatalf("key: %d %+v, want %d", code, key, want["k07"])
	}
	type entries struct {
		Entries []struct {
			Key   string
			Value int64
		}
		More      bool
		NextAfter string `json:"next_after"`
	}
	var top entries
	get(t, r.base+"/v1/views/counts?top=3", &top)
	if len(top.Entries) != 3 || top.Entries[0].Value < top.Entries[1].Value || top.Entries[1].Value < top.Entries[2].Value {
		t.Fatalf("top = %+v", top)
	}
	// Paging in key order covers every key exactly once.
	seen := map[string]int64{}
	after := ""
	for page := 0; ; page++ {
		var es entries
		u := r.base + "/v1/views/counts?limit=7"
		if after != "" {
			u += "&after=" + after
		}
		if code := get(t, u, &es); code != 200 {
			t.Fatalf("page %d: %d", page, code)
		}
		for i, e := range es.Entries {
			if i > 0 && e.Key <= es.Entries[i-1].Key {
				t.Fatalf("not in key order: %+v", es.Entries)
			}
			seen[e.Key] = e.Value
		}
		if !es.More {
			break
		}
		after = es.NextAfter
	}
	if len(seen) != len(want) {
		t.Fatalf("paged %d keys, want %d", len(seen), len(want))
	}
	for k, v := range want {
		if seen[k] != v {
			t.Fatalf("%s = %d, want %d", k, seen[k], v)
		}
	}
	var pre entries
	get(t, r.base+"/v1/views/counts?prefix=k1&limit=100", &pre)
	if len(pre.Entries) != 10 {
		t.Fatalf("prefix k1: %d entries", len(pre.Entries))
	}

	var views struct{ Views []struct{ Name, Kind string } }
	if code := get(t, r.base+"/v1/views", &views); code != 200 || len(views.Views) != 2 || views.Views[0].Kind != "keyed" {
		t.Fatalf("views: %d %+v", code, views)
	}
	var cl ClusterState
	if code := get(t, r.base+"/v1/cluster", &cl); code != 200 || len(cl.Fragments) != 8 || len(cl.Readers) != 2 ||
		cl.Members[0].Name != "n1" || cl.DeadLetters != bad || !cl.Readers[0].Done {
		t.Fatalf("cluster: %d %+v", code, cl)
	}
	var evs int64
	for _, f := range cl.Fragments {
		evs += f.Events
	}
	if evs != 20_000-bad {
		t.Fatalf("fragments applied %d events, want %d", evs, 20_000-bad)
	}
	var dl struct {
		Total int64
		Last  []flows.DeadLetter
	}
	get(t, r.base+"/v1/deadletters", &dl)
	if dl.Total != bad || dl.Last[0].Key != "bad" || dl.Last[0].Offset%1000 != 999 {
		t.Fatalf("dead letters: %+v", dl)
	}
	lines, _ := os.ReadFile(filepath.Join(dir, "deadletters.jsonl"))
	if int64(strings.Count(string(lines), "\n")) != bad {
		t.Fatalf("dead-letter file has %d lines, want %d", strings.Count(string(lines), "\n"), bad)
	}
	for _, u := range []string{"/healthz", "/readyz", "/"} {
		if code := get(t, r.base+u, nil); code != 200 {
			t.Fatalf("%s: %d", u, code)
		}
	}
	resp, err := http.Get(r.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `tessera_source_position{partition="0",source="gen"} 10000`) ||
		!strings.Contains(string(metrics), fmt.Sprintf("tessera_dead_letters_total %d", bad)) {
		t.Fatalf("metrics lack the counters:\n%s", metrics)
	}

	// Errors: JSON with the right status.
	errCases := []struct {
		method, path string
		code         int
		msg          string
	}{
		{"GET", "/v1/views/nope", 404, `unknown view "nope"`},
		{"GET", "/v1/views/nope/keys/x", 404, "unknown view"},
		{"GET", "/v1/views/counts/keys/absent", 404, `key "absent"`},
		{"GET", "/v1/views/total/keys/x", 400, "aggregate"},
		{"GET", "/v1/views/counts?limit=0", 400, "limit must be"},
		{"GET", "/v1/views/counts?limit=abc", 400, "limit must be"},
		{"GET", "/v1/views/counts?limit=10000001", 400, "limit must be"},
		{"GET", "/v1/views/counts?top=-1", 400, "top must be"},
		{"GET", "/v1/views/counts?top=3&after=k1", 400, "do not combine"},
		{"GET", "/v1/views/counts?limt=3", 400, `unknown parameter "limt"`},
		{"GET", "/v1/views/total?limit=3", 400, "takes no query parameters"},
		{"GET", "/v1/views/counts/watch?interval=1ns", 400, "interval"},
		{"GET", "/v1/cluster?x=1", 400, "only scope=local"},
		{"GET", "/v1/cluster?scope=all", 400, "only scope=local"},
		{"GET", "/v2/whatever", 404, "no route"},
		{"POST", "/v1/views", 405, "only GET"},
		{"DELETE", "/v1/views/counts", 405, "only GET"},
	}
	for _, c := range errCases {
		req, _ := http.NewRequest(c.method, r.base+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error string }
		err = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != c.code || err != nil || !strings.Contains(e.Error, c.msg) {
			t.Errorf("%s %s: %d %q (%v); want %d with %q", c.method, c.path, resp.StatusCode, e.Error, err, c.code, c.msg)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: content type %q", c.method, c.path, ct)
		}
	}
}

func TestKeyedViewIntKeysOrderNumerically(t *testing.T) {
	src, _ := gen.New(gen.Config{Partitions: 1, Seed: 1, Events: 1000}, func(_ int, off int64, _ *gen.Rand) int64 { return off % 20 })
	f := flows.New("ints", flows.WithFragments(4))
	flows.Count(flows.KeyBy(flows.From(f, "gen", src), flows.Identity[int64])).View("n")
	r := start(t, Config{Flow: f})
	waitDone(t, r)
	var es struct{ Entries []struct{ Key string } }
	get(t, r.base+"/v1/views/n?limit=3&after=8", &es)
	if len(es.Entries) != 3 || es.Entries[0].Key != "9" || es.Entries[1].Key != "10" {
		t.Fatalf("entries after 8: %+v", es.Entries)
	}
	var e struct{ Error string }
	if code := get(t, r.base+"/v1/views/n/keys/notanumber", &e); code != 400 || !strings.Contains(e.Error, "invalid syntax") {
		t.Fatalf("bad int key: %d %q", code, e.Error)
	}
}

func TestWatchStreamsChanges(t *testing.T) {
	src, _ := gen.New(gen.Config{Partitions: 1, Seed: 2, Rate: 2000}, word)
	r := start(t, Config{Flow: testFlow(src)})
	for _, path := range []string{"/v1/views/total/watch?interval=250ms", "/v1/views/counts/watch?interval=250ms&prefix=k0"} {
		resp, err := http.Get(r.base + path)
		if err != nil {
			t.Fatal(err)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
			t.Fatalf("content type %q", ct)
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		// A snapshot, then two updates. A tick whose query a busy
		// machine's fragments did not answer in time is an "unavailable"
		// event, which a watcher sees and goes on from: up to ten are
		// let through, anything else fails.
		var events []string
		var last []byte
		updates, unavailable := 0, 0
		for updates < 2 && unavailable <= 10 && sc.Scan() {
			line := sc.Text()
			if ev, ok := strings.CutPrefix(line, "event: "); ok {
				events = append(events, ev)
				switch {
				case len(events) == 1:
				case ev == "value" || ev == "changes":
					updates++
				case ev == "unavailable":
					unavailable++
				default:
					t.Fatalf("%s: events %v", path, events)
				}
			}
			if d, ok := strings.CutPrefix(line, "data: "); ok {
				last = []byte(d)
			}
		}
		resp.Body.Close()
		if updates < 2 || events[0] != "snapshot" {
			t.Fatalf("%s: events %v (scan err %v)", path, events, sc.Err())
		}
		if !json.Valid(last) {
			t.Fatalf("%s: data is not JSON: %s", path, last)
		}
	}
}

func TestRunRejectsBadConfigBeforeStarting(t *testing.T) {
	src, _ := gen.New(gen.Config{Partitions: 1, Events: 10}, word)
	bad := flows.New("bad")
	flows.From(bad, "gen", src) // no view, no sink
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cases := []struct {
		cfg  Config
		want string
	}{
		{Config{Flow: bad, HTTPAddr: "127.0.0.1:0"}, "no view and no sink"},
		{Config{HTTPAddr: "127.0.0.1:0"}, "no flow"},
		{Config{Flow: testFlow(src), HTTPAddr: "nonsense"}, "HTTP address"},
		{Config{Flow: testFlow(src), HTTPAddr: ln.Addr().String()}, "address already in use"},
		{Config{Flow: testFlow(src), HTTPAddr: "127.0.0.1:0", Engine: actor.Config{Credits: -1}}, "Credits is negative"},
		{Config{Flow: testFlow(src), HTTPAddr: "127.0.0.1:0", Gossip: "127.0.0.1:0", Remote: "127.0.0.1:0", Streams: []Stream{localStream{}}},
			`stream "in" keeps pushed events on this node only`},
		{Config{Flow: testFlow(src), HTTPAddr: "127.0.0.1:0", Streams: []Stream{localStream{}, localStream{}}}, `stream "in" given twice`},
		{Config{Flow: testFlow(src), HTTPAddr: "127.0.0.1:0", Pages: map[string]http.Handler{"/v1/mine": http.NotFoundHandler()}}, "outside / and /v1/"},
		{Config{Flow: testFlow(src), HTTPAddr: "127.0.0.1:0", Pages: map[string]http.Handler{"/metrics": http.NotFoundHandler()}}, "conflicts"},
		{Config{Flow: testFlow(src), HTTPAddr: "127.0.0.1:0", Pages: map[string]http.Handler{"/page": nil}}, "needs a handler"},
	}
	for _, c := range cases {
		c.cfg.Logger = quiet()
		n := NewNode(c.cfg)
		err := n.Run(context.Background())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Run() = %v, want %q", err, c.want)
		}
		select {
		case <-n.Ready():
			t.Errorf("%q: node became ready", c.want)
		default:
		}
		if err := n.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "Run called twice") {
			t.Errorf("a second Run() = %v, want an error that says so", err)
		}
	}
}

// A node on a data directory whose checkpoints another layout of its flow
// wrote (here the count of each key became its last key) fails before it
// listens or joins, saying why; the flow that wrote them starts on them.
func TestRunRefusesCheckpointsOfAnotherLayout(t *testing.T) {
	dir := t.TempDir()
	src, _ := gen.New(gen.Config{Partitions: 1, Events: 100}, word)
	r := start(t, Config{Flow: testFlow(src), Name: "n1", DataDir: dir})
	waitDone(t, r)
	r.cancel()
	if err := <-r.done; err != nil {
		t.Fatal(err)
	}
	r.done <- nil // for the test's cleanup
	changed := flows.New("test", flows.WithFragments(8))
	ks := flows.KeyBy(flows.From(changed, "gen", src), flows.Identity[string])
	flows.Aggregate(ks, func() string { return "" }, func(_, k string) string { return k }).View("counts")
	// An HTTP address in use: a node that listened first would fail on it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	n := NewNode(Config{Flow: changed, Name: "n1", DataDir: dir, HTTPAddr: ln.Addr().String(), Gossip: "127.0.0.1:0", Remote: "127.0.0.1:0",
		Logger: quiet()})
	err = n.Run(context.Background())
	if !errors.Is(err, recovery.ErrLayout) || !strings.Contains(err.Error(), "table of string by string") {
		t.Fatalf("Run() = %v, want the layout refused", err)
	}
	select {
	case <-n.Ready():
		t.Fatal("the node became ready")
	default:
	}
	start(t, Config{Flow: testFlow(src), Name: "n1", DataDir: dir})
}

// brokenSource fails at the first read, as a file that turned into a
// directory or a deleted topic does.
type brokenSource struct{}

func (brokenSource) Partitions() int { return 1 }
func (brokenSource) Open(int, int64) (flows.PartitionReader[string], error) {
	return brokenReader{}, nil
}

type brokenReader struct{}

func (brokenReader) Read(context.Context, *flows.ReadBatch[string], int) error {
	return errors.New("read /data/in.jsonl: is a directory")
}
func (brokenReader) Close() error { return nil }

// A source that fails stops the node with its error: no node goes on
// answering /healthz 200 and a total of 0 for a flow that cannot read.
func TestSourceFailureStopsNode(t *testing.T) {
	n := NewNode(Config{Flow: testFlow(brokenSource{}), HTTPAddr: "127.0.0.1:0", Logger: quiet()})
	done := make(chan error, 1)
	go func() { done <- n.Run(context.Background()) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "gen/0: read /data/in.jsonl: is a directory") {
			t.Fatalf("Run() = %v, want the source's error", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the node still runs 20s after its source failed")
	}
	if st := n.State(); !strings.Contains(st.Error, "is a directory") {
		t.Fatalf("/v1/cluster error = %q", st.Error)
	}
	if _, err := http.Get("http://" + n.Addr() + "/healthz"); err == nil {
		t.Fatal("the stopped node still answers /healthz")
	}
}

// localStream is a stream whose events stay on the node.
type localStream struct{}

func (localStream) ServeHTTP(http.ResponseWriter, *http.Request) {}
func (localStream) Name() string                                 { return "in" }
func (localStream) NodeLocal() bool                              { return true }

// A malformed record keeps a bounded prefix of its bytes, as read (base64
// in JSON when they are not UTF-8), and its size; a huge printed event is
// cut too.
func TestDeadLetterKeepsBoundedRawBytes(t *testing.T) {
	dir := t.TempDir()
	huge := bytes.Repeat([]byte{0xff, 0xfe, 'x'}, 100_000) // not UTF-8, 300 kB
	long := strings.Repeat("é", 50_000)                    // UTF-8, 100 kB
	data := append(append([]byte("\"a\"\n"), huge...), '\n')
	data = append(append(data, long...), "\n\"b\"\n"...)
	if err := os.WriteFile(filepath.Join(dir, "in.jsonl"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := file.New(filepath.Join(dir, "*.jsonl"), func(b []byte) (string, error) {
		var s string
		err := json.Unmarshal(b, &s)
		return s, err
	})
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, Config{Flow: testFlow(src), Name: "n1", DataDir: t.TempDir()})
	waitDone(t, r)
	var dl struct {
		Total int64
		Last  []flows.DeadLetter
	}
	get(t, r.base+"/v1/deadletters", &dl)
	if dl.Total != 2 || len(dl.Last) != 2 {
		t.Fatalf("dead letters: %+v", dl)
	}
	bin, text := dl.Last[0], dl.Last[1]
	if bin.Offset > text.Offset {
		bin, text = text, bin
	}
	if bin.Value != "" || !bytes.Equal(bin.Raw, huge[:flows.DeadLetterKeep]) || bin.Size != len(huge) || !bin.Truncated {
		t.Fatalf("binary record: value %q, %d raw bytes (prefix equal: %v), size %d, truncated %v",
			bin.Value, len(bin.Raw), bytes.HasPrefix(huge, bin.Raw), bin.Size, bin.Truncated)
	}
	if len(text.Raw) != 0 || len(text.Value) > flows.DeadLetterKeep || !strings.HasPrefix(long, text.Value) ||
		len(text.Value) < flows.DeadLetterKeep-1 || text.Size != len(long) || !text.Truncated {
		t.Fatalf("text record: %d value bytes, %d raw, size %d, truncated %v", len(text.Value), len(text.Raw), text.Size, text.Truncated)
	}
}

// A malformed %-escape in a query string is a 400 with a JSON error, not
// a parameter silently dropped.
func TestMalformedEscapesAre400(t *testing.T) {
	src, _ := gen.New(gen.Config{Partitions: 1, Seed: 1, Events: 100}, word)
	r := start(t, Config{Flow: testFlow(src), Name: "n1"})
	waitDone(t, r)
	for _, u := range []string{"/v1/views/counts?after=%ZZ", "/v1/views/counts?top=%ZZ", "/v1/views/counts?limit=%ZZ",
		"/v1/views/counts?limit=5&after=k1%", "/v1/views/total?%ZZ", "/v1/views?%ZZ", "/v1/views/counts/keys/k1?a=%ZZ",
		"/v1/views/counts/watch?interval=%ZZ", "/v1/cluster?scope=%ZZ", "/v1/alerts?limit=%ZZ", "/v1/alerts/watch?since=%ZZ"} {
		var e struct{ Error string }
		if code := get(t, r.base+u, &e); code != 400 || e.Error == "" {
			t.Errorf("%s: %d %+v", u, code, e)
		}
	}
}
