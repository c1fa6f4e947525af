package sim

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/tessera-streams/tessera/flows"
)

// delivery is a ping on its way: the partition that carries it and when
// it gets there.
type delivery struct {
	ping Ping
	part int
	at   time.Time
}

// deliver routes a subscriber's pings: each to its zone's partition, late
// by up to Noise.Delay, in blocks up to Noise.Lag late on the lagging
// partition, some twice.
func (s *Sim) deliver(out []delivery, pings []Ping, sub uint64) []delivery {
	n := s.Config.Noise
	r := newRng(s.Config.Seed, sub|1<<62)
	late := func(p Ping, part int) time.Time {
		at := p.At.Add(time.Duration(r.float() * float64(n.Delay)))
		if part == n.LagPartition && n.Lag > 0 {
			block := p.At.Truncate(n.Lag).Add(n.Lag)
			at = block.Add(time.Duration(r.float() * float64(n.Delay)))
		}
		return at
	}
	for _, p := range pings {
		part := int(s.ZoneOf(p.Cell)) % s.Config.Partitions
		out = append(out, delivery{ping: p, part: part, at: late(p, part)})
		if r.float() < n.Duplicate {
			out = append(out, delivery{ping: p, part: part, at: late(p, part)})
		}
	}
	return out
}

// partition orders each partition's pings by delivery.
func (s *Sim) partition(all []delivery) {
	slices.SortFunc(all, func(a, b delivery) int {
		return cmp.Or(cmp.Compare(a.part, b.part), a.at.Compare(b.at), a.ping.At.Compare(b.ping.At),
			cmp.Compare(a.ping.Sub, b.ping.Sub), cmp.Compare(a.ping.Cell, b.ping.Cell), cmp.Compare(a.ping.Kind, b.ping.Kind))
	})
	s.Parts = make([][]Ping, s.Config.Partitions)
	for _, d := range all {
		s.Parts[d.part] = append(s.Parts[d.part], d.ping)
	}
}

// Source is a flows source over a simulation's partitions: bounded, and
// replayable from any offset. With a rate it releases pings at that many
// per second over all partitions, counted from when each partition was
// first opened (a partition reopened at an older offset catches up at
// full speed).
type Source struct {
	sim  *Sim
	rate float64
	now  func() time.Time
	mu   sync.Mutex
	t0   []time.Time // per partition: when it was first opened; guarded by mu
}

// Source returns a source of the simulation's pings; rate 0 is
// unthrottled, now the clock for the rate (time.Now if nil).
func (s *Sim) Source(rate float64, now func() time.Time) *Source {
	if now == nil {
		now = time.Now
	}
	return &Source{sim: s, rate: rate, now: now, t0: make([]time.Time, len(s.Parts))}
}

// Partitions implements flows.Source.
func (s *Source) Partitions() int { return len(s.sim.Parts) }

// Open implements flows.Source.
func (s *Source) Open(p int, from int64) (flows.PartitionReader[Ping], error) {
	if p < 0 || p >= len(s.sim.Parts) {
		return nil, fmt.Errorf("sim: no partition %d", p)
	}
	if from < 0 || from > int64(len(s.sim.Parts[p])) {
		return nil, fmt.Errorf("sim: partition %d has no offset %d", p, from)
	}
	rd := &reader{src: s, pings: s.sim.Parts[p], next: from}
	if s.rate > 0 {
		s.mu.Lock()
		if s.t0[p].IsZero() {
			s.t0[p] = s.now()
		}
		rd.t0 = s.t0[p]
		s.mu.Unlock()
		rd.perPart = s.rate / float64(len(s.sim.Parts))
	}
	return rd, nil
}

type reader struct {
	src     *Source
	pings   []Ping
	next    int64
	t0      time.Time
	perPart float64 // pings per second of this partition; 0: unthrottled
}

func (r *reader) Read(_ context.Context, b *flows.ReadBatch[Ping], max int) error {
	n := min(int64(max), int64(len(r.pings))-r.next)
	if r.perPart > 0 {
		due := int64(r.src.now().Sub(r.t0).Seconds() * r.perPart)
		n = min(n, due-r.next)
	}
	for range n {
		b.Events = append(b.Events, r.pings[r.next])
		b.Offsets = append(b.Offsets, r.next)
		r.next++
	}
	b.End = r.next
	if r.next >= int64(len(r.pings)) {
		return io.EOF
	}
	return nil
}

func (r *reader) Close() error { return nil }
