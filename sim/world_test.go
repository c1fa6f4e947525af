package sim_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/shard"
	"github.com/tessera-streams/tessera/sim"
	"github.com/tessera-streams/tessera/splice"
)

// scheduleWorld is a flow on a simulated cluster that runSchedule drives
// through a fault schedule, and what the flow should compute.
type scheduleWorld interface {
	// sim is the cluster the flow runs on.
	sim() *sim.Cluster
	// push appends n events to the input.
	push(n int)
	// end ends a bounded input: its last events arrive and its partitions
	// close. It reports whether it did (false: the input goes on).
	end() bool
	// last is what arrives once the faults stop, before settle.
	last()
	// settle runs until the answer is exact, for at most limit, and
	// returns what is still wrong then.
	settle(limit time.Duration) []string
}

// worldMaker makes a world of the given shape (stages: 1 or 2, which a
// world may ignore) on a cluster of cfg.
type worldMaker func(cfg sim.Config, fragments, parts, stages int) (scheduleWorld, error)

// newCountWorld is the world of counts and counts of counts.
func newCountWorld(cfg sim.Config, fragments, parts, stages int) (scheduleWorld, error) {
	return newWorld(cfg, fragments, parts, stages, false)
}

// newKeyedCountWorld is the count world over a source partitioned by the
// key (flows.WithKeyedPartitions): each event goes to its key's partition,
// and the fragments are rounded up to a multiple of the partitions, so
// that the placement puts each partition's reader beside its keys'
// fragments, moving them together.
func newKeyedCountWorld(cfg sim.Config, fragments, parts, stages int) (scheduleWorld, error) {
	return newWorld(cfg, (fragments+parts-1)/parts*parts, parts, stages, true)
}

func (w *world) sim() *sim.Cluster { return w.c }
func (w *world) end() bool         { return false } // unbounded
func (w *world) last()             { w.push(100) }

// world is a two-stage flow on a simulated cluster, and what it should
// compute: events are counted per key (the view "counts"); every count's
// update goes to a sink that delivers once a checkpoint covers it, keyed
// by output id; the updates are keyed again by group (an exchange) and
// counted (the view "groups").
type world struct {
	c      *sim.Cluster
	stages int // 2: the groups stage after an exchange; 1: counts only
	in     *flowstest.Input[int64]
	parts  int
	keyed  bool // each event in its key's partition (newKeyedCountWorld)
	pushed int
	at     [][2]int64 // each event's partition and offset, in push order
	ends   []int64    // each partition's next offset
	sink   map[flows.OutputID]flows.KV[string, int64]
	// contradictions are outputs delivered twice with different values.
	contradictions []string
	// want caches the expected views for want[2] events.
	want struct {
		counts, groups map[string]int64
		n              int
	}
}

const (
	worldKeys   = 24
	worldGroups = 5
)

func keyOf(v int64) string         { return fmt.Sprintf("k%02d", (v*7919)%worldKeys) }
func groupOf(key string) string    { return fmt.Sprintf("g%d", shard.String(key)%worldGroups) }
func partitionOf(i, parts int) int { return i % parts }

func newWorld(cfg sim.Config, fragments, parts, stages int, keyed bool) (*world, error) {
	w := &world{in: flowstest.NewInput[int64](parts), parts: parts, stages: stages, keyed: keyed, sink: map[flows.OutputID]flows.KV[string, int64]{}}
	f := flows.New("sim", flows.WithFragments(fragments))
	var opts []flows.SourceOption
	if keyed {
		opts = append(opts, flows.WithKeyedPartitions())
	}
	evs := flows.From(f, "events", w.in, opts...)
	counts := flows.Count(flows.KeyBy(evs, keyOf)).View("counts")
	upd := counts.Updates()
	flows.To(upd, flows.SinkFunc[flows.KV[string, int64]](func(out []flows.Output[flows.KV[string, int64]]) error {
		for _, o := range out {
			if had, ok := w.sink[o.ID]; ok && had != o.Value {
				w.contradictions = append(w.contradictions, fmt.Sprintf("%v: %v then %v", o.ID, had, o.Value))
			}
			w.sink[o.ID] = o.Value
		}
		return nil
	}), flows.OnCheckpoint())
	if stages > 1 {
		flows.Count(flows.KeyBy(upd, func(kv flows.KV[string, int64]) string { return groupOf(kv.Key) })).View("groups")
	}
	c, err := sim.New(f, cfg)
	if err != nil {
		return nil, err
	}
	w.c = c
	return w, nil
}

