// Package sim is a seeded mobile-network simulator: a country of zones
// with cells, subscribers who follow daily activity chains between home,
// work and other places, trips by mode with plausible travel times, and
// the pings the network records of them, with the noise real feeds have.
//
// Simulate computes everything up front from the seed: the pings of each
// source partition in delivery order and the ground truth (every true
// trip). The same Config gives the same pings and trips, so a Source
// replays any partition from any offset, and a test can compare what a
// pipeline detects with what happened.
//
// Partitions are network elements, as in a real feed: a ping goes to the
// partition of the zone of its cell, so one subscriber's pings spread over
// partitions as it moves, and within a partition pings are ordered by when
// they were delivered, not when they happened. The noise:
//
//   - ping-pong: a stationary phone is handed over to a neighbouring cell,
//     often in another zone, and back within a minute or two;
//   - gaps: a phone is silent (off, or out of coverage) for hours;
//   - duplicates: a record is delivered twice;
//   - out-of-order delivery: every record is delayed by a random amount
//     of up to Delay;
//   - a lagging element: one partition delivers its records in blocks,
//     each up to Lag late.
//
// Every record's delivery is at most max(Delay, Lag) after its time: a
// flow given that bound as its maximum out-of-orderness sees no late
// pings.
//
// Sim never reads a clock or starts a goroutine; a Source's Read only
// copies from memory (and waits for nothing: with a rate it returns what
// is due).
package sim

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/tessera-streams/tessera/connectors/gen"
)

// Config sizes the simulated country and its noise.
type Config struct {
	Seed         uint64
	Zones        int       // zones, on a square grid
	CellsPerZone int       // cells of each zone
	Subscribers  int       // phones
	Days         int       // simulated days, from Start
	Partitions   int       // source partitions (network elements)
	Start        time.Time // midnight of the first day
	Noise        Noise
}

// Noise is what makes the feed realistic.
type Noise struct {
	PingPong  float64       // chance that a stationary ping starts a ping-pong handover
	Gap       float64       // chance that a phone is silent for 1–5 h on a day
	Duplicate float64       // chance that a record is delivered twice
	Delay     time.Duration // every record is delivered up to this late
	// LagPartition (-1: none) delivers its records in blocks, up to Lag late.
	LagPartition int
	Lag          time.Duration
}

// DefaultNoise is the noise the example runs with and its accuracy is
// measured on.
func DefaultNoise() Noise {
	return Noise{PingPong: 0.15, Gap: 0.1, Duplicate: 0.02, Delay: 2 * time.Minute, LagPartition: 0, Lag: 10 * time.Minute}
}

// DefaultConfig is the example's country: 200 zones of 4 cells, 5000
// phones, one day.
func DefaultConfig() Config {
	return Config{Seed: 1, Zones: 200, CellsPerZone: 4, Subscribers: 5000, Days: 1, Partitions: 4,
		Start: time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC), Noise: DefaultNoise()}
}

// PingsPerSubscriberDay is about how many pings a phone makes in a day
// with the default noise: sizes a simulation to a number of pings.
const PingsPerSubscriberDay = 75

// MaxDelay bounds how late any record is delivered: a flow that allows
// this much out-of-orderness sees no late ping.
func (c Config) MaxDelay() time.Duration {
	d := c.Noise.Delay
	if c.Noise.LagPartition >= 0 {
		d += c.Noise.Lag
	}
	return d
}

func (c Config) validate() error {
	var errs []error
	if c.Zones < 2 {
		errs = append(errs, fmt.Errorf("zones: need at least 2, got %d", c.Zones))
	}
	if c.CellsPerZone < 1 {
		errs = append(errs, fmt.Errorf("cells per zone: need at least 1, got %d", c.CellsPerZone))
	}
	if c.Subscribers < 1 || c.Days < 1 || c.Partitions < 1 {
		errs = append(errs, fmt.Errorf("subscribers, days and partitions must be positive (%d, %d, %d)", c.Subscribers, c.Days, c.Partitions))
	}
	n := c.Noise
	for _, p := range []float64{n.PingPong, n.Gap, n.Duplicate} {
		if p < 0 || p > 1 {
			errs = append(errs, fmt.Errorf("noise: probability %v outside [0, 1]", p))
		}
	}
	if n.Delay < 0 || n.Lag < 0 {
		errs = append(errs, errors.New("noise: delay and lag must not be negative"))
	}
	if n.LagPartition >= c.Partitions {
		errs = append(errs, fmt.Errorf("noise: lagging partition %d of %d", n.LagPartition, c.Partitions))
	}
	return errors.Join(errs...)
}

