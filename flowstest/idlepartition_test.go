package flowstest_test

import (
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
)

// idleTimersFlow sets, for every click, an event-time timer at its time
// plus a minute, which emits the key: a timer fires once the watermark
// over the source's two partitions passes it.
func idleTimersFlow(in flows.Source[click]) (*flows.Flow, *flowstest.Collector[string]) {
	f := flows.New("idle", flows.WithFragments(2))
	src := flows.From(f, "clicks", in, flows.WithEventTime(func(c click) time.Time { return c.At }, 0),
		flows.WithIdleTimeout(time.Minute))
	p := flows.Process(flows.KeyBy(src, func(c click) string { return c.User }), flows.Handler[string, click, int, string]{
		OnEvent: func(c *flows.Context[string, int, string], e click) { c.SetEventTimer(e.At.Add(time.Minute)) },
		OnTimer: func(c *flows.Context[string, int, string], at time.Time) { c.Emit(c.Key()) },
	})
	return f, flowstest.Collect(p.Out())
}

// A partition that has had no event at all for the idle timeout is idle as
// much as one that went silent after some: it must not hold the watermark
// back. Partition 1 never has an event; after two minutes of processing
// time partition 0's watermark alone passes a's timer.
func TestIdleTimeoutPartitionWithoutEvents(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	in := flowstest.NewInput[click](2)
	f, out := idleTimersFlow(in)
	d, err := flowstest.New(f, t0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	in.Push(0, click{User: "a", At: t0})
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	if err := d.Advance(2 * time.Minute); err != nil {
		t.Fatal(err)
	}
	in.Push(0, click{User: "a", At: t0.Add(5 * time.Minute)})
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	if got := out.Values(); len(got) != 1 {
		t.Fatalf("partition 1 never had an event in two minutes, idle after one: %d timers fired (%v), want 1", len(got), got)
	}
}

// An idle partition stays idle across a restart: the state after a
// restart and replay is the state without it. Partition 1 has one event
// and goes silent; partition 0 moves on past it. With partition 1 idle,
// a's timer at 08:06 fires once partition 0 reaches 08:10 and partition 1
// has been silent for its timeout since the restart — with or without a
// restart in between.
func TestIdlePartitionStaysIdleAcrossRestart(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	for _, restart := range []bool{false, true} {
		in := flowstest.NewInput[click](2)
		f, out := idleTimersFlow(in)
		d, err := flowstest.New(f, t0)
		if err != nil {
			t.Fatal(err)
		}
		in.Push(1, click{User: "b", At: t0})
		in.Push(0, click{User: "a", At: t0})
		if err := d.Drain(); err != nil {
			t.Fatal(err)
		}
		if err := d.Advance(2 * time.Minute); err != nil {
			t.Fatal(err)
		}
		in.Push(0, click{User: "a", At: t0.Add(5 * time.Minute)})
		if err := d.Settle(); err != nil {
			t.Fatal(err)
		}
		if got := out.Values(); len(got) != 2 {
			t.Fatalf("partition 1 idle: %d timers fired (%v), want 2", len(got), got)
		}
		if restart {
			if err := d.Restart(); err != nil {
				t.Fatal(err)
			}
			if err := d.Drain(); err != nil {
				t.Fatal(err)
			}
		}
		// However a restart counts the partition's silence, it has been
		// silent for its idle timeout again.
		if err := d.Advance(2 * time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := d.Drain(); err != nil {
			t.Fatal(err)
		}
		in.Push(0, click{User: "a", At: t0.Add(10 * time.Minute)})
		if err := d.Drain(); err != nil {
			t.Fatal(err)
		}
		got := out.Values()
		d.Close()
		if n := len(got); n < 3 {
			t.Fatalf("restart %v: partition 1 idle, partition 0 at 08:10: a's timer at 08:06 did not fire (%d fired: %v)", restart, n, got)
		}
	}
}
