package ingest

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

type answer struct {
	code  int
	retry string
	body  map[string]any
}

func post(t *testing.T, h http.Handler, ct, key, body string) answer {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/v1/streams/events/events", strings.NewReader(body))
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	a := answer{code: rec.Code, retry: rec.Header().Get("Retry-After")}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("answer %d with content type %q: %s", rec.Code, ct, rec.Body)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &a.body); err != nil {
		t.Fatalf("answer %d is not JSON: %q", rec.Code, rec.Body)
	}
	return a
}

func ends(s *Stream[event]) (n int64) {
	for p := range s.Partitions() {
		n += s.End(p)
	}
	return n
}

// Bodies that are too large, malformed or of another type get a JSON 4xx
// and append nothing; good ones are acknowledged with their offsets.
func TestHTTP(t *testing.T) {
	l := openLog(t, vfs.NewMem(), Options{})
	s := newStream(t, l, Config[event]{MaxBody: 1000})
	const nd = "application/x-ndjson"
	a := post(t, s, nd, "", `{"text":"a"}`+"\n\n"+`{"text":"b"}`+"\r\n")
	if a.code != 200 || a.body["accepted"] != 2.0 || a.body["stream"] != "events" {
		t.Fatalf("ndjson: %+v", a)
	}
	a = post(t, s, "application/json; charset=utf-8", "", ` [ {"text":"c"}, {"text": "d", "n": 4} ] `)
	if a.code != 200 || a.body["accepted"] != 2.0 {
		t.Fatalf("json array: %+v", a)
	}
	parts := a.body["partitions"].([]any)
	if p := parts[0].(map[string]any); p["partition"] != 1.0 || p["from"] != 0.0 || p["to"] != 2.0 {
		t.Fatalf("json array offsets: %+v", parts)
	}
	evs, _ := readAll(t, s, 1, 0)
	if len(evs) != 2 || evs[1] != (event{Text: "d", N: 4}) {
		t.Fatalf("partition 1 holds %+v", evs)
	}
	before := ends(s)
	for _, c := range []struct {
		name, ct, body string
		code           int
	}{
		{"malformed line", nd, `{"text":"a"}` + "\n" + `{"text":`, 400},
		{"wrong field type", nd, `{"text":"a"}` + "\n" + `{"text":1}`, 400},
		{"trailing data", nd, `{"text":"a"} {}`, 400},
		{"not an array", "application/json", `{"text":"a"}`, 400},
		{"bad element", "application/json", `[{"text":"a"}, {"text":2}]`, 400},
		{"unterminated array", "application/json", `[{"text":"a"}`, 400},
		{"after the array", "application/json", `[{"text":"a"}] x`, 400},
		{"too large", nd, strings.Repeat(`{"text":"aaaa"}`+"\n", 100), 413},
		{"text/plain", "text/plain", `{"text":"a"}`, 415},
		{"no content type", "", `{"text":"a"}`, 415},
	} {
		a := post(t, s, c.ct, "", c.body)
		if a.code != c.code || a.body["error"] == nil {
			t.Errorf("%s: %d %v, want %d and an error", c.name, a.code, a.body, c.code)
		}
	}
	if got := ends(s); got != before {
		t.Fatalf("rejected requests appended %d events", got-before)
	}
	// A body whose length is not announced is cut at the limit too.
	req := httptest.NewRequest(http.MethodPost, "/", io.MultiReader(strings.NewReader(strings.Repeat(`{"text":"aaaa"}`+"\n", 100))))
	req.ContentLength = -1
	req.Header.Set("Content-Type", nd)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != 413 {
		t.Fatalf("chunked body over the limit: %d %s", rec.Code, rec.Body)
	}
	// A gzip body is taken decompressed, its limit on what it holds; other
	// encodings are refused.
	gz := func(s string) string {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write([]byte(s))
		zw.Close()
		return b.String()
	}
	for _, c := range []struct {
		name, enc, body string
		code            int
	}{
		{"gzip", "gzip", gz(`{"text":"g1"}` + "\n" + `{"text":"g2"}`), 200},
		{"not gzip", "gzip", `{"text":"a"}`, 400},
		{"cut gzip", "gzip", gz(`{"text":"a"}`)[:15], 400},
		{"gzip too large once decompressed", "gzip", gz(strings.Repeat(`{"text":"aaaa"}`+"\n", 100)), 413},
		{"brotli", "br", `{"text":"a"}`, 415},
	} {
		before := ends(s)
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(c.body))
		req.Header.Set("Content-Type", nd)
		req.Header.Set("Content-Encoding", c.enc)
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		var got map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || rec.Code != c.code || (c.code != 200) != (got["error"] != nil) {
			t.Errorf("%s: %d %s, want %d", c.name, rec.Code, rec.Body, c.code)
		}
		if want := map[bool]int64{true: 2, false: 0}[c.code == 200]; ends(s)-before != want {
			t.Errorf("%s: appended %d events, want %d", c.name, ends(s)-before, want)
		}
	}
	// Idempotency over HTTP.
	a = post(t, s, nd, "key-1", `{"text":"x"}`)
	b := post(t, s, nd, "key-1", `{"text":"x"}`)
	if a.code != 200 || b.code != 200 || !bytes.Equal(mustJSON(a.body), mustJSON(b.body)) {
		t.Fatalf("retry: %+v then %+v", a, b)
	}
	if c := post(t, s, nd, "key-1", `{"text":"y"}`); c.code != 422 {
		t.Fatalf("key reused: %+v", c)
	}
	if c := post(t, s, nd, strings.Repeat("k", MaxKeyLen+1), `{"text":"y"}`); c.code != 400 {
		t.Fatalf("long key: %+v", c)
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

// Back-pressure: 429 while the flow is behind by more than MaxUnread, 503
// while the log is full; both with Retry-After, both append nothing.
func TestHTTPBackPressure(t *testing.T) {
	l := openLog(t, vfs.NewMem(), Options{MaxBytes: 1500})
	s := newStream(t, l, Config[event]{Partitions: 1, MaxUnread: 500})
	body := strings.Repeat(`{"text":"aaaaaaaaaa"}`+"\n", 30) // 630 bytes of events
	if a := post(t, s, "application/x-ndjson", "", body); a.code != 200 {
		t.Fatalf("first: %+v", a)
	}
	a := post(t, s, "application/x-ndjson", "", body)
	if a.code != 429 || a.retry == "" {
		t.Fatalf("the flow is behind: %+v", a)
	}
	// The flow reads everything: accepted again, until the log is full of
	// uncommitted events.
	r, _ := s.Open(0, 0)
	defer r.Close()
	drain := func() {
		for s.Unread() > 0 {
			readAll(t, s, 0, 0)
			r.Close()
			r, _ = s.Open(0, s.End(0))
		}
	}
	drain()
	if a := post(t, s, "application/x-ndjson", "", body); a.code != 200 {
		t.Fatalf("after the flow read: %+v", a)
	}
	drain()
	before := ends(s)
	a = post(t, s, "application/x-ndjson", "", body)
	if a.code != 503 || a.retry == "" {
		t.Fatalf("log full: %+v", a)
	}
	if ends(s) != before {
		t.Fatal("appended while full")
	}
}
