package actor

import (
	pa "github.com/asynkron/protoactor-go/actor"

	"github.com/tessera-streams/tessera/internal/wire"
)

// Batches cross nodes per (reader, node), not per (reader, fragment): a
// reader's sends of one turn to the fragments one node owns go out as one
// wire.Batches (outbox), the node's inbox actor hands each part to its
// fragment, and the fragments' acknowledgements to one reader go back
// together as one wire.Acks. Credits stay per fragment; only the transport
// is shared, so a remote message carries many batches, not one.

// maxBatchesBytes bounds one wire.Batches: protoactor's endpoint writer
// packs up to remoteBatchSize messages into one gRPC frame, which must stay
// under gRPC's 4 MB limit. A single batch larger than this goes alone.
const maxBatchesBytes = 256 << 10

// netBatchMsg is one part of a wire.Batches, for the local fragment that
// decodes and applies it.
type netBatchMsg struct {
	records []byte
	epoch   uint64
	sender  *pa.PID // the reader or upstream fragment on the sending node
	seq     uint64  // an upstream fragment's number of the batch
	inbox   *pa.PID // where the fragment acknowledges
}

// netAckMsg is a fragment's acknowledgement of a netBatchMsg, to its inbox.
type netAckMsg struct {
	sender   *pa.PID
	fragment uint32
	seq      uint64
	end      int64 // to an upstream fragment: recovery.From.End
	start    int64 // to a reader: recovery.From.Start
}

// netDurableMsg is a fragment's announcement of its durable checkpoint to
// a reader on another node, through its inbox.
type netDurableMsg struct {
	reader   *pa.PID
	fragment uint32
	offset   int64
}

// flushAcksMsg makes the inbox send the acknowledgements it holds. It
// queues behind the acknowledgements already in the mailbox, so all of
// those go out together.
type flushAcksMsg struct{}

// inboxReadyMsg tells the inbox that the engine's fragments run: it hands
// them the batches it held since it started.
type inboxReadyMsg struct{}

// placedMsg tells the inbox that the engine applied a placement: it hands
// the fragments the batches of that placement it held for them (waiting).
type placedMsg struct{}

// inboxActor receives other nodes' readers' batches for this node's
// fragments, and returns the fragments' credits and announces their durable
// checkpoints to those readers, a node's to one reader together.
//
// The inbox runs before the fragments do: the engine's remote listens
// first, and the other nodes, which wait for it (awaitRemotes), send as
// soon as it answers. A batch handed to a fragment not spawned yet is a
// dead letter, and the reader that sent it, its credits spent on batches
// nobody acknowledges, stops reading the partition until
// recovery.CreditTimeout takes them back: seconds in which the partition
// is committed nowhere (a node joining then started it from 0). So the
// inbox holds what comes until the engine says its fragments run
// (inboxReadyMsg).
//
// The same happens when the placement changes: the other nodes apply a
// placement at their own pace, and a reader that applied it first sends
// to a fragment this node gains before this node has spawned it. A batch
// of a newer epoch than this node's placement, for a fragment that does
// not run here, waits (waiting) until the engine applies a placement
// (placedMsg), and then goes to its fragment, or is dropped as before if
// that placement did not give this node the fragment either. What waits
// is bounded by the readers' credits.
type inboxActor struct {
	e       *Engine
	frags   []*pa.PID // the local fragment of each index, by its predictable name
	ready   bool      // the fragments run: batches go to them
	held    []*wire.Batches
	waiting []waitingBatch // in arrival order
	// acks holds acknowledgements and durable announcements not yet
	// sent, per reader.
	acks      map[string]*pendingAcks
	flushing  bool
	readerIDs map[string]*pa.PID // readers seen, by address/id
}

// waitingBatch is a part held for fragment f, not running here yet.
type waitingBatch struct {
	f   uint32
	msg *netBatchMsg
}

type pendingAcks struct {
	reader  *pa.PID
	frags   []uint32
	seqs    []uint64
	ends    []int64
	starts  []int64 // to a reader: each batch's start (wire.Acks.starts)
	durable *wire.Durable
}

// pending returns what is held for reader, and makes sure a flush follows.
func (in *inboxActor) pending(c pa.Context, reader *pa.PID) *pendingAcks {
	key := reader.Address + "/" + reader.Id
	p := in.acks[key]
	if p == nil {
		p = &pendingAcks{reader: reader}
		in.acks[key] = p
	}
	if !in.flushing {
		in.flushing = true
		c.Send(c.Self(), flushAcksMsg{})
	}
	return p
}

func newInboxActor(e *Engine) *inboxActor {
	in := &inboxActor{e: e, acks: map[string]*pendingAcks{}, readerIDs: map[string]*pa.PID{}}
	for f := range e.plan.Fragments() {
		in.frags = append(in.frags, pa.NewPID(e.sys.Address(), e.fragName(f)))
	}
	return in
}

