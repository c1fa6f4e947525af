package actor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	pa "github.com/asynkron/protoactor-go/actor"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/internal/wire"
	"github.com/tessera-streams/tessera/recovery"
)

type readerActor struct {
	e         *Engine
	r         *flowcore.Reader
	stats     *ReaderStats
	cr        *recovery.Credits // the flow control rules: credits, blocking, finishing, commits
	polling   bool              // a pollMsg is on its way
	stopped   bool              // a fatal source error
	lastFlush time.Time
	// out holds the batches for other nodes sent this turn, per node
	// remote address; they leave as one message per node when the turn
	// ends (flushOut) or the message is full.
	out map[string]*wire.Batches
	// outBytes is the size of the records held in out, per node; outBuf
	// the arena they are encoded into. Each part is capped at its end and
	// the arena is only ever appended to, so the bytes of a part sent stay
	// as they are until protoactor has written them: the next turns' parts
	// go after them, and a full arena is left to the messages that hold
	// it for a new one (outChunk), never grown by copying the parts in it.
	outBytes  map[string]int
	outBuf    []byte
	outPerRec int // bytes per record encoded, smoothed: the room a batch needs
	outN      int
	// pauses are the snapshot reads holding the reader still (cut.go), by
	// id: while there is one, the reader does not poll.
	pauses  map[uint64]*pauseHold
	leaseAt time.Time // when the pauseLeaseMsg on its way comes (zero: none)
}

// creditCheckMsg makes a reader take back the credits of fragments that
// have not acknowledged anything for recovery.CreditTimeout (sent every
// second in a cluster).
type creditCheckMsg struct{}

func (ra *readerActor) Receive(c pa.Context) {
	ra.receive(c)
	if ra.outN > 0 {
		ra.flushOut(c)
	}
}

func (ra *readerActor) receive(c pa.Context) {
	switch m := c.Message().(type) {
	case pollMsg:
		ra.polling = false
		ra.poll(c)
	case *wire.Pause:
		ra.pause(c, m)
	case pauseLeaseMsg:
		ra.leaseEnded(c)
	case *wire.Acks:
		named := len(m.Starts) == len(m.Fragments) // a node before acknowledgements named their batch: none
		for i, f := range m.Fragments {
			start := int64(-1)
			if named {
				start = m.Starts[i]
			}
			ra.ack(c, int(f), start)
		}
		ra.settle(c)
	case *wire.Rewind:
		ra.rewind(c, m.To, int(m.Fragment))
	case creditCheckMsg:
		// Batches lost on the way (a connection broke) are sent again: if
		// they were the partition's last, nothing would ever show the
		// fragment the gap.
		from, took := ra.cr.Expire(ra.e.cfg.Now())
		if from >= 0 {
			ra.rewind(c, from, -1)
		}
		if took {
			if ra.cr.Ended() {
				ra.flushAll(c)
			}
			ra.schedule(c, 0)
		}
	case movedMsg:
		// Batches in flight to a fragment's old owner will not be
		// acknowledged: take their credits back and send the new owner
		// from there, or a batch at the position that shows it its gap
		// (recovery.Credits.Moved).
		now := ra.e.cfg.Now()
		for _, f := range m.fragments {
			if f >= 0 && f < ra.cr.Fragments() {
				ra.rewind(c, ra.cr.Moved(f, now, ra.r.Position()), f)
			}
		}
		if ra.cr.Ended() {
			ra.flushAll(c)
		}
		ra.schedule(c, 0)
	case ackMsg:
		ra.ack(c, m.fragment, m.start)
		ra.settle(c)
	case stopMsg:
		ra.unpause(c, "the engine is stopping")
		// Flush regardless of credits: the engine is stopping and the
		// fragments' final checkpoints should cover everything read.
		ra.stopped = true
		for f := range ra.cr.Fragments() {
			if ra.r.Due(f) {
				ra.send(c, f)
			}
		}
		ra.flushOut(c)
		c.Respond(stopMsg{})
	case *wire.Durable:
		for i, f := range m.Fragments {
			if i < len(m.Offsets) {
				if to, grew := ra.cr.Durable(int(f), m.Offsets[i]); grew {
					ra.commit(to)
				}
			}
		}
	case rewindMsg:
		ra.rewind(c, m.to, m.fragment)
		ra.e.drainCount(-1) // the rewind is handled
	case *pa.Stopping:
		if err := ra.r.Close(); err != nil {
			ra.e.cfg.Logger.Warn("close source", "source", ra.stats.Source, "partition", ra.stats.Partition, "err", err)
		}
	default:
		ra.e.unknown(m)
	}
}

