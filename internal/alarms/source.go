package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/tessera-streams/tessera/flows"
)

// SourceParams shape the skewed source.
type SourceParams struct {
	Hot     int64         // readings of partition 0
	Warm    int64         // readings of partition 1
	Early   int64         // readings of partition 2, all early in event time
	Rate    float64       // readings per second of partitions 0 and 1 together; 0 unthrottled
	IdleEnd time.Duration // partition 2 ends this long after the source is made
}

// Partitions of the source: hot, warm, early-then-idle, empty.
const Partitions = 4

// Start is the event time of the first readings; Span the event time the
// readings of partitions 0 and 1 cover.
var Start = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

const (
	Span    = 8 * time.Hour
	Devices = 150
	HotDev  = "d000"
)

// Limit is the number of readings of partition p.
func (sp SourceParams) Limit(p int) int64 {
	switch p {
	case 0:
		return sp.Hot
	case 1:
		return sp.Warm
	case 2:
		return sp.Early
	}
	return 0
}

// Event is the reading at offset off of partition p: a pure function of
// them. Partitions 0 and 1 spread their readings over Span at whole
// seconds, each up to 89 s early (less than MaxDelay: never late);
// partition 2's come every 10 s from Start.
func (sp SourceParams) Event(p int, off int64) Reading {
	var at time.Time
	switch p {
	case 0, 1:
		base := Start.Add(time.Duration(off) * Span / time.Duration(sp.Limit(p))).Truncate(time.Second)
		at = base.Add(-time.Duration(mix(uint64(p), uint64(off), 1)%90) * time.Second)
	default:
		at = Start.Add(time.Duration(off) * 10 * time.Second)
	}
	dev := HotDev
	if p != 0 || mix(uint64(p), uint64(off), 2)%2 == 1 {
		hour := uint64(at.Sub(Start) / time.Hour)
		var u uint64
		for i := range uint64(32) {
			u = 1 + mix(uint64(p), uint64(off), 5+i)%(Devices-1)
			if mix(u, hour, 4)%3 == 0 {
				break
			}
		}
		dev = fmt.Sprintf("d%03d", u)
	}
	return Reading{Dev: dev, At: at, Value: int64(mix(uint64(p), uint64(off), 3) % 100)}
}

func mix(a, b, c uint64) uint64 {
	z := a*0x9e3779b97f4a7c15 + b*0xbf58476d1ce4e5b9 + c*0x94d049bb133111eb + 0x2545f4914f6cdd1d
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Source is the skewed source. A partition opened at an offset reads at
// its share of the rate from there; one opened again at an older offset
// catches up at full speed.
type Source struct {
	sp    SourceParams
	made  time.Time
	mu    sync.Mutex
	sched [Partitions]schedule
}

type schedule struct {
	t0 time.Time
	at int64
	ok bool
}

func (s schedule) due(now time.Time, rate float64) int64 {
	return s.at + int64(now.Sub(s.t0).Seconds()*rate)
}

// NewSource returns the skewed source.
func NewSource(sp SourceParams) (*Source, error) {
	if sp.Hot < 1 || sp.Warm < 1 || sp.Early < 0 || sp.Rate < 0 {
		return nil, errors.New("alarms: -hot and -warm must be positive, -early and -rate not negative")
	}
	return &Source{sp: sp, made: time.Now()}, nil
}

// Partitions implements flows.Source.
func (s *Source) Partitions() int { return Partitions }

// Open implements flows.Source.
func (s *Source) Open(p int, from int64) (flows.PartitionReader[Reading], error) {
	if p < 0 || p >= Partitions || from < 0 || from > s.sp.Limit(p) {
		return nil, fmt.Errorf("alarms: no offset %d in partition %d", from, p)
	}
	r := &reader{s: s, p: p, next: from, limit: s.sp.Limit(p)}
	if s.sp.Rate > 0 && p < 2 {
		r.rate = s.sp.Rate * float64(r.limit) / float64(s.sp.Hot+s.sp.Warm)
		now := time.Now()
		s.mu.Lock()
		if sc := s.sched[p]; !sc.ok || sc.due(now, r.rate) < from {
			s.sched[p] = schedule{t0: now, at: from, ok: true}
		}
		r.sched = s.sched[p]
		s.mu.Unlock()
	}
	return r, nil
}

type reader struct {
	s     *Source
	p     int
	next  int64
	limit int64
	rate  float64
	sched schedule
}

func (r *reader) Read(_ context.Context, b *flows.ReadBatch[Reading], max int) error {
	n := min(int64(max), r.limit-r.next)
	if r.rate > 0 {
		n = min(n, r.sched.due(time.Now(), r.rate)-r.next)
	}
	for range n {
		b.Events = append(b.Events, r.s.sp.Event(r.p, r.next))
		b.Offsets = append(b.Offsets, r.next)
		r.next++
	}
	b.End = r.next
	if r.next < r.limit || r.p == 2 && time.Since(r.s.made) < r.s.sp.IdleEnd {
		return nil
	}
	return io.EOF
}

func (r *reader) Close() error { return nil }
