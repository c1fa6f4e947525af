package cluster_test

// The outside-in cluster scenarios over a flow of another shape than
// ocFlow's: session windows per user over a skewed input, their results
// keyed again into tables and windows, and delivered on checkpoints.

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/internal/exampletest"
	"github.com/tessera-streams/tessera/splice"
)

// osFlowName is ocSpec.Flow for osFlow.
const osFlowName = "sessions"

// OsVisit is a user's visit at a time, of some weight.
type OsVisit struct {
	User string
	At   time.Time
	W    int64
}

// OsAcc is a session's visits and their weight.
type OsAcc struct{ N, W int64 }

// OsSession is a session's result.
type OsSession = flows.WindowResult[string, OsAcc]

const (
	osGap      = 10 * time.Minute
	osLateness = 30 * time.Minute
	// osIdle marks the silent partition idle long before it ends, and
	// the others, which have visits due every few milliseconds, never.
	osIdle      = 500 * time.Millisecond
	osHour      = time.Hour
	osSixHours  = 6 * time.Hour
	osRetain    = 10 * 365 * 24 * time.Hour
	osFragments = 16 // ocStart's -fragments
)

// osInput is the sessions flow's input: partition p holds Limits[p]
// visits from ocBase on, each at a whole minute and 30 s, in time order.
// A partition of one user (Subs[p] == 1) holds the hot user "hot<p>",
// whose visits come a minute apart with pauses of every kind: none, just
// under the gap, the gap exactly (the next visit opens a session of its
// own: [t, t+gap) and [t+gap, ...) do not overlap), just over it, and
// hours. A partition of more users draws each visit's user at random,
// the visits at most a minute apart but for pauses of hours now and then;
// user 0 of partition 1 is the empty string.
func osInput(sp ocSpec) [][]OsVisit {
	in := make([][]OsVisit, len(sp.Limits))
	for p, lim := range sp.Limits {
		at := ocBase
		seed := sp.Seed ^ uint64(p)<<40
		for off := range lim {
			r := ocMix(seed, uint64(off))
			step, user := time.Duration(0), ""
			if sp.Subs[p] == 1 {
				user = fmt.Sprintf("hot%d", p)
				switch x := r % 100; {
				case x < 55:
					step = time.Minute
				case x < 65:
					step = 0
				case x < 75:
					step = osGap - time.Minute
				case x < 85:
					step = osGap
				case x < 92:
					step = osGap + time.Minute
				default:
					step = time.Hour + time.Duration(r>>8%240)*time.Minute
				}
			} else {
				j := int(r >> 8 % uint64(sp.Subs[p]))
				user = fmt.Sprintf("p%d-u%02d", p, j)
				if p == 1 && j == 0 {
					user = ""
				}
				switch x := r % 100; {
				case x < 48:
					step = 0
				case x < 96:
					step = time.Minute
				default:
					step = time.Hour + time.Duration(r>>16%120)*time.Minute
				}
			}
			if off > 0 {
				at = at.Add(step)
			}
			in[p] = append(in[p], OsVisit{User: user, At: at, W: 1 + int64(r>>24%9)})
		}
	}
	return in
}

// osClass is a session's class by its visits: "" for one.
func osClass(s OsSession) string {
	switch n := s.Value.N; {
	case n == 1:
		return ""
	case n < 5:
		return "few"
	case n < 20:
		return "many"
	}
	return "long"
}

