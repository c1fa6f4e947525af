package actor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	pa "github.com/asynkron/protoactor-go/actor"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/internal/wire"
)

type readerActor struct {
	e         *Engine
	r         *flows.Reader
	stats     *ReaderStats
	credits   []int
	blocked   []bool // a full batch waits for a credit
	nblocked  int
	inflight  int
	polling   bool // a pollMsg is on its way
	eof       bool
	finished  bool
	stopped   bool // a fatal source error
	lastFlush time.Time
	buf       []byte      // encoding of batches to other nodes
	lastAck   []time.Time // per fragment: when a credit last came back
	// unacked: per fragment, the start offsets of the batches sent and not
	// yet acknowledged, oldest first.
	unacked [][]int64
}

// creditTimeout is how long a reader waits for a fragment that has all its
// credits before it takes them back: the batches went to an owner that
// left or has not started yet, and will show as a gap at the fragment,
// which asks for a rewind.
const creditTimeout = 3 * time.Second

// creditCheckMsg makes a reader take back the credits of fragments that
// have not acknowledged anything for creditTimeout (sent every second in a
// cluster).
type creditCheckMsg struct{}

func (ra *readerActor) Receive(c pa.Context) {
	switch m := c.Message().(type) {
	case pollMsg:
		ra.polling = false
		ra.poll(c)
	case *wire.Ack:
		if int(m.Fragment) < len(ra.credits) {
			ra.ack(c, int(m.Fragment))
		}
	case *wire.Rewind:
		ra.rewind(c, m.To)
	case creditCheckMsg:
		now, took := ra.e.cfg.Now(), false
		from := int64(-1)
		for f, n := range ra.credits {
			if n < ra.e.cfg.Credits && now.Sub(ra.lastAck[f]) >= creditTimeout {
				// The batches were lost on the way (a connection broke):
				// send them again, or, if they were the partition's last,
				// nothing would ever show the fragment the gap.
				if u := ra.unacked[f]; len(u) > 0 && (from < 0 || u[0] < from) {
					from = u[0]
				}
				ra.reclaim(f)
				took = true
			}
		}
		if from >= 0 {
			ra.rewind(c, from)
		}
		if took {
			if ra.eof {
				ra.flushAll(c)
			}
			ra.schedule(c, 0)
		}
	case movedMsg:
		// Batches in flight to a fragment's old owner will not be
		// acknowledged: take their credits back.
		for _, f := range m.fragments {
			ra.reclaim(f)
		}
		if ra.eof {
			ra.flushAll(c)
		}
		ra.schedule(c, 0)
	case ackMsg:
		ra.ack(c, m.fragment)
	case stopMsg:

		// Flush regardless of credits: the engine is stopping and the
		// fragments' final checkpoints should cover everything read.
		ra.stopped = true
		for f := range ra.credits {
			if ra.r.Due(f) {
				ra.send(c, f)
			}
		}
		c.Respond(stopMsg{})
	case commitMsg:
		if err := ra.r.Commit(m.offset); err != nil {
			ra.e.cfg.Logger.Warn("commit source offset", "source", ra.stats.Source, "partition", ra.stats.Partition,
				"offset", m.offset, "err", err)
		}
	case rewindMsg:
		ra.rewind(c, m.to)
		ra.e.drainCount(-1) // the rewind is handled
	case *pa.Stopping:
		if err := ra.r.Close(); err != nil {
			ra.e.cfg.Logger.Warn("close source", "source", ra.stats.Source, "partition", ra.stats.Partition, "err", err)
		}
	default:
		ra.e.unknown(m)
	}
}

// reclaim takes back fragment f's credits.
func (ra *readerActor) reclaim(f int) {
	ra.inflight -= ra.e.cfg.Credits - ra.credits[f]
	ra.credits[f] = ra.e.cfg.Credits
	ra.unacked[f] = ra.unacked[f][:0]
	ra.lastAck[f] = ra.e.cfg.Now()
	if ra.blocked[f] {
		ra.blocked[f] = false
		ra.nblocked--
	}
}

