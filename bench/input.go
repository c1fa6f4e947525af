package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/flows"
)

// input is the pre-generated key sequence every contender reads.
type input struct {
	keys []string
	idx  []uint32
}

func newInput(events, keys int) *input {
	in := &input{keys: make([]string, keys), idx: make([]uint32, events)}
	for i := range in.keys {
		in.keys[i] = fmt.Sprintf("key-%07d", i)
	}
	r := gen.Rand{}
	for i := range in.idx {
		in.idx[i] = uint32(r.Intn(keys))
	}
	return in
}

// bev is the engine's event: a key, and for every 1024th event the time it
// was read from the source (unix ns), for latency.
type bev struct {
	K string
	T int64 // latency runs: read time of every 1024th event; window runs: event time (see eventTime)
}

// eventSpan is the event time the input covers: every partition's events
// are spread evenly over it, in order, so partitions advance together.
const eventSpan = int64(60 * time.Minute)

var eventBase = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()

// eventTime is the event time of the event at position pos of a partition
// of per events.
func eventTime(pos, per int) int64 { return eventBase + int64(pos)*(eventSpan/int64(max(per, 1))) }

const sampleEvery = 1024

// sliceSource serves contiguous ranges of the key sequence, repeated
// repeat times (0: forever), as partitions; upto in (0, 1) makes each
// partition end early, with the same offsets.
type sliceSource struct {
	in        *input
	parts     int
	repeat    int
	upto      float64
	eventTime bool      // bev.T holds event time instead of latency samples
	gate      *fileGate // nil: read at once
}

// fileGate holds a source's readers back until a file exists: a cluster
// run releases the input once every node runs, so its clock starts with
// the input rather than with whichever node is placed first.
type fileGate struct {
	path string
	open atomic.Bool
}

// opened says whether the file exists yet (a nil gate is open).
func (g *fileGate) opened() bool {
	if g == nil || g.open.Load() {
		return true
	}
	if _, err := os.Stat(g.path); err != nil {
		return false
	}
	g.open.Store(true)
	return true
}

func (s *sliceSource) Partitions() int { return s.parts }

func (s *sliceSource) Open(p int, from int64) (flows.PartitionReader[bev], error) {
	n := len(s.in.idx) * max(s.repeat, 1)
	per := (n + s.parts - 1) / s.parts
	lo, hi := min(p*per, n), min((p+1)*per, n)
	if s.upto > 0 && s.upto < 1 {
		hi = lo + int(float64(hi-lo)*s.upto)
	}
	if s.repeat == 0 {
		per = (len(s.in.idx) + s.parts - 1) / s.parts
		lo, hi = p*per, -1
	}
	return &sliceReader{s: s, lo: lo, next: lo + int(from), hi: hi, per: per}, nil
}

type sliceReader struct {
	s            *sliceSource
	lo, next, hi int // hi < 0: unbounded
	per          int // events per partition, for event time
}

func (r *sliceReader) Read(_ context.Context, b *flows.ReadBatch[bev], max int) error {
	if !r.s.gate.opened() {
		return nil // nothing yet: the engine polls again
	}
	end := r.next + max
	if r.hi >= 0 {
		end = min(r.hi, end)
	}
	n := len(r.s.in.idx)
	now := time.Now().UnixNano()
	// j is i modulo n (the input repeats), kept by wrapping rather than
	// divided out per event: a division per event is a cost no baseline
	// pays, which a real source does not have either.
	j := r.next % n
	for i := r.next; i < end; i++ {
		e := bev{K: r.s.in.keys[r.s.in.idx[j]]}
		if j++; j == n {
			j = 0
		}
		if r.s.eventTime {
			e.T = eventTime(i-r.lo, r.per)
		} else if i%sampleEvery == 0 {
			e.T = now
		}
		b.Events = append(b.Events, e)
		b.Offsets = append(b.Offsets, int64(i-r.lo))
	}
	r.next = end
	b.End = int64(end - r.lo)
	if r.hi >= 0 && r.next >= r.hi {
		return io.EOF
	}
	return nil
}

func (r *sliceReader) Close() error { return nil }

// keyedSource serves the key sequence partitioned by key, as a source
// under flows.WithKeyedPartitions is: partition p holds, in input order,
// the events whose key has flows.KeyPartition(key, parts) == p. Every
// 1024th event of a partition carries its read time, for latency.
type keyedSource struct {
	in   *input
	pos  [][]uint32 // per partition: the positions of its events in in.idx
	gate *fileGate  // nil: read at once
}

func newKeyedSource(in *input, parts int, gate *fileGate) (*keyedSource, error) {
	of := make([]int, len(in.keys))
	for k, key := range in.keys {
		p, err := flows.KeyPartition(key, parts)
		if err != nil {
			return nil, err
		}
		of[k] = p
	}
	s := &keyedSource{in: in, pos: make([][]uint32, parts), gate: gate}
	for i, k := range in.idx {
		s.pos[of[k]] = append(s.pos[of[k]], uint32(i))
	}
	return s, nil
}

func (s *keyedSource) Partitions() int { return len(s.pos) }

func (s *keyedSource) Open(p int, from int64) (flows.PartitionReader[bev], error) {
	return &keyedReader{s: s, pos: s.pos[p], next: int(from)}, nil
}

type keyedReader struct {
	s    *keyedSource
	pos  []uint32
	next int
}

func (r *keyedReader) Read(_ context.Context, b *flows.ReadBatch[bev], max int) error {
	if !r.s.gate.opened() {
		return nil
	}
	end := min(r.next+max, len(r.pos))
	now := time.Now().UnixNano()
	for i := r.next; i < end; i++ {
		e := bev{K: r.s.in.keys[r.s.in.idx[r.pos[i]]]}
		if i%sampleEvery == 0 {
			e.T = now
		}
		b.Events = append(b.Events, e)
		b.Offsets = append(b.Offsets, int64(i))
	}
	r.next = end
	b.End = int64(end)
	if r.next >= len(r.pos) {
		return io.EOF
	}
	return nil
}

func (r *keyedReader) Close() error { return nil }

// resetPeakRSS collects garbage, returns memory to the OS and resets the
// process's RSS high-water mark (Linux); peakRSSMB reads it.
func resetPeakRSS() {
	runtime.GC()
	debug.FreeOSMemory()
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

func peakRSSMB() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}
