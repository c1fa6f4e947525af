package actor

import (
	"time"

	pa "github.com/asynkron/protoactor-go/actor"

	"github.com/tessera-streams/tessera/internal/wire"
	"github.com/tessera-streams/tessera/recovery"
)

// replicaChunk bounds a checkpoint chunk: gRPC refuses frames over 4 MB.
const replicaChunk = 1 << 20

// replicate sends a fragment's checkpoint, once durable here, to its
// standby (if the placement gives it one): the standby writes it in its
// own store, and restores it if the fragment fails over to it. full sends
// the whole checkpoint (the standby asked for it) instead of the change.
func (e *Engine) replicate(frag int, cp *recovery.Checkpoint, full bool) {
	l := e.layout.Load()
	if frag >= len(l.standby) || l.standby[frag] == nil {
		return
	}
	if full {
		whole, ok, err := e.store.Full(e.plan.Name(), frag)
		if err != nil || !ok {
			e.cfg.Logger.Warn("read a full checkpoint for the standby", "fragment", frag, "err", err)
			return
		}
		cp = whole
	}
	data := recovery.EncodeCheckpoint(cp)
	self := e.self
	for seq := 0; ; seq++ {
		n := min(len(data), replicaChunk)
		e.sys.Root.Send(l.standby[frag], &wire.CheckpointChunk{Flow: e.plan.Name(), Fragment: uint32(frag),
			Epoch: cp.Manifest.Epoch, PrevEpoch: cp.Manifest.Epoch - 1, Full: cp.Full, Seq: uint32(seq), Last: n == len(data),
			Data: data[:n:n], Placement: l.epoch, Owner: self})
		data = data[n:]
		if len(data) == 0 {
			break
		}
	}
	e.replicated.Add(1)
}

// replicaActor keeps the standby copies of other nodes' fragments.
type replicaActor struct {
	e       *Engine
	partial map[uint32]*assembly
}

type assembly struct {
	epoch uint64
	next  uint32
	data  []byte
}

func (ra *replicaActor) Receive(c pa.Context) {
	m, ok := c.Message().(*wire.CheckpointChunk)
	if !ok {
		return
	}
	e := ra.e
	l := e.layout.Load()
	f := int(m.Fragment)
	switch {
	case m.Flow != e.plan.Name() || f >= len(l.local):
		e.cfg.Logger.Warn("checkpoint chunk for another flow or fragment", "flow", m.Flow, "fragment", f)
		return
	case l.local[f] >= 0 || m.Placement < l.epoch:
		// This node owns the fragment now, or the sender placed it under
		// an older epoch: a stale owner must not overwrite the state.
		e.fencedChunks.Add(1)
		e.cfg.Logger.Debug("checkpoint chunk fenced", "fragment", f, "owner", m.Owner, "placement", m.Placement, "here", l.epoch, "local", l.local[f] >= 0)
		return
	}
	a := ra.partial[m.Fragment]
	if m.Seq == 0 {
		a = &assembly{epoch: m.Epoch}
		ra.partial[m.Fragment] = a
	}
	if a == nil || a.epoch != m.Epoch || a.next != m.Seq {
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
		e.cfg.Logger.Warn("malformed checkpoint from the owner", "fragment", f, "owner", m.Owner, "err", err)
		return
	}
	if !cp.Full {
		have, ok, err := e.store.Manifest(e.plan.Name(), f)
		if err != nil || !ok || have.Epoch != m.PrevEpoch {
			// No copy, or not the one this change applies to: ask for all.
			e.cfg.Logger.Debug("standby copy missing or behind: resync", "fragment", f, "have", have.Epoch, "prev", m.PrevEpoch, "err", err)
			c.Send(l.route[f], &wire.Resync{Fragment: m.Fragment})
			return
		}
	}
	start := time.Now()
	if _, err := e.store.Write(e.plan.Name(), f, cp); err != nil {
		e.cfg.Logger.Error("write a standby copy", "fragment", f, "err", err)
		return
	}
	e.cfg.Logger.Debug("standby copy", "fragment", f, "epoch", cp.Manifest.Epoch, "full", cp.Full, "took", time.Since(start))
}
