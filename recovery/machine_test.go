package recovery_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/shard"
	"github.com/tessera-streams/tessera/splice"
)

// The Machine is driven here by hand, one call at a time, with batches that
// real readers of a real plan make and checkpoints in a real store: the
// rules of machine.go one by one, then a random walk of faults that must
// end in the plain count of the input.

// ev is an input event: a key to count, and how often the process function
// fails on it before it succeeds (poison: always).
type ev struct {
	Key  string
	ID   int
	Fail int
}

const poison = -1

// failer is the process function's memory of the failures it caused. A
// restore does not roll it back, as it does not roll back whatever made a
// user function fail once and succeed when tried again.
type failer struct{ calls map[int]int }

func (f *failer) handler() flows.Handler[string, ev, int64, int64] {
	return flows.Handler[string, ev, int64, int64]{
		OnEvent: func(c *flows.Context[string, int64, int64], e ev) {
			if e.Fail != 0 {
				f.calls[e.ID]++
				if e.Fail == poison || f.calls[e.ID] <= e.Fail {
					panic(fmt.Sprintf("marked event %d", e.ID))
				}
			}
			n, _ := c.State()
			c.SetState(n + 1)
		},
	}
}

// rig is a flow's plan, its input and a checkpoint store, for machines
// driven by hand.
type rig struct {
	plan  *flowcore.Plan
	in    *flowstest.Input[ev]
	store *recovery.Store
	now   time.Time
	ids   int // events pushed
}

const (
	sourceCh   = 0 // the channel of the source
	exchangeCh = 1 // the channel of the exchange in exchangeRig
)