// Zone is an area the metrics are counted by.
type Zone struct {
	ID     int32
	Name   string
	X, Y   float64 // centre, km
	Weight float64 // share of the population living there
	Cells  []int32
}

// Cell is an antenna's coverage: a phone is served by the nearest cell.
type Cell struct {
	ID         int32
	Zone       int32
	X, Y       float64
	Neighbours []int32 // the nearest other cells, nearest first
}

// Kind is what made the network record a ping.
type Kind uint8

// The kinds of ping.
const (
	Call     Kind = iota // a call or a text
	Data                 // a data session
	Handover             // the phone changed cell while active
	Periodic             // the periodic location update of an idle phone
)

// Ping is one network record: a phone seen by a cell at a time.
type Ping struct {
	Sub  uint64    `json:"sub"`
	Cell int32     `json:"cell"`
	At   time.Time `json:"at"`
	Kind Kind      `json:"kind"`
}

// Mode is how a trip travels.
type Mode uint8

// The modes.
const (
	Walk Mode = iota
	Road
	Rail
)

func (m Mode) String() string { return [...]string{"walk", "road", "rail"}[m] }

// MarshalText writes the mode's name.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// Trip is a true trip between two zones: the phone left its last place in
// From at Depart and reached its first place in To at Arrive.
type Trip struct {
	Sub    uint64
	From   int32
	To     int32
	Depart time.Time
	Arrive time.Time
	Mode   Mode
}

// Sim is a simulated network: its geography, the pings of each partition
// in delivery order, and the ground truth.
type Sim struct {
	Config Config
	Zones  []Zone
	Cells  []Cell
	Parts  [][]Ping // per partition, in delivery order
	Truth  []Trip   // by subscriber, then departure
	zoneKm float64
	side   int // zones per row
}

// Pings is the number of records over all partitions.
func (s *Sim) Pings() int {
	n := 0
	for _, p := range s.Parts {
		n += len(p)
	}
	return n
}

// ZoneOf is the zone of a cell.
func (s *Sim) ZoneOf(cell int32) int32 { return s.Cells[cell].Zone }

// rng is a subscriber's (or the country's) own random stream, so a
// subscriber's life does not depend on the others'.
type rng struct{ *gen.Rand }

func newRng(seed, stream uint64) *rng {
	r := &rng{gen.NewRand(seed*0x9e3779b97f4a7c15 ^ stream*0xd1b54a32d192ed03)}
	r.Uint64()
	return r
}

func (r *rng) float() float64 { return r.Float64() }

func (r *rng) intn(n int) int { return r.Intn(n) }

// exp is an exponential variate with mean m.
func (r *rng) exp(m float64) float64 { return -m * math.Log(1-r.float()) }

// between is uniform in [a, b).
func (r *rng) between(a, b float64) float64 { return a + (b-a)*r.float() }

// norm is a standard normal variate.
func (r *rng) norm() float64 {
	return math.Sqrt(-2*math.Log(1-r.float())) * math.Cos(2*math.Pi*r.float())
}

// Simulate runs the simulation of c.
func Simulate(c Config) (*Sim, error) {
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	s := &Sim{Config: c, zoneKm: 4}
	s.country()
	var all []delivery
	for sub := range c.Subscribers {
		p := s.person(uint64(sub))
		trips, pings := p.live(s)
		s.Truth = append(s.Truth, trips...)
		all = s.deliver(all, pings, uint64(sub))
	}
	s.partition(all)
	return s, nil
}

