package actor

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/splice"
)

// While a pause holds, no reader reads and every fragment sits exactly at
// the cut, so the total is the cut's sum (one event per offset); released,
// the readers read on. A pause not released ends with its lease.
func TestPauseHoldsReadersAtOneCut(t *testing.T) {
	src, _ := gen.New(gen.Config{Partitions: 3, Seed: 2, Rate: 200_000}, word)
	e, err := Start(countFlow(t, src, ""), Config{Logger: quiet(), BatchSize: 64, Credits: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	for e.Readers()[0].Position.Load() < 1000 {
		time.Sleep(time.Millisecond)
	}
	for range 5 {
		cut, release, err := e.Pause(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var sum int64
		for _, off := range cut {
			sum += off
		}
		res, err := splice.Evaluate(context.Background(), e, splice.Request{View: "total"})
		if err != nil {
			t.Fatal(err)
		}
		again, _ := splice.Evaluate(context.Background(), e, splice.Request{View: "total"})
		if res.Value != sum || again.Value != sum {
			t.Fatalf("total %v then %v during a pause at %v (sum %d)", res.Value, again.Value, cut, sum)
		}
		for _, f := range res.Freshness {
			for p, off := range cut {
				if f.Offsets[p] != off {
					t.Fatalf("fragment %d at %s %d, cut %d", f.Fragment, p, f.Offsets[p], off)
				}
			}
		}
		release()
		waitPast(t, e, cut)
	}
	// Not released: the lease (the deadline and a second) lets go.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	cut, _, err := e.Pause(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitPast(t, e, cut)
}

// waitPast waits until every reader read beyond the cut.
func waitPast(t *testing.T, e *Engine, cut map[string]int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, r := range e.Readers() {
		name := e.plan.PartitionName(0, r.Partition)
		for r.Position.Load() <= cut[name] {
			if time.Now().After(deadline) {
				t.Fatalf("%s still at %d, the cut's %d", name, r.Position.Load(), cut[name])
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// A flow with a second KeyBy cannot be held at one cut: a bad request.
func TestPauseRefusesExchanges(t *testing.T) {
	src, _ := gen.New(gen.Config{Partitions: 2, Seed: 1, Events: 1000}, word)
	f := flows.New("two", flows.WithFragments(4))
	counts := flows.Count(flows.KeyBy(flows.From(f, "gen", src), flows.Identity[string]))
	again := flows.KeyBy(counts.Updates(), func(kv flows.KV[string, int64]) string { return kv.Key })
	flows.AggregateView(again.Values(), "total", splice.Count[flows.KV[string, int64]](), func(kv flows.KV[string, int64]) flows.KV[string, int64] { return kv })
	p, err := f.Plan()
	if err != nil {
		t.Fatal(err)
	}
	e, err := Start(p, Config{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	_, _, err = e.Pause(context.Background())
	if !errors.Is(err, splice.ErrBadRequest) {
		t.Fatalf("Pause = %v, want a bad request", err)
	}
	// The error says which exchange and why, and what to do instead.
	for _, want := range []string{"flow two", "keys again", "checkpoint", "consistency=latest"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Pause's error %q does not say %q", err, want)
		}
	}
}