func newStore(t testing.TB) *recovery.Store {
	t.Helper()
	s, err := recovery.Open("checkpoints", vfs.NewMem(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// countRig is one stage: events keyed by Key are counted (view "counts"),
// then seen by the process function that fails on marked events. The
// count has taken an event when the process function fails on it, so a
// state that is not restored after a failure counts it twice.
func countRig(t rapid.TB, store *recovery.Store, name string, partitions, fragments int) *rig {
	t.Helper()
	in := flowstest.NewInput[ev](partitions)
	fl := flows.New(name, flows.WithFragments(fragments))
	ks := flows.KeyBy(flows.From(fl, "events", in), func(e ev) string { return e.Key })
	flows.Count(ks).View("counts")
	fail := &failer{calls: map[int]int{}}
	flows.Process(ks, fail.handler())
	plan, err := flowcore.Compile(fl)
	if err != nil {
		t.Fatal(err)
	}
	return &rig{plan: plan, in: in, store: store, now: time.Unix(1_000_000, 0)}
}

// exchangeRig is two stages: countRig's, whose count updates are re-keyed
// by the count reached and counted again (view "reached": how many keys
// reached each count).
func exchangeRig(t testing.TB, store *recovery.Store, fragments int) *rig {
	t.Helper()
	in := flowstest.NewInput[ev](1)
	fl := flows.New("exchange", flows.WithFragments(fragments))
	ks := flows.KeyBy(flows.From(fl, "events", in), func(e ev) string { return e.Key })
	counts := flows.Count(ks).View("counts")
	fail := &failer{calls: map[int]int{}}
	flows.Process(ks, fail.handler())
	flows.Count(flows.KeyBy(counts.Updates(), func(kv flows.KV[string, int64]) int64 { return kv.Value })).View("reached")
	plan, err := flowcore.Compile(fl)
	if err != nil {
		t.Fatal(err)
	}
	if !plan.IsExchange(exchangeCh) || plan.IsExchange(sourceCh) {
		t.Fatalf("channels: %+v", plan.Channels())
	}
	return &rig{plan: plan, in: in, store: store, now: time.Unix(1_000_000, 0)}
}

// push appends events with the given keys to partition p, numbered in
// the order pushed.
func (r *rig) push(p int, keys ...string) {
	for _, k := range keys {
		r.in.Push(p, ev{Key: k, ID: r.ids})
		r.ids++
	}
}

// batch is what a reader of partition p opened at from sends fragment
// frag once it has read up to to.
func (r *rig) batch(t rapid.TB, p int, from, to int64, frag int) *flowcore.Batch {
	t.Helper()
	rd, err := r.plan.OpenReader(sourceCh, p, from, 64)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	if _, err := rd.Poll(context.Background(), int(to-from)); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	if rd.Position() != to {
		t.Fatalf("reader of partition %d read up to %d, want %d", p, rd.Position(), to)
	}
	return rd.Take(frag)
}

func (r *rig) machine(id int, cfg recovery.MachineConfig) *recovery.Machine {
	m := recovery.NewMachine(r.plan, id, recovery.Restored{Fragment: r.plan.NewFragment(id)}, 0, false, cfg)
	m.SetNow(r.now)
	return m
}

// write takes fragment id's next checkpoint and writes it, without telling
// the machine it is durable.
func (r *rig) write(t rapid.TB, m *recovery.Machine, id int) *recovery.Checkpoint {
	t.Helper()
	cp, err := m.Checkpoint()
	if err != nil || cp == nil {
		t.Fatalf("checkpoint of fragment %d: %v, %v", id, cp, err)
	}
	if _, err := r.store.Write(r.plan.Name(), id, cp); err != nil {
		t.Fatal(err)
	}
	return cp
}

// checkpoint writes fragment id's next checkpoint and tells the machine it
// is durable; it returns what that made ready.
func (r *rig) checkpoint(t rapid.TB, m *recovery.Machine, id int) recovery.Ready {
	t.Helper()
	cp := r.write(t, m, id)
	m.Durable(cp.Manifest.Offsets, nil)
	return m.Ready()
}

func (r *rig) restore(t rapid.TB, id int) recovery.Restored {
	t.Helper()
	rs, err := recovery.Restore(r.store, r.plan, id)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// keysOf returns n keys that belong to fragment frag of fragments.
func keysOf(frag, fragments, n int) []string {
	var out []string
	for i := 0; len(out) < n; i++ {
		k := fmt.Sprintf("k%d", i)
		if shard.Fragment(shard.String(k), fragments) == frag {
			out = append(out, k)
		}
	}
	return out
}

// view is fragment state of a keyed view of int64 values, by printed key.
func view(t rapid.TB, m *recovery.Machine, name string) map[string]int64 {
	t.Helper()
	a, err := m.Fragment().Query(splice.Request{View: name, Op: splice.OpEntries, Query: splice.Query{Limit: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, e := range a.Entries {
		n, ok := e.Value.(int64)
		if !ok {
			t.Fatalf("view %s: key %s has a %T", name, e.Key, e.Value)
		}
		out[e.Key] = n
	}
	return out
}

func reader(p int) recovery.From { return recovery.From{Key: fmt.Sprintf("reader-%d", p)} }

func part(ch, p int) recovery.PartitionID { return recovery.PartitionID{Source: ch, Partition: p} }

// rewind is a Rewind as the tests write it: ask is the sender's key, ""
// for whoever has the partition.
type rewind struct {
	part recovery.PartitionID
	to   int64
	ask  string
}

func rewinds(rws []recovery.Rewind) []rewind {
	out := []rewind{}
	for _, rw := range rws {
		r := rewind{part: rw.Part, to: rw.To}
		if rw.Ask != nil {
			r.ask = rw.Ask.Key
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b rewind) int {
		if a.part.Source != b.part.Source {
			return a.part.Source - b.part.Source
		}
		return a.part.Partition - b.part.Partition
	})
	return out
}

func keysOfFroms(fs []recovery.From) []string {
	out := []string{}
	for _, f := range fs {
		out = append(out, f.Key)
	}
	return out
}

func TestMachineFence(t *testing.T) {
	for _, c := range []struct {
		name          string
		epoch         uint64 // of the batch; the fragment is at 5
		fenced        bool
		wantPlacement uint64
	}{
		{"older epoch is fenced", 4, true, 5},
		{"same epoch applies", 5, false, 5},
		{"newer epoch raises the fragment's", 7, false, 7},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := countRig(t, newStore(t), "fence", 1, 1)
			r.push(0, "a", "b", "c", "a", "b")
			m := recovery.NewMachine(r.plan, 0, recovery.Restored{Fragment: r.plan.NewFragment(0)}, 5, false, recovery.MachineConfig{})
			b := r.batch(t, 0, 0, 2, 0)
			b.Epoch = 5
			m.Step(b, reader(0))
			m.Ready()

			b = r.batch(t, 0, 2, 5, 0)
			b.Epoch = c.epoch
			m.Step(b, reader(0))
			rd := m.Ready()
			if got := keysOfFroms(rd.Acks); !slices.Equal(got, []string{"reader-0"}) {
				t.Fatalf("acks %v, want the batch's", got)
			}
			if m.PlacementEpoch() != c.wantPlacement {
				t.Fatalf("placement epoch %d, want %d", m.PlacementEpoch(), c.wantPlacement)
			}
			if c.fenced {
				want := []rewind{{part(sourceCh, 0), 2, "reader-0"}}
				if rd.Fenced != 1 || rd.Applied != 0 || !slices.Equal(rewinds(rd.Rewinds), want) {
					t.Fatalf("fenced %d applied %d rewinds %v, want 1, 0, %v", rd.Fenced, rd.Applied, rewinds(rd.Rewinds), want)
				}
				if m.Vector().End(part(sourceCh, 0)) != 2 || m.Fragment().Events() != 2 {
					t.Fatalf("a fenced batch changed the fragment: end %d, events %d", m.Vector().End(part(sourceCh, 0)), m.Fragment().Events())
				}
				return
			}
			if rd.Fenced != 0 || rd.Applied != 1 || len(rd.Rewinds) != 0 {
				t.Fatalf("fenced %d applied %d rewinds %v", rd.Fenced, rd.Applied, rd.Rewinds)
			}
			if m.Vector().End(part(sourceCh, 0)) != 5 || m.Fragment().Events() != 5 {
				t.Fatalf("end %d, events %d, want 5, 5", m.Vector().End(part(sourceCh, 0)), m.Fragment().Events())
			}
			m.Placement(c.wantPlacement - 1)
			if m.PlacementEpoch() != c.wantPlacement {
				t.Fatalf("Placement lowered the epoch to %d", m.PlacementEpoch())
			}
		})
	}
}

// admitStep is one batch of partition 0 [from, to) from sender, and what
// must follow.
type admitStep struct {
	sender   string
	from, to int64
	verdict  recovery.Verdict // Apply, Duplicate or Gap
	rewindTo int64            // the rewind asked of sender; -1 for none
	end      int64            // the recorded end after it
	events   int64            // records applied in all after it
	replayed int64
}

func TestMachineAdmit(t *testing.T) {
	for _, c := range []struct {
		name  string
		steps []admitStep
	}{
		{"in order, empty batches included", []admitStep{
			{"A", 0, 3, recovery.Apply, -1, 3, 3, 0},
			{"A", 3, 3, recovery.Apply, -1, 3, 3, 0},
			{"A", 3, 6, recovery.Apply, -1, 6, 6, 0},
		}},
		{"a duplicate is dropped and acknowledged", []admitStep{
			{"A", 0, 4, recovery.Apply, -1, 4, 4, 0},
			{"A", 0, 4, recovery.Duplicate, -1, 4, 4, 4},
			{"B", 1, 3, recovery.Duplicate, -1, 4, 4, 2},
		}},
		{"an overlap applies the records from the recorded end", []admitStep{
			{"A", 0, 4, recovery.Apply, -1, 4, 4, 0},
			{"A", 2, 7, recovery.Apply, -1, 7, 7, 2},
		}},
		{"a gap asks each sender once until it replays", []admitStep{
			{"A", 0, 2, recovery.Apply, -1, 2, 2, 0},
			{"A", 4, 6, recovery.Gap, 2, 2, 2, 0},
			{"A", 5, 7, recovery.Gap, -1, 2, 2, 0},
			{"B", 6, 8, recovery.Gap, 2, 2, 2, 0}, // another sender: asked too
			{"B", 7, 8, recovery.Gap, -1, 2, 2, 0},
			{"B", 2, 6, recovery.Apply, -1, 6, 6, 0}, // the replay
			{"B", 7, 8, recovery.Gap, 6, 6, 6, 0},    // a new gap: asked again
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := countRig(t, newStore(t), "admit", 1, 1)
			r.push(0, "a", "b", "c", "a", "b", "c", "a", "b")
			m := r.machine(0, recovery.MachineConfig{})
			for i, s := range c.steps {
				from := recovery.From{Key: s.sender}
				m.Step(r.batch(t, 0, s.from, s.to, 0), from)
				rd := m.Ready()
				counters := [3]int{rd.Applied, rd.Duplicates, rd.Gaps}
				wantCounters := [3]int{}
				wantCounters[s.verdict] = 1
				if counters != wantCounters {
					t.Fatalf("step %d %s[%d,%d): applied %d, duplicates %d, gaps %d; want %v", i, s.sender, s.from, s.to,
						rd.Applied, rd.Duplicates, rd.Gaps, s.verdict)
				}
				if got := keysOfFroms(rd.Acks); !slices.Equal(got, []string{s.sender}) {
					t.Fatalf("step %d: acks %v, want the batch's", i, got)
				}
				var wantRw []rewind
				if s.rewindTo >= 0 {
					wantRw = []rewind{{part(sourceCh, 0), s.rewindTo, s.sender}}
				}
				if got := rewinds(rd.Rewinds); !slices.Equal(got, wantRw) && (len(got) > 0 || len(wantRw) > 0) {
					t.Fatalf("step %d: rewinds %v, want %v", i, got, wantRw)
				}
				if e := m.Vector().End(part(sourceCh, 0)); e != s.end {
					t.Fatalf("step %d: end %d, want %d", i, e, s.end)
				}
				if n := m.Fragment().Events(); n != s.events {
					t.Fatalf("step %d: %d records applied, want %d", i, n, s.events)
				}
				if rd.Replayed != s.replayed {
					t.Fatalf("step %d: replayed %d, want %d", i, rd.Replayed, s.replayed)
				}
			}
			want := map[string]int64{}
			keys := []string{"a", "b", "c", "a", "b", "c", "a", "b"}
			for _, k := range keys[:m.Vector().End(part(sourceCh, 0))] {
				want[k]++
			}
			if got := view(t, m, "counts"); !maps.Equal(got, want) {
				t.Fatalf("counts %v, want %v", got, want)
			}
		})
	}
}

type tick struct {
	Key string
	At  time.Time
}

// A fragment restored after the end-of-input watermark was first sent
// lacks it; a replay of records it has (a duplicate, because another
// fragment asked the reader to rewind) carries it, and completes the
// fragment's windows.
func TestMachineDuplicateCarriesWatermark(t *testing.T) {
	store := newStore(t)
	in := flowstest.NewInput[tick](1)
	fl := flows.New("windows", flows.WithFragments(1))
	src := flows.From(fl, "ticks", in, flows.WithEventTime(func(e tick) time.Time { return e.At }, 0))
	results := flowstest.Collect(flows.WindowAggregate(flows.KeyBy(src, func(e tick) string { return e.Key }),
		flows.Tumbling(time.Minute), func() int { return 0 }, func(n int, _ tick) int { return n + 1 }).Results())
	plan, err := flowcore.Compile(fl)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{plan: plan, store: store, now: time.Unix(1_000_000, 0)}
	t0 := time.Unix(0, 0)
	in.Push(0, tick{"a", t0}, tick{"a", t0.Add(10 * time.Second)}, tick{"a", t0.Add(20 * time.Second)})

	m := r.machine(0, recovery.MachineConfig{})
	m.Step(r.batch(t, 0, 0, 3, 0), reader(0)) // watermark 20s: the window is open
	r.checkpoint(t, m, 0)
	in.Close()
	m.Step(r.batch(t, 0, 3, 3, 0), reader(0)) // the end of input: the window closes
	if m.Ready().Applied != 1 || len(results.Values()) != 1 {
		t.Fatalf("the end-of-input watermark fired %d windows, want 1", len(results.Values()))
	}

	m.Restored(r.restore(t, 0), true)
	m.Ready()
	if wm := m.Fragment().Watermark(); wm != t0.Add(20*time.Second).UnixNano() {
		t.Fatalf("restored watermark %d", wm)
	}
	m.Step(r.batch(t, 0, 0, 3, 0), reader(0)) // a replay from 0 for another fragment
	rd := m.Ready()
	if rd.Duplicates != 1 || m.Fragment().Events() != 3 {
		t.Fatalf("duplicates %d, events %d: want the replay dropped", rd.Duplicates, m.Fragment().Events())
	}
	if got := keysOfFroms(rd.Acks); !slices.Equal(got, []string{"reader-0"}) {
		t.Fatalf("acks %v", got)
	}
	vs := results.Values()
	if len(vs) != 2 || vs[1].Value != 3 || !vs[1].Start.Equal(t0) {
		t.Fatalf("after the duplicate: results %+v, want the window [0, 1m) with 3 events again", vs)
	}
}

// failingInput is two partitions: partition 0 has a marked event at offset
// 3 (ID 3) that fails fail times; partition 1 plain events.
func failingInput(r *rig, fail int) {
	r.push(0, "a", "b", "c")
	r.in.Push(0, ev{Key: "a", ID: 3, Fail: fail})
	r.ids++
	r.push(0, "b", "c")
	r.push(1, "a", "b", "c", "a")
}

func TestMachineFailureRestores(t *testing.T) {
	const backoff = 100 * time.Millisecond
	for _, writing := range []bool{false, true} {
		t.Run(fmt.Sprintf("writing=%v", writing), func(t *testing.T) {
			r := countRig(t, newStore(t), "failure", 2, 1)
			failingInput(r, 1)
			m := r.machine(0, recovery.MachineConfig{Backoff: backoff})
			m.Step(r.batch(t, 0, 0, 2, 0), reader(0))
			m.Step(r.batch(t, 1, 0, 2, 0), reader(1))
			r.checkpoint(t, m, 0)
			var cp *recovery.Checkpoint
			if writing {
				cp = r.write(t, m, 0)
			}

			ev3 := flows.EventID{Source: sourceCh, Partition: 0, Offset: 3}
			m.Step(r.batch(t, 0, 2, 6, 0), reader(0))
			rd := m.Ready()
			if rd.Failures != 1 || !slices.Equal(keysOfFroms(rd.Acks), []string{"reader-0"}) || m.Attempts(ev3) != 1 {
				t.Fatalf("failures %d, acks %v, attempts %d", rd.Failures, keysOfFroms(rd.Acks), m.Attempts(ev3))
			}
			if !m.Down() || m.Serving() == nil {
				t.Fatalf("down %v, serving %v: a failed fragment must not serve", m.Down(), m.Serving())
			}
			if rd.Restore == writing {
				t.Fatalf("restore %v with a checkpoint being written %v: it must wait for it", rd.Restore, writing)
			}
			if cp, err := m.Checkpoint(); cp != nil || err != nil {
				t.Fatalf("a failed fragment took a checkpoint: %v %v", cp, err)
			}
			m.Step(r.batch(t, 1, 2, 4, 0), reader(1))
			if rd := m.Ready(); rd.Gaps != 1 || rd.Applied != 0 || len(rd.Rewinds) != 0 || rd.Restore {
				t.Fatalf("input while down: %+v", rd)
			}
			if writing {
				m.Durable(cp.Manifest.Offsets, nil)
				if !m.Ready().Restore {
					t.Fatal("no restore once the checkpoint being written is durable")
				}
			}

			restored := r.restore(t, 0)
			m.Restored(restored, false)
			if rd := m.Ready(); len(rd.Rewinds) != 0 {
				t.Fatalf("rewinds before the backoff: %v", rd.Rewinds)
			}
			if m.Down() || !m.Holding() || m.Serving() != nil {
				t.Fatalf("after the restore: down %v, holding %v, serving %v", m.Down(), m.Holding(), m.Serving())
			}
			if got, want := view(t, m, "counts"), map[string]int64{"a": 2, "b": 2}; !maps.Equal(got, want) {
				t.Fatalf("restored counts %v, want %v", got, want)
			}

			// Input waits for the backoff; whatever comes is dropped as gaps.
			m.Step(r.batch(t, 0, 2, 6, 0), reader(0))
			if rd := m.Ready(); rd.Gaps != 1 || rd.Applied != 0 || len(rd.Rewinds) != 0 || len(rd.Acks) != 1 {
				t.Fatalf("input during the backoff: %+v", rd)
			}
			m.Tick(r.now.Add(backoff - time.Nanosecond))
			if rd := m.Ready(); len(rd.Rewinds) != 0 || !m.Holding() {
				t.Fatalf("rewinds %v before the backoff ended", rd.Rewinds)
			}
			m.Tick(r.now.Add(backoff))
			// ... from whoever reads each partition, and from the readers
			// whose batches it dropped.
			want := []rewind{{part(sourceCh, 0), 2, ""}, {part(sourceCh, 0), 2, "reader-0"}, {part(sourceCh, 1), 2, ""}, {part(sourceCh, 1), 2, "reader-1"}}
			if got := rewinds(m.Ready().Rewinds); !slices.Equal(got, want) || m.Holding() {
				t.Fatalf("after the backoff: rewinds %v, want %v", got, want)
			}
			m.Step(r.batch(t, 0, 2, 6, 0), reader(0))
			m.Step(r.batch(t, 1, 2, 4, 0), reader(1))
			if rd := m.Ready(); rd.Applied != 2 || rd.Failures != 0 {
				t.Fatalf("the replay: %+v", rd)
			}
			if got, want := view(t, m, "counts"), map[string]int64{"a": 4, "b": 3, "c": 3}; !maps.Equal(got, want) {
				t.Fatalf("counts %v, want %v", got, want)
			}
		})
	}
}

func TestMachineDeadLetterAfterMaxAttempts(t *testing.T) {
	const backoff = 100 * time.Millisecond
	r := countRig(t, newStore(t), "poison", 2, 1)
	failingInput(r, poison)
	m := r.machine(0, recovery.MachineConfig{Backoff: backoff, MaxAttempts: 3})
	ev3 := flows.EventID{Source: sourceCh, Partition: 0, Offset: 3}
	now := r.now
	for attempt := 1; attempt <= 3; attempt++ {
		m.Step(r.batch(t, 0, 0, 6, 0), reader(0))
		rd := m.Ready()
		if rd.Failures != 1 || !rd.Restore {
			t.Fatalf("attempt %d: failures %d, restore %v", attempt, rd.Failures, rd.Restore)
		}
		if attempt < 3 {
			if len(rd.DeadLetters) != 0 || m.Attempts(ev3) != attempt {
				t.Fatalf("attempt %d: dead letters %v, attempts %d", attempt, rd.DeadLetters, m.Attempts(ev3))
			}
		} else {
			dl := rd.DeadLetters
			if len(dl) != 1 || dl[0].Partition != 0 || dl[0].Offset != 3 || dl[0].Key != "a" ||
				!strings.Contains(dl[0].Error, "marked event 3") || !strings.Contains(dl[0].Error, "after 3 attempts") {
				t.Fatalf("dead letters %+v", dl)
			}
			if m.Attempts(ev3) != 0 {
				t.Fatalf("attempts %d after the skip", m.Attempts(ev3))
			}
		}
		m.Restored(r.restore(t, 0), false)
		m.Ready()
		// The backoff grows with the attempts.
		wait := time.Duration(attempt) * backoff
		m.Tick(now.Add(wait - time.Nanosecond))
		if rd := m.Ready(); len(rd.Rewinds) != 0 {
			t.Fatalf("attempt %d: rewinds before %v", attempt, wait)
		}
		now = now.Add(wait)
		m.Tick(now)
		if rd := m.Ready(); len(rd.Rewinds) != 2 {
			t.Fatalf("attempt %d: rewinds %v after %v", attempt, rd.Rewinds, wait)
		}
	}
	m.Step(r.batch(t, 0, 0, 6, 0), reader(0))
	if rd := m.Ready(); rd.Failures != 0 || rd.Applied != 1 {
		t.Fatalf("after the skip: %+v", rd)
	}
	if got, want := view(t, m, "counts"), map[string]int64{"a": 1, "b": 2, "c": 2}; !maps.Equal(got, want) || m.Fragment().Events() != 5 {
		t.Fatalf("counts %v (%d events), want %v without the skipped event", got, m.Fragment().Events(), want)
	}
}

func TestMachineRewindAskedAgain(t *testing.T) {
	const timeout = 3 * time.Second
	r := countRig(t, newStore(t), "reask", 1, 1)
	r.push(0, "a", "b", "c", "d")
	m := r.machine(0, recovery.MachineConfig{RewindTimeout: timeout})
	t0 := r.now
	m.Step(r.batch(t, 0, 2, 4, 0), reader(0))
	if got, want := rewinds(m.Ready().Rewinds), []rewind{{part(sourceCh, 0), 0, "reader-0"}}; !slices.Equal(got, want) {
		t.Fatalf("rewinds %v, want %v", got, want)
	}
	for _, s := range []struct {
		after  time.Duration
		reask  bool
		detail string
	}{
		{timeout - time.Nanosecond, false, "before the timeout"},
		{timeout, true, "at the timeout"},
		{timeout + time.Second, false, "a second after asking again"},
		{2 * timeout, true, "a timeout after asking again"},
	} {
		m.Tick(t0.Add(s.after))
		rd := m.Ready()
		var want []rewind
		if s.reask {
			want = []rewind{{part(sourceCh, 0), 0, ""}} // of whoever has the partition now
		}
		if got := rewinds(rd.Rewinds); (rd.Reasked == 1) != s.reask || (len(got) > 0 || len(want) > 0) && !slices.Equal(got, want) {
			t.Fatalf("%s: reasked %d, rewinds %v, want %v", s.detail, rd.Reasked, got, want)
		}
	}
	m.Step(r.batch(t, 0, 0, 4, 0), reader(0))
	m.Ready()
	m.Tick(t0.Add(time.Hour))
	if rd := m.Ready(); rd.Reasked != 0 || len(rd.Rewinds) != 0 {
		t.Fatalf("asked again after the replay: %+v", rd)
	}
}

func TestMachineHandoffWait(t *testing.T) {
	for _, c := range []struct {
		name string
		end  func(m *recovery.Machine, newer recovery.Restored)
		from int64 // where partition 0 replays from
	}{
		{"the wait ends", func(m *recovery.Machine, _ recovery.Restored) { m.StopWaiting() }, 3},
		{"the hand-off comes", func(m *recovery.Machine, newer recovery.Restored) { m.Restored(newer, true) }, 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := countRig(t, newStore(t), "handoff", 2, 1)
			r.push(0, "a", "b", "c", "a", "b", "c")
			r.push(1, "x")
			old := r.machine(0, recovery.MachineConfig{})
			old.Step(r.batch(t, 0, 0, 3, 0), reader(0))
			r.checkpoint(t, old, 0)
			local := r.restore(t, 0)
			old.Step(r.batch(t, 0, 3, 5, 0), reader(0))
			r.checkpoint(t, old, 0)
			newer := r.restore(t, 0)

			m := recovery.NewMachine(r.plan, 0, local, 0, true, recovery.MachineConfig{})
			m.SetNow(r.now)
			m.Start()
			if rd := m.Ready(); len(rd.Sends) != 0 || len(rd.Rewinds) != 0 {
				t.Fatalf("a waiting fragment started: %+v", rd)
			}
			if !m.Waiting() || m.Serving() == nil || !strings.Contains(m.Serving().Error(), "handed over") {
				t.Fatalf("waiting %v, serving %v", m.Waiting(), m.Serving())
			}
			// Partition 0's reader moved while the fragment waited: the
			// new one sent what it read, which is dropped and acknowledged.
			moved := recovery.From{Key: "reader-0 of the next placement"}
			m.Step(r.batch(t, 0, 3, 6, 0), moved)
			if rd := m.Ready(); rd.Gaps != 1 || rd.Applied != 0 || len(rd.Acks) != 1 || len(rd.Rewinds) != 0 {
				t.Fatalf("input while waiting: %+v", rd)
			}
			if m.Vector().End(part(sourceCh, 0)) != 3 || m.Fragment().Events() != 3 {
				t.Fatal("input applied while waiting")
			}
			if cp, err := m.Checkpoint(); cp != nil || err != nil {
				t.Fatalf("checkpoint while waiting: %v %v", cp, err)
			}
			m.Tick(r.now.Add(time.Hour))
			if rd := m.Ready(); rd.Reasked != 0 || len(rd.Rewinds) != 0 {
				t.Fatalf("a waiting fragment asked for input: %+v", rd)
			}

			// The replay asks whoever reads each partition, and the new
			// reader too: it took the acknowledgement as delivery.
			c.end(m, newer)
			want := []rewind{{part(sourceCh, 0), c.from, ""}, {part(sourceCh, 0), c.from, moved.Key}, {part(sourceCh, 1), 0, ""}}
			if got := rewinds(m.Ready().Rewinds); !slices.Equal(got, want) {
				t.Fatalf("replay %v, want %v", got, want)
			}
			if m.Waiting() || m.Serving() != nil {
				t.Fatalf("still waiting: %v", m.Serving())
			}
			m.Step(r.batch(t, 0, c.from, 6, 0), reader(0))
			m.Step(r.batch(t, 1, 0, 1, 0), reader(1))
			if rd := m.Ready(); rd.Applied != 2 {
				t.Fatalf("after the wait: %+v", rd)
			}
			if got, want := view(t, m, "counts"), map[string]int64{"a": 2, "b": 2, "c": 2, "x": 1}; !maps.Equal(got, want) {
				t.Fatalf("counts %v, want %v", got, want)
			}
			m.StopWaiting()
			if rd := m.Ready(); len(rd.Rewinds) != 0 {
				t.Fatalf("StopWaiting when not waiting asked again: %v", rd.Rewinds)
			}
		})
	}
}

func TestMachineCheckpoints(t *testing.T) {
	r := countRig(t, newStore(t), "checkpoints", 1, 1)
	r.push(0, "a", "b", "c")
	m := r.machine(0, recovery.MachineConfig{})
	m.Step(r.batch(t, 0, 0, 2, 0), reader(0))
	cp := r.write(t, m, 0)
	if cp.Manifest.Epoch != 1 || !m.Writing() || m.Epoch() != 1 {
		t.Fatalf("epoch %d, writing %v", cp.Manifest.Epoch, m.Writing())
	}
	if again, err := m.Checkpoint(); again != nil || err != nil {
		t.Fatalf("a second checkpoint while one is written: %v %v", again, err)
	}
	m.Durable(cp.Manifest.Offsets, nil)
	if rd := m.Ready(); m.Writing() || len(rd.Trims) != 0 {
		t.Fatalf("writing %v, trims %v: a source channel is not trimmed", m.Writing(), rd.Trims)
	}

	m.Step(r.batch(t, 0, 2, 3, 0), reader(0))
	cp = r.write(t, m, 0)
	if cp.Manifest.Epoch != 2 || cp.Manifest.Offsets[part(sourceCh, 0)] != 3 {
		t.Fatalf("manifest %+v", cp.Manifest)
	}
	failed := errors.New("disk full")
	m.Durable(nil, failed)
	if !errors.Is(m.Broken(), failed) || m.Writing() {
		t.Fatalf("broken %v, writing %v", m.Broken(), m.Writing())
	}
	if cp, err := m.Checkpoint(); cp != nil || err != nil {
		t.Fatalf("a checkpoint after a failed one: %v %v", cp, err)
	}
	if m.Serving() != nil {
		t.Fatalf("a fragment with broken checkpoints stopped serving: %v", m.Serving())
	}
}

// exchangeWorld is exchangeRig's flow on two fragments, with 25 events:
// at offsets 0–11 three keys of fragment 0, four times each, at 12–23
// three of fragment 1, at 24 fragment 0's first key a fifth time. Each
// count update (a key and the count it reached) goes to the fragment that
// owns the count reached.
func exchangeWorld(t *testing.T, cfg recovery.MachineConfig) (*rig, [2]*recovery.Machine) {
	t.Helper()
	r := exchangeRig(t, newStore(t), 2)
	for f := range 2 {
		for _, k := range keysOf(f, 2, 3) {
			r.push(0, k, k, k, k)
		}
	}
	r.push(0, keysOf(0, 2, 1)[0])
	var ms [2]*recovery.Machine
	for f := range ms {
		ms[f] = r.machine(f, cfg)
	}
	return r, ms
}

// sent is what sends of fragment from carry, per destination: the records
// and the End of the last batch. The batches of each destination must
// follow on from each other, from prev (nil: from 0).
func sent(t *testing.T, sends []recovery.Send, from int, prev map[int]int64) (count, end map[int]int64) {
	t.Helper()
	count, end = map[int]int64{}, maps.Clone(prev)
	if end == nil {
		end = map[int]int64{}
	}
	for _, s := range sends {
		if s.Batch.Source != exchangeCh || s.Batch.Partition != from {
			t.Fatalf("a send of fragment %d on channel %d, partition %d", from, s.Batch.Source, s.Batch.Partition)
		}
		if s.Batch.PrevEnd != end[s.Dest] {
			t.Fatalf("sends to %d: [%d, %d) after %d", s.Dest, s.Batch.PrevEnd, s.Batch.End, end[s.Dest])
		}
		count[s.Dest] += int64(s.Batch.Count)
		end[s.Dest] = s.Batch.End
	}
	return count, end
}

// deliver steps every send of fragment from into its destination.
func deliver(ms [2]*recovery.Machine, from int, sends []recovery.Send) {
	for _, s := range sends {
		ms[s.Dest].Step(s.Batch, recovery.From{Key: fmt.Sprintf("fragment-%d", from), Ref: from, Seq: s.Seq})
	}
}

func TestMachineExchangeSendsAfterDurable(t *testing.T) {
	r, ms := exchangeWorld(t, recovery.MachineConfig{})
	m0 := ms[0]
	m0.Step(r.batch(t, 0, 0, 12, 0), reader(0)) // 12 updates
	if rd := m0.Ready(); len(rd.Sends) != 0 || m0.Fragment().Retained() != 12 {
		t.Fatalf("%d outputs sent before a checkpoint covers them (%d retained)", len(rd.Sends), m0.Fragment().Retained())
	}
	cp := r.write(t, m0, 0)
	m0.Step(r.batch(t, 0, 12, 25, 0), reader(0)) // the 13th update
	if rd := m0.Ready(); len(rd.Sends) != 0 {
		t.Fatalf("%d outputs sent while their checkpoint is written", len(rd.Sends))
	}
	m0.Durable(cp.Manifest.Offsets, nil)
	first := m0.Ready().Sends
	count, end := sent(t, first, 0, nil)
	if count[0]+count[1] != 12 || end[0] != 12 || end[1] != 12 || count[0] == 0 || count[1] == 0 {
		t.Fatalf("sends %v up to %v: want the 12 updates the checkpoint covers, for both fragments", count, end)
	}
	for i, s := range first {
		if s.Seq != uint64(i+1) {
			t.Fatalf("send %d numbered %d", i, s.Seq)
		}
	}
	deliver(ms, 0, first)
	second := r.checkpoint(t, m0, 0).Sends
	count, end = sent(t, second, 0, end)
	if len(second) != 1 || count[second[0].Dest] != 1 || end[second[0].Dest] != 13 {
		t.Fatalf("sends %v up to %v after the second checkpoint, want the 13th update", count, end)
	}
	deliver(ms, 0, second)
	reached := view(t, ms[0], "reached")
	maps.Copy(reached, view(t, ms[1], "reached"))
	if want := map[string]int64{"1": 3, "2": 3, "3": 3, "4": 3, "5": 1}; !maps.Equal(reached, want) {
		t.Fatalf("reached %v, want %v", reached, want)
	}
	for f, m := range ms {
		if e := m.Vector().End(part(exchangeCh, 0)); e != end[f] {
			t.Fatalf("fragment %d is at %d of fragment 0's outputs, want %d", f, e, end[f])
		}
	}
}

func trims(ts []recovery.Trim) map[recovery.PartitionID]int64 {
	out := map[recovery.PartitionID]int64{}
	for _, t := range ts {
		out[t.Part] = t.Upto
	}
	return out
}

func TestMachineExchangeTrims(t *testing.T) {
	for _, replicated := range []bool{false, true} {
		t.Run(fmt.Sprintf("replicated=%v", replicated), func(t *testing.T) {
			r, ms := exchangeWorld(t, recovery.MachineConfig{Replicated: replicated})
			m0, m1 := ms[0], ms[1]
			m0.Step(r.batch(t, 0, 0, 12, 0), reader(0))
			m1.Step(r.batch(t, 0, 0, 25, 1), reader(0))
			rd := r.checkpoint(t, m0, 0)
			if len(rd.Trims) != 0 {
				t.Fatalf("trims %v of a source channel", rd.Trims)
			}
			if replicated {
				// A replicated fragment's outputs leave one checkpoint
				// later: its standby may restore the one before the newest.
				if len(rd.Sends) != 0 {
					t.Fatalf("%d batches sent at the first checkpoint", len(rd.Sends))
				}
				rd = r.checkpoint(t, m0, 0)
			}
			count, end := sent(t, rd.Sends, 0, nil)
			deliver(ms, 0, rd.Sends)

			// Fragment 1's checkpoints cover fragment 0's outputs, then its
			// own; a replicated fragment's trims lag one checkpoint behind.
			rd = r.checkpoint(t, m1, 1)
			want := map[recovery.PartitionID]int64{part(exchangeCh, 0): end[1]}
			if replicated {
				want = map[recovery.PartitionID]int64{}
			}
			if got := trims(rd.Trims); !maps.Equal(got, want) {
				t.Fatalf("first checkpoint's trims %v, want %v", got, want)
			}
			_, own := sent(t, rd.Sends, 1, nil)
			deliver(ms, 1, rd.Sends)
			rd = r.checkpoint(t, m1, 1)
			want = map[recovery.PartitionID]int64{part(exchangeCh, 0): end[1], part(exchangeCh, 1): own[1]}
			if replicated {
				want = map[recovery.PartitionID]int64{part(exchangeCh, 0): end[1]}
				_, own = sent(t, rd.Sends, 1, nil) // its own outputs leave now
			}
			if got := trims(rd.Trims); !maps.Equal(got, want) || own[1] == 0 {
				t.Fatalf("second checkpoint's trims %v, want %v", got, want)
			}

			before := m0.Fragment().Retained()
			m0.Trim(exchangeCh, 1, end[1])
			if got := before - m0.Fragment().Retained(); int64(got) != count[1] {
				t.Fatalf("the trim forgot %d records, want the %d sent to fragment 1", got, count[1])
			}
			m0.Trim(exchangeCh, 1, 1)
			if got := before - m0.Fragment().Retained(); int64(got) != count[1] {
				t.Fatal("an older trim changed what is retained")
			}
		})
	}
}

func TestMachineResend(t *testing.T) {
	r, ms := exchangeWorld(t, recovery.MachineConfig{Backoff: -1})
	m0 := ms[0]
	m0.Step(r.batch(t, 0, 0, 12, 0), reader(0))
	rd := r.checkpoint(t, m0, 0)
	count, end := sent(t, rd.Sends, 0, nil)
	last := rd.Sends[len(rd.Sends)-1].Seq

	for _, c := range []struct {
		name      string
		from      int64
		wantCount int64
	}{
		{"behind: the records again", 0, count[1]},
		{"not behind: an empty batch at from", end[1], 0},
	} {
		m0.Resend(exchangeCh, 1, c.from)
		rd := m0.Ready()
		if len(rd.Sends) != 1 {
			t.Fatalf("%s: %d sends", c.name, len(rd.Sends))
		}
		s := rd.Sends[0]
		last++
		if s.Dest != 1 || s.Seq != last || s.Batch.Source != exchangeCh || s.Batch.Partition != 0 ||
			s.Batch.PrevEnd != c.from || s.Batch.End != end[1] || int64(s.Batch.Count) != c.wantCount {
			t.Fatalf("%s: send to %d #%d [%d, %d) of %d records, want #%d [%d, %d) of %d", c.name, s.Dest, s.Seq,
				s.Batch.PrevEnd, s.Batch.End, s.Batch.Count, last, c.from, end[1], c.wantCount)
		}
		// A fragment 1 restored at from takes the resend as it comes.
		restored := recovery.Restored{Fragment: r.plan.NewFragment(1)}
		restored.Vector.Set(part(exchangeCh, 0), c.from)
		m1 := recovery.NewMachine(r.plan, 1, restored, 0, false, recovery.MachineConfig{})
		m1.Step(s.Batch, recovery.From{Key: "fragment-0", Ref: 0, Seq: s.Seq})
		if rd := m1.Ready(); rd.Applied != 1 || m1.Vector().End(part(exchangeCh, 0)) != end[1] {
			t.Fatalf("%s: the resend was not applied: %+v", c.name, rd)
		}
	}

	// A fragment that failed answers nothing until it is restored.
	r.in.Push(0, ev{Key: keysOf(0, 2, 1)[0], ID: 25, Fail: poison})
	m0.Step(r.batch(t, 0, 12, 26, 0), reader(0))
	if rd := m0.Ready(); !m0.Down() || !rd.Restore {
		t.Fatalf("down %v, %+v", m0.Down(), rd)
	}
	m0.Resend(exchangeCh, 1, 0)
	if rd := m0.Ready(); len(rd.Sends) != 0 {
		t.Fatalf("a failed fragment resent %d batches", len(rd.Sends))
	}
	m0.Restored(r.restore(t, 0), false)
	m0.Ready()
	m0.Resend(exchangeCh, 1, 0)
	if rd := m0.Ready(); len(rd.Sends) != 1 || int64(rd.Sends[0].Batch.Count) != count[1] {
		t.Fatalf("the restored fragment resent %+v", rd.Sends)
	}
}

func TestMachineMaxRetained(t *testing.T) {
	r, ms := exchangeWorld(t, recovery.MachineConfig{MaxRetained: 1})
	m0 := ms[0]
	m0.Step(r.batch(t, 0, 0, 6, 0), recovery.From{Key: "first"})
	m0.Step(r.batch(t, 0, 6, 12, 0), recovery.From{Key: "second"})
	if rd := m0.Ready(); len(rd.Acks) != 0 || rd.Applied != 2 {
		t.Fatalf("acks %v with %d outputs retained, over the limit", keysOfFroms(rd.Acks), m0.Fragment().Retained())
	}
	m0.Step(r.batch(t, 0, 20, 25, 0), recovery.From{Key: "gap"})
	if got := keysOfFroms(m0.Ready().Acks); !slices.Equal(got, []string{"gap"}) {
		t.Fatalf("acks %v: a dropped batch is acknowledged at once", got)
	}
	rd := r.checkpoint(t, m0, 0)
	count, end := sent(t, rd.Sends, 0, nil)
	if len(rd.Acks) != 0 || count[0] < 2 || count[1] < 2 {
		t.Fatalf("acks %v at the checkpoint; sent %v (each fragment needs two for this test)", keysOfFroms(rd.Acks), count)
	}
	m0.Trim(exchangeCh, 0, end[0])
	if got := keysOfFroms(m0.Ready().Acks); len(got) != 0 || m0.Fragment().Retained() <= 1 {
		t.Fatalf("acks %v with %d retained", got, m0.Fragment().Retained())
	}
	m0.Trim(exchangeCh, 1, end[1])
	if got := keysOfFroms(m0.Ready().Acks); !slices.Equal(got, []string{"first", "second"}) || m0.Fragment().Retained() != 0 {
		t.Fatalf("acks %v once every output is covered (%d retained)", got, m0.Fragment().Retained())
	}
}

// walk is a fragment's machine under a random sequence of steps: batches
// read in random sizes, delivered in random order, duplicated and lost;
// rewind requests lost; checkpoints and their durable answers; crashes and
// hand-offs; ticks of the clock. Events marked to fail make it restore
// and back off, and poison ones are dead-lettered.
type walk struct {
	r       *rig
	m       *recovery.Machine
	cfg     recovery.MachineConfig
	readers []*flowcore.Reader
	events  [][]ev   // per partition, the input
	net     []flight // batches on their way
	writing *recovery.Checkpoint
	now     time.Time
	dead    map[flows.EventID]bool
	lossy   bool     // rewind requests may be lost
	trace   []string // the actions so far, for failures
	stats   map[string]int
}

type flight struct {
	b        *flowcore.Batch
	p        int
	from, to int64
}

func (w *walk) carry(t *rapid.T) {
	for {
		rd := w.m.Ready()
		w.stats["applied"] += rd.Applied - rd.Duplicates
		w.stats["duplicates"] += rd.Duplicates
		w.stats["gaps"] += rd.Gaps
		w.stats["failures"] += rd.Failures
		w.stats["reasked"] += rd.Reasked
		for _, rw := range rd.Rewinds {
			if w.lossy && rapid.IntRange(0, 3).Draw(t, "lose rewind") == 0 {
				continue
			}
			rd := w.readers[rw.Part.Partition]
			if rw.To < rd.Position() {
				if err := rd.Rewind(rw.To); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, dl := range rd.DeadLetters {
			w.dead[flows.EventID{Source: sourceCh, Partition: dl.Partition, Offset: dl.Offset}] = true
		}
		if len(rd.Errors) > 0 {
			t.Fatal(rd.Errors)
		}
		if !rd.Restore {
			return
		}
		w.stats["restores"]++
		w.m.Restored(w.r.restore(t, 0), false)
	}
}

func (w *walk) step(t *rapid.T, f flight) {
	w.m.SetNow(w.now)
	w.m.Step(f.b, reader(f.p))
	w.carry(t)
}

// expected is the plain count of the input up to ends, without the
// poison events.
func (w *walk) expected(ends func(p int) int64) map[string]int64 {
	want := map[string]int64{}
	for p, evs := range w.events {
		for _, e := range evs[:ends(p)] {
			if e.Fail != poison {
				want[e.Key]++
			}
		}
	}
	return want
}

// check: a fragment that is not down holds exactly the count of the input
// its vector covers.
func (w *walk) check(t *rapid.T) {
	if w.m.Down() {
		if w.m.Serving() == nil {
			t.Fatal("a failed fragment serves")
		}
		return
	}
	want := w.expected(func(p int) int64 { return w.m.Vector().End(part(sourceCh, p)) })
	if got := view(t, w.m, "counts"); !maps.Equal(got, want) {
		t.Fatalf("counts %v, want %v for the input up to %v, after %v", got, want, w.m.Vector().Snapshot(), w.trace)
	}
	var n int64
	for _, c := range want {
		n += c
	}
	if w.m.Fragment().Events() != n {
		t.Fatalf("%d records applied, want %d, after %v", w.m.Fragment().Events(), n, w.trace)
	}
}

// actions are the steps of a walk.
func (w *walk) actions() []struct {
	name string
	do   func(*rapid.T)
} {
	pick := func(t *rapid.T) (int, bool) {
		if len(w.net) == 0 {
			return 0, false
		}
		return rapid.IntRange(0, len(w.net)-1).Draw(t, "batch"), true
	}
	return []struct {
		name string
		do   func(*rapid.T)
	}{
		{"deliver", func(t *rapid.T) {
			if i, ok := pick(t); ok {
				f := w.net[i]
				w.net = slices.Delete(w.net, i, i+1)
				w.step(t, f)
			}
		}},
		{"read", func(t *rapid.T) {
			p := rapid.IntRange(0, len(w.readers)-1).Draw(t, "partition")
			rd := w.readers[p]
			if _, err := rd.Poll(context.Background(), rapid.IntRange(0, 6).Draw(t, "events")); err != nil && !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			b := rd.Take(0)
			w.net = append(w.net, flight{b, p, b.PrevEnd, b.End})
		}},
		{"tick", func(t *rapid.T) {
			w.now = w.now.Add(time.Duration(rapid.IntRange(0, 2000).Draw(t, "ms")) * time.Millisecond)
			w.m.Tick(w.now)
			w.carry(t)
		}},
		{"duplicate", func(t *rapid.T) {
			if i, ok := pick(t); ok {
				f := w.net[i]
				f.b = w.r.batch(t, f.p, f.from, f.to, 0)
				w.net = append(w.net, f)
			}
		}},
		{"lose", func(t *rapid.T) {
			if i, ok := pick(t); ok {
				w.net[i].b.Release()
				w.net = slices.Delete(w.net, i, i+1)
			}
		}},
		{"checkpoint", func(t *rapid.T) {
			if w.writing != nil {
				return
			}
			w.m.SetNow(w.now)
			cp, err := w.m.Checkpoint()
			if err != nil {
				t.Fatal(err)
			}
			if cp == nil {
				return // down or waiting
			}
			if _, err := w.r.store.Write(w.r.plan.Name(), 0, cp); err != nil {
				t.Fatal(err)
			}
			w.writing = cp
		}},
		{"durable", func(t *rapid.T) {
			if w.writing != nil {
				w.m.Durable(w.writing.Manifest.Offsets, nil)
				w.writing = nil
				w.carry(t)
			}
		}},
		{"crash", func(t *rapid.T) {
			// A new process: the machine from the last checkpoint in the
			// store; the answer for the one being written is lost with
			// the old one.
			w.stats["crashes"]++
			w.m = recovery.NewMachine(w.r.plan, 0, w.r.restore(t, 0), 0, false, w.cfg)
			w.writing = nil
			w.m.SetNow(w.now)
			w.m.Replay()
			w.m.Start()
			w.carry(t)
		}},
		{"handoff", func(t *rapid.T) {
			if w.writing != nil {
				return // a hand-off waits for the checkpoint being written
			}
			w.stats["handoffs"]++
			w.m.SetNow(w.now)
			w.m.Restored(w.r.restore(t, 0), true)
			w.m.Start()
			w.carry(t)
		}},
	}
}

// finish delivers what is in flight, then everything in order until the
// fragment has applied the whole input.
func (w *walk) finish(t *rapid.T) {
	w.lossy = false
	w.stats = map[string]int{} // counted apart from the walk's
	w.trace = append(w.trace, "finish")
	for _, f := range w.net {
		w.step(t, f)
	}
	w.net = nil
	if w.writing != nil {
		w.m.Durable(w.writing.Manifest.Offsets, nil)
		w.writing = nil
		w.carry(t)
	}
	for round := 0; ; round++ {
		done := !w.m.Down() && !w.m.Holding() && !w.m.Waiting()
		for p, evs := range w.events {
			done = done && w.m.Vector().End(part(sourceCh, p)) == int64(len(evs))
		}
		if done {
			return
		}
		if round == 100 {
			t.Fatalf("the input is not applied after %d rounds: vector %v, down %v, holding %v, after %v",
				round, w.m.Vector().Snapshot(), w.m.Down(), w.m.Holding(), w.trace)
		}
		w.now = w.now.Add(time.Minute) // past any backoff and rewind timeout
		w.m.Tick(w.now)
		w.carry(t)
		for p, rd := range w.readers {
			for {
				n, err := rd.Poll(context.Background(), 1000)
				if err != nil && !errors.Is(err, io.EOF) {
					t.Fatal(err)
				}
				w.step(t, flight{b: rd.Take(0), p: p})
				if n == 0 {
					break
				}
			}
		}
	}
}

func TestMachineRecoversExactly(t *testing.T) {
	store := newStore(t)
	runs := 0
	total := map[string]int{}
	rapid.Check(t, func(t *rapid.T) {
		runs++
		r := countRig(t, store, fmt.Sprintf("walk%d", runs), 2, 1)
		w := &walk{r: r, now: r.now, dead: map[flows.EventID]bool{}, lossy: true, stats: total,
			cfg: recovery.MachineConfig{MaxAttempts: 3, Backoff: 50 * time.Millisecond, RewindTimeout: time.Second}}
		poisoned := map[flows.EventID]bool{}
		for p := range 2 {
			var evs []ev
			for off := range rapid.IntRange(0, 25).Draw(t, "events") {
				e := ev{Key: rapid.SampledFrom([]string{"a", "b", "c", "d"}).Draw(t, "key"), ID: r.ids}
				r.ids++
				switch rapid.IntRange(0, 19).Draw(t, "fail") {
				case 0:
					e.Fail = 1
				case 1:
					e.Fail = 2 // below MaxAttempts: retried, never skipped
				case 2:
					e.Fail = poison
					poisoned[flows.EventID{Source: sourceCh, Partition: p, Offset: int64(off)}] = true
				}
				evs = append(evs, e)
			}
			r.in.Push(p, evs...)
			w.events = append(w.events, evs)
			rd, err := r.plan.OpenReader(sourceCh, p, 0, 64)
			if err != nil {
				t.Fatal(err)
			}
			w.readers = append(w.readers, rd)
		}
		r.in.Close()
		w.m = r.machine(0, w.cfg)
		actions := w.actions()
		// Batches are read and delivered three times as often as the rest.
		weighted := []int{0, 1, 0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8}
		for range rapid.IntRange(0, 200).Draw(t, "steps") {
			a := actions[weighted[rapid.IntRange(0, len(weighted)-1).Draw(t, "action")]]
			w.trace = append(w.trace, a.name)
			a.do(t)
			w.check(t)
		}
		w.finish(t)
		w.check(t)
		if !maps.Equal(w.dead, poisoned) {
			t.Fatalf("dead letters %v, want the poison events %v", w.dead, poisoned)
		}
	})
	t.Logf("over %d runs: %v", runs, total)
}

// A fragment on a node that was paused (SIGSTOP) long enough for another
// node to take it over and then went on: at Resumed it releases nothing it
// holds — not the outputs of the checkpoint being written when it stopped
// — applies nothing, restores its own last durable checkpoint and waits
// for the hand-off of the node that owned it meanwhile, from whose state
// it goes on.
func TestMachineResumedDropsStaleState(t *testing.T) {
	for _, writing := range []bool{false, true} {
		t.Run(fmt.Sprintf("writing=%v", writing), func(t *testing.T) {
			r, ms := exchangeWorld(t, recovery.MachineConfig{})
			m := ms[0]
			m.Step(r.batch(t, 0, 0, 6, 0), reader(0))
			r.checkpoint(t, m, 0) // durable: the standby has it too
			standby := newStore(t)
			own := r.restore(t, 0)
			if _, err := standby.Write(r.plan.Name(), 0, mustFull(t, r.store, r.plan.Name(), 0)); err != nil {
				t.Fatal(err)
			}
			m.Step(r.batch(t, 0, 6, 12, 0), reader(0)) // 6 more count updates, not yet released
			var cp *recovery.Checkpoint
			if writing {
				cp = r.write(t, m, 0) // with the writer when the node stopped
			}

			// Meanwhile the standby took the fragment over and went on to 25.
			interim := recovery.NewMachine(r.plan, 0, restoreFrom(t, standby, r.plan), 0, false, recovery.MachineConfig{})
			interim.SetNow(r.now)
			interim.Step(r.batch(t, 0, 6, 25, 0), reader(0))
			cpI, err := interim.Checkpoint()
			if err != nil || cpI == nil {
				t.Fatalf("interim checkpoint: %v %v", cpI, err)
			}
			if _, err := standby.Write(r.plan.Name(), 0, cpI); err != nil {
				t.Fatal(err)
			}
			handedOff := restoreFrom(t, standby, r.plan)

			m.Resumed()
			rd := m.Ready()
			if rd.Restore == writing || len(rd.Sends) != 0 || !m.Down() || !m.Resuming() || m.Serving() == nil {
				t.Fatalf("at Resumed (writing %v): restore %v, %d sends, down %v, serving %v", writing, rd.Restore, len(rd.Sends), m.Down(), m.Serving())
			}
			m.Step(r.batch(t, 0, 12, 25, 0), reader(0))
			m.Tick(r.now.Add(time.Hour))
			if rd := m.Ready(); rd.Applied != 0 || len(rd.Sends) != 0 || len(rd.Acks) != 1 {
				t.Fatalf("input after Resumed: %+v", rd)
			}
			if cp, err := m.Checkpoint(); cp != nil || err != nil {
				t.Fatalf("a checkpoint after Resumed: %v %v", cp, err)
			}
			if writing {
				m.Durable(cp.Manifest.Offsets, nil)
				rd := m.Ready()
				if len(rd.Sends) != 0 {
					t.Fatalf("the checkpoint written across the pause released %d batches of stale outputs", len(rd.Sends))
				}
				if !rd.Restore {
					t.Fatal("no restore once the checkpoint being written is durable")
				}
				own = r.restore(t, 0)
			}
			m.Restored(own, false)
			if rd := m.Ready(); len(rd.Rewinds) != 0 || len(rd.Sends) != 0 {
				t.Fatalf("a resumed fragment asked for input or sent before its hand-off: %+v", rd)
			}
			if !m.Waiting() || m.Down() || m.Resuming() || m.Serving() == nil {
				t.Fatalf("after the restore: waiting %v, down %v, resuming %v", m.Waiting(), m.Down(), m.Resuming())
			}
			m.Step(r.batch(t, 0, 12, 25, 0), reader(0))
			if rd := m.Ready(); rd.Applied != 0 {
				t.Fatalf("input applied while waiting for the hand-off: %+v", rd)
			}

			m.Restored(handedOff, true)
			want := []rewind{{part(sourceCh, 0), 25, ""}, {part(sourceCh, 0), 25, "reader-0"}, {part(exchangeCh, 0), 0, ""}, {part(exchangeCh, 1), 0, ""}}
			if got := rewinds(m.Ready().Rewinds); !slices.Equal(got, want) {
				t.Fatalf("replay after the hand-off %v, want %v", got, want)
			}
			if m.Waiting() || m.Serving() != nil || m.Vector().End(part(sourceCh, 0)) != 25 {
				t.Fatalf("after the hand-off: waiting %v, serving %v, at %d", m.Waiting(), m.Serving(), m.Vector().End(part(sourceCh, 0)))
			}
		})
	}
}

func mustFull(t *testing.T, s *recovery.Store, flow string, frag int) *recovery.Checkpoint {
	t.Helper()
	cp, ok, err := s.Full(flow, frag)
	if err != nil || !ok {
		t.Fatalf("full checkpoint of %d: %v %v", frag, ok, err)
	}
	return cp
}

func restoreFrom(t *testing.T, s *recovery.Store, plan *flowcore.Plan) recovery.Restored {
	t.Helper()
	rs, err := recovery.Restore(s, plan, 0)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}
