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

// A Process checkpoints its keys in blocks, each key's state and timers
// together. Checkpoints of the older forms — states and timers apart,
// timers one entry per key or one per timer — restore, fire and emit as
// the new form does, and the next checkpoint rewrites both namespaces in
// the new form.
func TestProcessRestoresEntriesOfEveryForm(t *testing.T) {
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
	// The same state in the older forms: the state in the first
	// namespace; the timers in the second, an entry per key (perKey) or
	// per timer (domain, time, key).
	perKey, perTimer := flowcore.Delta{Entries: d.Entries}, flowcore.Delta{Entries: d.Entries}
	timers, states := 0, 0
	uvarint := func(b []byte) (uint64, []byte) {
		n, l := binary.Uvarint(b)
		if l <= 0 {
			t.Fatalf("bad uvarint in %x", b)
		}
		return n, b[l:]
	}
	for _, e := range d.Puts {
		if e.Namespace%2 == 0 || e.Namespace == 0xffff || len(e.Key) != 5 || e.Key[0] != 0xfd {
			perKey.Puts = append(perKey.Puts, e)
			perTimer.Puts = append(perTimer.Puts, e)
			continue
		}
		if len(e.Value) < 2 || e.Value[0] != 1 {
			t.Fatalf("entry %x: value %x of no known form", e.Key, e.Value)
		}
		n, v := uvarint(e.Value[1:])
		for range n {
			v = v[1:] // the row
			kl, rest := uvarint(v)
			key := rest[:kl]
			hasState := rest[kl] == 1
			nt, rest := uvarint(rest[kl+1:])
			ts := rest
			for range nt {
				at, l := binary.Varint(rest[1:])
				tk := binary.BigEndian.AppendUint64([]byte{rest[0]}, uint64(at))
				perTimer.Puts = append(perTimer.Puts, flowcore.StateEntry{Namespace: e.Namespace, Key: append(tk, key...)})
				rest = rest[1+l:]
				timers++
			}
			if nt > 0 {
				val := binary.AppendUvarint(nil, nt)
				val = append(val, ts[:len(ts)-len(rest)]...)
				perKey.Puts = append(perKey.Puts, flowcore.StateEntry{Namespace: e.Namespace, Key: append([]byte{0xff}, key...), Value: val})
			}
			if hasState {
				sl, st := uvarint(rest)
				e := flowcore.StateEntry{Namespace: e.Namespace - 1, Key: key, Value: st[:sl]}
				perKey.Puts, perTimer.Puts = append(perKey.Puts, e), append(perTimer.Puts, e)
				rest = st[sl:]
				states++
			}
			v = rest
		}
		if len(v) != 0 {
			t.Fatalf("entry %x: %d bytes after its keys", e.Key, len(v))
		}
	}
	if timers < 5 || states < 3 {
		t.Fatalf("%d timers and %d states checkpointed: the test needs some", timers, states)
	}
	var outs [3][]string
	for i, delta := range []flowcore.Delta{d, perKey, perTimer} {
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
			if e.Namespace < 0xfffe && (e.Namespace%2 == 0 || e.Key[0] != 0xfd) {
				t.Fatalf("restored from form %d: an entry of an older form written: namespace %d, key %x", i, e.Namespace, e.Key)
			}
		}
		if reset := len(next.Reset) == 2; reset != (i > 0) || i > 0 && next.Reset[0]+1 != next.Reset[1] {
			t.Fatalf("restored from form %d: namespaces reset %v", i, next.Reset)
		}
		outs[i] = *got
	}
	if len(outs[0]) == 0 || !slices.Equal(outs[0], outs[1]) || !slices.Equal(outs[0], outs[2]) {
		t.Fatalf("after restoring the entries of one per key %v, states apart and timers of one entry per key %v, of one per timer %v",
			outs[0], outs[1], outs[2])
	}
}
