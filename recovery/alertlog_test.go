package recovery

import (
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

var alertSeeds = flag.Int("alertlog.seeds", 0, "seeds of TestAlertLogSimulated (0: 400, or 40 with the race detector)")

// The alert log's rules, simulated: three or five nodes exchange messages over
// FIFO links that may lose them, apply placements late, evaluate slowly
// (the log may move on meanwhile), and fail one at a time: killed (their
// memory and what they were sending are lost, and so may be their writes
// after the last synced one) and restarted, or stopped while the others
// place without them and resumed (a stale owner) before they rejoin, or
// (of five) the owner and its standby cut off from the others together,
// fenced, while the others place without them, until the cut heals;
// owners especially, right after they committed or prepared a step. The
// truth is the sequence of crossings a sequential evaluation raises, and
// every record names the node that raised it: every node's log must
// always be a prefix of the truth, and a position of the log must never
// hold two raises of its crossing (not even on a node that died); once
// the input is over every node holds all of it. Each seed replays
// identically; -alertlog.seeds=N runs more.
func TestAlertLogSimulated(t *testing.T) {
	seeds := *alertSeeds
	if seeds == 0 {
		seeds = 400
		if raceDetector {
			seeds = 40
			t.Logf("race detector on: %d seeds (make test runs 400 without it)", seeds)
		}
	}
	if testing.Short() {
		seeds = min(seeds, 50)
	}
	var kills, pauses, cuts, dups, takeovers int
	for seed := range uint64(seeds) {
		s := newAlertSim(t, seed)
		s.run(2000)
		kills += s.kills
		pauses += s.pauses
		cuts += s.cuts
		dups += s.dups()
		takeovers += s.takeovers
	}
	t.Logf("%d seeds: %d kills, %d pauses, %d cuts, %d prepared steps taken over by a new owner, %d crossings announced twice (an owner died between its commit and its standby learning of it)",
		seeds, kills, pauses, cuts, takeovers, dups)
	if kills == 0 || takeovers == 0 || cuts == 0 {
		t.Fatalf("the simulation never killed or cut off an owner mid-step (kills %d, takeovers %d, cuts %d)", kills, takeovers, cuts)
	}
}

// The smallest case, step by step: the owner prepares a step with its
// standby and dies before writing it; the standby takes over, commits it
// as its own, and it is raised once.
func TestAlertLogOwnerDiesAfterPrepare(t *testing.T) {
	now := time.Unix(0, 0)
	a := NewAlertLog(AlertLogConfig{Self: "a", Cluster: true}, 0, 0, nil)
	b := NewAlertLog(AlertLogConfig{Self: "b", Cluster: true}, 0, 0, nil)
	deliver := func(from *AlertLog, to *AlertLog) {
		for _, m := range from.Ready().Sends {
			if m.To == to.cfg.Self {
				to.Receive(m, now)
			}
		}
	}
	a.Place(1, "a", "b", []string{"a", "b"}, nil, now)
	b.Place(1, "a", "b", []string{"a", "b"}, nil, now)
	deliver(a, b) // sync
	deliver(b, a) // answer: a is ready
	if _, _, ok := a.Evaluate(); !ok {
		t.Fatal("the owner did not catch up")
	}
	if !a.Propose(0, [][]byte{[]byte("x@1")}, map[string][]byte{"x": {1}}, 0, now) {
		t.Fatal("proposal refused")
	}
	deliver(a, b) // prepare
	if rd := b.Ready(); len(rd.Writes) != 1 || !rd.Writes[0].Prepared || !rd.Writes[0].Sync || rd.Writes[0].PreparedAt != 1 ||
		len(rd.Sends) != 1 || rd.Sends[0].Prepared != 1 {
		t.Fatalf("standby: %+v", rd)
	}
	// a dies; b owns the alerts alone.
	b.Place(2, "b", "", []string{"b"}, nil, now)
	rd := b.Ready()
	if len(rd.Writes) != 1 || !rd.Writes[0].Announce || !rd.Writes[0].Sync || string(rd.Writes[0].Records[0]) != "x@1" {
		t.Fatalf("the new owner did not commit the prepared step: %+v", rd)
	}
	if v, total, _ := b.Version(); v != 1 || total != 1 {
		t.Fatalf("version %d, %d records", v, total)
	}
	// The next evaluation starts after it.
	if base, st, ok := b.Evaluate(); !ok || base != 1 || st["x"][0] != 1 {
		t.Fatalf("evaluate from %d %v %v", base, st, ok)
	}
}

// An owner that was stopped (a stale owner) cannot commit once the others
// applied the placement that moved its alerts: its prepare is fenced.
func TestAlertLogStaleOwnerFenced(t *testing.T) {
	now := time.Unix(0, 0)
	a := NewAlertLog(AlertLogConfig{Self: "a", Cluster: true}, 0, 0, nil)
	b := NewAlertLog(AlertLogConfig{Self: "b", Cluster: true}, 0, 0, nil)
	a.Place(1, "a", "b", []string{"a", "b"}, nil, now)
	a.Ready()
	a.Receive(AlertMsg{Kind: AlertAnswer, From: "b", Placement: 1}, now)
	b.Place(2, "b", "", []string{"b"}, nil, now)
	b.Ready()
	a.Propose(0, [][]byte{[]byte("x@1")}, map[string][]byte{"x": {1}}, 0, now)
	for _, m := range a.Ready().Sends {
		b.Receive(m, now)
	}
	rd := b.Ready()
	if len(rd.Writes) != 0 || len(rd.Sends) != 1 || !rd.Sends[0].Fenced {
		t.Fatalf("a stale owner's prepare was not fenced: %+v", rd)
	}
	a.Receive(rd.Sends[0], now)
	if rd := a.Ready(); len(rd.Writes) != 0 {
		t.Fatalf("the stale owner committed: %+v", rd)
	}
}

// The owner and its standby are cut off from the other three of five
// nodes, and fenced: the owner evaluates nothing and the standby refuses
// its prepares (it never learns of the placement the others make without
// them), so the new owner on the other side is the only one to raise what
// comes next. Placed again, the owner catches up before it evaluates.
func TestAlertLogCutOffOwnerAndStandbyFenced(t *testing.T) {
	now := time.Unix(0, 0)
	a := NewAlertLog(AlertLogConfig{Self: "a", Cluster: true}, 0, 0, nil)
	b := NewAlertLog(AlertLogConfig{Self: "b", Cluster: true}, 0, 0, nil)
	five := []string{"a", "b", "c", "d", "e"}
	a.Place(1, "a", "b", five, nil, now)
	b.Place(1, "a", "b", five, nil, now)
	a.Ready()
	b.Ready()
	for _, n := range []string{"b", "c", "d", "e"} {
		a.Receive(AlertMsg{Kind: AlertAnswer, From: n, Placement: 1}, now)
	}
	if _, _, ok := a.Evaluate(); !ok {
		t.Fatal("the owner did not catch up")
	}
	a.Fence()
	b.Fence()
	if _, _, ok := a.Evaluate(); ok {
		t.Fatal("a fenced owner may evaluate")
	}
	if a.Propose(0, [][]byte{[]byte("x@1")}, map[string][]byte{"x": {1}}, 0, now) {
		t.Fatal("a fenced owner's step was taken")
	}
	a.Tick(now.Add(time.Hour))
	if rd := a.Ready(); len(rd.Writes)+len(rd.Sends) != 0 {
		t.Fatalf("a fenced owner acts: %+v", rd)
	}
	// A prepare sent just before the fence reaches the standby after it.
	b.Receive(AlertMsg{Kind: AlertPrepare, From: "a", To: "b", Placement: 1,
		AlertStep: AlertStep{Version: 1, Records: [][]byte{[]byte("x@1")}}, Total: 1}, now)
	if rd := b.Ready(); len(rd.Sends) != 1 || !rd.Sends[0].Fenced || b.prepared != nil {
		t.Fatalf("a fenced standby took a prepare: %+v", rd)
	}
	// The cut heals and nothing was placed meanwhile (a fence on every
	// node at once, a loaded machine): the same placement again, and the
	// owner first catches up.
	a.Place(1, "a", "b", five, nil, now) // not newer: nothing changes
	if !a.Fenced() {
		t.Fatal("a placement of the same epoch ended the fence")
	}
	a.Unfence(now)
	if _, _, ok := a.Evaluate(); ok || a.Fenced() {
		t.Fatal("unfenced, the owner evaluates before it caught up, or is still fenced")
	}
	if rd := a.Ready(); len(rd.Sends) != 4 || rd.Sends[0].Kind != AlertSync {
		t.Fatalf("unfenced, the owner does not catch up: %+v", rd)
	}
	for _, n := range []string{"b", "c", "d", "e"} {
		a.Receive(AlertMsg{Kind: AlertAnswer, From: n, Placement: 1}, now)
	}
	if _, _, ok := a.Evaluate(); !ok {
		t.Fatal("caught up again, the owner may not evaluate")
	}
	// Or the others placed the alerts on c meanwhile.
	a.Fence()
	a.Place(2, "c", "d", five, nil, now)
	if _, _, ok := a.Evaluate(); ok || a.Fenced() {
		t.Fatal("placed again, a is still fenced, or owns the alerts")
	}
}

// Two nodes hold a prepared step of the same version: one its owner
// dropped at a placement change (X, prepared under epoch 1), one it
// prepared again under epoch 2, committed and announced (Y) before it
// died. The new owner takes Y over, not X.
func TestAlertLogNewestPreparedTakenOver(t *testing.T) {
	now := time.Unix(0, 0)
	logs := map[string]*AlertLog{}
	for _, n := range []string{"a", "b", "c"} {
		logs[n] = NewAlertLog(AlertLogConfig{Self: n, Cluster: true}, 0, 0, nil)
	}
	// deliver hands every message sent to the nodes in to, and drops the
	// others; it returns what was written.
	deliver := func(to ...string) (writes []AlertWrite) {
		for busy := true; busy; {
			busy = false
			for _, n := range []string{"a", "b", "c"} {
				rd := logs[n].Ready()
				writes = append(writes, rd.Writes...)
				for _, m := range rd.Sends {
					if slices.Contains(to, m.To) {
						logs[m.To].Receive(m, now)
						busy = true
					}
				}
			}
		}
		return writes
	}
	place := func(epoch uint64, owner, standby string, members ...string) {
		for _, n := range members {
			logs[n].Place(epoch, owner, standby, members, nil, now)
		}
	}
	place(1, "a", "c", "a", "b", "c")
	deliver("a", "b", "c")
	logs["a"].Propose(0, [][]byte{[]byte("X")}, map[string][]byte{"x": {1}}, 0, now)
	deliver("c") // c holds X; its acknowledgement is lost
	place(2, "a", "b", "a", "b")
	deliver("a", "b")
	if !logs["a"].Propose(0, [][]byte{[]byte("Y")}, map[string][]byte{"x": {2}}, 0, now) {
		t.Fatal("proposal refused")
	}
	var committed bool
	for _, m := range logs["a"].Ready().Sends {
		logs[m.To].Receive(m, now) // the prepare to b
	}
	for _, m := range logs["b"].Ready().Sends {
		logs["a"].Receive(m, now) // its acknowledgement: a commits Y
	}
	for _, w := range logs["a"].Ready().Writes {
		committed = committed || (w.Announce && string(w.Records[0]) == "Y")
	}
	if !committed {
		t.Fatal("the owner did not commit Y")
	}
	// a dies before b learns of the commit; c comes back.
	place(3, "c", "b", "b", "c")
	writes := deliver("b", "c")
	if len(writes) != 1 || string(writes[0].Records[0]) != "Y" {
		t.Fatalf("the new owner committed %+v, want Y", writes)
	}
}

const simWindows = 200

// crossing: the truth raises an alert at these windows.
func crossing(w uint64) bool { return w%7 == 3 || w%11 == 5 }

var simTruth = truth(simWindows)

func truth(upto uint64) []string {
	var out []string
	for w := uint64(1); w <= upto; w++ {
		if crossing(w) {
			out = append(out, fmt.Sprint("x@", w))
		}
	}
	return out
}

type simState int

const (
	simUp     simState = iota // running, a member of the placement
	simPaused                 // stopped (SIGSTOP): the others placed without it
	simStale                  // running again, not yet a member: a stale owner
	simDead
	simCut // running, cut off from the majority (fenced): the others placed without it
)

type simNode struct {
	name       string
	state      simState
	log        *AlertLog
	writes     []AlertWrite // what its store holds, oldest first
	synced     int          // writes[:synced] survive a crash
	records    []string
	checked    int    // records[:checked] passed check
	applied    uint64 // the placement epoch applied
	announced  []string
	evalBase   uint64 // an evaluation in progress: from this version
	evalFrom   map[string][]byte
	evaluating bool
}

func (n *simNode) running() bool {
	return n.state == simUp || n.state == simStale || n.state == simCut
}

type simLink struct{ from, to string }

type alertSim struct {
	t         *testing.T
	seed      uint64
	rng       *rand.Rand
	now       time.Time
	nodes     map[string]*simNode
	names     []string // in rendezvous order for the alerts
	links     map[simLink][]AlertMsg
	linkKeys  []simLink
	epoch     uint64
	complete  uint64 // windows complete
	faults    bool
	retry     time.Duration
	kills     int
	pauses    int
	cuts      int
	takeovers int
	// cutOff: the nodes cut off whose lease has not run out, for lease
	// more steps (cut).
	cutOff []string
	lease  int
	raised map[int]string // the record at each position of the log, once raised
	// forgetPrepared: a restarted node forgets the step its store holds
	// prepared, as before AlertLog.RestorePrepared.
	forgetPrepared bool
}

func newAlertSim(t *testing.T, seed uint64) *alertSim {
	s := &alertSim{t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, 7)), now: time.Unix(0, 0), nodes: map[string]*simNode{},
		links: map[simLink][]AlertMsg{}, raised: map[int]string{}}
	s.retry = time.Duration(5+s.rng.IntN(40)) * 10 * time.Millisecond // a step is 10ms
	s.names = []string{"n0", "n1", "n2"}
	if seed%2 == 1 {
		s.names = append(s.names, "n3", "n4")
	}
	s.rng.Shuffle(len(s.names), func(i, j int) { s.names[i], s.names[j] = s.names[j], s.names[i] })
	for _, n := range s.names {
		s.nodes[n] = &simNode{name: n, log: NewAlertLog(AlertLogConfig{Self: n, Cluster: true, Retry: s.retry}, 0, 0, nil)}
	}
	s.epoch = 1
	for _, n := range s.names {
		s.apply(s.nodes[n])
	}
	return s
}