func (in *inboxActor) Receive(c pa.Context) {
	switch m := c.Message().(type) {
	case *wire.Batches:
		if !in.ready {
			in.held = append(in.held, m)
			return
		}
		in.batches(c, m)
	case inboxReadyMsg:
		if in.ready {
			return
		}
		in.ready = true
		for _, m := range in.held {
			in.batches(c, m)
		}
		in.held = nil
	case placedMsg:
		in.placed(c)
	case netAckMsg:
		p := in.pending(c, m.sender)
		p.frags = append(p.frags, m.fragment)
		if m.seq != 0 {
			p.seqs = append(p.seqs, m.seq)
			p.ends = append(p.ends, m.end)
		} else {
			p.starts = append(p.starts, m.start)
		}
	case netDurableMsg:
		p := in.pending(c, m.reader)
		if p.durable == nil {
			p.durable = &wire.Durable{}
		}
		p.durable.Fragments = append(p.durable.Fragments, m.fragment)
		p.durable.Offsets = append(p.durable.Offsets, m.offset)
	case flushAcksMsg:
		in.flushing = false
		for key, p := range in.acks {
			if len(p.frags) == 0 && p.durable == nil {
				delete(in.acks, key) // a reader gone quiet
				continue
			}
			// The messages own their slices until they are sent.
			if len(p.frags) > 0 {
				c.Send(p.reader, &wire.Acks{Fragments: p.frags, Seqs: p.seqs, Ends: p.ends, Starts: p.starts})
				p.frags, p.seqs, p.ends, p.starts = nil, nil, nil, nil
			}
			if p.durable != nil {
				c.Send(p.reader, p.durable)
				p.durable = nil
			}
		}
	default:
		in.e.unknown(m)
	}
}

// batches hands each part of m to its local fragment.
func (in *inboxActor) batches(c pa.Context, m *wire.Batches) {
	e := in.e
	if m.Flow != e.plan.Name() || len(m.Fragments) != len(m.Records) || m.ReaderAddress == "" ||
		(len(m.Seqs) != 0 && len(m.Seqs) != len(m.Records)) {
		e.malformed.Add(1)
		e.cfg.Logger.Debug("malformed batches dropped", "flow", m.Flow, "fragments", len(m.Fragments), "parts", len(m.Records))
		return
	}
	key := m.ReaderAddress + "/" + m.ReaderId
	reader := in.readerIDs[key]
	if reader == nil {
		reader = pa.NewPID(m.ReaderAddress, m.ReaderId)
		in.readerIDs[key] = reader
	}
	// Only while a placement change is under way can a part be for a
	// fragment this node is about to gain.
	ahead := m.Epoch > e.layout.Load().epoch
	for i, f := range m.Fragments {
		if int(f) >= len(in.frags) {
			e.malformed.Add(1)
			continue
		}
		var seq uint64
		if len(m.Seqs) > 0 {
			seq = m.Seqs[i]
		}
		msg := &netBatchMsg{records: m.Records[i], epoch: m.Epoch, sender: reader, seq: seq, inbox: c.Self()}
		if (ahead && !in.runs(f)) || in.waits(f) {
			in.waiting = append(in.waiting, waitingBatch{f: f, msg: msg})
			continue
		}
		c.Send(in.frags[f], msg)
	}
}

// runs reports whether fragment f's actor runs on this node.
func (in *inboxActor) runs(f uint32) bool {
	_, ok := in.e.sys.ProcessRegistry.GetLocal(in.frags[f].Id)
	return ok
}

// waits reports whether parts for fragment f wait: the next ones wait
// behind them, so that the fragment gets its batches in order.
func (in *inboxActor) waits(f uint32) bool {
	for _, w := range in.waiting {
		if w.f == f {
			return true
		}
	}
	return false
}

// placed hands the waiting parts of a placement no newer than the one
// applied to their fragments, in the order they came; the others wait on.
// A part whose fragment this placement did not give this node goes to
// where it went before the parts waited: no actor, a dead letter, and its
// reader takes its credit back after recovery.CreditTimeout.
func (in *inboxActor) placed(c pa.Context) {
	epoch := in.e.layout.Load().epoch
	keep := in.waiting[:0]
	later := map[uint32]bool{} // fragments with a part that waits on: their later parts too
	for _, w := range in.waiting {
		if w.msg.epoch > epoch || later[w.f] {
			later[w.f] = true
			keep = append(keep, w)
			continue
		}
		c.Send(in.frags[w.f], w.msg)
	}
	clear(in.waiting[len(keep):])
	in.waiting = keep
}
