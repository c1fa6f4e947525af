package pipeline

import (
	"context"
	"fmt"
	"testing"

	"time"

	"github.com/tessera-streams/tessera/examples/transport/sim"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/splice"
)

func smallSim(t testing.TB, subs int) *sim.Sim {
	t.Helper()
	c := sim.DefaultConfig()
	c.Zones, c.Subscribers = 49, subs
	s, err := sim.Simulate(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// windowEntries reads every entry of every window of a windowed keyed view.
func windowEntries[V any](t testing.TB, g splice.Gatherer, view string) map[WindowKey]V {
	t.Helper()
	res, err := splice.Evaluate(context.Background(), g, splice.Request{View: view, Op: splice.OpEntries, Query: splice.Query{Limit: 1 << 30}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[WindowKey]V{}
	for _, kw := range res.KeyedWindows {
		for _, e := range kw.Entries {
			out[WindowKey{kw.Start, e.Key}] = e.Value.(V)
		}
	}
	return out
}

func sameCells(t testing.TB, view string, got, want map[WindowKey]Cell) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d entries, want %d", view, len(got), len(want))
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || g.Trips != w.Trips || g.Subscribers() != w.Subscribers() {
			t.Fatalf("%s %v: %+v, want %d trips of %d subscribers", view, k, got[k], w.Trips, w.Subscribers())
		}
	}
}

// The flow, run by the test harness with fragments crashed and restored
// from their checkpoints on the way, computes what the sequential program
// computes: the OD views hourly and daily, travel times, people on the
// move, and no trip too late for its window.
func TestFlowEqualsSequential(t *testing.T) {
	s := smallSim(t, 300)
	net := NetworkOf(s)
	o := DefaultOptions()
	o.K, o.Fragments = 1, 6
	want := Sequential(s.Parts, net, o)
	if len(want.Trips) < 200 {
		t.Fatalf("%d trips: too few to test", len(want.Trips))
	}
	// The source releases 2000 pings per second of the driver's clock, so
	// the crashes fall mid-stream.
	start := sim.DefaultConfig().Start
	clock := start
	src := s.Source(2000, func() time.Time { return clock })
	d, err := flowstest.New(Flow(src, net, o), start)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.BatchSize = 256
	for i := 0; clock.Sub(start) < time.Duration(s.Pings()/2000+2)*time.Second; i++ {
		clock = clock.Add(time.Second)
		if err := d.Advance(time.Second); err != nil {
			t.Fatal(err)
		}
		if err := d.Drain(); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if err := d.Checkpoint(); err != nil {
				t.Fatal(err)
			}
		}
		if i%3 == 1 {
			if err := d.Crash(i % o.Fragments); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := d.Settle(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d pings, %d trips, %d hourly OD cells, %d restores", s.Pings(), len(want.Trips), len(want.Hourly), d.Restores())
	if d.Restores() == 0 {
		t.Fatal("no fragment restored: the crashes tested nothing")
	}
	sameCells(t, "od", windowEntries[Cell](t, d, "od"), want.Hourly)
	sameCells(t, "od-day", windowEntries[Cell](t, d, "od-day"), want.Daily)
	moving := windowEntries[Crowd](t, d, "moving")
	if len(moving) != len(want.Moving) {
		t.Fatalf("moving: %d entries, want %d", len(moving), len(want.Moving))
	}
	for k, w := range want.Moving {
		if moving[k].People() != w.People() {
			t.Fatalf("moving %v: %d people, want %d", k, moving[k].People(), w.People())
		}
	}
	for od, w := range want.Travel {
		v, err := d.Get("traveltime", od)
		if err != nil {
			t.Fatalf("traveltime %s: %v", od, err)
		}
		if g := v.(TravelTimes); fmt.Sprint(g.Counts) != fmt.Sprint(w.Counts) || g.Subscribers() != w.Subscribers() {
			t.Fatalf("traveltime %s: %v, want %v", od, g.Counts, w.Counts)
		}
	}
	for view, n := range map[string]int64{"trips": int64(len(want.Trips)), "too-late": 0} {
		v, err := d.Value(view)
		if err != nil {
			t.Fatal(err)
		}
		if v.(int64) != n {
			t.Fatalf("%s: %d, want %d", view, v, n)
		}
	}
}
