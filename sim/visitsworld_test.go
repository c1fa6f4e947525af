package sim_test

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/sim"
	"github.com/tessera-streams/tessera/splice"
)

// The visits flow: hits of users, dated, become visits, and the visits are
// keyed again into windows and counts.
//
//   - Hits are skewed: one hot user has about half of them, forty cold
//     users share the rest, and one hit in forty is a late one of a user
//     of its own, dated two to ten minutes behind its partition. A
//     partition's hits are in time order, or up to visitOutOfOrder minus a
//     millisecond out of it (drawn per world), so that no hit but the late
//     ones is ever behind the watermark.
//   - Stage 1 (Process in event-time order, WithStateTTL): a user's visit
//     closes visitGap after its last hit (an event-time timer) and is
//     emitted with its number since the user's state last expired
//     (visitTTL after its last hit).
//   - Stage 2, across exchanges: the visits of the users that are not
//     late ones, keyed by group, into tumbling windows of a minute; and
//     every visit, keyed by user, counted with a TTL (countTTL).
//   - Sinks keyed by OutputID record every output: the visits once a
//     checkpoint covers them and at once (a Process in event-time order
//     makes outputs that do not depend on how partitions interleave, so
//     an idempotent sink is exactly-once without OnCheckpoint too), the
//     window results, the windows' too-late visits (none) and the
//     counts' updates.
//
// Every time is a whole millisecond, the gap and TTLs are not, so that no
// hit, timer or expiry ever falls on another's time: what the flow
// computes does not hang on how the engine breaks ties. The late users
// have one hit each: whether a late hit meets an expired state or a
// watermark past its timer, its visit, its count and its absence from the
// windows are the same.
const (
	visitGap        = 4*time.Second + 500*time.Microsecond
	visitTTL        = time.Minute + 500*time.Microsecond
	countTTL        = 3*time.Minute + 250*time.Microsecond
	visitWindow     = time.Minute
	visitOutOfOrder = time.Second
	coldUsers       = 40
)

// hit is a page hit of a user at a time (unix ns, whole milliseconds).
type hit struct {
	User string
	At   int64
}

// visit is a user's visit: its number since the user's state last expired,
// its first and last hits, and how many hits it had.
type visit struct {
	User        string
	Ord         int
	Start, Last int64
	N           int
}

// visitState is the process function's state of a user.
type visitState struct {
	Ord, N      int
	Start, Last int64
	Open        bool
}

// visitSum is a window's aggregate of visits.
type visitSum struct{ Visits, Hits int }

func isLate(user string) bool { return strings.HasPrefix(user, "late") }

func groupOfUser(user string) string {
	if user == "hot" {
		return "hot"
	}
	var i int
	fmt.Sscanf(user, "c%d", &i)
	return fmt.Sprintf("cold%d", i%3)
}

// The user functions, which the flow and the reference share.

// onHit opens a visit or extends the open one.
func onHit(s visitState, had bool, h hit) visitState {
	if !had {
		s = visitState{}
	}
	if !s.Open {
		s = visitState{Ord: s.Ord + 1, Open: true, Start: h.At, Last: h.At}
	}
	s.N++
	s.Start, s.Last = min(s.Start, h.At), max(s.Last, h.At)
	return s
}

// closesAt is when the open visit of s closes.
func closesAt(s visitState) int64 { return s.Last + int64(visitGap) }

// closeVisit is the visit s holds, and the state once it closed.
func closeVisit(user string, s visitState) (visit, visitState) {
	v := visit{User: user, Ord: s.Ord, Start: s.Start, Last: s.Last, N: s.N}
	s.Open, s.N = false, 0
	return v, s
}

func addVisit(a visitSum, v visit) visitSum {
	a.Visits++
	a.Hits += v.N
	return a
}

