package main

import (
	"testing"
	"time"

	"github.com/tessera-streams/tessera/internal/exampletest"
	"github.com/tessera-streams/tessera/splice"
)

// snapshotReads reads a pipeline on three nodes at snapshots while pings
// stream in (TestThreeNodesOneKilledExact), once the detector made at
// least least trips: its trips go to the travel-time stage over an
// exchange (KeyBy#1, keyed by origin and destination), and at one cut the
// travel-time view counts exactly the trips the detector made on it —
// every one applied downstream, none beyond the cut. Every fragment
// answers, from any node, and cuts only move forward.
func snapshotReads(t *testing.T, procs []*exampletest.Proc, least int) {
	t.Helper()
	// Until some trips crossed (the detector needs a few pings per
	// subscriber first).
	deadline := time.Now().Add(60 * time.Second)
	for {
		var trips struct{ Value int64 }
		if exampletest.TryJSON(procs[0].Base+"/v1/views/trips", &trips) && trips.Value >= int64(least) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d trips after 60s", least)
		}
		time.Sleep(50 * time.Millisecond)
	}
	last := map[string]int64{}
	var made int64
	for i := range 9 {
		var a struct {
			Entries []struct {
				Value struct{ Trips int64 }
			}
			More      bool
			Cut       splice.Cut
			Freshness []splice.Freshness
		}
		exampletest.GetJSON(t, procs[i%3].Base+"/v1/views/traveltime?consistency=snapshot&limit=100000", &a)
		var trips int64
		for _, e := range a.Entries {
			trips += e.Value.Trips
		}
		made = 0
		for _, n := range a.Cut.Exchanges["KeyBy#1"] {
			made += n
		}
		if a.Cut.Consistency != splice.Snapshot || len(a.Cut.Exchanges["KeyBy#1"]) != 16 || a.More || len(a.Freshness) != 16 {
			t.Fatalf("read %d: cut %+v, more %v, %d fragments: want a snapshot of all 16 with KeyBy#1's positions", i, a.Cut, a.More, len(a.Freshness))
		}
		if trips != made {
			t.Fatalf("read %d: travel times count %d trips, the detector made %d at the cut %v", i, trips, made, a.Cut.Offsets)
		}
		for p, off := range a.Cut.Offsets {
			if off < last[p] {
				t.Fatalf("read %d: the cut went back on %s: %d after %d", i, p, off, last[p])
			}
			last[p] = off
		}
	}
	if made == 0 {
		t.Fatalf("no trip at the last cut %v: the test saw nothing cross the exchange", last)
	}
}
