package actor

import (
	"time"

	pa "github.com/asynkron/protoactor-go/actor"

	"github.com/tessera-streams/tessera/internal/wire"
	"github.com/tessera-streams/tessera/recovery"
)

// replicaChunk bounds a checkpoint chunk: gRPC refuses frames over 4 MB,
// and protoactor's endpoint writer sends several messages in one.
const replicaChunk = 256 << 10

// handoffWait bounds how long a fragment taken over from a live owner waits
// for that owner's last checkpoint before it gathers the live members'
// copies, or, keeping none of its own, starts from nothing (noOldOwner;
// the readers replay the difference).
const handoffWait = 10 * time.Second

// lostAnswerWait is how soon a fragment that lacks a copy gathers the
// live members' copies again when a member left its ask unanswered for a
// whole hand-off wait: the ask or the answer was lost, most likely, and a
// member that leaves stays only a little longer than HandoffWait (sim
// visits seed 123884: a leaver's answer lost, the next gather a hand-off
// wait later found it gone, and the fragment waited for good).
const lostAnswerWait = time.Second

// HandoffWait is how long a fragment gained from a live owner waits for
// its hand-off before it gathers the live members' copies: a node that leaves
// stays longer than this while its hand-offs are unconfirmed
// (cluster.Node), so that a new owner whose hand-off was lost, finding
// its own copy stale, can still fetch the leaver's.
const HandoffWait = handoffWait

// replicate sends a fragment's checkpoint, once durable here, to its
// standby (if the placement gives it one): the standby writes it in its
// own store, confirms it once synced (wire.Copied), and restores it if the
// fragment fails over to it. full sends the whole checkpoint (the standby
// asked for it) instead of the change: read back from the store, unless cp
// is whole already (whole); cp nil sends the last durable one whole. It
// reports whether the fragment has a standby, whose confirmation to wait
// for (a copy that could not be sent is sent again at the fragment's next
// Recopy).
func (e *Engine) replicate(frag int, cp *recovery.Checkpoint, full, whole bool) bool {
	l := e.layout.Load()
	if frag >= len(l.standby) || l.standby[frag] == nil {
		return false
	}
	if cp == nil {
		full, whole = true, false
	}
	if full && whole {
		c := *cp
		c.Full = true
		cp = &c
	} else if full {
		whole, ok, err := e.store.Full(e.plan.Name(), frag)
		if err != nil || !ok {
			e.cfg.Logger.Warn("read a full checkpoint for the standby", "fragment", frag, "err", err)
			return true
		}
		cp = whole
	}
	e.sendCheckpoint(l.standby[frag], frag, cp, l.epoch, chunkCopy, cp.Manifest.Epoch)
	e.replicated.Add(1)
	return true
}

// handOff sends fragment frag's last durable checkpoint, whole, to the
// replica actor of its new owner, which restores it before it accepts
// input. lineage is the least epoch the new owner judges it by against
// its own copy: a fragment that started a lineage and took no checkpoint
// in it yet (it verifies its copy) hands that copy off as its lineage's
// (recovery.Machine.HandoffEpoch). The copy keeps its own epoch in the
// store: should it prove stale there, a fetched copy of an older lineage
// that covers more may still replace it.
func (e *Engine) handOff(frag int, to *pa.PID, placement, lineage uint64) error {
	cp, ok, err := e.store.Full(e.plan.Name(), frag)
	if err != nil {
		return err
	}
	if !ok {
		cp = recovery.Empty(e.plan.Fragments()) // never checkpointed: the new owner starts empty
	}
	e.sendCheckpoint(to, frag, cp, placement, chunkHandoff, max(cp.Manifest.Epoch, lineage))
	return nil
}

