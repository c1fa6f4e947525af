package cluster

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/connectors/ingest"
)

// Events pushed to a node's stream are counted by its flow; other paths
// and streams get JSON errors.
func TestPushIngest(t *testing.T) {
	l, err := ingest.Open(t.TempDir(), ingest.Options{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() }) // after the node stops
	s, err := ingest.NewStream(l, ingest.Config[string]{Name: "words", Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, Config{Flow: testFlow(s), Name: "n1", DataDir: t.TempDir(), Streams: []Stream{s}})
	post := func(path, body string) int {
		t.Helper()
		resp, err := http.Post(r.base+path, "application/x-ndjson", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("POST %s: %d with content type %q", path, resp.StatusCode, ct)
		}
		return resp.StatusCode
	}
	for range 10 {
		if code := post("/v1/streams/words/events", `"k01"`+"\n"+`"k02"`+"\n"); code != 200 {
			t.Fatalf("push: %d", code)
		}
	}
	if code := post("/v1/streams/nope/events", `"k01"`); code != 404 {
		t.Fatalf("unknown stream: %d", code)
	}
	if code := get(t, r.base+"/v1/streams/words/events", nil); code != 405 {
		t.Fatalf("GET on a stream: %d", code)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var total struct{ Value int64 }
		get(t, r.base+"/v1/views/total", &total)
		if total.Value == 20 {
			break
		}
		if total.Value > 20 || time.Now().After(deadline) {
			t.Fatalf("total %d, want 20", total.Value)
		}
	}
	var k01 struct{ Value int64 }
	get(t, r.base+"/v1/views/counts/keys/k01", &k01)
	if k01.Value != 10 {
		t.Fatalf("k01 = %d, want 10", k01.Value)
	}
}