// placement: the owner is the first member in rendezvous order, the
// standby the second.
func (s *alertSim) placement() (owner, standby string, members []string) {
	for _, n := range s.names {
		if s.nodes[n].state == simUp {
			members = append(members, n)
		}
	}
	owner = members[0]
	if len(members) > 1 {
		standby = members[1]
	}
	return owner, standby, members
}

func (s *alertSim) apply(n *simNode) {
	owner, standby, members := s.placement()
	n.applied = s.epoch
	n.log.Place(s.epoch, owner, standby, members, nil, s.now)
	s.carry(n, true)
}

// carry carries out a node's actions: writes to its store, then sends.
// takeover: the actions follow a placement or a catch-up's answer.
func (s *alertSim) carry(n *simNode, takeover bool) {
	rd := n.log.Ready()
	for _, w := range rd.Writes {
		if w.Prepared {
			n.writes = append(n.writes, w) // synced: it survives a crash
			n.synced = len(n.writes)
			continue
		}
		if w.First != uint64(len(n.records)) {
			s.fatalf("%s: write from record %d on a log of %d", n.name, w.First, len(n.records))
		}
		if w.Announce && takeover {
			s.takeovers++ // a catch-up committed a prepared step
		}
		n.writes = append(n.writes, w)
		if w.Sync {
			n.synced = len(n.writes)
		}
		for _, r := range w.Records {
			n.records = append(n.records, string(r))
			if w.Announce {
				n.announced = append(n.announced, string(r))
			}
		}
	}
	for _, m := range rd.Sends {
		if m.Kind == AlertCommit || m.Kind == AlertAnswer {
			for _, r := range n.records[m.First:m.Total] {
				m.Records = append(m.Records, []byte(r))
			}
		}
		l := simLink{n.name, m.To}
		if _, ok := s.links[l]; !ok {
			s.linkKeys = append(s.linkKeys, l)
		}
		s.links[l] = append(s.links[l], m)
	}
	s.check(n)
	// Targeted faults: an owner dies, or stops, right after it committed
	// a step or prepared one, with what it was sending.
	if s.faults && n.log.owner == n.name && len(rd.Writes)+len(rd.Sends) > 0 && s.rng.IntN(12) == 0 && s.replicated() && s.allUp() {
		s.fail(n)
	}
}

