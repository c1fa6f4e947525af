package cluster

// Malformed requests to one real node whose flow has every kind of view
// and an HTTP ingest stream: each gets a JSON error with the right status
// (never a 500, a redirect or a plain-text page), appends nothing, and
// leaves the node answering.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/connectors/ingest"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/splice"
)

type badClick struct {
	User string    `json:"user"`
	At   time.Time `json:"at"`
}

// badFlow counts clicks by user ("counts", keyed), in all ("total",
// aggregate), by user and hour ("hourly", windowed keyed) and the users
// of each hour ("visitors", windowed, with an alert).
func badFlow(src flows.Source[badClick]) *flows.Flow {
	f := flows.New("bad", flows.WithFragments(4))
	clicks := flows.From(f, "clicks", src, flows.WithEventTime(func(c badClick) time.Time { return c.At }, time.Minute))
	byUser := flows.KeyBy(clicks, func(c badClick) string { return c.User })
	flows.Count(byUser).View("counts")
	flows.AggregateView(byUser.Values(), "total", splice.Count[badClick](), func(c badClick) badClick { return c })
	hourly := flows.WindowAggregate(byUser, flows.Tumbling(time.Hour), func() int64 { return 0 }, func(n int64, _ badClick) int64 { return n + 1 }).
		KeyedView("hourly", 24*time.Hour)
	visitors := flows.WindowView(hourly, "visitors", splice.Count[struct{}](), func(string, int64) struct{} { return struct{}{} }, 24*time.Hour)
	flows.Alert(visitors, "crowded", func(prev, cur int64) bool { return prev <= 6 && cur > 6 })
	return f
}

// badCase is a request and the error it must get.
type badCase struct {
	method, path string
	code         int
	msg          string // in the error
	ct, body     string // a POST's
	key          string // Idempotency-Key
}

type badAnswer struct {
	code  int
	ctype string
	body  []byte
}

