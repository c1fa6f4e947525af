package main

import (
	"context"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/internal/exampletest"
	"github.com/tessera-streams/tessera/splice"
)

func TestMain(m *testing.M) { exampletest.Main(m) }

var testArgs = []string{"-events", "300000", "-seed", "3", "-partitions", "3", "-users", "500",
	"-fragments", "16", "-progress", "0", "-log-level", "error"}

// sequentialRuns holds what sequential computed, by its arguments: the
// tests share one input, which costs seconds under the race detector.
// Callers must not change what it returns.
var sequentialRuns struct {
	sync.Mutex
	done map[string]sequentialRun
}

type sequentialRun struct {
	users map[string]User
	hist  splice.Histogram
}

// sequential cuts every user's events, sorted by time, into sessions at
// silences of at least the gap, once per args.
func sequential(t *testing.T, args []string) (map[string]User, splice.Histogram) {
	t.Helper()
	key := strings.Join(args, " ")
	sequentialRuns.Lock()
	defer sequentialRuns.Unlock() // a second test waits for the first's result
	if r, ok := sequentialRuns.done[key]; ok {
		return r.users, r.hist
	}
	users, hist := computeSequential(t, args)
	if sequentialRuns.done == nil {
		sequentialRuns.done = map[string]sequentialRun{}
	}
	sequentialRuns.done[key] = sequentialRun{users, hist}
	return users, hist
}

func computeSequential(t *testing.T, args []string) (map[string]User, splice.Histogram) {
	t.Helper()
	o := &Options{}
	exampletest.ParseFlags(t, flagSet(o), args)
	src, err := gen.New(gen.Config{Partitions: o.Partitions, Seed: o.Seed, Events: o.Events}, Generate(o.Gen))
	if err != nil {
		t.Fatal(err)
	}
	times := map[string][]int64{}
	for p := range o.Partitions {
		for off := range src.Limit(p) {
			e := src.Event(p, off)
			times[e.User] = append(times[e.User], e.At.UnixNano())
		}
	}
	alg := splice.NewHistogram(Buckets...)
	hist := alg.Zero()
	users := map[string]User{}
	for u, ts := range times {
		slices.Sort(ts)
		var us User
		first := ts[0]
		for i, x := range ts {
			if i == len(ts)-1 || ts[i+1]-x >= int64(o.Gap) {
				m := float64(x-first) / float64(time.Minute)
				us.Sessions++
				us.ActiveMinutes += m
				us.LastEnd = time.Unix(0, x+int64(o.Gap)).Unix()
				hist = alg.Add(hist, m)
				if i < len(ts)-1 {
					first = ts[i+1]
				}
			}
		}
		us.Events = int64(len(ts))
		users[u] = us
	}
	return users, hist
}

func checkExact(t *testing.T, base string, users map[string]User, hist splice.Histogram) {
	t.Helper()
	var ans struct {
		Entries []struct {
			Key   string
			Value User
		}
	}
	exampletest.GetJSON(t, base+"/v1/views/users?limit=10000000", &ans)
	if len(ans.Entries) != len(users) {
		t.Fatalf("%d users, want %d", len(ans.Entries), len(users))
	}
	for _, e := range ans.Entries {
		w := users[e.Key]
		if e.Value.Sessions != w.Sessions || e.Value.Events != w.Events || e.Value.LastEnd != w.LastEnd ||
			math.Abs(e.Value.ActiveMinutes-w.ActiveMinutes) > 1e-6 {
			t.Fatalf("user %s: %+v, want %+v", e.Key, e.Value, w)
		}
	}
	var h struct{ Value splice.Histogram }
	exampletest.GetJSON(t, base+"/v1/views/session_minutes", &h)
	if !slices.Equal(h.Value.Counts, hist.Counts) || h.Value.Count != hist.Count {
		t.Fatalf("histogram %v (%d), want %v (%d)", h.Value.Counts, h.Value.Count, hist.Counts, hist.Count)
	}
}

// waitSessions waits until the input is read and every session closed.
func waitSessions(t *testing.T, base string, n int64) {
	t.Helper()
	exampletest.WaitDone(t, base, func(exampletest.ClusterState) bool {
		var c struct{ Value int64 }
		exampletest.GetJSON(t, base+"/v1/views/sessions", &c)
		return c.Value == n
	})
}

func TestSessionsExact(t *testing.T) {
	users, hist := sequential(t, testArgs)
	if hist.Count < int64(2*len(users)) {
		t.Fatalf("%d sessions of %d users: the generator should give users several", hist.Count, len(users))
	}
	base := exampletest.Run(t, run, "/v1/cluster", append(testArgs, "-http", "127.0.0.1:0")...)
	waitSessions(t, base, hist.Count)
	checkExact(t, base, users, hist)
}

// Killed with SIGKILL mid-stream and restarted, the sessions, their
// merges and the watermarks come back from the checkpoints: exact.
func TestSIGKILLSessionsExact(t *testing.T) {
	t.Parallel() // a real-process test: it mostly waits on its processes
	users, hist := sequential(t, testArgs)
	bin := exampletest.Build(t, "sessions")
	args := append(append([]string(nil), testArgs...), "-data", t.TempDir(), "-checkpoint-interval", "100ms", "-rate", "150000")
	p := exampletest.KillRestarts(t, bin, args, 3, 200*time.Millisecond, 1500*time.Millisecond)
	waitSessions(t, p.Base, hist.Count)
	checkExact(t, p.Base, users, hist)
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-users", "0"}, {"-block", "0s"}, {"-gap", "0s"}, {"-max-delay", "-1s"}, {"x"}} {
		if err := run(context.Background(), append(args, "-http", "127.0.0.1:0"), &strings.Builder{}, &strings.Builder{}); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}