// fail kills, pauses or (of five nodes) cuts off n.
func (s *alertSim) fail(n *simNode) {
	switch r := s.rng.IntN(3); {
	case r == 2 && len(s.names) == 5 && s.cut():
	case r == 0:
		s.kill(n)
	default:
		s.pause(n)
	}
}

// cut cuts the owner and its standby off from the other three, if one of
// those holds the newest committed step (Replicas = 2: a node that held
// it may have been restarted since, and lost the end of its log). The two go
// on, evaluating and preparing between them, until their lease runs out
// (lease: a number of steps); then they are fenced, before the others
// place without them: they stopped hearing a majority, and their lease
// runs out before the others declare them dead (cluster/doc.go,
// "Quorum"). What they commit meanwhile the other side must hold: an
// owner commits only once a majority of the members holds its step.
func (s *alertSim) cut() bool {
	owner, standby, _ := s.placement()
	if standby == "" || s.holders(func(n *simNode) bool { return n.name != owner && n.name != standby }) == 0 {
		return false // the other side must hold what was committed before (Replicas = 2)
	}
	s.cuts++
	s.cutOff = []string{owner, standby}
	for _, name := range s.cutOff {
		s.nodes[name].state = simCut
	}
	s.lease = 1 + s.rng.IntN(40)
	return true
}