// forwardHandoff passes on a hand-off this node took for fragment f before
// a placement gave it the fragment (placeMu held), now that the placement
// gives f to owner: the old owner handed this node its newest state, which
// nobody else has, and the new owner waits for a hand-off. (Found by the
// simulation: two nodes joining at once, the first handed a fragment that
// the placement then gave the second, which waited 10 s and started from
// its own older copy.)
func (e *Engine) forwardHandoff(f int, owner string, placement uint64) bool {
	if _, ok := e.handedOff[f]; !ok || owner == "" || owner == e.self {
		return false
	}
	delete(e.handedOff, f)
	delete(e.handedOffFrom, f)
	if err := e.handOff(f, e.pidOf(owner, e.plan.Name()+"/replica"), placement, 0); err != nil {
		e.cfg.Logger.Warn("forward a hand-off", "fragment", f, "to", owner, "err", err)
		return true
	}
	e.handoffs.Add(1)
	return true
}

// handOffCopy hands this node's copy of fragment f, if it keeps one, to
// owner, which gained f from an owner that died (placeMu held): this node
// leaves, perhaps before owner gathers the live members' copies
// (recovery.Gather), and the copy may be the newest. It counts as a
// hand-off pending until owner confirms it, which the leave waits for
// (cluster.Node).
func (e *Engine) handOffCopy(f int, owner string, placement uint64) {
	if owner == "" || owner == e.self {
		return
	}
	cp, ok, err := e.store.Full(e.plan.Name(), f)
	if err != nil || !ok {
		return
	}
	e.handoffs.Add(1)
	e.sendCheckpoint(e.pidOf(owner, e.plan.Name()+"/replica"), f, cp, placement, chunkHandoff, cp.Manifest.Epoch)
}

// What a checkpoint is sent to a replica actor as: a standby copy, a
// hand-off, an offer (the answer to a Fetch), or the copy of a node that
// does not own the fragment, in answer to a HandoffAsk.
const (
	chunkCopy = iota
	chunkHandoff
	chunkOffer
	chunkAsked
)

// sendCheckpoint sends cp in chunks to a replica actor.
func (e *Engine) sendCheckpoint(to *pa.PID, frag int, cp *recovery.Checkpoint, placement uint64, kind int, lineage uint64) {
	data := recovery.EncodeCheckpoint(cp)
	replyTo := e.sys.Address()
	prev := uint64(0)
	if cp.Manifest.Epoch > 0 {
		prev = cp.Manifest.Epoch - 1
	}
	var settled uint64
	handoff := kind == chunkHandoff || kind == chunkAsked
	if handoff {
		settled = e.settledOf(frag)
	}
	for seq := 0; ; seq++ {
		n := min(len(data), replicaChunk)
		e.sys.Root.Send(to, &wire.CheckpointChunk{Flow: e.plan.Name(), Fragment: uint32(frag),
			Epoch: cp.Manifest.Epoch, PrevEpoch: prev, Full: cp.Full, Seq: uint32(seq), Last: n == len(data),
			Data: data[:n:n], Placement: placement, Owner: e.self, Handoff: handoff, ReplyTo: replyTo,
			Offer: kind == chunkOffer, Lineage: lineage, Settled: settled, SenderId: e.sys.ID, Asked: kind == chunkAsked})
		data = data[n:]
		if len(data) == 0 {
			break
		}
	}
}

// replicaActor keeps the standby copies of other nodes' fragments and
// receives the fragments other nodes hand off to this one.
type replicaActor struct {
	e       *Engine
	partial map[uint32]*assembly
	offers  map[string]map[uint32]*assembly // offers being assembled, by sender and fragment
	syncing bool                            // a syncMsg is on its way
	// confirms are the standby copies written since the last sync (Copied),
	// and the news of settled checkpoints their owners asked this node to
	// keep (Known), to confirm to the owners' fragments once synced.
	confirms []confirm
}

// confirm is a confirmation the replica actor sends once its store is
// synced.
type confirm struct {
	to  *pa.PID
	msg any
	// placement: for a standby copy's confirmation, the owner's placement
	// epoch it came under (wire.CheckpointChunk.placement).
	placement uint64
}

