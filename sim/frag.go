package sim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/recovery"
)

// frag is a fragment a node owns: the engine's recovery.Machine, carried
// out as the fragment actor carries it out.
type frag struct {
	m        *recovery.Machine
	lastCkpt time.Time
	deadline time.Time // of the wait for a hand-off
	fullNext bool      // send the standby the whole next checkpoint
	found    bool      // it started from a checkpoint
	pauses   uint64    // the node's pauses it has handled
	// writing is the checkpoint being written on a slow disk (written,
	// not yet synced); handoff a hand-off that came meanwhile, taken once
	// the write ends, as the fragment actor keeps it (pendingHandoff).
	writing *recovery.Checkpoint
	handoff func()
	// gather: a fragment gained from an owner that died waits for the
	// copies of the live members it asked (recovery.Gather).
	gather *recovery.Gather[handedCopy]
	// confirms: the senders of hand-offs the fragment took, to confirm
	// once its first checkpoint after confirmAfter is settled
	// (recovery.Machine.Settled), as the fragment actor does.
	confirms     []sender
	confirmAfter uint64
	// lacking: the newest settled checkpoint known of the fragment, which
	// no live member offered and its own copy is behind: it stays
	// unavailable, and gathers again at every new placement
	// (recovery.Settled).
	lacking uint64
	// confirmed is the newest checkpoint the standby confirmed; known who
	// knows of it: it is released once a majority does (recovery.Known).
	confirmed uint64
	known     recovery.Known
}

// sender is a node in one incarnation.
type sender struct {
	name string
	inc  int
}

// confirmLater confirms by's hand-off once the fragment's state since now
// is on two nodes.
func (n *node) confirmLater(fr *frag, by sender) {
	fr.confirms = append(fr.confirms, by)
	fr.confirmAfter = fr.m.Epoch()
}

// confirmHandoffs sends fragment f's hand-off confirmations once its
// checkpoint since they came is settled.
func (n *node) confirmHandoffs(f int, fr *frag) {
	if len(fr.confirms) == 0 || !fr.m.Settled(fr.confirmAfter) {
		return
	}
	for _, by := range fr.confirms {
		n.handoffDone(f, by.name, by.inc)
	}
	fr.confirms = nil
}

// handedCopy is a copy a gathering fragment was offered, as it came.
type handedCopy struct {
	data      []byte
	placement uint64
	inc       int // the sender's incarnation, to confirm to
}

// reader is a source partition's reader a node owns, with its flow
// control (recovery.Credits).
type reader struct {
	n         *node
	idx       int
	r         *flowcore.Reader
	cr        *recovery.Credits
	lastCheck time.Time
}

// Senders as the machines' From.Ref: a reader or a fragment, on a node in
// one incarnation.
type (
	readerRef struct {
		node string
		inc  int
		part int
	}
	fragRef struct {
		node string
		inc  int
		frag int
	}
)

func (n *node) gain(f int, epoch uint64, wait bool) error {
	c := n.c
	r, err := recovery.Restore(n.st, c.plan, f)
	if err != nil {
		return fmt.Errorf("restore fragment %d: %w", f, err)
	}
	m := recovery.NewMachine(c.plan, f, r, epoch, wait, recovery.MachineConfig{Replicated: true, Confirm: true, FirstSend: n.sent + 1})
	m.SetNow(c.now)
	// The standby is sent the whole first checkpoint: a new lineage's
	// numbers do not follow the copy it has.
	fr := &frag{m: m, lastCkpt: c.now, found: r.Found, fullNext: true, pauses: n.pause.Count()}
	if wait {
		fr.deadline = c.now.Add(c.cfg.HandoffWait)
	}
	n.frags[f] = fr
	c.trace("%s gains fragment %d (restored epoch %d, wait %v, sends from %d)", n.name, f, r.Manifest.Epoch, wait, n.sent+1)
	return nil
}

// lose takes a final checkpoint of fragment f, stops it and hands its
// last durable checkpoint to its new owner.
func (n *node) lose(f int, to string, epoch uint64) {
	c := n.c
	fr := n.frags[f]
	if fr.writing != nil {
		// The engine asks for the final checkpoint and gets it after the
		// one being written: the simulation lets that write end now.
		fr.handoff = nil
		n.endWrite(f, fr)
		if !n.up {
			return
		}
	}
	delete(n.frags, f)
	fr.m.SetNow(c.now)
	if err := n.checkpoint(f, fr, false); err != nil || !n.up {
		c.trace("%s: final checkpoint of fragment %d: %v", n.name, f, err)
		return // the new owner times out and starts from its own copy
	}
	if to == "" {
		return
	}
	cp, ok, err := n.st.Full(c.plan.Name(), f)
	if err != nil {
		c.trace("%s: read fragment %d for a hand-off: %v", n.name, f, err)
		return
	}
	if !ok {
		cp = recovery.Empty(c.plan.Fragments())
	}
	// A lineage that took no checkpoint yet (it verifies the copy it
	// started from) hands that copy off as its own: the new owner judges
	// it by the lineage, as the engine's placement does
	// (recovery.Machine.HandoffEpoch, wire.CheckpointChunk.Lineage).
	lineage := max(cp.Manifest.Epoch, fr.m.HandoffEpoch())
	data := recovery.EncodeCheckpoint(cp)
	from := n.name
	c.counts.Handoffs++
	c.trace("%s hands fragment %d to %s (epoch %d)", n.name, f, to, cp.Manifest.Epoch)
	n.pending[f] = true
	inc := n.inc
	settled := n.settled[f]
	c.send(from, to, func(d *node) { d.handoff(f, data, lineage, epoch, from, inc, settled) })
}

