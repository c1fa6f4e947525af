package actor

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	pa "github.com/asynkron/protoactor-go/actor"

	"github.com/tessera-streams/tessera/internal/wire"
	"github.com/tessera-streams/tessera/splice"
)

// Snapshot reads: one cut for every fragment.
//
// A snapshot read asks every reader of the flow, on whichever node it
// runs, to stand still (wire.Pause): the reader stops polling, sends every
// fragment its records up to its position (an empty batch still moves the
// fragment's offset there), and answers with its position (wire.Paused)
// once every fragment acknowledged everything it sent. When all readers
// answered, every fragment has applied every source partition exactly up
// to the reader's position and nothing beyond: the positions are one cut,
// and the view is gathered as usual. splice.EvaluateRead checks that every
// fragment's answer reports exactly the cut's offsets (a fragment that
// restored, moved or answered from a standby's copy does not) and asks
// again otherwise. Then the readers read on (resume).
//
// The price is a pause of the input for one round trip to the readers,
// the batches in flight and the evaluation: a few milliseconds on one
// node. Snapshot reads that arrive together each pause on their own id,
// and a reader reads again once none holds it. A pause is a lease: a
// reader resumes by itself once the read's deadline has passed by
// leaseMargin (at most maxLease), so that a coordinator that dies stops
// the input no longer than its read's timeout. A reader that rewinds while
// paused (a fragment restored an older checkpoint) drops its pauses with
// an error. A lease that ran out before the evaluation is no harm: the
// answers no longer match the cut, and the read asks again.
//
// Only a flow without exchanges can be held this way. A cut of a
// pipeline means every stage as of the same source offsets: the stage
// after a second KeyBy must have applied exactly what the stage before
// produced from the cut's input. But a fragment sends its exchange outputs
// only once a durable checkpoint covers them (flows/exchange.go: a
// restored upstream must never contradict what downstream saw), so when
// the readers stand still every first-stage fragment is at the cut and
// the next stage is at the first stage's last checkpoints, up to a
// checkpoint interval behind — and standing still longer does not move it,
// since nothing more is released until the next checkpoint. Making one cut
// would take, per snapshot read and while the input stands still: a
// checkpoint of every fragment at once (a disk sync each) so that their
// outputs up to the cut leave, a wait until every fragment downstream
// applied them, one more such round per further exchange (each stage's
// outputs wait for its own checkpoint), and answers that report, per
// exchange, the output sequence each upstream fragment had reached at the
// cut, to check each downstream fragment's offsets against (today's
// freshness carries source offsets only). Pause refuses such flows with
// ErrBadRequest and says so; their views answer "latest" reads, each
// fragment with its own freshness.
const (
	leaseMargin = time.Second
	maxLease    = splice.MaxReadTimeout + leaseMargin
	// pauseWait bounds the wait for every reader's answer of a read
	// without a deadline.
	pauseWait = splice.DefaultReadTimeout
)

// pauseHold is one snapshot read holding a reader still.
type pauseHold struct {
	asker    *pa.PID // where the Paused goes
	answered bool
	until    time.Time // its lease
}

// pauseLeaseMsg makes a reader end the pauses whose lease ran out. A
// reader has at most one on its way (leaseCheck), for its earliest lease.
type pauseLeaseMsg struct{}

func (ra *readerActor) name() string {
	return ra.e.plan.PartitionName(ra.r.Source(), ra.r.Partition())
}

// pause holds the reader still for m.Id, or lets it read on (m.Resume).
func (ra *readerActor) pause(c pa.Context, m *wire.Pause) {
	if m.Resume {
		ra.resume(c, m.Id)
		return
	}
	asker := c.Sender()
	if ra.stopped {
		if asker != nil {
			c.Send(asker, &wire.Paused{Id: m.Id, Partition: ra.name(), Error: ra.name() + " is stopped"})
		}
		return
	}
	if ra.pauses == nil {
		ra.pauses = map[uint64]*pauseHold{}
	}
	if _, ok := ra.pauses[m.Id]; ok {
		return
	}
	lease := time.Duration(m.LeaseMs) * time.Millisecond
	if lease <= 0 || lease > maxLease {
		lease = maxLease
	}
	ra.pauses[m.Id] = &pauseHold{asker: asker, until: time.Now().Add(lease)}
	ra.leaseCheck(c)
	ra.settle(c)
}

// leaseCheck makes sure a pauseLeaseMsg comes by the earliest lease.
func (ra *readerActor) leaseCheck(c pa.Context) {
	var first time.Time
	for _, h := range ra.pauses {
		if first.IsZero() || h.until.Before(first) {
			first = h.until
		}
	}
	if first.IsZero() || (!ra.leaseAt.IsZero() && !ra.leaseAt.After(first)) {
		return
	}
	ra.leaseAt = first
	ra.e.after(time.Until(first), c.Self(), pauseLeaseMsg{})
}

