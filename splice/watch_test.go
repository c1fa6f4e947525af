package splice

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// countingGatherer answers an aggregate view "total" whose value is the
// number of Gather calls so far: every evaluation changes it.
type countingGatherer struct {
	movingGatherer
	gathers atomic.Int64
}

func (g *countingGatherer) Gather(context.Context, Request, int) ([]Answer, error) {
	n := g.gathers.Add(1)
	return []Answer{{Partial: n}}, nil
}

// Many watchers of one view share one evaluation per interval: the
// evaluations while they watch are about as many as the updates one
// watcher receives, not that times the watchers.
func TestWatchersShareEvaluations(t *testing.T) {
	const watchers = 50
	g := &countingGatherer{}
	srv := serve(t, g)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var subscribed sync.WaitGroup
	subscribed.Add(watchers)
	values := make([]atomic.Int64, watchers) // value events each watcher received
	enough := make(chan struct{})
	var once sync.Once
	for i := range watchers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/views/total/watch?interval=250ms", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				subscribed.Done()
				return
			}
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			first := true
			for sc.Scan() {
				switch line := sc.Text(); {
				case line == "event: snapshot" && first:
					first = false
					subscribed.Done()
				case line == "event: value":
					if values[i].Add(1) == 4 {
						once.Do(func() { close(enough) })
					}
				case strings.HasPrefix(line, "event: ") && line != "event: snapshot":
					t.Errorf("unexpected %s", line)
				}
			}
		}()
	}
	subscribed.Wait()
	before := g.gathers.Load()
	for i := range values {
		values[i].Store(0)
	}
	<-enough
	during := g.gathers.Load() - before
	most := int64(0)
	for i := range values {
		most = max(most, values[i].Load())
	}
	cancel()
	wg.Wait()
	http.DefaultClient.CloseIdleConnections()
	t.Logf("%d watchers: %d evaluations while the busiest received %d updates", watchers, during, most)
	if during > 2*most+2 {
		t.Fatalf("%d evaluations for %d updates per watcher: watchers do not share them", during, most)
	}
	if before > watchers/2 {
		t.Fatalf("%d evaluations to subscribe %d watchers", before, watchers)
	}
}

func TestWatchIntervalBelowMinimumIs400(t *testing.T) {
	srv := serve(t, &countingGatherer{})
	for _, iv := range []string{"50ms", "249ms", "2m"} {
		resp, err := http.Get(srv.URL + "/v1/views/total/watch?interval=" + iv)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("interval %s: %d", iv, resp.StatusCode)
		}
	}
}