type assembly struct {
	epoch   uint64
	handoff bool
	next    uint32
	data    []byte
}

// noHandoffMsg tells a fragment waiting for a hand-off that node from has
// none to give; placement is the asked wait's (0: unknown).
type noHandoffMsg struct {
	from      string
	placement uint64
}

// askHandoff asks owner whether it has fragment f to hand off to this
// node (wire.HandoffAsk), and a copy newer than this node's own, for a
// wait begun under placement.
func (e *Engine) askHandoff(f int, owner string, placement uint64) {
	if owner == "" || owner == e.self {
		return
	}
	l := e.layout.Load()
	if l == nil || l.cl == nil {
		return
	}
	to := memberPID(l.cl, owner, e.plan.Name()+"/replica")
	if to == nil {
		return
	}
	have, _, _ := e.store.Manifest(e.plan.Name(), f) // the zero manifest: none
	e.sys.Root.Send(to, &wire.HandoffAsk{Flow: e.plan.Name(), Fragment: uint32(f), ReplyTo: e.sys.Address(), Placement: placement, Have: have.Epoch})
}

// handoffAsk answers a node waiting for a hand-off of a fragment this node
// neither owns nor is placing: a placement being applied finishes first
// (placeMu), so a hand-off it sends goes out before the answer. A copy of
// the fragment in the store is handed off, for the asker to judge by its
// lineage: it may be the fragment's newest state, whose outputs were
// released — this node owned the fragment until it crashed or was
// fenced, and the asker's own copy is older, or none (sim visits seeds
// 409 and 498: the asker started an older lineage, or nothing, beside
// it). Only a node with no copy answers that it has none.
func (ra *replicaActor) handoffAsk(c pa.Context, m *wire.HandoffAsk) {
	e := ra.e
	if m.Flow != e.plan.Name() || int(m.Fragment) >= e.plan.Fragments() || m.ReplyTo == "" {
		e.malformed.Add(1)
		return
	}
	if e.layout.Load() == nil {
		// The engine is starting (its remote listens first): answer once
		// its fragments run. A node whose first placement found nobody
		// running asks every member at once (ClusterConfig.ColdStart).
		<-e.started
	}
	e.placeMu.Lock()
	l := e.layout.Load()
	owns := l == nil || l.local[m.Fragment] >= 0
	e.placeMu.Unlock()
	if owns {
		return // it hands the fragment off when it places
	}
	to := pa.NewPID(m.ReplyTo, e.plan.Name()+"/replica")
	if have, ok, err := e.store.Manifest(e.plan.Name(), int(m.Fragment)); err != nil || !ok || have.Epoch < m.Have {
		// No copy, or an older one than the asker's own: the asker would
		// keep its own (olderCopy), and a whole checkpoint is not sent
		// for nothing.
		c.Send(to, &wire.NoHandoff{Fragment: m.Fragment, From: e.self, Placement: m.Placement, Settled: e.settledOf(int(m.Fragment))})
		return
	}
	placement := m.Placement // the asker's wait's, carried back
	if placement == 0 {
		placement = l.epoch // an asker that does not say
	}
	if cp, ok, err := e.store.Full(e.plan.Name(), int(m.Fragment)); err == nil && ok {
		e.handoffs.Add(1) // the asker confirms it as any hand-off (wire.HandoffDone)
		e.sendCheckpoint(to, int(m.Fragment), cp, placement, chunkAsked, cp.Manifest.Epoch)
		return
	}
	c.Send(to, &wire.NoHandoff{Fragment: m.Fragment, From: e.self, Placement: m.Placement, Settled: e.settledOf(int(m.Fragment))})
}

// confirmLaterMsg gives a fragment just placed here the hand-off it
// restored, which came before the placement: it confirms it to the node
// at replyTo as one it took itself (fragmentActor.confirmLater).
type confirmLaterMsg struct{ replyTo handoffRef }

// offerMsg brings a stale fragment a copy another node had (Fetch).
type offerMsg struct {
	cp   *recovery.Checkpoint
	from string
}

