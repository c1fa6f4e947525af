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
// for that owner's last checkpoint before it starts from its own copy (and
// the readers replay the difference).
const handoffWait = 10 * time.Second

// replicate sends a fragment's checkpoint, once durable here, to its
// standby (if the placement gives it one): the standby writes it in its
// own store, and restores it if the fragment fails over to it. full sends
// the whole checkpoint (the standby asked for it) instead of the change:
// read back from the store, unless cp is whole already (whole).
func (e *Engine) replicate(frag int, cp *recovery.Checkpoint, full, whole bool) {
	l := e.layout.Load()
	if frag >= len(l.standby) || l.standby[frag] == nil {
		return
	}
	if full && whole {
		c := *cp
		c.Full = true
		cp = &c
	} else if full {
		whole, ok, err := e.store.Full(e.plan.Name(), frag)
		if err != nil || !ok {
			e.cfg.Logger.Warn("read a full checkpoint for the standby", "fragment", frag, "err", err)
			return
		}
		cp = whole
	}
	e.sendCheckpoint(l.standby[frag], frag, cp, l.epoch, false)
	e.replicated.Add(1)
}

// handOff sends fragment frag's last durable checkpoint, whole, to the
// replica actor of its new owner, which restores it before it accepts
// input.
func (e *Engine) handOff(frag int, to *pa.PID, placement uint64) error {
	cp, ok, err := e.store.Full(e.plan.Name(), frag)
	if err != nil {
		return err
	}
	if !ok {
		cp = recovery.Empty(e.plan.Fragments()) // never checkpointed: the new owner starts empty
	}
	e.sendCheckpoint(to, frag, cp, placement, true)
	return nil
}

// forwardHandoff passes on a hand-off this node took for fragment f before
// a placement gave it the fragment (placeMu held), now that the placement
// gives f to owner: the old owner handed this node its newest state, which
// nobody else has, and the new owner waits for a hand-off. (Found by the
// simulation: two nodes joining at once, the first handed a fragment that
// the placement then gave the second, which waited 10 s and started from
// its own older copy.)
func (e *Engine) forwardHandoff(f int, owner string, placement uint64) {
	if _, ok := e.handedOff[f]; !ok || owner == "" || owner == e.self {
		return
	}
	delete(e.handedOff, f)
	if err := e.handOff(f, e.pidOf(owner, e.plan.Name()+"/replica"), placement); err != nil {
		e.cfg.Logger.Warn("forward a hand-off", "fragment", f, "to", owner, "err", err)
		return
	}
	e.handoffs.Add(1)
}

// sendCheckpoint sends cp in chunks to a replica actor.
func (e *Engine) sendCheckpoint(to *pa.PID, frag int, cp *recovery.Checkpoint, placement uint64, handoff bool) {
	data := recovery.EncodeCheckpoint(cp)
	replyTo := ""
	if handoff {
		replyTo = e.sys.Address()
	}
	prev := uint64(0)
	if cp.Manifest.Epoch > 0 {
		prev = cp.Manifest.Epoch - 1
	}
	for seq := 0; ; seq++ {
		n := min(len(data), replicaChunk)
		e.sys.Root.Send(to, &wire.CheckpointChunk{Flow: e.plan.Name(), Fragment: uint32(frag),
			Epoch: cp.Manifest.Epoch, PrevEpoch: prev, Full: cp.Full, Seq: uint32(seq), Last: n == len(data),
			Data: data[:n:n], Placement: placement, Owner: e.self, Handoff: handoff, ReplyTo: replyTo})
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
	syncing bool // a syncMsg is on its way
}

type assembly struct {
	epoch   uint64
	handoff bool
	next    uint32
	data    []byte
}

// handoffMsg brings a fragment waiting for a hand-off its old owner's last
// checkpoint.
type handoffMsg struct {
	cp        *recovery.Checkpoint
	placement uint64
	from      string
	replyTo   string // the old owner's remote address
}

// handoffTimeoutMsg ends a fragment's wait for a hand-off: its wait-th
// (0: the one it was spawned with).
type handoffTimeoutMsg struct{ wait uint64 }

func (ra *replicaActor) Receive(c pa.Context) {
	e := ra.e
	var m *wire.CheckpointChunk
	switch msg := c.Message().(type) {
	case *wire.CheckpointChunk:
		m = msg
	case *wire.HandoffDone:
		e.handoffs.Add(-1)
		return
	case syncMsg:
		ra.syncing = false
		if err := e.store.Sync(); err != nil {
			e.cfg.Logger.Error("sync standby copies", "err", err)
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
	a := ra.partial[m.Fragment]
	if m.Seq == 0 {
		a = &assembly{epoch: m.Epoch, handoff: m.Handoff}
		ra.partial[m.Fragment] = a
	}
	if a == nil || a.epoch != m.Epoch || a.handoff != m.Handoff || a.next != m.Seq {
		delete(ra.partial, m.Fragment) // a chunk went missing: wait for the next checkpoint
		return
	}
	a.data = append(a.data, m.Data...)
	a.next++
	if !m.Last {
		return
	}
	delete(ra.partial, m.Fragment)
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
			c.Send(l.route[f], &wire.Resync{Fragment: m.Fragment})
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
	if !ra.syncing {
		ra.syncing = true
		c.Send(c.Self(), syncMsg{})
	}
	e.cfg.Logger.Debug("standby copy", "fragment", f, "epoch", cp.Manifest.Epoch, "full", cp.Full, "took", time.Since(start))
}

// syncMsg makes the replica actor sync the standby copies it wrote.
type syncMsg struct{}

// handoff takes a fragment's last checkpoint from the owner that hands it
// to this node: to the fragment if it runs here already (it is waiting for
// it), else into the store, where the placement that gives this node the
// fragment restores it.
func (ra *replicaActor) handoff(f int, cp *recovery.Checkpoint, m *wire.CheckpointChunk) {
	e := ra.e
	e.placeMu.Lock()
	defer e.placeMu.Unlock()
	l := e.layout.Load()
	if i := l.local[f]; i >= 0 {
		// The fragment decides: one waiting for its hand-off takes it
		// even from a placement a little older than this node's (the old
		// owner placed before the last epoch bump; its checkpoint is sound
		// and the readers replay from it); a running one only if it is
		// ahead and not older than the fragment's placement.
		e.sys.Root.Send(l.frags[i], handoffMsg{cp: cp, placement: m.Placement, from: m.Owner, replyTo: m.ReplyTo})
		return
	}
	if m.Placement < l.epoch {
		e.fencedChunks.Add(1)
		e.cfg.Logger.Debug("hand-off under an older placement fenced", "fragment", f, "from", m.Owner, "placement", m.Placement, "here", l.epoch)
		return
	}
	if _, err := e.store.Write(e.plan.Name(), f, cp); err != nil {
		e.cfg.Logger.Error("write a handed-off checkpoint", "fragment", f, "err", err)
		return
	}
	e.handedOff[f] = m.Placement
}
