package flowstest_test

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
)

// idleRef is the event-time state a flow must reach over partitions that
// go idle and come back: every partition's newest event time and the
// processing time of its last event, and the channel watermark, the
// largest the least active partition's ever reached.
type idleRef struct {
	delay, idle int64
	now         int64
	maxTS       []int64
	lastEv      []int64
	ended       []bool
	wm          int64
	counts      map[string]int64 // key@start → events placed
	tooLate     int
}

func (r *idleRef) idleNow(p int) bool {
	return r.maxTS[p] != flowcore.NoWatermark && r.now-r.lastEv[p] >= r.idle
}

func (r *idleRef) recompute() {
	low, active := int64(math.MaxInt64), false
	for p := range r.maxTS {
		if r.ended[p] || r.idleNow(p) {
			continue
		}
		active = true
		if r.maxTS[p] == flowcore.NoWatermark {
			return
		}
		low = min(low, r.maxTS[p]-r.delay)
	}
	if !active {
		// Every partition that has not ended is idle: the watermark is
		// the largest of theirs; the end of time once all ended.
		low = math.MaxInt64
		if slices.Contains(r.ended, false) {
			low = flowcore.NoWatermark
			for p := range r.maxTS {
				if !r.ended[p] {
					low = max(low, r.maxTS[p]-r.delay)
				}
			}
		}
		active = true
	}
	if active && low > r.wm {
		r.wm = low
	}
}

// fired is what must have fired on time: every key's window whose end
// the watermark reached.
func (r *idleRef) fired() map[string]int64 {
	out := map[string]int64{}
	for k, n := range r.counts {
		var key string
		var start int64
		fmt.Sscanf(k, "%s %d", &key, &start)
		if r.wm != flowcore.NoWatermark && start+int64(time.Minute) <= r.wm {
			out[k] = n
		}
	}
	return out
}

