package flowstest_test

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
)

type click struct {
	User string
	At   time.Time
}

type windowCount struct {
	User  string
	Start time.Time
	N     int
}

// tumblingCounts counts clicks per user in one-minute event-time windows,
// with a process function and event-time timers: a window's count is
// emitted once the watermark passes its end.
func tumblingCounts(in flows.Source[click], maxDelay time.Duration) (*flows.Flow, *flowstest.Collector[windowCount]) {
	f := flows.New("windows", flows.WithFragments(8))
	src := flows.From(f, "clicks", in, flows.WithEventTime(func(c click) time.Time { return c.At }, maxDelay))
	ks := flows.KeyBy(src, func(c click) string { return c.User })
	p := flows.Process(ks, flows.Handler[string, click, map[int64]int, windowCount]{
		OnEvent: func(c *flows.Context[string, map[int64]int, windowCount], e click) {
			m, _ := c.State()
			if m == nil {
				m = map[int64]int{}
			}
			start := c.Timestamp().Truncate(time.Minute)
			m[start.UnixNano()]++
			c.SetState(m)
			c.SetEventTimer(start.Add(time.Minute))
		},
		OnTimer: func(c *flows.Context[string, map[int64]int, windowCount], at time.Time) {
			if c.TimeDomain() != flows.EventTime {
				return
			}
			m, _ := c.State()
			start := at.Add(-time.Minute)
			c.Emit(windowCount{User: c.Key(), Start: start.UTC(), N: m[start.UnixNano()]})
			delete(m, start.UnixNano())
			if len(m) == 0 {
				c.ClearState()
			} else {
				c.SetState(m)
			}
		},
	})
	return f, flowstest.Collect(p.Out())
}

// genClicks makes clicks whose times are out of order by at most maxDelay.
func genClicks(rng *rand.Rand, n, parts int, maxDelay time.Duration) [][]click {
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	out := make([][]click, parts)
	for p := range parts {
		clock := t0
		for range n {
			clock = clock.Add(time.Duration(rng.IntN(4000)) * time.Millisecond)
			at := clock.Add(-time.Duration(rng.Int64N(int64(maxDelay) + 1)))
			out[p] = append(out[p], click{User: fmt.Sprintf("u%d", rng.IntN(5)), At: at})
		}
	}
	return out
}

func reference(clicks [][]click) []windowCount {
	counts := map[windowCount]int{}
	for _, part := range clicks {
		for _, c := range part {
			counts[windowCount{User: c.User, Start: c.At.Truncate(time.Minute).UTC()}]++
		}
	}
	var out []windowCount
	for w, n := range counts {
		w.N = n
		out = append(out, w)
	}
	sortWindows(out)
	return out
}

func sortWindows(ws []windowCount) {
	slices.SortFunc(ws, func(a, b windowCount) int {
		if c := a.Start.Compare(b.Start); c != 0 {
			return c
		}
		if a.User < b.User {
			return -1
		}
		if a.User > b.User {
			return 1
		}
		return 0
	})
}

