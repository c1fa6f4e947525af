package flowstest_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/splice"
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
	must(t, d.Drain())
	must(t, d.Advance(2*time.Minute))
	in.Push(0, click{User: "a", At: t0.Add(5 * time.Minute)})
	must(t, d.Drain())
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
		must(t, d.Drain())
		must(t, d.Advance(2*time.Minute))
		in.Push(0, click{User: "a", At: t0.Add(5 * time.Minute)})
		must(t, d.Settle())
		if got := out.Values(); len(got) != 2 {
			t.Fatalf("partition 1 idle: %d timers fired (%v), want 2", len(got), got)
		}
		if restart {
			must(t, d.Restart())
			must(t, d.Drain())
		}
		// However a restart counts the partition's silence, it has been
		// silent for its idle timeout again.
		must(t, d.Advance(2*time.Minute))
		must(t, d.Drain())
		in.Push(0, click{User: "a", At: t0.Add(10 * time.Minute)})
		must(t, d.Drain())
		got := out.Values()
		d.Close()
		if n := len(got); n < 3 {
			t.Fatalf("restart %v: partition 1 idle, partition 0 at 08:10: a's timer at 08:06 did not fire (%d fired: %v)", restart, n, got)
		}
	}
}

// A fragment restored while every partition of its source is idle has the
// watermark it had before the crash: the channel's watermark is the least
// of the active partitions', and a restore must not forget it because
// none is active. The window of an event behind that watermark, when
// partition 0 comes back, was passed: the event is too late, with or
// without a crash (and the state after a crash and replay is the state
// without it).
func TestAllPartitionsIdleWatermarkSurvivesCrash(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	for _, crash := range []bool{false, true} {
		in := flowstest.NewInput[click](2)
		f := flows.New("idle", flows.WithFragments(1))
		src := flows.From(f, "clicks", in, flows.WithEventTime(func(c click) time.Time { return c.At }, 0),
			flows.WithIdleTimeout(time.Minute))
		w := flows.WindowAggregate(flows.KeyBy(src, func(c click) string { return c.User }), flows.Tumbling(time.Minute),
			func() int64 { return 0 }, func(n int64, _ click) int64 { return n + 1 })
		results := flowstest.Collect(w.Results())
		late := flowstest.Collect(w.TooLate())
		d, err := flowstest.New(f, t0)
		if err != nil {
			t.Fatal(err)
		}
		in.Push(0, click{User: "a", At: t0.Add(5 * time.Minute)})
		in.Push(1, click{User: "b", At: t0.Add(5 * time.Minute)})
		must(t, d.Drain())
		must(t, d.Advance(2*time.Minute))
		if err := d.Settle(); err != nil { // both partitions idle, checkpointed
			t.Fatal(err)
		}
		before := d.Freshness()[0].Watermark
		if before == nil || !before.Equal(t0.Add(5*time.Minute)) {
			t.Fatalf("watermark %v with both partitions idle, want 08:05", before)
		}
		if crash {
			must(t, d.Crash(0))
			must(t, d.Drain())
			if after := d.Freshness()[0].Watermark; after == nil || !after.Equal(*before) {
				t.Errorf("watermark %v before a crash, %v after the restore", before, after)
			}
		}
		in.Push(0, click{User: "a", At: t0.Add(time.Minute)}) // behind 08:05
		must(t, d.Drain())
		var fired []string
		for _, r := range results.Values() {
			fired = append(fired, fmt.Sprintf("%s@%s=%d", r.Key, r.Start.Format("15:04"), r.Value))
		}
		d.Close()
		if n := len(late.Values()); n != 1 || len(fired) != 0 {
			t.Errorf("crash %v: %d events too late (want 1), windows fired %v (want none: 08:05 is not passed)", crash, n, fired)
		}
	}
}

// Which partition is numbered first does not change the answer: two
// partitions that go idle at the same processing time, one at 08:05 and
// one at 08:00, leave the same watermark whichever carries which. An idle
// partition does not hold the watermark back, so neither may keep it at
// 08:00 (the windows up to 08:05 fire in both numberings).
func TestIdlePartitionsWatermarkIndependentOfNumbering(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	var wms []*time.Time
	for _, ahead := range []int{0, 1} {
		in := flowstest.NewInput[click](2)
		f, _ := idleTimersFlow(in)
		d, err := flowstest.New(f, t0)
		if err != nil {
			t.Fatal(err)
		}
		in.Push(ahead, click{User: "a", At: t0.Add(5 * time.Minute)})
		in.Push(1-ahead, click{User: "b", At: t0})
		must(t, d.Drain())
		must(t, d.Advance(2*time.Minute))
		must(t, d.Drain())
		wms = append(wms, d.Freshness()[0].Watermark)
		d.Close()
	}
	if wms[0] == nil || wms[1] == nil || !wms[0].Equal(*wms[1]) {
		t.Fatalf("both partitions idle: watermark %v with partition 0 at 08:05, %v with partition 1 at 08:05", wms[0], wms[1])
	}
}