var visitHandler = flows.Handler[string, hit, visitState, visit]{
	OnEvent: func(c *flows.Context[string, visitState, visit], h hit) {
		s, ok := c.State()
		if ok && s.Open {
			c.DeleteEventTimer(time.Unix(0, closesAt(s)))
		}
		s = onHit(s, ok, h)
		c.SetState(s)
		c.SetEventTimer(time.Unix(0, closesAt(s)))
	},
	OnTimer: func(c *flows.Context[string, visitState, visit], _ time.Time) {
		s, _ := c.State()
		v, s := closeVisit(c.Key(), s)
		c.Emit(v)
		c.SetState(s)
	},
}

func visitKey(v visit) string {
	return fmt.Sprintf("%s #%d %d-%d n=%d", v.User, v.Ord, v.Start, v.Last, v.N)
}

func windowKey(r flows.WindowResult[string, visitSum]) string {
	return fmt.Sprintf("%s [%d,%d) %v %d visits %d hits", r.Key, r.Start.UnixNano(), r.End.UnixNano(), r.Firing, r.Value.Visits, r.Value.Hits)
}

func countKey(kv flows.KV[string, int64]) string { return fmt.Sprintf("%s=%d", kv.Key, kv.Value) }

// recorder is a sink that keeps every output by id, and the ids delivered
// again with another value.
type recorder[T any] struct {
	name           string
	key            func(T) string
	got            map[flows.OutputID]string
	contradictions []string
	// refuse, if set, draws whether a write is refused (sim.ErrRefused):
	// none of it is kept.
	refuse   func() bool
	refusals int
}

func newRecorder[T any](name string, key func(T) string) *recorder[T] {
	return &recorder[T]{name: name, key: key, got: map[flows.OutputID]string{}}
}

func (r *recorder[T]) Write(out []flows.Output[T]) error {
	if r.refuse != nil && r.refuse() {
		r.refusals++
		return fmt.Errorf("%w: sink %s, %d outputs (refusal %d)", sim.ErrRefused, r.name, len(out), r.refusals)
	}
	for _, o := range out {
		v := r.key(o.Value)
		if had, ok := r.got[o.ID]; ok && had != v {
			r.contradictions = append(r.contradictions, fmt.Sprintf("%v: %s then %s", o.ID, had, v))
		}
		r.got[o.ID] = v
	}
	return nil
}

// contradicted reports the outputs delivered again with another value.
func (r *recorder[T]) contradicted() []string {
	if n := len(r.contradictions); n > 0 {
		return []string{fmt.Sprintf("sink %s: %d outputs delivered again with another value, first %s", r.name, n, r.contradictions[0])}
	}
	return nil
}

// problems compares the values delivered, one per id, with want (a
// multiset).
func (r *recorder[T]) problems(want []string) []string {
	out := r.contradicted()
	left := map[string]int{}
	for _, v := range want {
		left[v]++
	}
	var extra []string
	for _, id := range slices.SortedFunc(maps.Keys(r.got), func(a, b flows.OutputID) int { return strings.Compare(a.String(), b.String()) }) {
		v := r.got[id]
		if left[v] > 0 {
			left[v]--
			continue
		}
		extra = append(extra, fmt.Sprintf("%v: %s", id, v))
	}
	var missing []string
	for _, v := range slices.Sorted(maps.Keys(left)) {
		for range left[v] {
			missing = append(missing, v)
		}
	}
	if len(missing) > 0 || len(extra) > 0 {
		out = append(out, fmt.Sprintf("sink %s: %d outputs for %d expected; %d missing%s; %d unexpected%s",
			r.name, len(r.got), len(want), len(missing), firstFew(missing), len(extra), firstFew(extra)))
	}
	return out
}

func firstFew(xs []string) string {
	if len(xs) == 0 {
		return ""
	}
	if len(xs) > 3 {
		return fmt.Sprintf(" (%s, ...)", strings.Join(xs[:3], "; "))
	}
	return fmt.Sprintf(" (%s)", strings.Join(xs, "; "))
}

