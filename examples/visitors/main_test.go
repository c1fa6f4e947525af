package main

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/internal/exampletest"
)

func TestMain(m *testing.M) { exampletest.Main(m) }

// testArgs is a small, quick configuration: a population swinging between
// 80 and 800 users every 2 hours of event time (a ping every 500ms per partition), a 30-minute window
// sliding every minute, and a threshold the count crosses every cycle.
var testArgs = []string{"-events", "400000", "-seed", "5", "-partitions", "4", "-users", "800", "-cycle", "2h", "-step", "500ms",
	"-threshold", "600", "-fragments", "16", "-progress", "0", "-log-level", "error"}

// inProcessArgs is testArgs with 240,000 pings: 8 hours of event time,
// four crossings of the threshold. The in-process run has the race
// detector watch the engine apply every ping to its thirty windows,
// which costs far more CPU per ping than the example binary does; the
// process tests (kills, failover) need the longer input to kill between
// alerts.
var inProcessArgs = append(slices.Clone(testArgs), "-events", "240000")

type window struct {
	Start, End time.Time
	Value      int64
	Complete   bool
}

type alert struct {
	Alert      string
	Start, End time.Time
	Value      int64
	Previous   int64
}

// sequentialRuns holds what sequential computed, by its arguments: the
// tests share one input, which costs seconds under the race detector.
// Callers must not change what it returns.
var sequentialRuns struct {
	sync.Mutex
	done map[string]sequentialRun
}

type sequentialRun struct {
	wins   map[time.Time]int64
	alerts []time.Time
}

// sequential computes the distinct users of every window and the windows
// at which the count rises above threshold, from the generator's events.
func sequential(t *testing.T, args []string) (wins map[time.Time]int64, alerts []time.Time) {
	t.Helper()
	key := strings.Join(args, " ")
	sequentialRuns.Lock()
	defer sequentialRuns.Unlock() // a second test waits for the first's result
	if r, ok := sequentialRuns.done[key]; ok {
		return r.wins, r.alerts
	}
	wins, alerts = computeSequential(t, args)
	if sequentialRuns.done == nil {
		sequentialRuns.done = map[string]sequentialRun{}
	}
	sequentialRuns.done[key] = sequentialRun{wins, alerts}
	return wins, alerts
}

func computeSequential(t *testing.T, args []string) (wins map[time.Time]int64, alerts []time.Time) {
	t.Helper()
	o := &Options{}
	exampletest.ParseFlags(t, flagSet(o), args)
	if err := o.check(); err != nil {
		t.Fatal(err)
	}
	src, err := gen.New(gen.Config{Partitions: o.Partitions, Seed: o.Seed, Events: o.Events}, Generate(o.Gen))
	if err != nil {
		t.Fatal(err)
	}
	size, slide := int64(o.Flow.Window), int64(o.Flow.Slide)
	users := map[int64]map[string]struct{}{}
	lo, hi := int64(1<<62), int64(-1<<62)
	for p := range o.Partitions {
		for off := range src.Limit(p) {
			e := src.Event(p, off)
			ts := e.At.UnixNano()
			for s := ts - ts%slide; s > ts-size; s -= slide {
				if users[s] == nil {
					users[s] = map[string]struct{}{}
				}
				users[s][e.User] = struct{}{}
				lo, hi = min(lo, s), max(hi, s)
			}
		}
	}
	wins = map[time.Time]int64{}
	prev := int64(0)
	for s := lo; s <= hi; s += slide {
		n := int64(len(users[s]))
		if n > 0 {
			wins[time.Unix(0, s).UTC()] = n
		}
		if prev <= o.Flow.Threshold && n > o.Flow.Threshold {
			alerts = append(alerts, time.Unix(0, s).UTC())
		}
		prev = n
	}
	return wins, alerts
}