// ack returns a credit of fragment f.
func (ra *readerActor) ack(c pa.Context, f int) {
	if ra.credits[f] >= ra.e.cfg.Credits {
		return // a late ack from a fragment's old owner
	}
	ra.credits[f]++
	ra.inflight--
	if u := ra.unacked[f]; len(u) > 0 {
		ra.unacked[f] = append(u[:0], u[1:]...)
	}
	ra.lastAck[f] = ra.e.cfg.Now()
	if ra.blocked[f] {
		ra.blocked[f] = false
		ra.nblocked--
		ra.send(c, f)
	}
	if ra.eof {
		ra.flushAll(c)
	}
	ra.schedule(c, 0)
}

// rewind moves the reader back for a fragment that restored an older
// checkpoint; the other fragments drop what they already applied.
func (ra *readerActor) rewind(c pa.Context, to int64) {
	if ra.stopped || to >= ra.r.Position() {
		return
	}
	if err := ra.r.Rewind(to); err != nil {
		ra.e.fail(err)
		ra.stopped = true
		return
	}
	ra.stats.Rewinds.Add(1)
	ra.stats.Position.Store(to)
	clear(ra.blocked)
	ra.nblocked = 0
	ra.eof = false
	if ra.finished {
		ra.finished = false
		ra.stats.Done.Store(false)
		ra.e.drainCount(+1)
	}
	ra.schedule(c, 0)
}

// schedule asks for another poll, after d, unless one is coming, reading is
// blocked, or the partition is exhausted.
func (ra *readerActor) schedule(c pa.Context, d time.Duration) {
	if ra.polling || ra.nblocked > 0 || ra.eof || ra.stopped {
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
	if ra.nblocked > 0 || ra.eof || ra.stopped {
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
		if ra.credits[f] == 0 {
			if !ra.blocked[f] {
				ra.blocked[f] = true
				ra.nblocked++
				ra.stats.Stalls.Add(1)
			}
			continue
		}
		ra.send(c, f)
	}
	if err != nil { // io.EOF
		ra.eof = true
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
	for f := range ra.credits {
		if !ra.r.Due(f) {
			continue
		}
		if ra.credits[f] == 0 {
			behind = true
			continue
		}
		ra.send(c, f)
	}
	if ra.eof && !behind && ra.inflight == 0 && !ra.finished {
		ra.finished = true
		ra.stats.Done.Store(true)
		ra.e.drainCount(-1)
	}
}

func (ra *readerActor) send(c pa.Context, f int) {
	l := ra.e.layout.Load()
	b := ra.r.Take(f)
	b.Epoch = l.epoch
	if ra.credits[f] == ra.e.cfg.Credits {
		ra.lastAck[f] = ra.e.cfg.Now() // the wait for an ack starts now
	}
	ra.credits[f]--
	ra.inflight++
	ra.unacked[f] = append(ra.unacked[f], b.PrevEnd)
	to := l.route[f]
	if ra.e.isLocal(to) {
		c.Send(to, &batchMsg{b: b, reader: c.Self()})
		return
	}
	enc, err := ra.e.plan.EncodeBatch(ra.buf[:0], b)
	b.Release()
	if err != nil {
		ra.e.fail(fmt.Errorf("encode a batch for fragment %d: %w", f, err))
		ra.stopped = true
		return
	}
	ra.buf = enc
	self := c.Self()
	c.Send(to, &wire.Batch{Flow: ra.e.plan.Name(), Fragment: uint32(f), Epoch: b.Epoch,
		Records: append([]byte(nil), enc...), ReaderAddress: self.Address, ReaderId: self.Id})
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
		dls = append(dls, flows.DeadLetter{Flow: ra.e.plan.Name(), Source: ra.stats.Source, Partition: ra.stats.Partition,
			Offset: b.Offset, Fragment: -1, Where: b.Where, Value: string(b.Raw), Error: b.Err.Error()})
	}
	ra.e.deadLetters(dls)
}
