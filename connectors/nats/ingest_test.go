package nats

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func newIngest(t testing.TB, url string, tune ...func(*IngestConfig[line])) *Ingest[line] {
	t.Helper()
	cfg := IngestConfig[line]{URL: url, Name: "lines", Stream: "LINES"}
	for _, f := range tune {
		f(&cfg)
	}
	in, err := NewIngest(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	return in
}

func linesStream(t testing.TB, js jetstream.JetStream) {
	createStream(t, js, jetstream.StreamConfig{Name: "LINES", Subjects: []string{"lines.0", "lines.1"}, Duplicates: time.Minute})
}

func ingestBody(tag string, n int) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, `{"text":"%s-%d"}`+"\n", tag, i)
	}
	return b.Bytes()
}

func splitLines(b []byte) [][]byte {
	return bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
}

func postIngest(t testing.TB, h http.Handler, key, contentType string, b []byte) (int, http.Header, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/v1/streams/lines/events", bytes.NewReader(b))
	req.Header.Set("Content-Type", contentType)
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	var a map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil {
		t.Fatalf("%d answer %q is not JSON: %v", w.Code, w.Body.Bytes(), err)
	}
	return w.Code, w.Header(), a
}

// streamTexts counts the stream's events by text.
func streamTexts(t testing.TB, js jetstream.JetStream) map[string]int {
	t.Helper()
	n := map[string]int{}
	for _, m := range readStream(t, js, "LINES") {
		var l line
		if err := json.Unmarshal(m.Data(), &l); err != nil {
			t.Fatal(err)
		}
		n[l.Text]++
	}
	return n
}

// A push is acknowledged with its sequences once JetStream stored it; a
// retry with the same key on another node replays the answer and stores
// nothing; the key with another (longer) body is 422 and stores nothing;
// bad bodies are JSON 4xx.
func TestIngestIdempotentAcrossNodes(t *testing.T) {
	url, js := embedded(t)
	linesStream(t, js)
	a, b := newIngest(t, url), newIngest(t, url)
	code, _, first := postIngest(t, a, "k1", "application/x-ndjson", ingestBody("a", 5))
	if code != 200 || first["accepted"] != 5.0 {
		t.Fatalf("first push: %d %v", code, first)
	}
	code, h, again := postIngest(t, b, "k1", "application/x-ndjson", ingestBody("a", 5))
	if code != 200 || h.Get("Idempotent-Replayed") != "true" || fmt.Sprint(again) != fmt.Sprint(first) {
		t.Fatalf("retry on another node: %d %v %v, first %v", code, h, again, first)
	}
	if code, _, a := postIngest(t, b, "k1", "application/x-ndjson", ingestBody("b", 8)); code != 422 || a["error"] == nil {
		t.Fatalf("key reused with another body: %d %v", code, a)
	}
	for _, c := range []struct {
		ct   string
		body []byte
		code int
	}{
		{"application/x-ndjson", []byte(`{"text":"x"}` + "\n" + `{"text":`), 400},
		{"application/json", []byte(`[{"text":"x"},{"text":7}]`), 400},
		{"text/plain", []byte(`{"text":"x"}`), 415},
		{"application/x-ndjson", bytes.Repeat([]byte(`{"text":"x"}`+"\n"), 800_000), 413},
	} {
		if code, _, a := postIngest(t, a, "", c.ct, c.body); code != c.code || a["error"] == nil {
			t.Fatalf("%s %.20q: %d %v, want %d", c.ct, c.body, code, a, c.code)
		}
	}
	if code, _, arr := postIngest(t, b, "", "application/json", []byte(`[{"text":"c-0"},{"text":"c-1"}]`)); code != 200 || arr["accepted"] != 2.0 {
		t.Fatalf("array push: %d %v", code, arr)
	}
	got := streamTexts(t, js)
	if len(got) != 7 {
		t.Fatalf("stream holds %v, want a-0..a-4, c-0, c-1", got)
	}
	for k, n := range got {
		if n != 1 {
			t.Fatalf("%s stored %d times", k, n)
		}
	}
}

// Requests with the same keys race on three nodes at once: each key's
// events are stored once, and every node answers each key alike.
func TestIngestConcurrentAttemptsApplyOnce(t *testing.T) {
	const keys = 60
	url, js := embedded(t)
	linesStream(t, js)
	nodes := []*Ingest[line]{newIngest(t, url), newIngest(t, url), newIngest(t, url)}
	answers := make([][]string, keys)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for k := range keys {
		for _, in := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := in.Append(context.Background(), fmt.Sprintf("k%d", k), splitLines(ingestBody(fmt.Sprintf("k%d", k), 3))...)
				if err != nil {
					t.Errorf("k%d: %v", k, err)
					return
				}
				res.Replayed = false
				mu.Lock()
				answers[k] = append(answers[k], fmt.Sprint(res))
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for k, as := range answers {
		for _, a := range as[1:] {
			if a != as[0] {
				t.Fatalf("k%d answered %v", k, as)
			}
		}
	}
	got := streamTexts(t, js)
	if len(got) != 3*keys {
		t.Fatalf("%d distinct events, want %d", len(got), 3*keys)
	}
	for k, n := range got {
		if n != 1 {
			t.Fatalf("%s stored %d times", k, n)
		}
	}
}

func embeddedClient(t testing.TB, url string) (*natsgo.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := natsgo.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// A server that is down: 503 with Retry-After.
func TestIngestServerDown(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready in 10s")
	}
	in0 := func() *Ingest[line] {
		_, js := embeddedClient(t, ns.ClientURL())
		linesStream(t, js)
		return newIngest(t, ns.ClientURL(), func(c *IngestConfig[line]) { c.AckTimeout = time.Second; c.AckWait = 200 * time.Millisecond })
	}()
	if code, _, a := postIngest(t, in0, "k", "application/x-ndjson", ingestBody("a", 2)); code != 200 {
		t.Fatalf("before: %d %v", code, a)
	}
	ns.Shutdown()
	ns.WaitForShutdown()
	if code, h, a := postIngest(t, in0, "k2", "application/x-ndjson", ingestBody("b", 2)); code != 503 || h.Get("Retry-After") == "" || a["error"] == nil {
		t.Fatalf("server down: %d %v %v", code, h, a)
	}
}
