package pipeline

import (
	"cmp"
	"math"
	"slices"
	"time"

	"github.com/tessera-streams/tessera/examples/transport/sim"
)

// WindowKey is an entry of a windowed view: the window's start and the
// entry's key.
type WindowKey struct {
	Start time.Time
	Key   string
}

// Result is what the pipeline computes, as a plain program holds it.
type Result struct {
	Trips  []Detected // in no particular order
	Hourly map[WindowKey]Cell
	Daily  map[WindowKey]Cell
	Travel map[string]TravelTimes
	Moving map[WindowKey]Crowd
}

// Sequential computes the flow's results with a plain program over the
// partitions' pings: each subscriber's pings in event-time order (ties by
// partition and offset), its timers between them at their times (timers
// before pings at one time), every timer at the end of the input — as the
// flow's detector sees them with InEventTimeOrder and no late pings. Then it counts as the flow's later
// stages do, every entry, whatever its number of subscribers.
func Sequential(parts [][]sim.Ping, net Network, o Options) Result {
	type ev struct {
		at   int64
		part int32
		off  int32
		cell int32
	}
	bySub := map[uint64][]ev{}
	for part, pings := range parts {
		for off, p := range pings {
			bySub[p.Sub] = append(bySub[p.Sub], ev{p.At.UnixNano(), int32(part), int32(off), p.Cell})
		}
	}
	subs := make([]uint64, 0, len(bySub))
	for s := range bySub {
		subs = append(subs, s)
	}
	slices.Sort(subs)
	p := o.Params
	var out []Detected
	var timers []int64 // pending, sorted
	for _, sub := range subs {
		evs := bySub[sub]
		slices.SortFunc(evs, func(a, b ev) int {
			return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(a.part, b.part), cmp.Compare(a.off, b.off))
		})
		var s Stay
		timers = timers[:0]
		carry := func(next Stay, st Step) {
			s = next
			out = append(out, st.D[:st.N]...)
			for _, t := range st.Timers {
				if t != 0 && !slices.Contains(timers, t) {
					i, _ := slices.BinarySearch(timers, t)
					timers = slices.Insert(timers, i, t)
				}
			}
		}
		// The timers due by t, in time order, each once.
		runUntil := func(t int64) {
			for len(timers) > 0 && timers[0] <= t {
				at := timers[0]
				timers = timers[1:]
				carry(p.OnTimer(sub, s, at))
			}
		}
		for _, e := range evs {
			runUntil(e.at)
			carry(p.OnPing(sub, s, e.cell, net.CellZone[e.cell], e.at))
		}
		runUntil(math.MaxInt64)
	}
	return Count(out, net, o)
}

// Count computes the later stages' results from what the detector
// emitted: trips by OD pair and hour (of departure) and day, travel
// times by OD pair, and moves by zone and window.
func Count(detected []Detected, net Network, o Options) Result {
	r := Result{Hourly: map[WindowKey]Cell{}, Daily: map[WindowKey]Cell{}, Travel: map[string]TravelTimes{}, Moving: map[WindowKey]Crowd{}}
	for _, d := range detected {
		if d.Move {
			k := WindowKey{d.Arrive.Truncate(o.Params.MoveEvery).UTC(), net.Zones[d.To]}
			r.Moving[k] = AddMove(r.Moving[k], d)
			continue
		}
		r.Trips = append(r.Trips, d)
		od := net.OD(d)
		h := WindowKey{d.Depart.Truncate(time.Hour).UTC(), od}
		r.Hourly[h] = AddTrip(r.Hourly[h], d)
		day := WindowKey{d.Depart.Truncate(24 * time.Hour).UTC(), od}
		r.Daily[day] = AddTrip(r.Daily[day], d)
		r.Travel[od] = AddTravel(r.Travel[od], d)
	}
	return r
}
