package flowcore_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
)

// BenchmarkWindowsMany is the bench's window rows on one goroutine: count
// per key over an hour of event time in tumbling, sliding (running totals)
// and session windows, with as many events per key (a hundred) and keys
// per fragment as the bench has, so the state does not fit in a core's
// cache. Two partitions advance together, one minutes behind the other,
// so events reach a key's slices out of order and the watermark trails
// the leading partition, as in the bench. It reports the CPU time per
// event.
func BenchmarkWindowsMany(b *testing.B) {
	events, keys, fragments := 5_000_000, 50_000, 32
	if testing.Short() { // a fifth, for a run under a cache simulator
		events, keys, fragments = 1_000_000, 10_000, 7
	}
	behind := int64(events / 2 / 10) // a tenth of the hour: 6 minutes
	in := flowstest.NewInput[keyedEvent](2)
	rng := rand.New(rand.NewPCG(5, 6))
	per := events / 2
	step := int64(time.Hour) / int64(per)
	for i := range per {
		for p := range 2 {
			in.Push(p, keyedEvent{K: fmt.Sprintf("key-%07d", rng.IntN(keys)), T: t0.UnixNano() + int64(i)*step})
		}
	}
	in.Close()
	count := func(n int64, _ keyedEvent) int64 { return n + 1 }
	add := func(a, b int64) int64 { return a + b }
	sub := func(a, b int64) int64 { return a - b }
	zero := func() int64 { return 0 }
	for _, c := range []struct {
		name  string
		build func(flows.KeyedStream[string, keyedEvent]) flows.Windowed[string, keyedEvent, int64]
	}{
		{"tumbling-1m", func(ks flows.KeyedStream[string, keyedEvent]) flows.Windowed[string, keyedEvent, int64] {
			return flows.WindowAggregate(ks, flows.Tumbling(time.Minute), zero, count)
		}},
		{"sliding-30m", func(ks flows.KeyedStream[string, keyedEvent]) flows.Windowed[string, keyedEvent, int64] {
			return flows.WindowAggregateInvertible(ks, flows.Sliding(30*time.Minute, time.Minute), zero, count, add, sub)
		}},
		{"session-5m", func(ks flows.KeyedStream[string, keyedEvent]) flows.Windowed[string, keyedEvent, int64] {
			return flows.SessionAggregate(ks, 5*time.Minute, zero, count, add)
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			f := flows.New("windows", flows.WithFragments(fragments))
			ks := flows.KeyBy(flows.From(f, "events", in, flows.WithEventTime(func(e keyedEvent) time.Time { return time.Unix(0, e.T) }, time.Second)),
				func(e keyedEvent) string { return e.K })
			results := 0
			flows.To(c.build(ks).Results(), flows.SinkFunc[flows.WindowResult[string, int64]](func(os []flows.Output[flows.WindowResult[string, int64]]) error {
				results += len(os)
				return nil
			}))
			plan, err := flowcore.Compile(f)
			if err != nil {
				b.Fatal(err)
			}
			var parts [2][]fragmentBatch
			for p := range parts {
				parts[p] = partitionBatches(b, plan, p, 1024)
			}
			// Partition 1's batches trail partition 0's by `behind` events.
			var bs []fragmentBatch
			for i, j := 0, 0; i < len(parts[0]) || j < len(parts[1]); {
				if i < len(parts[0]) && (j == len(parts[1]) || parts[0][i].end < parts[1][j].end+behind) {
					bs = append(bs, parts[0][i])
					i++
				} else {
					bs = append(bs, parts[1][j])
					j++
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu := processCPU()
			for range b.N {
				results = 0
				frs := make([]*flowcore.Fragment, fragments)
				for i := range frs {
					frs[i] = plan.NewFragment(i)
				}
				for _, bt := range bs {
					if err := frs[bt.frag].Apply(bt.b, bt.b.PrevEnd); err != nil {
						b.Fatal(err)
					}
				}
				if results == 0 {
					b.Fatal("no window results")
				}
			}
			// CPU time, the process's: on a shared machine wall time
			// counts the time others held the cores.
			b.ReportMetric(float64(processCPU()-cpu)/float64(b.N*events), "cpu-ns/event")
			b.ReportMetric(float64(results)/float64(events), "results/event")
		})
	}
}

// processCPU is the process's user and system CPU time so far, in ns.
func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// fragmentBatch is a batch for a fragment, read up to offset end of its
// partition.
type fragmentBatch struct {
	frag int
	end  int64
	b    *flowcore.Batch
}

// partitionBatches reads one partition of the plan's only source into
// batches for its fragments, in the order the reader made them.
func partitionBatches(b *testing.B, plan *flowcore.Plan, part, size int) []fragmentBatch {
	r, err := plan.OpenReader(0, part, 0, size)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	var out []fragmentBatch
	read := int64(0)
	for {
		n, err := r.Poll(context.Background(), size)
		read += int64(n)
		eof := errors.Is(err, io.EOF)
		if err != nil && !eof {
			b.Fatal(err)
		}
		// Full batches as they fill, as a reader sends them; the rest at
		// the end.
		for _, f := range r.Full() {
			out = append(out, fragmentBatch{f, read, r.Take(f)})
		}
		if eof || n == 0 {
			for f := range plan.Fragments() {
				if r.Due(f) {
					out = append(out, fragmentBatch{f, read, r.Take(f)})
				}
			}
		}
		if eof || n == 0 {
			return out
		}
	}
}
