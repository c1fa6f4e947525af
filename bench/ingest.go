package main

import (
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
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/tessera-streams/tessera/actor"
	"github.com/tessera-streams/tessera/cluster"
	"github.com/tessera-streams/tessera/connectors/ingest"
)

// The http-ingest row: clients push the keyed count's input over loopback
// HTTP, ingestClients at a time, ingestBatch events a request, and the
// figure is events acknowledged durable per second. The engine side is a
// node with an ingest stream (the embedded log, group commit) and the
// keyed count reading it, checkpointing to disk, while the clients push;
// every count is checked once the flow has caught up. The baseline is a
// plain net/http handler that reads the body, checks every line is JSON
// and writes the lines to pebble in one synced batch per request (pebble
// groups concurrent syncs itself), with no flow reading them.
const (
	ingestClients = 8
	ingestBatch   = 500
)

func httpIngest(in *input, p params, w io.Writer) (Result, error) {
	n := min(len(in.idx), 1_000_000)
	if p.quick {
		n = min(n, 200_000)
	}
	bodies, want := ingestBodies(in, n)
	var eng, base costs
	var lat, rss []float64
	for round := 1; round <= p.rounds; round++ {
		runtime.GC()
		c, _, err := plainIngest(bodies)
		if err != nil {
			return Result{}, fmt.Errorf("baseline: %w", err)
		}
		base = append(base, c)
		runtime.GC()
		resetPeakRSS()
		c, l, err := engineIngest(bodies, p, want)
		if err != nil {
			return Result{}, err
		}
		eng, lat, rss = append(eng, c), append(lat, l...), append(rss, peakRSSMB())
		fmt.Fprintf(w, "  round %d: plain net/http + pebble %v, engine %v\n", round, base.last(), eng.last())
	}
	// The goal: besides what the baseline does, the engine's side counts
	// each event in the flow and checkpoints, on the same two cores (the
	// flow takes the events the edge decoded, without decoding them
	// again); 0.4 of the baseline leaves room for a shared machine's noise
	// (measured 0.5-0.8).
	r := Result{Name: "http-ingest", Events: n, Rounds: p.rounds, Versus: "http+pebble", Goal: atLeast("ratio", 0.4),
		Baseline:  "a plain net/http handler writing each request's lines to pebble in one synced batch, no flow",
		PeakRSSMB: medianF(rss),
		Note: fmt.Sprintf("%d clients over loopback, %d events a request; figure: events acknowledged durable/s; p50/p99: request acknowledgement; CPU includes the clients",
			ingestClients, ingestBatch)}
	r.against(eng.rate(n), eng.cpuPerEvent(n), base.rate(n), base.cpuPerEvent(n))
	r.P50Ms, r.P99Ms = percentile(lat, 0.5), percentile(lat, 0.99)
	return r, nil
}

// pushAll posts every body to url from ingestClients clients and returns
// what it cost and each request's latency, in ms.
func pushAll(url string, bodies [][]byte) (cost, []float64, error) {
	var next atomic.Int64
	lat := make([]float64, len(bodies))
	errs := make([]error, ingestClients)
	tr := &http.Transport{MaxIdleConnsPerHost: ingestClients}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: time.Minute}
	c := measure(func() {
		var wg sync.WaitGroup
		for i := range ingestClients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					j := int(next.Add(1) - 1)
					if j >= len(bodies) {
						return
					}
					start := time.Now()
					resp, err := cl.Post(url, "application/x-ndjson", bytes.NewReader(bodies[j]))
					if err != nil {
						errs[i] = err
						return
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						errs[i] = fmt.Errorf("POST %s: %d %s", url, resp.StatusCode, b)
						return
					}
					lat[j] = float64(time.Since(start).Microseconds()) / 1000
				}
			}()
		}
		wg.Wait()
	})
	return c, lat, errors.Join(errs...)
}

// plainIngest is the baseline: the same requests into a handler that
// validates the lines and writes them to pebble, synced, per request.
func plainIngest(bodies [][]byte) (cost, []float64, error) {
	dir, err := os.MkdirTemp("", "tessera-bench-ingest")
	if err != nil {
		return cost{}, nil, err
	}
	defer os.RemoveAll(dir)
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietPebble{}})
	if err != nil {
		return cost{}, nil, err
	}
	defer db.Close()
	var seq atomic.Uint64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 8<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		b := db.NewBatch()
		defer b.Close()
		var v bev
		for line := range bytes.Lines(body) {
			if err := json.Unmarshal(line, &v); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			var k [8]byte
			s := seq.Add(1)
			for i := range k {
				k[i] = byte(s >> (56 - 8*i))
			}
			b.Set(k[:], line, nil)
		}
		if err := b.Commit(pebble.Sync); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"accepted":%d}`, b.Count())
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return cost{}, nil, err
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	defer srv.Close()
	return pushAll("http://"+ln.Addr().String()+"/", bodies)
}

// engineIngest pushes the requests to a node's ingest stream while its
// keyed count reads them, then checks every count.
func engineIngest(bodies [][]byte, p params, want map[string]int64) (cost, []float64, error) {
	dir, err := os.MkdirTemp("", "tessera-bench-ingest")
	if err != nil {
		return cost{}, nil, err
	}
	defer os.RemoveAll(dir)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	l, err := ingest.Open(dir+"/log", ingest.Options{Logger: logger})
	if err != nil {
		return cost{}, nil, err
	}
	defer l.Close()
	s, err := ingest.NewStream(l, ingest.Config[bev]{Name: "keys", Partitions: p.partitions, MaxUnread: 1 << 30})
	if err != nil {
		return cost{}, nil, err
	}
	var lat latencySink
	var kept atomic.Int64
	node := cluster.NewNode(cluster.Config{Flow: benchFlow(s, p.fragments, false, &lat, &kept), HTTPAddr: "127.0.0.1:0",
		DataDir: dir + "/node", Logger: logger, Streams: []cluster.Stream{s},
		Engine: actor.Config{CheckpointInterval: time.Second}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- node.Run(ctx) }()
	stop := func() error {
		cancel()
		return <-done
	}
	select {
	case <-node.Ready():
	case err := <-done:
		return cost{}, nil, err
	}
	base := "http://" + node.Addr()
	if profile != "" {
		stopProfile, err := startProfile(profile)
		if err != nil {
			return cost{}, nil, errors.Join(err, stop())
		}
		defer stopProfile()
	}
	c, reqLat, err := pushAll(base+"/v1/streams/keys/events", bodies)
	if err != nil {
		return cost{}, nil, errors.Join(err, stop())
	}
	total := int64(0)
	for _, v := range want {
		total += v
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		n, _, err := applied(base)
		if err == nil && n >= total {
			break
		}
		if time.Now().After(deadline) {
			return cost{}, nil, errors.Join(fmt.Errorf("the flow applied %d of %d pushed events (%v)", n, total, err), stop())
		}
	}
	got, err := viewCounts(base)
	if err == nil {
		err = same(want, got)
	}
	if err != nil {
		return cost{}, nil, errors.Join(fmt.Errorf("the counts of the pushed events: %w", err), stop())
	}
	return c, slices.Clip(reqLat), stop()
}

// quietPebble drops pebble's logs (the baseline's database).
type quietPebble struct{}

func (quietPebble) Infof(string, ...any)  {}
func (quietPebble) Errorf(string, ...any) {}
func (quietPebble) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}
