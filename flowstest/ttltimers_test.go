package flowstest_test

import (
	"errors"
	"testing"
	"time"

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
				if err := d.Drain(); err != nil {
					t.Fatal(err)
				}
			}
			push("k", 0)
			push("other", 11*time.Minute) // k's expiry at 10 waits for its timer at 50
			if crash {
				if err := d.Checkpoint(); err != nil {
					t.Fatal(err)
				}
				if err := d.Restart(); err != nil {
					t.Fatal(err)
				}
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
