package actor

import (
	"fmt"
	"time"

	pa "github.com/asynkron/protoactor-go/actor"

	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/shard"
)

// epochMsg tells a fragment the placement epoch: batches of an older one
// are fenced from now on. live: the placement's live members (a gathering
// fragment stops waiting for the others, recovery.Gather.Left); members:
// its members, leavers left out (a majority of them must know of a
// checkpoint before it is released, recovery.Known).
type epochMsg struct {
	epoch   uint64
	live    []string
	members []string
	// newStandby: the placement gave the fragment another standby, which
	// has no copy of it yet (toNewStandby).
	newStandby bool
}

// movedMsg tells a reader the fragments whose owner changed: their
// unacknowledged batches went to the old owner, so their credits come back
// (a batch that was lost shows as a gap at the new owner, which asks for a
// rewind).
type movedMsg struct{ fragments []int }

// placementPlan is what this node does with each fragment when the
// placement changes from old to cl (shard.Changes): keep, gain (waiting for
// a hand-off from a live owner) or lose it.
func placementPlan(old, cl *ClusterConfig) []shard.Change {
	live := func(name string) bool {
		_, in := cl.Remotes[name]
		_, leaving := cl.Leaving[name]
		return in || leaving
	}
	return shard.Changes(cl.Self, old.Fragments, cl.Fragments, live)
}

// Place applies a new placement (of a newer epoch): fragments this node
// lost take a final checkpoint and stop; fragments it gained start from
// their old owner's hand-off if it lives, else from the newest copy the
// live members and this node keep (recovery.Gather) — but never from a
// copy older than the newest checkpoint the fragment settled: then it
// waits for a member that keeps one (recovery.Settled, settled.go) — and
// the readers replay what they miss, since a gap makes a fragment ask for
// a rewind; source partitions move the same way.
// Every reader routes to the new owners from the next batch on.
func (e *Engine) Place(cl *ClusterConfig) error { return e.place(cl, false) }

// Resume starts again, from the local store, the fragments and readers cl
// gives this node, after a Fence, when the node sees a majority again and
// the cluster placed nothing new meanwhile: cl is the placement it applied
// before the fence, at the same epoch. No node can own any of its
// fragments under that epoch but this one (a placement only changes with
// a newer epoch), so each starts from its newest local checkpoint without
// waiting for a hand-off, as after a crash, and the readers replay what it
// misses. Without Resume, a fence that no membership change followed — a
// loaded machine whose round trips overran the lease on every node at once
// — left every fragment stopped for good.
func (e *Engine) Resume(cl *ClusterConfig) error { return e.place(cl, true) }

