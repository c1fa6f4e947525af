package main

import (
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/internal/exampletest"
)

// The example is killed with SIGKILL at random points, some of them
// between two alerts, and restarted on the same data directory each time:
// every window ends exact, and every alert was raised exactly once.
func TestSIGKILLAlertsOncePerCrossing(t *testing.T) {
	t.Parallel()
	wins, alerts := sequential(t, testArgs)
	bin := exampletest.Build(t, "visitors")
	data := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("kill points seeded with %d; %d alerts expected", seed, len(alerts))
	// At 30,000 pings/s the input lasts about 13 s over the runs together:
	// a restarted run's rate counts from the offset it restored, so kills a
	// few seconds apart fall between alerts.
	args := append(append([]string(nil), testArgs...), "-data", data, "-checkpoint-interval", "100ms", "-rate", "30000")
	between := 0 // kills after some alerts and before the last
	for kills := 0; kills < 12 && between < 2; kills++ {
		p := exampletest.Spawn(t, bin, append(args, "-http", exampletest.FreePort(t))...)
		time.Sleep(time.Duration(200+rng.IntN(3300)) * time.Millisecond)
		var al struct{ Total int }
		exampletest.GetJSON(t, p.Base+"/v1/alerts", &al)
		if err := p.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		p.Wait()
		if al.Total > 0 && al.Total < len(alerts) {
			between++
		}
		t.Logf("kill %d: %d alerts raised before it", kills+1, al.Total)
	}
	if between < 2 {
		t.Fatalf("only %d kills fell between two alerts", between)
	}
	p := exampletest.Spawn(t, bin, append(args, "-http", exampletest.FreePort(t))...)
	waitAlerts(t, p.Base, alerts[len(alerts)-1])
	checkExact(t, p.Base, wins, alerts)
}