// forward passes on a hand-off this node took for a fragment it was to
// own and now does not: the old owner handed it its newest state, which
// nobody else has (the fragment's new owner waits for it). A leaving node
// hands off its copy of a fragment whose owner died the same way (leaver),
// and stays until the new owner confirms it.
func (n *node) forward(f int, to string, epoch uint64, leaver bool) {
	c := n.c
	cp, ok, err := n.st.Full(c.plan.Name(), f)
	if err != nil || !ok {
		return
	}
	data, from, inc, settled := recovery.EncodeCheckpoint(cp), n.name, n.inc, n.settled[f]
	c.counts.Handoffs++
	if leaver {
		n.pending[f] = true
	}
	c.trace("%s forwards the hand-off of fragment %d to %s (epoch %d, leaving %v)", n.name, f, to, cp.Manifest.Epoch, leaver)
	c.send(from, to, func(d *node) { d.handoff(f, data, cp.Manifest.Epoch, epoch, from, inc, settled) })
}

// askHandoff asks the old owner a gained fragment waits for whether it
// has the fragment to hand off: a node that restarted within the failure
// detection window finds the others still count it as the owner of what
// it owned before, and takes the placement over the running nodes as
// the old one, naming owners that never had the fragment. One that does
// not own the fragment (now, nor hands it off) but keeps a copy of it
// hands that copy off, which the asker judges by its lineage: the copy
// may be the fragment's newest state, whose outputs were released — the
// node owned the fragment before it crashed or was fenced (seeds 409
// and 498 of the visits world started the fragment from an older
// lineage, or from nothing, beside it). One that has none ends the wait
// at once: the fragment starts from its own copy, which a fragment
// downstream may prove stale (then it fetches a newer one).
func (n *node) askHandoff(f int, owner string) {
	c := n.c
	if owner == "" || owner == n.name {
		return
	}
	asker, inc, own := n.name, n.inc, n.own(f)
	c.send(asker, owner, func(d *node) {
		if d.fragment(f) != nil {
			return // it hands the fragment off when it places
		}
		// A hand-off it sent and that was not confirmed (pending) does
		// not keep it from answering, as actor's handoffAsk: the
		// confirmation may be lost, or the fragment moved on (seed 2403
		// of the visits world waited and started an older lineage). A
		// copy older than the asker's own is not sent: the asker would
		// keep its own.
		if have, ok, err := d.st.Manifest(c.plan.Name(), f); err == nil && ok && have.Epoch >= own {
			if cp, ok, err := d.st.Full(c.plan.Name(), f); err == nil && ok {
				data, from, dinc, placement, settled := recovery.EncodeCheckpoint(cp), d.name, d.inc, uint64(0), d.settled[f]
				if d.placed != nil {
					placement = d.placed.epoch
				}
				c.counts.Handoffs++
				d.pending[f] = true // until the asker confirms it, as the engine counts it (HandoffsPending)
				c.trace("%s hands its copy of fragment %d to %s, who asked (epoch %d)", d.name, f, asker, cp.Manifest.Epoch)
				c.send(from, asker, func(w *node) { w.askedCopy(f, data, cp.Manifest.Epoch, placement, from, dinc, settled) })
				return
			}
		}
		from, settled := d.name, d.settled[f]
		c.send(from, asker, func(w *node) {
			if w.inc == inc {
				w.noHandoff(f, from, settled)
			}
		})
	})
}

// askedCopy takes the copy of fragment f that member from, which does not
// own it, handed off when asked (askHandoff). A fragment that waits for
// its old owner's hand-off, gathering nothing, gathers the live members'
// copies instead, as when the old owner has none (noHandoff): the node
// named as the old owner was a guess, and its copy is only one of the
// copies there are. Seed 32097 started both fragments from the copies of
// a node fenced since placement 3, which the layout over the running
// members named as their old owner, while a live member kept the newer
// copies of placement 4, whose outputs were released: 22 count updates
// came again with other values. The copy is not taken (the member
// answers the gather again); other hand-offs take it as any.
func (n *node) askedCopy(f int, data []byte, lineage, placement uint64, from string, inc int, settled uint64) {
	if fr := n.fragment(f); n.up && fr != nil && fr.m.Waiting() && fr.gather == nil && fr.lacking == 0 && !fr.m.Stale() {
		n.settled.Note(f, settled)
		n.handoffDone(f, from, inc)
		n.c.trace("%s: %s, not the owner, offers its copy of fragment %d: it gathers the live members' copies", n.name, from, f)
		n.gatherCopies(f, n.others())
		return
	}
	n.handoff(f, data, lineage, placement, from, inc, settled)
}

// noHandoff takes member from's answer that it has no copy of fragment f
// to hand off, with what it knows of f's newest settled checkpoint: a
// gathering fragment counts it; one waiting for its old owner gathers the
// live members' copies, as one gained from a dead owner, if this node
// keeps a copy of it, as the fragment actor's noOldOwner. The node named
// as the old owner is a guess at a first placement (the layout over the
// running members) and after a restart within the failure detection
// window, and its answer says nothing of where the fragment ran: seed
// 19205 started a restarted node's own copy, of an older lineage than the
// one a majority ran meanwhile (this node had not heard of its settled
// checkpoints yet), sent its outputs downstream, then took the newer
// lineage, which contradicted them, and waited for good. One that keeps
// no copy starts from nothing, as before: a cluster's first start would
// otherwise wait for a round of answers more, which message loss
// stretched from 6.5 s to 20 s in the loss scenario.
func (n *node) noHandoff(f int, from string, settled uint64) {
	c := n.c
	n.settled.Note(f, settled)
	fr := n.fragment(f)
	if fr == nil || !fr.m.Waiting() || fr.m.Stale() {
		return
	}
	if fr.gather != nil {
		fr.gather.None(from)
		if fr.gather.Done() {
			n.endGather(f, fr)
		}
		return
	}
	if fr.lacking != 0 {
		return
	}
	if n.own(f) == 0 {
		c.trace("%s: %s has no fragment %d to hand off: the wait ends", n.name, from, f)
		fr.deadline = c.now
		return
	}
	c.trace("%s: %s has no fragment %d to hand off: it gathers the live members' copies", n.name, from, f)
	n.gatherCopies(f, n.others())
}

