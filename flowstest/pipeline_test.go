package flowstest_test

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
)

// A pipeline as the framework exists for: pings of phones keyed by
// subscriber → trips detected by a process function with event-time
// timers and a state TTL → re-keyed by origin→destination → hourly trip
// counts. Its results must equal a plain sequential program's, whatever
// the batching, partition skew and crashes.

type ping struct {
	Sub  string
	Zone string
	At   time.Time
}

type trip struct {
	Sub      string
	From, To string
	Depart   time.Time
	Arrive   time.Time
}

// stay is a subscriber's trip-detection state.
type stay struct {
	Zone      string    // the zone of the last ping
	Since     time.Time // the first ping of the current run in Zone
	Last      time.Time // the last ping
	Anchor    string    // the last zone stayed in for the dwell time
	AnchorEnd time.Time // the last ping in Anchor
}

const (
	dwell   = 20 * time.Minute
	pingTTL = 6 * time.Hour
)

// tripHandler detects trips: a stay is a run of pings in one zone that
// lasts the dwell time (a timer at its start + dwell confirms it); a trip
// goes from one stay's zone to the next one's.
func tripHandler() flows.Handler[string, ping, stay, trip] {
	return flows.Handler[string, ping, stay, trip]{
		OnEvent: func(c *flows.Context[string, stay, trip], p ping) {
			s, _ := c.State()
			if p.Zone != s.Zone {
				if s.Zone == s.Anchor && s.Zone != "" {
					s.AnchorEnd = s.Last
				}
				s.Zone, s.Since = p.Zone, p.At
				c.SetEventTimer(p.At.Add(dwell))
			}
			s.Last = p.At
			if s.Zone == s.Anchor {
				s.AnchorEnd = p.At
			}
			c.SetState(s)
		},
		OnTimer: func(c *flows.Context[string, stay, trip], at time.Time) {
			s, ok := c.State()
			if !ok || !s.Since.Add(dwell).Equal(at) || s.Zone == s.Anchor {
				return
			}
			if s.Anchor != "" {
				c.Emit(trip{Sub: c.Key(), From: s.Anchor, To: s.Zone, Depart: s.AnchorEnd, Arrive: s.Since})
			}
			s.Anchor, s.AnchorEnd = s.Zone, s.Last
			c.SetState(s)
		},
	}
}

func odKey(t trip) string { return t.From + "->" + t.To }

// odCount is an hourly origin–destination count.
type odCount struct {
	OD   string
	Hour time.Time
	N    int
}

// pipelineRun is one run of the pipeline over pings in partitions.
type pipelineRun struct {
	trips  map[flows.OutputID]trip // an idempotent sink keyed by output id
	counts map[flows.OutputID]odCount
}

func pipelineFlow(in *flowstest.Input[ping], fragments int) (*flows.Flow, *flowstest.Collector[trip], *flowstest.Collector[flows.WindowResult[string, int]]) {
	f := flows.New("trips", flows.WithFragments(fragments))
	pings := flows.From(f, "pings", in, flows.WithEventTime(func(p ping) time.Time { return p.At }, time.Minute))
	trips := flows.Process(flows.KeyBy(pings, func(p ping) string { return p.Sub }), tripHandler(),
		flows.InEventTimeOrder(), flows.WithStateTTL(pingTTL)).Out()
	tc := flowstest.Collect(trips)
	od := flows.WindowAggregate(flows.KeyBy(trips, odKey), flows.Tumbling(time.Hour),
		func() int { return 0 }, func(n int, _ trip) int { return n + 1 })
	wc := flowstest.Collect(od.Results())
	return f, tc, wc
}

