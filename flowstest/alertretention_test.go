package flowstest_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/splice"
)

// crowdedFlow counts distinct users per minute in a window view kept
// for retain past each window's end, and alerts when the count rises
// above limit.
func crowdedFlow(in flows.Source[click], retain time.Duration, limit int64) *flows.Flow {
	f := flows.New("crowded", flows.WithFragments(2))
	src := flows.From(f, "clicks", in, flows.WithEventTime(func(c click) time.Time { return c.At }, 0))
	w := flows.WindowAggregate(flows.KeyBy(src, func(c click) string { return c.User }), flows.Tumbling(time.Minute),
		func() int64 { return 0 }, func(n int64, _ click) int64 { return n + 1 })
	v := flows.WindowView(w, "users", splice.Count[struct{}](), func(string, int64) struct{} { return struct{}{} }, retain)
	flows.Alert(v, "crowded", func(prev, cur int64) bool { return prev <= limit && cur > limit })
	return f
}

// An alert is raised for every crossing, however short the view's
// retention: fragments keep the windows the alerts have not evaluated yet
// (Fragment.SetHold), from the first batch on and after a restart, not
// only once the processing-time clock moved. Three users at 08:00, one a
// minute after, up to 08:10: the alert fires once, for 08:00, when the
// clock has not moved yet, and when it moved before a restart but not
// since.
func TestAlertFiresForWindowsPastRetention(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	for _, restart := range []bool{false, true} {
		in := flowstest.NewInput[click](1)
		d, err := flowstest.New(crowdedFlow(in, 0, 2), t0)
		if err != nil {
			t.Fatal(err)
		}
		var recs []flows.AlertRecord
		if restart {
			// The alert evaluates 07:00, the clock moves (fragments
			// hold the windows after it), and the process restarts.
			in.Push(0, click{User: "z", At: t0.Add(-time.Hour)}, click{User: "z", At: t0.Add(-50 * time.Minute)})
			must(t, d.Drain())
			r, err := d.StepAlerts()
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, r...)
			must(t, d.Advance(time.Second))
			must(t, d.Checkpoint())
			must(t, d.Restart())
		}
		for _, u := range []string{"a", "b", "c"} {
			in.Push(0, click{User: u, At: t0.Add(10 * time.Second)})
		}
		for i := 1; i <= 10; i++ {
			in.Push(0, click{User: "a", At: t0.Add(time.Duration(i) * time.Minute)})
		}
		must(t, d.Drain())
		r, err := d.StepAlerts()
		d.Close()
		if err != nil {
			t.Errorf("restart %v: %v", restart, err)
			continue
		}
		recs = append(recs, r...)
		var got []string
		for _, r := range recs {
			got = append(got, fmt.Sprintf("%s=%v", r.Start.Format("15:04"), r.Value))
		}
		if len(got) != 1 || got[0] != "08:00=3" {
			t.Errorf("restart %v: alerts %v, want [08:00=3]", restart, got)
		}
	}
}
