package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/connectors/ingest"
	"github.com/tessera-streams/tessera/internal/exampletest"
)

// pushLines is the size of the SIGKILL ingest test: 1,000,000 lines (about
// 20 s on 2 cores, race detector on), 200,000 with -short.
func pushLines() int {
	if testing.Short() {
		return 200_000
	}
	return 1_000_000
}

// pushClient posts requests until each is acknowledged, through kills and
// restarts of nodes, each attempt to one of urls picked at random (after a
// failure, a refused connection, a node that died mid-request, a 429 or
// 503, that may be another node); the tests now and then post an
// acknowledged request again: the same Idempotency-Key must give the same
// answer and count nothing twice.
type pushClient struct {
	t        *testing.T
	http     *http.Client
	urls     []string
	rng      *rand.Rand
	retried  *atomic.Int64 // requests that failed once at least (nil: not counted)
	replayed *atomic.Int64 // answers that were replays after a failed attempt
}

// push posts body with key until a 200, and returns its answer.
func (c *pushClient) push(key string, body []byte) ingest.Answer {
	for attempt := 0; ; attempt++ {
		if attempt == 1 && c.retried != nil {
			c.retried.Add(1)
		}
		req, _ := http.NewRequest(http.MethodPost, c.urls[c.rng.IntN(len(c.urls))], bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/x-ndjson")
		req.Header.Set("Idempotency-Key", key)
		resp, err := c.http.Do(req)
		if err != nil { // the node is down, or died mid-request
			time.Sleep(time.Duration(5+c.rng.IntN(20)) * time.Millisecond)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			if attempt > 0 && resp.Header.Get("Idempotent-Replayed") == "true" {
				c.replayed.Add(1) // applied before the node died, acknowledged only now
			}
			var a ingest.Answer
			if err := json.Unmarshal(b, &a); err != nil {
				c.t.Errorf("%s: answer %q: %v", key, b, err)
			}
			return a
		case http.StatusTooManyRequests, http.StatusServiceUnavailable:
			if resp.Header.Get("Retry-After") == "" {
				c.t.Errorf("%s: %d without Retry-After", key, resp.StatusCode)
			}
			time.Sleep(time.Duration(5+c.rng.IntN(20)) * time.Millisecond) // shorter than Retry-After: the test is about correctness
		default:
			c.t.Errorf("%s: %d %s", key, resp.StatusCode, b)
			return ingest.Answer{}
		}
	}
}

// postStatus posts body and returns the status and the decoded JSON answer.
func postStatus(t *testing.T, url, contentType string, body []byte) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, contentType, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatalf("%d answer is not JSON: %v", resp.StatusCode, err)
	}
	return resp.StatusCode, a
}

