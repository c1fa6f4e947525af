package pipeline

import (
	"time"

	"github.com/tessera-streams/tessera/examples/transport/sim"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/splice"
)

// Network is what the pipeline knows of the network: its zones' names
// and the zone of every cell (an operator's cell plan).
type Network struct {
	Zones    []string
	CellZone []int32
}

// NetworkOf is the network of a simulation.
func NetworkOf(s *sim.Sim) Network {
	n := Network{Zones: make([]string, len(s.Zones)), CellZone: make([]int32, len(s.Cells))}
	for i, z := range s.Zones {
		n.Zones[i] = z.Name
	}
	for i, c := range s.Cells {
		n.CellZone[i] = c.Zone
	}
	return n
}

// Event is what the detector needs of a ping: its subscriber, time (Unix
// nanoseconds) and cell.
type Event struct {
	Sub  uint64
	At   int64
	Cell int32
}

// OD is a trip's key in the OD views: "ORIGIN->DEST" by zone name.
func (n Network) OD(t Detected) string { return n.Zones[t.From] + "->" + n.Zones[t.To] }

// Options are the flow's.
type Options struct {
	Params    Params
	K         int64         // publish only entries of at least K distinct subscribers
	Fragments int           // key groups (0: the framework's default)
	Retain    time.Duration // windows stay queryable this long after their end
	Crowd     int64         // the crowded alert's threshold: people on the move in a zone
	Sink      flows.Sink[Detected]
}

// DefaultOptions are the example's.
func DefaultOptions() Options {
	return Options{Params: DefaultParams(), K: 10, Retain: 14 * 24 * time.Hour, Crowd: 40}
}

// Flow is the transport flow over src:
//
//	pings ─KeyBy sub─▶ detector (stays, event-time timers, expiry) ─▶ trips ─KeyBy OD─▶ od, od-day, traveltime
//	                                                           └▶ moves ─KeyBy zone─▶ moving, crowds ▶ alert crowded
//
// Views: "od" (hourly OD matrix, windowed keyed, by departure),
// "od-day" (daily), "traveltime" (per OD pair, a histogram of minutes),
// "moving" (people on the move per zone, per Params.MoveEvery), "crowds"
// (the five zones with most people on the move, per Params.MoveEvery), "trips" and
// "too-late" (trips the OD windows no longer took: 0 unless Lateness is
// too short). Every OD and zone entry is published only when at least K
// distinct subscribers back it. Trips go to the sink once a checkpoint
// covers them.
func Flow(src flows.Source[sim.Ping], net Network, o Options) *flows.Flow {
	p := o.Params
	f := flows.New("transport", flows.WithFragments(o.Fragments))
	pings := flows.From(f, "pings", src, flows.WithEventTime(func(p sim.Ping) time.Time { return p.At }, p.MaxDelay))
	// What the detector needs of a ping, without a pointer: the pings
	// waiting for the watermark are cheap to hold and move.
	events := flows.Map(pings, func(p sim.Ping) Event { return Event{Sub: p.Sub, At: p.At.UnixNano(), Cell: p.Cell} })
	bySub := flows.KeyBy(events, func(e Event) uint64 { return e.Sub })
	out := flows.Process(bySub, flows.Handler[uint64, Event, Stay, Detected]{
		OnEvent: func(c *flows.Context[uint64, Stay, Detected], e Event) {
			s, _ := c.State()
			var st Step
			p.ping(c.Key(), &s, e.Cell, net.CellZone[e.Cell], e.At, &st)
			carry(c, &s, &st)
		},
		OnTimer: func(c *flows.Context[uint64, Stay, Detected], at time.Time) {
			if s, ok := c.State(); ok {
				if next, st := p.OnTimer(c.Key(), s, at.UnixNano()); next != s || st.Clear {
					carry(c, &next, &st)
				}
			}
		},
	}, flows.InEventTimeOrder()).Out()

	trips := flows.Restamp(flows.Filter(out, func(d Detected) bool { return !d.Move }), func(d Detected) time.Time { return d.Depart })
	od := flows.KeyBy(trips, net.OD)
	kCell := flows.PublishIf(func(c Cell) bool { return c.Subscribers() >= o.K })
	byTrips := flows.ScoreBy(func(c Cell) float64 { return float64(c.Trips) })
	hourly := flows.WindowAggregate(od, flows.Tumbling(time.Hour), func() Cell { return Cell{} }, AddTrip, flows.AllowedLateness(p.Lateness))
	hourly.KeyedView("od", o.Retain, byTrips, kCell)
	flows.WindowAggregate(od, flows.Tumbling(24*time.Hour), func() Cell { return Cell{} }, AddTrip, flows.AllowedLateness(p.Lateness)).
		KeyedView("od-day", o.Retain, byTrips, kCell)
	flows.Aggregate(od, func() TravelTimes { return TravelTimes{} }, AddTravel).View("traveltime",
		flows.ScoreBy(func(t TravelTimes) float64 { return float64(t.Trips) }),
		flows.PublishIf(func(t TravelTimes) bool { return t.Subscribers() >= o.K }))
	flows.AggregateView(trips, "trips", splice.Count[Detected](), flows.Identity[Detected])
	flows.AggregateView(hourly.TooLate(), "too-late", splice.Count[Detected](), flows.Identity[Detected])

	moves := flows.KeyBy(flows.Filter(out, func(d Detected) bool { return d.Move }), func(d Detected) string { return net.Zones[d.To] })
	crowds := flows.WindowAggregate(moves, flows.Tumbling(p.MoveEvery), func() Crowd { return Crowd{} }, AddMove)
	crowds.KeyedView("moving", o.Retain, flows.ScoreBy(func(c Crowd) float64 { return float64(c.People()) }),
		flows.PublishIf(func(c Crowd) bool { return c.People() >= o.K }))
	top := flows.WindowView(crowds, "crowds", splice.Top(5), func(zone string, c Crowd) splice.Scored {
		if c.People() < o.K {
			return splice.Scored{} // below k: ranked as no zone with nobody
		}
		return splice.Scored{Key: zone, Score: float64(c.People())}
	}, o.Retain)
	flows.Alert(top, "crowded", func(prev, cur []splice.Scored) bool { return Crowded(prev, cur, o.Crowd) })
	if o.Sink != nil {
		flows.To(trips, o.Sink, flows.OnCheckpoint())
	}
	return f
}

// carry does what a detector's step asks: s is the next state.
func carry(c *flows.Context[uint64, Stay, Detected], s *Stay, st *Step) {
	for _, t := range st.Timers {
		if t != 0 {
			c.SetEventTimer(time.Unix(0, t))
		}
	}
	for i := range st.N {
		c.Emit(st.D[i])
	}
	if st.Clear {
		c.ClearState()
		return
	}
	c.SetState(*s)
}

// Crowded says whether a zone has more than threshold people on the move
// in window cur and had not in window prev: one alert per crossing.
func Crowded(prev, cur []splice.Scored, threshold int64) bool {
	was := map[string]bool{}
	for _, s := range prev {
		was[s.Key] = s.Score > float64(threshold)
	}
	for _, s := range cur {
		if s.Key != "" && s.Score > float64(threshold) && !was[s.Key] {
			return true
		}
	}
	return false
}