// commit commits the source up to offset c, the smallest offset every
// fragment's durable checkpoint covers. A fragment that moves keeps the
// offset its old owner announced: the new owner restores the standby's
// copy of that checkpoint, or an older one if the owner died before it
// replicated, and readers rewind to it; sources never restart from their
// commits, which tell the source what it may trim.
func (ra *readerActor) commit(c int64) {
	ra.stats.Committed.Store(c)
	if c == 0 {
		return
	}
	if err := ra.r.Commit(c); err != nil {
		ra.e.cfg.Logger.Warn("commit source offset", "source", ra.stats.Source, "partition", ra.stats.Partition,
			"offset", c, "err", err)
	}
}

// ack returns the credit of fragment f's batch that began at start (-1:
// the oldest in flight); an acknowledgement of no batch in flight changes
// nothing (recovery.Credits.Ack).
func (ra *readerActor) ack(c pa.Context, f int, start int64) {
	unblocked, ok := ra.cr.Ack(f, start, ra.e.cfg.Now())
	if !ok {
		return
	}
	if unblocked {
		ra.send(c, f)
	}
	if ra.cr.Ended() {
		ra.flushAll(c)
	}
	ra.schedule(c, 0)
}

// rewind moves the reader back for fragment f, which restored an older
// checkpoint; the other fragments drop what they already applied. A
// fragment that is not behind is sent its next batch even if nothing
// changed (it may lack the watermark, the end of the input's above all).
func (ra *readerActor) rewind(c pa.Context, to int64, f int) {
	if ra.stopped {
		return
	}
	if len(ra.pauses) > 0 && to < ra.r.Position() {
		// A fragment restored an older checkpoint: the partition is not
		// at one position for every fragment now.
		ra.unpause(c, fmt.Sprintf("%s rewound to %d for fragment %d", ra.name(), to, f))
	}
	ra.cr.Resend(f, to, ra.e.cfg.Now()) // sent again from to, or reminded (-1: Expire took them back)
	rewound, err := ra.r.RewindFor(f, to)
	if err != nil {
		ra.e.fail(err)
		ra.stopped = true
		return
	}
	if !rewound {
		if f >= 0 && f < ra.cr.Fragments() && ra.cr.CanSend(f) {
			ra.send(c, f)
		}
		return
	}
	ra.stats.Rewinds.Add(1)
	ra.stats.Position.Store(to)
	if ra.cr.Rewound() {
		ra.stats.Done.Store(false)
		ra.e.drainCount(+1)
	}
	ra.schedule(c, 0)
}

// schedule asks for another poll, after d, unless one is coming, reading is
// blocked, or the partition is exhausted.
func (ra *readerActor) schedule(c pa.Context, d time.Duration) {
	if ra.polling || !ra.cr.MayPoll() || ra.stopped || len(ra.pauses) > 0 {
		return
	}
	ra.polling = true
	if d == 0 {
		c.Send(c.Self(), pollMsg{})
	} else {
		ra.e.after(d, c.Self(), pollMsg{})
	}
}

func (ra *readerActor) poll(c pa.Context) {
	if !ra.cr.MayPoll() || ra.stopped || len(ra.pauses) > 0 {
		return
	}
	ra.r.SetNow(ra.e.cfg.Now())
	n, err := ra.r.Poll(context.Background(), ra.e.cfg.PollSize)
	ra.stats.Events.Add(int64(n))
	ra.stats.Position.Store(ra.r.Position())
	ra.deadLetters()
	if err != nil && !errors.Is(err, io.EOF) {
		ra.e.fail(fmt.Errorf("%s: %w", ra.e.plan.PartitionName(ra.r.Source(), ra.r.Partition()), err))
		ra.stopped = true
		return
	}
	for _, f := range ra.r.Full() {
		if !ra.cr.CanSend(f) {
			if ra.cr.Block(f) {
				ra.stats.Stalls.Add(1)
			}
			continue
		}
		ra.send(c, f)
	}
	if err != nil { // io.EOF
		ra.cr.EOF()
		ra.flushAll(c)
		return
	}
	now := ra.e.cfg.Now()
	if now.Sub(ra.lastFlush) >= ra.e.cfg.BatchDelay {
		ra.lastFlush = now
		ra.flushAll(c)
	}
	if n == 0 {
		ra.schedule(c, min(ra.e.cfg.IdleDelay, ra.e.cfg.BatchDelay))
	} else {
		ra.schedule(c, 0)
	}
}

// flushAll sends every fragment that is behind the position and has a
// credit; at the end of the partition, it marks the reader finished once
// everything is acknowledged.
func (ra *readerActor) flushAll(c pa.Context) {
	behind := false
	for f := range ra.cr.Fragments() {
		if !ra.r.Due(f) {
			continue
		}
		if !ra.cr.CanSend(f) {
			behind = true
			continue
		}
		ra.send(c, f)
	}
	if ra.cr.Flushed(behind) {
		ra.stats.Done.Store(true)
		ra.e.drainCount(-1)
	}
}

