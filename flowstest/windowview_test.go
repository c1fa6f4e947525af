package flowstest_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/splice"
)

// visitorsFlow counts distinct users per sliding window (a windowed view
// spliced over fragments), events per window, and alerts when the distinct
// count rises above limit.
func visitorsFlow(in flows.Source[click], fragments int, delay time.Duration, limit int64) *flows.Flow {
	f := flows.New("visitors", flows.WithFragments(fragments))
	src := flows.From(f, "clicks", in, flows.WithEventTime(func(c click) time.Time { return c.At }, delay))
	ks := flows.KeyBy(src, func(c click) string { return c.User })
	w := flows.WindowAggregate(ks, flows.Sliding(10*time.Minute, time.Minute),
		func() int64 { return 0 }, func(n int64, _ click) int64 { return n + 1 })
	v := flows.WindowView(w, "visitors", splice.Count[struct{}](), func(string, int64) struct{} { return struct{}{} }, 1000*time.Hour)
	flows.WindowView(w, "events", splice.Sum[int64](), func(_ string, n int64) int64 { return n }, 1000*time.Hour)
	flows.Alert(v, "crowded", func(prev, cur int64) bool { return prev <= limit && cur > limit })
	return f
}

type refWindow struct{ users, events int64 }

// referenceVisitors computes every 10-minute window (one per minute) from
// the first window with an event to the last, empty ones included.
func referenceVisitors(parts [][]click) (starts []int64, wins map[int64]refWindow) {
	size, slide := int64(10*time.Minute), int64(time.Minute)
	users := map[int64]map[string]bool{}
	wins = map[int64]refWindow{}
	lo, hi := int64(math.MaxInt64), int64(math.MinInt64)
	for _, p := range parts {
		for _, c := range p {
			ts := c.At.UnixNano()
			last := ts - ts%slide
			for s := last; s > ts-size; s -= slide {
				if users[s] == nil {
					users[s] = map[string]bool{}
				}
				users[s][c.User] = true
				r := wins[s]
				r.events++
				wins[s] = r
				lo, hi = min(lo, s), max(hi, s)
			}
		}
	}
	for s := lo; s <= hi; s += slide {
		r := wins[s]
		r.users = int64(len(users[s]))
		wins[s] = r
		starts = append(starts, s)
	}
	return starts, wins
}

func allWindows(t rapid.TB, d *flowstest.Driver, view string) []splice.Window {
	res, err := splice.Evaluate(context.Background(), d, splice.Request{View: view, Op: splice.OpWindows,
		Query: splice.Query{From: math.MinInt64, Limit: math.MaxInt}})
	if err != nil {
		t.Fatal(err)
	}
	return res.Windows
}

// Windowed views splice every window exactly, and the alert on the global
// count fires exactly once per rising edge, across checkpoints, fragment
// crashes and restarts at random moments.
func TestWindowViewAndAlertExact(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		seed := rapid.Uint64().Draw(t, "seed")
		nparts := rapid.IntRange(1, 3).Draw(t, "partitions")
		fragments := rapid.IntRange(1, 8).Draw(t, "fragments")
		pool := rapid.IntRange(3, 40).Draw(t, "users")
		limit := int64(rapid.IntRange(1, pool).Draw(t, "limit"))
		checkWindowViewAndAlert(t, seed, nparts, fragments, pool, limit, rapid.IntRange(1, 64).Draw(t, "batch"))
	})
}

// An input TestWindowViewAndAlertExact once failed on: "0 alerts, want 2
// (limit 1)".
func TestWindowViewAndAlertExactRegression(t *testing.T) {
	checkWindowViewAndAlert(t, 0, 1, 1, 3, 1, 1)
}