// handoffMsg brings a fragment waiting for a hand-off its old owner's last
// checkpoint.
type handoffMsg struct {
	cp        *recovery.Checkpoint
	lineage   uint64 // what it is judged by against the copy here (wire.CheckpointChunk.Lineage)
	placement uint64
	from      string
	replyTo   handoffRef // the old owner, to confirm to
	asked     bool       // the copy of a node that does not own the fragment (wire.CheckpointChunk.Asked)
}

// handoffRef is the process that sent a hand-off: its remote address, and
// its actor system's id (wire.CheckpointChunk.SenderId), which the
// confirmation names.
type handoffRef struct{ addr, id string }

// confirm tells the process at r that its hand-off of fragment f was
// taken, or not taken and need not be kept (wire.HandoffDone).
func (r handoffRef) confirm(e *Engine, f int) {
	if r.addr != "" {
		e.sys.Root.Send(pa.NewPID(r.addr, e.plan.Name()+"/replica"), &wire.HandoffDone{Fragment: uint32(f), To: r.id})
	}
}

// handoffTimeoutMsg ends a fragment's wait for a hand-off: its wait-th
// (0: the one it was spawned with).
type handoffTimeoutMsg struct{ wait uint64 }

// handoffDone counts a hand-off this process sent as taken, unless the
// confirmation names an earlier process on this address.
func (e *Engine) handoffDone(m *wire.HandoffDone) {
	if m.To != "" && m.To != e.sys.ID {
		e.cfg.Logger.Debug("a confirmation of an earlier process's hand-off ignored", "fragment", m.Fragment)
		return
	}
	e.handoffs.Add(-1)
}

// lackMsg tells a fragment just placed here that its copy is behind the
// newest checkpoint it settled and no live member is there to ask
// (fragmentActor.lack).
type lackMsg struct{}