// tellSettled tells every other node of s, news of settled checkpoints
// (recovery.Settled), at once when a fragment here settles one. The whole
// of what this node knows goes with its report of every placement it
// applies (tellCaughtUp), for the nodes that missed news while they were
// down or cut off.
func (n *node) tellSettled(s recovery.Settled) {
	from := n.name
	for _, to := range n.c.names {
		if to != from {
			n.c.send(from, to, func(d *node) { d.settled.Merge(s) })
		}
	}
}

// own is the lineage of this node's own copy of fragment f (0: none).
func (n *node) own(f int) uint64 {
	m, _, _ := n.st.Manifest(n.c.plan.Name(), f) // the zero manifest: none
	return m.Epoch
}

// startOwn ends a waiting fragment's wait from its own copy, unless that
// copy is behind the newest settled checkpoint known of it: then it
// gathers the live members' copies (recovery.Settled).
func (n *node) startOwn(f int, fr *frag) {
	if !fr.m.Stale() && recovery.Short(n.own(f), n.settled[f]) {
		n.gatherCopies(f, n.others())
		return
	}
	n.runCopy(f, fr)
}

// others are the live members of the placement applied but this node.
func (n *node) others() []string { return n.othersIn(n.placed) }

// othersIn are the live members of placement p (nil: none) but this
// node: those whose copies a fragment gathers.
func (n *node) othersIn(p *placed) []string {
	var o []string
	if p != nil {
		for _, m := range slices.Concat(p.members, p.leaving) {
			if m != n.name {
				o = append(o, m)
			}
		}
	}
	return o
}

// lack leaves fragment f unavailable: no live member offered a copy at
// least as new as its newest settled checkpoint, and its own is older.
// It gathers again at the next placement (node.place), or after the
// hand-off wait (an answer may have been lost); after LostAnswerWait if
// a member left the gather unanswered (unanswered), as the engine's.
func (n *node) lack(f int, fr *frag, unanswered bool) {
	c := n.c
	fr.lacking = n.settled[f]
	fr.deadline = c.now.Add(c.cfg.HandoffWait)
	if unanswered {
		fr.deadline = c.now.Add(c.cfg.LostAnswerWait)
	}
	c.trace("%s: no live member keeps a copy of fragment %d as new as its settled epoch %d: it waits for one", n.name, f, fr.lacking)
}

// gatherCopies asks every live member but this node for its copy of
// fragment f, gained from an owner that died (recovery.Gather).
func (n *node) gatherCopies(f int, asked []string) {
	fr := n.frags[f]
	fr.gather = recovery.NewGather[handedCopy](asked)
	fr.deadline = n.c.now.Add(n.c.cfg.HandoffWait)
	n.c.trace("%s gathers the copies of fragment %d from %v", n.name, f, asked)
	if len(asked) == 0 {
		n.endGather(f, fr)
		return
	}
	for _, m := range asked {
		n.askHandoff(f, m)
	}
}

// endGather starts a gathering fragment from the newest copy offered, if
// it is newer than its own (handoff judges it as any hand-off), or from
// its own copy.
func (n *node) endGather(f int, fr *frag) {
	c := n.c
	g := fr.gather
	fr.gather = nil
	best, lineage, from, ok := g.Best()
	c.trace("%s ends the gather of fragment %d (offered: %v, from %s, lineage %d; no answer from %v)", n.name, f, ok, from, lineage, g.Pending())
	g.Know(n.settled[f])
	if _, lacks := g.Lacks(n.own(f)); lacks {
		if ok {
			n.handoffDone(f, from, best.inc) // not taken
		}
		n.lack(f, fr, len(g.Pending()) > 0)
		return
	}
	if ok {
		n.handoff(f, best.data, lineage, best.placement, from, best.inc, 0)
		return
	}
	n.runCopy(f, fr)
}

// runCopy ends fragment f's wait: it runs from the copy it holds, which
// its standby gets, as the fragment actor's runCopy.
func (n *node) runCopy(f int, fr *frag) {
	fr.m.SetNow(n.c.now)
	fr.m.StopWaiting()
	n.toNewStandby(f, fr)
	n.carry(f)
}

// handoffDone tells the old owner that its hand-off of f was taken: the
// process that sent it (inc), which the engine's confirmation names too
// (wire.HandoffDone.to); a later process on that node ignores it.
func (n *node) handoffDone(f int, to string, inc int) {
	n.c.send(n.name, to, func(d *node) {
		if d.inc == inc {
			delete(d.pending, f)
		}
	})
}

