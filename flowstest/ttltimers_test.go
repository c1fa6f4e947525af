package flowstest_test

import (
	"cmp"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/splice"
)

// A key's expiry that waited for a timer of its own (its last event plus
// the TTL came first) is still its last event plus the TTL once that
// event is followed by others, with or without a restore in between:
//
//   - keep: k's second event (at 45) keeps its state to 55, past its timer
//     at 50, which fires and changes nothing;
//   - drop: k's second event (at 12) deletes its timer at 50: its state
//     expires at 22.
//
// The sequential reference: a key's state expires once the watermark
// passes its last event by the TTL and no timer of its own is pending.
func TestStateTTLAfterTimerWaitedFor(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name        string
		second      time.Duration // k's second event
		alive, gone time.Duration // watermarks where k's state is alive, then gone
	}{
		{"keep", 45 * time.Minute, 50 * time.Minute, 55 * time.Minute},
		{"drop", 12 * time.Minute, 21 * time.Minute, 22 * time.Minute},
	} {
		for _, crash := range []bool{false, true} {
			in := flowstest.NewInput[click](1)
			f := flows.New("ttl-timer", flows.WithFragments(1))
			ks := flows.KeyBy(flows.From(f, "clicks", in, flows.WithEventTime(func(c click) time.Time { return c.At }, 0)),
				func(c click) string { return c.User })
			timer := t0.Add(50 * time.Minute)
			flows.Process(ks, flows.Handler[string, click, int, int]{
				OnEvent: func(c *flows.Context[string, int, int], e click) {
					n, _ := c.State()
					switch {
					case c.Key() != "k":
					case n == 0:
						c.SetEventTimer(timer)
					case tc.name == "drop":
						c.DeleteEventTimer(timer)
					}
					c.SetState(n + 1)
				},
				OnTimer: func(*flows.Context[string, int, int], time.Time) {},
			}, flows.WithStateTTL(10*time.Minute)).View("n")
			d, err := flowstest.New(f, time.Unix(0, 0))
			if err != nil {
				t.Fatal(err)
			}
			push := func(user string, at time.Duration) {
				in.Push(0, click{User: user, At: t0.Add(at)})
				must(t, d.Drain())
			}
			push("k", 0)
			push("other", 11*time.Minute) // k's expiry at 10 waits for its timer at 50
			if crash {
				must(t, d.Checkpoint())
				must(t, d.Restart())
			}
			push("k", tc.second)
			push("other", tc.alive)
			if v, err := d.Get("n", "k"); err != nil || v != 2 {
				t.Errorf("%s, restart %v: at watermark %v k = %v, %v; want 2", tc.name, crash, tc.alive, v, err)
			}
			push("other", tc.gone)
			if _, err := d.Get("n", "k"); !errors.Is(err, splice.ErrNotFound) {
				t.Errorf("%s, restart %v: at watermark %v k's state did not expire: %v", tc.name, crash, tc.gone, err)
			}
			d.Close()
		}
	}
}

// timerClick is an event of TestProcessTTLWaitsForTimersExact: its handler
// sets the key's timer D minutes after the event (Act 1), deletes it
// (Act 2), or leaves it (Act 0).
type timerClick struct {
	User string
	At   time.Time
	Act  int
	D    int
}