func (ra *replicaActor) Receive(c pa.Context) {
	e := ra.e
	var m *wire.CheckpointChunk
	switch msg := c.Message().(type) {
	case *wire.CheckpointChunk:
		m = msg
	case *wire.HandoffDone:
		e.handoffDone(msg)
		return
	case syncMsg:
		ra.syncing = false
		confirms := ra.confirms
		ra.confirms = nil
		if err := e.store.Sync(); err != nil {
			e.cfg.Logger.Error("sync standby copies", "err", err)
			return // unconfirmed: the owners send them again (Recopy)
		}
		// The copies and the news are durable here: their owners may
		// release what they cover.
		for _, cm := range confirms {
			if cp, ok := cm.msg.(*wire.Copied); ok {
				// Its confirmation counts it among the members that know
				// of the checkpoint (recovery.Known): now that the copy is
				// durable, it knows of it as news too, which it tells with
				// all it knows when it applies a placement (catchup.go).
				e.noteSettled(int(cp.Fragment), cp.Epoch, false)
				if epoch, _, _ := e.reportCaught(); epoch > cm.placement {
					// It applied a newer placement than the owner's since
					// the copy came, and told its report without it: it
					// does not count among those that know, as a Settled
					// it answers. The owner sends the copy again (Recopy).
					continue
				}
			}
			c.Send(cm.to, cm.msg)
		}
		return
	case *wire.Fetch:
		ra.fetch(msg)
		return
	case *wire.HandoffAsk:
		ra.handoffAsk(c, msg)
		return
	case *wire.Settled:
		// A node that applied a newer placement than the owner's told the
		// others all it knew when it did, without this news: they may
		// have caught up with that placement from what it told
		// (shard.TestQuorumSideKnowsWhatWasSettled). It does not count
		// among those that know (recovery.Known) until the owner applied
		// that placement too and asks again (recopy). It notes the news
		// first, then looks: a placement applied in between sends a
		// report that holds it.
		kept := e.settledNews(msg)
		if epoch, _, _ := e.reportCaught(); msg.OwnerPlacement != 0 && epoch > msg.OwnerPlacement {
			return
		}
		if kept && msg.ReplyTo != "" && len(msg.Fragments) == 1 {
			f := msg.Fragments[0]
			ra.confirmLater(c, pa.NewPID(msg.ReplyTo, e.fragName(int(f))), &wire.Known{Fragment: f, Epoch: msg.Epochs[0], Member: e.self})
		}
		return
	case *wire.NoHandoff:
		e.noteSettled(int(msg.Fragment), msg.Settled, false)
		if l := e.layout.Load(); l != nil && int(msg.Fragment) < len(l.local) {
			if i := l.local[msg.Fragment]; i >= 0 {
				c.Send(l.frags[i], noHandoffMsg{from: msg.From, placement: msg.Placement})
			}
		}
		return
	default:
		e.unknown(msg)
		return
	}
	if e.layout.Load() == nil {
		// The engine is starting: wait until its fragments run.
		<-e.started
		if e.layout.Load() == nil {
			return // it failed to start
		}
	}
	select {
	case <-e.stop:
		return // stopping, or it failed to start
	default:
	}
	f := int(m.Fragment)
	if m.Flow != e.plan.Name() || f >= e.plan.Fragments() {
		e.malformed.Add(1)
		e.cfg.Logger.Warn("checkpoint chunk for another flow or fragment", "flow", m.Flow, "fragment", f, "from", m.Owner)
		return
	}
	partial, key := ra.partial, m.Fragment
	if m.Offer {
		// Every node answers a Fetch at once: offers are kept apart by
		// sender.
		partial = ra.offerParts(m.ReplyTo)
	}
	a := partial[key]
	if m.Seq == 0 {
		a = &assembly{epoch: m.Epoch, handoff: m.Handoff}
		partial[key] = a
	}
	if a == nil || a.epoch != m.Epoch || a.handoff != m.Handoff || a.next != m.Seq {
		delete(partial, key) // a chunk went missing: wait for the next checkpoint
		return
	}
	a.data = append(a.data, m.Data...)
	a.next++
	if !m.Last {
		return
	}
	delete(partial, key)
	cp, err := recovery.DecodeCheckpoint(a.data)
	if err != nil {
		e.malformed.Add(1)
		e.cfg.Logger.Warn("malformed checkpoint from another node", "fragment", f, "from", m.Owner, "err", err)
		return
	}
	if m.Handoff {
		ra.handoff(f, cp, m)
		return
	}
	l := e.layout.Load()
	if m.Offer {
		if i := l.local[f]; i >= 0 {
			c.Send(l.frags[i], offerMsg{cp: cp, from: m.Owner})
		}
		return
	}
	if l.local[f] >= 0 || m.Placement < l.epoch {
		// This node owns the fragment now, or the sender placed it under
		// an older epoch: a stale owner must not overwrite the state.
		e.fencedChunks.Add(1)
		return
	}
	if !cp.Full {
		have, ok, err := e.store.Manifest(e.plan.Name(), f)
		if err != nil || !recovery.FollowsCopy(have, ok, m.PrevEpoch) {
			// No copy, or not the one this change applies to: ask for all.
			e.cfg.Logger.Debug("standby copy missing or behind: resync", "fragment", f, "have", have.Epoch, "prev", m.PrevEpoch, "err", err)
			to := l.route[f]
			if m.ReplyTo != "" {
				to = pa.NewPID(m.ReplyTo, e.fragName(f)) // the owner that waits for the copy
			}
			c.Send(to, &wire.Resync{Fragment: m.Fragment})
			return
		}
	}
	// Standby copies that arrive together share one disk sync: it queues
	// behind them. A copy lost to a crash before it is noticed by the next
	// incremental one, which then asks for a full copy.
	start := time.Now()
	if _, err := e.store.WriteUnsynced(e.plan.Name(), f, cp); err != nil {
		e.cfg.Logger.Error("write a standby copy", "fragment", f, "err", err)
		return
	}
	var cm *wire.Copied
	if m.ReplyTo != "" {
		cm = &wire.Copied{Fragment: m.Fragment, Epoch: cp.Manifest.Epoch, From: e.self}
	}
	ra.confirmCopyLater(c, pa.NewPID(m.ReplyTo, e.fragName(f)), cm, m.Placement)
	e.cfg.Logger.Debug("standby copy", "fragment", f, "epoch", cp.Manifest.Epoch, "full", cp.Full, "took", time.Since(start))
}

