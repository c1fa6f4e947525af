package ingest

// Tests written as an outside user of HTTP ingest would write them:
// requests over a real HTTP connection on 127.0.0.1, a flow started by
// actor.Start reading the stream, a crash that keeps only what was synced
// (pebble's crashable file system, for the log and the checkpoints), and a
// plain Go model of what the flow must count.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/tessera-streams/tessera/actor"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/splice"
)

// oPost sends body to url and returns the status, the Idempotent-Replayed
// header and the decoded JSON answer; every answer must be JSON.
func oPost(t *testing.T, url, ct, key, body string) (int, string, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if resp.Header.Get("Content-Type") != "application/json" || json.Unmarshal(b, &m) != nil {
		t.Fatalf("answer %d (%s) is not JSON: %q", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	if resp.StatusCode != 200 {
		if _, ok := m["error"].(string); !ok {
			t.Fatalf("answer %d without an error: %s", resp.StatusCode, b)
		}
	}
	return resp.StatusCode, resp.Header.Get("Idempotent-Replayed"), m
}

// Events pushed over HTTP — JSON lines and arrays, with and without
// Idempotency-Key, retried, and mixed with bad requests (another content
// type, malformed events, a body over the limit, a key reused with another
// body) — are counted by a flow reading the stream. The process crashes
// (only what was synced survives, of the log and of the checkpoints) in
// the middle, and again after retries of acknowledged requests: the
// counts are those of the acknowledged requests, each once; bad requests
// get their JSON errors and change nothing.
func TestOutsideIngestCrashesAndRetries(t *testing.T) {
	mem := vfs.NewCrashableMem()
	rng := rand.New(rand.NewPCG(31, 32))
	want := map[string]int64{}
	var total int64
	type sent struct{ key, ct, body string }
	var acked []sent // acknowledged keyed requests, to retry
	var fs vfs.FS = mem
	var l *Log
	var s *Stream[event]
	var e *actor.Engine
	var store *recovery.Store
	var srv *httptest.Server
	start := func() {
		var err error
		if l, err = Open("log", Options{FS: fs, Logger: quiet()}); err != nil {
			t.Fatal(err)
		}
		if s, err = NewStream(l, Config[event]{Name: "clicks", Partitions: 3, MaxBody: 2048}); err != nil {
			t.Fatal(err)
		}
		if store, err = recovery.Open("checkpoints", fs, quiet()); err != nil {
			t.Fatal(err)
		}
		f := flows.New("clicks", flows.WithFragments(5))
		flows.Count(flows.KeyBy(flows.From(f, "clicks", flows.Source[event](s)), func(ev event) string { return ev.Text })).View("users")
		plan, err := flowcore.Compile(f)
		if err != nil {
			t.Fatal(err)
		}
		if e, err = actor.Start(plan, actor.Config{Logger: quiet(), Store: store, CheckpointInterval: 20 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		srv = httptest.NewServer(s)
	}
	stop := func() {
		srv.Close()
		e.Stop()
		store.Close()
		l.Close()
	}
	// crash keeps what was synced, and starts again on it.
	crash := func() {
		clone := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rng})
		stop()
		mem, fs = clone, clone
		start()
	}
	const nd = "application/x-ndjson"
	push := func(n int) {
		for i := range n {
			var evs []event
			for range 1 + rng.IntN(5) {
				evs = append(evs, event{Text: fmt.Sprintf("u%d", rng.IntN(20)), N: i})
			}
			var body strings.Builder
			ct := nd
			if rng.IntN(2) == 0 {
				b, _ := json.Marshal(evs)
				body.Write(b)
				ct = "application/json"
			} else {
				for _, ev := range evs {
					b, _ := json.Marshal(ev)
					body.Write(b)
					body.WriteString("\n")
				}
			}
			key := ""
			if rng.IntN(3) > 0 {
				key = fmt.Sprintf("req-%d-%d", len(acked), rng.Int64())
			}
			code, _, ans := oPost(t, srv.URL+"/v1/streams/clicks/events", ct, key, body.String())
			if code != 200 || ans["accepted"] != float64(len(evs)) {
				t.Fatalf("push: %d %v", code, ans)
			}
			for _, ev := range evs {
				want[ev.Text]++
				total++
			}
			if key != "" {
				acked = append(acked, sent{key, ct, body.String()})
			}
			// Now and then a bad request, which must change nothing.
			url := srv.URL + "/v1/streams/clicks/events"
			switch rng.IntN(6) {
			case 0:
				if code, _, _ := oPost(t, url, "text/plain", "", body.String()); code != http.StatusUnsupportedMediaType {
					t.Fatalf("another content type: %d, want 415", code)
				}
			case 1:
				if code, _, _ := oPost(t, url, nd, "", `{"text":"ok"}`+"\n"+`{"text": 3}`+"\n"); code != http.StatusBadRequest {
					t.Fatalf("a malformed event: %d, want 400", code)
				}
			case 2:
				if code, _, _ := oPost(t, url, nd, "", strings.Repeat(`{"text":"big"}`+"\n", 200)); code != http.StatusRequestEntityTooLarge {
					t.Fatalf("a body over the limit: %d, want 413", code)
				}
			case 3:
				if len(acked) > 0 {
					a := acked[rng.IntN(len(acked))]
					if code, _, _ := oPost(t, url, nd, a.key, `{"text":"other"}`+"\n"); code != http.StatusUnprocessableEntity {
						t.Fatalf("a key reused with another body: %d, want 422", code)
					}
				}
			}
		}
	}
	retry := func(n int) {
		for range n {
			a := acked[rng.IntN(len(acked))]
			code, replayed, ans := oPost(t, srv.URL+"/v1/streams/clicks/events", a.ct, a.key, a.body)
			if code != 200 || replayed != "true" {
				t.Fatalf("a retry of acknowledged request %s: %d, replayed %q, %v", a.key, code, replayed, ans)
			}
		}
	}
	// await waits until the flow counted total events, then checks the
	// counts.
	await := func(what string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		var got map[string]int64
		for {
			got = map[string]int64{}
			var n int64
			res, err := splice.Evaluate(context.Background(), e, splice.Request{View: "users", Op: splice.OpEntries, Query: splice.Query{Limit: 1000}})
			if err == nil {
				for _, en := range res.Entries {
					got[en.Key] = en.Value.(int64)
					n += got[en.Key]
				}
			}
			if n >= total {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: 20 s without the %d events counted (%d)", what, total, n)
			}
			time.Sleep(5 * time.Millisecond)
		}
		for u, n := range want {
			if got[u] != n {
				t.Fatalf("%s: %s counted %d, want %d", what, u, got[u], n)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d users, want %d", what, len(got), len(want))
		}
	}
	start()
	push(150)
	crash() // some of it counted, checkpointed or not
	await("after the first crash")
	retry(40)
	push(100)
	await("after retries and more pushes")
	crash()
	retry(40) // after the crash, from the keys the log kept
	await("after the second crash and retries")
	stop()
}