// handoff takes a fragment's last checkpoint from the owner that hands it
// over, as the engine's replica actor and fragment actor do.
func (n *node) handoff(f int, data []byte, lineage, placement uint64, from string, inc int, settled uint64) {
	c := n.c
	n.settled.Note(f, settled)
	cp, err := recovery.DecodeCheckpoint(data)
	if err != nil {
		c.errs = append(c.errs, fmt.Errorf("%s: hand-off of fragment %d: %w", n.name, f, err))
		return
	}
	fr := n.fragment(f)
	if !n.up {
		return
	}
	if fr == nil {
		if n.placed != nil && placement < n.placed.epoch {
			c.counts.Fenced++
			return
		}
		// Else the newer copy here is what to start from.
		if !n.older(f, lineage) && !n.write(f, cp) {
			return
		}
		n.handedOff[f] = placement
		n.handedOffBy[f] = sender{from, inc} // confirmed by the fragment once placed here
		return
	}
	m := fr.m
	waiting := m.Waiting()
	if waiting && fr.gather != nil {
		dropped, dropFrom, ok := fr.gather.Copy(from, lineage, handedCopy{data: data, placement: placement, inc: inc})
		if ok {
			n.handoffDone(f, dropFrom, dropped.inc)
		}
		if fr.gather.Done() {
			n.endGather(f, fr)
		}
		return
	}
	if !waiting && (placement < m.PlacementEpoch() || m.Down() || !recovery.Ahead(cp.Manifest.Offsets, m.Vector())) {
		n.handoffDone(f, from, inc)
		return
	}
	if !waiting && fr.writing != nil {
		fr.handoff = func() { n.handoff(f, data, lineage, placement, from, inc, 0) } // after the write
		c.counts.HandoffsAfterWrite++
		return
	}
	if waiting && !m.Stale() && recovery.Short(max(lineage, n.own(f)), n.settled[f]) {
		// Neither this copy nor the one here holds the newest settled
		// checkpoint (the old owner lacked it too): the fragment gathers
		// the live members' copies, or goes on waiting for one.
		n.handoffDone(f, from, inc) // not taken
		if fr.lacking == 0 {
			n.gatherCopies(f, n.others())
		}
		return
	}
	if n.older(f, lineage) || (m.Stale() && !n.newer(f, lineage)) {
		// The old owner's copy is of an older lineage than the one here
		// (it restored an older copy and, finding it stale, took no
		// checkpoint): the one here is the newest state.
		c.trace("%s keeps its own copy of fragment %d over %s's hand-off (epoch %d)", n.name, f, from, cp.Manifest.Epoch)
		n.handoffDone(f, from, inc)
		m.SetNow(c.now)
		if waiting {
			m.StopWaiting()
			n.toNewStandby(f, n.frags[f])
		} else if !m.Stale() {
			// The old owner was sent input past this copy (it is ahead):
			// readers that sent it will not send this one that input
			// unless asked.
			m.Replay()
		}
		n.carry(f)
		return
	}
	n.take(f, fr, cp, from)
	n.confirmLater(fr, sender{from, inc})
}

// older reports whether a copy of epoch (a hand-off's: its lineage) is of
// an older lineage than this node's own copy of fragment f (a larger epoch is a newer lineage, or later in the
// same one: recovery.MachineConfig.Confirm).
func (n *node) older(f int, epoch uint64) bool {
	have, ok, err := n.st.Manifest(n.c.plan.Name(), f)
	return err == nil && ok && have.Epoch > epoch
}

// newer reports whether a copy of epoch is newer than this node's own
// copy of f.
func (n *node) newer(f int, epoch uint64) bool {
	have, ok, err := n.st.Manifest(n.c.plan.Name(), f)
	return err == nil && (!ok || have.Epoch < epoch)
}

// take restores fragment f from a checkpoint handed to it (a hand-off, or
// a newer copy a stale fragment fetched).
func (n *node) take(f int, fr *frag, cp *recovery.Checkpoint, from string) {
	c := n.c
	m := fr.m
	if !n.write(f, cp) {
		return
	}
	r, err := recovery.Restore(n.st, c.plan, f)
	if err != nil {
		n.fail(fmt.Errorf("restore the handed-off checkpoint of fragment %d: %w", f, err))
		return
	}
	c.trace("%s takes fragment %d from %s (epoch %d)", n.name, f, from, r.Manifest.Epoch)
	fr.lacking = 0
	m.SetNow(c.now)
	m.Restored(r, true)
	m.Start()
	n.toNewStandby(f, fr) // the standby's copy is of another lineage
	n.carry(f)
}

// write stores cp, a checkpoint of fragment f handed to this node, over
// its own copy (kept aside if it was later: supersede). It reports false
// if the disk refused it (full: the node failed).
func (n *node) write(f int, cp *recovery.Checkpoint) bool {
	if !n.writable() {
		return false
	}
	n.supersede(f, cp)
	if _, err := n.st.Write(n.c.plan.Name(), f, cp); err != nil {
		n.fail(fmt.Errorf("write the handed-off checkpoint of fragment %d: %w", f, err))
		return false
	}
	return true
}

// supersede keeps this node's own copy of f aside when cp, of a newer
// lineage, replaces it although the own copy is a later checkpoint.
func (n *node) supersede(f int, cp *recovery.Checkpoint) {
	if !n.older(f, cp.Manifest.Epoch) {
		return
	}
	if own, ok, err := n.st.Full(n.c.plan.Name(), f); err == nil && ok {
		n.superseded[f] = own
	}
}

// fetch asks every other member for its copy of fragment f: the one this
// node restored is older than what fragments downstream applied.
func (n *node) fetch(f int) {
	c := n.c
	to, inc := n.name, n.inc
	if sup := n.superseded[f]; sup != nil {
		data := recovery.EncodeCheckpoint(sup)
		c.send(n.name, n.name, func(r *node) {
			if r.inc == inc {
				r.offer(f, data, r.name)
			}
		})
	}
	for _, p := range n.alive {
		if p == n.name {
			continue
		}
		c.send(n.name, p, func(d *node) {
			cp, ok, err := d.st.Full(c.plan.Name(), f)
			if err != nil || !ok {
				return
			}
			data, from := recovery.EncodeCheckpoint(cp), d.name
			c.send(from, to, func(r *node) {
				if r.inc == inc {
					r.offer(f, data, from)
				}
			})
		})
	}
}

// offer takes a copy of fragment f that another node had, if f is stale
// here and the copy newer than its own.
func (n *node) offer(f int, data []byte, from string) {
	fr := n.fragment(f)
	if fr == nil || !fr.m.Stale() {
		return
	}
	cp, err := recovery.DecodeCheckpoint(data)
	if err != nil || !n.newer(f, cp.Manifest.Epoch) {
		return
	}
	n.take(f, fr, cp, from)
}