// Out-of-order events within the bound: every window fires once, when the
// watermark passes it, with the exact count; the end of the input fires
// the rest.
func TestEventTimeWindowsExact(t *testing.T) {
	const maxDelay = 20 * time.Second
	clicks := genClicks(rand.New(rand.NewPCG(1, 2)), 400, 3, maxDelay)
	in := flowstest.NewInput[click](3)
	f, out := tumblingCounts(in, maxDelay)
	d, err := flowstest.New(f, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.BatchSize = 16
	for i := range 400 {
		for p := range 3 {
			in.Push(p, clicks[p][i])
		}
		if i == 200 {
			if err := d.Drain(); err != nil {
				t.Fatal(err)
			}
			if len(out.Values()) == 0 {
				t.Fatal("no window fired halfway through")
			}
		}
	}
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	before := len(out.Values())
	in.Close()
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	got := out.Values()
	if len(got) == before {
		t.Fatal("the end of the input fired no window")
	}
	sortWindows(got)
	if want := reference(clicks); !reflect.DeepEqual(got, want) {
		t.Fatalf("windows:\n got %v\nwant %v", got, want)
	}
}

// With event time, restore and replay fire the same windows with the same
// counts, whatever the checkpoint and failure points.
func TestEventTimeRecoveryExact(t *testing.T) {
	const maxDelay = 10 * time.Second
	rapid.Check(t, func(t *rapid.T) {
		seed := rapid.Uint64().Draw(t, "seed")
		clicks := genClicks(rand.New(rand.NewPCG(seed, 7)), 120, 2, maxDelay)
		type fault struct{ at, kind, frag int }
		faults := rapid.SliceOfN(rapid.Custom(func(t *rapid.T) fault {
			return fault{rapid.IntRange(0, 119).Draw(t, "at"), rapid.IntRange(0, 2).Draw(t, "kind"), rapid.IntRange(0, 7).Draw(t, "frag")}
		}), 0, 8).Draw(t, "faults")
		batch := rapid.IntRange(1, 30).Draw(t, "batch")
		in := flowstest.NewInput[click](2)
		f, out := tumblingCounts(in, maxDelay)
		d, err := flowstest.New(f, time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		d.BatchSize = batch
		for i := range 120 {
			in.Push(0, clicks[0][i])
			in.Push(1, clicks[1][i])
			for _, fl := range faults {
				if fl.at != i {
					continue
				}
				var err error
				switch fl.kind {
				case 0:
					err = d.Checkpoint()
				case 1:
					err = d.Crash(fl.frag)
				case 2:
					err = d.Restart()
				}
				if err == nil {
					err = d.Drain()
				}
				if err != nil {
					t.Fatal(err)
				}
			}
		}
		in.Close()
		if err := d.Drain(); err != nil {
			t.Fatal(err)
		}
		// A window may be emitted again by a replay (sinks are at least
		// once, with the same id); the last emission per window is exact.
		last := map[[2]string]windowCount{}
		for _, w := range out.Values() {
			last[[2]string{w.User, w.Start.String()}] = w
		}
		var got []windowCount
		for _, w := range last {
			got = append(got, w)
		}
		sortWindows(got)
		if want := reference(clicks); !reflect.DeepEqual(got, want) {
			t.Fatalf("windows after faults %v:\n got %v\nwant %v", faults, got, want)
		}
	})
}

// An idle partition does not hold the watermark back once it has been
// silent for its idle timeout, and holds it again when events come back.
func TestIdlePartitionReleasesWatermark(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	for _, idle := range []bool{false, true} {
		in := flowstest.NewInput[click](2)
		f := flows.New("idle", flows.WithFragments(2))
		opts := []flows.SourceOption{flows.WithEventTime(func(c click) time.Time { return c.At }, 0)}
		if idle {
			opts = append(opts, flows.WithIdleTimeout(time.Minute))
		}
		ks := flows.KeyBy(flows.From(f, "clicks", in, opts...), func(c click) string { return c.User })
		p := flows.Process(ks, flows.Handler[string, click, int, string]{
			OnEvent: func(c *flows.Context[string, int, string], e click) { c.SetEventTimer(e.At.Add(time.Minute)) },
			OnTimer: func(c *flows.Context[string, int, string], at time.Time) { c.Emit(c.Key()) },
		})
		out := flowstest.Collect(p.Out())
		d, err := flowstest.New(f, t0)
		if err != nil {
			t.Fatal(err)
		}
		in.Push(1, click{User: "b", At: t0})
		in.Push(0, click{User: "a", At: t0})
		if err := d.Drain(); err != nil {
			t.Fatal(err)
		}
		// Partition 0 moves on; partition 1 stays silent for two minutes.
		if err := d.Advance(2 * time.Minute); err != nil {
			t.Fatal(err)
		}
		in.Push(0, click{User: "a", At: t0.Add(5 * time.Minute)})
		if err := d.Drain(); err != nil {
			t.Fatal(err)
		}
		fired := len(out.Values())
		d.Close()
		if idle && fired != 2 {
			t.Fatalf("with an idle timeout: %d timers fired, want 2 (%v)", fired, out.Values())
		}
		if !idle && fired != 0 {
			t.Fatalf("without an idle timeout the silent partition must hold the watermark: %d fired", fired)
		}
	}
}

// The watermark holds a window until the allowed out-of-orderness has
// passed: with none, an event 30 s behind arrives after its window fired
// and refines it; with a minute, the window fires once, complete.
func TestWatermarkHoldsWindowsUntilComplete(t *testing.T) {
	at := func(s string) time.Time {
		tm, _ := time.Parse("15:04:05", s)
		return time.Date(2026, 1, 1, tm.Hour(), tm.Minute(), tm.Second(), 0, time.UTC)
	}
	for _, c := range []struct {
		delay time.Duration
		want  []int // counts emitted for the 08:00 window, in order
	}{{0, []int{1, 1}}, {time.Minute, []int{2}}} {
		in := flowstest.NewInput[click](1)
		f, out := tumblingCounts(in, c.delay)
		d, err := flowstest.New(f, time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		d.BatchSize = 1
		for _, s := range []string{"08:00:30", "08:01:10", "08:00:40", "08:03:00"} {
			in.Push(0, click{User: "u", At: at(s)})
			if err := d.Drain(); err != nil {
				t.Fatal(err)
			}
		}
		var got []int
		for _, w := range out.Values() {
			if w.Start.Equal(at("08:00:00")) {
				got = append(got, w.N)
			}
		}
		d.Close()
		if !reflect.DeepEqual(got, c.want) {
			t.Fatalf("out-of-orderness %v: window 08:00 emitted %v, want %v", c.delay, got, c.want)
		}
	}
}
