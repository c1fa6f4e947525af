package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
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

// queryLoop GETs paths in turn on a node every 100 ms, from
// startQueries until stop, and keeps every answer.
type queryLoop struct {
	mu       sync.Mutex
	killedAt time.Time
	answers  []queryAnswer

	stopOnce sync.Once
	stopc    chan struct{}
	done     chan struct{}
}

func startQueries(t *testing.T, base string, paths []string) *queryLoop {
	q := &queryLoop{stopc: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(func() { q.stop() }) // if the test ends early
	go func() {
		defer close(q.done)
		client := &http.Client{Timeout: 15 * time.Second}
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-q.stopc:
				return
			case <-tick.C:
			}
			p := paths[i%len(paths)]
			start := time.Now()
			a := queryAnswer{path: p, at: -time.Nanosecond}
			if k := q.killed(); !k.IsZero() {
				a.at = start.Sub(k)
			}
			resp, err := client.Get(base + p)
			a.took, a.err = time.Since(start), err
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				a.status, a.body, a.retryAfter = resp.StatusCode, string(b), resp.Header.Get("Retry-After")
			}
			q.mu.Lock()
			q.answers = append(q.answers, a)
			q.mu.Unlock()
		}
	}()
	return q
}

// kill runs kill (which sends the signal) and notes the time, so that
// every answer knows whether it was asked before or after.
func (q *queryLoop) kill(kill func()) {
	q.mu.Lock()
	defer q.mu.Unlock()
	kill()
	q.killedAt = time.Now()
}

func (q *queryLoop) killed() time.Time {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.killedAt
}

func (q *queryLoop) count() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.answers)
}

// stop ends the loop and returns every answer.
func (q *queryLoop) stop() []queryAnswer {
	q.stopOnce.Do(func() { close(q.stopc) })
	<-q.done
	return q.answers
}

// checkAnswers fails unless every answer of a query loop across a node's
// death came quickly (the bound is generous for a loaded machine; the
// observed maximum is logged), and is either a 200 — from the owners, or
// from a standby's copy marked stale — or a JSON 503 with Retry-After that
// names the fragments that are moving, with no answer showing the actor
// library's internals.
func checkAnswers(t *testing.T, answers []queryAnswer) {
	t.Helper()
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

// waitFresh waits, past the membership's detection and the placement
// change after a kill, until the owners answer base's total again for
// every fragment (not from a standby's copy), and at least 3 s have passed
// since the kill.
func waitFresh(t *testing.T, base string, killed time.Time) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var total struct {
			Value int64
			Stale bool
		}
		resp, err := http.Get(base + "/v1/views/total")
		if err == nil {
			if resp.StatusCode == 200 {
				json.NewDecoder(resp.Body).Decode(&total)
			}
			resp.Body.Close()
		}
		if err == nil && resp.StatusCode == 200 && !total.Stale && time.Since(killed) > 3*time.Second {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no fresh answer within 30s of the kill")
		}
		time.Sleep(50 * time.Millisecond)
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
