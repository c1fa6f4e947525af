package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/connectors/ingest"
	"github.com/tessera-streams/tessera/internal/exampletest"
	"github.com/tessera-streams/tessera/splice"
)

// snapAnswer is the part of a view answer these tests read.
type snapAnswer struct {
	Value   int64
	Entries []struct {
		Key   string
		Value int64
	}
	More      bool
	Complete  bool
	Stale     bool
	Cut       *splice.Cut
	Freshness []splice.Freshness
	Error     string
	Fragments []int
}

func getStatus(t *testing.T, u string, into any) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK && into != nil {
		if err := json.Unmarshal(b, into); err != nil {
			t.Fatalf("GET %s: %q: %v", u, b, err)
		}
	}
	return resp.StatusCode, string(b)
}

func cutSum(c *splice.Cut) int64 {
	var n int64
	for _, off := range c.Offsets {
		n += off
	}
	return n
}

// Snapshot reads on three nodes while the generator runs (at 200k events/s,
// which the race detector and a shared machine keep up with):
// the generator emits one word per offset, so an answer from one cut
// counts exactly the sum of the cut's offsets — the total, and the sum of
// every word's count alike — and every fragment reports the cut's offsets.
// A latest read splices fragments at different offsets and breaks this
// (each fragment's count is its own). Cuts only move forward.
func TestSnapshotReadsAreOneCut(t *testing.T) {
	t.Parallel()
	bin := exampletest.Build(t, "wordcount")
	procs, _ := startCluster(t, bin, 3, "-seed", "11", "-fragments", "16", "-partitions", "4", "-rate", "100000", "-checkpoint-interval", "200ms")
	waitTotalAtLeast(t, procs[0].Base, 50_000)
	last := map[string]int64{}
	rapid.Check(t, func(rt *rapid.T) {
		node := rapid.IntRange(0, 2).Draw(rt, "node")
		view := rapid.SampledFrom([]string{"total", "words"}).Draw(rt, "view")
		// The test is about which cut an answer reads, not how fast a
		// cut is found: a race build on a loaded machine can take longer
		// than the default read timeout to hold every reader still.
		u := procs[node].Base + "/v1/views/" + view + "?consistency=snapshot&timeout=30s"
		if view == "words" {
			u += "&limit=100000"
		}
		var a snapAnswer
		if code, body := getStatus(t, u, &a); code != http.StatusOK {
			rt.Fatalf("GET %s: %d %s", u, code, body)
		}
		if a.Cut == nil || a.Cut.Consistency != splice.Snapshot || len(a.Cut.Offsets) != 4 {
			rt.Fatalf("cut %+v, want a snapshot over the 4 partitions", a.Cut)
		}
		want := cutSum(a.Cut)
		got := a.Value
		if view == "words" {
			if a.More {
				rt.Fatalf("more than 100000 words")
			}
			got = 0
			for _, e := range a.Entries {
				got += e.Value
			}
		}
		if got != want {
			rt.Fatalf("%s counts %d at cut %v, whose offsets sum to %d", view, got, a.Cut.Offsets, want)
		}
		if len(a.Freshness) != 16 {
			rt.Fatalf("%d fragments answered, want 16", len(a.Freshness))
		}
		for _, f := range a.Freshness {
			for p, off := range a.Cut.Offsets {
				if f.Offsets[p] != off {
					rt.Fatalf("fragment %d at %s %d, the cut says %d", f.Fragment, p, f.Offsets[p], off)
				}
			}
		}
		for p, off := range a.Cut.Offsets {
			if off < last[p] {
				rt.Fatalf("cut went back on %s: %d after %d", p, off, last[p])
			}
			last[p] = off
		}
	})
}

// snapshotComplete checks, on a cluster of three nodes that applied a
// bounded input of n events (TestThreeNodesExact), that a snapshot read
// says complete and its cut is the whole input, and that a min_offsets
// beyond the input's end is a JSON 504 that says what it waited for, not
// a hang.
func snapshotComplete(t *testing.T, procs []*exampletest.Proc, n int64) {
	t.Helper()
	exampletest.WaitDone(t, procs[0].Base, nil)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var a snapAnswer
		code, body := getStatus(t, procs[1].Base+"/v1/views/total?consistency=snapshot", &a)
		if code == http.StatusOK && a.Complete {
			if a.Value != n || cutSum(a.Cut) != n {
				t.Fatalf("complete answer counts %d at cut %v, want %d", a.Value, a.Cut.Offsets, n)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no complete snapshot answer in 30s: %d %s", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	u := procs[2].Base + "/v1/views/total?consistency=snapshot&timeout=300ms&min_offsets=" + url.QueryEscape(fmt.Sprintf("lines/0:%d", n+1))
	code, body := getStatus(t, u, nil)
	var e struct{ Error string }
	if code != http.StatusGatewayTimeout || json.Unmarshal([]byte(body), &e) != nil ||
		!bytes.Contains([]byte(e.Error), []byte("lines/0 up to")) {
		t.Fatalf("GET %s: %d %s, want a JSON 504 naming lines/0", u, code, body)
	}
	u = procs[2].Base + "/v1/views/total?consistency=snapshot&min_offsets=" + url.QueryEscape("nosuch/0:1")
	if code, body := getStatus(t, u, nil); code != http.StatusBadRequest {
		t.Fatalf("GET %s: %d %s, want 400", u, code, body)
	}
}

// Read-your-writes over HTTP ingest: every push's answer carries a
// min_offsets token, and a read with it sees the words just pushed, at
// once, latest or snapshot.
func TestReadYourWrites(t *testing.T) {
	t.Parallel()
	bin := exampletest.Build(t, "wordcount")
	p := exampletest.Start(t, bin, "-source", "http", "-data", t.TempDir(), "-http", exampletest.FreePort(t), "-progress", "0",
		"-log-level", "warn", "-partitions", "3", "-fragments", "8")
	p.WaitURL(t)
	for i := range 40 {
		w := fmt.Sprintf("ryw%03d", i)
		body := []byte(fmt.Sprintf("{\"text\": %q}\n{\"text\": \"%s filler\"}\n", w, w))
		resp, err := http.Post(p.Base+"/v1/streams/lines/events", "application/x-ndjson", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var a ingest.Answer
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &a) != nil || a.MinOffsets == "" {
			t.Fatalf("push: %d %s", resp.StatusCode, b)
		}
		mode := []string{"latest", "snapshot"}[i%2]
		u := fmt.Sprintf("%s/v1/views/words/keys/%s?consistency=%s&min_offsets=%s", p.Base, w, mode, url.QueryEscape(a.MinOffsets))
		var got struct {
			Value int64
			Cut   splice.Cut
		}
		if code, body := getStatus(t, u, &got); code != http.StatusOK || got.Value != 2 {
			t.Fatalf("GET %s right after the push: %d %s, want 2", u, code, body)
		}
		want, _ := splice.ParseOffsets(a.MinOffsets)
		for part, off := range want {
			if got.Cut.Offsets[part] < off {
				t.Fatalf("answer's cut %v does not cover the token %s", got.Cut.Offsets, a.MinOffsets)
			}
		}
	}
}
