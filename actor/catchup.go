package actor

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
	e.catch.Agree(cl.Epoch, cl.Prev, e.self, cl.PrevCaught)
}

// heardReport takes member from's report that it applied placement epoch
// and told this node all it knows (the store holds it).
func (e *Engine) heardReport(epoch uint64, from string, caught bool) {
	e.catchMu.Lock()
	defer e.catchMu.Unlock()
	e.catch.Hear(epoch, from, caught)
}

// reportCaught is what the node's report of its placement says
// (shard.CatchUp.Report).
func (e *Engine) reportCaught() (epoch uint64, caught, tell bool) {
	e.catchMu.Lock()
	defer e.catchMu.Unlock()
	return e.catch.Report()
}

// CaughtUp reports whether the node caught up with what was settled
// before its placement of epoch: it heard a majority of the agreed
// membership before it after they applied it, and one of them (or
// itself) had caught up with the one before that (shard.CaughtUp).
// cluster.Node keeps it with the agreed membership.
func (e *Engine) CaughtUp(epoch uint64) bool {
	e.catchMu.Lock()
	defer e.catchMu.Unlock()
	return e.catch.CaughtUp(epoch)
}