// Windows over partitions that go idle (no event for the idle timeout of
// processing time; one that has not ended stays active), come back, some
// with events behind the watermark, and end: after every drain, every
// fragment's watermark is the least watermark of the active partitions
// that have not ended (never going back), the end of time once all ended,
// the windows it passed fired once each with every event placed in them,
// none fired before, and the events that came for windows already passed
// went to TooLate.
func TestIdlePartitionsWatermarkEqualsReference(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		const idle = time.Minute
		nparts := rapid.IntRange(2, 3).Draw(rt, "partitions")
		frags := rapid.IntRange(1, 4).Draw(rt, "fragments")
		delay := time.Duration(rapid.IntRange(0, 20).Draw(rt, "delay (s)")) * time.Second
		in := flowstest.NewInput[click](nparts)
		f := flows.New("idle-windows", flows.WithFragments(frags))
		src := flows.From(f, "clicks", in, flows.WithEventTime(func(c click) time.Time { return c.At }, delay),
			flows.WithIdleTimeout(idle))
		w := flows.WindowAggregate(flows.KeyBy(src, func(c click) string { return c.User }), flows.Tumbling(time.Minute),
			func() int64 { return 0 }, func(n int64, _ click) int64 { return n + 1 })
		results := flowstest.Collect(w.Results())
		late := flowstest.Collect(w.TooLate())
		t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
		d, err := flowstest.New(f, t0)
		if err != nil {
			rt.Fatal(err)
		}
		defer d.Close()
		ref := &idleRef{delay: int64(delay), idle: int64(idle), now: t0.UnixNano(), wm: flowcore.NoWatermark,
			counts: map[string]int64{}}
		clock := make([]time.Time, nparts)
		for p := range nparts {
			ref.maxTS = append(ref.maxTS, flowcore.NoWatermark)
			ref.lastEv = append(ref.lastEv, 0)
			ref.ended = append(ref.ended, false)
			clock[p] = t0
		}
		push := func(p int, evs []click) {
			for _, e := range evs {
				ts := e.At.UnixNano()
				start := ts - ts%int64(time.Minute)
				if ref.wm != flowcore.NoWatermark && start+int64(time.Minute) <= ref.wm {
					ref.tooLate++
				} else {
					ref.counts[fmt.Sprintf("%s %d", e.User, start)]++
				}
				ref.maxTS[p] = max(ref.maxTS[p], ts)
			}
			ref.lastEv[p] = ref.now
			in.Push(p, evs...)
		}
		check := func(step int) {
			if err := d.Drain(); err != nil {
				rt.Fatal(err)
			}
			ref.recompute()
			for _, fr := range d.Freshness() {
				got := int64(flowcore.NoWatermark)
				if fr.Watermark != nil {
					got = fr.Watermark.UnixNano()
				}
				if got != ref.wm {
					var idle []bool
					for p := range nparts {
						idle = append(idle, ref.idleNow(p))
					}
					rt.Fatalf("step %d: fragment %d's watermark %v, want %v (idle partitions: %v)", step, fr.Fragment,
						time.Unix(0, got).UTC(), time.Unix(0, ref.wm).UTC(), idle)
				}
			}
			got := map[string]int64{}
			for _, r := range results.Values() {
				k := fmt.Sprintf("%s %d", r.Key, r.Start.UnixNano())
				if _, dup := got[k]; dup || r.Firing != flows.OnTime {
					rt.Fatalf("step %d: window %s fired again (%v)", step, k, r.Firing)
				}
				got[k] = r.Value
			}
			if want := ref.fired(); !maps.Equal(got, want) {
				rt.Fatalf("step %d (watermark %v): fired %v, want %v", step, time.Unix(0, ref.wm).UTC(),
					slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
			}
			if n := len(late.Values()); n != ref.tooLate {
				rt.Fatalf("step %d: %d events too late, want %d", step, n, ref.tooLate)
			}
		}
		// Every partition has an event first: one that never has is a
		// separate matter (TestIdleTimeoutPartitionWithoutEvents).
		for p := range nparts {
			clock[p] = clock[p].Add(time.Duration(rapid.IntRange(0, 30).Draw(rt, "first")) * time.Second)
			push(p, []click{{User: "u0", At: clock[p]}})
		}
		check(0)
		var open []int // the partitions that have not ended
		for p := range nparts {
			open = append(open, p)
		}
		for step := 1; step < rapid.IntRange(5, 40).Draw(rt, "steps"); step++ {
			if len(open) == 0 {
				break
			}
			if rapid.IntRange(0, 9).Draw(rt, "end") == 0 {
				// A partition ends: it holds nothing back, and says
				// nothing of the others.
				i := rapid.IntRange(0, len(open)-1).Draw(rt, "ending")
				p := open[i]
				open = slices.Delete(open, i, i+1)
				ref.ended[p] = true
				in.ClosePartition(p)
				check(step)
				continue
			}
			if rapid.IntRange(0, 2).Draw(rt, "advance") == 0 {
				dt := time.Duration(rapid.IntRange(1, 120).Draw(rt, "dt (s)")) * time.Second
				// Some partition that has not ended stays active: with
				// every one idle the watermark depends on their numbering
				// (TestIdlePartitionsWatermarkIndependentOfNumbering); with
				// one ended beside them, see
				// TestEndedPartitionDoesNotCompleteIdleOnes.
				var last int64
				for _, p := range open {
					last = max(last, ref.lastEv[p])
				}
				if until := time.Duration(last + ref.idle - ref.now - int64(time.Second)); dt > until {
					dt = until
				}
				if dt <= 0 {
					continue
				}
				if err := d.Advance(dt); err != nil {
					rt.Fatal(err)
				}
				ref.now += int64(dt)
				check(step)
				continue
			}
			p := open[rapid.IntRange(0, len(open)-1).Draw(rt, "partition")]
			var evs []click
			for range rapid.IntRange(1, 6).Draw(rt, "events") {
				clock[p] = clock[p].Add(time.Duration(rapid.IntRange(0, 50).Draw(rt, "step (s)")) * time.Second)
				at := clock[p]
				if rapid.IntRange(0, 4).Draw(rt, "behind") == 0 {
					at = at.Add(-time.Duration(rapid.IntRange(0, 300).Draw(rt, "back (s)")) * time.Second)
				}
				evs = append(evs, click{User: fmt.Sprintf("u%d", rapid.IntRange(0, 2).Draw(rt, "user")), At: at})
			}
			push(p, evs)
			check(step)
		}
	})
}