// country lays out the zones on a grid with population weights and names,
// and their cells with neighbours.
func (s *Sim) country() {
	c := s.Config
	r := newRng(c.Seed, math.MaxUint64)
	s.side = int(math.Ceil(math.Sqrt(float64(c.Zones))))
	names := zoneNames(r, c.Zones)
	total := 0.0
	for z := range c.Zones {
		zx, zy := z%s.side, z/s.side
		// A few cities and many villages: a heavy-tailed weight, larger
		// near the centres of the first zones drawn as cities.
		w := math.Exp(1.2 * r.norm())
		zone := Zone{ID: int32(z), Name: names[z], X: (float64(zx) + 0.5) * s.zoneKm, Y: (float64(zy) + 0.5) * s.zoneKm, Weight: w}
		for range c.CellsPerZone {
			id := int32(len(s.Cells))
			s.Cells = append(s.Cells, Cell{ID: id, Zone: int32(z),
				X: (float64(zx) + r.between(0.05, 0.95)) * s.zoneKm, Y: (float64(zy) + r.between(0.05, 0.95)) * s.zoneKm})
			zone.Cells = append(zone.Cells, id)
		}
		total += w
		s.Zones = append(s.Zones, zone)
	}
	for i := range s.Zones {
		s.Zones[i].Weight /= total
	}
	for i := range s.Cells {
		cl := &s.Cells[i]
		near := s.nearby(cl.X, cl.Y)
		near = slices.DeleteFunc(near, func(o int32) bool { return o == cl.ID })
		slices.SortFunc(near, func(a, b int32) int {
			return cmp.Or(cmp.Compare(s.dist2(cl.X, cl.Y, a), s.dist2(cl.X, cl.Y, b)), cmp.Compare(a, b))
		})
		cl.Neighbours = near[:min(len(near), 6)]
	}
}

func (s *Sim) dist2(x, y float64, cell int32) float64 {
	dx, dy := s.Cells[cell].X-x, s.Cells[cell].Y-y
	return dx*dx + dy*dy
}

// nearby lists the cells of the zones around (x, y).
func (s *Sim) nearby(x, y float64) []int32 {
	zx, zy := int(x/s.zoneKm), int(y/s.zoneKm)
	var out []int32
	for dy := -1; dy <= 1; dy++ {
		for dx := -1; dx <= 1; dx++ {
			nx, ny := zx+dx, zy+dy
			if nx < 0 || ny < 0 || nx >= s.side {
				continue
			}
			if z := ny*s.side + nx; z < len(s.Zones) {
				out = append(out, s.Zones[z].Cells...)
			}
		}
	}
	return out
}

// serving is the cell nearest to (x, y).
func (s *Sim) serving(x, y float64) int32 {
	best, bd := int32(-1), math.Inf(1)
	zx, zy := int(x/s.zoneKm), int(y/s.zoneKm)
	for dy := -1; dy <= 1; dy++ {
		for dx := -1; dx <= 1; dx++ {
			nx, ny := zx+dx, zy+dy
			if nx < 0 || ny < 0 || nx >= s.side {
				continue
			}
			z := ny*s.side + nx
			if z >= len(s.Zones) {
				continue
			}
			for _, c := range s.Zones[z].Cells {
				if d := s.dist2(x, y, c); d < bd {
					best, bd = c, d
				}
			}
		}
	}
	return best
}

var syllables = []string{"ash", "brook", "cal", "dun", "el", "fen", "gar", "holm", "ing", "kel", "lin", "mar",
	"nor", "or", "pen", "quar", "ros", "stan", "tor", "ul", "ver", "wick", "yar", "zel", "bel", "cor", "dal", "mere"}

var suffixes = []string{"ton", "by", "ford", "ham", "field", "wood", "stead", "well", "port", "ley", "mouth", "combe"}

// zoneNames makes n distinct place names.
func zoneNames(r *rng, n int) []string {
	seen := map[string]bool{}
	out := make([]string, 0, n)
	for len(out) < n {
		a := syllables[r.intn(len(syllables))]
		name := string(a[0]-'a'+'A') + a[1:] + syllables[r.intn(len(syllables))] + suffixes[r.intn(len(suffixes))]
		if seen[name] {
			name += fmt.Sprint(len(out))
		}
		seen[name] = true
		out = append(out, name)
	}
	return out
}