// leaseEnded ends the pauses whose lease ran out.
func (ra *readerActor) leaseEnded(c pa.Context) {
	ra.leaseAt = time.Time{}
	now := time.Now()
	for id, h := range ra.pauses {
		if !h.until.After(now) {
			ra.resume(c, id)
		}
	}
	ra.leaseCheck(c)
}

// settle sends the fragments what they still lack up to the position
// while the reader is paused, and answers the pauses once every fragment
// acknowledged it all.
func (ra *readerActor) settle(c pa.Context) {
	if len(ra.pauses) == 0 {
		return
	}
	ra.flushAll(c)
	if ra.cr.InFlight() > 0 {
		return
	}
	for f := range ra.cr.Fragments() {
		if ra.r.Due(f) {
			return // no credit yet: an acknowledgement will come
		}
	}
	pos := ra.r.Position()
	for id, h := range ra.pauses {
		if !h.answered {
			h.answered = true
			if h.asker != nil {
				c.Send(h.asker, &wire.Paused{Id: id, Partition: ra.name(), Position: pos})
			}
		}
	}
}

// resume ends the pause id; the reader reads again once no pause holds it.
func (ra *readerActor) resume(c pa.Context, id uint64) {
	if _, ok := ra.pauses[id]; !ok {
		return
	}
	delete(ra.pauses, id)
	if len(ra.pauses) == 0 {
		ra.schedule(c, 0)
	}
}

// unpause drops every pause, telling those not yet answered why.
func (ra *readerActor) unpause(c pa.Context, why string) {
	for id, h := range ra.pauses {
		if !h.answered && h.asker != nil {
			c.Send(h.asker, &wire.Paused{Id: id, Partition: ra.name(), Error: why})
		}
	}
	if len(ra.pauses) > 0 {
		ra.pauses = nil
		ra.schedule(c, 0)
	}
}

// Pause implements splice.Cutter: it holds every reader of the flow still
// at one cut and returns it, with the function that lets them read on. An
// error that is splice.ErrUnavailable may pass if asked again.
func (e *Engine) Pause(ctx context.Context) (map[string]int64, func(), error) {
	if len(e.plan.Exchanges()) > 0 {
		return nil, nil, fmt.Errorf("%w: snapshot reads of flow %s are not supported: it keys again (%s), and a stage after an exchange "+
			"receives the stage before's outputs only once a checkpoint of it is durable, so no pause of the input makes every stage "+
			"stand at the same source offsets; read with consistency=latest, whose answer gives each fragment's offsets",
			splice.ErrBadRequest, e.plan.Name(), strings.Join(e.exchangeNames(), ", "))
	}
	l := e.layout.Load()
	id := rand.Uint64() | 1
	wait := pauseWait
	if d, ok := ctx.Deadline(); ok {
		wait = time.Until(d)
	}
	if wait <= 0 {
		return nil, nil, context.DeadlineExceeded
	}
	lease := wait + leaseMargin
	futs := make([]*pa.Future, len(l.allRead))
	for i, pid := range l.allRead {
		futs[i] = e.sys.Root.RequestFuture(pid, &wire.Pause{Id: id, LeaseMs: lease.Milliseconds()}, wait)
	}
	release := func() {
		for _, pid := range l.allRead {
			e.sys.Root.Send(pid, &wire.Pause{Id: id, Resume: true})
		}
	}
	cut := make(map[string]int64, len(futs))
	var why []string
	for i, f := range futs {
		res, err := f.Result()
		name := e.plan.PartitionName(e.allParts[i].Source, e.allParts[i].Partition)
		switch p, ok := res.(*wire.Paused); {
		case err != nil:
			why = append(why, fmt.Sprintf("the reader of %s did not stand still in %v", name, wait.Round(time.Millisecond)))
		case !ok:
			why = append(why, fmt.Sprintf("the reader of %s answered with a %T", name, res))
		case p.Error != "":
			why = append(why, p.Error)
		default:
			cut[p.Partition] = p.Position
		}
	}
	if len(why) > 0 {
		release()
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		return nil, nil, &splice.UnavailableError{Reason: "no cut: " + strings.Join(why, "; "), RetryAfter: time.Second}
	}
	return cut, release, nil
}

var _ splice.Cutter = (*Engine)(nil)

// exchangeNames names the flow's exchanges, as its input channels do.
func (e *Engine) exchangeNames() []string {
	var out []string
	for _, ch := range e.plan.Channels() {
		if ch.Exchange {
			out = append(out, ch.Name)
		}
	}
	return out
}
