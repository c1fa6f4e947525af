package actor

import (
	"context"
	"errors"
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
// again otherwise. Then the readers read on (resume). A reader on a node
// that died never answers (protoactor holds what is sent to the node for
// about 10 s before it gives up): the pause stops waiting once a reader's
// node is found unreachable or the placement changes, as a query does,
// and the read asks again, of the readers placed now, within its timeout.
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
// A flow that keys again (exchanges) needs more than standing readers: a
// fragment sends its exchange outputs only once a checkpoint covers them
// (internal/flowcore/exchange.go: a restored upstream must never contradict what
// downstream saw), so when the readers stand still every first-stage
// fragment is at the cut but the next stage is at the first stage's last
// released outputs, up to a checkpoint interval behind — and standing
// still longer does not move it. So, with the readers held, Pause runs
// rounds of releases (releaseAll, wire.Release): every fragment is asked
// to let go of every output it made so far. A fragment that holds some
// takes a checkpoint at once, and another each time one lands while some
// still wait, until its release rule lets them go — a durable checkpoint
// on a single node, the one after it on a cluster node
// (recovery.MachineConfig.Replicated), the standby's confirmation of the
// copy under Confirm — so the request works whichever rule releases, and
// the rule stays the machine's. It answers (wire.Released) once they are
// sent and every fragment downstream acknowledged them (applied), with,
// per exchange, the number of outputs it made and the end of what it sent
// each fragment downstream. A fragment downstream that applied them may
// have made outputs for a further exchange: a round in which no fragment
// held any is the last (a chain of k exchanges takes k rounds and one in
// which nobody waits; more than one per exchange means timers keep making
// outputs, and the read fails as unavailable and tries again). The cut
// then states, per exchange, each upstream fragment's output count
// (splice.Cut.Exchanges), and splice.EvaluateRead checks each fragment's
// answer against what each upstream fragment sent it (splice.Hold.Applied)
// as against the source offsets. A latest read with min_offsets of such
// a flow is answered from a cut too (splice.Staged): no fragment's source
// offsets say that the later stages applied those events.
//
// The price, per snapshot read of a pipeline, while the input stands
// still: a checkpoint of every fragment that holds outputs (a disk sync
// each, group-committed), two on a cluster node, and the acknowledgements
// of the released batches. Measured with a two-stage flow of 16 fragments
// on pebble on disk on a shared 2-core machine: p50 10–17 ms, p90 70–90
// ms. The releases run within the read's deadline, as the readers' lease
// does: a fragment drops a Release whose lease ran out, and a read whose
// deadline passes lets the readers go.
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
// at one cut and, in a flow that keys again, lets every stage apply what
// the stage before made up to it (releaseAll); it returns the cut with
// the function that lets the readers read on. An error that is
// splice.ErrUnavailable may pass if asked again.
func (e *Engine) Pause(ctx context.Context) (splice.Hold, func(), error) {
	l := e.layout.Load()
	id := rand.Uint64() | 1
	wait := pauseWait
	if d, ok := ctx.Deadline(); ok {
		wait = time.Until(d)
	}
	if wait <= 0 {
		return splice.Hold{}, nil, context.DeadlineExceeded
	}
	deadline := time.Now().Add(wait)
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
	why := e.pausedAll(l, futs, wait, cut)
	hold := splice.Hold{Offsets: cut}
	if len(why) == 0 && e.plan.HasExchanges() {
		var err error
		if hold, err = e.releaseAll(l, id, deadline, cut); err != nil {
			why = append(why, err.Error())
		}
	}
	if len(why) > 0 {
		release()
		if err := ctx.Err(); err != nil {
			return splice.Hold{}, nil, err
		}
		return splice.Hold{}, nil, &splice.UnavailableError{Reason: "no cut: " + strings.Join(why, "; "), RetryAfter: time.Second}
	}
	return hold, release, nil
}

// pausedAnswer is a reader's answer to a Pause, by its place in
// layout.allRead.
type pausedAnswer struct {
	i   int
	res any
	err error
}

// pausedAll waits for every reader's answer to the Pause of futs, adds
// the positions to cut, and says why any did not stand still. A reader
// on a node that dies never answers, and protoactor holds what is sent
// to that node until it gives the connection up (about 10 s): as a
// query does (query.go), it stops waiting once a reader's node is found
// unreachable, or the placement changed (the reader moved), so that the
// read asks again, of the readers the placement names now, within its
// timeout.
func (e *Engine) pausedAll(l *layout, futs []*pa.Future, wait time.Duration, cut map[string]int64) []string {
	answers := make(chan pausedAnswer, len(futs))
	for i, f := range futs {
		go func() {
			res, err := f.Result()
			answers <- pausedAnswer{i, res, err}
		}()
	}
	var why []string
	pending := make(map[int]bool, len(futs))
	for i := range futs {
		pending[i] = true
	}
	probe := time.NewTimer(probeAfter)
	defer probe.Stop()
	for len(pending) > 0 {
		select {
		case a := <-answers:
			delete(pending, a.i)
			name := e.plan.PartitionName(e.allParts[a.i].Source, e.allParts[a.i].Partition)
			switch p, ok := a.res.(*wire.Paused); {
			case a.err != nil:
				why = append(why, fmt.Sprintf("the reader of %s did not stand still in %v", name, wait.Round(time.Millisecond)))
			case !ok:
				why = append(why, fmt.Sprintf("the reader of %s answered with a %T", name, a.res))
			case p.Error != "":
				why = append(why, p.Error)
			default:
				cut[p.Partition] = p.Position
			}
			continue
		case <-probe.C:
		}
		gone := ""
		if e.layout.Load() != l {
			gone = "the placement changed"
		}
		for i := range pending {
			if pid := l.allRead[i]; gone == "" && !e.isLocal(pid) && !e.reachable(l.nodeAt(pid.Address), pid.Address) {
				gone = fmt.Sprintf("the reader of %s is on node %s, which is unreachable",
					e.plan.PartitionName(e.allParts[i].Source, e.allParts[i].Partition), l.nodeAt(pid.Address))
			}
		}
		if gone != "" {
			// Its answer will not come, or not for this cut: stop waiting
			// for every reader that has not answered (their futures end
			// with no answer).
			why = append(why, gone)
			for i := range pending {
				e.sys.Root.Stop(futs[i].PID())
			}
			for range pending {
				<-answers
			}
			return why
		}
		probe.Reset(probeEvery)
	}
	return why
}

// releaseAll makes every stage of a pipeline apply what the stage before
// made from the input up to cut, while the readers stand still there: in
// rounds, every fragment is asked to let go of the outputs it made so far
// (a checkpoint, or two, or the standby's confirmation: the release rule
// is the machine's) and answers once the fragments downstream
// acknowledged them. A fragment downstream that applied them may have
// made outputs of its own for the stage after it: a round in which no
// fragment held any is the last, and its answers are the cut's exchange
// positions. Without timers that fire on their own, a flow needs a round
// per exchange in a chain, and one more.
func (e *Engine) releaseAll(l *layout, id uint64, deadline time.Time, cut map[string]int64) (splice.Hold, error) {
	n := e.plan.Fragments()
	rounds := len(e.plan.Exchanges()) + 1
	for range rounds {
		wait := time.Until(deadline)
		if wait <= 0 {
			return splice.Hold{}, fmt.Errorf("the stages did not apply the cut's input in time")
		}
		futs := make([]*pa.Future, n)
		for f := range n {
			if f < len(l.route) && l.route[f] != nil {
				futs[f] = e.sys.Root.RequestFuture(l.route[f], &wire.Release{Id: id, LeaseMs: wait.Milliseconds()}, wait)
			}
		}
		answers := make([]*wire.Released, n)
		var why []string
		waited := false
		for f, fut := range futs {
			if fut == nil {
				why = append(why, fmt.Sprintf("fragment %d has no owner", f))
				continue
			}
			res, err := fut.Result()
			switch r, ok := res.(*wire.Released); {
			case err != nil:
				why = append(why, fmt.Sprintf("fragment %d did not release its outputs in %v", f, wait.Round(time.Millisecond)))
			case !ok:
				why = append(why, fmt.Sprintf("fragment %d answered with a %T", f, res))
			case r.Error != "":
				why = append(why, r.Error)
			default:
				answers[f] = r
				waited = waited || r.Waited
			}
		}
		if len(why) > 0 {
			return splice.Hold{}, errors.New(strings.Join(why, "; "))
		}
		if !waited {
			return e.holdOf(cut, answers), nil
		}
	}
	return splice.Hold{}, fmt.Errorf("fragments still made outputs after %d rounds of releases (timers firing?)", rounds)
}

// holdOf is the cut with the exchanges' positions the fragments answered.
func (e *Engine) holdOf(cut map[string]int64, answers []*wire.Released) splice.Hold {
	n := e.plan.Fragments()
	chans := e.plan.Channels()
	h := splice.Hold{Offsets: cut, Exchanges: map[string][]int64{}, Applied: make(map[int]map[string]int64, n)}
	for d := range n {
		h.Applied[d] = map[string]int64{}
	}
	for u, a := range answers {
		for _, x := range a.Exchanges {
			ch := int(x.Channel)
			if ch >= len(chans) {
				continue
			}
			made := h.Exchanges[chans[ch].Name]
			if made == nil {
				made = make([]int64, n)
				h.Exchanges[chans[ch].Name] = made
			}
			made[u] = x.Made
			p := e.plan.PartitionName(ch, u)
			for d, end := range x.Sent {
				if d < n {
					h.Applied[d][p] = end
				}
			}
		}
	}
	return h
}

// KeysAgain implements splice.Staged: the flow has exchanges.
func (e *Engine) KeysAgain() bool { return e.plan.HasExchanges() }

// SourcePartitions names the partitions of the flow's sources
// (splice.Partitioned).
func (e *Engine) SourcePartitions() []string { return e.plan.SourcePartitions() }

var _ splice.Partitioned = (*Engine)(nil)

var (
	_ splice.Cutter = (*Engine)(nil)
	_ splice.Staged = (*Engine)(nil)
)

// releaseWait is a Release a fragment has not answered yet.
type releaseWait struct {
	id     uint64
	asker  *pa.PID
	until  time.Time // its lease
	waited bool      // outputs were held when it came
}

// release takes a snapshot read's request to let every output made so far
// leave (settleReleases answers it).
func (fa *fragmentActor) release(c pa.Context, m *wire.Release) {
	lease := time.Duration(m.LeaseMs) * time.Millisecond
	if lease <= 0 || lease > maxLease {
		lease = maxLease
	}
	fa.releases = append(fa.releases, releaseWait{id: m.Id, asker: c.Sender(), until: time.Now().Add(lease),
		waited: fa.m.Fragment().Holding() || fa.m.Unacknowledged() > 0})
}

// settleReleases answers the Releases once every output the fragment made
// is released, sent and acknowledged, and otherwise takes a checkpoint if
// outputs wait for one and none is being written. Whichever rule releases
// outputs (a durable checkpoint, the checkpoint after it, the standby's
// confirmation of its copy: recovery.MachineConfig), they leave after some
// checkpoint that covers them, so checkpointing until none waits reaches
// it; the rule itself stays the machine's.
func (fa *fragmentActor) settleReleases(c pa.Context) {
	if len(fa.releases) == 0 {
		return
	}
	m := fa.m
	why := ""
	switch {
	case fa.stopped:
		why = fmt.Sprintf("fragment %d stopped on this node", fa.id)
	case m.Broken() != nil:
		why = fmt.Sprintf("fragment %d takes no checkpoints: %v", fa.id, m.Broken())
	case m.Serving() != nil:
		why = m.Serving().Error()
	}
	now := time.Now()
	fr := m.Fragment()
	settled := !fr.Holding() && m.Unacknowledged() == 0
	var made []*wire.ExchangeMade
	keep := fa.releases[:0]
	for _, w := range fa.releases {
		switch {
		case why != "":
			c.Send(w.asker, &wire.Released{Id: w.id, Fragment: uint32(fa.id), Error: why})
		case settled:
			if made == nil {
				made = fa.made()
			}
			// The answers share made: their receivers only read it.
			c.Send(w.asker, &wire.Released{Id: w.id, Fragment: uint32(fa.id), Waited: w.waited, Exchanges: made})
		case !w.until.After(now):
			c.Send(w.asker, &wire.Released{Id: w.id, Fragment: uint32(fa.id),
				Error: fmt.Sprintf("fragment %d did not release its outputs within its lease", fa.id)})
		default:
			keep = append(keep, w)
		}
	}
	clear(fa.releases[len(keep):])
	fa.releases = keep
	if len(keep) > 0 && fr.Unreleased() && !m.Writing() {
		fa.checkpoint(c, false)
	}
}

// made is, on each exchange, the outputs the fragment made and the end of
// what it sent each fragment downstream.
func (fa *fragmentActor) made() []*wire.ExchangeMade {
	fr := fa.m.Fragment()
	n := fa.e.plan.Fragments()
	var out []*wire.ExchangeMade
	for _, ch := range fa.e.plan.Exchanges() {
		x := &wire.ExchangeMade{Channel: uint32(ch), Made: fr.Made(ch), Sent: make([]int64, n)}
		for d := range n {
			_, x.Sent[d] = fr.Kept(ch, d)
		}
		out = append(out, x)
	}
	return out
}
