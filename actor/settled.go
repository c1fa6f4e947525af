package actor

import (
	"maps"
	"slices"

	pa "github.com/asynkron/protoactor-go/actor"

	"github.com/tessera-streams/tessera/internal/wire"
	"github.com/tessera-streams/tessera/recovery"
)

// What this node knows of the newest checkpoint every fragment settled
// (recovery.Settled): a fragment that would start from an older copy —
// every newer one is on members that are down — stays unavailable and
// gathers the live members' copies again (fragmentActor.lack) instead of
// releasing other values under the ids of outputs the sinks have. A
// fragment here that settles a checkpoint tells every live member at once
// (wire.Settled), or before it settles, where it needs their answers to
// release it (fragmentActor.copied, recovery.Known); every node tells the
// others all it knows when it applies a placement, for the members that
// were down or cut off; and hand-offs and the answers to a gather carry
// the sender's knowledge of their fragment. The store keeps it across
// restarts.

// settledOf is the newest settled checkpoint of fragment f this node
// knows of (0: none).
func (e *Engine) settledOf(f int) uint64 {
	e.settledMu.Lock()
	defer e.settledMu.Unlock()
	return e.settled[f]
}

// noteSettled records that fragment f settled a checkpoint of epoch. tell:
// the fragment runs here, and every live member is told at once if it is
// news. It reports whether the store holds the news (to be synced with
// its next sync).
func (e *Engine) noteSettled(f int, epoch uint64, tell bool) bool {
	if e.self == "" || f < 0 || f >= e.plan.Fragments() {
		return false // a single node: every copy is its own
	}
	e.settledMu.Lock()
	news, kept := e.settled.Note(f, epoch), true
	if news {
		if err := e.store.NoteSettled(e.plan.Name(), f, epoch); err != nil {
			e.cfg.Logger.Warn("record a settled checkpoint", "fragment", f, "err", err)
			kept = false
		}
	}
	e.settledMu.Unlock()
	if news && tell {
		if l := e.layout.Load(); l != nil {
			e.tellSettled(l, recovery.Settled{f: epoch})
		}
	}
	return kept
}

// tellSettled sends s to every live member of l's placement but this
// node, but for those whose remote did not answer when it was applied
// (silence): the probe or the placement that finds such a member sends it
// all this node knows.
func (e *Engine) tellSettled(l *layout, s recovery.Settled) {
	e.sendSettled(l, s, &wire.Settled{Flow: e.plan.Name()}, nil)
}

// sendSettled sends msg with s to the members named (nil: every live
// member of l's placement but this node, as tellSettled says).
func (e *Engine) sendSettled(l *layout, s recovery.Settled, msg *wire.Settled, to []string) {
	cl := l.cl
	if cl == nil || (len(s) == 0 && msg.Placement == 0) {
		return
	}
	for _, f := range slices.Sorted(maps.Keys(s)) {
		msg.Fragments = append(msg.Fragments, uint32(f))
		msg.Epochs = append(msg.Epochs, s[f])
	}
	if to == nil {
		to = liveOthers(cl)
	}
	for _, m := range to {
		if pid := memberPID(cl, m, e.plan.Name()+"/replica"); pid != nil && m != e.self && !l.silent.has(m) {
			e.sys.Root.Send(pid, msg)
		}
	}
}

// tellAllSettled sends every live member of l's placement all this node
// knows, as its report that it applied the placement (catchup.go): the
// members count it toward catching up with what was settled before it.
func (e *Engine) tellAllSettled(l *layout) { e.report(l, nil) }

// report sends the members named (nil: every live member of l's
// placement) all this node knows, as its report of l's placement if it
// has one to make (shard.CatchUp.Report).
func (e *Engine) report(l *layout, to []string) {
	// What it caught up with first, what it knows then: a report must
	// carry the news that made its sender catch up (heardReport notes the
	// news before it counts the report).
	epoch, caught, tell := e.reportCaught()
	e.settledMu.Lock()
	s := maps.Clone(e.settled)
	e.settledMu.Unlock()
	msg := &wire.Settled{Flow: e.plan.Name()}
	if epoch == l.epoch && (tell || len(s) > 0) {
		msg.Placement, msg.From, msg.Caught = epoch, e.self, caught
	}
	e.sendSettled(l, s, msg, to)
}

// settledNews takes a member's wire.Settled. It reports whether the
// store holds all of it (to be synced with its next sync).
func (e *Engine) settledNews(m *wire.Settled) bool {
	if m.Flow != e.plan.Name() || len(m.Fragments) != len(m.Epochs) {
		e.malformed.Add(1)
		return false
	}
	kept := true
	for i, f := range m.Fragments {
		if int(f) >= e.plan.Fragments() {
			e.malformed.Add(1)
			kept = false
			continue
		}
		kept = e.noteSettled(int(f), m.Epochs[i], false) && kept
	}
	if kept && m.Placement > 0 && m.From != "" {
		e.heardReport(m.Placement, m.From, m.Caught)
	}
	return kept
}

// members are the members of placement cl, sorted, this node among them
// and leaving ones left out: the membership the majority rule counts
// (nil for a single node).
func (cl *ClusterConfig) members() []string {
	if cl == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(cl.Remotes))
}

// liveOthers are the live members of cl (leaving ones included) but this
// node, sorted.
func liveOthers(cl *ClusterConfig) []string {
	var out []string
	if cl == nil {
		return nil
	}
	for _, m := range [2]map[string]string{cl.Remotes, cl.Leaving} {
		for name := range m {
			if name != cl.Self && !slices.Contains(out, name) {
				out = append(out, name)
			}
		}
	}
	slices.Sort(out)
	return out
}

// memberPID is the actor name on member m's node under placement cl, or
// nil if cl does not know the member's address.
func memberPID(cl *ClusterConfig, m, name string) *pa.PID {
	addr, ok := cl.Remotes[m]
	if !ok {
		addr, ok = cl.Leaving[m]
	}
	if !ok || addr == "" {
		return nil
	}
	return pa.NewPID(addr, name)
}
