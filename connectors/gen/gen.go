// Package gen is a deterministic, seeded, partitioned event generator.
//
// The event at (partition, offset) is a pure function of the seed, the
// partition and the offset, so any partition can be replayed from any
// offset and two runs with the same seed see the same events. It runs
// unthrottled or at a set total rate (counted from the source's creation,
// so that a partition replayed from an older offset catches up at full
// speed), and either stops after a total number
// of events or runs forever.
package gen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"
	"time"

	"github.com/tessera-streams/tessera/flows"
)

// Config configures a generator.
type Config struct {
	Partitions int
	Seed       uint64
	Events     int64   // total over all partitions; 0 for unbounded
	Rate       float64 // total events per second; 0 for unthrottled
	// Now is the clock for Rate; time.Now if nil.
	Now func() time.Time
}

// Rand is a small, fast, deterministic random source for one event.
type Rand struct{ s uint64 }

// NewRand returns a Rand seeded with seed, for programs that draw their
// own deterministic streams (a simulation's, per subject).
func NewRand(seed uint64) *Rand { return &Rand{s: seed} }

// Uint64 returns the next random number (splitmix64).
func (r *Rand) Uint64() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Intn returns a number in [0, n).
func (r *Rand) Intn(n int) int {
	hi, _ := bits.Mul64(r.Uint64(), uint64(n))
	return int(hi)
}

// Float64 returns a number in [0, 1).
func (r *Rand) Float64() float64 { return float64(r.Uint64()>>11) / (1 << 53) }

// Source generates events of type T with fn, which must be a pure function
// of its arguments and the Rand it is given.
type Source[T any] struct {
	cfg   Config
	fn    func(partition int, offset int64, r *Rand) T
	mu    sync.Mutex // guards sched
	sched []schedule // per partition, with a rate
}

// schedule is a partition's rate schedule: offset at is due at time t0, and
// offsets after it at the partition's rate.
type schedule struct {
	t0 time.Time
	at int64
	ok bool // set by the partition's first Open
}

// due is the offset the schedule has reached at now.
func (s schedule) due(now time.Time, perPart float64) int64 {
	return s.at + int64(now.Sub(s.t0).Seconds()*perPart)
}

// maxRate bounds Config.Rate: the schedule's offsets, a rate times the
// seconds since a partition opened, stay below an int64's largest for
// 292 years even with one partition (a non-finite rate, or one that
// overflowed, left the offset to the platform's conversion of a float).
const maxRate = 1e9

// New returns a generator source.
func New[T any](cfg Config, fn func(partition int, offset int64, r *Rand) T) (*Source[T], error) {
	switch {
	case cfg.Partitions < 1:
		return nil, fmt.Errorf("gen: partitions must be at least 1, got %d", cfg.Partitions)
	case cfg.Events < 0:
		return nil, fmt.Errorf("gen: events must not be negative, got %d", cfg.Events)
	case !(cfg.Rate >= 0 && cfg.Rate <= maxRate): // NaN too
		return nil, fmt.Errorf("gen: rate must be between 0 (unthrottled) and %g events a second, got %v", maxRate, cfg.Rate)
	case fn == nil:
		return nil, errors.New("gen: no event function")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Source[T]{cfg: cfg, fn: fn, sched: make([]schedule, cfg.Partitions)}, nil
}

// Partitions implements flows.Source.
func (s *Source[T]) Partitions() int { return s.cfg.Partitions }

// Limit is the number of events partition p produces, or -1 if unbounded.
func (s *Source[T]) Limit(p int) int64 {
	if s.cfg.Events == 0 {
		return -1
	}
	n := s.cfg.Events / int64(s.cfg.Partitions)
	if int64(p) < s.cfg.Events%int64(s.cfg.Partitions) {
		n++
	}
	return n
}

// Event is the event at (p, off).
func (s *Source[T]) Event(p int, off int64) T {
	r := Rand{s: s.cfg.Seed ^ uint64(p)<<48 ^ uint64(off)*0x2545f4914f6cdd1d}
	r.Uint64()
	return s.fn(p, off, &r)
}

// Open implements flows.Source.
func (s *Source[T]) Open(p int, from int64) (flows.PartitionReader[T], error) {
	if p < 0 || p >= s.cfg.Partitions {
		return nil, fmt.Errorf("gen: no partition %d", p)
	}
	if from < 0 {
		return nil, fmt.Errorf("gen: negative offset %d", from)
	}
	r := &reader[T]{s: s, p: p, next: from, limit: s.Limit(p)}
	if s.cfg.Rate > 0 {
		r.perPart = s.cfg.Rate / float64(s.cfg.Partitions)
		now := s.cfg.Now()
		s.mu.Lock()
		if sc := s.sched[p]; !sc.ok || sc.due(now, r.perPart) < from {
			s.sched[p] = schedule{t0: now, at: from, ok: true}
		}
		r.sched = s.sched[p]
		s.mu.Unlock()
	}
	return r, nil
}

type reader[T any] struct {
	s       *Source[T]
	p       int
	next    int64
	limit   int64
	perPart float64  // events per second of this partition; 0 unthrottled
	sched   schedule // a copy: Read takes no lock
}

func (r *reader[T]) Read(_ context.Context, b *flows.ReadBatch[T], max int) error {
	n := int64(max)
	if r.limit >= 0 {
		n = min(n, r.limit-r.next)
	}
	if r.perPart > 0 {
		n = min(n, r.sched.due(r.s.cfg.Now(), r.perPart)-r.next)
	}
	for range max64(n, 0) {
		b.Events = append(b.Events, r.s.Event(r.p, r.next))
		b.Offsets = append(b.Offsets, r.next)
		r.next++
	}
	b.End = r.next
	if r.limit >= 0 && r.next >= r.limit {
		return io.EOF
	}
	return nil
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

func (r *reader[T]) Close() error { return nil }
