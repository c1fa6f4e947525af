package main

import "fmt"

// The status column: what a row's figures say about its goal.
const (
	statusOK     = "ok"     // the row meets its goal
	statusMissed = "missed" // the row misses its goal
	statusNoGoal = "-"      // the row has no goal
)

// Goal is a bound one of a row's figures must keep for the row to be ok.
type Goal struct {
	Figure string  `json:"figure"` // the figure's name in latest.json: see figure
	Op     string  `json:"op"`     // ">=" or "<="
	Bound  float64 `json:"bound"`
}

func atLeast(figure string, bound float64) *Goal { return &Goal{figure, ">=", bound} }
func atMost(figure string, bound float64) *Goal  { return &Goal{figure, "<=", bound} }

func (g *Goal) String() string {
	if g == nil {
		return "-"
	}
	return fmt.Sprintf("%s %s %g", g.Figure, g.Op, g.Bound)
}

// status is a row's verdict. A goal on a figure the row does not have, or
// with an unknown operator, is missed rather than passed.
func status(r Result) string {
	if r.Goal == nil {
		return statusNoGoal
	}
	if r.And != nil {
		and := r
		and.Goal, and.And = r.And, nil
		if s := status(and); s != statusOK {
			return s
		}
	}
	v, ok := r.figure(r.Goal.Figure)
	if !ok {
		return statusMissed
	}
	met := false
	switch r.Goal.Op {
	case ">=":
		met = v >= r.Goal.Bound
	case "<=":
		met = v <= r.Goal.Bound
	}
	if !met { // NaN included
		return statusMissed
	}
	return statusOK
}

// figure is one of r's figures by its name in latest.json.
func (r Result) figure(name string) (float64, bool) {
	switch name {
	case "events_per_sec":
		return r.EventsPerSec, true
	case "ratio":
		return r.Ratio, true
	case "cpu_ns_per_event":
		return r.CPUNsPerEvent, true
	case "cpu_ratio":
		return r.CPURatio, true
	case "p50_ms":
		return r.P50Ms, true
	case "p99_ms":
		return r.P99Ms, true
	case "top_p99_ms":
		return r.TopP99Ms, r.TopP99Ms > 0
	case "restore_ms":
		return r.RestoreMs, true
	case "catch_up_ms":
		return r.CatchUpMs, true
	case "rss_ratio":
		return r.RSSRatio, r.RSSRatio > 0
	case "vs_tumbling":
		return r.VsTumbling, r.VsTumbling > 0
	}
	return 0, false
}
