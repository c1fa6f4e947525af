package flowcore

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// BenchmarkWaitingEvents holds waiting events as the transport bench's
// Process does: 64 fragments taking turns of 50 events each, every
// fragment holding about a thousand events: times 2 ticks apart plus up
// to 2000, delivered up to 2000 ticks after their time, each taken once
// the watermark (the latest time less 4000) passes it. Each event is written when it comes and read about a thousand
// events later, once the other fragments' turns have passed over the
// caches. It reports the time per event.
func BenchmarkWaitingEvents(b *testing.B) {
	const frags, turn, late, per = 64, 50, 2000, 1 << 14
	type event = buffered[uint64, [3]int64]
	// Each fragment's events in the order they are delivered.
	arrivals := make([][]event, frags)
	rng := rand.New(rand.NewPCG(1, 2))
	for f := range arrivals {
		evs := make([]event, per)
		deliver := make([]int64, per)
		for i := range evs {
			evs[i] = event{ts: int64(2*i) + rng.Int64N(late), key: uint64(i)}
			deliver[i] = evs[i].ts + rng.Int64N(late)
		}
		idx := make([]int, per)
		for i := range idx {
			idx[i] = i
		}
		slices.SortFunc(idx, func(x, y int) int {
			if deliver[x] != deliver[y] {
				return int(deliver[x] - deliver[y])
			}
			return x - y
		})
		for i, j := range idx {
			e := evs[j]
			e.off = int64(i)
			arrivals[f] = append(arrivals[f], e)
		}
	}
	hs := make([]bufHeap[uint64, [3]int64], frags)
	var into event
	// pop takes fragment f's earliest event if the watermark passed it.
	pop := func(f int, wm int64) bool {
		if len(hs[f]) == 0 || hs[f][0].ts > wm {
			return false
		}
		hs[f].pop(&into)
		return true
	}
	n := 0
	for b.Loop() {
		latest := make([]int64, frags)
		for at := 0; at < per; at += turn {
			for f := range frags {
				for _, e := range arrivals[f][at:min(at+turn, per)] {
					hs[f].push(e)
					latest[f] = max(latest[f], e.ts)
					n++
				}
				for pop(f, latest[f]-2*late) {
				}
			}
		}
		for f := range frags {
			for pop(f, 1<<62) {
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/event")
}
