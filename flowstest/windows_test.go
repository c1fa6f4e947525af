package flowstest_test

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
)

type winRef struct {
	key   string
	start int64
}

// referenceWindows runs the window semantics sequentially, one event at a
// time (what one partition and one fragment with batches of one do): the
// final value of every window, the late refinements, and the too-late
// events.
func referenceWindows(evs []click, size, slide, delay, lateness time.Duration) (map[winRef]int, int, []click, int) {
	bornLate := 0 // windows whose first event came after the watermark passed their end
	counts := map[winRef]int{}
	fired := map[winRef]bool{}
	final := map[winRef]int{}
	var tooLate []click
	lateFirings := 0
	wm := int64(flowcore.NoWatermark)
	maxTS := int64(flowcore.NoWatermark)
	for _, e := range evs {
		ts := e.At.UnixNano()
		placed := false
		last := ts - ((ts%int64(slide))+int64(slide))%int64(slide)
		for s := last; s > ts-int64(size); s -= int64(slide) {
			end := s + int64(size)
			if wm != flowcore.NoWatermark && end+int64(lateness) <= wm {
				continue
			}
			placed = true
			w := winRef{e.User, s}
			if counts[w] == 0 && wm != flowcore.NoWatermark && end <= wm {
				bornLate++
			}
			counts[w]++
			final[w] = counts[w]
			if fired[w] || (wm != flowcore.NoWatermark && end <= wm) {
				fired[w] = true
				lateFirings++
			}
		}
		if !placed {
			tooLate = append(tooLate, e)
		}
		maxTS = max(maxTS, ts)
		wm = max(wm, maxTS-int64(delay))
		for w := range counts {
			end := w.start + int64(size)
			if end <= wm {
				fired[w] = true
			}
			if end+int64(lateness) <= wm {
				delete(counts, w)
			}
		}
	}
	return final, lateFirings, tooLate, bornLate
}

