package kafka

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

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tessera-streams/tessera/connectors/push"
)

func newIngest(t testing.TB, brokers []string, node string, tune ...func(*IngestConfig[line])) *Ingest[line] {
	t.Helper()
	cfg := IngestConfig[line]{Brokers: brokers, Name: "lines", Topic: "lines", TransactionalID: "lines-ingest-" + node}
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

// body is n lines tagged tag.
func body(tag string, n int) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, `{"text":"%s-%d"}`+"\n", tag, i)
	}
	return b.Bytes()
}

func post(t testing.TB, h http.Handler, key, contentType string, b []byte) (int, http.Header, map[string]any) {
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

// texts counts the committed values of the topic lines.
func texts(t testing.TB, brokers []string) map[string]int {
	t.Helper()
	n := map[string]int{}
	for _, r := range readCommitted(t, brokers, "lines") {
		var l line
		if err := json.Unmarshal(r.Value, &l); err != nil {
			t.Fatal(err)
		}
		n[l.Text]++
	}
	return n
}

// A push is acknowledged with the events' offsets once committed; a
// retry with the same key on another node (another Ingest, another
// transactional id) replays the answer and appends nothing; the key with
// another body is 422; bad bodies are JSON 4xx and append nothing.
func TestIngestIdempotentAcrossNodes(t *testing.T) {
	_, brokers := cluster(t, map[string]int32{"lines": 3})
	a, b := newIngest(t, brokers, "n0"), newIngest(t, brokers, "n1")
	code, _, first := post(t, a, "k1", "application/x-ndjson", body("a", 5))
	if code != 200 || first["accepted"] != 5.0 {
		t.Fatalf("first push: %d %v", code, first)
	}
	code, h, again := post(t, b, "k1", "application/x-ndjson", body("a", 5))
	if code != 200 || h.Get("Idempotent-Replayed") != "true" || fmt.Sprint(again) != fmt.Sprint(first) {
		t.Fatalf("retry on another node: %d %v %v, first %v", code, h, again, first)
	}
	if code, _, a := post(t, b, "k1", "application/x-ndjson", body("b", 5)); code != 422 || a["error"] == nil {
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
		{"application/x-ndjson", bytes.Repeat([]byte(`{"text":"x"}`+"\n"), 100_000), 413},
	} {
		if code, _, a := post(t, a, "", c.ct, c.body); code != c.code || a["error"] == nil {
			t.Fatalf("%s %.20q: %d %v, want %d", c.ct, c.body, code, a, c.code)
		}
	}
	if code, _, arr := post(t, b, "", "application/json", []byte(`[{"text":"c-0"},{"text":"c-1"}]`)); code != 200 || arr["accepted"] != 2.0 {
		t.Fatalf("array push: %d %v", code, arr)
	}
	got := texts(t, brokers)
	if len(got) != 7 {
		t.Fatalf("topic holds %v, want a-0..a-4, c-0, c-1", got)
	}
	for k, n := range got {
		if n != 1 {
			t.Fatalf("%s appended %d times", k, n)
		}
	}
	// The answer's offsets are where the events are.
	p := first["partitions"].([]any)[0].(map[string]any)
	for _, r := range readCommitted(t, brokers, "lines") {
		if r.Partition == int32(p["partition"].(float64)) && bytes.HasPrefix(r.Value, []byte(`{"text":"a-`)) &&
			(r.Offset < int64(p["from"].(float64)) || r.Offset >= int64(p["to"].(float64))) {
			t.Fatalf("event %s at %d, outside the answer %v", r.Value, r.Offset, p)
		}
	}
}

// Requests with the same keys race on three nodes at once, each key sent
// to every node: each key's events are committed once, and every node
// answers each key with the same offsets.
func TestIngestConcurrentAttemptsApplyOnce(t *testing.T) {
	const keys = 60
	_, brokers := cluster(t, map[string]int32{"lines": 2})
	nodes := []*Ingest[line]{newIngest(t, brokers, "n0"), newIngest(t, brokers, "n1"), newIngest(t, brokers, "n2")}
	answers := make([][]string, keys)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for k := range keys {
		for _, in := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := in.Append(context.Background(), fmt.Sprintf("k%d", k), bodyLines(body(fmt.Sprintf("k%d", k), 3)).events()...)
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
	got := texts(t, brokers)
	if len(got) != 3*keys {
		t.Fatalf("%d distinct events, want %d", len(got), 3*keys)
	}
	for k, n := range got {
		if n != 1 {
			t.Fatalf("%s appended %d times", k, n)
		}
	}
}

// lines splits a body into its events.
func (b bodyLines) events() [][]byte {
	return bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
}

type bodyLines []byte

// openAttempt starts, as another node would, a transaction holding events
// and a ledger record for key, and leaves it open.
func openAttempt(t *testing.T, brokers []string, key string, events [][]byte) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.TransactionalID("lines-ingest-other"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	ctx := context.Background()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	var recs []*kgo.Record
	for _, ev := range events {
		recs = append(recs, &kgo.Record{Topic: "lines", Partition: 0, Value: ev})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	p, err := push.Decode(push.NDJSON, append(bytes.Join(events, []byte("\n")), '\n'), key, func(b []byte) (line, error) {
		var l line
		return l, json.Unmarshal(b, &l)
	})
	if err != nil {
		t.Fatal(err)
	}
	v, _ := json.Marshal([]ledgerEntry{{Key: key, Hash: p.Hash, Result: resultOf(recs)}})
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "lines.tessera-ingest", Partition: 0, Value: v}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return cl
}

// An attempt of a key whose transaction is open (another node, still
// working or dead) holds back a later attempt of the key: if it commits,
// the later one is answered with its result and appends nothing; if it
// aborts, the later one applies.
func TestIngestWaitsForAnEarlierAttempt(t *testing.T) {
	for _, commit := range []bool{true, false} {
		t.Run(fmt.Sprintf("commit=%v", commit), func(t *testing.T) {
			_, brokers := cluster(t, map[string]int32{"lines": 1})
			in := newIngest(t, brokers, "n0")
			b := body("k", 4)
			other := openAttempt(t, brokers, "k", bodyLines(b).events())
			type answer struct {
				res push.Result
				err error
			}
			done := make(chan answer, 1)
			go func() {
				res, err := in.Append(context.Background(), "k", bodyLines(b).events()...)
				done <- answer{res, err}
			}()
			// Whenever this runs, the other attempt's ledger record is the
			// earlier one: the Append must wait for its outcome.
			if err := other.EndTransaction(context.Background(), kgo.TransactionEndTry(commit)); err != nil {
				t.Fatal(err)
			}
			a := <-done
			if a.err != nil {
				t.Fatal(a.err)
			}
			if a.res.Replayed != commit {
				t.Fatalf("replayed %v after the other attempt ended with commit=%v", a.res.Replayed, commit)
			}
			got := texts(t, brokers)
			if len(got) != 4 {
				t.Fatalf("topic holds %v", got)
			}
			for k, n := range got {
				if n != 1 {
					t.Fatalf("%s appended %d times", k, n)
				}
			}
		})
	}
}

// Back-pressure and a broker down: 429 with Retry-After while too much
// waits for Kafka, 503 with Retry-After when Kafka does not answer.
func TestIngestBusyAndBrokerDown(t *testing.T) {
	c, brokers := cluster(t, map[string]int32{"lines": 1})
	in := newIngest(t, brokers, "n0", func(c *IngestConfig[line]) { c.MaxPending = 10; c.AckTimeout = time.Second })
	b := body("k", 4)
	other := openAttempt(t, brokers, "k", bodyLines(b).events())
	done := make(chan error, 1)
	go func() {
		_, err := in.Append(context.Background(), "k", bodyLines(b).events()...)
		done <- err
	}()
	for {
		in.mu.Lock()
		waiting := in.pending > 0
		in.mu.Unlock()
		if waiting {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if code, h, a := post(t, in, "", "application/x-ndjson", body("x", 1)); code != 429 || h.Get("Retry-After") == "" || a["error"] == nil {
		t.Fatalf("over MaxPending: %d %v %v", code, h, a)
	}
	if err := other.EndTransaction(context.Background(), kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	c.Close()
	if code, h, a := post(t, in, "k2", "application/x-ndjson", body("y", 1)); code != 503 || h.Get("Retry-After") == "" || a["error"] == nil {
		t.Fatalf("broker down: %d %v %v", code, h, a)
	}
}
