package cluster

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/tessera-streams/tessera/actor"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/shard"
)

// Placement is where a flow's fragments and source partitions run: every
// node computes the same one from the same members (rendezvous hashing).
type Placement struct {
	Epoch     uint64            `json:"epoch"`
	Members   []string          `json:"members"`
	Fragments []string          `json:"fragments"` // owner of each fragment
	Standbys  []string          `json:"standbys"`  // the standby of each fragment ("" with one member): keeps its checkpoints
	Readers   []string          `json:"readers"`   // owner of each source partition, in source order
	Remotes   map[string]string `json:"-"`
	Leaving   map[string]string `json:"-"` // nodes leaving, still alive: they hand off

	// Alerts: the node that evaluates the flow's alerts and its standby
	// (none for a flow without alerts).
	Alerts []string `json:"alerts,omitempty"`
}

// Replicas is how many nodes keep a fragment's checkpoints: its owner and
// a standby, the next node in rendezvous order, which takes the fragment
// over if the owner dies.
const Replicas = 2

// Place computes the placement of plan over members. Source partition i is
// placed as if it were fragment fragments+i, so that partitions spread
// independently of fragments; the flow's alerts as if they were the
// fragment after the partitions, with an owner and a standby like a
// fragment's. A flow with keyed sources (flows.WithKeyedPartitions, of P
// partitions) places its fragments in P groups, f ≡ q (mod P) together,
// and partition q of each keyed source with group q (shard.Spec): its
// records stay on the node.
//
// The alerts share one owner rather than one per alert: their records
// form one log, numbered for /v1/alerts/watch, written with their states
// in one synced batch. Evaluating an alert is a query to every fragment,
// so the load it moves is small; a flow with many alerts could place
// each on its own, with a log per alert.
func Place(plan *flowcore.Plan, members []Member, epoch uint64) Placement {
	p := Placement{Epoch: epoch, Remotes: map[string]string{}}
	for _, m := range members {
		p.Members = append(p.Members, m.Name)
		p.Remotes[m.Name] = m.Remote
	}
	slices.Sort(p.Members)
	l := plan.LayoutSpec().LayOut(p.Members)
	p.Fragments, p.Standbys, p.Readers, p.Alerts = l.Fragments, l.Standbys, l.Readers, l.Alerts
	return p
}

func (p Placement) engine(self string) *actor.ClusterConfig {
	return &actor.ClusterConfig{Self: self, Remote: p.Remotes[self], Epoch: p.Epoch,
		Fragments: p.Fragments, Standbys: p.Standbys, Readers: p.Readers, Remotes: p.Remotes, Leaving: p.Leaving, Alerts: p.Alerts}
}

// settle waits until the node's Follower places for the first time (at
// least expect members alive, a majority of the last agreed membership
// among them, the member list and epoch still for a second), then returns
// the placement, the agreed membership it counted against, and the
// Follower's step, which Run reports carried out once the engine started.
// kept is the membership the node kept (loadAgreed; zero if it never
// placed).
func (n *Node) settle(ctx context.Context, m *Membership, plan *flowcore.Plan, expect int, kept agreed) (Placement, agreed, shard.Step, error) {
	// A node that placed before counts a majority of the membership it
	// last agreed on, as follow does: restarted on the minority side of a
	// partition, it waits rather than start every fragment from its own
	// copies while the majority goes on.
	cfg := shard.DefaultFollow
	cfg.Expect = expect
	n.follower = shard.NewFollower(cfg)
	var logged time.Time
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		ms := m.Members()
		leaving := m.Leaving()
		counted := newestAgreed(kept, m) // it may have missed placements while it was down
		// Before it starts, a node counts the members it sees: none heard
		// its probes for long enough to count round trips yet.
		majority := quorum(counted, kept, side(ms, leaving), m, n.cfg.Name)
		// A node that joined knows of no placement, its own or a peer's,
		// and sees only nodes as new as itself: those that began the
		// cluster and placed may all be down, with settled checkpoints a
		// history begun anew here would deliver other values for (sim
		// visits seed 6345). It waits for one of them, or the founder.
		orphan := len(n.cfg.Join) > 0 && counted.Epoch == 0 && !m.Founded()
		majority = majority && !orphan
		now := time.Now()
		s := n.follower.Next(shard.View{Now: now, Members: names(ms), Leaving: sortedNames(leaving),
			Epoch: m.Epoch(), Agreed: counted.Members, Majority: majority})
		if s.Kind == shard.StepPlace {
			return Place(plan, ms, s.Epoch), counted, s, nil
		}
		if now.Sub(logged) >= 2*time.Second {
			logged = now
			n.cfg.Logger.Info("waiting for the cluster to settle", "members", names(ms), "expect", expect,
				"agreed", counted.Members, "majority", majority)
			if orphan {
				n.cfg.Logger.Warn("no member seen has applied a placement or began the cluster: waiting for one", "members", names(ms))
			}
		}
		select {
		case <-ctx.Done():
			return Placement{}, agreed{}, shard.Step{}, ctx.Err()
		case <-t.C:
		}
	}
}

