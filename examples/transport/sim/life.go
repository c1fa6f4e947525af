package sim

import (
	"math"
	"slices"
	"time"
)

// place is where a person stays: a point and the cell serving it.
type place struct {
	x, y float64
	cell int32
}

// person is a subscriber's places and habits.
type person struct {
	sub    uint64
	r      *rng
	home   place
	work   place
	others [2]place
	worker bool
}

// person draws subscriber sub: a home by population weight, a work place
// and two other places by gravity (weight over distance).
func (s *Sim) person(sub uint64) *person {
	r := newRng(s.Config.Seed, sub)
	p := &person{sub: sub, r: r, worker: r.float() < 0.6}
	hz := s.pickZone(r, -1, 0)
	p.home = s.placeIn(r, hz)
	p.work = s.placeIn(r, s.pickZone(r, hz, 8))
	for i := range p.others {
		p.others[i] = s.placeIn(r, s.pickZone(r, hz, 5))
	}
	return p
}

// pickZone draws a zone by weight, and with from >= 0 by weight times
// exp(-distance/decay km) from zone from.
func (s *Sim) pickZone(r *rng, from int, decay float64) int {
	w := make([]float64, len(s.Zones))
	total := 0.0
	for i, z := range s.Zones {
		w[i] = z.Weight
		if from >= 0 {
			f := s.Zones[from]
			w[i] *= math.Exp(-math.Hypot(z.X-f.X, z.Y-f.Y) / decay)
		}
		total += w[i]
	}
	x := r.float() * total
	for i, v := range w {
		if x -= v; x < 0 {
			return i
		}
	}
	return len(w) - 1
}

func (s *Sim) placeIn(r *rng, zone int) place {
	z := s.Zones[zone]
	x := z.X + r.between(-0.5, 0.5)*s.zoneKm
	y := z.Y + r.between(-0.5, 0.5)*s.zoneKm
	return place{x: x, y: y, cell: s.serving(x, y)}
}

// visit is a planned stay away from home: where, when the person leaves
// for it, and how long it lasts once there (at least 30 minutes).
type visit struct {
	at    place
	leave time.Time
	stay  time.Duration
}

// day is a person's activity chain on the day starting at midnight t0:
// the places visited after home. The person goes home after the last.
func (p *person) day(t0 time.Time) []visit {
	r := p.r
	var out []visit
	add := func(at place, leave, hours float64) float64 {
		out = append(out, visit{at: at, leave: t0.Add(time.Duration(leave * float64(time.Hour))),
			stay: time.Duration(hours * float64(time.Hour))})
		return leave + hours
	}
	switch u := r.float(); {
	case p.worker && u < 0.92:
		t := add(p.work, r.between(6.5, 9), r.between(7.5, 9.5))
		if r.float() < 0.4 {
			add(p.others[r.intn(2)], t, r.between(0.75, 2))
		}
	case !p.worker && u < 0.75:
		t := add(p.others[0], r.between(8.5, 14), r.between(0.75, 3))
		if r.float() < 0.45 {
			add(p.others[1], t, r.between(0.5, 2))
		}
	}
	return out
}

