package actor

import (
	"maps"
	"slices"

	"github.com/tessera-streams/tessera/internal/wire"
	"github.com/tessera-streams/tessera/shard"
)

// The engine's part in catching up with what was settled before a
// placement (shard.CatchUp, shard.Quorum): it tells every member all it
// knows once it applies a placement (tellAllSettled, a wire.Settled with
// placement), counts the members' reports once its store holds what they
// told (settledNews), and answers cluster.Node, which counts a majority
// of the agreed membership before too until the node caught up.

// agree starts catching up with cl's placement (none on a resume: the
// epoch is the same).
func (e *Engine) agree(cl *ClusterConfig) {
	e.catchMu.Lock()
	defer e.catchMu.Unlock()
	a := cl.Agreement
	if a.Epoch != cl.Epoch { // a caller that keeps no agreement: this placement alone
		a = shard.Agreement{Placed: shard.Placed{Epoch: cl.Epoch, Members: cl.members()}}
	}
	e.catch.Agree(a, e.self, cl.Caught)
}

// heardReport takes member from's report that it applied placement epoch
// and told this node all it knows (the store holds it).
func (e *Engine) heardReport(epoch uint64, from string, caught uint64) {
	e.catchMu.Lock()
	defer e.catchMu.Unlock()
	e.catch.Hear(epoch, from, caught)
}

// reportCaught is what the node's report of its placement says
// (shard.CatchUp.Report).
func (e *Engine) reportCaught() (epoch, caught uint64, tell bool) {
	e.catchMu.Lock()
	defer e.catchMu.Unlock()
	return e.catch.Report()
}

// CaughtUp reports whether the node caught up with what was settled
// before its placement of epoch: what the members told it after they
// applied it, and what it knew, knows of every checkpoint settled before
// it (shard.CatchUp). cluster.Node keeps it with the agreed membership.
func (e *Engine) CaughtUp(epoch uint64) bool {
	e.catchMu.Lock()
	defer e.catchMu.Unlock()
	return e.catch.CaughtUp(epoch)
}

// Retell sends the node's report of its placement again to the members
// named: cluster.Node names those that gossip they applied it and have
// not caught up, as a report may be lost.
func (e *Engine) Retell(members []string) {
	l := e.layout.Load()
	if l == nil || l.cl == nil || len(members) == 0 {
		return
	}
	e.settledMu.Lock()
	s := maps.Clone(e.settled)
	e.settledMu.Unlock()
	epoch, caught, tell := e.reportCaught()
	if epoch != l.epoch || (!tell && len(s) == 0) {
		return
	}
	msg := &wire.Settled{Flow: e.plan.Name(), Placement: epoch, From: e.self, Caught: caught}
	for _, f := range slices.Sorted(maps.Keys(s)) {
		msg.Fragments = append(msg.Fragments, uint32(f))
		msg.Epochs = append(msg.Epochs, s[f])
	}
	for _, m := range members {
		if pid := memberPID(l.cl, m, e.plan.Name()+"/replica"); pid != nil && m != e.self {
			e.sys.Root.Send(pid, msg)
		}
	}
}
