package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tessera-streams/tessera/actor"
	"github.com/tessera-streams/tessera/splice"
)

// watcherCount is the watchers row's number of server-sent-event clients.
const watcherCount = 1000

// watchers connects 1,000 watchers of one view (the keyed count's top 10,
// every 250 ms) over HTTP on 127.0.0.1 once the keyed count has applied its
// input (a finished view, as dashboards watch one), and measures point
// lookups over HTTP meanwhile, and before the watchers connect: the
// watchers share one evaluation and one encoded diff per interval
// (splice's watch hub), so the lookups should barely see them. (Under
// full-speed ingest, query-latency's case, an HTTP round trip itself
// waits for the scheduler: see the README.)
func watchers(in *input, p params, w io.Writer) (Result, error) {
	dur := 5 * time.Second
	if p.quick {
		dur = 2 * time.Second
	}
	var point, alone []float64
	var events, connected atomic.Int64
	var runErr error
	r, err := runEngine(in, p, engineRun{fragments: p.fragments, repeat: 1, checkpoint: time.Second, during: func(e *actor.Engine) {
		<-e.Drained()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			runErr = err
			return
		}
		done := make(chan struct{})
		mux := http.NewServeMux()
		splice.Register(mux, e, splice.HandlerConfig{Done: done})
		srv := &http.Server{Handler: mux}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); srv.Serve(ln) }()
		base := "http://" + ln.Addr().String()
		ctx, cancel := context.WithCancel(context.Background())
		tr := &http.Transport{MaxIdleConnsPerHost: 4}
		client := &http.Client{Transport: tr}
		lookups := func(d time.Duration) ([]float64, error) {
			var ms []float64
			end := time.Now().Add(d)
			for i := 0; time.Now().Before(end); i++ {
				start := time.Now()
				resp, err := client.Get(base + "/v1/views/counts/keys/" + in.keys[i%len(in.keys)])
				if err != nil {
					return ms, err
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotFound {
					return ms, fmt.Errorf("point lookup: %s", resp.Status)
				}
				ms = append(ms, float64(time.Since(start).Microseconds())/1000)
				time.Sleep(time.Millisecond)
			}
			return ms, nil
		}
		// The same lookups without watchers first: the baseline of this
		// run, on this machine as loaded as it is now.
		alone, runErr = lookups(dur)
		for range watcherCount {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/views/counts/watch?top=10&interval=250ms", nil)
				resp, err := client.Do(req)
				if err != nil {
					return
				}
				defer resp.Body.Close()
				connected.Add(1)
				sc := bufio.NewScanner(resp.Body)
				for sc.Scan() {
					if len(sc.Bytes()) > 6 && string(sc.Bytes()[:6]) == "event:" {
						events.Add(1)
					}
				}
			}()
		}
		deadline := time.Now().Add(30 * time.Second)
		for connected.Load() < watcherCount && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		switch {
		case runErr != nil:
		case connected.Load() < watcherCount:
			runErr = fmt.Errorf("%d of %d watchers connected in 30s", connected.Load(), watcherCount)
		default:
			point, runErr = lookups(dur)
		}
		cancel()
		close(done)
		srv.Close()
		wg.Wait()
		tr.CloseIdleConnections()
	}})
	if err == nil {
		err = runErr
	}
	if err != nil {
		return Result{}, err
	}
	if len(point) == 0 || len(alone) == 0 {
		return Result{}, fmt.Errorf("no query answered")
	}
	p50, p99 := percentile(point, 0.5), percentile(point, 0.99)
	b50, b99 := percentile(alone, 0.5), percentile(alone, 0.99)
	fmt.Fprintf(w, "  %d watchers got %d events; %d point lookups over HTTP: p50 %.2f ms, p99 %.2f ms (without watchers: p50 %.2f ms, p99 %.2f ms)\n",
		watcherCount, events.Load(), len(point), p50, p99, b50, b99)
	return Result{Name: "watchers", Goal: atMost("p99_ms", 5), Events: len(in.idx), P50Ms: p50, P99Ms: p99, PeakRSSMB: r.peakRSS,
		Note: fmt.Sprintf("point lookups over HTTP with %d SSE watchers of a finished view's top 10 (every 250 ms) connected (without watchers, in the same run: p50 %.2f ms, p99 %.2f ms); the watchers received %d events",
			watcherCount, b50, b99, events.Load())}, nil
}