// checkpoint takes, writes and replicates fragment f's next checkpoint.
// On a fast disk the write is synced at once: the engine's group commit
// only shares the sync between fragments. On a slow one (SlowDisk) the
// checkpoint is written now and synced after the disk's delay,
// as the engine's writer goroutine answers later while the fragment goes
// on (endWrite); a crash before keeps a random part of it.
func (n *node) checkpoint(f int, fr *frag, replicate bool) error {
	c := n.c
	take := fr.m.Checkpoint
	if !replicate {
		take = fr.m.FinalCheckpoint // a hand-off's: the new owner waits for it
	}
	cp, err := take()
	if err != nil {
		return err
	}
	if cp == nil {
		// None taken (one is being written, or the fragment verifies its
		// restored copy): asked again at the next tick, as the fragment
		// actor does, not a whole interval later.
		return nil
	}
	fr.lastCkpt = c.now
	if !n.writable() {
		return errCrashed
	}
	slow := c.slow[n.name]
	if slow <= 0 || !replicate {
		_, err = n.st.Write(c.plan.Name(), f, cp)
		return n.durable(f, fr, cp, err, replicate)
	}
	if _, err := n.st.WriteUnsynced(c.plan.Name(), f, cp); err != nil {
		return n.durable(f, fr, cp, err, replicate)
	}
	fr.writing = cp
	c.counts.SlowWrites++
	inc := n.inc
	c.at(c.now.Add(slow), func() {
		n.deliver(inc, func(n *node) {
			if n.frags[f] == fr && fr.writing == cp {
				n.endWrite(f, fr)
			}
		})
	})
	return nil
}

// endWrite ends the slow write of fragment f's checkpoint: it syncs, and
// the fragment learns it is durable and takes the hand-off that waited.
func (n *node) endWrite(f int, fr *frag) {
	c := n.c
	cp := fr.writing
	fr.writing = nil
	if !n.writable() {
		return
	}
	fr.m.SetNow(c.now)
	if err := n.durable(f, fr, cp, n.st.Sync(), true); err != nil {
		n.fail(fmt.Errorf("fragment %d: checkpoints stopped: %w", f, err))
		return
	}
	n.carry(f)
	if h := fr.handoff; h != nil && n.up && n.frags[f] == fr {
		fr.handoff = nil
		h()
	}
}

// durable tells fragment f's machine how its checkpoint's write ended and
// sends a durable one to the standby.
func (n *node) durable(f int, fr *frag, cp *recovery.Checkpoint, err error, replicate bool) error {
	fr.m.Durable(cp.Manifest.Offsets, err)
	if err != nil {
		return err
	}
	fr.confirmed, fr.known = 0, nil // of the checkpoint before, as the fragment actor
	if replicate && !n.replicate(f, fr, cp) {
		fr.m.Copied(cp.Manifest.Epoch) // no standby: durable here is all there is
	}
	return nil
}

// errCrashed says the node crashed while it carried something out.
var errCrashed = errors.New("sim: the node crashed")

// replicate sends a durable checkpoint to the fragment's standby, which
// confirms it once synced (Machine.Copied); false if it has none.
func (n *node) replicate(f int, fr *frag, cp *recovery.Checkpoint) bool {
	c := n.c
	standby := n.placed.layout.Standbys[f]
	if standby == "" || standby == n.name {
		return false
	}
	if fr.fullNext || cp == nil {
		whole, ok, err := n.st.Full(c.plan.Name(), f)
		if err != nil || !ok {
			return true // asked again at the next Recopy
		}
		cp = whole
		fr.fullNext = false
	}
	prev := uint64(0)
	if cp.Manifest.Epoch > 0 {
		prev = cp.Manifest.Epoch - 1
	}
	data, full, epoch, from, inc := recovery.EncodeCheckpoint(cp), cp.Full, n.placed.epoch, n.name, n.inc
	c.counts.Replicated++
	c.send(from, standby, func(d *node) { d.standbyCopy(f, data, full, prev, epoch, from, inc) })
	return true
}

// standbyOf is a standby as a placement names it, "" for none (or this
// node itself).
func (n *node) standbyOf(name string) string {
	if name == n.name {
		return ""
	}
	return name
}

// toNewStandby sends the fragment's standby its last durable checkpoint,
// whole, at once, when the standby has no copy of it, as the engine's
// fragment actor does (actor's toNewStandby): a placement gave a kept
// fragment another standby, or the fragment starts running here from a
// copy. A checkpoint that waited for a standby that died is confirmed by
// the one that replaces it without waiting for a Recopy, and an owner
// lost right after a failover leaves a copy as new as the settled one.
// The next checkpoint goes whole too, should this copy be fenced.
func (n *node) toNewStandby(f int, fr *frag) {
	n.sendWhole(f, fr)
	fr.fullNext = true
}

// recopy sends the standby the whole last durable checkpoint again: it
// did not confirm the last one in time (lost, fenced, or the standby
// changed).
func (n *node) recopy(f int) {
	fr := n.frags[f]
	if fr == nil {
		return
	}
	if e, ok := fr.m.Copying(); ok && fr.confirmed >= e {
		n.askKnown(f, fr, e) // the standby has it: members' answers did not come
		return
	}
	n.sendWhole(f, fr)
}

// sendWhole sends the standby the whole last durable checkpoint; with no
// standby, durable here is all there is.
func (n *node) sendWhole(f int, fr *frag) {
	fr.fullNext = true
	if !n.replicate(f, fr, nil) {
		if e, ok := fr.m.Copying(); ok {
			fr.m.Copied(e)
		}
	}
}

