package flows_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
)

// BenchmarkProcessInEventTimeOrder applies out-of-order events to a
// Process that sees them in event-time order: every event waits in the
// buffer until the watermark passes it.
func BenchmarkProcessInEventTimeOrder(b *testing.B) {
	in := flowstest.NewInput[stamped](1)
	const events = 20_000
	for i := range events {
		jitter := time.Duration(i*7919%20) * 50 * time.Millisecond // up to a second out of order
		in.Push(0, stamped{Text: fmt.Sprintf("w%d", i%500), At: t0.Add(time.Duration(i)*50*time.Millisecond - jitter)})
	}
	f := flows.New("bench", flows.WithFragments(1))
	src := flows.From(f, "lines", in, flows.WithEventTime(func(s stamped) time.Time { return s.At }, time.Second))
	flows.Process(flows.KeyBy(src, func(s stamped) string { return s.Text }), flows.Handler[string, stamped, int64, int64]{
		OnEvent: func(c *flows.Context[string, int64, int64], _ stamped) {
			n, _ := c.State()
			c.SetState(n + 1)
		},
	}, flows.InEventTimeOrder()).View("n")
	benchFragment(b, f, events, nil)
}
