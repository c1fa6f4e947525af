package flowstest_test

import (
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
)

// idSink keeps every output by its id, as an idempotent sink would, and
// every id that arrived with two values.
type idSink struct {
	mu    sync.Mutex
	byID  map[string]string
	clash []string
}

func newIDSink() *idSink { return &idSink{byID: map[string]string{}} }

func (s *idSink) write(out []flows.Output[string]) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range out {
		id := o.ID.String()
		if old, ok := s.byID[id]; ok && old != o.Value {
			s.clash = append(s.clash, fmt.Sprintf("%s: %q and %q", id, old, o.Value))
		}
		s.byID[id] = o.Value
	}
	return nil
}

func (s *idSink) values() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Values(s.byID))
}

// Every event of a key sets its timer for one time, 5 minutes in: the
// events after it set a time already reached. In event-time order the
// timer fires at 5 minutes (with the 5 events before it), then once right
// after each later event — six firings, each a reminder of its own in a
// sink that keeps outputs by id, with or without a crash and restore in
// the middle, whose restore replays an event and its firing. (Every firing had the id of the first, the operator, key
// and time: an idempotent sink kept one of the six.) A timer set for a
// time still pending fires once however often it is set.
func TestTimerSetForAReachedTimeFiresUnderIDsOfItsOwn(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	want := []string{"k@5m0s n=10", "k@5m0s n=5", "k@5m0s n=6", "k@5m0s n=7", "k@5m0s n=8", "k@5m0s n=9"}
	for _, crash := range []bool{false, true} {
		in := flowstest.NewInput[click](1)
		f := flows.New("remind", flows.WithFragments(1))
		ks := flows.KeyBy(flows.From(f, "clicks", in, flows.WithEventTime(func(c click) time.Time { return c.At }, 0)),
			func(c click) string { return c.User })
		out := flows.Process(ks, flows.Handler[string, click, int, string]{
			OnEvent: func(c *flows.Context[string, int, string], e click) {
				n, _ := c.State()
				c.SetState(n + 1)
				if c.Key() == "k" {
					c.SetEventTimer(t0.Add(5 * time.Minute))
				}
			},
			OnTimer: func(c *flows.Context[string, int, string], at time.Time) {
				n, _ := c.State()
				c.Emit(fmt.Sprintf("%s@%v n=%d", c.Key(), at.Sub(t0), n))
			},
		}, flows.InEventTimeOrder()).Out()
		sink := newIDSink()
		flows.To(out, flows.SinkFunc[string](sink.write), flows.OnCheckpoint())
		d, err := flowstest.New(f, time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		for m := range 10 {
			in.Push(0, click{User: "k", At: t0.Add(time.Duration(m) * time.Minute)})
			must(t, d.Drain())
			if crash && m == 6 {
				must(t, d.Checkpoint())
				in.Push(0, click{User: "k", At: t0.Add(6*time.Minute + 30*time.Second)})
				must(t, d.Drain())
				// The restore replays the event at 6m30s: its firing
				// again, under the same id.
				must(t, d.Restart())
			}
		}
		in.Push(0, click{User: "other", At: t0.Add(time.Hour)})
		in.Close()
		must(t, d.Settle())
		got := sink.values()
		exp := want
		if crash { // an event more, at 6m30s: a firing more
			exp = []string{"k@5m0s n=10", "k@5m0s n=11", "k@5m0s n=5", "k@5m0s n=6", "k@5m0s n=7", "k@5m0s n=8", "k@5m0s n=9"}
		}
		if !slices.Equal(got, exp) {
			t.Errorf("crash %v: the sink keeps %q, want %q", crash, got, exp)
		}
		if len(sink.clash) > 0 {
			t.Errorf("crash %v: ids with two values: %q", crash, sink.clash)
		}
		must(t, d.Close())
	}
}

// A Count and a Process in event-time order over the same keyed stream,
// into one sink: the Count's update of an event is made when the event
// arrives, the Process's output when the watermark passes it. Both are
// outputs of that event, each with an id of its own. (The Process's
// outputs were numbered from 0 again, the id of the Count's update: an
// idempotent sink kept one of the two.)
func TestHeldBackEventsOutputsHaveIDsOfTheirOwn(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	in := flowstest.NewInput[click](2)
	f := flows.New("held", flows.WithFragments(2))
	ks := flows.KeyBy(flows.From(f, "clicks", in, flows.WithEventTime(func(c click) time.Time { return c.At }, time.Minute)),
		func(c click) string { return c.User })
	sink := newIDSink()
	counts := flows.Count(ks)
	flows.To(flows.Map(counts.Updates(), func(kv flows.KV[string, int64]) string { return fmt.Sprintf("count %s=%d", kv.Key, kv.Value) }),
		flows.SinkFunc[string](sink.write), flows.OnCheckpoint())
	for _, name := range []string{"a", "b"} {
		out := flows.Process(ks, flows.Handler[string, click, int, string]{
			OnEvent: func(c *flows.Context[string, int, string], e click) {
				n, _ := c.State()
				c.SetState(n + 1)
				c.Emit(fmt.Sprintf("%s %s#%d", name, c.Key(), n+1))
			},
		}, flows.InEventTimeOrder()).Out()
		flows.To(out, flows.SinkFunc[string](sink.write), flows.OnCheckpoint())
	}
	d, err := flowstest.New(f, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 40 {
		user := fmt.Sprintf("u%d", i%3)
		in.Push(i%2, click{User: user, At: t0.Add(time.Duration(i) * time.Second)})
		n := i/3 + 1
		want = append(want, fmt.Sprintf("count %s=%d", user, n), fmt.Sprintf("a %s#%d", user, n), fmt.Sprintf("b %s#%d", user, n))
		if i == 20 {
			must(t, d.Drain())
			must(t, d.Checkpoint())
			must(t, d.Restart())
		}
	}
	in.Close()
	must(t, d.Settle())
	slices.Sort(want)
	if got := sink.values(); !slices.Equal(got, want) {
		t.Errorf("the sink keeps %d outputs, want %d: %q", len(got), len(want), got)
	}
	if len(sink.clash) > 0 {
		t.Errorf("ids with two values: %q", sink.clash)
	}
	must(t, d.Close())
}