// leaseOut fences the nodes cut off once their lease ran out, and the
// others place without them.
func (s *alertSim) leaseOut() {
	if s.lease == 0 {
		return
	}
	if s.lease--; s.lease > 0 {
		return
	}
	for _, name := range s.cutOff {
		n := s.nodes[name]
		if n.state == simCut {
			n.log.Fence()
			s.carry(n, false)
		}
	}
	s.cutOff = nil
	s.epoch++
}

// across: a message between the two sides of a cut is lost.
func (s *alertSim) across(l simLink) bool {
	return (s.nodes[l.from].state == simCut) != (s.nodes[l.to].state == simCut)
}

func (s *alertSim) allUp() bool {
	for _, n := range s.nodes {
		if n.state != simUp {
			return false
		}
	}
	return true
}

func (s *alertSim) pause(n *simNode) {
	s.pauses++
	n.state = simPaused
	s.epoch++
}

// check: a node's log is a prefix of the truth, and each of its records
// is the one raise of that crossing (the same as any other node holds at
// that position, or held before it died).
func (s *alertSim) check(n *simNode) {
	want := simTruth
	if len(n.records) > len(want) {
		s.fatalf("%s holds %d records, more than the %d crossings", n.name, len(n.records), len(want))
	}
	for i, r := range n.records[n.checked:] {
		i += n.checked
		if crossingOf(r) != want[i] {
			s.fatalf("%s holds %v, not a prefix of %v", n.name, n.records, want)
		}
		if prev, ok := s.raised[i]; ok && prev != r {
			s.fatalf("record %d raised twice: %q and %q (on %s)", i, prev, r, n.name)
		}
		s.raised[i] = r
	}
	n.checked = len(n.records)
}