func (e *Engine) place(cl *ClusterConfig, resume bool) error {
	e.placeMu.Lock()
	defer e.placeMu.Unlock()
	select {
	case <-e.stop:
		return nil
	default:
	}
	old := e.layout.Load()
	if e.cfg.Cluster == nil || cl.Epoch < old.epoch || (cl.Epoch == old.epoch) != resume {
		return nil
	}
	if len(cl.Fragments) != len(old.route) || len(cl.Readers) != len(old.allRead) {
		return fmt.Errorf("placement of %d fragments and %d partitions for a flow of %d and %d",
			len(cl.Fragments), len(cl.Readers), len(old.route), len(old.allRead))
	}
	self := e.cfg.Cluster.Self
	cl.Self, cl.Remote = self, e.cfg.Cluster.Remote
	silent := e.awaitRemotes(cl)
	plan := placementPlan(e.cfg.Cluster, cl)
	others := liveOthers(cl) // whose copies a fragment gained from a dead owner gathers
	e.cfg.Cluster = cl
	e.placeAlerts(cl)
	l := &layout{epoch: cl.Epoch, silent: silent}
	var moved []int
	var gained, lost []int
	var started []*pa.PID // gained fragments
	var kept []*pa.PID    // fragments it keeps: told the epoch once the layout is stored
	var newStandby []bool // ... whose standby changed
	var replay []bool     // ... that start now (not waiting for a hand-off)
	for f, owner := range cl.Fragments {
		if old.route[f].Address != e.pidOf(owner, "").Address {
			moved = append(moved, f)
		}
		switch plan[f].Kind {
		case shard.Keep:
			i := old.local[f]
			l.local = append(l.local, len(l.frags))
			l.route = append(l.route, old.frags[i])
			l.frags = append(l.frags, old.frags[i])
			l.fstats = append(l.fstats, old.fstats[i])
			kept = append(kept, old.frags[i])
			newStandby = append(newStandby, old.cl != nil && standbyOf(old.cl, f) != standbyOf(cl, f))
		case shard.Lose:
			lost = append(lost, f)
			l.local = append(l.local, -1)
			l.route = append(l.route, e.pidOf(owner, e.fragName(f)))
		case shard.Gain:
			// From a live owner (one that left the placement or is
			// leaving), the fragment is handed off: it waits for that
			// owner's last checkpoint, unless it came already. From a dead
			// one it gathers the copies of the live members and starts
			// from the newest, its own among them (recovery.Gather).
			gained = append(gained, f)
			var gather []string
			if !resume && plan[f].Orphaned && len(others) > 0 {
				gather = others
			}
			wait := len(gather) > 0 || (!resume && plan[f].Handoff && e.handedOff[f] < cl.Epoch)
			delete(e.handedOff, f)
			confirm, took := e.handedOffFrom[f]
			delete(e.handedOffFrom, f)
			r, err := recovery.Restore(e.store, e.plan, f)
			if err != nil {
				return err
			}
			// A fragment that would start now from its own copy (alone,
			// back from a fence, or from a hand-off that came before the
			// placement) must not start behind the newest checkpoint it
			// settled: it gathers the live members' copies, or waits for a
			// member that keeps one (recovery.Settled).
			lacking := !wait && recovery.Short(r.Manifest.Epoch, e.settledOf(f))
			if lacking {
				wait, gather = true, others
				lacking = len(gather) == 0
			}
			pid, st, err := e.spawnFragment(f, r, cl.Epoch, wait, gather, others, cl.members())
			if err != nil {
				return err
			}
			started, replay = append(started, pid), append(replay, !wait)
			if took {
				e.sys.Root.Send(pid, confirmLaterMsg{replyTo: confirm})
			}
			if lacking {
				e.sys.Root.Send(pid, lackMsg{})
			}
			for _, m := range gather {
				defer e.askHandoff(f, m, cl.Epoch) // once the layout routes to it
			}
			if wait && gather == nil {
				defer e.askHandoff(f, plan[f].From, cl.Epoch)
			}
			l.local = append(l.local, len(l.frags))
			l.route = append(l.route, pid)
			l.frags = append(l.frags, pid)
			l.fstats = append(l.fstats, st)
		default:
			l.local = append(l.local, -1)
			l.route = append(l.route, e.pidOf(owner, e.fragName(f)))
			_, leaving := cl.Leaving[self]
			if !e.forwardHandoff(f, owner, cl.Epoch) && leaving && plan[f].Orphaned {
				// The new owner gathers the live members' copies, and
				// this node may be gone before it asks: it hands its
				// copy off unasked, and stays until that is confirmed.
				e.handOffCopy(f, owner, cl.Epoch)
			}
		}
	}
	// Fragments that moved away: a final checkpoint, stop, and hand the
	// checkpoint to the new owner.
	// The final checkpoints are taken together: each fragment writes its
	// own, and the readers' batches to the old owners are lost until the
	// new ones replay.
	finals := make([]*pa.Future, len(lost))
	for i, f := range lost {
		finals[i] = e.sys.Root.RequestFuture(old.frags[old.local[f]], ckptReq{final: true}, 10*time.Second)
	}
	for i, f := range lost {
		pid := old.frags[old.local[f]]
		res, err := finals[i].Result()
		_ = e.sys.Root.PoisonFuture(pid).Wait()
		if err != nil {
			// The new owner waits for nothing sound: it times out and
			// starts from its own copy, and the readers replay.
			e.cfg.Logger.Warn("final checkpoint of a fragment that moved", "fragment", f, "err", err)
			continue
		}
		ok, _ := res.(ckptOK)
		if err := e.handOff(f, e.pidOf(cl.Fragments[f], e.plan.Name()+"/replica"), cl.Epoch, ok.lineage); err != nil {
			e.cfg.Logger.Warn("hand off a fragment", "fragment", f, "to", cl.Fragments[f], "err", err)
			continue
		}
		e.handoffs.Add(1)
	}
	// Readers: keep, stop or start; a new one starts at the smallest offset
	// a local fragment applied (remote ones ask for earlier if they need).
	var newReaders []*pa.PID
	for i, owner := range cl.Readers {
		part := e.allParts[i]
		was := -1
		for j, p := range old.rparts {
			if p == part {
				was = j
			}
		}
		now := owner == self
		switch {
		case was >= 0 && now:
			l.readers = append(l.readers, old.readers[was])
			l.rstats = append(l.rstats, old.rstats[was])
			l.rparts = append(l.rparts, part)
			l.allRead = append(l.allRead, old.readers[was])
		case was >= 0:
			pid := old.readers[was]
			_, _ = e.sys.Root.RequestFuture(pid, stopMsg{}, 10*time.Second).Result()
			_ = e.sys.Root.PoisonFuture(pid).Wait()
			l.allRead = append(l.allRead, e.pidOf(owner, e.readerName(i)))
		case now:
			from := int64(-1)
			name := e.plan.PartitionName(part.Source, part.Partition)
			for _, st := range l.fstats {
				if end := st.Offsets()[name]; from < 0 || end < from {
					from = end
				}
			}
			pid, st, err := e.spawnReader(i, max(from, 0))
			if err != nil {
				return err
			}
			l.readers = append(l.readers, pid)
			l.rstats = append(l.rstats, st)
			l.rparts = append(l.rparts, part)
			l.allRead = append(l.allRead, pid)
			newReaders = append(newReaders, pid)
		default:
			l.allRead = append(l.allRead, e.pidOf(owner, e.readerName(i)))
		}
	}
	l.standby, l.cl = e.standbys(cl), cl
	e.layout.Store(l)
	// A kept fragment whose gather ends with this placement (a member it
	// waited for left) replays at once: it asks the readers this layout
	// names, not the old ones, which may be about to stop (recovery's
	// replayAll).
	for i, pid := range kept {
		e.sys.Root.Send(pid, epochMsg{epoch: cl.Epoch, live: others, members: cl.members(), newStandby: newStandby[i]})
	}
	e.agree(cl) // none on a resume: the epoch is the same
	e.tellAllSettled(l)
	for _, pid := range l.readers {
		if len(moved) > 0 {
			e.sys.Root.Send(pid, movedMsg{fragments: moved})
		}
	}
	for _, pid := range newReaders {
		e.sys.Root.Send(pid, pollMsg{})
	}
	// A gained fragment restored a checkpoint that may be older than what
	// the readers sent its old owner, and readers that reached the end of
	// their input send nothing more that would show the gap: it asks every
	// reader to replay from where it is.
	for i, pid := range started {
		e.sys.Root.Send(pid, startMsg{replay: replay[i], placed: true})
	}
	// Batches of this placement that came before the fragments it gave
	// this node were spawned waited in the inbox.
	if e.inbox != nil {
		e.sys.Root.Send(e.inbox, placedMsg{})
	}
	e.cfg.Logger.Info("placement applied", "epoch", cl.Epoch, "fragments", len(l.frags), "gained", len(gained),
		"lost", len(lost), "readers", len(l.readers))
	return nil
}

