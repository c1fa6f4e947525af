package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tessera-streams/tessera/internal/exampletest"
)

// clusterPushLines is the size of the three-node ingest test.
func clusterPushLines() int {
	if testing.Short() {
		return 20_000
	}
	return 60_000
}

// -source http -ingest kafka on three nodes: clients push lines to random
// nodes, retrying with the same Idempotency-Key (on another node, picked
// at random) after any failure and now and then after a success; one node
// is SIGKILLed mid-stream. Every line acknowledged is counted exactly once
// in the views of the two nodes left.
func TestHTTPIngestKafkaClusterExact(t *testing.T) {
	t.Parallel()
	brokers, _ := kafkaLines(t, 4)
	ingestClusterExact(t, "-ingest", "kafka", "-brokers", strings.Join(brokers, ","), "-topics", "lines", "-group", "wordcount")
}

// The same with -ingest nats: the node publishes the lines to a JetStream
// stream with the key in their Nats-Msg-Id, and the stream's duplicate
// window drops a retry's.
func TestHTTPIngestNATSClusterExact(t *testing.T) {
	t.Parallel()
	url, js := natsServer(t)
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "LINES",
		Subjects: []string{"lines.0", "lines.1", "lines.2", "lines.3"}, Duplicates: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	ingestClusterExact(t, "-ingest", "nats", "-nats", url, "-stream", "LINES")
}

func ingestClusterExact(t *testing.T, ingestArgs ...string) {
	const clients, perRequest = 6, 250
	n := clusterPushLines()
	bin := exampletest.Build(t, "wordcount")
	procs, _ := startCluster(t, bin, 3, append([]string{"-source", "http", "-fragments", "12", "-checkpoint-interval", "100ms"}, ingestArgs...)...)
	urls := make([]string, len(procs))
	for i, p := range procs {
		urls[i] = p.Base + "/v1/streams/lines/events"
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("%d lines; node choice and retries seeded with %d", n, seed)

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

	var acked, resent, retried, replayed atomic.Int64
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := &pushClient{t: t, urls: urls, rng: rand.New(rand.NewPCG(seed, uint64(c)+2)),
				http: &http.Client{Timeout: 30 * time.Second}, retried: &retried, replayed: &replayed}
			for r, body := range bodies[c] {
				key := fmt.Sprintf("c%d-r%d", c, r)
				a := cl.push(key, body)
				lines := int64(bytes.Count(body, []byte("\n")))
				if int64(a.Accepted) != lines {
					t.Errorf("%s: accepted %d of %d lines", key, a.Accepted, lines)
					return
				}
				if cl.rng.IntN(10) == 0 { // a retry of an acknowledged request, on any node
					resent.Add(1)
					if b := cl.push(key, body); fmt.Sprint(b) != fmt.Sprint(a) {
						t.Errorf("%s: sent again, answered %+v, first %+v", key, b, a)
					}
				}
				acked.Add(lines)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	for acked.Load() < int64(n)/3 {
		select {
		case <-done:
			t.Fatal("the clients finished before the kill")
		case <-time.After(time.Millisecond):
		}
	}
	if err := procs[2].Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	procs[2].Wait()
	t.Logf("n2 killed with %d of %d lines acknowledged", acked.Load(), n)
	<-done
	if t.Failed() {
		return
	}
	if got := acked.Load(); got != int64(n) {
		t.Fatalf("%d lines acknowledged, want %d", got, n)
	}
	// Until the cluster sees n2 gone, queries may fail: they are retried.
	for _, p := range procs[:2] {
		waitFor(t, "the total on "+p.Base, func() bool {
			var v struct{ Value int64 }
			if !exampletest.TryJSON(p.Base+"/v1/views/total", &v) {
				return false
			}
			if v.Value > int64(n) {
				t.Fatalf("total %d exceeds the %d lines acknowledged: counted twice", v.Value, n)
			}
			return v.Value == int64(n)
		})
		checkWords(t, p.Base, want)
	}
	t.Logf("%d requests failed at least once and were sent again, %d of them answered as replays; %d acknowledged requests sent again",
		retried.Load(), replayed.Load(), resent.Load())
}