// crossingOf strips who raised a record.
func crossingOf(r string) string {
	if i := strings.IndexByte(r, ' '); i >= 0 {
		return r[:i]
	}
	return r
}

func (s *alertSim) fatalf(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf("seed %d: "+format, append([]any{s.seed}, args...)...)
}

func (s *alertSim) running() []*simNode {
	var out []*simNode
	for _, n := range s.names {
		if s.nodes[n].running() {
			out = append(out, s.nodes[n])
		}
	}
	return out
}

// evaluate is the truth's evaluator: from the state ("x": the last window
// evaluated) up to a few windows further, at most to the complete ones.
// A record names who raised it.
func (s *alertSim) evaluate(n *simNode, states map[string][]byte) (recs [][]byte, progressed map[string][]byte) {
	var last uint64
	if b, ok := states["x"]; ok {
		last = binary.BigEndian.Uint64(b)
	}
	hi := min(s.complete, last+1+uint64(s.rng.IntN(5)))
	for w := last + 1; w <= hi; w++ {
		if crossing(w) {
			recs = append(recs, []byte(fmt.Sprintf("x@%d by %s at %d", w, n.name, n.applied)))
		}
	}
	if hi > last {
		progressed = map[string][]byte{"x": binary.BigEndian.AppendUint64(nil, hi)}
	}
	return recs, progressed
}