// confirmLater sends msg (nil: none) to once what this node wrote
// before is synced: standby copies and the news of settled checkpoints
// that arrive together share one disk sync, which queues behind them.
func (ra *replicaActor) confirmLater(c pa.Context, to *pa.PID, msg any) {
	ra.confirmCopyLater(c, to, msg, 0)
}

// confirmCopyLater is confirmLater for a standby copy that came under the
// owner's placement.
func (ra *replicaActor) confirmCopyLater(c pa.Context, to *pa.PID, msg any, placement uint64) {
	if msg != nil {
		ra.confirms = append(ra.confirms, confirm{to: to, msg: msg, placement: placement})
	}
	if !ra.syncing {
		ra.syncing = true
		c.Send(c.Self(), syncMsg{})
	}
}

// syncMsg makes the replica actor sync the standby copies it wrote.
type syncMsg struct{}

// handoff takes a fragment's last checkpoint from the owner that hands it
// to this node: to the fragment if it runs here already (it is waiting for
// it), else into the store, where the placement that gives this node the
// fragment restores it.
func (ra *replicaActor) handoff(f int, cp *recovery.Checkpoint, m *wire.CheckpointChunk) {
	e := ra.e
	e.noteSettled(f, m.Settled, false)
	e.placeMu.Lock()
	defer e.placeMu.Unlock()
	l := e.layout.Load()
	if i := l.local[f]; i >= 0 {
		// The fragment decides: one waiting for its hand-off takes it
		// even from a placement a little older than this node's (the old
		// owner placed before the last epoch bump; its checkpoint is sound
		// and the readers replay from it); a running one only if it is
		// ahead and not older than the fragment's placement.
		e.sys.Root.Send(l.frags[i], handoffMsg{cp: cp, lineage: max(cp.Manifest.Epoch, m.Lineage), placement: m.Placement, from: m.Owner,
			replyTo: handoffRef{m.ReplyTo, m.SenderId}, asked: m.Asked})
		return
	}
	if m.Placement < l.epoch {
		e.fencedChunks.Add(1)
		e.cfg.Logger.Debug("hand-off under an older placement fenced", "fragment", f, "from", m.Owner, "placement", m.Placement, "here", l.epoch)
		return
	}
	if !e.olderCopy(f, max(cp.Manifest.Epoch, m.Lineage)) {
		e.supersede(f, cp)
		if _, err := e.store.Write(e.plan.Name(), f, cp); err != nil {
			e.cfg.Logger.Error("write a handed-off checkpoint", "fragment", f, "err", err)
			return
		}
	}
	// Else the old owner's copy is of an older lineage than the one here
	// (it restored an older copy and took no checkpoint since): the one
	// here is what to start from, with no wait. Either way the fragment,
	// once placed here, confirms the hand-off as one it took itself.
	e.handedOff[f] = m.Placement
	if m.ReplyTo != "" {
		e.handedOffFrom[f] = handoffRef{m.ReplyTo, m.SenderId}
	}
}

// supersede keeps this node's own copy of f aside when cp, a hand-off of
// a newer lineage, replaces it although the own copy is a later
// checkpoint: the lineage's copy may prove stale here (a fragment
// downstream applied more than it holds), and the own copy may then be
// the only one that covers what was applied (sim seed 7837).
func (e *Engine) supersede(f int, cp *recovery.Checkpoint) {
	if !e.olderCopy(f, cp.Manifest.Epoch) {
		return
	}
	own, ok, err := e.store.Full(e.plan.Name(), f)
	if err != nil || !ok {
		return
	}
	e.supMu.Lock()
	e.superseded[f] = own
	e.supMu.Unlock()
}

