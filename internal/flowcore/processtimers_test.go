package flowcore_test

import (
	"encoding/binary"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
)

// timersFlow: every event of a key moves its event-time timer to a minute
// after it, and the timer emits the key and the time.
func timersFlow(t *testing.T, n int) (*flowcore.Plan, *[]string) {
	t.Helper()
	in := flowstest.NewInput[stamped](1)
	for i := range n {
		in.Push(0, stamped{Text: fmt.Sprintf("k%d", i*i%5), At: t0.Add(time.Duration(i) * 17 * time.Second)})
	}
	f := flows.New("timers", flows.WithFragments(1))
	ks := flows.KeyBy(flows.From(f, "lines", in, flows.WithEventTime(func(s stamped) time.Time { return s.At }, 0)),
		func(s stamped) string { return s.Text })
	out := flows.Process(ks, flows.Handler[string, stamped, int64, string]{
		OnEvent: func(c *flows.Context[string, int64, string], s stamped) {
			if at, ok := c.State(); ok {
				c.DeleteEventTimer(time.Unix(0, at))
			}
			at := s.At.Add(time.Minute).UnixNano()
			c.SetState(at)
			c.SetEventTimer(time.Unix(0, at))
		},
		OnTimer: func(c *flows.Context[string, int64, string], at time.Time) {
			c.Emit(fmt.Sprintf("%s %s", c.Key(), at.UTC().Format("15:04:05")))
		},
	}, flows.WithStateTTL(time.Hour)).Out()
	var got []string
	flows.To(out, flows.SinkFunc[string](func(os []flows.Output[string]) error {
		for _, o := range os {
			got = append(got, o.Value)
		}
		return nil
	}))
	plan, err := flowcore.Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	return plan, &got
}

// Timers checkpointed one entry per timer (as Process wrote them before
// timers were kept per key) restore, fire as the ones of one entry per key
// do, and the next checkpoint rewrites them in the new form.
func TestProcessRestoresTimersOfEitherForm(t *testing.T) {
	src, _ := timersFlow(t, 200)
	bs := batches(t, src, 8)
	fr := src.NewFragment(0)
	for _, b := range bs[:10] {
		if err := fr.Apply(b, b.PrevEnd); err != nil {
			t.Fatal(err)
		}
	}
	d, err := fr.TakeDelta()
	if err != nil {
		t.Fatal(err)
	}
	// The same timers, one entry each: domain, time, key.
	old := flowcore.Delta{Entries: d.Entries}
	timers := 0
	for _, e := range d.Puts {
		if e.Namespace%2 == 0 || e.Namespace == 0xffff || len(e.Key) == 0 || e.Key[0] != 0xff {
			old.Puts = append(old.Puts, e)
			continue
		}
		v := e.Value
		n, l := binary.Uvarint(v)
		v = v[l:]
		for range n {
			at, l := binary.Varint(v[1:])
			key := binary.BigEndian.AppendUint64([]byte{v[0]}, uint64(at))
			old.Puts = append(old.Puts, flowcore.StateEntry{Namespace: e.Namespace, Key: append(key, e.Key[1:]...)})
			v = v[1+l:]
			timers++
		}
	}
	if timers < 5 {
		t.Fatalf("%d timers checkpointed: the test needs some", timers)
	}
	var outs [2][]string
	for i, delta := range []flowcore.Delta{d, old} {
		plan, got := timersFlow(t, 200)
		fr, err := restoreInto(plan, delta)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bs[10:] {
			if err := fr.Apply(b, b.PrevEnd); err != nil {
				t.Fatal(err)
			}
		}
		next, err := fr.TakeDelta()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range next.Puts {
			if e.Namespace%2 == 1 && e.Namespace != 0xffff && e.Key[0] != 0xff {
				t.Fatalf("a timer entry of the old form written: %x", e.Key)
			}
		}
		if reset := slices.ContainsFunc(next.Reset, func(ns uint16) bool { return ns%2 == 1 && ns != 0xffff }); reset != (i == 1) {
			t.Fatalf("restored from form %d: timers namespace reset %v", i, reset)
		}
		outs[i] = *got
	}
	if len(outs[0]) == 0 || !slices.Equal(outs[0], outs[1]) {
		t.Fatalf("after restoring timers of one entry per key %v, of one per timer %v", outs[0], outs[1])
	}
}
