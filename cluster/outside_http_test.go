package cluster

// Outside-in probes of the HTTP query API: what a client that knows only
// the README sees. Every bad request must get a JSON error with the right
// status; every answer must agree with a model of the flow's input.

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/flows"
)

type outsideResp struct {
	code  int
	ctype string
	allow string
	body  []byte
}

func outsideDo(t *testing.T, c *http.Client, method, u string) outsideResp {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return outsideResp{resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Allow"), b}
}

// outsideErr checks that r is a JSON error with status code whose message
// contains msg.
func outsideErr(t *testing.T, what string, r outsideResp, code int, msg string) {
	t.Helper()
	var e struct{ Error string }
	err := json.Unmarshal(r.body, &e)
	if r.code != code || err != nil || e.Error == "" || !strings.Contains(e.Error, msg) || r.ctype != "application/json" {
		t.Errorf("%s: %d %q %q; want %d, a JSON error with %q", what, r.code, r.ctype, r.body, code, msg)
	}
}

// outsideKeyPath escapes a key for /keys/{key}: a path segment "." or ".."
// is a dot segment, so dots are escaped too.
func outsideKeyPath(k string) string {
	return strings.ReplaceAll(url.PathEscape(k), ".", "%2E")
}

type outsideEntry struct {
	Key   string
	Value int64
}

type outsideEntries struct {
	Entries   []outsideEntry
	More      bool
	NextAfter *string `json:"next_after"`
	Complete  bool
}

func outsideList(t *testing.T, u string) outsideEntries {
	t.Helper()
	var es outsideEntries
	if code := get(t, u, &es); code != 200 {
		t.Fatalf("GET %s: %d", u, code)
	}
	return es
}

var outsideOddKeys = []string{"a b", "a/b", "a%b", "a%2Fb", "a+b", "a?b", "a#b", "a&b=c", "é", "日本", "🙂", `x"y`, `b\s`, "<t>&",
	"..", ".", "-", "~", "a;b", "\t", "K00", ""}

// A finished bounded input: the listing (every page size), every key's
// lookup, top-N for every N around the top sets' depth, prefixes and the
// aggregate agree with a count of the input.
func TestOutsideHTTPAnswersMatchModel(t *testing.T) {
	const events = 20_000
	src, _ := gen.New(gen.Config{Partitions: 2, Seed: 11, Events: events}, func(_ int, _ int64, r *gen.Rand) string {
		if r.Intn(10) == 0 {
			return outsideOddKeys[r.Intn(len(outsideOddKeys))]
		}
		return fmt.Sprintf("u%04d", r.Intn(1500))
	})
	r := start(t, Config{Flow: testFlow(src), Name: "n1"})
	waitDone(t, r)
	want := map[string]int64{}
	for p := range 2 {
		for o := range src.Limit(p) {
			want[src.Event(p, o)]++
		}
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range want {
			if !yield(k) {
				return
			}
		}
	})
	byScore := slices.Clone(keys)
	slices.SortFunc(byScore, func(a, b string) int {
		if c := cmp.Compare(want[b], want[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})

	var total struct{ Value int64 }
	if code := get(t, r.base+"/v1/views/total", &total); code != 200 || total.Value != events {
		t.Fatalf("total: %d %+v, want %d", code, total, events)
	}

	// Paging in key order, every page size, gives the model's keys in
	// byte order, each once, with its count.
	for _, limit := range []int{1, 7, 64, 1000, 100_000} {
		var got []outsideEntry
		after := ""
		for page := 0; ; page++ {
			u := fmt.Sprintf("%s/v1/views/counts?limit=%d", r.base, limit)
			if page > 0 {
				u += "&after=" + url.QueryEscape(after)
			}
			es := outsideList(t, u)
			if len(es.Entries) > limit || (es.More && len(es.Entries) != limit) {
				t.Fatalf("limit %d page %d: %d entries, more %v", limit, page, len(es.Entries), es.More)
			}
			got = append(got, es.Entries...)
			if !es.More {
				if es.NextAfter != nil {
					t.Fatalf("limit %d: next_after %q on the last page", limit, *es.NextAfter)
				}
				break
			}
			if es.NextAfter == nil || *es.NextAfter != es.Entries[len(es.Entries)-1].Key {
				t.Fatalf("limit %d page %d: next_after %v, last key %q", limit, page, es.NextAfter, es.Entries[len(es.Entries)-1].Key)
			}
			after = *es.NextAfter
			if page > len(keys) {
				t.Fatalf("limit %d: paging does not end", limit)
			}
		}
		if len(got) != len(keys) {
			t.Fatalf("limit %d: %d entries, want %d", limit, len(got), len(keys))
		}
		for i, e := range got {
			if e.Key != keys[i] || e.Value != want[e.Key] {
				t.Fatalf("limit %d: entry %d = %+v, want %q=%d", limit, i, e, keys[i], want[keys[i]])
			}
		}
	}

	// Every key's lookup, escaped as a path segment, gives its count.
	for _, k := range keys {
		var a struct {
			Key      string
			Value    int64
			Complete bool
		}
		u := r.base + "/v1/views/counts/keys/" + outsideKeyPath(k)
		if code := get(t, u, &a); code != 200 || a.Key != k || a.Value != want[k] || !a.Complete {
			t.Fatalf("key %q (%s): %d %+v, want %d", k, u, code, a, want[k])
		}
	}
	// Keys the input never had: 404 with a JSON error naming the key.
	c := &http.Client{}
	for _, k := range []string{"u9999", "A B", "é ", "日", "a%252Fb", "..."} {
		outsideErr(t, "absent "+k, outsideDo(t, c, "GET", r.base+"/v1/views/counts/keys/"+outsideKeyPath(k)), 404, "not found")
	}

	// top=N: the N best by count, ties by key, whether the fragments
	// answer from their top sets (N <= 64) or by a scan.
	for _, n := range []int{1, 2, 3, 5, 10, 16, 63, 64, 65, 100, 500, len(keys) - 1, len(keys), len(keys) + 10} {
		es := outsideList(t, fmt.Sprintf("%s/v1/views/counts?top=%d", r.base, n))
		w := byScore[:min(n, len(byScore))]
		if len(es.Entries) != len(w) || es.More {
			t.Fatalf("top %d: %d entries (more %v), want %d", n, len(es.Entries), es.More, len(w))
		}
		for i, e := range es.Entries {
			if e.Key != w[i] || e.Value != want[w[i]] {
				t.Fatalf("top %d: entry %d = %+v, want %q=%d", n, i, e, w[i], want[w[i]])
			}
		}
	}

	// Prefixes, raw bytes included: exactly the model's keys with it.
	for _, pre := range []string{"u", "u00", "u149", "a", "a%", "a%2", "é", "日本", "🙂", ".", "-", "x\"", "b\\", "<", "\t", "zzz", "U"} {
		var w []string
		for _, k := range keys {
			if strings.HasPrefix(k, pre) {
				w = append(w, k)
			}
		}
		es := outsideList(t, r.base+"/v1/views/counts?limit=100000&prefix="+url.QueryEscape(pre))
		if len(es.Entries) != len(w) {
			t.Fatalf("prefix %q: %d entries, want %d", pre, len(es.Entries), len(w))
		}
		for i, e := range es.Entries {
			if e.Key != w[i] || e.Value != want[e.Key] {
				t.Fatalf("prefix %q: entry %d = %+v, want %q=%d", pre, i, e, w[i], want[w[i]])
			}
		}
		// The top of a prefix is the top among its keys.
		es = outsideList(t, r.base+"/v1/views/counts?top=3&prefix="+url.QueryEscape(pre))
		var wt []string
		for _, k := range byScore {
			if strings.HasPrefix(k, pre) && len(wt) < 3 {
				wt = append(wt, k)
			}
		}
		if len(es.Entries) != len(wt) {
			t.Fatalf("top 3 of prefix %q: %+v, want %q", pre, es.Entries, wt)
		}
		for i, e := range es.Entries {
			if e.Key != wt[i] {
				t.Fatalf("top 3 of prefix %q: %+v, want %q", pre, es.Entries, wt)
			}
		}
	}

	// after= a key that is not in the view, and after the last one.
	es := outsideList(t, r.base+"/v1/views/counts?limit=2&after="+url.QueryEscape("u0000x"))
	i, _ := slices.BinarySearch(keys, "u0000x")
	if len(es.Entries) != 2 || es.Entries[0].Key != keys[i] || es.Entries[1].Key != keys[i+1] {
		t.Fatalf("after u0000x: %+v, want %q", es.Entries, keys[i:i+2])
	}
	es = outsideList(t, r.base+"/v1/views/counts?after="+url.QueryEscape(keys[len(keys)-1]))
	if len(es.Entries) != 0 || es.More {
		t.Fatalf("after the last key: %+v", es)
	}
	// A snapshot read agrees with the model too.
	es = outsideList(t, r.base+"/v1/views/counts?consistency=snapshot&limit=100000")
	if len(es.Entries) != len(keys) || !es.Complete {
		t.Fatalf("snapshot: %d entries (complete %v), want %d", len(es.Entries), es.Complete, len(keys))
	}
	for i, e := range es.Entries {
		if e.Key != keys[i] || e.Value != want[e.Key] {
			t.Fatalf("snapshot: entry %d = %+v, want %q=%d", i, e, keys[i], want[keys[i]])
		}
	}
}

// Malformed, huge, negative and non-numeric parameters, unknown views and
// keys: a JSON error with the right status, never a 200 or a 500.
func TestOutsideHTTPBadRequests(t *testing.T) {
	src, _ := gen.New(gen.Config{Partitions: 2, Seed: 3, Events: 2000}, func(_ int, _ int64, r *gen.Rand) string { return fmt.Sprintf("k%02d", r.Intn(30)) })
	r := start(t, Config{Flow: testFlow(src), Name: "n1"})
	waitDone(t, r)
	c := &http.Client{Timeout: 10 * time.Second}
	cases := []struct {
		path string
		code int
		msg  string
	}{
		{"/v1/views/nope", 404, `unknown view "nope"`},
		{"/v1/views/%E6%97%A5", 404, `unknown view "日"`},
		{"/v1/views/%2E%2E", 404, "unknown view"},
		{"/v1/views/nope/keys/k01", 404, "unknown view"},
		{"/v1/views/nope/watch", 404, "unknown view"},
		{"/v1/views/counts/keys/nope", 404, `key "nope"`},
		{"/v1/views/counts/keys/%FF%FE", 404, "not found"},
		{"/v1/views/counts/keys/k01?limit=1", 400, "takes no query parameters"},
		{"/v1/views/counts/keys/k01?consistency=strong", 400, "consistency must be"},
		{"/v1/views/total/keys/k01", 400, "aggregate"},
		{"/v1/views/counts?limit=-1", 400, "limit must be"},
		{"/v1/views/counts?limit=-0", 400, "limit must be"},
		{"/v1/views/counts?limit=1.5", 400, "limit must be"},
		{"/v1/views/counts?limit=1e3", 400, "limit must be"},
		{"/v1/views/counts?limit=0x10", 400, "limit must be"},
		{"/v1/views/counts?limit=99999999999999999999999", 400, "limit must be"},
		{"/v1/views/counts?limit=", 400, "limit must be"},
		{"/v1/views/counts?limit=%205", 400, "limit must be"},
		{"/v1/views/counts?limit=1&limit=2", 400, "given 2 times"},
		{"/v1/views/counts?top=0", 400, "top must be"},
		{"/v1/views/counts?top=100001", 400, "top must be"},
		{"/v1/views/counts?top=abc", 400, "top must be"},
		{"/v1/views/counts?top=", 400, "top must be"},
		{"/v1/views/counts?top=-5", 400, "top must be"},
		{"/v1/views/counts?top=1&after=k01", 400, "do not combine"},
		{"/v1/views/counts?after=a&after=b", 400, "given 2 times"},
		{"/v1/views/counts?prefix=a&prefix=b", 400, "given 2 times"},
		{"/v1/views/counts?Limit=3", 400, "unknown parameter"},
		{"/v1/views/counts?window=latest", 400, "unknown parameter"},
		{"/v1/views/counts?;", 400, "malformed"},
		{"/v1/views/counts?limit=3;after=k01", 400, "malformed"},
		{"/v1/views/counts?consistency=", 400, "consistency must be"},
		{"/v1/views/counts?timeout=0s", 400, "timeout must be"},
		{"/v1/views/counts?timeout=-1s", 400, "timeout must be"},
		{"/v1/views/counts?timeout=2m", 400, "timeout must be"},
		{"/v1/views/counts?timeout=abc", 400, "timeout must be"},
		{"/v1/views/counts?min_offsets=", 400, "min_offsets must be"},
		{"/v1/views/counts?min_offsets=gen/0:-1", 400, "min_offsets must be"},
		{"/v1/views/counts?min_offsets=gen/x:1", 400, "min_offsets must be"},
		{"/v1/views/counts?min_offsets=gen:1", 400, "min_offsets must be"},
		{"/v1/views/counts?min_offsets=gen/0:1,gen/0:2", 400, "twice"},
		{"/v1/views/counts?min_offsets=gen/7:1", 400, "does not read"},
		{"/v1/views/counts?min_offsets=other/0:1", 400, "does not read"},
		{"/v1/views/counts?min_offsets=gen/0:99999999999&timeout=50ms", 504, "timeout"},
		{"/v1/views/counts/keys/k01?min_offsets=gen/0:99999999999&timeout=50ms", 504, "timeout"},
		{"/v1/views/total?top=3", 400, "takes no query parameters"},
		{"/v1/views/total?consistency=snapshot&x=1", 400, "takes no query parameters"},
		{"/v1/views?limit=1", 400, "takes no parameters"},
		{"/v1/views/counts/watch?interval=0", 400, "interval"},
		{"/v1/views/counts/watch?interval=249ms", 400, "interval"},
		{"/v1/views/counts/watch?interval=61s", 400, "interval"},
		{"/v1/views/counts/watch?interval=-1s", 400, "interval"},
		{"/v1/views/counts/watch?interval=abc", 400, "interval"},
		{"/v1/views/counts/watch?interval=1s&limit=0", 400, "limit must be"},
		{"/v1/views/counts/watch?top=1&after=k01", 400, "do not combine"},
		{"/v1/views/counts/watch?consistency=snapshot", 400, "a watch takes no consistency"},
		{"/v1/views/counts/watch?timeout=1s", 400, "a watch takes no consistency"},
		{"/v1/views/counts/watch?min_offsets=gen/0:1", 400, "a watch takes no consistency"},
		{"/v1/views/counts/watch?bogus=1", 400, "unknown parameter"},
		{"/v1/views/total/watch?limit=1", 400, "takes no query parameters"},
		{"/v1/views/counts/keys/k01/watch", 404, "no route"},
		{"/v1/views/counts/keys", 404, "no route"},
		{"/v1/view/counts", 404, "no route"},
		{"/v1/cluster?scope=", 400, "scope"},
		{"/v1/cluster?scope=global", 400, "scope"},
		{"/v1/cluster?scope=LOCAL", 400, "scope"},
		{"/v1/cluster?scope=%ZZ", 400, "malformed"},
		{"/v1/cluster/history?scope=x", 400, "scope"},
		{"/v1/cluster/history?timeline=all", 400, "timeline"},
		{"/v1/cluster/watch?interval=1ns", 400, "interval"},
		{"/v1/cluster/watch?interval=abc", 400, "interval"},
		{"/v1/deadletters?scope=", 400, "scope"},
		{"/v1/deadletters?scope=all", 400, "scope"},
		{"/v1/deadletters?scope=Cluster", 400, "scope"},
		{"/v1/deadletters?limit=5", 400, "scope"},
		{"/v1/deadletters?scope=%ZZ", 400, "malformed"},
		{"/v1/alerts?limit=0", 400, "limit must be"},
		{"/v1/alerts?limit=10001", 400, "limit must be"},
		{"/v1/alerts?limit=x", 400, "limit must be"},
		{"/v1/alerts?x=1", 400, "unknown parameter"},
		{"/v1/alerts/watch?since=1", 400, "since must be"},
		{"/v1/alerts/watch?since=-1", 400, "since must be"},
	}
	for _, tc := range cases {
		outsideErr(t, tc.path, outsideDo(t, c, "GET", r.base+tc.path), tc.code, tc.msg)
	}
	// Good requests around the bounds still answer 200.
	for _, p := range []string{"/v1/views/counts?limit=10000000", "/v1/views/counts?limit=%2B3", "/v1/views/counts?top=100000",
		"/v1/views/counts?prefix=", "/v1/views/counts?min_offsets=gen/0:1000,gen/1:1000&timeout=2s", "/v1/views/counts?consistency=snapshot&top=2",
		"/v1/cluster?scope=local", "/v1/cluster?scope=cluster", "/v1/deadletters?scope=local", "/v1/deadletters?scope=cluster",
		"/v1/cluster/history?scope=local&timeline=only", "/v1/alerts?limit=10000", "/v1/views/total?consistency=snapshot"} {
		if res := outsideDo(t, c, "GET", r.base+p); res.code != 200 || !json.Valid(res.body) {
			t.Errorf("%s: %d %q", p, res.code, res.body)
		}
	}
}

// Wrong methods: 405 with Allow and a JSON error, on every route.
func TestOutsideHTTPWrongMethods(t *testing.T) {
	src, _ := gen.New(gen.Config{Partitions: 1, Seed: 3, Events: 100}, func(_ int, _ int64, r *gen.Rand) string { return fmt.Sprintf("k%02d", r.Intn(30)) })
	r := start(t, Config{Flow: testFlow(src), Name: "n1"})
	waitDone(t, r)
	c := &http.Client{Timeout: 10 * time.Second}
	gets := []string{"/v1/views", "/v1/views/counts", "/v1/views/nope", "/v1/views/counts/keys/k01", "/v1/views/counts/watch",
		"/v1/cluster", "/v1/cluster/history", "/v1/cluster/watch", "/v1/deadletters", "/v1/alerts", "/v1/alerts/watch"}
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH", "OPTIONS"} {
		for _, p := range gets {
			res := outsideDo(t, c, m, r.base+p)
			outsideErr(t, m+" "+p, res, 405, "only GET")
			if res.allow != "GET" {
				t.Errorf("%s %s: Allow %q", m, p, res.allow)
			}
		}
		if m != "POST" {
			for _, p := range []string{"/v1/checkpoint", "/v1/streams/nope/events"} {
				res := outsideDo(t, c, m, r.base+p)
				outsideErr(t, m+" "+p, res, 405, "only POST")
			}
		}
	}
	outsideErr(t, "POST unknown stream", outsideDo(t, c, "POST", r.base+"/v1/streams/nope/events"), 404, `no stream "nope"`)
	outsideErr(t, "GET unknown stream", outsideDo(t, c, "GET", r.base+"/v1/streams/nope/events"), 405, "only POST")
}

// A HEAD of a watch has no body to stream: it must end, not hold the
// connection forever (a client that reuses the connection hangs).
func TestOutsideHTTPHeadOfWatchEnds(t *testing.T) {
	src, _ := gen.New(gen.Config{Partitions: 1, Seed: 3, Events: 100}, func(_ int, _ int64, r *gen.Rand) string { return fmt.Sprintf("k%02d", r.Intn(30)) })
	r := start(t, Config{Flow: testFlow(src), Name: "n1"})
	waitDone(t, r)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	for _, p := range []string{"/v1/views/counts/watch", "/v1/views/total/watch", "/v1/cluster/watch", "/v1/alerts/watch"} {
		req, _ := http.NewRequest("HEAD", r.base+p, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("HEAD %s: %v", p, err)
		}
		resp.Body.Close()
		// The same client, likely on the same connection.
		req, _ = http.NewRequest("GET", r.base+"/v1/views", nil)
		resp, err = c.Do(req)
		if err != nil {
			t.Errorf("GET /v1/views after HEAD %s: %v", p, err)
			tr.CloseIdleConnections()
			continue
		}
		resp.Body.Close()
	}
}

// Int keys: keys and after= that are not int64s are 400s; a lookup
// answers the key as the view prints it.
func TestOutsideHTTPIntKeys(t *testing.T) {
	src, _ := gen.New(gen.Config{Partitions: 1, Seed: 1, Events: 1000}, func(_ int, off int64, _ *gen.Rand) int64 { return off%25 - 5 })
	f := flows.New("ints", flows.WithFragments(4))
	flows.Count(flows.KeyBy(flows.From(f, "gen", src), flows.Identity[int64])).View("n")
	r := start(t, Config{Flow: f})
	waitDone(t, r)
	c := &http.Client{Timeout: 10 * time.Second}
	for _, k := range []string{"", "abc", "1.0", "1e3", "0x10", "99999999999999999999", "-99999999999999999999", "%20", "1%00", "%E2%88%925"} {
		outsideErr(t, "key "+k, outsideDo(t, c, "GET", r.base+"/v1/views/n/keys/"+k), 400, "")
		outsideErr(t, "after "+k, outsideDo(t, c, "GET", r.base+"/v1/views/n?after="+k), 400, "")
	}
	// Listing: numeric order, negatives first.
	es := outsideList(t, r.base+"/v1/views/n?limit=100")
	if len(es.Entries) != 25 || es.Entries[0].Key != "-5" || es.Entries[5].Key != "0" || es.Entries[24].Key != "19" {
		t.Fatalf("int listing: %+v", es.Entries)
	}
	for _, e := range es.Entries {
		if e.Value != 40 {
			t.Fatalf("int listing: %+v, want 40 each", e)
		}
	}
	es = outsideList(t, r.base+"/v1/views/n?limit=2&after=-1")
	if len(es.Entries) != 2 || es.Entries[0].Key != "0" || es.Entries[1].Key != "1" {
		t.Fatalf("after -1: %+v", es.Entries)
	}
	es = outsideList(t, r.base+"/v1/views/n?limit=100&prefix=1")
	if len(es.Entries) != 11 {
		t.Fatalf("prefix 1: %+v", es.Entries)
	}
	es = outsideList(t, r.base+"/v1/views/n?after=9223372036854775807")
	if len(es.Entries) != 0 {
		t.Fatalf("after max int64: %+v", es.Entries)
	}
	outsideErr(t, "absent int key", outsideDo(t, c, "GET", r.base+"/v1/views/n/keys/9223372036854775807"), 404, "not found")
	// A key given in another form of the same int64 names the same key;
	// the answer names it as the listing prints it.
	for _, k := range []string{"7", "07", "+7", "%2B7"} {
		var a struct {
			Key   string
			Value int64
		}
		if code := get(t, r.base+"/v1/views/n/keys/"+k, &a); code != 200 || a.Value != 40 || a.Key != "7" {
			t.Errorf("key %s: %d %+v, want key \"7\" = 40", k, code, a)
		}
	}
}

// A parameter given twice is a 400 on every route ("given 2 times" on the
// views), not one of the two picked silently; so is an empty value (as
// limit= and after= are on the views), not taken for the default.
func TestOutsideHTTPDuplicateAndEmptyParams(t *testing.T) {
	src, _ := gen.New(gen.Config{Partitions: 1, Seed: 3, Events: 100}, func(_ int, _ int64, r *gen.Rand) string { return fmt.Sprintf("k%02d", r.Intn(30)) })
	r := start(t, Config{Flow: testFlow(src), Name: "n1"})
	waitDone(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, p := range []string{"/v1/views/counts/watch?interval=1s&interval=1ns", "/v1/views/total/watch?interval=2s&interval=1m",
		"/v1/cluster?scope=local&scope=cluster", "/v1/deadletters?scope=local&scope=cluster", "/v1/cluster/history?scope=local&scope=bogus",
		"/v1/alerts?limit=1&limit=0", "/v1/alerts/watch?since=0&since=99",
		"/v1/views/counts/watch?interval=", "/v1/alerts?limit=", "/v1/alerts/watch?since="} {
		req, _ := http.NewRequestWithContext(ctx, "GET", r.base+p, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		// A stream answered 200 is read no further.
		var b []byte
		if resp.Header.Get("Content-Type") != "text/event-stream" {
			b, _ = io.ReadAll(resp.Body)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("%s: %d %q, want 400", p, resp.StatusCode, b)
		}
	}
}

// Watches whose clients leave (after the snapshot, or before it) leave
// nothing running: the goroutines come back to what they were, and a new
// watch still streams.
func TestOutsideHTTPWatchClientsLeave(t *testing.T) {
	src, _ := gen.New(gen.Config{Partitions: 1, Seed: 2, Rate: 2000}, func(_ int, _ int64, r *gen.Rand) string { return fmt.Sprintf("k%02d", r.Intn(30)) })
	r := start(t, Config{Flow: testFlow(src), Name: "n1"})
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	// readEvent reads up to the end of the first event.
	open := func(ctx context.Context, p string) (*http.Response, *bufio.Reader) {
		req, _ := http.NewRequestWithContext(ctx, "GET", r.base+p, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("%s: %d %s", p, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		return resp, bufio.NewReader(resp.Body)
	}
	firstEvent := func(p string, br *bufio.Reader) string {
		var ev string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			if s, ok := strings.CutPrefix(line, "event: "); ok {
				ev = strings.TrimSpace(s)
			}
			if line == "\n" && ev != "" {
				return ev
			}
		}
	}
	// Warm up: one watch of each kind, so that lazily started goroutines
	// are counted in the baseline.
	paths := []string{"/v1/views/counts/watch?interval=250ms", "/v1/views/total/watch?interval=250ms", "/v1/views/counts/watch?interval=250ms&top=3&prefix=k1"}
	for _, p := range paths {
		ctx, cancel := context.WithCancel(context.Background())
		resp, br := open(ctx, p)
		if ev := firstEvent(p, br); ev != "snapshot" {
			t.Fatalf("%s: first event %q", p, ev)
		}
		cancel()
		resp.Body.Close()
	}
	tr.CloseIdleConnections()
	settle := func(limit int) int {
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= limit || time.Now().After(deadline) {
				return n
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// The baseline: the count once it has not fallen for 300ms (the
	// warm-up's goroutines ended), within a deadline.
	base := runtime.NumGoroutine()
	for deadline, low := time.Now().Add(5*time.Second), time.Now(); time.Since(low) < 300*time.Millisecond && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		if n := runtime.NumGoroutine(); n < base {
			base, low = n, time.Now()
		}
	}
	for range 3 {
		ctxs := []context.CancelFunc{}
		var resps []*http.Response
		for _, p := range paths {
			for range 4 {
				ctx, cancel := context.WithCancel(context.Background())
				resp, br := open(ctx, p)
				if ev := firstEvent(p, br); ev != "snapshot" {
					t.Fatalf("%s: first event %q", p, ev)
				}
				ctxs = append(ctxs, cancel)
				resps = append(resps, resp)
			}
		}
		// Half leave by cancelling, half by closing the body.
		for i, cancel := range ctxs {
			if i%2 == 0 {
				cancel()
			} else {
				resps[i].Body.Close()
			}
		}
		for i := range ctxs {
			ctxs[i]()
			resps[i].Body.Close()
		}
		tr.CloseIdleConnections()
	}
	// Clients that leave before the answer.
	for range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, "GET", r.base+paths[0], nil)
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
		}
		cancel()
	}
	tr.CloseIdleConnections()
	if n := settle(base + 3); n > base+3 {
		buf := make([]byte, 1<<20)
		t.Fatalf("goroutines: %d after the clients left, %d before\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
	// The node still streams changes to a new watcher.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, br := open(ctx, paths[1])
	defer resp.Body.Close()
	if ev := firstEvent(paths[1], br); ev != "snapshot" {
		t.Fatalf("first event %q", ev)
	}
	for {
		ev := firstEvent(paths[1], br)
		if ev == "value" {
			break
		}
		if ev != "unavailable" {
			t.Fatalf("event %q", ev)
		}
	}
}