// Fence stops every fragment and reader of this node at once, without a
// final checkpoint or a hand-off: the node lost the majority of its
// cluster's last agreed membership (cluster.Node applies shard.Majority),
// so the other side may place its fragments elsewhere and go on from the
// copies it has. Nothing the stopped fragments hold is released, no
// checkpoint is taken after this (those queued before are committed
// before Fence returns), no source is read; what they held is
// gone (the checkpoints already in the local store stay: the others'
// newer lineages replace them, epochs only grow). cl is the placement the
// node assumes the others apply — the same members without it, at the
// epoch it last applied — so that when it sees a majority again and
// applies their newer placement, every fragment it is given is gained,
// waiting for a hand-off from the node that owns it there. The replica
// actor keeps taking standby copies meanwhile. The alerts stop too
// (recovery.AlertLog.Fence): as owner the node evaluates and commits
// nothing, as standby it refuses prepares, until Place or Resume.
func (e *Engine) Fence(cl *ClusterConfig) error {
	e.placeMu.Lock()
	defer e.placeMu.Unlock()
	select {
	case <-e.stop:
		return nil
	default:
	}
	old := e.layout.Load()
	if e.cfg.Cluster == nil {
		return nil
	}
	if len(cl.Fragments) != len(old.route) || len(cl.Readers) != len(old.allRead) {
		return fmt.Errorf("fence with a placement of %d fragments and %d partitions for a flow of %d and %d",
			len(cl.Fragments), len(cl.Readers), len(old.route), len(old.allRead))
	}
	cl.Self, cl.Remote = e.cfg.Cluster.Self, e.cfg.Cluster.Remote
	cl.Epoch = old.epoch
	for _, pid := range old.readers {
		_ = e.sys.Root.PoisonFuture(pid).Wait()
	}
	for _, pid := range old.frags {
		_ = e.sys.Root.PoisonFuture(pid).Wait()
	}
	// The checkpoints the fragments queued before they stopped are
	// committed now, not after Place or Resume restored the fragments: one
	// committed later would replace the restored fragment's own in the
	// store with an older state and offsets.
	e.settleWrites()
	e.cfg.Cluster = cl
	l := &layout{epoch: old.epoch}
	for f, owner := range cl.Fragments {
		l.local = append(l.local, -1)
		l.route = append(l.route, e.pidOf(owner, e.fragName(f)))
	}
	for i, owner := range cl.Readers {
		l.allRead = append(l.allRead, e.pidOf(owner, e.readerName(i)))
	}
	l.standby, l.cl = e.standbys(cl), cl
	e.layout.Store(l)
	e.fenceAlerts()
	e.cfg.Logger.Warn("fenced: this node stopped its fragments, readers and alerts", "fragments", len(old.frags), "readers", len(old.readers))
	return nil
}
