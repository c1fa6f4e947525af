package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/internal/exampletest"
)

// queryAnswer is one answer of the query loop.
type queryAnswer struct {
	path       string
	at         time.Duration // since the kill (negative: before it)
	took       time.Duration
	status     int
	body       string
	retryAfter string
	err        error
}

// queryLoop GETs the paths in turn on base every interval until stop is
// closed, and returns every answer.
func queryLoop(base string, paths []string, interval time.Duration, killed func() time.Time, stop <-chan struct{}) []queryAnswer {
	client := &http.Client{Timeout: 15 * time.Second}
	var out []queryAnswer
	t := time.NewTicker(interval)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return out
		case <-t.C:
		}
		p := paths[i%len(paths)]
		start := time.Now()
		a := queryAnswer{path: p}
		if k := killed(); !k.IsZero() {
			a.at = start.Sub(k)
		} else {
			a.at = -time.Nanosecond
		}
		resp, err := client.Get(base + p)
		a.took, a.err = time.Since(start), err
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			a.status, a.body, a.retryAfter = resp.StatusCode, string(b), resp.Header.Get("Retry-After")
		}
		out = append(out, a)
	}
}

// A node is SIGKILLed while a client queries another every 100 ms: every
// answer comes quickly (the bound is generous for a loaded machine; the
// observed maximum is logged), and is either a 200 — from the owners, or
// from a standby's copy marked stale — or a JSON 503 with Retry-After that
// names the fragments that are moving. No answer shows the actor
// library's internals.
func TestQueriesAnswerWhileANodeDies(t *testing.T) {
	t.Parallel()
	bin := exampletest.Build(t, "wordcount")
	procs, _ := startCluster(t, bin, 3, "-seed", "5", "-fragments", "32", "-rate", "200000", "-checkpoint-interval", "200ms")
	waitTotalAtLeast(t, procs[0].Base, 100_000)

	var mu sync.Mutex
	var killedAt time.Time
	killed := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return killedAt
	}
	stop := make(chan struct{})
	results := make(chan []queryAnswer, 1)
	go func() {
		results <- queryLoop(procs[0].Base, []string{"/v1/views/words?top=3", "/v1/views/total", "/v1/views/words/keys/w0000"},
			100*time.Millisecond, killed, stop)
	}()
	time.Sleep(time.Second)
	mu.Lock()
	if err := procs[2].Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		mu.Unlock()
		t.Fatal(err)
	}
	killedAt = time.Now()
	mu.Unlock()
	procs[2].Wait()
	// Past the membership's detection and the placement change, until the
	// owners answer again for every fragment.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var total struct {
			Value int64
			Stale bool
		}
		resp, err := http.Get(procs[0].Base + "/v1/views/total")
		if err == nil {
			if resp.StatusCode == 200 {
				json.NewDecoder(resp.Body).Decode(&total)
			}
			resp.Body.Close()
		}
		if err == nil && resp.StatusCode == 200 && !total.Stale && time.Since(killed()) > 3*time.Second {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no fresh answer within 30s of the kill")
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	answers := <-results

	const bound = 3 * time.Second
	var maxAfter time.Duration
	var ok, stale, unavailable, afterKill int
	for _, a := range answers {
		if a.err != nil {
			t.Fatalf("%s at %v: %v", a.path, a.at, a.err)
		}
		if strings.Contains(a.body, "future:") || strings.Contains(a.body, "dead letter") {
			t.Errorf("%s at %v: actor-library internals in the answer: %s", a.path, a.at, a.body)
		}
		if a.at >= 0 {
			afterKill++
			maxAfter = max(maxAfter, a.took)
		}
		if a.took > bound {
			t.Errorf("%s at %v took %v (bound %v)", a.path, a.at, a.took, bound)
		}
		switch a.status {
		case 200:
			ok++
			if strings.Contains(a.body, `"stale":true`) {
				stale++
			}
		case 503:
			unavailable++
			var body struct {
				Error      string
				Fragments  []int
				RetryAfter int `json:"retry_after_sec"`
			}
			if err := json.Unmarshal([]byte(a.body), &body); err != nil || body.Error == "" || len(body.Fragments) == 0 || body.RetryAfter < 1 {
				t.Errorf("%s at %v: 503 without a JSON error naming fragments: %s (%v)", a.path, a.at, a.body, err)
			}
			if a.retryAfter == "" {
				t.Errorf("%s at %v: 503 without Retry-After: %s", a.path, a.at, a.body)
			}
		default:
			t.Errorf("%s at %v: %d %s", a.path, a.at, a.status, a.body)
		}
	}
	t.Logf("%d answers, %d after the kill: %d ok (%d stale), %d unavailable; slowest after the kill %v",
		len(answers), afterKill, ok, stale, unavailable, maxAfter)
	if afterKill < 20 {
		t.Fatalf("only %d queries after the kill", afterKill)
	}
}

// waitTotalAtLeast polls base's total until it reaches n.
func waitTotalAtLeast(t *testing.T, base string, n int64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var total struct{ Value int64 }
		exampletest.GetJSON(t, base+"/v1/views/total", &total)
		if total.Value >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("total %d after 60s, want at least %d", total.Value, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