func (s *alertSim) run(steps int) {
	for i := range steps {
		s.faults = i < steps*2/3
		s.step()
	}
	s.faults = false
	// The input ends: every node comes back and applies the placement,
	// and the log settles.
	s.complete = simWindows
	for _, name := range s.names {
		switch n := s.nodes[name]; n.state {
		case simDead:
			s.restart(n)
		case simPaused:
			n.state = simStale
			fallthrough
		case simStale, simCut:
			s.rejoin(n)
		}
	}
	want := simTruth
	for i := 0; i < 20000 && !s.settled(want); i++ {
		s.step()
	}
	for _, n := range s.nodes {
		got := make([]string, len(n.records))
		for i, r := range n.records {
			got[i] = crossingOf(r)
		}
		if !slices.Equal(got, want) {
			for _, n := range s.nodes {
				l := n.log
				s.t.Logf("%s: version %d, %d records, owner %s, standby %s, ready %v, pending %v, prepared %v", n.name, l.version, l.total,
					l.owner, l.standby, l.ready, l.pending != nil, l.prepared != nil)
			}
			owner, _, _ := s.placement()
			s.fatalf("%s ends with %d records, want %d (owner %s, epoch %d, applied %d)", n.name, len(n.records), len(want), owner, s.epoch, n.applied)
		}
	}
	seen := map[string]int{}
	for _, n := range s.nodes {
		for _, r := range n.announced {
			seen[crossingOf(r)]++
		}
	}
	for _, r := range want {
		if seen[r] == 0 {
			s.fatalf("%s was never announced", r)
		}
	}
}

// settled: every node is up, holds the whole truth, and nothing is in
// flight.
func (s *alertSim) settled(want []string) bool {
	for _, n := range s.nodes {
		if n.state != simUp || n.applied < s.epoch || len(n.records) != len(want) {
			return false
		}
	}
	for _, q := range s.links {
		if len(q) > 0 {
			return false
		}
	}
	return true
}

func (s *alertSim) dups() int {
	seen := map[string]int{}
	for _, n := range s.nodes {
		for _, r := range n.announced {
			seen[crossingOf(r)]++
		}
	}
	d := 0
	for _, c := range seen {
		d += c - 1
	}
	return d
}

func (s *alertSim) step() {
	s.now = s.now.Add(10 * time.Millisecond)
	s.leaseOut()
	switch r := s.rng.IntN(100); {
	case r < 40: // every link delivers its next message, or loses it
		for _, l := range s.linkKeys {
			if len(s.links[l]) == 0 || s.nodes[l.to].state == simPaused || s.rng.IntN(2) == 0 {
				continue
			}
			m := s.links[l][0]
			s.links[l] = s.links[l][1:]
			if (s.faults && s.rng.IntN(20) == 0) || s.across(l) {
				continue // lost
			}
			if n := s.nodes[l.to]; n.running() {
				n.log.Receive(m, s.now)
				s.carry(n, m.Kind == AlertAnswer)
			}
		}
	case r < 55:
		for _, n := range s.running() {
			n.log.Tick(s.now)
			s.carry(n, false)
		}
	case r < 70: // an evaluation starts or ends
		rn := s.running()
		n := rn[s.rng.IntN(len(rn))]
		if !n.evaluating {
			if base, st, ok := n.log.Evaluate(); ok {
				n.evaluating, n.evalBase, n.evalFrom = true, base, st
			}
			return
		}
		n.evaluating = false
		recs, progressed := s.evaluate(n, n.evalFrom)
		if len(progressed) > 0 {
			n.log.Propose(n.evalBase, recs, progressed, 0, s.now)
			s.carry(n, false)
		}
	case r < 80:
		s.complete = min(simWindows, s.complete+1)
	case r < 90: // a node applies the newest placement (late)
		for _, n := range s.running() {
			if n.state != simCut && n.applied < s.epoch && s.rng.IntN(2) == 0 {
				s.apply(n)
				return
			}
		}
	default:
		if !s.faults {
			return
		}
		for _, name := range s.names {
			switch n := s.nodes[name]; n.state {
			case simDead:
				s.restart(n)
				return
			case simPaused:
				n.state = simStale // resumes: it still believes its old placement
				return
			case simStale:
				s.rejoin(n)
				return
			case simCut:
				if s.lease == 0 { // after the fence
					s.rejoin(n) // a cut heals one node at a time
					return
				}
			}
		}
		if s.rng.IntN(3) > 0 || !s.replicated() || !s.allUp() {
			return
		}
		s.fail(s.nodes[s.names[s.rng.IntN(len(s.names))]])
	}
}