// checkExact compares every window and every alert a finished run serves
// with the sequential computation.
func checkExact(t *testing.T, base string, wantWins map[time.Time]int64, wantAlerts []time.Time) {
	t.Helper()
	var ans struct{ Windows []window }
	exampletest.GetJSON(t, base+"/v1/views/visitors?limit=10000000", &ans)
	if len(ans.Windows) != len(wantWins) {
		t.Fatalf("%d windows, want %d", len(ans.Windows), len(wantWins))
	}
	for _, w := range ans.Windows {
		if !w.Complete || w.Value != wantWins[w.Start] || w.End.Sub(w.Start) != 30*time.Minute {
			t.Fatalf("window %v: %d (complete %v), want %d", w.Start, w.Value, w.Complete, wantWins[w.Start])
		}
	}
	var al struct {
		Total   uint64
		Lost    int64 `json:"lost_windows"`
		Records []alert
	}
	exampletest.GetJSON(t, base+"/v1/alerts?limit=10000", &al)
	if al.Lost != 0 || int(al.Total) != len(wantAlerts) || len(al.Records) != len(wantAlerts) {
		t.Fatalf("%d alerts (%d records, %d windows lost), want %d: %+v", al.Total, len(al.Records), al.Lost, len(wantAlerts), al.Records)
	}
	for i, r := range al.Records {
		if !r.Start.Equal(wantAlerts[i]) || r.Value != wantWins[r.Start] || r.Alert != "crowded" {
			t.Fatalf("alert %d: %+v, want the window at %v (%d visitors)", i, r, wantAlerts[i], wantWins[wantAlerts[i]])
		}
	}
}

// waitAlerts waits until the run has read everything and evaluated every
// window: alerts are evaluated a moment after the windows complete.
func waitAlerts(t *testing.T, base string, last time.Time) {
	t.Helper()
	exampletest.WaitDone(t, base, func(exampletest.ClusterState) bool {
		var al struct{ Records []alert }
		exampletest.GetJSON(t, base+"/v1/alerts?limit=10000", &al)
		return len(al.Records) > 0 && !al.Records[len(al.Records)-1].Start.Before(last)
	})
}

func TestWindowsAndAlertsExact(t *testing.T) {
	wins, alerts := sequential(t, inProcessArgs)
	if len(alerts) < 3 {
		t.Fatalf("the test configuration crosses the threshold %d times; want several", len(alerts))
	}
	t.Logf("%d windows, %d alerts", len(wins), len(alerts))
	base := exampletest.Run(t, run, "/v1/alerts", append(slices.Clone(inProcessArgs), "-http", "127.0.0.1:0")...)
	waitAlerts(t, base, alerts[len(alerts)-1])
	checkExact(t, base, wins, alerts)

	var latest struct{ Window window }
	exampletest.GetJSON(t, base+"/v1/views/visitors?window=latest", &latest)
	if latest.Window.Value != wins[latest.Window.Start] || !latest.Window.Complete {
		t.Fatalf("latest window %+v, want %d", latest.Window, wins[latest.Window.Start])
	}
	from := alerts[0].Format(time.RFC3339)
	to := alerts[0].Add(3 * time.Minute).Format(time.RFC3339)
	var rng struct{ Windows []window }
	exampletest.GetJSON(t, base+"/v1/views/visitors?from="+from+"&to="+to, &rng)
	if len(rng.Windows) != 3 || !rng.Windows[0].Start.Equal(alerts[0]) {
		t.Fatalf("from %s to %s: %+v", from, to, rng.Windows)
	}
}

// Bad queries get a JSON error and the right status.
func TestBadQueries(t *testing.T) {
	base := exampletest.Run(t, run, "/v1/alerts", "-events", "1000", "-http", "127.0.0.1:0", "-progress", "0", "-log-level", "error")
	for path, code := range map[string]int{
		"/v1/views/visitors?window=first":                                      400,
		"/v1/views/visitors?from=yesterday":                                    400,
		"/v1/views/visitors?from=2026-11-02T07:00:00Z&to=2026-11-02T06:00:00Z": 400,
		"/v1/views/visitors?top=3":                                             400,
		"/v1/views/visitors/keys/u000001":                                      400,
		"/v1/alerts?limit=0":                                                   400,
		"/v1/alerts?x=1":                                                       400,
		"/v1/alerts/watch?since=99":                                            400,
		"/v1/views/nope?window=latest":                                         404,
		"/v1/views/visitors?window=latest&from=2030-01-01T00:00:00Z":           404,
	} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Error string }
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != code || err != nil || body.Error == "" {
			t.Errorf("GET %s: %d %+v (%v), want %d with a JSON error", path, resp.StatusCode, body, err, code)
		}
	}
}

func TestBadFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"-users", "0"},
		{"-step", "0s"},
		{"-window", "1m", "-slide", "2m"},
		{"-max-delay", "-1s"},
		{"-partitions", "0"},
		{"extra"},
	} {
		err := run(context.Background(), append(args, "-http", "127.0.0.1:0"), &strings.Builder{}, &strings.Builder{})
		if err == nil {
			t.Errorf("%q: no error", args)
			continue
		}
		t.Logf("%q: %v", args, err)
	}
}
