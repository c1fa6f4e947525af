package pipeline

import (
	"fmt"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/examples/transport/sim"
)

// The detector on hand-made days of one phone: zones A (cells 0, 1), B
// (cells 2, 3) and C (cell 4).
func TestDetector(t *testing.T) {
	net := Network{Zones: []string{"A", "B", "C"}, CellZone: []int32{0, 0, 1, 1, 2}}
	t0 := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	at := func(hhmm string) time.Time {
		var h, m int
		fmt.Sscanf(hhmm, "%d:%d", &h, &m)
		return t0.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute)
	}
	type ping struct {
		at   string
		cell int32
	}
	for _, c := range []struct {
		name  string
		pings []ping
		want  []string // FROM->TO departing at
	}{
		{"a trip, dated Lead before the first ping away", []ping{{"07:00", 0}, {"07:20", 0}, {"07:40", 0}, {"08:10", 1}, {"08:15", 2},
			{"08:30", 3}, {"08:50", 3}, {"09:20", 3}}, []string{"A->B 08:06"}},
		{"a ping-pong to a neighbour zone and back is no trip", []ping{{"07:00", 0}, {"07:30", 0}, {"07:31", 2}, {"07:32", 0},
			{"08:10", 0}, {"08:40", 0}}, nil},
		{"silent after passing through B: no stay there", []ping{{"07:00", 0}, {"07:30", 0}, {"08:00", 1}, {"08:05", 2}, {"08:09", 3},
			{"09:30", 4}, {"10:00", 4}, {"10:30", 4}}, []string{"A->C 07:56"}},
		{"silent after passing through B, its last two pings by one cell: no stay there", []ping{{"07:00", 0}, {"07:30", 0}, {"08:00", 1},
			{"08:05", 2}, {"08:07", 3}, {"08:09", 3}, {"09:30", 4}, {"10:00", 4}, {"10:30", 4}}, []string{"A->C 07:56"}},
		{"silent after settling in B, one cell for 15 minutes: a stay", []ping{{"07:00", 0}, {"07:30", 0}, {"08:00", 1},
			{"08:05", 3}, {"08:10", 2}, {"08:25", 2}, {"09:30", 4}, {"10:00", 4}, {"10:30", 4}}, []string{"A->B 07:56", "B->C 09:26"}},
		{"back to a zone passed through, after a silence, is no ping-pong", []ping{{"07:00", 0}, {"07:30", 0}, {"08:00", 1},
			{"08:05", 2}, {"08:08", 3}, {"08:12", 3}, {"08:50", 4}, {"08:51", 3}, {"08:52", 4}, {"09:30", 4}}, []string{"A->C 07:56"}},
		{"silent after arriving still: a stay once the silence is long enough", []ping{{"07:00", 0}, {"07:30", 0}, {"08:00", 1},
			{"08:10", 2}, {"08:12", 2}, {"11:00", 4}, {"11:40", 4}}, []string{"A->B 07:56", "B->C 10:56"}},
		{"silent for the TTL: the stay before is forgotten", []ping{{"07:00", 0}, {"07:30", 0}, {"14:00", 2}, {"14:30", 2},
			{"15:00", 2}}, nil},
		{"silent for less than the TTL: a trip", []ping{{"07:00", 0}, {"07:30", 0}, {"12:00", 0}, {"14:00", 2}, {"14:30", 2},
			{"15:00", 2}}, []string{"A->B 13:56"}},
	} {
		var pings []sim.Ping
		for _, p := range c.pings {
			pings = append(pings, sim.Ping{Sub: 7, Cell: p.cell, At: at(p.at)})
		}
		o := DefaultOptions()
		r := Sequential([][]sim.Ping{pings}, net, o)
		var got []string
		for _, d := range r.Trips {
			got = append(got, fmt.Sprintf("%s->%s %s", net.Zones[d.From], net.Zones[d.To], d.Depart.Format("15:04")))
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
