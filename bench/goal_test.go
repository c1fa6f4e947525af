package main

import (
	"math"
	"testing"
)

func TestStatus(t *testing.T) {
	for _, c := range []struct {
		name string
		r    Result
		want string
	}{
		{"checkpoint overhead under its goal", Result{Ratio: 0.70, Goal: atLeast("ratio", 0.9)}, statusMissed},
		{"checkpoint overhead on its goal", Result{Ratio: 0.90, Goal: atLeast("ratio", 0.9)}, statusOK},
		{"checkpoint overhead over its goal", Result{Ratio: 0.95, Goal: atLeast("ratio", 0.9)}, statusOK},
		{"query p99 over its bound", Result{P99Ms: 29.5, Goal: atMost("p99_ms", 5)}, statusMissed},
		{"query p99 within its bound", Result{P99Ms: 4.2, Goal: atMost("p99_ms", 5)}, statusOK},
		{"restore within a second", Result{RestoreMs: 70, Goal: atMost("restore_ms", 1000)}, statusOK},
		{"restore over a second", Result{RestoreMs: 1500, Goal: atMost("restore_ms", 1000)}, statusMissed},
		{"the goal reads its own figure", Result{Ratio: 0.95, P99Ms: 29.5, Goal: atMost("p99_ms", 5)}, statusMissed},
		{"no goal", Result{Ratio: 0.1, P99Ms: 100}, statusNoGoal},
		{"a figure the row does not have", Result{Ratio: 1, Goal: atLeast("ratoi", 0.9)}, statusMissed},
		{"an unknown operator", Result{Ratio: 1, Goal: &Goal{"ratio", ">", 0.9}}, statusMissed},
		{"NaN", Result{Ratio: math.NaN(), Goal: atLeast("ratio", 0.9)}, statusMissed},
		{"tumbling within both goals", Result{Ratio: 0.8, RSSRatio: 1.5, Goal: atLeast("ratio", 0.6), And: atMost("rss_ratio", 2)}, statusOK},
		{"tumbling over its RSS bound", Result{Ratio: 0.8, RSSRatio: 2.5, Goal: atLeast("ratio", 0.6), And: atMost("rss_ratio", 2)}, statusMissed},
		{"tumbling under its ratio", Result{Ratio: 0.5, RSSRatio: 1.5, Goal: atLeast("ratio", 0.6), And: atMost("rss_ratio", 2)}, statusMissed},
		{"a status set by the workload is ignored", Result{Status: statusOK, Ratio: 0.5, Goal: atLeast("ratio", 0.9)}, statusMissed},
	} {
		if got := status(c.r); got != c.want {
			t.Errorf("%s: status(%+v) = %q, want %q", c.name, c.r, got, c.want)
		}
	}
}