// osFlow: sessions of every user's visits (with allowed lateness, which
// keeps fired sessions in the state and its checkpoints a while), the
// first operator of the flow; each user's visits an hour; the sessions
// keyed again by class (their weight, and their visits by six hours of
// their end) and by user (how many), and delivered on checkpoints. The
// watermark waits for a silent partition no longer than osIdle.
func osFlow(sp ocSpec, fragments int, sink flows.Sink[OsSession]) *flows.Flow {
	in := osInput(sp)
	f := flows.New("outside-sessions", flows.WithFragments(fragments))
	visits := flows.From(f, "visits", &ocSource[OsVisit]{sp: sp, event: func(p int, off int64) OsVisit { return in[p][off] }},
		flows.WithEventTime(func(v OsVisit) time.Time { return v.At }, time.Minute), flows.WithIdleTimeout(osIdle))
	byUser := flows.KeyBy(visits, func(v OsVisit) string { return v.User })
	sessions := flows.SessionAggregate(byUser, osGap, func() OsAcc { return OsAcc{} },
		func(a OsAcc, v OsVisit) OsAcc { return OsAcc{N: a.N + 1, W: a.W + v.W} },
		func(a, b OsAcc) OsAcc { return OsAcc{N: a.N + b.N, W: a.W + b.W} }, flows.AllowedLateness(osLateness)).Results()
	flows.WindowAggregate(byUser, flows.Tumbling(osHour), func() int64 { return 0 },
		func(n int64, _ OsVisit) int64 { return n + 1 }).KeyedView("hourly", osRetain)
	byClass := flows.KeyBy(sessions, osClass)
	flows.Aggregate(byClass, func() int64 { return 0 }, func(w int64, s OsSession) int64 { return w + s.Value.W }).View("weight")
	flows.WindowAggregate(byClass, flows.Tumbling(osSixHours), func() int64 { return 0 },
		func(n int64, s OsSession) int64 { return n + s.Value.N }).KeyedView("sixhourly", osRetain)
	flows.Count(flows.KeyBy(sessions, func(s OsSession) string { return s.Key })).View("sessions")
	flows.AggregateView(sessions, "visits", splice.Sum[int64](), func(s OsSession) int64 { return s.Value.N })
	flows.To(sessions, sink, flows.OnCheckpoint())
	return f
}

// osModel is osFlow computed by a plain sequential program from what the
// docs promise: no visit comes behind the watermark (each partition is in
// time order, and the silent one has none to bring late), so every
// session fires once, on time, as the visits of its user make it, and
// every result downstream is on time for the windows of its end.
type osModel struct {
	outs      map[ocOutKey]OsSession // by user and end
	hourly    map[string]map[time.Time]int64
	weight    map[string]int64 // by class
	sessions  map[string]int64 // by user
	sixhourly map[string]map[time.Time]int64
	visits    int64
}

func osModelOf(sp ocSpec) *osModel {
	m := &osModel{outs: map[ocOutKey]OsSession{}, hourly: map[string]map[time.Time]int64{}, weight: map[string]int64{},
		sessions: map[string]int64{}, sixhourly: map[string]map[time.Time]int64{}}
	add := func(w map[string]map[time.Time]int64, k string, at time.Time, n int64) {
		if w[k] == nil {
			w[k] = map[time.Time]int64{}
		}
		w[k][at] += n
	}
	emit := func(s OsSession) {
		m.outs[ocOutKey{s.Key, s.End.UnixNano()}] = s
		m.weight[osClass(s)] += s.Value.W
		m.sessions[s.Key]++
		// A result comes downstream as made at its session's end, on
		// time for the windows that the move of the watermark that
		// fired it fires (Windowed.ByKey): every End here is at 30 s
		// past a minute, so that it falls in End's window whether it is
		// stamped End or a moment before.
		add(m.sixhourly, osClass(s), s.End.Truncate(osSixHours), s.Value.N)
		m.visits += s.Value.N
	}
	byUser := map[string][]OsVisit{}
	var users []string
	for _, part := range osInput(sp) {
		for _, v := range part {
			if _, ok := byUser[v.User]; !ok {
				users = append(users, v.User)
			}
			byUser[v.User] = append(byUser[v.User], v)
			add(m.hourly, v.User, v.At.Truncate(osHour), 1)
		}
	}
	for _, u := range users {
		vs := byUser[u] // a user's visits are in one partition, in time order
		var cur *OsSession
		for _, v := range vs {
			if cur != nil && !v.At.Before(cur.End) { // [v.At, v.At+gap) does not overlap it
				emit(*cur)
				cur = nil
			}
			if cur == nil {
				cur = &OsSession{Key: u, Start: v.At, Firing: flows.OnTime}
			}
			cur.End = v.At.Add(osGap)
			cur.Value.N++
			cur.Value.W += v.W
		}
		emit(*cur)
	}
	return m
}

