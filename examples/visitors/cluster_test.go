package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/internal/exampletest"
)

// Three nodes run the flow. One of them, the owner the placement gives the
// alerts, evaluates the "crowded" alert, and every node lists the
// cluster's alerts: each crossing once on every node, not once per node.
// The owner is then SIGKILLed mid-stream: its standby takes the alerts
// over from its copy of the log, the crossings after the failover are
// raised once, none before it again, and every window and alert ends
// exact on both survivors.
func TestClusterAlertsOnceAcrossOwnerFailover(t *testing.T) {
	t.Parallel()
	wins, alerts := sequential(t, testArgs)
	if len(alerts) < 4 {
		t.Fatalf("the test configuration crosses the threshold %d times; want several on each side of the kill", len(alerts))
	}
	bin := exampletest.Build(t, "visitors")
	names := []string{"n0", "n1", "n2"}
	var gossip []string
	for range names {
		gossip = append(gossip, exampletest.FreePort(t))
	}
	// At 30,000 pings/s the input lasts about 13 s: an alert every 2 s.
	procs := map[string]*exampletest.Proc{}
	for i, name := range names {
		args := append(append([]string(nil), testArgs...), "-rate", "30000", "-checkpoint-interval", "200ms", "-log-level", "warn",
			"-node", name, "-http", exampletest.FreePort(t), "-gossip", gossip[i], "-remote", exampletest.FreePort(t),
			"-expect", "3", "-data", t.TempDir())
		if i > 0 {
			args = append(args, "-join", gossip[0])
		}
		procs[name] = exampletest.Start(t, bin, args...)
	}
	for _, p := range procs {
		p.WaitURL(t)
	}

	// Every node agrees on the owner of the alerts.
	var st struct{ Placement struct{ Alerts []string } }
	exampletest.GetJSON(t, procs["n0"].Base+"/v1/cluster", &st)
	if len(st.Placement.Alerts) != 2 {
		t.Fatalf("placement of the alerts: %q, want an owner and a standby", st.Placement.Alerts)
	}
	owner, standby := st.Placement.Alerts[0], st.Placement.Alerts[1]
	third := ""
	for _, name := range names {
		if got := clusterAlerts(t, procs[name].Base); got.Owner != owner {
			t.Fatalf("%s says %q owns the alerts, the placement %q", name, got.Owner, owner)
		}
		if name != owner && name != standby {
			third = name
		}
	}
	// A watch on the third node, which neither evaluates nor takes over,
	// from the first alert on: it must see every alert once, in order,
	// across the failover.
	watch := watchAlerts(t, procs[third].Base+"/v1/alerts/watch?since=0")

	// Before the kill: each node's list is, at every look, a prefix of
	// the sequential alerts (an alert raised by every node would show on
	// each node's list three times).
	seen := func(name string) int {
		al := clusterAlerts(t, procs[name].Base)
		checkPrefix(t, name, al, wins, alerts)
		return len(al.Records)
	}
	before := map[string]int{}
	deadline := time.Now().Add(45 * time.Second)
	for least := 0; least < 2; {
		least = len(alerts)
		for _, name := range names {
			before[name] = seen(name)
			least = min(least, before[name])
		}
		if time.Now().After(deadline) {
			t.Fatalf("alerts listed %v after 45 s, want 2 on every node", before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, name := range names {
		if before[name] == len(alerts) {
			t.Fatalf("%s listed every alert before the kill: the input is too short to kill the owner mid-stream", name)
		}
	}
	if err := procs[owner].Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	procs[owner].Wait()
	var survivors []string
	for _, name := range names {
		if name != owner {
			survivors = append(survivors, name)
		}
	}

	// The survivors place the alerts on the standby, which catches up and
	// raises the crossings that follow, once.
	var failover, firstAfter time.Duration
	maxBefore := 0
	for _, n := range before {
		maxBefore = max(maxBefore, n)
	}
	moved := map[string]bool{}
	// A liveness bound, not a speed check: on a loaded 2-core machine
	// (make test runs the example packages side by side) the standby's
	// catch-up after the majority's lease has taken over 45 s.
	deadline = time.Now().Add(90 * time.Second)
	for done := false; !done; {
		done = true
		for _, name := range survivors {
			al := clusterAlerts(t, procs[name].Base)
			checkPrefix(t, name, al, wins, alerts)
			if al.Owner != owner && !moved[name] {
				moved[name] = true
				if al.Owner != standby {
					t.Fatalf("%s places the alerts on %s, not on the standby %s", name, al.Owner, standby)
				}
				if len(moved) == len(survivors) {
					failover = time.Since(killed)
				}
			}
			if firstAfter == 0 && len(al.Records) > maxBefore {
				firstAfter = time.Since(killed)
			}
			done = done && len(moved) == len(survivors) && len(al.Records) == len(alerts)
		}
		if time.Now().After(deadline) {
			t.Fatalf("90 s after the kill: owners moved on %v, alerts %v", moved, lens(t, procs, survivors))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, name := range survivors {
		waitAlerts(t, procs[name].Base, alerts[len(alerts)-1])
		checkExact(t, procs[name].Base, wins, alerts)
	}
	events := watch()
	if len(events) != len(alerts) {
		t.Fatalf("the watch on %s saw %d alerts, want %d", third, len(events), len(alerts))
	}
	for i, ev := range events {
		if ev.id != i+1 || !ev.alert.Start.Equal(alerts[i]) || ev.alert.Value != wins[alerts[i]] {
			t.Fatalf("watch event %d: id %d, %+v; want id %d, the window at %v", i, ev.id, ev.alert, i+1, alerts[i])
		}
	}

	// Every crossing was announced (logged at Warn) by the node that
	// raised it: before the kill by the old owner, after it by the new
	// one. A crossing the old owner raised just before it died may be
	// announced again by the new owner (the log holds it once); no other.
	logged := map[time.Time]int{}
	perNode := map[string]int{}
	for _, name := range names {
		for _, m := range alertLine.FindAllStringSubmatch(procs[name].Stderr(), -1) {
			at, err := time.Parse(time.RFC3339Nano, m[1])
			if err != nil {
				t.Fatalf("%s logged an alert at %q: %v", name, m[1], err)
			}
			logged[at.UTC()]++
			perNode[name]++
		}
	}
	again := 0
	for _, a := range alerts {
		switch n := logged[a]; {
		case n == 0:
			t.Errorf("the alert of the window at %v was never announced", a)
		case n > 2:
			t.Errorf("the alert of the window at %v was announced %d times", a, n)
		case n == 2:
			again++
		}
	}
	if again > 1 {
		t.Errorf("%d alerts announced twice; only one step of the old owner may be", again)
	}
	t.Logf("%d alerts; owner %s, standby %s; listed before the kill %v, after it %v, watched on %s %d; announced by node %v (%d twice); "+
		"alerts moved %v after the kill, first alert after it raised %v after it",
		len(alerts), owner, standby, before, lens(t, procs, survivors), third, len(events), perNode, again,
		failover.Round(time.Millisecond), firstAfter.Round(time.Millisecond))
}

var alertLine = regexp.MustCompile(`msg=alert .*window_start=(\S+)`)

type watched struct {
	id    int
	alert alert
}

// watchAlerts reads the server-sent events of url until the returned
// function is called, which returns them.
func watchAlerts(t *testing.T, url string) func() []watched {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	var (
		mu     sync.Mutex
		events []watched
		bad    error
		done   = make(chan struct{})
	)
	go func() {
		defer close(done)
		sc := bufio.NewScanner(resp.Body)
		var ev watched
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "id: "):
				ev.id, _ = strconv.Atoi(strings.TrimPrefix(line, "id: "))
			case strings.HasPrefix(line, "data: "):
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev.alert); err != nil {
					mu.Lock()
					bad = err
					mu.Unlock()
				}
			case line == "":
				if ev.id != 0 {
					mu.Lock()
					events = append(events, ev)
					mu.Unlock()
				}
				ev = watched{}
			}
		}
	}()
	stop := func() {
		resp.Body.Close()
		<-done
	}
	t.Cleanup(stop)
	return func() []watched {
		stop()
		mu.Lock()
		defer mu.Unlock()
		if bad != nil {
			t.Fatalf("watch %s: %v", url, bad)
		}
		return events
	}
}

type alertList struct {
	Owner   string
	Total   int
	Lost    int64 `json:"lost_windows"`
	Records []alert
}

func clusterAlerts(t *testing.T, base string) alertList {
	t.Helper()
	var al alertList
	exampletest.GetJSON(t, base+"/v1/alerts?limit=10000", &al)
	return al
}

// checkPrefix fails unless a node's alerts are the first of the
// sequential ones, each once.
func checkPrefix(t *testing.T, node string, al alertList, wins map[time.Time]int64, alerts []time.Time) {
	t.Helper()
	if al.Total != len(al.Records) || len(al.Records) > len(alerts) || al.Lost != 0 {
		t.Fatalf("%s: %d alerts (%d records, %d windows lost), want at most %d", node, al.Total, len(al.Records), al.Lost, len(alerts))
	}
	for i, r := range al.Records {
		if !r.Start.Equal(alerts[i]) || r.Value != wins[r.Start] || r.Alert != "crowded" {
			var got []string
			for _, r := range al.Records {
				got = append(got, r.Start.Format("15:04"))
			}
			t.Fatalf("%s: alert %d is the window at %v (%d visitors), want %v: %s", node, i, r.Start, r.Value, alerts[i], strings.Join(got, " "))
		}
	}
}

func lens(t *testing.T, procs map[string]*exampletest.Proc, names []string) string {
	var out []string
	for _, name := range names {
		out = append(out, fmt.Sprintf("%s:%d", name, len(clusterAlerts(t, procs[name].Base).Records)))
	}
	return strings.Join(out, " ")
}
