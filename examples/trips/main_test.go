package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/internal/exampletest"
)

func TestMain(m *testing.M) { exampletest.Main(m) }

// reference runs the pipeline sequentially: each subscriber's pings in
// event-time order (ties by partition and offset), its timers and expiry
// between them at their times (timers, then expiry, then pings at one
// time), everything at the end of the input; then counts the trips by
// origin, destination and hour.
func reference(p Params, subs, zones, partitions int, events int64) ([]Trip, map[string]int64) {
	g, err := gen.New(gen.Config{Partitions: partitions, Events: events}, Generator(subs, zones, partitions))
	if err != nil {
		panic(err)
	}
	type ev struct {
		ping Ping
		part int
		off  int64
	}
	bySub := map[string][]ev{}
	for part := range partitions {
		for off := range g.Limit(part) {
			if e := g.Event(part, off); !e.Silent {
				bySub[e.Sub] = append(bySub[e.Sub], ev{e, part, off})
			}
		}
	}
	var trips []Trip
	for sub, evs := range bySub {
		slices.SortFunc(evs, func(a, b ev) int {
			if c := a.ping.At.Compare(b.ping.At); c != 0 {
				return c
			}
			if c := cmp.Compare(a.part, b.part); c != 0 {
				return c
			}
			return cmp.Compare(a.off, b.off)
		})
		var s Stay
		timers := map[time.Time]bool{}
		var last, expiry time.Time
		runUntil := func(t time.Time) {
			for {
				var next time.Time
				for at := range timers {
					if next.IsZero() || at.Before(next) {
						next = at
					}
				}
				if !next.IsZero() && !next.After(t) && (expiry.IsZero() || !expiry.Before(next)) {
					delete(timers, next)
					var tr *Trip
					if s, tr = p.OnTimer(sub, s, next); tr != nil {
						trips = append(trips, *tr)
					}
					continue
				}
				if !expiry.IsZero() && !expiry.After(t) {
					if len(timers) > 0 { // its own timers pending: expiry waits for them
						for at := range timers {
							expiry = maxTime(expiry, at)
						}
						continue
					}
					s, last, expiry = Stay{}, time.Time{}, time.Time{}
					continue
				}
				return
			}
		}
		for _, e := range evs {
			runUntil(e.ping.At)
			var timer time.Time
			s, timer = p.OnPing(s, e.ping)
			if !timer.IsZero() {
				timers[timer] = true
			}
			if e.ping.At.After(last) {
				last = e.ping.At
				expiry = last.Add(p.TTL)
			}
		}
		runUntil(time.Unix(0, math.MaxInt64))
	}
	od := map[string]int64{}
	for _, t := range trips {
		od[p.ODKey(t)]++
	}
	return trips, od
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// readTrips reads the trips files of the data directories, one trip per
// output id; an id written twice must carry the same trip.
func readTrips(t *testing.T, dirs ...string) []Trip {
	t.Helper()
	byID := map[string]Trip{}
	for _, dir := range dirs {
		files, _ := filepath.Glob(filepath.Join(dir, "trips*.jsonl"))
		for _, name := range files {
			f, err := os.Open(name)
			if err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				var l Line
				if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
					f.Close()
					t.Fatalf("%s: %v", name, err)
				}
				if prev, ok := byID[l.ID]; ok && !sameTrip(prev, l.Trip) {
					f.Close()
					t.Fatalf("output %s written as %+v, then as %+v", l.ID, prev, l.Trip)
				}
				byID[l.ID] = l.Trip
			}
			f.Close()
		}
	}
	return slices.Collect(maps.Values(byID))
}

func sameTrip(a, b Trip) bool {
	return a.Sub == b.Sub && a.From == b.From && a.To == b.To && a.Depart.Equal(b.Depart) && a.Arrive.Equal(b.Arrive)
}

func tripKey(t Trip) string {
	return fmt.Sprintf("%s %s %s %d %d", t.Sub, t.From, t.To, t.Depart.UnixNano(), t.Arrive.UnixNano())
}

// checkExact compares a node's views and the trips files with the
// reference.
func checkExact(t *testing.T, base string, want []Trip, wantOD map[string]int64, dirs ...string) {
	t.Helper()
	got := getOD(t, base)
	if !maps.Equal(got, wantOD) {
		t.Fatalf("od: %d cells, want %d", len(got), len(wantOD))
	}
	wk := map[string]bool{}
	for _, tr := range want {
		wk[tripKey(tr)] = true
	}
	// In a cluster a sink is delivered one checkpoint after its outputs
	// (a standby's copy must be able to redeliver them): wait for it.
	var gk map[string]bool
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		gk = map[string]bool{}
		for _, tr := range readTrips(t, dirs...) {
			gk[tripKey(tr)] = true
		}
		if len(gk) >= len(wk) || time.Now().After(deadline) {
			break
		}
	}
	if !maps.Equal(gk, wk) {
		t.Fatalf("trips file: %d trips, want %d", len(gk), len(wk))
	}
}

// odAnswer is an answer of the windowed keyed view od.
type odAnswer struct {
	Windows []struct {
		Start    time.Time
		Complete bool
		Entries  []struct {
			Key   string
			Value int64
		}
		More bool
	}
	More     bool
	Complete bool
}