func (ra *readerActor) send(c pa.Context, f int) {
	l := ra.e.layout.Load()
	b := ra.r.Take(f)
	b.Epoch = l.epoch
	ra.cr.Sent(f, b.PrevEnd, ra.e.cfg.Now())
	to := l.route[f]
	local := ra.e.isLocal(to)
	// The next batches of a fragment on another node are encoded as their
	// records are routed (flowcore.Reader.EncodeAhead).
	ra.r.EncodeAhead(f, !local)
	if local {
		c.Send(to, &batchMsg{b: b, reader: c.Self()})
		return
	}
	count := b.Count
	ra.stats.Crossed.Add(int64(count))
	if need := outRoom(count, ra.outPerRec); cap(ra.outBuf)-len(ra.outBuf) < need {
		ra.outBuf = make([]byte, 0, max(outChunk, need))
	}
	start := len(ra.outBuf)
	enc, err := ra.e.plan.EncodeBatch(ra.outBuf, b)
	b.Release()
	if err != nil {
		ra.e.fail(fmt.Errorf("encode a batch for fragment %d: %w", f, err))
		ra.stopped = true
		return
	}
	// Parts already sent stay valid if the arena grows (a batch larger
	// than its room): they keep the old array.
	ra.outBuf = enc
	part := enc[start:len(enc):len(enc)]
	if count > 0 {
		ra.outPerRec = (7*ra.outPerRec + len(part)/count + 1) / 8
	}
	addr := to.Address
	m := ra.out[addr]
	if m != nil && m.Epoch != b.Epoch && len(m.Fragments) > 0 {
		ra.sendOut(c, addr, m) // a message carries one placement epoch
		m = ra.out[addr]
	}
	if m == nil {
		self := c.Self()
		m = &wire.Batches{Flow: ra.e.plan.Name(), ReaderAddress: self.Address, ReaderId: self.Id}
		ra.out[addr] = m
	}
	m.Epoch = b.Epoch
	m.Fragments = append(m.Fragments, uint32(f))
	m.Records = append(m.Records, part)
	ra.outN++
	ra.outBytes[addr] += len(part)
	if ra.outBytes[addr] >= maxBatchesBytes {
		ra.sendOut(c, addr, m)
	}
}

// flushOut sends the batches held for other nodes, one message per node.
func (ra *readerActor) flushOut(c pa.Context) {
	for addr, m := range ra.out {
		if len(m.Fragments) > 0 {
			ra.sendOut(c, addr, m)
		}
	}
	ra.outN = 0
}

// outChunk is the size of a new arena for batches to other nodes: a
// turn's batches for other nodes (a few tens of kilobytes every few
// milliseconds) fill one over several turns.
const outChunk = 64 << 10

// outRoom is the room a batch of count records needs in the arena, with
// perRec bytes a record seen so far (a header, and a quarter more): a
// batch that outgrows it grows the arena by copying.
func outRoom(count, perRec int) int {
	return 256 + count*max(perRec, 16)*5/4
}

func (ra *readerActor) sendOut(c pa.Context, addr string, m *wire.Batches) {
	c.Send(pa.NewPID(addr, ra.e.plan.Name()+"/inbox"), m)
	ra.outN -= len(m.Fragments)
	ra.outBytes[addr] = 0
	ra.out[addr] = &wire.Batches{Flow: m.Flow, Epoch: m.Epoch, ReaderAddress: m.ReaderAddress, ReaderId: m.ReaderId,
		Fragments: make([]uint32, 0, len(m.Fragments)), Records: make([][]byte, 0, len(m.Records))}
}

func (ra *readerActor) deadLetters() {
	bad := ra.r.TakeBad()
	dls := ra.r.TakeDeadLetters()
	if len(bad) == 0 && len(dls) == 0 {
		return
	}
	ra.stats.Bad.Add(int64(len(bad)))
	for _, b := range bad {
		ra.e.cfg.Logger.Warn("malformed record", "source", ra.stats.Source, "partition", ra.stats.Partition,
			"where", b.Where, "offset", b.Offset, "err", b.Err)
		dl := flows.DeadLetter{Flow: ra.e.plan.Name(), Source: ra.stats.Source, Partition: ra.stats.Partition,
			Offset: b.Offset, Fragment: -1, Where: b.Where, Error: b.Err.Error()}
		dl.SetRaw(b.Raw)
		dls = append(dls, dl)
	}
	ra.e.deadLetters(dls)
}