// osCheckViews waits until every live node's views are complete and
// equal the model: the keyed views paged across the nodes, every user's
// hours and every class's six hours, and the aggregate.
func (c *ocCluster) osCheckViews(m *osModel, limit time.Duration) {
	t := c.t
	t.Helper()
	defer c.dumpOnFailure()
	ocUntilWhy(t, limit, "every node's views to equal the model", func() string {
		for _, rot := range c.rotations() {
			if why := ocKeyedEqual(t, rot, map[string]map[string]int64{"weight": m.weight, "sessions": m.sessions}, 1, 5, 1000); why != "" {
				return why
			}
			for view, byKey := range map[string]map[string]map[time.Time]int64{"hourly": m.hourly, "sixhourly": m.sixhourly} {
				for key, want := range byKey {
					got, complete, why := ocWindows(rot[0], view, key)
					if why != "" {
						return why
					}
					if !complete {
						return fmt.Sprintf("%s %q on %s: not complete", view, key, rot[0])
					}
					if !mapsEqualTime(got, want) {
						return fmt.Sprintf("%s %q on %s: %s", view, key, rot[0], osDiffWindows(got, want))
					}
				}
			}
			if why := ocAggregateEqual(rot[0], "visits", m.visits); why != "" {
				return why
			}
		}
		return ""
	})
}

// osDiffWindows says how got differs from want, a few windows of it.
func osDiffWindows(got, want map[time.Time]int64) string {
	var d []string
	for at, w := range want {
		if g, ok := got[at]; !ok || g != w {
			d = append(d, fmt.Sprintf("%v: %d, want %d", at.Format(time.DateTime), g, w))
		}
	}
	for at, g := range got {
		if _, ok := want[at]; !ok {
			d = append(d, fmt.Sprintf("%v: %d, want none", at.Format(time.DateTime), g))
		}
	}
	slices.Sort(d)
	return fmt.Sprintf("%d windows of %d differ: %v", len(d), len(want), d[:min(len(d), 6)])
}

// osCheckSink reads every node's sink files: each id with one value, and
// every session of the model under exactly one id, the one its cause
// makes (the window of its user at its end, of the flow's first
// operator, in its user's fragment), on time; nothing else.
func (c *ocCluster) osCheckSink(m *osModel) {
	t := c.t
	t.Helper()
	type line struct {
		Key        string
		Start, End time.Time
		Value      OsAcc
		Firing     string
	}
	byID, idOf, lines := ocSinkByID(c, func(s *line) ocOutKey {
		s.Start, s.End = s.Start.UTC(), s.End.UTC()
		return ocOutKey{s.Key, s.End.UnixNano()}
	})
	missing, wrong := 0, 0
	for k, want := range m.outs {
		id, ok := idOf[k]
		if !ok {
			if missing++; missing <= 5 {
				t.Errorf("sink lacks %+v", want)
			}
			continue
		}
		frag, err := flows.KeyPartition(want.Key, osFragments)
		if err != nil {
			t.Fatal(err)
		}
		wantID := flows.OutputID{Fragment: frag, Cause: flows.CauseWindow, Key: want.Key, At: want.End.UnixNano()}.String()
		got := byID[id]
		if id != wantID || got.Start != want.Start || got.Value != want.Value || got.Firing != want.Firing.String() {
			if wrong++; wrong <= 5 {
				t.Errorf("sink has %s = %+v, want %s = %+v", id, got, wantID, want)
			}
		}
	}
	extra := ocExtra(t, byID, idOf, m.outs)
	t.Logf("sink: %d lines, %d ids, %d sessions in the model (%d missing, %d wrong, %d extra)", lines, len(byID), len(m.outs), missing, wrong, extra)
}

// osSkewed is a skewed input: partition 0 holds one hot user and most of
// the visits, 1 many users, 2 none (it ends at once), and 3 none either,
// but ends only six seconds after it is opened: the watermark moves with
// the others once it is idle, and sessions fire and are delivered all
// along.
func osSkewed(seed uint64) ocSpec {
	return ocSpec{Flow: osFlowName, Limits: []int64{3000, 1200, 0, 0}, Subs: []int{1, 12, 1, 1},
		Rates: []float64{300, 150}, Silent: []time.Duration{3: 6 * time.Second}, Seed: seed}
}