// standbyCopy stores a standby copy, as the engine's replica actor: not
// from a stale owner, and an incremental one only on the copy it follows.
func (n *node) standbyCopy(f int, data []byte, full bool, prev, placement uint64, owner string, ownerInc int) {
	c := n.c
	if n.frags[f] != nil || n.placed == nil || placement < n.placed.epoch {
		c.counts.Fenced++
		c.trace("%s fences a standby copy of fragment %d from %s (placement %d)", n.name, f, owner, placement)
		return
	}
	cp, err := recovery.DecodeCheckpoint(data)
	if err != nil {
		c.errs = append(c.errs, fmt.Errorf("%s: standby copy of fragment %d: %w", n.name, f, err))
		return
	}
	if !full {
		have, ok, err := n.st.Manifest(c.plan.Name(), f)
		if err != nil || !recovery.FollowsCopy(have, ok, prev) {
			c.trace("%s asks %s for all of fragment %d (has %d, copy follows %d)", n.name, owner, f, have.Epoch, prev)
			from := n.name
			c.send(from, owner, func(d *node) {
				if d.inc == ownerInc && d.fragment(f) != nil {
					d.recopy(f)
					d.carry(f)
				}
			})
			return
		}
	}
	if !n.writable() {
		return
	}
	if _, err := n.st.WriteUnsynced(c.plan.Name(), f, cp); err != nil {
		c.trace("%s: write a standby copy of fragment %d: %v", n.name, f, err)
		return
	}
	n.needSync = true
	c.trace("%s keeps a copy of fragment %d at epoch %d (full %v)", n.name, f, cp.Manifest.Epoch, full)
	epoch, from := cp.Manifest.Epoch, n.name
	n.confirms = append(n.confirms, func() {
		// Its confirmation counts it among the members that know of the
		// checkpoint (recovery.Known): once the copy is durable, it
		// knows of it as news too, which it tells with all it knows when
		// it applies a placement (tellCaughtUp). If it applied a newer
		// placement than the owner's since the copy came, its report left
		// without it: it does not confirm, as the engine's replica actor.
		n.settled.Note(f, epoch)
		if n.agreedEpoch > placement {
			return
		}
		c.send(from, owner, func(d *node) {
			if d.inc != ownerInc {
				return
			}
			if fr := d.fragment(f); fr != nil {
				d.copied(f, fr, epoch, from)
				d.carry(f)
			}
		})
	})
}

// copied takes the standby's confirmation of fragment f's checkpoint
// epoch. It is released once a majority of the placement's members knows
// of it (recovery.Known): the members that do not are told, and each says
// so once it synced the news, as the engine's fragment actor does.
func (n *node) copied(f int, fr *frag, epoch uint64, standby string) {
	fr.m.SetNow(n.c.now)
	if e, ok := fr.m.Copying(); !ok || epoch < e {
		return
	}
	if fr.known == nil {
		fr.known = recovery.Known{}
	}
	fr.confirmed = max(fr.confirmed, epoch)
	fr.known.Note(n.name, epoch)
	fr.known.Note(standby, epoch)
	if n.release(f, fr) {
		return
	}
	n.settled.Note(f, epoch)
	n.askKnown(f, fr, epoch)
}

// askKnown tells the members that do not know of fragment f's checkpoint
// epoch, and asks them to answer.
func (n *node) askKnown(f int, fr *frag, epoch uint64) {
	from, inc, placement := n.name, n.inc, n.placed.epoch
	for _, to := range fr.known.Lacking(n.placed.members, epoch) {
		if to != from {
			n.c.send(from, to, func(d *node) { d.askedSettled(f, epoch, from, inc, placement) })
		}
	}
}

// release releases fragment f's checkpoint that waits for a majority of
// the placement's members to know of it, if one does now; false if it
// still waits.
func (n *node) release(f int, fr *frag) bool {
	e, ok := fr.m.Copying()
	if !ok || fr.confirmed < e || !fr.known.Enough(n.placed.members, e) {
		return false
	}
	fr.m.SetNow(n.c.now)
	fr.m.Copied(e)
	return true
}

// askedSettled notes the news of fragment f's checkpoint epoch from its
// owner, and says it knows once the news is synced with the node's next
// sync, as the engine's replica actor does; but not if it applied a newer
// placement than the owner's (placement): it told the others all it knew
// when it did (tellCaughtUp), without this news, and they may have
// caught up with that placement from what it told
// (shard.TestQuorumSideKnowsWhatWasSettled).
func (n *node) askedSettled(f int, epoch uint64, owner string, ownerInc int, placement uint64) {
	c := n.c
	n.settled.Note(f, epoch)
	n.needSync = true
	if n.agreedEpoch > placement {
		return
	}
	from := n.name
	n.confirms = append(n.confirms, func() {
		c.send(from, owner, func(d *node) {
			if d.inc != ownerInc {
				return
			}
			if fr := d.fragment(f); fr != nil && fr.known != nil {
				fr.known.Note(from, epoch)
				if d.release(f, fr) {
					d.carry(f)
				}
			}
		})
	})
}

// sync syncs the standby copies written this turn (they share one sync);
// on a slow disk (SlowDisk) the sync ends after the disk's delay, and one
// sync at a time runs.
func (n *node) sync() {
	if !n.needSync || n.st == nil || n.syncing {
		return
	}
	n.needSync = false
	confirms := n.confirms
	n.confirms = nil
	slow := n.c.slow[n.name]
	if slow <= 0 {
		n.synced(confirms)
		return
	}
	n.syncing = true
	inc := n.inc
	n.c.at(n.c.now.Add(slow), func() {
		n.deliver(inc, func(n *node) {
			n.syncing = false
			n.synced(confirms)
		})
	})
}

// synced syncs the store and sends the confirmations of the standby
// copies it made durable.
func (n *node) synced(confirms []func()) {
	if err := n.st.Sync(); err != nil {
		n.c.trace("%s: sync standby copies: %v", n.name, err)
		return
	}
	for _, fn := range confirms {
		fn() // the copies are durable: their owners may release what they cover
	}
}

// tickFragments moves the fragments' clocks, ends hand-off waits that
// timed out, and checkpoints every CheckpointInterval.
func (n *node) tickFragments() {
	c := n.c
	for _, f := range sortedKeys(n.frags) {
		fr := n.frags[f]
		if fr == nil {
			continue
		}
		m := fr.m
		if m.Waiting() && !c.now.Before(fr.deadline) {
			switch {
			case fr.gather != nil:
				n.endGather(f, fr) // with the copies that came
				if fr := n.frags[f]; n.up && fr != nil && fr.m.Waiting() && fr.gather == nil && fr.lacking == 0 && !fr.m.Stale() {
					n.startOwn(f, fr)
				}
			case fr.lacking == 0 && n.own(f) == 0:
				n.startOwn(f, fr)
			default:
				// Lacking: again, an answer may have been lost. No
				// hand-off came: as when the old owner has none
				// (noHandoff), as the fragment actor's handoffTimeoutMsg.
				n.gatherCopies(f, n.others())
			}
			if !n.up {
				return
			}
		}
		m.Tick(c.now)
		n.carry(f)
		if !n.up {
			return
		}
		if fr := n.frags[f]; fr != nil && c.now.Sub(fr.lastCkpt) >= c.cfg.CheckpointInterval {
			if err := n.checkpoint(f, fr, true); err != nil {
				if !n.up {
					return
				}
				n.fail(fmt.Errorf("fragment %d: checkpoints stopped: %w", f, err))
				return
			}
			n.carry(f)
			if !n.up {
				return
			}
		}
	}
}