func TestWindowAggregateExact(t *testing.T) {
	const (
		size, slide     = time.Minute, 20 * time.Second
		delay, lateness = 10 * time.Second, 30 * time.Second
	)
	rng := rand.New(rand.NewPCG(3, 4))
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	var evs []click
	clock := t0
	for range 3000 {
		clock = clock.Add(time.Duration(rng.IntN(5000)) * time.Millisecond)
		at := clock.Add(-time.Duration(rng.Int64N(int64(delay))))
		if rng.IntN(10) == 0 { // late: some within the allowed lateness, some beyond
			at = clock.Add(-delay - time.Duration(rng.Int64N(int64(2*time.Minute))))
		}
		evs = append(evs, click{User: []string{"a", "b", "c"}[rng.IntN(3)], At: at})
	}
	in := flowstest.NewInput[click](1)
	f := flows.New("windows", flows.WithFragments(1))
	ks := flows.KeyBy(flows.From(f, "clicks", in, flows.WithEventTime(func(c click) time.Time { return c.At }, delay)),
		func(c click) string { return c.User })
	w := flows.WindowAggregate(ks, flows.Sliding(size, slide), func() int { return 0 },
		func(n int, _ click) int { return n + 1 }, flows.AllowedLateness(lateness))
	results := flowstest.Collect(w.Results())
	tooLate := flowstest.Collect(w.TooLate())
	d, err := flowstest.New(f, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.BatchSize = 1
	in.Push(0, evs...)
	in.Close()
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	wantFinal, wantLate, wantTooLate, bornLate := referenceWindows(evs, size, slide, delay, lateness)
	got := map[winRef]int{}
	lateFirings, onTime := 0, map[winRef]int{}
	for _, r := range results.Values() {
		if r.End.Sub(r.Start) != size {
			t.Fatalf("window %v..%v", r.Start, r.End)
		}
		w := winRef{r.Key, r.Start.UnixNano()}
		got[w] = r.Value
		if r.Firing == flows.Late {
			lateFirings++
		} else {
			onTime[w]++
		}
	}
	if !reflect.DeepEqual(got, wantFinal) {
		for w, v := range got {
			if wantFinal[w] != v {
				t.Fatalf("window %s %v: got %d, want %d (of %d windows, want %d)", w.key, time.Unix(0, w.start).UTC(), v, wantFinal[w], len(got), len(wantFinal))
			}
		}
		t.Fatalf("%d windows, want %d", len(got), len(wantFinal))
	}
	for w, n := range onTime {
		if n != 1 {
			t.Fatalf("window %v fired on time %d times", w, n)
		}
	}
	if len(onTime) != len(wantFinal)-bornLate {
		t.Fatalf("%d windows fired on time, want %d (the end of input fires the rest; %d were born late)", len(onTime), len(wantFinal)-bornLate, bornLate)
	}
	if lateFirings != wantLate || wantLate == 0 {
		t.Fatalf("%d late refinements, want %d", lateFirings, wantLate)
	}
	if gotTL := tooLate.Values(); !reflect.DeepEqual(gotTL, wantTooLate) || len(wantTooLate) == 0 {
		t.Fatalf("%d too-late events, want %d", len(gotTL), len(wantTooLate))
	}
}

// Window state and its firing marks survive a restore: with checkpoints and
// crashes at every hundred events, every window's last value is exact and
// none fires on time twice from the restored state.
func TestWindowAggregateRestore(t *testing.T) {
	evs := walkClicks(rand.New(rand.NewPCG(5, 6)), 2000, []string{"a", "b", "c", "d"}, 3*time.Second, 5*time.Second)
	run := func(faults bool) map[winRef]int {
		rs := windowsWithFaults(t, evs, 4, 7, 5*time.Second, faults, func(ks flows.KeyedStream[string, click]) flows.Windowed[string, click, int] {
			return flows.WindowAggregate(ks, flows.Tumbling(time.Minute), func() int { return 0 }, func(n int, _ click) int { return n + 1 })
		})
		out := map[winRef]int{}
		for _, r := range rs {
			out[winRef{r.Key, r.Start.UnixNano()}] = r.Value
		}
		return out
	}
	clean, faulty := run(false), run(true)
	if len(clean) == 0 || !reflect.DeepEqual(clean, faulty) {
		t.Fatalf("with crashes %d windows differ from %d without", len(faulty), len(clean))
	}
}

// A global window fires when the input ends; FireEvery fires it early every
// n events before that; the counts survive a restore.
func TestGlobalWindowWithCountTrigger(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	for _, crash := range []bool{false, true} {
		in := flowstest.NewInput[click](1)
		f := flows.New("global", flows.WithFragments(2))
		ks := flows.KeyBy(flows.From(f, "clicks", in, flows.WithEventTime(func(c click) time.Time { return c.At }, 0)),
			func(c click) string { return c.User })
		w := flows.WindowAggregate(ks, flows.Global(), func() int { return 0 }, func(n int, _ click) int { return n + 1 }, flows.FireEvery(3))
		results := flowstest.Collect(w.Results())
		d, err := flowstest.New(f, time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		for i := range 8 {
			in.Push(0, click{User: "a", At: t0.Add(time.Duration(i) * time.Hour)})
			if i == 4 {
				if err := d.Drain(); err != nil {
					t.Fatal(err)
				}
				if crash {
					if err := d.Checkpoint(); err != nil {
						t.Fatal(err)
					}
					if err := d.Restart(); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		in.Push(0, click{User: "b", At: t0})
		in.Close()
		if err := d.Drain(); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range results.Values() {
			if !r.Start.IsZero() || !r.End.IsZero() {
				t.Fatalf("a global window with bounds %v..%v", r.Start, r.End)
			}
			got = append(got, fmt.Sprintf("%s=%d %s", r.Key, r.Value, r.Firing))
		}
		slices.Sort(got)
		want := []string{"a=3 early", "a=6 early", "a=8 on-time", "b=1 on-time"}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("crash %v: %v, want %v", crash, got, want)
		}
		d.Close()
	}
}

// EarlyEvery emits the windows that changed, each period of processing
// time, until the watermark closes them.
func TestEarlyEveryPeriod(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	in := flowstest.NewInput[click](1)
	f := flows.New("early", flows.WithFragments(1))
	ks := flows.KeyBy(flows.From(f, "clicks", in, flows.WithEventTime(func(c click) time.Time { return c.At }, 0)),
		func(c click) string { return c.User })
	w := flows.WindowAggregate(ks, flows.Tumbling(time.Hour), func() int { return 0 }, func(n int, _ click) int { return n + 1 },
		flows.EarlyEvery(time.Second))
	results := flowstest.Collect(w.Results())
	d, err := flowstest.New(f, time.Unix(100, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	step := func(n int, at time.Duration) {
		for range n {
			in.Push(0, click{User: "a", At: t0.Add(at)})
		}
		if err := d.Drain(); err != nil {
			t.Fatal(err)
		}
		if err := d.Advance(time.Second); err != nil {
			t.Fatal(err)
		}
	}
	step(2, time.Minute)
	step(0, time.Minute) // nothing changed: no early result
	step(3, 2*time.Minute)
	step(1, 2*time.Hour) // closes the first window on time
	var got []string
	for _, r := range results.Values() {
		got = append(got, fmt.Sprintf("%s %d %s", r.Start.Format("15:04"), r.Value, r.Firing))
	}
	want := []string{"08:00 2 early", "08:00 5 early", "08:00 5 on-time", "10:00 1 early"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%v, want %v", got, want)
	}
}
