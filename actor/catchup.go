package actor

import "github.com/tessera-streams/tessera/shard"

// The engine's part in catching up with what was settled before a
// placement (shard.CatchUp, shard.Agreement.Quorum): it tells every
// member all it knows once it applies a placement (tellAllSettled, a
// wire.Settled with placement), counts the members' reports once its
// store holds what they told (settledNews; synced before CaughtUp says
// so), and answers cluster.Node, which counts majorities of the
// memberships before the placement too until the node caught up.

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
//
// The news it caught up from is synced before it says so: the store holds
// it once heardReport counts a report, but only its next sync makes it
// durable, and cluster.Node keeps and gossips what this answers.
func (e *Engine) CaughtUp(epoch uint64) bool {
	e.catchMu.Lock()
	ok := e.catch.CaughtUp(epoch)
	e.catchMu.Unlock()
	if ok {
		if err := e.store.Sync(); err != nil {
			e.cfg.Logger.Warn("sync the news of settled checkpoints", "err", err)
			return false
		}
	}
	return ok
}

// Retell sends the node's report of its placement again to the members
// named: cluster.Node names those that gossip they applied it and have
// not caught up, as a report may be lost. A member whose remote did not
// answer when the placement was applied is sent nothing until a probe
// finds it answering; Retell starts that probe too (probeSilent), and the
// member found is told at once.
func (e *Engine) Retell(members []string) {
	l := e.layout.Load()
	if l == nil {
		return
	}
	e.probeSilent(l)
	if len(members) > 0 {
		if epoch, _, _ := e.reportCaught(); epoch == l.epoch {
			e.report(l, members)
		}
	}
}