// A Process in event-time order with a TTL and event-time timers of its
// own that its events set, move and delete: the states it holds at the
// end (keys, events counted, timers fired) are a sequential reference's,
// whatever the batches, checkpoints, crashes and restarts. The reference
// runs each key's time line: at one time a key's timer fires first, then
// its expiry, then its events. An expiry (the last event plus the TTL)
// that finds the key's timer pending waits for it, and fires then unless
// an event came since.
func TestProcessTTLWaitsForTimersExact(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rng := rand.New(rand.NewPCG(rapid.Uint64().Draw(t, "seed"), 5))
		ttl := int64(rapid.IntRange(1, 15).Draw(t, "ttl minutes")) * int64(time.Minute)
		delay := 3 * time.Minute
		users := []string{"", "a", "b", strings.Repeat("c", 140)}[:rapid.IntRange(1, 4).Draw(t, "users")]
		n := rapid.IntRange(1, 150).Draw(t, "events")
		// Distinct times (a nanosecond apart at least), arriving out of
		// order by less than the delay: none is late.
		t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC).UnixNano()
		evs := make([]timerClick, n)
		arrive := make([]int64, n)
		clock := t0
		for i := range evs {
			clock += int64(rng.IntN(6))*int64(time.Minute) + int64(1+rng.IntN(1000))
			evs[i] = timerClick{User: users[rng.IntN(len(users))], At: time.Unix(0, clock).UTC(),
				Act: []int{0, 0, 1, 1, 2}[rng.IntN(5)], D: rng.IntN(25)}
			arrive[i] = clock + rng.Int64N(int64(delay))
		}
		order := make([]int, n)
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(a, b int) int { return cmp.Compare(arrive[a], arrive[b]) })
		wm := clock - int64(delay)

		// Sequential reference, per key, up to the watermark.
		type ref struct {
			n, timer int64 // events + 100 a timer fired; the pending timer (0: none)
			exp      int64 // the expiry, or the wait (0: none, with no state)
		}
		want := map[string]ref{}
		for _, u := range users {
			var r ref
			has := false
			var mine []timerClick
			for _, e := range evs {
				if e.User == u && e.At.UnixNano() <= wm {
					mine = append(mine, e)
				}
			}
			for i := 0; ; {
				// The next of: the timer, the expiry, the event; at one time
				// in that order.
				next, what := int64(math.MaxInt64), 0
				if has && r.timer != 0 {
					next, what = r.timer, 1
				}
				if has && r.exp < next {
					next, what = r.exp, 2
				}
				if i < len(mine) && mine[i].At.UnixNano() < next {
					next, what = mine[i].At.UnixNano(), 3
				}
				if what == 0 || next > wm {
					break
				}
				switch what {
				case 1:
					r.n += 100
					r.timer = 0
				case 2:
					if r.timer != 0 {
						r.exp = r.timer // waits for the key's own timer
						continue
					}
					has, r = false, ref{}
				case 3:
					e := mine[i]
					i++
					ts := e.At.UnixNano()
					has = true
					r.exp = ts + ttl
					r.n++
					switch e.Act {
					case 1:
						r.timer = ts + int64(e.D)*int64(time.Minute)
					case 2:
						r.timer = 0
					}
				}
			}
			if has {
				want[u] = r
			}
		}

		type st struct{ N, Timer int64 }
		in := flowstest.NewInput[timerClick](1)
		fragments := rapid.IntRange(1, 3).Draw(t, "fragments")
		f := flows.New("ttl-timers", flows.WithFragments(fragments))
		ks := flows.KeyBy(flows.From(f, "clicks", in, flows.WithEventTime(func(c timerClick) time.Time { return c.At }, delay)),
			func(c timerClick) string { return c.User })
		flows.Process(ks, flows.Handler[string, timerClick, st, int]{
			OnEvent: func(c *flows.Context[string, st, int], e timerClick) {
				s, _ := c.State()
				s.N++
				if e.Act != 0 && s.Timer != 0 {
					c.DeleteEventTimer(time.Unix(0, s.Timer))
					s.Timer = 0
				}
				if e.Act == 1 {
					s.Timer = e.At.Add(time.Duration(e.D) * time.Minute).UnixNano()
					c.SetEventTimer(time.Unix(0, s.Timer))
				}
				c.SetState(s)
			},
			OnTimer: func(c *flows.Context[string, st, int], _ time.Time) {
				s, _ := c.State()
				s.N += 100
				s.Timer = 0
				c.SetState(s)
			},
		}, flows.InEventTimeOrder(), flows.WithStateTTL(time.Duration(ttl))).View("s")
		d, err := flowstest.New(f, time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		d.BatchSize = rapid.IntRange(1, 20).Draw(t, "batch")
		for j := 0; j < n; {
			k := min(n-j, 1+rng.IntN(10))
			for _, i := range order[j : j+k] {
				in.Push(0, evs[i])
			}
			j += k
			must(t, d.Drain())
			if err := randomFault(d, rng, 6); err != nil {
				t.Fatal(err)
			}
		}
		must(t, d.Settle())
		for _, u := range users {
			v, err := d.Get("s", u)
			r, ok := want[u]
			switch {
			case !ok && !errors.Is(err, splice.ErrNotFound):
				t.Fatalf("key %q: state %v, %v; want none (watermark %v)", u, v, err, time.Duration(wm-t0))
			case ok && (err != nil || v.(st).N != r.n || v.(st).Timer != r.timer):
				t.Fatalf("key %q: state %+v, %v; want N %d, Timer %d (watermark %v after the first event)",
					u, v, err, r.n, r.timer, time.Duration(wm-t0))
			}
		}
	})
}