// supersededCopy is the own copy of f a hand-off replaced, if any.
func (e *Engine) supersededCopy(f int) *recovery.Checkpoint {
	e.supMu.Lock()
	defer e.supMu.Unlock()
	return e.superseded[f]
}

// fetch asks every other node for its copy of fragment f (recovery's
// Ready.Fetch): the copy the fragment restored here is older than what its
// downstream fragments applied. Nodes that have one offer it (offerMsg).
func (e *Engine) fetch(f int) {
	l := e.layout.Load()
	if l == nil || l.cl == nil {
		return // a single node has no other copy: the fragment refuses
	}
	fm := &wire.Fetch{Flow: e.plan.Name(), Fragment: uint32(f), ReplyTo: e.sys.Address()}
	for name, addr := range l.cl.Remotes {
		if name != e.self {
			e.sys.Root.Send(pa.NewPID(addr, e.plan.Name()+"/replica"), fm)
		}
	}
	for name, addr := range l.cl.Leaving {
		if name != e.self {
			e.sys.Root.Send(pa.NewPID(addr, e.plan.Name()+"/replica"), fm)
		}
	}
}

// offerParts is where the offers of the node at addr are assembled, by
// fragment.
func (ra *replicaActor) offerParts(addr string) map[uint32]*assembly {
	if ra.offers == nil {
		ra.offers = map[string]map[uint32]*assembly{}
	}
	p := ra.offers[addr]
	if p == nil {
		p = map[uint32]*assembly{}
		ra.offers[addr] = p
	}
	return p
}

// fetch answers a stale fragment's owner that asks for a newer copy:
// this node's copy of the fragment's last checkpoint (a standby copy, a
// hand-off taken, or its own), if it has one.
func (ra *replicaActor) fetch(m *wire.Fetch) {
	e := ra.e
	f := int(m.Fragment)
	if m.Flow != e.plan.Name() || f >= e.plan.Fragments() || m.ReplyTo == "" {
		e.malformed.Add(1)
		return
	}
	cp, ok, err := e.store.Full(e.plan.Name(), f)
	if err != nil || !ok {
		return
	}
	placement := uint64(0)
	if l := e.layout.Load(); l != nil {
		placement = l.epoch
	}
	e.sendCheckpoint(pa.NewPID(m.ReplyTo, e.plan.Name()+"/replica"), f, cp, placement, chunkOffer, cp.Manifest.Epoch)
}

// KeepsCopies reports whether this node's store holds a checkpoint of a
// fragment it does not own: a standby copy, a hand-off, or its own from
// before the fragment moved. A leaving node that keeps one stays a while
// (cluster.Node): it may be the newest copy of a fragment whose owner
// died, which the new owner gathers (recovery.Gather).
func (e *Engine) KeepsCopies() bool {
	l := e.layout.Load()
	if l == nil {
		return false
	}
	for f, i := range l.local {
		if i >= 0 {
			continue
		}
		if _, ok, err := e.store.Manifest(e.plan.Name(), f); err == nil && ok {
			return true
		}
	}
	return false
}

// olderCopy reports whether a copy of epoch (a hand-off's: its lineage)
// is of an older lineage than this node's own copy of fragment f (a
// larger epoch is a newer lineage, or later in the same one:
// recovery.MachineConfig.Confirm).
func (e *Engine) olderCopy(f int, epoch uint64) bool {
	have, ok, err := e.store.Manifest(e.plan.Name(), f)
	return err == nil && ok && have.Epoch > epoch
}

// newerCopy reports whether a copy of epoch is newer than this node's own
// copy of f.
func (e *Engine) newerCopy(f int, epoch uint64) bool {
	have, ok, err := e.store.Manifest(e.plan.Name(), f)
	return err == nil && (!ok || have.Epoch < epoch)
}
