package flowcore_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
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

// BenchmarkProcessCheckpoint applies batches of out-of-order events to a
// Process in event-time order whose every event changes its key's state
// and moves its timer, and takes a checkpoint delta after each batch, as
// a fragment checkpointing often does: the state, timers and waiting
// events of the keys changed since the last one. It reports the time and
// allocations per event, deltas included.
func BenchmarkProcessCheckpoint(b *testing.B) {
	const events, keys = 50_000, 5_000
	in := flowstest.NewInput[stamped](1)
	for i := range events {
		jitter := time.Duration(i*7919%20) * 50 * time.Millisecond
		in.Push(0, stamped{Text: fmt.Sprintf("k%d", i*31%keys), At: t0.Add(time.Duration(i)*50*time.Millisecond - jitter)})
	}
	f := flows.New("bench", flows.WithFragments(1))
	src := flows.From(f, "lines", in, flows.WithEventTime(func(s stamped) time.Time { return s.At }, time.Second))
	flows.Process(flows.KeyBy(src, func(s stamped) string { return s.Text }), flows.Handler[string, stamped, int64, int64]{
		OnEvent: func(c *flows.Context[string, int64, int64], s stamped) {
			if n, ok := c.State(); ok {
				c.DeleteEventTimer(time.Unix(0, n))
			}
			at := s.At.Add(time.Minute).UnixNano()
			c.SetState(at)
			c.SetEventTimer(time.Unix(0, at))
		},
		OnTimer: func(c *flows.Context[string, int64, int64], _ time.Time) { c.ClearState() },
	}, flows.InEventTimeOrder()).View("n")
	plan, err := flowcore.Compile(f)
	if err != nil {
		b.Fatal(err)
	}
	bs := batches(b, plan, 1024)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		fr := plan.NewFragment(0)
		for _, bt := range bs {
			if err := fr.Apply(bt, bt.PrevEnd); err != nil {
				b.Fatal(err)
			}
			if _, err := fr.TakeDelta(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*events), "ns/event")
}