// badDo sends c, following no redirect; a path that does not start with
// "/" (*, an authority) is written as it is on a connection of its own.
func badDo(t *testing.T, hc *http.Client, base string, c badCase) badAnswer {
	t.Helper()
	if !strings.HasPrefix(c.path, "/") {
		conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: tessera\r\nConnection: close\r\n\r\n", c.method, c.path)
		resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: c.method})
		if err != nil {
			t.Fatalf("%s %s: %v", c.method, c.path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return badAnswer{resp.StatusCode, resp.Header.Get("Content-Type"), b}
	}
	req, err := http.NewRequest(c.method, base+c.path, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	if c.ct != "" {
		req.Header.Set("Content-Type", c.ct)
	}
	if c.key != "" {
		req.Header.Set("Idempotency-Key", c.key)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %.100s: %v", c.method, c.path, err)
	}
	defer resp.Body.Close()
	a := badAnswer{code: resp.StatusCode, ctype: resp.Header.Get("Content-Type")}
	if a.ctype != "text/event-stream" { // a stream answered is read no further
		a.body, _ = io.ReadAll(resp.Body)
	}
	return a
}

func TestBadRequestsGetJSONErrors(t *testing.T) {
	l, err := ingest.Open(t.TempDir(), ingest.Options{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() }) // after the node stops
	s, err := ingest.NewStream(l, ingest.Config[badClick]{Name: "clicks", Partitions: 1, MaxBody: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, Config{Flow: badFlow(s), Name: "n1", DataDir: t.TempDir(), Streams: []Stream{s}})
	hc := &http.Client{Timeout: 20 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	// 300 clicks of u0..u6 from 06:00, one a minute: the hours 06:00 to
	// 09:00 are complete (the watermark is at 10:58).
	t0 := time.Date(2026, 11, 2, 6, 0, 0, 0, time.UTC)
	var body strings.Builder
	for i := range 300 {
		fmt.Fprintf(&body, `{"user":"u%d","at":%q}`+"\n", i%7, t0.Add(time.Duration(i)*time.Minute).Format(time.RFC3339))
	}
	push := badDo(t, hc, r.base, badCase{method: "POST", path: "/v1/streams/clicks/events", ct: "application/x-ndjson", body: body.String()})
	var pushed struct {
		MinOffsets string `json:"min_offsets"`
	}
	if err := json.Unmarshal(push.body, &pushed); push.code != 200 || err != nil || pushed.MinOffsets != "clicks/0:300" {
		t.Fatalf("push: %d %s", push.code, push.body)
	}
	// A good request: the node answers, and has all 300 clicks, no more.
	good := func(after string) {
		t.Helper()
		a := badDo(t, hc, r.base, badCase{method: "GET", path: "/v1/views/total?min_offsets=clicks/0:300&timeout=30s"})
		var total struct{ Value int64 }
		if err := json.Unmarshal(a.body, &total); a.code != 200 || err != nil || total.Value != 300 {
			t.Fatalf("after %s: the total is %d %s, want 300", after, a.code, a.body)
		}
	}
	good("the push")

	const (
		minTime = "1677-09-21T00:12:43.145224192Z" // the event times Unix nanoseconds hold
		maxTime = "2262-04-11T23:47:16.854775807Z"
		nd      = "application/x-ndjson"
		click   = `{"user":"u1","at":"2026-11-02T11:00:00Z"}` + "\n"
		far     = "min_offsets=clicks/0:1000000&timeout=50ms"
	)
	big := strings.Repeat("k", 1<<20) // a key of 1 MiB
	cases := []badCase{
		// The list of views.
		{method: "GET", path: "/v1/views?limit=1", code: 400, msg: "takes no parameters"},
		{method: "GET", path: "/v1/views?%ZZ", code: 400, msg: "takes no parameters"},

		// A keyed view: numbers, repeats, combinations, bytes, reads.
		{method: "GET", path: "/v1/views/counts?limit=-1", code: 400, msg: "limit must be an integer in [1, 10000000]"},
		{method: "GET", path: "/v1/views/counts?limit=0", code: 400, msg: "limit must be"},
		{method: "GET", path: "/v1/views/counts?limit=1e99", code: 400, msg: "limit must be"},
		{method: "GET", path: "/v1/views/counts?limit=abc", code: 400, msg: "limit must be"},
		{method: "GET", path: "/v1/views/counts?limit=10000001", code: 400, msg: "limit must be"},
		{method: "GET", path: "/v1/views/counts?limit=", code: 400, msg: "limit must be"},
		{method: "GET", path: "/v1/views/counts?limit=1&limit=2", code: 400, msg: `parameter "limit" given 2 times`},
		{method: "GET", path: "/v1/views/counts?top=0", code: 400, msg: "top must be an integer in [1, 100000]"},
		{method: "GET", path: "/v1/views/counts?top=1e99", code: 400, msg: "top must be"},
		{method: "GET", path: "/v1/views/counts?top=100001", code: 400, msg: "top must be"},
		{method: "GET", path: "/v1/views/counts?top=-3", code: 400, msg: "top must be"},
		{method: "GET", path: "/v1/views/counts?top=3&after=u1", code: 400, msg: "top and after do not combine"},
		{method: "GET", path: "/v1/views/counts?top=3&after=", code: 400, msg: "top and after do not combine"},
		{method: "GET", path: "/v1/views/counts?top=3&after_base64=dTE%3D", code: 400, msg: "top and after do not combine"},
		{method: "GET", path: "/v1/views/counts?after=u1&after_base64=dTE%3D", code: 400, msg: "after and after_base64 do not combine"},
		{method: "GET", path: "/v1/views/counts?prefix=u&prefix_base64=dQ%3D%3D", code: 400, msg: "prefix and prefix_base64 do not combine"},
		{method: "GET", path: "/v1/views/counts?after_base64=***", code: 400, msg: "after_base64 must be a key's bytes in standard, padded base64"},
		{method: "GET", path: "/v1/views/counts?after_base64=/w+=", code: 400, msg: "escape it as %2B"},
		{method: "GET", path: "/v1/views/counts?prefix_base64=%3D%3D", code: 400, msg: "prefix_base64 must be"},
		{method: "GET", path: "/v1/views/counts?limt=3", code: 400, msg: `unknown parameter "limt"`},
		{method: "GET", path: "/v1/views/counts?=x", code: 400, msg: `unknown parameter ""`},
		{method: "GET", path: "/v1/views/counts?window=latest", code: 400, msg: `unknown parameter "window"`},
		{method: "GET", path: "/v1/views/counts?from=2026-11-02T06:00:00Z", code: 400, msg: `unknown parameter "from"`},
		{method: "GET", path: "/v1/views/counts?;", code: 400, msg: "malformed query string"},
		{method: "GET", path: "/v1/views/counts?limit=3;after=u1", code: 400, msg: "malformed query string"},
		{method: "GET", path: "/v1/views/counts?after=%ZZ", code: 400, msg: "malformed query string"},
		{method: "GET", path: "/v1/views/counts?consistency=bogus", code: 400, msg: "consistency must be latest or snapshot"},
		{method: "GET", path: "/v1/views/counts?consistency=", code: 400, msg: "consistency must be"},
		{method: "GET", path: "/v1/views/counts?consistency=snapshot&consistency=latest", code: 400, msg: "given 2 times"},
		{method: "GET", path: "/v1/views/counts?timeout=bogus", code: 400, msg: "timeout must be a duration in (0, 1m0s]"},
		{method: "GET", path: "/v1/views/counts?timeout=-1s", code: 400, msg: "timeout must be"},
		{method: "GET", path: "/v1/views/counts?timeout=0s", code: 400, msg: "timeout must be"},
		{method: "GET", path: "/v1/views/counts?timeout=61s", code: 400, msg: "timeout must be"},
		{method: "GET", path: "/v1/views/counts?timeout=1e99h", code: 400, msg: "timeout must be"},
		{method: "GET", path: "/v1/views/counts?min_offsets=clicks0:1", code: 400, msg: "min_offsets must be source/partition:offset pairs"},
		{method: "GET", path: "/v1/views/counts?min_offsets=clicks/0", code: 400, msg: "min_offsets must be"},
		{method: "GET", path: "/v1/views/counts?min_offsets=", code: 400, msg: "min_offsets must be"},
		{method: "GET", path: "/v1/views/counts?min_offsets=clicks/0:1,", code: 400, msg: "min_offsets must be"},
		{method: "GET", path: "/v1/views/counts?min_offsets=clicks/0:-5", code: 400, msg: "min_offsets must be"},
		{method: "GET", path: "/v1/views/counts?min_offsets=clicks/0:99999999999999999999", code: 400, msg: "min_offsets must be"},
		{method: "GET", path: "/v1/views/counts?min_offsets=clicks/99999999999999999999:1", code: 400, msg: "min_offsets must be"},
		{method: "GET", path: "/v1/views/counts?min_offsets=clicks/x:1", code: 400, msg: "min_offsets must be"},
		{method: "GET", path: "/v1/views/counts?min_offsets=clicks/0:1,clicks/0:2", code: 400, msg: "names clicks/0 twice"},
		{method: "GET", path: "/v1/views/counts?min_offsets=clicks/5:1", code: 400, msg: "names clicks/5, which the flow does not read (it reads clicks/0)"},
		{method: "GET", path: "/v1/views/counts?min_offsets=other/0:1", code: 400, msg: "does not read"},
		{method: "GET", path: "/v1/views/counts?" + far, code: 504, msg: "applied clicks/0 up to 300, not yet to 1000000"},
		{method: "GET", path: "/v1/views/counts?consistency=snapshot&" + far, code: 504, msg: "the input read so far is clicks/0 up to 300"},
		{method: "GET", path: "/v1/views/counts?timeout=1ns", code: 504, msg: "timeout of 1ns"},

		// A keyed view's keys: odd escapes, a key of 1 MiB, parameters.
		{method: "GET", path: "/v1/views/counts/keys/nope", code: 404, msg: `key "nope" in view "counts"`},
		{method: "GET", path: "/v1/views/counts/keys/%00", code: 404, msg: `key "\x00"`},
		{method: "GET", path: "/v1/views/counts/keys/%2F", code: 404, msg: `key "/"`},
		{method: "GET", path: "/v1/views/counts/keys/%2F..%2F..%2Fetc%2Fpasswd", code: 404, msg: `key "/../../etc/passwd"`},
		{method: "GET", path: "/v1/views/counts/keys/%2E%2E", code: 404, msg: `key ".."`},
		{method: "GET", path: "/v1/views/counts/keys/%FF%FE", code: 404, msg: "not found"},
		{method: "GET", path: "/v1/views/counts/keys/" + big, code: 404, msg: "not found"},
		{method: "GET", path: "/v1/views/counts/keys/u1?limit=1", code: 400, msg: "a key lookup takes no query parameters but consistency, min_offsets and timeout"},
		{method: "GET", path: "/v1/views/counts/keys/u1?window=latest", code: 400, msg: "a key lookup takes no query parameters"},
		{method: "GET", path: "/v1/views/counts/keys/u1?consistency=strong", code: 400, msg: "consistency must be"},
		{method: "GET", path: "/v1/views/counts/keys/u1?timeout=-1s", code: 400, msg: "timeout must be"},
		{method: "GET", path: "/v1/views/counts/keys/u1?min_offsets=clicks/9:1", code: 400, msg: "does not read"},
		{method: "GET", path: "/v1/views/counts/keys/u1?" + far, code: 504, msg: "not yet to 1000000"},
		{method: "GET", path: "/v1/views/counts/keys/u1?a=%ZZ", code: 400, msg: "malformed"},
		{method: "GET", path: "/v1/views/counts/keys?key_base64=***", code: 400, msg: "key_base64 must be"},
		{method: "GET", path: "/v1/views/counts/keys?key_base64=dTE%3D&key_base64=dTI%3D", code: 400, msg: "given 2 times"},
		{method: "GET", path: "/v1/views/counts/keys?key_base64=dTE%3D&limit=1", code: 400, msg: "takes no query parameters"},
		{method: "GET", path: "/v1/views/counts/keys/u1?key_base64=dTE%3D", code: 400, msg: "takes no query parameters"},
		{method: "GET", path: "/v1/views/counts/keys?key_base64=/w%3D%3D", code: 404, msg: "not found"},
		{method: "GET", path: "/v1/views/counts/keys", code: 404, msg: "no route"},
		{method: "GET", path: "/v1/views/counts/keys?limit=3", code: 404, msg: "no route"},
		{method: "GET", path: "/v1/views/counts/keys/u1/more", code: 404, msg: "no route"},
		{method: "GET", path: "/v1/views/counts/keys/u1/watch", code: 404, msg: "no route"},

		// An aggregate view.
		{method: "GET", path: "/v1/views/total?limit=3", code: 400, msg: `view "total" is an aggregate: it takes no query parameters but consistency, min_offsets and timeout`},
		{method: "GET", path: "/v1/views/total?top=1", code: 400, msg: "is an aggregate"},
		{method: "GET", path: "/v1/views/total?window=latest", code: 400, msg: "is an aggregate"},
		{method: "GET", path: "/v1/views/total?consistency=bogus", code: 400, msg: "consistency must be"},
		{method: "GET", path: "/v1/views/total?consistency=snapshot&x=1", code: 400, msg: "is an aggregate"},
		{method: "GET", path: "/v1/views/total?" + far, code: 504, msg: "not yet to 1000000"},
		{method: "GET", path: "/v1/views/total?consistency=snapshot&" + far, code: 504, msg: "the input read so far is clicks/0 up to 300"},
		{method: "GET", path: "/v1/views/total/keys/u1", code: 400, msg: `view "total" is an aggregate: it has no keys`},
		{method: "GET", path: "/v1/views/total/keys/u1?window=latest", code: 400, msg: "it has no keys"},
		{method: "GET", path: "/v1/views/total/keys?key_base64=dTE%3D", code: 400, msg: "it has no keys"},

		// A windowed view.
		{method: "GET", path: "/v1/views/visitors?window=bogus", code: 400, msg: `window must be "latest", got "bogus"`},
		{method: "GET", path: "/v1/views/visitors?window=", code: 400, msg: "window must be"},
		{method: "GET", path: "/v1/views/visitors?window=latest&window=latest", code: 400, msg: "given 2 times"},
		{method: "GET", path: "/v1/views/visitors?from=bogus", code: 400, msg: "from must be an RFC 3339 time"},
		{method: "GET", path: "/v1/views/visitors?from=2026-11-02", code: 400, msg: "from must be an RFC 3339 time"},
		{method: "GET", path: "/v1/views/visitors?to=tomorrow", code: 400, msg: "to must be an RFC 3339 time"},
		{method: "GET", path: "/v1/views/visitors?from=2026-11-02T08:00:00Z&to=2026-11-02T07:00:00Z", code: 400, msg: "to must be after from"},
		{method: "GET", path: "/v1/views/visitors?from=2026-11-02T08:00:00Z&to=2026-11-02T08:00:00Z", code: 400, msg: "to must be after from"},
		{method: "GET", path: "/v1/views/visitors?from=3000-01-01T00:00:00Z", code: 400, msg: "from must be between " + minTime + " and " + maxTime},
		{method: "GET", path: "/v1/views/visitors?to=1000-01-01T00:00:00Z", code: 400, msg: "to must be between"},
		{method: "GET", path: "/v1/views/visitors?to=" + minTime, code: 400, msg: "to must be after from"},
		{method: "GET", path: "/v1/views/visitors?limit=0", code: 400, msg: "limit must be"},
		{method: "GET", path: "/v1/views/visitors?limit=1e99", code: 400, msg: "limit must be"},
		{method: "GET", path: "/v1/views/visitors?top=3", code: 400, msg: `unknown parameter "top" (a windowed view takes window, from, to, limit)`},
		{method: "GET", path: "/v1/views/visitors?after=x", code: 400, msg: `unknown parameter "after"`},
		{method: "GET", path: "/v1/views/visitors?prefix=u", code: 400, msg: `unknown parameter "prefix"`},
		{method: "GET", path: "/v1/views/visitors?timeout=abc", code: 400, msg: "timeout must be"},
		{method: "GET", path: "/v1/views/visitors?window=latest&from=" + maxTime, code: 404, msg: `no complete window of view "visitors"`},
		{method: "GET", path: "/v1/views/visitors?" + far, code: 504, msg: "not yet to 1000000"},
		{method: "GET", path: "/v1/views/visitors/keys/u1", code: 400, msg: `view "visitors" is windowed: it has no keys`},
		{method: "GET", path: "/v1/views/visitors/keys/u1?window=latest", code: 400, msg: "is windowed: it has no keys"},
		{method: "GET", path: "/v1/views/visitors/keys?key_base64=dTE%3D", code: 400, msg: "is windowed: it has no keys"},

		// A windowed keyed view.
		{method: "GET", path: "/v1/views/hourly?window=bogus", code: 400, msg: "window must be"},
		{method: "GET", path: "/v1/views/hourly?from=bogus", code: 400, msg: "from must be an RFC 3339 time"},
		{method: "GET", path: "/v1/views/hourly?from=2026-11-02T08:00:00Z&to=2026-11-02T07:00:00Z", code: 400, msg: "to must be after from"},
		{method: "GET", path: "/v1/views/hourly?from=3000-01-01T00:00:00Z", code: 400, msg: "from must be between"},
		{method: "GET", path: "/v1/views/hourly?top=0", code: 400, msg: "top must be"},
		{method: "GET", path: "/v1/views/hourly?window=latest&top=3&after=u1", code: 400, msg: "top and after do not combine"},
		{method: "GET", path: "/v1/views/hourly?limit=-1", code: 400, msg: "limit must be"},
		{method: "GET", path: "/v1/views/hourly?limit=1&limit=2", code: 400, msg: "given 2 times"},
		{method: "GET", path: "/v1/views/hourly?after_base64=***", code: 400, msg: "after_base64 must be"},
		{method: "GET", path: "/v1/views/hourly?prefix_base64=***", code: 400, msg: "prefix_base64 must be"},
		{method: "GET", path: "/v1/views/hourly?x=1", code: 400, msg: `unknown parameter "x" (a windowed keyed view takes window, from, to, limit, after, after_base64, prefix, prefix_base64, top)`},
		{method: "GET", path: "/v1/views/hourly?consistency=bogus", code: 400, msg: "consistency must be"},
		{method: "GET", path: "/v1/views/hourly?window=latest&from=" + maxTime, code: 404, msg: `no complete window of view "hourly"`},
		{method: "GET", path: "/v1/views/hourly?" + far, code: 504, msg: "not yet to 1000000"},
		{method: "GET", path: "/v1/views/hourly/keys/u1?limit=1", code: 400, msg: `unknown parameter "limit" (a key of a windowed keyed view takes window, from, to)`},
		{method: "GET", path: "/v1/views/hourly/keys/u1?top=1", code: 400, msg: `unknown parameter "top"`},
		{method: "GET", path: "/v1/views/hourly/keys/u1?window=all", code: 400, msg: "window must be"},
		{method: "GET", path: "/v1/views/hourly/keys/u1?from=bogus", code: 400, msg: "from must be"},
		{method: "GET", path: "/v1/views/hourly/keys/u1?from=a&from=b", code: 400, msg: "given 2 times"},
		{method: "GET", path: "/v1/views/hourly/keys/u1?consistency=bogus", code: 400, msg: "consistency must be"},
		{method: "GET", path: "/v1/views/hourly/keys/u1?" + far, code: 504, msg: "not yet to 1000000"},
		{method: "GET", path: "/v1/views/hourly/keys/nope", code: 404, msg: `key "nope" in view "hourly"`},
		{method: "GET", path: "/v1/views/hourly/keys/nope?window=latest", code: 404, msg: `key "nope" in the latest complete window of view "hourly"`},
		{method: "GET", path: "/v1/views/hourly/keys/nope?consistency=snapshot", code: 404, msg: `key "nope" in view "hourly"`},
		{method: "GET", path: "/v1/views/hourly/keys/%00", code: 404, msg: "not found"},
		{method: "GET", path: "/v1/views/hourly/keys/%2f", code: 404, msg: `key "/" in view "hourly"`},
		{method: "GET", path: "/v1/views/hourly/keys/u1?window=latest&from=" + maxTime, code: 404, msg: "no complete window"},
		{method: "GET", path: "/v1/views/hourly/keys?key_base64=***", code: 400, msg: "key_base64 must be"},
		{method: "GET", path: "/v1/views/hourly/keys?key_base64=dTE%3D&limit=1", code: 400, msg: `unknown parameter "limit"`},

		// Unknown views.
		{method: "GET", path: "/v1/views/nope", code: 404, msg: `unknown view "nope"`},
		{method: "GET", path: "/v1/views/nope?limit=-1", code: 404, msg: `unknown view "nope"`},
		{method: "GET", path: "/v1/views/nope/keys/u1", code: 404, msg: `unknown view "nope"`},
		{method: "GET", path: "/v1/views/nope/keys?key_base64=dTE%3D", code: 404, msg: `unknown view "nope"`},
		{method: "GET", path: "/v1/views/%2E%2E", code: 404, msg: `unknown view ".."`},
		{method: "GET", path: "/v1/views/..%2F..%2Fetc%2Fpasswd", code: 404, msg: `unknown view "../../etc/passwd"`},
		{method: "GET", path: "/v1/views/%E6%97%A5", code: 404, msg: `unknown view "日"`},

		// Watches.
		{method: "GET", path: "/v1/views/counts/watch?interval=1ms", code: 400, msg: "interval must be a duration in [250ms, 1m]"},
		{method: "GET", path: "/v1/views/counts/watch?interval=249ms", code: 400, msg: "interval must be"},
		{method: "GET", path: "/v1/views/counts/watch?interval=61s", code: 400, msg: "interval must be"},
		{method: "GET", path: "/v1/views/counts/watch?interval=-1s", code: 400, msg: "interval must be"},
		{method: "GET", path: "/v1/views/counts/watch?interval=abc", code: 400, msg: "interval must be"},
		{method: "GET", path: "/v1/views/counts/watch?interval=", code: 400, msg: "interval must be"},
		{method: "GET", path: "/v1/views/counts/watch?interval=1s&interval=2s", code: 400, msg: "given 2 times"},
		{method: "GET", path: "/v1/views/counts/watch?consistency=snapshot", code: 400, msg: "a watch takes no consistency, min_offsets or timeout"},
		{method: "GET", path: "/v1/views/counts/watch?timeout=1s", code: 400, msg: "a watch takes no consistency"},
		{method: "GET", path: "/v1/views/counts/watch?min_offsets=clicks/0:1", code: 400, msg: "a watch takes no consistency"},
		{method: "GET", path: "/v1/views/counts/watch?top=0", code: 400, msg: "top must be"},
		{method: "GET", path: "/v1/views/counts/watch?top=1&after=u1", code: 400, msg: "top and after do not combine"},
		{method: "GET", path: "/v1/views/counts/watch?after_base64=***", code: 400, msg: "after_base64 must be"},
		{method: "GET", path: "/v1/views/counts/watch?bogus=1", code: 400, msg: `unknown parameter "bogus"`},
		{method: "GET", path: "/v1/views/total/watch?limit=1", code: 400, msg: "is an aggregate"},
		{method: "GET", path: "/v1/views/visitors/watch?window=bogus", code: 400, msg: "window must be"},
		{method: "GET", path: "/v1/views/visitors/watch?top=1", code: 400, msg: `unknown parameter "top"`},
		{method: "GET", path: "/v1/views/hourly/watch?from=bogus", code: 400, msg: "from must be"},
		{method: "GET", path: "/v1/views/hourly/watch?top=1&after_base64=dTE%3D", code: 400, msg: "top and after do not combine"},
		{method: "GET", path: "/v1/views/hourly/watch?window=latest&to=1677-09-21T00:12:43.145224193Z", code: 404, msg: "no complete window"},
		{method: "GET", path: "/v1/views/nope/watch", code: 404, msg: `unknown view "nope"`},
		{method: "GET", path: "/v1/views/nope/watch?interval=1ms", code: 404, msg: `unknown view "nope"`},
		{method: "GET", path: "/v1/views/nope/watch?%ZZ", code: 404, msg: `unknown view "nope"`},
		{method: "GET", path: "/v1/cluster/watch?interval=499ms", code: 400, msg: "interval must be a duration in [500ms, 1m]"},
		{method: "GET", path: "/v1/cluster/watch?interval=2m", code: 400, msg: "interval must be"},
		{method: "GET", path: "/v1/cluster/watch?x=1", code: 400, msg: `unknown parameter "x" (only interval)`},
		{method: "GET", path: "/v1/alerts/watch?since=-1", code: 400, msg: "since must be an integer"},
		{method: "GET", path: "/v1/alerts/watch?since=abc", code: 400, msg: "since must be"},
		{method: "GET", path: "/v1/alerts/watch?since=99999999999999999999", code: 400, msg: "since must be"},
		{method: "GET", path: "/v1/alerts/watch?x=1", code: 400, msg: `unknown parameter "x" (only since)`},

		// The cluster's routes.
		{method: "GET", path: "/v1/cluster?scope=all", code: 400, msg: "takes only scope=local or scope=cluster"},
		{method: "GET", path: "/v1/cluster?scope=local&scope=cluster", code: 400, msg: "given 2 times"},
		{method: "GET", path: "/v1/cluster?x=1", code: 400, msg: "takes only scope"},
		{method: "GET", path: "/v1/cluster/history?timeline=all", code: 400, msg: "timeline=only"},
		{method: "GET", path: "/v1/cluster/history?scope=x", code: 400, msg: "scope=local"},
		{method: "GET", path: "/v1/deadletters?scope=all", code: 400, msg: "takes only scope=local (the default) or scope=cluster"},
		{method: "GET", path: "/v1/deadletters?limit=5", code: 400, msg: "takes only scope"},
		{method: "GET", path: "/v1/alerts?limit=0", code: 400, msg: "limit must be an integer in [1, 10000]"},
		{method: "GET", path: "/v1/alerts?limit=-1", code: 400, msg: "limit must be"},
		{method: "GET", path: "/v1/alerts?limit=1e99", code: 400, msg: "limit must be"},
		{method: "GET", path: "/v1/alerts?limit=10001", code: 400, msg: "limit must be"},
		{method: "GET", path: "/v1/alerts?x=1", code: 400, msg: `unknown parameter "x" (only limit)`},
		{method: "POST", path: "/v1/checkpoint?x=1", code: 400, msg: "/v1/checkpoint takes no parameters"},
		{method: "POST", path: "/v1/checkpoint?fragment=3", code: 400, msg: "takes no parameters"},

		// Ingest: bodies too large, malformed or of another type append
		// nothing (the total stays 300).
		{method: "POST", path: "/v1/streams/clicks/events", ct: nd, body: strings.Repeat(click, 2000), code: 413, msg: "body over 65536 bytes"},
		{method: "POST", path: "/v1/streams/clicks/events", ct: nd, body: "{not json\n", code: 400, msg: "event 1"},
		{method: "POST", path: "/v1/streams/clicks/events", ct: nd, body: click + "{\"user\":\n", code: 400, msg: "event 2"},
		{method: "POST", path: "/v1/streams/clicks/events", ct: nd, body: `{"user":"u1","at":"yesterday"}`, code: 400, msg: "event 1: parsing time"},
		{method: "POST", path: "/v1/streams/clicks/events", ct: nd, body: `{"user":1,"at":"2026-11-02T11:00:00Z"}`, code: 400, msg: "cannot unmarshal number"},
		{method: "POST", path: "/v1/streams/clicks/events", ct: nd, body: click + `{"user":"u1"} trailing`, code: 400, msg: "event 2"},
		{method: "POST", path: "/v1/streams/clicks/events", ct: "application/json", body: strings.TrimSpace(click), code: 400, msg: "want a JSON array of events"},
		{method: "POST", path: "/v1/streams/clicks/events", ct: "application/json", body: "[" + strings.TrimSpace(click) + ",", code: 400, msg: "event 2"},
		{method: "POST", path: "/v1/streams/clicks/events", ct: "application/json", body: "[] []", code: 400, msg: "data after the JSON array"},
		{method: "POST", path: "/v1/streams/clicks/events", ct: "application/json", body: "", code: 400, msg: "want a JSON array of events"},
		{method: "POST", path: "/v1/streams/clicks/events", ct: "text/plain", body: click, code: 415, msg: `unsupported content type "text/plain"`},
		{method: "POST", path: "/v1/streams/clicks/events", body: click, code: 415, msg: "want application/x-ndjson or application/json"},
		{method: "POST", path: "/v1/streams/clicks/events", ct: "application/json; charset", body: "[]", code: 415, msg: "unsupported content type"},
		{method: "POST", path: "/v1/streams/clicks/events", ct: nd, key: strings.Repeat("k", 256), body: click, code: 400, msg: "Idempotency-Key longer than 255 bytes"},
		{method: "POST", path: "/v1/streams/nope/events", ct: nd, body: click, code: 404, msg: `no stream "nope"`},
		{method: "POST", path: "/v1/streams/%2E%2E/events", ct: nd, body: click, code: 404, msg: `no stream ".."`},
		{method: "POST", path: "/v1/streams//events", ct: nd, body: click, code: 400, msg: "an empty, . or .. segment"},
		{method: "POST", path: "/v1/streams/clicks", ct: nd, body: click, code: 404, msg: "no route"},
		{method: "POST", path: "/v1/streams/clicks/events/more", ct: nd, body: click, code: 404, msg: "no route"},
		{method: "GET", path: "/v1/streams/clicks/events", code: 405, msg: "only POST is allowed"},
		{method: "PUT", path: "/v1/streams/clicks/events", ct: nd, body: click, code: 405, msg: "only POST is allowed"},

		// Wrong methods.
		{method: "POST", path: "/v1/views", code: 405, msg: "POST /v1/views: only GET is allowed"},
		{method: "POST", path: "/v1/views/counts", code: 405, msg: "only GET"},
		{method: "DELETE", path: "/v1/views/counts/keys/u1", code: 405, msg: "only GET"},
		{method: "PUT", path: "/v1/views/hourly/watch", code: 405, msg: "only GET"},
		{method: "PATCH", path: "/v1/views/visitors", code: 405, msg: "only GET"},
		{method: "OPTIONS", path: "/v1/views/total", code: 405, msg: "only GET"},
		{method: "TRACE", path: "/v1/views", code: 405, msg: "only GET"},
		{method: "POST", path: "/v1/cluster", code: 405, msg: "only GET"},
		{method: "POST", path: "/v1/cluster/history", code: 405, msg: "only GET"},
		{method: "POST", path: "/v1/deadletters", code: 405, msg: "only GET"},
		{method: "POST", path: "/v1/alerts", code: 405, msg: "only GET"},
		{method: "DELETE", path: "/v1/alerts/watch", code: 405, msg: "only GET"},
		{method: "POST", path: "/metrics", code: 405, msg: "only GET"},
		{method: "POST", path: "/healthz", code: 405, msg: "only GET"},
		{method: "POST", path: "/readyz", code: 405, msg: "only GET"},
		{method: "POST", path: "/", code: 405, msg: "only GET"},
		{method: "POST", path: "/dashboard/app.js", code: 405, msg: "only GET"},
		{method: "GET", path: "/v1/checkpoint", code: 405, msg: "only POST is allowed"},
		{method: "PUT", path: "/v1/checkpoint", code: 405, msg: "only POST"},
		{method: "DELETE", path: "/v1/checkpoint", code: 405, msg: "only POST"},
		{method: "CONNECT", path: "127.0.0.1:1", code: 405, msg: "no proxy"},

		// Paths: dot segments and empty ones, traversal, unknown routes.
		{method: "GET", path: "/v1/views/counts/keys/..", code: 400, msg: "(cleaned, it is /v1/views/counts)"},
		{method: "GET", path: "/v1/views/counts/keys/.", code: 400, msg: "an empty, . or .. segment"},
		{method: "GET", path: "/v1/views/counts/..", code: 400, msg: "an empty, . or .. segment"},
		{method: "GET", path: "/v1/views/../../etc/passwd", code: 400, msg: "an empty, . or .. segment"},
		{method: "GET", path: "/../../etc/passwd", code: 400, msg: "an empty, . or .. segment"},
		{method: "GET", path: "/v1//views", code: 400, msg: "(cleaned, it is /v1/views)"},
		{method: "GET", path: "/v1/views/counts/keys/a//b", code: 400, msg: "escape / as %2F"},
		{method: "GET", path: "/dashboard/../v1/views", code: 400, msg: "an empty, . or .. segment"},
		{method: "GET", path: "*", code: 400, msg: "a request names a path"},
		{method: "GET", path: "/dashboard/nope.js", code: 404, msg: `no dashboard file "nope.js"`},
		{method: "GET", path: "/dashboard/index.html", code: 404, msg: "the dashboard is at /"},
		{method: "GET", path: "/dashboard/%2E%2E", code: 404, msg: "no dashboard file"},
		{method: "GET", path: "/dashboard/..%2F..%2Fetc%2Fpasswd", code: 404, msg: "no dashboard file"},
		{method: "GET", path: "/dashboard/", code: 404, msg: "no route"},
		{method: "GET", path: "/v2/views", code: 404, msg: "no route GET /v2/views"},
		{method: "GET", path: "/v1/view/counts", code: 404, msg: "no route"},
		{method: "GET", path: "/v1/views/", code: 404, msg: "no route"},
		{method: "GET", path: "/v1/views/counts/watch/", code: 404, msg: "no route"},
		{method: "GET", path: "/etc/passwd", code: 404, msg: "no route"},
	}

	// HEAD: the status and type of the GET's answer, without its body.
	heads := []badCase{
		{path: "/v1/views/nope", code: 404},
		{path: "/v1/views/counts?limit=0", code: 400},
		{path: "/v1/views/counts/keys/nope", code: 404},
		{path: "/v1/views/counts/watch?interval=1ms", code: 400},
		{path: "/v1/views/counts/keys/..", code: 400},
		{path: "/v1/checkpoint", code: 405},
		{path: "/v1/streams/clicks/events", code: 405},
		{path: "/dashboard/nope.js", code: 404},
		{path: "/nope", code: 404},
	}

	for _, c := range cases {
		a := badDo(t, hc, r.base, c)
		what := fmt.Sprintf("%s %.120s", c.method, c.path)
		var e struct {
			Error *string `json:"error"`
		}
		err := json.Unmarshal(a.body, &e)
		switch {
		case a.code >= 500 && a.code != c.code:
			t.Errorf("%s: %d %.300s: a server error for a client's mistake", what, a.code, a.body)
		case a.code != c.code || a.ctype != "application/json" || err != nil || e.Error == nil || *e.Error == "" || !strings.Contains(*e.Error, c.msg):
			t.Errorf("%s: %d %q %.300s; want %d, a JSON error with %q", what, a.code, a.ctype, a.body, c.code, c.msg)
		}
		good(what)
	}
	for _, c := range heads {
		c.method = "HEAD"
		a := badDo(t, hc, r.base, c)
		if a.code != c.code || a.ctype != "application/json" || len(a.body) != 0 {
			t.Errorf("HEAD %s: %d %q %q; want %d, the type of a JSON error and no body", c.path, a.code, a.ctype, a.body, c.code)
		}
		good("HEAD " + c.path)
	}
	if n := s.End(0); n != 300 {
		t.Errorf("the stream holds %d events after the bad pushes, want the 300 pushed first", n)
	}

	// Requests at the bounds, and snapshot lookups of a windowed keyed
	// view's keys, are answered.
	for _, p := range []string{
		"/v1/views/counts?limit=10000000", "/v1/views/counts?top=100000", "/v1/views/counts?limit=1&after=" + big[:1000],
		"/v1/views/counts/keys/u1?min_offsets=clicks/0:300&timeout=1m", "/v1/views/counts/keys/u1?consistency=snapshot",
		"/v1/views/visitors?from=" + minTime + "&to=" + maxTime, "/v1/views/visitors?window=latest&limit=10000000",
		"/v1/views/hourly?window=latest&top=100000", "/v1/views/hourly?consistency=snapshot&prefix=u",
		"/v1/views/hourly/keys/u1?consistency=snapshot", "/v1/views/hourly/keys?key_base64=dTE%3D&consistency=snapshot&window=latest",
		"/v1/views/total?consistency=snapshot", "/v1/alerts?limit=10000", "/v1/cluster/history?scope=local&timeline=only",
	} {
		a := badDo(t, hc, r.base, badCase{method: "GET", path: p})
		var ans struct {
			Cut *struct{ Consistency string }
		}
		if err := json.Unmarshal(a.body, &ans); a.code != 200 || a.ctype != "application/json" || err != nil {
			t.Errorf("GET %.120s: %d %q %.300s; want 200", p, a.code, a.ctype, a.body)
		} else if strings.Contains(p, "consistency=snapshot") && (ans.Cut == nil || ans.Cut.Consistency != "snapshot") {
			t.Errorf("GET %s: %.300s; want a snapshot's cut", p, a.body)
		}
	}
	// The dashboard's files are served as files.
	for file, ctype := range map[string]string{"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"} {
		if a := badDo(t, hc, r.base, badCase{method: "GET", path: "/dashboard/" + file}); a.code != 200 || a.ctype != ctype || len(a.body) == 0 {
			t.Errorf("GET /dashboard/%s: %d %q, %d bytes", file, a.code, a.ctype, len(a.body))
		}
	}
	t.Logf("%d bad requests, %d HEADs", len(cases), len(heads))
}
