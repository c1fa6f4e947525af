package flowstest_test

import (
	"errors"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/splice"
)

// A key's state expires once the watermark passes its last event by the
// TTL; a key that keeps coming back keeps its state; the expiry survives a
// restore.
func TestStateTTL(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	for _, crash := range []bool{false, true} {
		in := flowstest.NewInput[click](1)
		f := flows.New("ttl", flows.WithFragments(2))
		ks := flows.KeyBy(flows.From(f, "clicks", in, flows.WithEventTime(func(c click) time.Time { return c.At }, 0)),
			func(c click) string { return c.User })
		flows.Process(ks, flows.Handler[string, click, int, int]{
			OnEvent: func(c *flows.Context[string, int, int], _ click) {
				n, _ := c.State()
				c.SetState(n + 1)
			},
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
		push("gone", 0)
		push("kept", 0)
		push("kept", 8*time.Minute)
		if crash {
			if err := d.Checkpoint(); err != nil {
				t.Fatal(err)
			}
			if err := d.Restart(); err != nil {
				t.Fatal(err)
			}
		}
		push("other", 12*time.Minute) // the watermark passes gone's last event + 10 min
		if _, err := d.Get("n", "gone"); !errors.Is(err, splice.ErrNotFound) {
			t.Fatalf("crash %v: gone's state did not expire: %v", crash, err)
		}
		if v, err := d.Get("n", "kept"); err != nil || v != 2 {
			t.Fatalf("crash %v: kept = %v, %v", crash, v, err)
		}
		push("gone", 13*time.Minute)
		if v, _ := d.Get("n", "gone"); v != 1 {
			t.Fatalf("crash %v: gone starts again at %v, want 1", crash, v)
		}
		push("other", 19*time.Minute)
		if _, err := d.Get("n", "kept"); !errors.Is(err, splice.ErrNotFound) {
			t.Fatalf("crash %v: kept's state did not expire after 10 minutes without events: %v", crash, err)
		}
		d.Close()
	}
}