// carry carries out fragment f's actions, as the fragment actor does.
func (n *node) carry(f int) {
	c := n.c
	for n.up {
		fr := n.frags[f]
		if fr == nil {
			return
		}
		m := fr.m
		if e := m.SettledEpoch(); n.settled.Note(f, e) {
			n.tellSettled(recovery.Settled{f: e})
		}
		rd := m.Ready()
		// The machine collects some actions from maps: their order is
		// fixed here, so that a seed replays identically.
		slices.SortFunc(rd.Rewinds, func(a, b recovery.Rewind) int {
			return cmp.Or(cmp.Compare(a.Part.Source, b.Part.Source), cmp.Compare(a.Part.Partition, b.Part.Partition))
		})
		slices.SortFunc(rd.Trims, func(a, b recovery.Trim) int {
			return cmp.Or(cmp.Compare(a.Part.Source, b.Part.Source), cmp.Compare(a.Part.Partition, b.Part.Partition))
		})
		for _, s := range rd.Sends {
			n.sent = max(n.sent, s.Seq)
			n.sendExchange(f, s)
		}
		for _, a := range rd.Acks {
			n.ack(f, a)
		}
		for _, rw := range rd.Rewinds {
			n.rewindFor(f, rw)
		}
		for _, t := range rd.Trims {
			u, ch, upto := t.Part.Partition, t.Part.Source, t.Upto
			c.send(n.name, n.placed.layout.Fragments[u], func(d *node) {
				if fr := d.fragment(u); fr != nil {
					fr.m.Trim(ch, f, upto)
					d.carry(u)
				}
			})
		}
		for _, err := range rd.Errors {
			if errors.Is(err, ErrRefused) {
				c.trace("%s: fragment %d: %v", n.name, f, err)
				continue
			}
			c.errs = append(c.errs, err)
		}
		c.dead = append(c.dead, rd.DeadLetters...)
		if rd.Stale != nil {
			c.counts.Stale++
			c.trace("%s: %v", n.name, rd.Stale)
		}
		if rd.Fetch {
			n.fetch(f)
		}
		if rd.Recopy {
			n.recopy(f)
		}
		for _, b := range rd.Behinds {
			d, ch, upto := b.Dest, b.Ch, b.Upto
			c.send(n.name, n.placed.layout.Fragments[d], func(o *node) {
				if fr := o.fragment(d); fr != nil {
					fr.m.SetNow(c.now)
					fr.m.Behind(ch, f, upto)
					o.carry(d)
				}
			})
		}
		n.confirmHandoffs(f, fr)
		if !rd.Restore {
			return
		}
		r, err := recovery.Restore(n.st, c.plan, f)
		if err != nil {
			n.fail(err)
			return
		}
		waiting := m.Waiting()
		m.Restored(r, false)
		if m.Waiting() && !waiting {
			// Restored after a pause: the node that owned the fragment
			// meanwhile hands it back once it applies the placement that
			// gives it to this node again; the wait is bounded as a gained
			// fragment's.
			fr.deadline = c.now.Add(c.cfg.HandoffWait)
		}
	}
}

// sendExchange sends an exchange batch to the downstream fragment's owner.
func (n *node) sendExchange(f int, s recovery.Send) {
	c := n.c
	s.Batch.Epoch = n.placed.epoch
	data, err := c.plan.EncodeBatch(nil, s.Batch)
	s.Batch.Release()
	if err != nil {
		c.errs = append(c.errs, fmt.Errorf("%s: encode a batch of fragment %d: %w", n.name, f, err))
		return
	}
	from := fragRef{node: n.name, inc: n.inc, frag: f}
	dest, seq, epoch := s.Dest, s.Seq, n.placed.epoch
	c.send(n.name, n.placed.layout.Fragments[dest], func(d *node) {
		d.step(dest, data, epoch, recovery.From{Key: fmt.Sprintf("%s#%d/f%d", from.node, from.inc, from.frag), Ref: from, Seq: seq})
	})
}

// step hands fragment f a batch that arrived.
func (n *node) step(f int, data []byte, epoch uint64, from recovery.From) {
	c := n.c
	fr := n.fragment(f)
	if fr == nil {
		return // not (or no longer) its owner: the sender finds out by its timeouts
	}
	b, err := c.plan.DecodeBatch(data)
	if err != nil {
		c.errs = append(c.errs, fmt.Errorf("%s: decode a batch for fragment %d: %w", n.name, f, err))
		return
	}
	b.Epoch = epoch
	fr.m.SetNow(c.now)
	fr.m.Step(b, from)
	n.carry(f)
}

// ack acknowledges a batch to its sender.
func (n *node) ack(f int, a recovery.From) {
	c := n.c
	switch ref := a.Ref.(type) {
	case readerRef:
		start := a.Start
		c.send(n.name, ref.node, func(d *node) {
			if r := d.readers[ref.part]; r != nil && d.inc == ref.inc {
				r.ack(f, start)
			}
		})
	case fragRef:
		seq, end := a.Seq, a.End
		c.send(n.name, ref.node, func(d *node) {
			if d.inc != ref.inc {
				return
			}
			if fr := d.fragment(ref.frag); fr != nil {
				fr.m.AckedEnd(seq, end)
				d.carry(ref.frag)
			}
		})
	}
}