// placeFirst waits for the cluster to settle and makes the node's first
// placement: kept is the membership it last agreed on (DataDir), zero for
// a node that never placed. It returns the engine's cluster config and
// the follower's step that the engine's start carries out.
func (n *Node) placeFirst(ctx context.Context, plan *flowcore.Plan, kept agreed) (*actor.ClusterConfig, shard.Step, error) {
	place, counted, first, err := n.settle(ctx, n.mem, plan, max(n.cfg.Expect, 1), kept)
	if err != nil {
		return nil, shard.Step{}, err
	}
	n.place = place
	n.agr = counted.next(place, kept)
	if err := saveAgreed(n.cfg.DataDir, n.agr); err != nil {
		return nil, shard.Step{}, err
	}
	n.mem.SetAgreed(n.agr)
	cl := place.engine(n.cfg.Name)
	cl.Agreement, cl.Caught = n.agr.agreement(), kept.Caught
	// Cold (ColdStart) when no member runs and the cluster placed
	// before: this node did, or a member gossips it did (counted).
	n.joinRunning(ctx, plan, cl, kept.Epoch > 0 || counted.Epoch > 0)
	return cl, first, nil
}

func names(ms []Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return out
}

// sortedNames are the names of a name → address map, sorted.
func sortedNames(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }

// joinRunning prepares a node that joins a running cluster: the fragments
// it takes from the running nodes wait for their hand-off, and the source
// partitions it takes start where the cluster committed them (the running
// nodes' GET /v1/cluster), not at the start of this node's empty store.
// The running nodes own what the placement over them alone gives them.
// restart: the node, or a member it sees, applied a placement before
// (DataDir/membership.json, the members' gossiped agreed membership).
func (n *Node) joinRunning(ctx context.Context, plan *flowcore.Plan, cl *actor.ClusterConfig, restart bool) {
	var running []Member
	for _, m := range n.mem.Members() {
		if m.Running && m.Name != n.cfg.Name {
			running = append(running, m)
		}
	}
	if len(running) == 0 {
		// The cluster starts, or restarts: nothing to take over. In a
		// restart (this node, or a member, placed before) the others may
		// keep newer copies of its fragments than its own: it was away
		// while they ran them (sim visits seed 10488), or it is new and
		// has none while they restart (sim visits seed 53505).
		cl.ColdStart = restart
		return
	}
	prev := Place(plan, running, 0)
	cl.AwaitHandoff = make([]bool, len(cl.Fragments))
	cl.HandoffFrom = make([]string, len(cl.Fragments))
	for f, owner := range cl.Fragments {
		cl.AwaitHandoff[f] = owner == n.cfg.Name && prev.Fragments[f] != ""
		if cl.AwaitHandoff[f] {
			cl.HandoffFrom[f] = prev.Fragments[f]
		}
	}
	type part struct {
		source    string
		partition int
	}
	var parts []part
	for _, s := range plan.Sources() {
		for p := range s.Partitions {
			parts = append(parts, part{s.Name, p})
		}
	}
	committed := map[part]int64{}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for _, m := range running {
		st, err := n.peerState(ctx, m.HTTP)
		if err != nil {
			n.cfg.Logger.Debug("read a running node's readers", "node", m.Name, "err", err)
			continue
		}
		for _, r := range st.Readers {
			committed[part{r.Source, r.Partition}] = r.Committed
		}
	}
	cl.ReaderFrom = make([]int64, len(cl.Readers))
	for i, owner := range cl.Readers {
		cl.ReaderFrom[i] = -1
		if c, ok := committed[parts[i]]; ok && owner == n.cfg.Name {
			cl.ReaderFrom[i] = c
		}
	}
	n.cfg.Logger.Info("joining a running cluster", "running", names(running))
}

func (n *Node) placement() Placement {
	n.placeMu.Lock()
	defer n.placeMu.Unlock()
	return n.place
}