// referenceTrips runs the trip handler's logic sequentially: each
// subscriber's pings in event-time order (ties by partition and offset),
// timers and expiry between them at their times (a key's timers before its
// expiry before its events), everything at the end of the input.
func referenceTrips(parts [][]ping) []trip {
	type ev struct {
		p         ping
		part, off int
	}
	bySub := map[string][]ev{}
	for pi, part := range parts {
		for off, p := range part {
			bySub[p.Sub] = append(bySub[p.Sub], ev{p, pi, off})
		}
	}
	var out []trip
	for sub, evs := range bySub {
		slices.SortFunc(evs, func(a, b ev) int {
			if c := a.p.At.Compare(b.p.At); c != 0 {
				return c
			}
			if c := cmp.Compare(a.part, b.part); c != 0 {
				return c
			}
			return cmp.Compare(a.off, b.off)
		})
		var s stay
		has := false
		timers := map[time.Time]bool{}
		var last time.Time // the key's latest event, for the TTL
		expiry := time.Time{}
		runUntil := func(t time.Time, inclusive bool) {
			for {
				// The earliest due timer or expiry.
				var next time.Time
				for at := range timers {
					if next.IsZero() || at.Before(next) {
						next = at
					}
				}
				due := func(at time.Time) bool { return at.Before(t) || inclusive && at.Equal(t) }
				if !next.IsZero() && due(next) && (expiry.IsZero() || !expiry.Before(next)) {
					delete(timers, next)
					if has && s.Since.Add(dwell).Equal(next) && s.Zone != s.Anchor {
						if s.Anchor != "" {
							out = append(out, trip{Sub: sub, From: s.Anchor, To: s.Zone, Depart: s.AnchorEnd, Arrive: s.Since})
						}
						s.Anchor, s.AnchorEnd = s.Zone, s.Last
					}
					continue
				}
				if !expiry.IsZero() && due(expiry) {
					if len(timers) > 0 { // its own timers pending: expiry waits for them
						var lastT time.Time
						for at := range timers {
							if at.After(lastT) {
								lastT = at
							}
						}
						expiry = lastT
						continue
					}
					s, has, expiry = stay{}, false, time.Time{}
					continue
				}
				return
			}
		}
		for _, e := range evs {
			runUntil(e.p.At, true)
			p := e.p
			if p.Zone != s.Zone {
				if s.Zone == s.Anchor && s.Zone != "" {
					s.AnchorEnd = s.Last
				}
				s.Zone, s.Since = p.Zone, p.At
				timers[p.At.Add(dwell)] = true
			}
			s.Last = p.At
			if s.Zone == s.Anchor {
				s.AnchorEnd = p.At
			}
			has = true
			if p.At.After(last) || expiry.IsZero() {
				last = maxTime(last, p.At)
				expiry = last.Add(pingTTL)
			}
		}
		runUntil(time.Unix(0, math.MaxInt64), true)
	}
	return out
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// referenceCounts counts trips per origin–destination and hour of their
// confirmation (the timer's time: arrival + dwell).
func referenceCounts(trips []trip) map[string]int {
	out := map[string]int{}
	for _, t := range trips {
		out[fmt.Sprintf("%s@%s", odKey(t), t.Arrive.Add(dwell).Truncate(time.Hour).UTC().Format(time.RFC3339))] += 1
	}
	return out
}

// makePings makes subscribers who move between zones: stays of 5 to 90
// minutes with a ping every 1 to 12 minutes, and now and then silence for
// longer than the TTL. Subscribers are spread over partitions by a skewed
// rule (half of them on partition 0).
func makePings(rng *rand.Rand, subs, zones, perSub, partitions int) [][]ping {
	parts := make([][]ping, partitions)
	t0 := time.Date(2026, 3, 2, 6, 0, 0, 0, time.UTC)
	for s := range subs {
		sub := fmt.Sprintf("s%03d", s)
		part := 0
		if rng.IntN(2) == 1 {
			part = rng.IntN(partitions)
		}
		at := t0.Add(time.Duration(rng.IntN(120)) * time.Minute)
		zone := rng.IntN(zones)
		for n := 0; n < perSub; {
			stayEnd := at.Add(time.Duration(5+rng.IntN(86)) * time.Minute)
			for ; at.Before(stayEnd) && n < perSub; n++ {
				parts[part] = append(parts[part], ping{Sub: sub, Zone: fmt.Sprintf("z%02d", zone), At: at})
				at = at.Add(time.Duration(1+rng.IntN(12)) * time.Minute)
			}
			zone = (zone + 1 + rng.IntN(zones-1)) % zones
			if rng.IntN(20) == 0 {
				at = at.Add(pingTTL + time.Hour) // silent past the TTL
			}
		}
	}
	// Events of a partition arrive in time order, but for a little jitter
	// within the allowed out-of-orderness.
	for _, p := range parts {
		slices.SortFunc(p, func(a, b ping) int { return a.At.Compare(b.At) })
		for i := 1; i < len(p); i++ {
			if rng.IntN(10) == 0 && p[i].At.Sub(p[i-1].At) < 30*time.Second {
				p[i], p[i-1] = p[i-1], p[i]
			}
		}
	}
	return parts
}

type faultPlan struct {
	batch     int
	chunk     int  // events pushed per partition step
	lag       int  // partition 1 is pushed this many steps behind
	crashes   bool // random checkpoints, crashes and restarts
	crashLast bool // crash a fragment after the last events, before the end
}

// runPipeline pushes the pings partition by partition (one lagging), with
// faults, to the end of the input, and returns what the sinks hold.
func runPipeline(t testing.TB, parts [][]ping, fragments int, rng *rand.Rand, fp faultPlan) pipelineRun {
	t.Helper()
	in := flowstest.NewInput[ping](len(parts))
	f, tc, wc := pipelineFlow(in, fragments)
	d, err := flowstest.New(f, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.BatchSize = fp.batch
	pushed := make([]int, len(parts))
	fault := func() {
		if !fp.crashes {
			return
		}
		switch rng.IntN(5) {
		case 0:
			if err := d.Checkpoint(); err != nil {
				t.Fatal(err)
			}
		case 1:
			if err := d.Crash(rng.IntN(fragments)); err != nil {
				t.Fatal(err)
			}
		case 2:
			if rng.IntN(3) == 0 {
				if err := d.Restart(); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for step := 0; ; step++ {
		more := false
		for p := range parts {
			if p == 1 && step < fp.lag {
				more = true
				continue
			}
			n := min(fp.chunk, len(parts[p])-pushed[p])
			in.Push(p, parts[p][pushed[p]:pushed[p]+n]...)
			pushed[p] += n
			more = more || pushed[p] < len(parts[p])
		}
		if err := d.Drain(); err != nil {
			t.Fatal(err)
		}
		fault()
		if !more {
			break
		}
	}
	for _, fr := range d.Freshness() {
		if fr.Complete {
			t.Fatalf("fragment %d is complete before the end of the input", fr.Fragment)
		}
	}
	if fp.crashLast {
		if err := d.Checkpoint(); err != nil {
			t.Fatal(err)
		}
		if err := d.Crash(rng.IntN(fragments)); err != nil {
			t.Fatal(err)
		}
	}
	in.Close()
	if fp.crashLast {
		// The end of the input reaches some fragments, then one crashes.
		if err := d.Drain(); err != nil {
			t.Fatal(err)
		}
		if err := d.Crash(rng.IntN(fragments)); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Settle(); err != nil {
		t.Fatal(err)
	}
	for _, fr := range d.Freshness() {
		if !fr.Complete {
			t.Fatalf("fragment %d is not complete at the end of the input", fr.Fragment)
		}
	}
	if fp.crashes && d.Restores() == 0 {
		t.Fatalf("plan %+v crashed no fragment", fp)
	}
	for _, fr := range d.Freshness() {
		if fr.Watermark == nil || fr.Watermark.Year() < 3000 {
			t.Logf("fragment %d: watermark %v offsets %v", fr.Fragment, fr.Watermark, fr.Offsets)
		}
	}
	t.Logf("plan %+v: %d restores, %d trips, %d counts", fp, d.Restores(), len(tc.Outputs()), len(wc.Outputs()))
	run := pipelineRun{trips: map[flows.OutputID]trip{}, counts: map[flows.OutputID]odCount{}}
	for _, o := range tc.Outputs() {
		if prev, ok := run.trips[o.ID]; ok && prev != o.Value {
			t.Fatalf("output %v was %+v, then %+v", o.ID, prev, o.Value)
		}
		run.trips[o.ID] = o.Value
	}
	for _, o := range wc.Outputs() {
		c := odCount{OD: o.Value.Key, Hour: o.Value.Start, N: o.Value.Value}
		if prev, ok := run.counts[o.ID]; ok && prev != c {
			t.Fatalf("output %v was %+v, then %+v", o.ID, prev, c)
		}
		run.counts[o.ID] = c
	}
	return run
}

func checkAgainstReference(t testing.TB, run pipelineRun, parts [][]ping) {
	t.Helper()
	want := referenceTrips(parts)
	if len(want) == 0 {
		t.Fatal("the reference found no trip: the test data is too small")
	}
	got := slices.Collect(maps.Values(run.trips))
	sortTrips := func(ts []trip) {
		slices.SortFunc(ts, func(a, b trip) int {
			if c := cmp.Compare(a.Sub, b.Sub); c != 0 {
				return c
			}
			return a.Arrive.Compare(b.Arrive)
		})
	}
	sortTrips(got)
	sortTrips(want)
	if !slices.Equal(got, want) {
		t.Fatalf("trips: got %d, want %d\n got %v\nwant %v", len(got), len(want), got, want)
	}
	counts := map[string]int{}
	for _, c := range run.counts {
		k := fmt.Sprintf("%s@%s", c.OD, c.Hour.UTC().Format(time.RFC3339))
		if _, dup := counts[k]; dup {
			t.Fatalf("window %s fired twice", k)
		}
		counts[k] = c.N
	}
	if wantC := referenceCounts(want); !maps.Equal(counts, wantC) {
		t.Fatalf("hourly OD counts:\n got %v\nwant %v", counts, wantC)
	}
}

func TestTripPipelineEqualsSequential(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	parts := makePings(rng, 60, 6, 60, 3)
	clean := runPipeline(t, parts, 8, rng, faultPlan{batch: 64, chunk: 200, lag: 0})
	checkAgainstReference(t, clean, parts)
	for i, fp := range []faultPlan{
		{batch: 7, chunk: 50, lag: 6, crashes: true},
		{batch: 1, chunk: 300, lag: 2, crashes: true, crashLast: true},
		{batch: 33, chunk: 25, lag: 20, crashes: true, crashLast: true},
	} {
		run := runPipeline(t, parts, 8, rand.New(rand.NewPCG(uint64(i), 3)), fp)
		checkAgainstReference(t, run, parts)
		if !maps.Equal(run.trips, clean.trips) || !maps.Equal(run.counts, clean.counts) {
			t.Fatalf("plan %+v: the outputs by id differ from the uninterrupted run's", fp)
		}
	}
}

// The state TTL follows the watermark: with one partition hours behind the
// others (its pings pushed only after the others' first hours), no
// subscriber's state expires early, none of its trips is lost, and the
// result equals the sequential reference, with crashes too.
func TestTTLWithPartitionHoursBehind(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 1))
	parts := makePings(rng, 60, 5, 60, 2)
	const chunk, lag = 40, 40
	ahead := parts[0][min(chunk*lag, len(parts[0])-1)].At.Sub(parts[1][0].At)
	if ahead < 3*time.Hour {
		t.Fatalf("partition 0 is only %v ahead when partition 1 starts", ahead)
	}
	t.Logf("partition 0 is %v ahead of partition 1 when it starts", ahead.Round(time.Minute))
	for i, crashes := range []bool{false, true} {
		run := runPipeline(t, parts, 4, rand.New(rand.NewPCG(uint64(i), 9)), faultPlan{batch: 16, chunk: chunk, lag: lag, crashes: crashes})
		checkAgainstReference(t, run, parts)
	}
}