// push appends n events, spread over the partitions, or each in its
// key's partition in a keyed world.
func (w *world) push(n int) {
	for range n {
		p := partitionOf(w.pushed, w.parts)
		if w.keyed {
			p, _ = flows.KeyPartition(keyOf(int64(w.pushed)), w.parts)
		}
		w.in.Push(p, int64(w.pushed))
		if w.ends == nil {
			w.ends = make([]int64, w.parts)
		}
		w.at = append(w.at, [2]int64{int64(p), w.ends[p]})
		w.ends[p]++
		w.pushed++
	}
}

func (w *world) expected() (counts, groups map[string]int64) {
	if w.want.counts == nil || w.want.n != w.pushed {
		counts, groups = map[string]int64{}, map[string]int64{}
		for i := range w.pushed {
			k := keyOf(int64(i))
			counts[k]++
			groups[groupOf(k)]++
		}
		w.want.counts, w.want.groups, w.want.n = counts, groups, w.pushed
	}
	return w.want.counts, w.want.groups
}

func (w *world) view(name string) (map[string]int64, error) {
	r, err := w.c.Query(splice.Request{View: name, Op: splice.OpEntries, Query: splice.Query{Limit: 1 << 20}})
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, e := range r.Entries {
		v, ok := e.Value.(int64)
		if !ok {
			return nil, fmt.Errorf("view %s: %s holds %T", name, e.Key, e.Value)
		}
		out[e.Key] = v
	}
	return out, nil
}

// problems lists how the cluster differs from the exact answer: the views
// against a sequential count, the sink against one output per event.
func (w *world) problems() []string {
	var out []string
	if !w.c.Converged() {
		return append(out, "not converged:\n"+w.c.Placement())
	}
	wantCounts, wantGroups := w.expected()
	views := map[string]map[string]int64{"counts": wantCounts}
	if w.stages > 1 {
		views["groups"] = wantGroups
	}
	for _, name := range slices.Sorted(maps.Keys(views)) {
		want := views[name]
		got, err := w.view(name)
		if err != nil {
			out = append(out, fmt.Sprintf("view %s: %v", name, err))
			continue
		}
		if !maps.Equal(got, want) {
			out = append(out, fmt.Sprintf("view %s: %s", name, diff(got, want)))
		}
	}
	seen := map[[2]int64]int{}
	for id := range w.sink {
		seen[[2]int64{int64(id.Partition), id.Offset}]++
	}
	missing, twice := 0, 0
	for _, at := range w.at {
		switch seen[at] {
		case 0:
			missing++
		case 1:
		default:
			twice++
		}
	}
	if len(w.sink) != w.pushed || missing > 0 || twice > 0 {
		out = append(out, fmt.Sprintf("sink: %d outputs for %d events (%d events without one, %d with more than one id)", len(w.sink), w.pushed, missing, twice))
	}
	if n := len(w.contradictions); n > 0 {
		out = append(out, fmt.Sprintf("sink: %d outputs delivered again with another value, first %s", n, w.contradictions[0]))
	}
	if err := w.c.Err(); err != nil {
		out = append(out, fmt.Sprintf("errors: %v", err))
	}
	slices.Sort(out)
	return out
}

// settle heals nothing: it runs until the answer is exact, for at most
// limit, and returns what is still wrong then.
func (w *world) settle(limit time.Duration) []string {
	var last []string
	w.c.RunUntil(limit, 250*time.Millisecond, func() bool {
		last = w.problems()
		return len(last) == 0
	})
	return last
}

func diff(got, want map[string]int64) string {
	var d []string
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if got[k] != want[k] {
			d = append(d, fmt.Sprintf("%s=%d want %d", k, got[k], want[k]))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[k]; !ok {
			d = append(d, fmt.Sprintf("%s=%d unexpected", k, got[k]))
		}
	}
	if len(d) > 6 {
		d = append(d[:6], fmt.Sprintf("... %d more", len(d)-6))
	}
	return strings.Join(d, ", ")
}