// visitsFlow is the visits flow over an input it fills, with its sinks.
type visitsFlow struct {
	f       *flows.Flow
	in      *flowstest.Input[hit]
	rng     *rand.Rand
	jitter  bool    // hits up to visitOutOfOrder - 1ms out of order
	keyed   bool    // each user's hits in its partition (newKeyedVisitsWorld)
	clocks  []int64 // per partition: the latest time of its hits
	hits    []hit
	lates   int
	ended   bool
	visits  *recorder[visit] // on checkpoint
	atOnce  *recorder[visit]
	windows *recorder[flows.WindowResult[string, visitSum]]
	tooLate *recorder[visit]
	counts  *recorder[flows.KV[string, int64]]
	want    *visitsWant
}

func newVisitsFlow(seed uint64, fragments, parts int, keyed bool) *visitsFlow {
	v := &visitsFlow{
		keyed:   keyed,
		in:      flowstest.NewInput[hit](parts),
		rng:     rand.New(rand.NewPCG(seed, 0x715175)),
		clocks:  make([]int64, parts),
		visits:  newRecorder("visits", visitKey),
		atOnce:  newRecorder("visits at once", visitKey),
		windows: newRecorder("windows", windowKey),
		tooLate: newRecorder("too late", visitKey),
		counts:  newRecorder("counts", countKey),
	}
	v.jitter = v.rng.IntN(2) == 0
	for p := range v.clocks {
		v.clocks[p] = time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC).UnixNano()
	}
	f := flows.New("visits", flows.WithFragments(fragments))
	opts := []flows.SourceOption{flows.WithEventTime(func(h hit) time.Time { return time.Unix(0, h.At) }, visitOutOfOrder)}
	if keyed {
		opts = append(opts, flows.WithKeyedPartitions())
	}
	hits := flows.From(f, "hits", v.in, opts...)
	p := flows.Process(flows.KeyBy(hits, func(h hit) string { return h.User }), visitHandler,
		flows.InEventTimeOrder(), flows.WithStateTTL(visitTTL)).View("open")
	out := p.Out()
	flows.To(out, flows.Sink[visit](v.visits), flows.OnCheckpoint())
	flows.To(out, flows.Sink[visit](v.atOnce))
	onTime := flows.Filter(out, func(x visit) bool { return !isLate(x.User) })
	w := flows.WindowAggregate(flows.KeyBy(onTime, func(x visit) string { return groupOfUser(x.User) }), flows.Tumbling(visitWindow),
		func() visitSum { return visitSum{} }, addVisit)
	flows.To(w.Results(), flows.Sink[flows.WindowResult[string, visitSum]](v.windows), flows.OnCheckpoint())
	flows.To(w.TooLate(), flows.Sink[visit](v.tooLate), flows.OnCheckpoint())
	counts := flows.Count(flows.KeyBy(out, func(x visit) string { return x.User }), flows.WithStateTTL(countTTL)).View("visits")
	flows.To(counts.Updates(), flows.Sink[flows.KV[string, int64]](v.counts), flows.OnCheckpoint())
	v.f = f
	return v
}

// next is partition p's next hit.
func (v *visitsFlow) next(p int) hit {
	g := v.rng
	step := g.Int64N(1200)
	if g.IntN(40) == 0 {
		step = g.Int64N(90_000) // a lull: visits close, states expire
	}
	v.clocks[p] += step * int64(time.Millisecond)
	if g.IntN(40) == 0 {
		v.lates++
		for v.keyed && !v.inPartition(fmt.Sprintf("late%d", v.lates), p) {
			v.lates++
		}
		back := 2*time.Minute + time.Duration(g.Int64N(8*60_000))*time.Millisecond
		return hit{User: fmt.Sprintf("late%d", v.lates), At: v.clocks[p] - int64(back)}
	}
	h := hit{User: "hot", At: v.clocks[p]}
	if g.IntN(2) == 0 || (v.keyed && !v.inPartition("hot", p)) {
		c := g.IntN(coldUsers)
		// Keyed: the first cold user from c on whose partition is p.
		for i := 0; v.keyed && i < coldUsers && !v.inPartition(fmt.Sprintf("c%02d", c), p); i++ {
			c = (c + 1) % coldUsers
		}
		h.User = fmt.Sprintf("c%02d", c)
	}
	if v.jitter {
		h.At -= g.Int64N(int64(visitOutOfOrder/time.Millisecond)) * int64(time.Millisecond)
	}
	return h
}