// Eight clients push lines over HTTP, retrying with the same
// Idempotency-Key, while the node is SIGKILLed and restarted at random
// moments: the final counts equal the lines acknowledged, each once.
// Malformed, oversized and wrong-type bodies, sent first, get JSON 4xx
// and count nothing.
func TestHTTPIngestSIGKILLExact(t *testing.T) {
	t.Parallel()
	const clients, perRequest, kills = 8, 500, 3
	n := pushLines()
	bin := exampletest.Build(t, "wordcount")
	data := t.TempDir()
	addr := exampletest.FreePort(t) // kept across restarts: the clients know one address
	seed := uint64(time.Now().UnixNano())
	t.Logf("%d lines; kills and retries seeded with %d", n, seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	args := []string{"-source", "http", "-partitions", "4", "-data", data, "-http", addr, "-progress", "0", "-log-level", "warn",
		"-checkpoint-interval", "100ms"}
	p := exampletest.Spawn(t, bin, args...)
	url := p.Base + "/v1/streams/lines/events"

	for _, c := range []struct {
		name, ct string
		body     []byte
		code     int
	}{
		{"malformed line", "application/x-ndjson", []byte(`{"text":"w0001"}` + "\n" + `{"text":`), 400},
		{"wrong field type", "application/json", []byte(`[{"text":"w0001"},{"text":7}]`), 400},
		{"oversized", "application/x-ndjson", bytes.Repeat([]byte(`{"text":"w0001"}`+"\n"), 600_000), 413},
		{"wrong type", "text/plain", []byte(`{"text":"w0001"}`), 415},
	} {
		if code, a := postStatus(t, url, c.ct, c.body); code != c.code || a["error"] == nil {
			t.Fatalf("%s: %d %v, want %d with an error", c.name, code, a, c.code)
		}
	}

	// The lines: client c's line i is a word of the vocabulary.
	want := map[string]int64{}
	bodies := make([][][]byte, clients)
	for c := range clients {
		for first := c * n / clients; first < (c+1)*n/clients; first += perRequest {
			var b bytes.Buffer
			for i := first; i < min(first+perRequest, (c+1)*n/clients); i++ {
				w := Vocabulary[(i*7919)%len(Vocabulary)]
				want[w]++
				fmt.Fprintf(&b, `{"text":%q}`+"\n", w)
			}
			bodies[c] = append(bodies[c], b.Bytes())
		}
	}

	var acked atomic.Int64
	ends := make([]atomic.Int64, 4) // the largest acknowledged end offset of each partition
	var resent, replayed atomic.Int64
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pc := &pushClient{t: t, urls: []string{url}, replayed: &replayed, rng: rand.New(rand.NewPCG(seed, uint64(c)+2)),
				http: &http.Client{Timeout: 30 * time.Second}}
			for r, body := range bodies[c] {
				key := fmt.Sprintf("c%d-r%d", c, r)
				a := pc.push(key, body)
				lines := int64(bytes.Count(body, []byte("\n")))
				if int64(a.Accepted) != lines {
					t.Errorf("%s: accepted %d of %d lines", key, a.Accepted, lines)
					return
				}
				if pc.rng.IntN(10) == 0 { // a retry of an acknowledged request
					resent.Add(1)
					if b := pc.push(key, body); fmt.Sprint(b) != fmt.Sprint(a) {
						t.Errorf("%s: retried, answered %+v, first %+v", key, b, a)
					}
				}
				for _, part := range a.Partitions {
					for e := ends[part.Partition].Load(); part.To > e && !ends[part.Partition].CompareAndSwap(e, part.To); e = ends[part.Partition].Load() {
					}
				}
				acked.Add(lines)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	// Kill at random moments while the clients push.
	for k := range kills {
		at := int64(n) * int64(k*2+1+rng.IntN(2)) / int64(2*kills+1)
		for acked.Load() < at {
			select {
			case <-done:
				t.Fatalf("the clients finished before kill %d", k+1)
			case <-time.After(time.Millisecond):
			}
		}
		if err := p.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		p.Wait()
		p = exampletest.Spawn(t, bin, args...)
	}
	<-done
	if t.Failed() {
		return
	}
	if got := acked.Load(); got != int64(n) {
		t.Fatalf("%d lines acknowledged, want %d", got, n)
	}

	// The flow reads to the acknowledged ends, and the total is the lines
	// acknowledged: each counted once.
	var positions []int64
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var total struct{ Value int64 }
		exampletest.GetJSON(t, p.Base+"/v1/views/total", &total)
		if total.Value > int64(n) {
			t.Fatalf("total %d exceeds the %d lines acknowledged: counted twice", total.Value, n)
		}
		var st exampletest.ClusterState
		exampletest.GetJSON(t, p.Base+"/v1/cluster", &st)
		positions = positions[:0]
		atEnd := len(st.Readers) == 4
		for _, r := range st.Readers {
			positions = append(positions, r.Position)
			atEnd = atEnd && r.Position == ends[r.Partition].Load()
		}
		if atEnd && total.Value == int64(n) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("total %d of %d; readers at %v", total.Value, n, positions)
		}
	}
	checkWords(t, p.Base, want)
	t.Logf("%d kills; %d acknowledged requests sent again; %d requests applied before a kill and acknowledged after it; partitions end at %v",
		kills, resent.Load(), replayed.Load(), positions)
}
