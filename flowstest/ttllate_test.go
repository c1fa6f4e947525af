package flowstest_test

import (
	"errors"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/splice"
)

// A late event whose time plus the TTL the watermark has already passed
// makes state that is expired as it is made: WithStateTTL promises the
// state goes "once the watermark passes its last event's time by d", and
// an event that comes the TTL after its key's last one starts from no
// state. The reference (sequential, each event judged by the watermark of
// the events before it): with the watermark at 60 min and a TTL of 10
// min, an event of k at 0 leaves no state, and a second one at 0 counts 1
// again, not 2 — as it does when the watermark moves a nanosecond between
// the two ("moved"), which must not change the answer.
func TestStateTTLLateEventBehindExpiry(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	for _, moved := range []bool{false, true} {
		in := flowstest.NewInput[click](1)
		f := flows.New("ttl-late", flows.WithFragments(1))
		ks := flows.KeyBy(flows.From(f, "clicks", in, flows.WithEventTime(func(c click) time.Time { return c.At }, 0)),
			func(c click) string { return c.User })
		ttl := flows.WithStateTTL(10 * time.Minute)
		count := flows.Count(ks, ttl).View("count")
		agg := flows.Aggregate(ks, func() int { return 0 }, func(n int, _ click) int { return n + 1 }, ttl).View("agg")
		proc := flows.Process(ks, flows.Handler[string, click, int, int]{
			OnEvent: func(c *flows.Context[string, int, int], _ click) {
				n, _ := c.State()
				c.SetState(n + 1)
				c.Emit(n + 1)
			},
		}, ttl).View("proc")
		counts, aggs, procs := flowstest.Collect(count.Updates()), flowstest.Collect(agg.Updates()), flowstest.Collect(proc.Out())
		d, err := flowstest.New(f, time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		push := func(user string, at time.Duration) {
			in.Push(0, click{User: user, At: t0.Add(at)})
			must(t, d.Drain())
		}
		push("other", 60*time.Minute) // the watermark: 60 min
		push("k", 0)                  // late; its state expires at 10 min, behind the watermark
		for _, view := range []string{"count", "agg", "proc"} {
			if v, err := d.Get(view, "k"); !errors.Is(err, splice.ErrNotFound) {
				t.Errorf("moved %v: view %s holds k = %v (%v) with the watermark 50 min past its expiry", moved, view, v, err)
			}
		}
		if moved {
			push("other", 60*time.Minute+1)
		}
		push("k", 0)
		last := func(kvs []flows.KV[string, int64]) int64 { return kvs[len(kvs)-1].Value }
		if got := last(counts.Values()); got != 1 {
			t.Errorf("moved %v: Count's update of k's second event is %d, want 1", moved, got)
		}
		if got := aggs.Values()[len(aggs.Values())-1].Value; got != 1 {
			t.Errorf("moved %v: Aggregate's update of k's second event is %d, want 1", moved, got)
		}
		if got := procs.Values()[len(procs.Values())-1]; got != 1 {
			t.Errorf("moved %v: Process saw state %d at k's second event, want 1", moved, got)
		}
		d.Close()
	}
}