// inPartition reports whether user's hits belong in partition p of a
// keyed source (flows.KeyPartition).
func (v *visitsFlow) inPartition(user string, p int) bool {
	q, _ := flows.KeyPartition(user, len(v.clocks))
	return q == p
}

// push appends n hits, spread over the partitions.
func (v *visitsFlow) push(n int) {
	if v.ended {
		return
	}
	for range n {
		p := len(v.hits) % len(v.clocks)
		h := v.next(p)
		v.in.Push(p, h)
		v.hits = append(v.hits, h)
	}
	v.want = nil
}

// end pushes the input's last hundred hits and closes it.
func (v *visitsFlow) end() {
	if v.ended {
		return
	}
	v.push(100)
	v.in.Close()
	v.ended = true
}

// visitsWant is what the flow should deliver, one value per output.
type visitsWant struct{ visits, windows, counts []string }

// reference computes the flow's outputs sequentially: each user's hits in
// time order, its visit closing (the timer) and its state expiring (the
// TTL) before any hit at or after their times; then the visits into
// windows and counts.
func (v *visitsFlow) reference() *visitsWant {
	if v.want != nil {
		return v.want
	}
	byUser := map[string][]hit{}
	for _, h := range v.hits {
		byUser[h.User] = append(byUser[h.User], h)
	}
	var visits []visit
	for _, u := range slices.Sorted(maps.Keys(byUser)) {
		hs := byUser[u]
		slices.SortStableFunc(hs, func(a, b hit) int { return int(a.At - b.At) })
		var s visitState
		had := false
		for _, h := range hs {
			if had && s.Open && h.At >= closesAt(s) {
				var x visit
				x, s = closeVisit(u, s)
				visits = append(visits, x)
			}
			if had && h.At >= s.Last+int64(visitTTL) {
				had = false
			}
			s, had = onHit(s, had, h), true
		}
		if had && s.Open {
			x, _ := closeVisit(u, s)
			visits = append(visits, x)
		}
	}
	want := &visitsWant{}
	windows := map[[2]string]visitSum{}
	closed := map[string][]int64{}
	for _, x := range visits {
		want.visits = append(want.visits, visitKey(x))
		at := x.Last + int64(visitGap) // an event-time timer's output is dated the timer's time
		closed[x.User] = append(closed[x.User], at)
		if isLate(x.User) {
			continue
		}
		start := at - at%int64(visitWindow)
		k := [2]string{groupOfUser(x.User), fmt.Sprint(start)}
		windows[k] = addVisit(windows[k], x)
	}
	for _, k := range slices.SortedFunc(maps.Keys(windows), func(a, b [2]string) int { return strings.Compare(a[0]+a[1], b[0]+b[1]) }) {
		var start int64
		fmt.Sscan(k[1], &start)
		want.windows = append(want.windows, windowKey(flows.WindowResult[string, visitSum]{Key: k[0],
			Start: time.Unix(0, start), End: time.Unix(0, start+int64(visitWindow)), Value: windows[k], Firing: flows.OnTime}))
	}
	for _, u := range slices.Sorted(maps.Keys(closed)) {
		ats := closed[u]
		slices.Sort(ats)
		var n int64
		for i, at := range ats {
			if i > 0 && at >= ats[i-1]+int64(countTTL) {
				n = 0
			}
			n++
			want.counts = append(want.counts, countKey(flows.KV[string, int64]{Key: u, Value: n}))
		}
	}
	v.want = want
	return want
}

// outputProblems compares every sink with the reference.
func (v *visitsFlow) outputProblems() []string {
	want := v.reference()
	var out []string
	out = append(out, v.visits.problems(want.visits)...)
	out = append(out, v.atOnce.problems(want.visits)...)
	out = append(out, v.windows.problems(want.windows)...)
	out = append(out, v.tooLate.problems(nil)...)
	out = append(out, v.counts.problems(want.counts)...)
	return out
}