// checkWindowViewAndAlert compares the windows and alerts of nparts
// partitions of clicks by pool users, made from seed, with a sequential
// reference; the seed also picks the checkpoints, crashes and restarts.
func checkWindowViewAndAlert(t rapid.TB, seed uint64, nparts, fragments, pool int, limit int64, batch int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	delay := 2 * time.Minute
	var users []string
	for i := range pool {
		users = append(users, fmt.Sprintf("u%02d", i))
	}
	parts := make([][]click, nparts)
	for p := range parts {
		// Bursts of activity make the distinct count rise and fall.
		parts[p] = walkClicks(rng, 300, users, 20*time.Second, delay)
		for i := range parts[p] {
			if (i/60)%2 == 1 {
				parts[p][i].User = users[0]
			}
		}
	}
	starts, ref := referenceVisitors(parts)

	in := flowstest.NewInput[click](nparts)
	d, err := flowstest.New(visitorsFlow(in, fragments, delay, limit), time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.BatchSize = batch
	var got []flows.AlertRecord
	step := func() {
		recs, err := d.StepAlerts()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, recs...)
	}
	next := make([]int, nparts)
	for done := false; !done; {
		done = true
		for p := range parts {
			n := min(len(parts[p])-next[p], rng.IntN(40))
			in.Push(p, parts[p][next[p]:next[p]+n]...)
			next[p] += n
			done = done && next[p] == len(parts[p])
		}
		if err := d.Drain(); err != nil {
			t.Fatal(err)
		}
		switch rng.IntN(8) {
		case 0, 1, 2:
			step()
		case 3:
			if err := d.Checkpoint(); err != nil {
				t.Fatal(err)
			}
		case 4:
			if err := d.Crash(rng.IntN(fragments)); err != nil {
				t.Fatal(err)
			}
		case 5:
			step()
			if err := d.Restart(); err != nil { // what was not checkpointed is replayed
				t.Fatal(err)
			}
		}
	}
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	// Every event is in: every window, complete or not, is exact.
	for _, view := range []string{"visitors", "events"} {
		seen := 0
		for _, w := range allWindows(t, d, view) {
			r, ok := ref[w.Start.UnixNano()]
			if !ok || w.End.Sub(w.Start) != 10*time.Minute {
				t.Fatalf("%s: window %v–%v has no events in the reference", view, w.Start, w.End)
			}
			want := r.users
			if view == "events" {
				want = r.events
			}
			if w.Value.(int64) != want {
				t.Fatalf("%s: window %v: %v, want %d", view, w.Start, w.Value, want)
			}
			seen++
		}
		if nonEmpty := countNonEmpty(ref); seen != nonEmpty {
			t.Fatalf("%s: %d windows, want %d", view, seen, nonEmpty)
		}
	}
	// The latest complete window is the last one the watermark passed.
	res, err := splice.Evaluate(context.Background(), d, splice.Request{View: "visitors", Op: splice.OpWindows,
		Query: splice.Query{From: math.MinInt64, Latest: true}})
	if err == nil {
		if len(res.Windows) != 1 || !res.Windows[0].Complete {
			t.Fatalf("latest: %+v", res.Windows)
		}
		for _, f := range d.Freshness() {
			if f.Watermark.Before(res.Windows[0].End) {
				t.Fatalf("latest window ends %v after fragment %d's watermark %v", res.Windows[0].End, f.Fragment, f.Watermark)
			}
		}
	}
	in.Close()
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	step()

	var want []int64
	prev := int64(0)
	for _, s := range starts {
		if cur := ref[s].users; prev <= limit && cur > limit {
			want = append(want, s)
		}
		prev = ref[s].users
	}
	if len(got) != len(want) {
		t.Fatalf("%d alerts, want %d (limit %d): %v", len(got), len(want), limit, got)
	}
	for i, r := range got {
		if r.Start.UnixNano() != want[i] || r.Value.(int64) != ref[want[i]].users || r.Value.(int64) <= limit {
			t.Fatalf("alert %d: %+v, want window %v", i, r, time.Unix(0, want[i]).UTC())
		}
	}
}

func countNonEmpty(ref map[int64]refWindow) int {
	n := 0
	for _, r := range ref {
		if r.events > 0 {
			n++
		}
	}
	return n
}