// replicated: the newest committed step is held by two running nodes, in
// their logs or prepared (the same step, not one its owner dropped): one
// more failure loses nothing (Replicas = 2). A node just restarted keeps
// the step its store holds prepared, but may have lost the end of its log:
// failing another at once would be a second failure.
func (s *alertSim) replicated() bool {
	return s.holders(func(*simNode) bool { return true }) >= 2
}

// holders counts the running nodes among those of which holds the newest
// committed step, in their logs or in their stores prepared.
func (s *alertSim) holders(of func(*simNode) bool) int {
	var newest *simNode
	for _, name := range s.names {
		if n := s.nodes[name]; n.running() && (newest == nil || n.log.version > newest.log.version) {
			newest = n
		}
	}
	holders := 0
	for _, name := range s.names {
		n := s.nodes[name]
		if !n.running() || !of(n) {
			continue
		}
		if n.log.version == newest.log.version {
			holders++
			continue
		}
		if p := storedPrepared(n); p != nil && p.Version == newest.log.version && p.Total() == uint64(len(newest.records)) {
			same := true
			for i, r := range p.Records {
				same = same && string(r) == newest.records[p.First+uint64(i)]
			}
			if same {
				holders++
			}
		}
	}
	return holders
}

// storedPrepared is the step n's store holds prepared (nil: none): it
// acknowledged holding it, and keeps it through a restart.
func storedPrepared(n *simNode) *AlertStep {
	for i := len(n.writes) - 1; i >= 0; i-- {
		if n.writes[i].Prepared {
			return &n.writes[i].AlertStep
		}
	}
	return nil
}

func (s *alertSim) kill(n *simNode) {
	s.kills++

	n.state = simDead
	// Writes after the last synced one may be lost, from some point on,
	// and so may what it was sending.
	keep := n.synced + s.rng.IntN(len(n.writes)-n.synced+1)
	n.writes = n.writes[:keep]
	n.synced = keep
	for _, l := range s.linkKeys {
		if q := s.links[l]; l.from == n.name {
			s.links[l] = q[:s.rng.IntN(len(q)+1)]
		}
	}
	s.epoch++
}

func (s *alertSim) restart(n *simNode) {
	var version uint64
	states := map[string][]byte{}
	n.records, n.checked = n.records[:0], 0
	var prepared *AlertWrite
	for _, w := range n.writes {
		if w.Prepared {
			prepared = &w
			continue
		}
		version = w.Version
		states = w.States
		for _, r := range w.Records {
			n.records = append(n.records, string(r))
		}
	}
	n.evaluating, n.applied = false, 0
	n.log = NewAlertLog(AlertLogConfig{Self: n.name, Cluster: true, Retry: s.retry}, version, uint64(len(n.records)), states)
	if prepared != nil && !s.forgetPrepared {
		n.log.RestorePrepared(prepared.AlertStep, prepared.PreparedAt)
	}
	for l := range s.links {
		if l.to == n.name || l.from == n.name {
			s.links[l] = nil // its connections were reset
		}
	}
	s.rejoin(n)
}

// rejoin makes a running node a member again.
func (s *alertSim) rejoin(n *simNode) {
	n.state = simUp
	s.epoch++
	s.apply(n)
}
