package main

import (
	"cmp"
	"runtime"
	"slices"
	"sync"

	"github.com/tessera-streams/tessera/shard"
)

// countMap: one goroutine and a map.
func countMap(in *input) map[string]int64 {
	m := make(map[string]int64)
	for _, i := range in.idx {
		m[in.keys[i]]++
	}
	return m
}

// countSharded: producers hash keys into per-shard batches sent over
// channels to one goroutine per shard, each with its own map.
func countSharded(in *input, p params) map[string]int64 {
	shards := runtime.GOMAXPROCS(0)
	chans := make([]chan []string, shards)
	maps := make([]map[string]int64, shards)
	var workers sync.WaitGroup
	for s := range shards {
		chans[s] = make(chan []string, 64)
		maps[s] = make(map[string]int64)
		workers.Add(1)
		go func() {
			defer workers.Done()
			m := maps[s]
			for b := range chans[s] {
				for _, k := range b {
					m[k]++
				}
			}
		}()
	}
	feedShards(in, p, p.baselineBatch, chans, func(k string, _ int64) string { return k })
	workers.Wait()
	out := make(map[string]int64)
	for _, m := range maps {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// statelessKeep is the stateless workload's map and filter: hash the key,
// keep three quarters.
func statelessKeep(k string) bool { return shard.String(k)%4 != 0 }

// statelessLoop: one goroutine.
func statelessLoop(in *input) int64 {
	var n int64
	for _, i := range in.idx {
		if statelessKeep(in.keys[i]) {
			n++
		}
	}
	return n
}

// statelessParallel: one goroutine per partition.
func statelessParallel(in *input, p params) int64 {
	per := (len(in.idx) + p.partitions - 1) / p.partitions
	counts := make([]int64, p.partitions)
	var wg sync.WaitGroup
	for part := range p.partitions {
		lo, hi := min(part*per, len(in.idx)), min((part+1)*per, len(in.idx))
		wg.Add(1)
		go func() {
			defer wg.Done()
			var n int64
			for _, i := range in.idx[lo:hi] {
				if statelessKeep(in.keys[i]) {
					n++
				}
			}
			counts[part] = n
		}()
	}
	wg.Wait()
	var n int64
	for _, c := range counts {
		n += c
	}
	return n
}

type winKey struct {
	key   string
	start int64
}

// eachEvent calls fn with every event's key and event time, partition
// after partition, in one goroutine.
func eachEvent(in *input, p params, fn func(key string, ts int64)) {
	per := (len(in.idx) + p.partitions - 1) / p.partitions
	for part := range p.partitions {
		lo, hi := min(part*per, len(in.idx)), min((part+1)*per, len(in.idx))
		for i := lo; i < hi; i++ {
			fn(in.keys[in.idx[i]], eventTime(i-lo, per))
		}
	}
}

// windowMap: one goroutine counting per key and window, then emitting
// every window (summing its value, as the engine's sink does).
func windowMap(in *input, p params, size, slide int64) (results, sum int64) {
	m := make(map[winKey]int64)
	eachEvent(in, p, func(k string, ts int64) {
		for s := ts - ts%slide; s > ts-size; s -= slide {
			m[winKey{k, s}]++
		}
	})
	for _, n := range m {
		results++
		sum += n
	}
	return results, sum
}

// feedShards has one producer per partition route each event, made by
// ev from its key and event time, by the key's shard in batches of batch
// events over chans; it returns once every producer is done and chans are
// closed.
func feedShards[E any](in *input, p params, batch int, chans []chan []E, ev func(key string, ts int64) E) {
	var producers sync.WaitGroup
	per := (len(in.idx) + p.partitions - 1) / p.partitions
	for part := range p.partitions {
		lo, hi := min(part*per, len(in.idx)), min((part+1)*per, len(in.idx))
		producers.Add(1)
		go func() {
			defer producers.Done()
			bufs := make([][]E, len(chans))
			for i := lo; i < hi; i++ {
				k := in.keys[in.idx[i]]
				s := shard.Fragment(shard.String(k), len(chans))
				bufs[s] = append(bufs[s], ev(k, eventTime(i-lo, per)))
				if len(bufs[s]) == batch {
					chans[s] <- bufs[s]
					bufs[s] = make([]E, 0, batch)
				}
			}
			for s, b := range bufs {
				if len(b) > 0 {
					chans[s] <- b
				}
			}
		}()
	}
	producers.Wait()
	for _, c := range chans {
		close(c)
	}
}

// windowSharded: producers hash keys into per-shard batches of (key,
// event time) sent over channels to one goroutine per shard, each counting
// per key and window in its own map, then emitting every window.
func windowSharded(in *input, p params, size, slide int64) (results, sum int64) {
	type ev struct {
		key string
		ts  int64
	}
	shards := runtime.GOMAXPROCS(0)
	chans := make([]chan []ev, shards)
	res := make([][2]int64, shards)
	var workers sync.WaitGroup
	for s := range shards {
		chans[s] = make(chan []ev, 64)
		workers.Add(1)
		go func() {
			defer workers.Done()
			m := make(map[winKey]int64)
			for b := range chans[s] {
				for _, e := range b {
					for w := e.ts - e.ts%slide; w > e.ts-size; w -= slide {
						m[winKey{e.key, w}]++
					}
				}
			}
			for _, n := range m {
				res[s][0]++
				res[s][1] += n
			}
		}()
	}
	feedShards(in, p, p.baselineBatch, chans, func(k string, ts int64) ev { return ev{k, ts} })
	workers.Wait()
	for _, r := range res {
		results += r[0]
		sum += r[1]
	}
	return results, sum
}

// windowSliced: one goroutine counting per key and slice (gcd of size and
// slide), then combining every key's windows from its slices with a running
// sum: what a hand-written sliding count does, each event counted once.
func windowSliced(in *input, p params, size, slide int64) (results, sum int64) {
	g := size
	for b := slide; b != 0; {
		g, b = b, g%b
	}
	m := make(map[winKey]int64)
	eachEvent(in, p, func(k string, ts int64) { m[winKey{k, ts - ts%g}]++ })
	type slice struct{ start, n int64 }
	byKey := make(map[string][]slice)
	for wk, n := range m {
		byKey[wk.key] = append(byKey[wk.key], slice{wk.start, n})
	}
	for _, ss := range byKey {
		slices.SortFunc(ss, func(a, b slice) int { return cmp.Compare(a.start, b.start) })
		// Windows start every slide from the first one over the first
		// slice to the last one over the last; lo..hi are the slices of
		// the window starting at s, run the running sum of their counts.
		first := (ss[0].start-size)/slide*slide + slide // event times are positive
		lo, hi, run := 0, 0, int64(0)
		for s := first; s <= ss[len(ss)-1].start; s += slide {
			for hi < len(ss) && ss[hi].start < s+size {
				run += ss[hi].n
				hi++
			}
			for lo < hi && ss[lo].start < s {
				run -= ss[lo].n
				lo++
			}
			if hi > lo {
				results++
				sum += run
			}
		}
	}
	return results, sum
}

// sessionMap: one goroutine gathering every key's event times, then
// sorting them and cutting sessions at gaps (emitting each, summing counts).
func sessionMap(in *input, p params, gap int64) (results, sum int64) {
	times := make(map[string][]int64)
	per := (len(in.idx) + p.partitions - 1) / p.partitions
	for part := range p.partitions {
		lo, hi := min(part*per, len(in.idx)), min((part+1)*per, len(in.idx))
		for i := lo; i < hi; i++ {
			k := in.keys[in.idx[i]]
			times[k] = append(times[k], eventTime(i-lo, per))
		}
	}
	for _, ts := range times {
		slices.Sort(ts)
		n := int64(1)
		for i := 1; i < len(ts); i++ {
			if ts[i] >= ts[i-1]+gap {
				results++
				sum += n
				n = 0
			}
			n++
		}
		results++
		sum += n
	}
	return results, sum
}
