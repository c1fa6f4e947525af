package flowcore

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkTableBlockDelta is one fragment's checkpoint of the first
// stage's count in the two-stage bench: 1,560 string keys, each counted
// about seven times since the checkpoint before (all blocks changed). It
// reports the time and the bytes of one checkpoint.
func BenchmarkTableBlockDelta(b *testing.B) {
	const keys, updates = 1_560, 11_000
	tb := newStringTable(b)
	names := make([]string, keys)
	for i := range names {
		names[i] = fmt.Sprintf("key-%07d", i*64)
		tb.insert(names[i], 1)
	}
	var d Delta
	if err := tb.blockDelta(0, &d); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	order := make([]int32, updates)
	for i := range order {
		order[i] = int32(rng.IntN(keys))
	}
	b.ReportAllocs()
	bytes := 0
	for b.Loop() {
		for _, i := range order {
			tb.vals[i]++
			tb.touch(i)
		}
		d = Delta{}
		if err := tb.blockDelta(0, &d); err != nil {
			b.Fatal(err)
		}
		bytes = 0
		for _, e := range d.Puts {
			bytes += len(e.Key) + len(e.Value)
		}
	}
	b.ReportMetric(float64(bytes), "B/checkpoint")
}
