package splice

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// movingGatherer answers an aggregate view "total" with the answers or the
// error it is given.
type movingGatherer struct {
	answers []Answer
	err     error
}

func (g *movingGatherer) Views() []Spec {
	return []Spec{{Name: "total", Kind: Aggregate, Algebra: "sum", Splice: func(ps []any) any {
		var n int64
		for _, p := range ps {
			n += p.(int64)
		}
		return n
	}}}
}

func (g *movingGatherer) Gather(context.Context, Request, int) ([]Answer, error) {
	return g.answers, g.err
}
func (g *movingGatherer) Freshness() []Freshness { return nil }

func serve(t *testing.T, g Gatherer) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	Register(mux, g, HandlerConfig{})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// Fragments that are moving answer 503 with Retry-After and a JSON body
// that names them.
func TestUnavailableIs503WithRetryAfter(t *testing.T) {
	g := &movingGatherer{err: &UnavailableError{Fragments: []int{3, 7}, Reason: "node n2 is unreachable", RetryAfter: 1500 * time.Millisecond}}
	srv := serve(t, g)
	resp, err := http.Get(srv.URL + "/v1/views/total")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Error      string
		Fragments  []int
		RetryAfter int `json:"retry_after_sec"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "2" || body.RetryAfter != 2 ||
		len(body.Fragments) != 2 || body.Fragments[1] != 7 || !strings.Contains(body.Error, "n2 is unreachable") {
		t.Fatalf("%d Retry-After %q %+v", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
}

// An answer that a standby's copy gave in part says it is stale, and is
// not complete.
func TestStaleAnswerSaysSo(t *testing.T) {
	g := &movingGatherer{answers: []Answer{
		{Partial: int64(2), Freshness: Freshness{Fragment: 0, Complete: true}},
		{Partial: int64(3), Freshness: Freshness{Fragment: 1, Stale: true}},
	}}
	srv := serve(t, g)
	resp, err := http.Get(srv.URL + "/v1/views/total")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var a struct {
		Value    int64
		Stale    bool
		Complete bool
	}
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || a.Value != 5 || !a.Stale || a.Complete {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	g.answers[1].Freshness.Stale = false
	resp2, err := http.Get(srv.URL + "/v1/views/total")
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	b, _ = io.ReadAll(resp2.Body)
	if strings.Contains(string(b), "stale") {
		t.Fatalf("a fresh answer mentions staleness: %s", b)
	}
}