// caughtUp is the node's agreed membership, its Caught moved up to its
// epoch (kept, and gossiped) once its engine heard enough members after
// they applied it (actor.Engine.CaughtUp).
func (n *Node) caughtUp() agreed {
	n.placeMu.Lock()
	a := n.agr
	n.placeMu.Unlock()
	if a.Caught >= a.Epoch || !n.eng.CaughtUp(a.Epoch) {
		return a
	}
	a.Caught = a.Epoch
	n.placeMu.Lock()
	if n.agr.Epoch == a.Epoch {
		n.agr.Caught = a.Epoch
	}
	n.placeMu.Unlock()
	if err := saveAgreed(n.cfg.DataDir, a); err != nil {
		n.cfg.Logger.Warn("keep the agreed membership", "err", err)
	}
	n.mem.SetAgreed(a)
	n.cfg.Logger.Debug("caught up with what was settled before the placement", "epoch", a.Epoch)
	return a
}

// follow re-places the flow whenever the members change, by the rule of
// the node's shard.Follower (the simulation's nodes follow the same one):
// once the member list and the epoch have been still for a while, every
// node computes the same new placement, and its engine hands off the
// fragments it lost and starts the ones it gained.
//
// On every tick it applies the majority rule (shard.Majority over the
// newest agreed membership, counting the members with a round trip within
// the lease): a node that no majority heard stops every fragment and
// reader at once (actor.Engine.Fence) and places nothing until it sees a
// majority again; then it resumes its old placement if the cluster placed
// nothing newer meanwhile (actor.Engine.Resume), or places the newer one,
// every fragment it is given waiting for its owner's hand-off. See doc.go,
// "Quorum".
func (n *Node) follow(stop <-chan struct{}, plan *flowcore.Plan) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	n.mem.Touch()
	var retold time.Time
	for {
		select {
		case <-stop:
			return
		case <-n.changes:
		case <-n.dead:
			// It ran on while the others saw it dead: they may have placed
			// its fragments elsewhere under placements it never applied.
			if n.follower.Dead() {
				n.eng.Resumed("its membership refuted its death")
			}
			continue
		case <-t.C:
		}
		ms := n.mem.Members()
		leaving := n.mem.Leaving()
		own := n.caughtUp()
		if time.Since(retold) >= shard.DefaultFollow.Retell {
			// A report may be lost: the members that gossip they have
			// not caught up with the placement are told again.
			retold = time.Now()
			n.eng.Retell(n.mem.Behind(own.Epoch))
		}
		counted := newestAgreed(own, n.mem)
		agreed := counted.Members
		l := lease(len(agreed))
		wasFenced := n.follower.Fenced()
		s := n.follower.Next(shard.View{Now: time.Now(), Members: names(ms), Leaving: sortedNames(leaving),
			Epoch: n.mem.Epoch(), Agreed: agreed, Majority: quorum(counted, own, n.mem.Heard(l), n.mem, n.cfg.Name), Lease: l})
		if wasFenced && !n.follower.Fenced() {
			n.fenced.Store(false)
			n.cfg.Logger.Warn("a majority again: this node resumes or places, taking fragments back by hand-off", "sees", names(ms))
		}
		switch s.Kind {
		case shard.StepFence:
			n.fenced.Store(true)
			p := n.placement()
			n.cfg.Logger.Warn("no majority of the last agreed membership heard this node lately: it stops owning until one does",
				"agreed", agreed, "sees", names(ms))
			if err := n.eng.Fence(fenceConfig(plan, p, n.cfg.Name)); err != nil {
				n.cfg.Logger.Error("fence", "err", err)
			}
			n.hist.event(Event{At: time.Now(), Kind: "fenced", Node: n.cfg.Name, Epoch: p.Epoch})
		case shard.StepPlace, shard.StepResume:
			p := Place(plan, ms, s.Epoch)
			p.Leaving = leaving
			apply := n.eng.Place
			next := counted.next(p, own)
			if s.Kind == shard.StepResume {
				apply = n.eng.Resume
				next = own
			}
			cl := p.engine(n.cfg.Name)
			cl.Agreement, cl.Caught = next.agreement(), own.Caught
			err := apply(cl)
			n.follower.Done(s, err)
			if err != nil {
				n.cfg.Logger.Error("apply placement", "step", s.Kind, "epoch", p.Epoch, "err", err)
				continue
			}
			if s.Kind == shard.StepResume {
				// The placement it applied before the fence, at the same
				// epoch: nothing to record again.
				n.cfg.Logger.Warn("no newer placement while fenced: this node resumes its own fragments from its checkpoints", "epoch", p.Epoch)
				continue
			}
			n.placeMu.Lock()
			old := n.place
			n.place, n.agr = p, next
			n.placeMu.Unlock()
			if err := saveAgreed(n.cfg.DataDir, next); err != nil {
				n.cfg.Logger.Warn("keep the agreed membership", "err", err)
			}
			n.mem.SetAgreed(next)
			for _, ev := range moves(old, p, n.mem.Alive, time.Now()) {
				n.hist.event(ev)
				if ev.To == n.cfg.Name {
					n.met.moves.WithLabelValues(ev.Kind).Add(float64(len(ev.Fragments)))
				}
			}
			n.cfg.Logger.Info("placement changed", "epoch", p.Epoch, "members", p.Members)
			if g := plan.KeyGroups(); g > 0 && g < len(p.Members) {
				n.cfg.Logger.Warn("the flow's keyed sources have fewer partitions than the cluster has members: some members own nothing",
					"partitions", g, "members", len(p.Members))
			}
		}
	}
}

