package splice_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/splice"
)

// lockedDriver lets the watch hub's goroutines ask a flowstest Driver
// while the test drives it.
type lockedDriver struct {
	mu sync.Mutex
	d  *flowstest.Driver
}

func (l *lockedDriver) Views() []splice.Spec {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.d.Views()
}

func (l *lockedDriver) Gather(ctx context.Context, req splice.Request, only int) ([]splice.Answer, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.d.Gather(ctx, req, only)
}

func (l *lockedDriver) Freshness() []splice.Freshness {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.d.Freshness()
}

// sseWatcher follows a keyed view's watch stream: its snapshot with every
// change applied.
type sseWatcher struct {
	mu    sync.Mutex
	state map[string]string // key → value JSON
	err   error
}

func (w *sseWatcher) follow(t *testing.T, ctx context.Context, url string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	ready := make(chan struct{})
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<24)
		var event string
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				event = v
				continue
			}
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var m struct {
				Entries []struct {
					Key   string
					Value json.RawMessage
				}
				Removed []string
			}
			err := json.Unmarshal([]byte(data), &m)
			w.mu.Lock()
			switch {
			case err != nil:
				w.err = err
			case event == "snapshot":
				w.state = map[string]string{}
				close(ready)
			case event != "changes":
				w.err = fmt.Errorf("event %q: %s", event, data)
			}
			for _, k := range m.Removed {
				delete(w.state, k)
			}
			for _, e := range m.Entries {
				w.state[e.Key] = string(e.Value)
			}
			w.mu.Unlock()
		}
	}()
	<-ready
}

// A client of the HTTP watch endpoint that applies every event to its
// snapshot holds what a fresh read answers, for pages, prefixes and top
// sets of keyed views whose keys leave and come back (PublishIf), across
// fragment crashes — also a client that joins a watch group midway.
func TestWatchHTTPClientsFollowFreshReads(t *testing.T) {
	in := flowstest.NewInput[string](2)
	d, err := flowstest.New(deltaFlow(in), time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ld := &lockedDriver{d: d}
	mux := http.NewServeMux()
	splice.Register(mux, ld, splice.HandlerConfig{})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer http.DefaultClient.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	type watch struct {
		path string
		req  splice.Request
	}
	watches := []watch{
		{"counts/watch?limit=4", splice.Request{View: "counts", Query: splice.Query{Limit: 4}}},
		{"odd/watch?limit=3", splice.Request{View: "odd", Query: splice.Query{Limit: 3}}},
		{"odd/watch?prefix=k1&limit=2", splice.Request{View: "odd", Query: splice.Query{Limit: 2, Prefix: "k1"}}},
		{"odd/watch?top=3", splice.Request{View: "odd", Query: splice.Query{Top: 3}}},
		{"counts/watch?top=2", splice.Request{View: "counts", Query: splice.Query{Top: 2}}},
	}
	ws := make([]*sseWatcher, 0, 2*len(watches))
	start := func(w watch) {
		sw := &sseWatcher{}
		sw.follow(t, ctx, srv.URL+"/v1/views/"+w.path+"&interval=250ms")
		ws = append(ws, sw)
	}
	for _, w := range watches {
		start(w)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for step := range 6 {
		ld.mu.Lock()
		for range 40 {
			in.Push(rng.IntN(2), fmt.Sprintf("k%d", rng.IntN(25)))
		}
		err := d.Drain()
		if err == nil && step%2 == 1 {
			if err = d.Checkpoint(); err == nil {
				err = d.Crash(rng.IntN(4))
			}
		}
		if err == nil {
			err = d.Drain()
		}
		want := make([]map[string]string, len(watches))
		for i, w := range watches {
			w.req.Op = splice.OpEntries
			res, err := splice.Evaluate(ctx, d, w.req)
			if err != nil {
				t.Fatal(err)
			}
			want[i] = map[string]string{}
			for _, e := range res.Entries {
				b, _ := json.Marshal(e.Value)
				want[i][e.Key] = string(b)
			}
		}
		ld.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		for i, sw := range ws {
			w := want[i%len(watches)]
			deadline := time.Now().Add(3 * time.Second)
			for {
				sw.mu.Lock()
				got, werr := maps.Clone(sw.state), sw.err
				sw.mu.Unlock()
				if werr != nil {
					t.Fatalf("step %d, watch %s: %v", step, watches[i%len(watches)].path, werr)
				}
				if maps.Equal(got, w) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("step %d, watch %s (client %d): the client holds %v, a fresh read answers %v", step, watches[i%len(watches)].path, i, got, w)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		if step == 2 {
			for _, w := range watches { // join the groups midway
				start(w)
			}
		}
	}
}