// The end of a bounded partition completes its watermark, whether or not
// it was idle before it ended: at the end of the input every window
// fires, with or without a silence of the idle timeout before the end.
func TestIdlePartitionEndCompletesWatermark(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	for _, silent := range []bool{false, true} {
		in := flowstest.NewInput[click](1)
		f, out := idleTimersFlow(in)
		d, err := flowstest.New(f, t0)
		if err != nil {
			t.Fatal(err)
		}
		in.Push(0, click{User: "a", At: t0})
		must(t, d.Drain())
		if silent {
			must(t, d.Advance(2*time.Minute))
			must(t, d.Drain())
		}
		in.Close()
		must(t, d.Drain())
		fr := d.Freshness()
		got := out.Values()
		d.Close()
		if len(got) != 1 {
			t.Errorf("silent %v: the input ended, %d timers fired (want 1); watermarks %v", silent, len(got), watermarks(fr))
		}
	}
}

func watermarks(fs []splice.Freshness) []string {
	var out []string
	for _, f := range fs {
		s := "none"
		if f.Watermark != nil {
			s = f.Watermark.Format(time.RFC3339)
		}
		out = append(out, fmt.Sprintf("%d:%s complete=%v", f.Fragment, s, f.Complete))
	}
	return out
}

// The channel's watermark never falls, and a restore gives it back as it
// was, though its partitions' do not: partition 1 goes idle at 08:00,
// partition 0 takes the watermark to 08:10, then partition 1 is active
// again at 08:02. A fragment crashed and restored then still has 08:10,
// not 08:02 (the least of its active partitions'): an event between the
// two is as late after the crash as without it.
func TestChannelWatermarkSurvivesCrashAfterIdlePartitionReturns(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	for _, crash := range []bool{false, true} {
		in := flowstest.NewInput[click](2)
		f, _ := idleTimersFlow(in)
		d, err := flowstest.New(f, t0)
		if err != nil {
			t.Fatal(err)
		}
		push := func(part int, user string, at time.Duration) {
			in.Push(part, click{User: user, At: t0.Add(at)})
			must(t, d.Drain())
		}
		push(1, "b", 0)
		push(0, "a", 0)
		must(t, d.Advance(2*time.Minute))
		push(0, "a", 10*time.Minute) // partition 1 idle: the watermark is 08:10
		push(1, "b", 2*time.Minute)  // active again, behind it
		wm := func() time.Time {
			for _, fr := range d.Freshness() {
				if fr.Watermark != nil {
					return *fr.Watermark
				}
			}
			return time.Time{}
		}
		before := wm()
		if crash {
			must(t, d.Checkpoint())
			for f := range d.Freshness() {
				must(t, d.Crash(f))
			}
		}
		if got := wm(); !got.Equal(before) || !got.Equal(t0.Add(10*time.Minute)) {
			t.Errorf("crash %v: watermark %v, before the crash %v; want 08:10", crash, got, before)
		}
		d.Close()
	}
}

// A partition that ended tells nothing of the others: with every other
// partition idle, the watermark stays where they allow, not at the end of
// time. Partition 0 is bounded and ends at 08:05; partition 1 has an event
// at 08:00, goes silent and is idle a minute later. Its next event, at
// 08:10, is on time: its minute's window counts it, nothing is too late,
// and the global window fires once, when the whole input ends, with every
// event. Before, the end of partition 0 took the watermark to the end of
// time: every window fired, and partition 1's event was too late.
func TestEndedPartitionDoesNotCompleteIdleOnes(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	in := flowstest.NewInput[click](2)
	f := flows.New("ended-idle", flows.WithFragments(2))
	src := flows.From(f, "clicks", in, flows.WithEventTime(func(c click) time.Time { return c.At }, 0),
		flows.WithIdleTimeout(time.Minute))
	ks := flows.KeyBy(src, func(c click) string { return c.User })
	zero, add := func() int { return 0 }, func(n int, _ click) int { return n + 1 }
	perMinute := flows.WindowAggregate(ks, flows.Tumbling(time.Minute), zero, add)
	minutes, tooLate := flowstest.Collect(perMinute.Results()), flowstest.Collect(perMinute.TooLate())
	global := flowstest.Collect(flows.WindowAggregate(ks, flows.Global(), zero, add).Results())
	d, err := flowstest.New(f, t0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for i := range 6 {
		in.Push(0, click{User: "a", At: t0.Add(time.Duration(i) * time.Minute)})
	}
	in.ClosePartition(0)
	in.Push(1, click{User: "b", At: t0})
	must(t, d.Drain())
	must(t, d.Advance(2*time.Minute))
	must(t, d.Drain())
	if got := global.Values(); len(got) != 0 {
		t.Fatalf("partition 0 ended and partition 1 is idle: the global window fired before the input ended: %v", got)
	}
	in.Push(1, click{User: "b", At: t0.Add(10 * time.Minute)})
	in.Close()
	must(t, d.Drain())
	if got := tooLate.Values(); len(got) != 0 {
		t.Fatalf("too late: %v", got)
	}
	fired := map[string]int{}
	for _, r := range minutes.Values() {
		fired[fmt.Sprintf("%s %s", r.Key, r.Start.Format("15:04"))] = r.Value
	}
	if fired["b 08:10"] != 1 || fired["b 08:00"] != 1 || fired["a 08:05"] != 1 || len(fired) != 8 {
		t.Fatalf("windows fired: %v, want a's six minutes and b's 08:00 and 08:10 with one event each", fired)
	}
	if got := global.Values(); len(got) != 2 || got[0].Value+got[1].Value != 8 {
		t.Fatalf("global windows: %v, want a's and b's, 8 events", got)
	}
}