// live simulates the person's days: true trips between zones, and pings.
func (p *person) live(s *Sim) ([]Trip, []Ping) {
	c := s.Config
	var trips []Trip
	var pings []Ping
	cur, at := p.home, c.Start // where the person is, and from when it may leave
	end := c.Start.Add(time.Duration(c.Days) * 24 * time.Hour)
	for d := range c.Days {
		plan := append(p.day(c.Start.Add(time.Duration(d)*24*time.Hour)), visit{at: p.home})
		for _, v := range plan {
			if v.at == cur {
				continue
			}
			depart := maxTime(at, v.leave)
			pings = p.stationary(s, pings, cur, at, depart)
			arrive, mode, moving := p.move(s, cur, v.at, depart)
			pings = append(pings, moving...)
			if from, to := s.ZoneOf(cur.cell), s.ZoneOf(v.at.cell); from != to {
				trips = append(trips, Trip{Sub: p.sub, From: from, To: to, Depart: depart, Arrive: arrive, Mode: mode})
			}
			cur, at = v.at, arrive
			if v.stay > 0 {
				until := arrive.Add(max(v.stay, 30*time.Minute))
				pings = p.stationary(s, pings, cur, arrive, until)
				at = until
			}
		}
	}
	pings = p.stationary(s, pings, cur, at, end)
	return trips, p.silence(s, pings)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// stationary adds the pings of a phone staying at pl from from to to:
// calls and data sessions (rarer at night), a periodic update after three
// silent hours, and ping-pong handovers to a neighbouring cell and back.
func (p *person) stationary(s *Sim, out []Ping, pl place, from, to time.Time) []Ping {
	r := p.r
	for t, last := from, from; ; {
		mean := 22.0
		if hr := t.Hour(); hr < 7 || hr >= 23 {
			mean = 100
		}
		next := t.Add(time.Duration(r.exp(mean) * float64(time.Minute)))
		kind := Data
		if r.float() < 0.3 {
			kind = Call
		}
		if periodic := last.Add(3 * time.Hour); next.After(periodic) {
			next, kind = periodic, Periodic
		}
		if !next.Before(to) {
			return out
		}
		t, last = next, next
		out = append(out, Ping{Sub: p.sub, Cell: pl.cell, At: t, Kind: kind})
		nb := s.Cells[pl.cell].Neighbours
		if len(nb) > 0 && r.float() < s.Config.Noise.PingPong {
			away := t.Add(time.Duration(r.between(5, 60) * float64(time.Second)))
			back := away.Add(time.Duration(r.between(20, 120) * float64(time.Second)))
			if back.Before(to) {
				out = append(out, Ping{Sub: p.sub, Cell: nb[r.intn(min(len(nb), 3))], At: away, Kind: Handover},
					Ping{Sub: p.sub, Cell: pl.cell, At: back, Kind: Handover})
				t, last = back, back
			}
		}
	}
}

// move travels from a to b leaving at depart: the mode by distance, a
// travel time by mode and hour, and the pings on the way (a handover at
// most cell changes, calls and data now and then).
func (p *person) move(s *Sim, a, b place, depart time.Time) (time.Time, Mode, []Ping) {
	r := p.r
	km := math.Hypot(b.x-a.x, b.y-a.y)
	var mode Mode
	var minutes float64
	switch {
	case km < 1.5:
		mode, minutes = Walk, km/5*60*1.2+2
	case km > 12 && r.float() < 0.35:
		mode, minutes = Rail, km/60*60+r.between(12, 25)
	default:
		speed := 40.0
		if hr := depart.Hour(); hr >= 7 && hr < 9 || hr >= 16 && hr < 19 {
			speed = 25
		}
		mode, minutes = Road, km/speed*60*1.3*r.between(0.9, 1.3)+r.between(2, 6)
	}
	dur := time.Duration(minutes * float64(time.Minute))
	var pings []Ping
	cell := a.cell
	const step = 20 * time.Second
	nextEvent := depart.Add(time.Duration(r.exp(8) * float64(time.Minute)))
	for t := step; t < dur; t += step {
		f := float64(t) / float64(dur)
		now := depart.Add(t)
		c := s.serving(a.x+(b.x-a.x)*f, a.y+(b.y-a.y)*f)
		if c != cell {
			cell = c
			if r.float() < 0.75 {
				pings = append(pings, Ping{Sub: p.sub, Cell: c, At: now, Kind: Handover})
			}
		}
		if now.After(nextEvent) {
			pings = append(pings, Ping{Sub: p.sub, Cell: c, At: now, Kind: Data})
			nextEvent = now.Add(time.Duration(r.exp(8) * float64(time.Minute)))
		}
	}
	arrive := depart.Add(dur)
	if cell != b.cell {
		pings = append(pings, Ping{Sub: p.sub, Cell: b.cell, At: arrive, Kind: Handover})
	}
	return arrive, mode, pings
}

// silence drops the pings of the phone's silent hours: on each day, with
// chance Noise.Gap, 1–5 hours from some time between 6:00 and 20:00.
func (p *person) silence(s *Sim, pings []Ping) []Ping {
	c := s.Config
	r := p.r
	for d := range c.Days {
		if r.float() >= c.Noise.Gap {
			continue
		}
		from := c.Start.Add(time.Duration(d)*24*time.Hour + time.Duration(r.between(6, 20)*float64(time.Hour)))
		to := from.Add(time.Duration(r.between(1, 5) * float64(time.Hour)))
		pings = slices.DeleteFunc(pings, func(pg Ping) bool { return !pg.At.Before(from) && pg.At.Before(to) })
	}
	return pings
}