// cells flattens the answer into "ORIGIN->DEST@HOUR" cells, as Params.ODKey
// names them.
func (a odAnswer) cells() map[string]int64 {
	got := map[string]int64{}
	for _, w := range a.Windows {
		for _, e := range w.Entries {
			got[e.Key+"@"+w.Start.UTC().Format("2006-01-02T15")] = e.Value
		}
	}
	return got
}

// getOD reads every cell of the od view in one page.
func getOD(t *testing.T, base string) map[string]int64 {
	t.Helper()
	var od odAnswer
	exampletest.GetJSON(t, base+"/v1/views/od?limit=100000", &od)
	if od.More {
		t.Fatal("od: more than one page")
	}
	return od.cells()
}

// waitComplete polls the views until they say they are complete (the
// input fully processed, through both stages), for up to 90 s, and
// checks that they then hold n trips. It polls the total and the cluster
// state, which are small, and reads the od view (every cell) only once
// they are complete.
func waitComplete(t *testing.T, base string, n int64) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var total struct {
		Value    int64
		Complete bool
	}
	var od odAnswer
	var cl struct{ Complete bool }
	for {
		total.Value, total.Complete, od, cl.Complete = 0, false, odAnswer{}, false
		if exampletest.TryJSON(base+"/v1/views/trips", &total) && exampletest.TryJSON(base+"/v1/cluster", &cl) && total.Complete && cl.Complete &&
			exampletest.TryJSON(base+"/v1/views/od?limit=100000", &od) && od.Complete {
			var sum int64
			for _, v := range od.cells() {
				sum += v
			}
			if total.Value != n || sum != n {
				t.Fatalf("complete with %d trips, od cells summing to %d; want %d", total.Value, sum, n)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not complete after 90 s (trips %d, od %v, cluster %v)", total.Value, od.Complete, cl.Complete)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const (
	testSubs  = 400
	testZones = 8
	testParts = 4
)

// The pipeline on one node, killed with SIGKILL at random moments and
// restarted on its data directory: its views and its trips file equal the
// sequential reference.
func TestSIGKILLRestartsExact(t *testing.T) {
	t.Parallel()
	const n = 300_000
	want, wantOD := reference(DefaultParams, testSubs, testZones, testParts, n)
	if len(want) < 1000 {
		t.Fatalf("the reference found %d trips: too few to test", len(want))
	}
	bin := exampletest.Build(t, "trips")
	data := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("%d trips; kill points seeded with %d", len(want), seed)
	args := []string{"-events", fmt.Sprint(n), "-subscribers", fmt.Sprint(testSubs), "-zones", fmt.Sprint(testZones),
		"-partitions", fmt.Sprint(testParts), "-data", data, "-progress", "0", "-log-level", "warn",
		"-checkpoint-interval", "100ms", "-fragments", "16"}
	for range 5 {
		p := exampletest.Spawn(t, bin, append(args, "-http", exampletest.FreePort(t))...)
		time.Sleep(time.Duration(100+rng.IntN(700)) * time.Millisecond)
		if err := p.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		p.Wait()
	}
	p := exampletest.Start(t, bin, append(args, "-http", exampletest.FreePort(t))...)
	p.WaitURL(t)
	waitComplete(t, p.Base, int64(len(want)))
	checkExact(t, p.Base, want, wantOD, data)
}

// Three nodes run the pipeline; one is killed with SIGKILL mid-stream:
// every surviving node's views and the nodes' trips files together equal
// the reference.
func TestThreeNodesOneKilledExact(t *testing.T) {
	t.Parallel()
	const n = 400_000
	want, wantOD := reference(DefaultParams, testSubs, testZones, testParts, n)
	bin := exampletest.Build(t, "trips")
	var gossip, dirs []string
	for range 3 {
		gossip = append(gossip, exampletest.FreePort(t))
		dirs = append(dirs, t.TempDir())
	}
	var procs []*exampletest.Proc
	for i := range 3 {
		args := []string{"-events", fmt.Sprint(n), "-subscribers", fmt.Sprint(testSubs), "-zones", fmt.Sprint(testZones),
			"-partitions", fmt.Sprint(testParts), "-rate", "100000", "-fragments", "16", "-progress", "0", "-log-level", "warn",
			"-checkpoint-interval", "200ms", "-node", fmt.Sprintf("n%d", i), "-http", exampletest.FreePort(t),
			"-gossip", gossip[i], "-remote", exampletest.FreePort(t), "-expect", "3", "-data", dirs[i]}
		if i > 0 {
			args = append(args, "-join", gossip[0])
		}
		procs = append(procs, exampletest.Start(t, bin, args...))
	}
	for _, p := range procs {
		p.WaitURL(t)
	}
	time.Sleep(1500 * time.Millisecond) // mid-stream: the input takes about 4 s at this rate
	if err := procs[2].Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	procs[2].Wait()
	start := time.Now()
	waitComplete(t, procs[0].Base, int64(len(want)))
	t.Logf("%d trips exact %v after the kill", len(want), time.Since(start))
	checkExact(t, procs[0].Base, want, wantOD, dirs...)
	checkExact(t, procs[1].Base, want, wantOD, dirs...)
}