// rewindFor asks a channel partition to send fragment f its records again:
// the upstream fragment's owner for an exchange; for a source partition,
// the reader the machine names, or whoever reads it now.
func (n *node) rewindFor(f int, rw recovery.Rewind) {
	c := n.c
	p, to := rw.Part, rw.To
	if c.plan.IsExchange(p.Source) {
		u := p.Partition
		c.send(n.name, n.placed.layout.Fragments[u], func(d *node) {
			if fr := d.fragment(u); fr != nil {
				fr.m.SetNow(c.now)
				fr.m.Resend(p.Source, f, to)
				d.carry(u)
			}
		})
		return
	}
	i := slices.Index(c.parts, partRef{p.Source, p.Partition})
	if i < 0 {
		return
	}
	dest, inc := n.placed.layout.Readers[i], -1
	if rw.Ask != nil {
		if ref, ok := rw.Ask.Ref.(readerRef); ok {
			dest, inc = ref.node, ref.inc
		}
	}
	c.send(n.name, dest, func(d *node) {
		if r := d.readers[i]; r != nil && (inc < 0 || inc == d.inc) {
			r.rewind(to, f)
		}
	})
}

// startReader starts reading source partition i at the smallest offset a
// local fragment applied: its first batch to every fragment says where
// it starts, and remote ones behind it ask for earlier.
func (n *node) startReader(i int) error {
	c := n.c
	p := recovery.PartitionID{Source: c.parts[i].source, Partition: c.parts[i].partition}
	from := int64(-1)
	for _, f := range sortedKeys(n.frags) {
		if end := n.frags[f].m.Vector().End(p); from < 0 || end < from {
			from = end
		}
	}
	r, err := c.plan.OpenReader(p.Source, p.Partition, max(from, 0), c.cfg.BatchSize)
	if err != nil {
		return fmt.Errorf("open %s: %w", c.plan.PartitionName(p.Source, p.Partition), err)
	}
	n.readers[i] = &reader{n: n, idx: i, r: r, cr: recovery.NewCredits(c.plan.Fragments(), recovery.DefaultCredits, c.now), lastCheck: c.now}
	c.trace("%s reads %s from %d", n.name, c.plan.PartitionName(p.Source, p.Partition), max(from, 0))
	return nil
}

// tickReaders polls the readers and takes back credits that did not
// come back.
func (n *node) tickReaders() {
	c := n.c
	for _, i := range sortedKeys(n.readers) {
		r := n.readers[i]
		if c.now.Sub(r.lastCheck) >= time.Second {
			r.lastCheck = c.now
			from, took := r.cr.Expire(c.now)
			if from >= 0 {
				r.rewind(from, -1)
			}
			if took && r.cr.Ended() {
				r.flushAll()
			}
		}
		if err := r.poll(); err != nil {
			n.fail(err)
			return
		}
	}
}

func (r *reader) poll() error {
	c := r.n.c
	for range 4 {
		if !r.cr.MayPoll() {
			return nil
		}
		r.r.SetNow(c.now)
		got, err := r.r.Poll(context.Background(), c.cfg.PollSize)
		r.r.TakeBad()
		c.dead = append(c.dead, r.r.TakeDeadLetters()...)
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		for _, f := range r.r.Full() {
			if !r.cr.CanSend(f) {
				r.cr.Block(f)
				continue
			}
			r.send(f)
		}
		if err != nil {
			r.cr.EOF()
			r.flushAll()
			return nil
		}
		if got == 0 {
			break
		}
	}
	r.flushAll()
	return nil
}

// flushAll sends every fragment that is behind the position and has a
// credit.
func (r *reader) flushAll() {
	behind := false
	for f := range r.cr.Fragments() {
		if !r.r.Due(f) {
			continue
		}
		if !r.cr.CanSend(f) {
			behind = true
			continue
		}
		r.send(f)
	}
	r.cr.Flushed(behind)
}

func (r *reader) send(f int) {
	n, c := r.n, r.n.c
	b := r.r.Take(f)
	b.Epoch = n.placed.epoch
	r.cr.Sent(f, b.PrevEnd, c.now)
	data, err := c.plan.EncodeBatch(nil, b)
	b.Release()
	if err != nil {
		c.errs = append(c.errs, fmt.Errorf("%s: encode a batch for fragment %d: %w", n.name, f, err))
		return
	}
	from := readerRef{node: n.name, inc: n.inc, part: r.idx}
	epoch := n.placed.epoch
	key := fmt.Sprintf("%s#%d/r%d", from.node, from.inc, from.part)
	c.send(n.name, n.placed.layout.Fragments[f], func(d *node) {
		d.step(f, data, epoch, recovery.From{Key: key, Ref: from})
	})
}

func (r *reader) ack(f int, start int64) {
	unblocked, ok := r.cr.Ack(f, start, r.n.c.now)
	if !ok {
		return
	}
	if unblocked {
		r.send(f)
	}
	if r.cr.Ended() {
		r.flushAll()
	}
}

// rewind moves the reader back for fragment f (-1: for every fragment);
// a fragment that is not behind is sent its next batch even if nothing
// changed (it may lack the watermark).
func (r *reader) rewind(to int64, f int) {
	r.cr.Resend(f, to, r.n.c.now) // sent again from to, or reminded (-1: Expire took them back)
	rewound, err := r.r.RewindFor(f, to)
	if err != nil {
		r.n.c.errs = append(r.n.c.errs, err)
		return
	}
	if !rewound {
		if f >= 0 && f < r.cr.Fragments() && r.cr.CanSend(f) {
			r.send(f)
		}
		return
	}
	r.cr.Rewound()
}

// stop flushes regardless of credits (the fragments' final checkpoints
// should cover everything read) and closes the reader.
func (r *reader) stop() {
	for f := range r.cr.Fragments() {
		if r.r.Due(f) {
			r.send(f)
		}
	}
	_ = r.r.Close()
}