// visitsWorld runs the visits flow on a simulated cluster. Its input is
// bounded: the schedule ends it while faults go on.
type visitsWorld struct {
	*visitsFlow
	c *sim.Cluster
}

// newVisitsWorld makes the visits world; it has its stages whatever
// stages says.
func newVisitsWorld(cfg sim.Config, fragments, parts, _ int) (scheduleWorld, error) {
	return visitsWorldOf(cfg, fragments, parts, false)
}

// newKeyedVisitsWorld is the visits world over a source partitioned by
// user (flows.WithKeyedPartitions): each partition's hits are of its
// users only, drawn as before but for the user, and the fragments are
// rounded up to a multiple of the partitions.
func newKeyedVisitsWorld(cfg sim.Config, fragments, parts, _ int) (scheduleWorld, error) {
	return visitsWorldOf(cfg, (fragments+parts-1)/parts*parts, parts, true)
}

// newRefusingVisitsWorld is the visits world whose sink at once refuses
// writes, each with a probability drawn per world (a tenth to three fifths), from
// a generator of its own: the schedule is the one the seed draws for
// TestRandomVisitSchedules. A fragment whose outputs are refused holds
// and makes them again, so the sink still holds every visit once, with
// one value.
func newRefusingVisitsWorld(cfg sim.Config, fragments, parts, stages int) (scheduleWorld, error) {
	w, err := newVisitsWorld(cfg, fragments, parts, stages)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x2ef05e))
	p := 0.1 + rng.Float64()/2
	w.(*visitsWorld).atOnce.refuse = func() bool { return rng.Float64() < p }
	return w, nil
}

func visitsWorldOf(cfg sim.Config, fragments, parts int, keyed bool) (scheduleWorld, error) {
	v := newVisitsFlow(cfg.Seed, fragments, parts, keyed)
	c, err := sim.New(v.f, cfg)
	if err != nil {
		return nil, err
	}
	return &visitsWorld{visitsFlow: v, c: c}, nil
}

func (w *visitsWorld) sim() *sim.Cluster { return w.c }
func (w *visitsWorld) end() bool         { w.visitsFlow.end(); return true }
func (w *visitsWorld) last()             { w.visitsFlow.end() }

// problems lists how the cluster differs from the reference: the sinks,
// and once the input ended the views, which hold nothing once every state
// expired.
func (w *visitsWorld) problems() []string {
	if !w.c.Converged() {
		out := []string{"not converged:\n" + w.c.Placement()}
		for _, r := range []interface{ contradicted() []string }{w.visits, w.atOnce, w.windows, w.tooLate, w.counts} {
			out = append(out, r.contradicted()...)
		}
		return out
	}
	out := w.outputProblems()
	if w.ended {
		for _, view := range []string{"open", "visits"} {
			r, err := w.c.Query(splice.Request{View: view, Op: splice.OpEntries, Query: splice.Query{Limit: 1 << 20}})
			switch {
			case err != nil:
				out = append(out, fmt.Sprintf("view %s: %v", view, err))
			case len(r.Entries) > 0:
				out = append(out, fmt.Sprintf("view %s: %d entries left, first %s=%v", view, len(r.Entries), r.Entries[0].Key, r.Entries[0].Value))
			}
		}
	}
	if d := w.c.DeadLetters(); len(d) > 0 {
		out = append(out, fmt.Sprintf("%d dead letters, first %+v", len(d), d[0]))
	}
	if err := w.c.Err(); err != nil {
		out = append(out, fmt.Sprintf("errors: %v", err))
	}
	return out
}

// settle runs until the answer is exact, or until a sink got an output
// again with another value, which nothing undoes.
func (w *visitsWorld) settle(limit time.Duration) []string {
	var last []string
	w.c.RunUntil(limit, 250*time.Millisecond, func() bool {
		last = w.problems()
		return len(last) == 0 || w.contradicted()
	})
	return last
}

func (v *visitsFlow) contradicted() bool {
	return len(v.visits.contradictions)+len(v.atOnce.contradictions)+len(v.windows.contradictions)+
		len(v.tooLate.contradictions)+len(v.counts.contradictions) > 0
}
