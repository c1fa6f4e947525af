package actor

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/splice"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func quiet() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

func word(_ int, _ int64, r *gen.Rand) string { return fmt.Sprintf("w%03d", r.Intn(500)) }

func countFlow(t *testing.T, src flows.Source[string], poison string) *flows.Plan {
	f := flows.New("count", flows.WithFragments(64))
	ks := flows.KeyBy(flows.From(f, "gen", src), flows.Identity[string])
	flows.Aggregate(ks, func() int64 { return 0 }, func(n int64, w string) int64 {
		if w == poison {
			panic("poisoned word " + w)
		}
		return n + 1
	}).View("words")
	flows.AggregateView(ks.Values(), "total", splice.Count[string](), flows.Identity[string])
	p, err := f.Plan()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func waitDrained(t *testing.T, e *Engine) {
	t.Helper()
	select {
	case <-e.Drained():
	case <-time.After(60 * time.Second):
		t.Fatal("engine did not drain in 60s")
	}
	if err := e.Err(); err != nil {
		t.Fatal(err)
	}
}

func TestEngineCountsExactly(t *testing.T) {
	src, _ := gen.New(gen.Config{Partitions: 3, Seed: 7, Events: 200_000}, word)
	want := map[string]int64{}
	for p := range 3 {
		for o := range src.Limit(p) {
			want[src.Event(p, o)]++
		}
	}
	e, err := Start(countFlow(t, src, ""), Config{Logger: quiet(), BatchSize: 64, Credits: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	waitDrained(t, e)
	res, err := splice.Evaluate(context.Background(), e, splice.Request{View: "total"})
	if err != nil || res.Value != int64(200_000) {
		t.Fatalf("total = %v, %v", res.Value, err)
	}
	all, err := splice.Evaluate(context.Background(), e, splice.Request{View: "words", Op: splice.OpEntries, Query: splice.Query{Limit: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Entries) != len(want) {
		t.Fatalf("%d words, want %d", len(all.Entries), len(want))
	}
	for _, en := range all.Entries {
		if en.Value != want[en.Key] {
			t.Fatalf("%s = %v, want %d", en.Key, en.Value, want[en.Key])
		}
	}
	for _, fr := range e.Fragments() {
		if fr.Duplicates.Load() != 0 || fr.Gaps.Load() != 0 {
			t.Fatalf("fragment %d: %d duplicates, %d gaps", fr.ID, fr.Duplicates.Load(), fr.Gaps.Load())
		}
	}
}

func TestPanickingKeyLeavesOthersExact(t *testing.T) {
	src, _ := gen.New(gen.Config{Partitions: 2, Seed: 3, Events: 100_000}, word)
	const poison = "w042"
	want := map[string]int64{}
	poisoned := 0
	for p := range 2 {
		for o := range src.Limit(p) {
			w := src.Event(p, o)
			if w == poison {
				poisoned++
				continue
			}
			want[w]++
		}
	}
	var mu sync.Mutex
	var dead []flows.DeadLetter
	e, err := Start(countFlow(t, src, poison), Config{Logger: quiet(), OnDeadLetters: func(d []flows.DeadLetter) {
		mu.Lock()
		dead = append(dead, d...)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	waitDrained(t, e)
	mu.Lock()
	defer mu.Unlock()
	if len(dead) != poisoned {
		t.Fatalf("%d dead letters, want %d", len(dead), poisoned)
	}
	for _, d := range dead {
		if d.Key != poison || !strings.Contains(d.Error, "poisoned") || src.Event(d.Partition, d.Offset) != poison {
			t.Fatalf("dead letter does not point at the poisoned event: %+v", d)
		}
	}
	for w, n := range want {
		res, err := splice.Evaluate(context.Background(), e, splice.Request{View: "words", Op: splice.OpKey, Key: w})
		if err != nil || res.Entries[0].Value != n {
			t.Fatalf("%s = %v, %v; want %d", w, res.Entries, err, n)
		}
	}
}

func TestStopWhileRunningUnbounded(t *testing.T) {
	src, _ := gen.New(gen.Config{Partitions: 2, Seed: 1}, word)
	e, err := Start(countFlow(t, src, ""), Config{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := splice.Evaluate(context.Background(), e, splice.Request{View: "total"})
		if err != nil {
			t.Fatal(err)
		}
		if res.Value.(int64) > 10_000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no progress in 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.Stop()
	e.Stop()
}
