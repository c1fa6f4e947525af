package flowcore_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
)

// BenchmarkProcessTimers runs a Process that detects the end of each
// key's activity: every event moves the key's event-time timer to its time
// plus a gap (delete the old, set the new), and the timer emits. With a
// state TTL, every event also moves the key's expiry. It reports the CPU
// time per event of one fragment applying batches.
func BenchmarkProcessTimers(b *testing.B) {
	for _, ttl := range []time.Duration{0, time.Hour} {
		b.Run(fmt.Sprintf("ttl=%v", ttl), func(b *testing.B) {
			const events, keys = 200_000, 2_000
			in := flowstest.NewInput[stamped](1)
			rng := rand.New(rand.NewPCG(1, 2))
			for i := range events {
				// A key's events come about every 200 s: most move a pending
				// timer, some come after it fired.
				in.Push(0, stamped{Text: fmt.Sprintf("k%d", rng.IntN(keys)), At: t0.Add(time.Duration(i) * 100 * time.Millisecond)})
			}
			f := flows.New("timers", flows.WithFragments(1))
			ks := flows.KeyBy(flows.From(f, "lines", in, flows.WithEventTime(func(s stamped) time.Time { return s.At }, time.Second)),
				func(s stamped) string { return s.Text })
			const gap = 5 * time.Minute
			var opts []flows.StateOption
			if ttl > 0 {
				opts = append(opts, flows.WithStateTTL(ttl))
			}
			out := flows.Process(ks, flows.Handler[string, stamped, int64, int64]{
				OnEvent: func(c *flows.Context[string, int64, int64], s stamped) {
					n, ok := c.State()
					if ok {
						c.DeleteEventTimer(time.Unix(0, n))
					}
					at := s.At.Add(gap).UnixNano()
					c.SetState(at)
					c.SetEventTimer(time.Unix(0, at))
				},
				OnTimer: func(c *flows.Context[string, int64, int64], at time.Time) {
					c.Emit(at.UnixNano())
					c.ClearState()
				},
			}, opts...).Out()
			fired := 0
			flows.To(out, flows.SinkFunc[int64](func(os []flows.Output[int64]) error { fired += len(os); return nil }))
			benchFragment(b, f, events, &fired)
		})
	}
}

// benchFragment applies the flow's input on one fragment b.N times, from
// an empty state each time, and reports the time per input event; outputs
// counts what the flow's sink received in a run (which must not be none);
// nil when the flow has no sink.
func benchFragment(b *testing.B, f *flows.Flow, events int, outputs *int) {
	plan, err := flowcore.Compile(f)
	if err != nil {
		b.Fatal(err)
	}
	bs := batches(b, plan, 1024)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if outputs != nil {
			*outputs = 0
		}
		fr := plan.NewFragment(0)
		for _, bt := range bs {
			if err := fr.Apply(bt, bt.PrevEnd); err != nil {
				b.Fatal(err)
			}
		}
		if outputs != nil && *outputs == 0 {
			b.Fatal("no output")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*events), "ns/event")
}

// BenchmarkWindows counts events per key in tumbling, sliding (sliced) and
// session windows on one fragment, reporting the CPU time and allocations
// per event; the outputs go to a sink that counts them.
func BenchmarkWindows(b *testing.B) {
	const events, keys = 200_000, 2_000
	in := flowstest.NewInput[stamped](1)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range events {
		in.Push(0, stamped{Text: fmt.Sprintf("k%d", rng.IntN(keys)), At: t0.Add(time.Duration(i) * 100 * time.Millisecond)})
	}
	count := func(n int64, _ stamped) int64 { return n + 1 }
	add := func(a, b int64) int64 { return a + b }
	zero := func() int64 { return 0 }
	for _, c := range []struct {
		name  string
		build func(flows.KeyedStream[string, stamped]) flows.Windowed[string, stamped, int64]
	}{
		{"tumbling-1m", func(ks flows.KeyedStream[string, stamped]) flows.Windowed[string, stamped, int64] {
			return flows.WindowAggregate(ks, flows.Tumbling(time.Minute), zero, count)
		}},
		{"sliding-30m-1m", func(ks flows.KeyedStream[string, stamped]) flows.Windowed[string, stamped, int64] {
			return flows.WindowAggregateMerge(ks, flows.Sliding(30*time.Minute, time.Minute), zero, count, add)
		}},
		{"sessions-5m", func(ks flows.KeyedStream[string, stamped]) flows.Windowed[string, stamped, int64] {
			return flows.SessionAggregate(ks, 5*time.Minute, zero, count, add)
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			f := flows.New("windows", flows.WithFragments(1))
			ks := flows.KeyBy(flows.From(f, "lines", in, flows.WithEventTime(func(s stamped) time.Time { return s.At }, time.Second)),
				func(s stamped) string { return s.Text })
			results := 0
			flows.To(c.build(ks).Results(), flows.SinkFunc[flows.WindowResult[string, int64]](func(os []flows.Output[flows.WindowResult[string, int64]]) error {
				results += len(os)
				return nil
			}))
			benchFragment(b, f, events, &results)
			b.ReportMetric(float64(results)/events, "results/event")
		})
	}
}

// keyedEvent carries its key again, as most events do.
type keyedEvent struct {
	K string
	T int64
}

// BenchmarkDecodeApply decodes batches from another node and applies them
// to a keyed count, with the strings decoded anew or through the
// fragment's interner, reporting the time and allocations per event.
func BenchmarkDecodeApply(b *testing.B) {
	const events, keys = 200_000, 2_000
	in := flowstest.NewInput[keyedEvent](1)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range events {
		in.Push(0, keyedEvent{K: fmt.Sprintf("key-%06d", rng.IntN(keys)), T: int64(i)})
	}
	in.Close()
	f := flows.New("decode", flows.WithFragments(1))
	flows.Count(flows.KeyBy(flows.From(f, "events", in), func(e keyedEvent) string { return e.K })).View("counts")
	plan, err := flowcore.Compile(f)
	if err != nil {
		b.Fatal(err)
	}
	var encoded [][]byte
	for _, bt := range batches(b, plan, 1024) {
		enc, err := plan.EncodeBatch(nil, bt)
		if err != nil {
			b.Fatal(err)
		}
		encoded = append(encoded, enc)
	}
	for _, interned := range []bool{false, true} {
		b.Run(fmt.Sprintf("interned=%v", interned), func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				fr := plan.NewFragment(0)
				var intern *flowcore.Interner
				if interned {
					intern = new(flowcore.Interner)
				}
				for _, enc := range encoded {
					bt, err := plan.DecodeBatchInterned(enc, intern)
					if err != nil {
						b.Fatal(err)
					}
					if err := fr.Apply(bt, bt.PrevEnd); err != nil {
						b.Fatal(err)
					}
					bt.Release()
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*events), "ns/event")
		})
	}
}