// The skewed sessions flow on three nodes: sessions fire while a
// partition is silent, one node is SIGKILLed mid-input, a fourth joins,
// and once every fragment's standby holds its copy another is SIGKILLed
// as the input is read out. Every surviving node's views — tables and
// windows keyed by session class and by user, and the hours of every
// user's visits — equal the model, and the sink holds each session once,
// under the id of its window.
func TestOutsideClusterSessionsKillJoinKillExact(t *testing.T) {
	t.Parallel()
	sp := osSkewed(11)
	m := osModelOf(sp)
	c := ocStart(t, sp, 3)
	n0, n1, n2 := c.nodes[0], c.nodes[1], c.nodes[2]
	c.osFiredWhileSilent(n0, 3)
	c.waitRead(n0, ocTotal(sp)/4, 30*time.Second)
	c.kill(n2)
	c.join("n3")
	c.survivable(30 * time.Second)
	c.waitReadOut(n0, 30*time.Second)
	c.kill(n1)
	c.osCheckViews(m, 40*time.Second)
	c.osCheckSink(m)
}

// owner is the live node that owns fragment f, by nd's placement.
func (c *ocCluster) owner(nd *ocNode, f int) *ocNode {
	c.t.Helper()
	var st struct{ Placement struct{ Fragments []string } }
	exampletest.GetJSON(c.t, nd.p.Base+"/v1/cluster", &st)
	for _, o := range c.live() {
		if f < len(st.Placement.Fragments) && o.name == st.Placement.Fragments[f] {
			return o
		}
	}
	c.t.Fatalf("%s places fragment %d on no live node: %v", nd.name, f, st.Placement.Fragments)
	return nil
}

// osFiredWhileSilent waits until nd's sessions view counts visits while
// the silent partition is still open: the idle timeout let the
// watermark go on without it.
func (c *ocCluster) osFiredWhileSilent(nd *ocNode, silent int) {
	t := c.t
	t.Helper()
	ocUntilWhy(t, 10*time.Second, "sessions fired with a partition silent", func() string {
		var agg struct{ Value int64 }
		if !exampletest.TryJSON(nd.p.Base+"/v1/views/visits", &agg) {
			return "no answer"
		}
		var st ocClusterState
		if !exampletest.TryJSON(nd.p.Base+"/v1/cluster", &st) {
			return "no answer"
		}
		for _, r := range st.Readers {
			if r.Partition == silent && r.Done {
				t.Fatalf("partition %d ended before a session fired (%d visits in them): the watermark waited for it", silent, agg.Value)
			}
		}
		if agg.Value == 0 {
			return "no session fired"
		}
		return ""
	})
}

// The owner of the hot user's fragment is SIGKILLed mid-input; once every
// fragment has a live standby with its copy, so is its next owner, as the
// input is read out, which leaves one node; then the first comes back
// with its data and takes its fragments back. The lone survivor's views,
// then both nodes' views, equal the model, and the sink holds each
// session once.
func TestOutsideClusterSessionsHotOwnerKilledTwice(t *testing.T) {
	t.Parallel()
	sp := osSkewed(12)
	m := osModelOf(sp)
	hot, err := flows.KeyPartition("hot0", osFragments)
	if err != nil {
		t.Fatal(err)
	}
	c := ocStart(t, sp, 3)
	c.osFiredWhileSilent(c.nodes[0], 3)
	c.waitRead(c.nodes[0], ocTotal(sp)/3, 30*time.Second)
	first := c.owner(c.nodes[0], hot)
	c.kill(first)
	c.survivable(30 * time.Second)
	c.waitReadOut(c.live()[0], 30*time.Second)
	second := c.owner(c.live()[0], hot)
	c.kill(second)
	t.Logf("killed %s, then %s, the owners of the hot user's fragment %d", first.name, second.name, hot)
	c.osCheckViews(m, 40*time.Second)
	c.launch(first, 2) // -expect: the members it waits for before it places
	first.p.WaitURL(t)
	c.osCheckViews(m, 40*time.Second)
	c.osCheckSink(m)
}