// othersCaughtUp reports whether the node applied a placement without
// it, and every live member of that placement gossips it caught up with
// it: a leaver's report may be the one they need (shard.CatchUp).
func (n *Node) othersCaughtUp() bool {
	p := n.placement()
	if slices.Contains(p.Members, n.cfg.Name) {
		return false
	}
	caught, live := n.mem.Caught(), names(n.mem.Members())
	for _, m := range p.Members {
		if slices.Contains(live, m) && caught[m] < p.Epoch {
			return false
		}
	}
	return true
}

// leaveMargin is how long a leaving node stays past the new owners' wait
// for its hand-offs (actor.HandoffWait): a new owner whose hand-off was
// lost starts from its own copy when its wait ends and, finding it stale,
// fetches a newer one from every node — the leaver's among them only if
// it is still there. (Found by the simulation, seed 3950: a hand-off lost
// as the leaver left at the very end of the wait, with the only newest
// copy.)
const leaveMargin = 5 * time.Second

// A leaving node that keeps copies of fragments it does not own stays
// until the placement it applied is over live members only, and at least
// PauseLimit after it announced the leave (a member that died just before
// is noticed by then): a fragment whose owner died is gathered by its new
// owner from the live members' copies (recovery.Gather), and this node's
// may be the newest, which that placement has it hand over (actor.Engine's
// Place) and stay until it is taken. Gone earlier, it would leave the new
// owner an older copy, or none. A member that dies after it left has its
// new standby's copy.
func (n *Node) placedOverLive() bool {
	live := names(n.mem.Members())
	for _, m := range n.placement().Members {
		if m != n.cfg.Name && !slices.Contains(live, m) {
			return false
		}
	}
	return true
}

// handOff leaves gracefully: the node announces it is leaving, so that the
// others place its fragments and source partitions elsewhere, and waits
// (up to actor.HandoffWait + leaveMargin) until it owns nothing, having
// checkpointed what it handed over, and the copies it hands over were
// taken; with copies of others' fragments, as placedOverLive says. A
// fenced node owns nothing only because it stopped everything: its store
// may hold the newest copies of the fragments it owned, which no one else
// keeps, so it waits until it applies a placement again and hands them
// over (sim visits seed 3669: an owner told to leave was fenced, left as
// soon as it saw a majority again, and its fragment had no copy left as
// new as its settled checkpoint). It also waits until it applied a
// placement without it and the members of that one caught up with it
// (othersCaughtUp): they may need its report to catch up (sim seed 7368:
// a leaver that owned nothing left before the placement without it, and
// the last member of that one waited for its report for good).
func (n *Node) handOff() {
	if err := n.mem.SetLeaving(); err != nil {
		n.cfg.Logger.Warn("announce leaving", "err", err)
		return
	}
	if len(n.mem.Members()) == 0 {
		return // the last node: nobody to hand off to
	}
	start := time.Now()
	deadline := start.Add(actor.HandoffWait + leaveMargin)
	for time.Now().Before(deadline) {
		if !n.fenced.Load() && len(n.eng.Fragments()) == 0 && len(n.eng.Readers()) == 0 && n.eng.NetStats().HandoffsPending == 0 &&
			n.othersCaughtUp() && ((time.Since(start) >= PauseLimit && n.placedOverLive()) || !n.eng.KeepsCopies()) {
			n.cfg.Logger.Info("handed off every fragment")
			return
		}
		if len(n.mem.Members()) == 0 {
			// The others are leaving too (a whole cluster stopped at
			// once): every node keeps what it owns in its final
			// checkpoints, for its next start.
			n.cfg.Logger.Info("every node is leaving: keeping the fragments")
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	n.cfg.Logger.Warn("leaving before every fragment was handed off")
}
