package actor

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pa "github.com/asynkron/protoactor-go/actor"

	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/internal/wire"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/splice"
)

// fragmentActor carries out one fragment's recovery.Machine: it feeds it
// the batches, acknowledgements, ticks and checkpoint results that arrive,
// and sends, writes and restores what the machine's Ready says. The rules
// themselves (fencing, admission, gaps and rewinds, retries and backoff,
// hand-off waits, held acknowledgements, exchange outputs) are the
// machine's; the flowstest harness drives the same machine.
type fragmentActor struct {
	e        *Engine
	id       int
	m        *recovery.Machine
	tooLate  int64 // the fragment's too-late count already added to stats
	stats    *FragmentStats
	lastCkpt time.Time
	// pendingHandoff: a hand-off that came while a checkpoint was being
	// written, adopted once it is durable.
	pendingHandoff *handoffMsg
	again          bool     // take another checkpoint as soon as it is durable
	ending         bool     // a partition of its input ended: see flushEnded
	waiters        []waiter // on-demand checkpoint requests
	fullNext       bool     // send the standby the whole next checkpoint
	fromEmpty      bool     // started empty and took no checkpoint yet: the next one is whole
	holding        bool     // counted against the drain: down or in its backoff
	outputs        bool     // counted against the drain: exchange outputs wait for a checkpoint
	pauses         uint64   // the node's pauses the fragment has handled (pause.go)
	waits          uint64   // waits for a hand-off begun: a timeout ends only the latest
	waitCounted    bool     // a wait for a hand-off is counted against the drain
	// gather: gained from an owner that died, the fragment waits for the
	// copies of the live members it asked (recovery.Gather).
	gather *recovery.Gather[handoffMsg]
	// confirms: the processes whose hand-off the fragment took, to
	// confirm once its first checkpoint after confirmAfter is settled
	// (recovery.Machine.Settled).
	confirms     []handoffRef
	confirmAfter uint64
	// waitPlacement is the placement epoch the latest wait for a hand-off
	// began under: a hand-off made under an older one does not end it
	// (handedOff).
	waitPlacement uint64
	// others: the live members but this node, as the newest placement
	// the fragment heard of names them (a gather asks them).
	others []string
	// lacking: the newest settled checkpoint of the fragment known here,
	// which no live member offered and the copy here is behind: the
	// fragment stays unavailable and gathers again at every placement and
	// after every hand-off wait (lack; recovery.Settled).
	lacking      uint64
	lackingSince time.Time // when it began to lack (Config.UncleanAfter)
	acceptShort  bool      // it starts from the copies there are (unclean): handedOff takes an older one
	told         uint64    // the newest settled checkpoint it told the members of
	// members: the placement's members, leavers left out; confirmed: the
	// newest checkpoint the standby confirmed; known: who knows of it. It
	// is released once a majority of the members does (releaseKnown).
	members   []string
	confirmed uint64
	known     recovery.Known

	// releases: snapshot reads waiting for the outputs to leave (cut.go).
	releases []releaseWait

	// mu is held by Receive for every message, and for reading by query:
	// a view query reads the fragment's state on the asker's goroutine,
	// between two messages, rather than waiting for its turn in the
	// mailbox. stopped (under mu): the actor stopped; its state is no
	// longer this node's to answer from.
	mu      sync.RWMutex
	stopped bool
	// readable: the fragment whose published state queries may read
	// without mu, nil while it is not serving (readpath.go).
	readable atomic.Pointer[flowcore.Fragment]
	seq      atomic.Uint64 // odd while a message is handled (readpath.go)
}

// query answers a view request from the fragment's state, on the
// caller's goroutine: it waits at most for the message being handled (a
// batch applied, a checkpoint taken), never for the mailbox's queue, which
// under full ingest holds many batches and is run only when the scheduler
// gets to the actor's goroutine. Fragment.Query only reads the state, so
// queries run together.
func (fa *fragmentActor) query(req splice.Request) (splice.Answer, error) {
	if ans, ok := fa.queryPublished(req); ok {
		return ans, nil
	}
	fa.mu.RLock()
	defer fa.mu.RUnlock()
	if fa.stopped {
		return splice.Answer{}, &splice.UnavailableError{Fragments: []int{fa.id}, Reason: fmt.Sprintf("fragment %d stopped on this node: the placement is changing", fa.id), RetryAfter: time.Second}
	}
	if fa.lacking != 0 && fa.m.Waiting() {
		return splice.Answer{}, &splice.UnavailableError{Fragments: []int{fa.id}, RetryAfter: time.Second,
			Reason: fmt.Sprintf("fragment %d waits for a member that keeps a copy of its newest settled checkpoint (epoch %d): the live members' copies are older", fa.id, fa.lacking)}
	}
	if err := fa.m.Serving(); err != nil {
		return splice.Answer{}, &splice.UnavailableError{Fragments: []int{fa.id}, Reason: err.Error(), RetryAfter: time.Second}
	}
	ans, err := fa.m.Fragment().Query(req)
	ans.Freshness = fa.stats.freshnessOf(fa.e.plan.ViewChannel(req.View))
	return ans, err
}

type waiter struct {
	epoch uint64 // durable at or after this epoch answers it
	pid   *pa.PID
}

// Senders of batches, as the machine's From.Ref: a reader on this node (a
// *pa.PID), a sender on another node (through this node's inbox), or an
// upstream fragment on this node.
type (
	netSender struct{ sender, inbox *pa.PID }
	exSender  struct{ pid *pa.PID }
)

// Messages between fragments on one node: an exchange batch, its
// acknowledgement, a request to send one again (Machine.Resend), and a
// downstream checkpoint's coverage (Machine.Trim).
type (
	exBatchMsg struct {
		b    *flowcore.Batch
		from *pa.PID
		seq  uint64
	}
	exAckMsg struct {
		seq uint64
		end int64 // the receiver's end on the sender's partition (From.End)
	}
	exRewindMsg struct {
		ch, dest int
		from     int64
	}
	exTrimMsg struct {
		ch, dest int
		upto     int64
	}
	// exBehindMsg: Machine.Behind, from an upstream fragment on this node.
	exBehindMsg struct {
		ch, upstream int
		upto         int64
	}
)

func (fa *fragmentActor) Receive(c pa.Context) {
	fa.lock()
	defer fa.unlock()
	m := fa.m
	fa.checkPause(c)
	switch msg := c.Message().(type) {
	case *batchMsg:
		fa.step(c, msg.b, recovery.From{Key: senderKey(msg.reader), Ref: msg.reader})
	case *exBatchMsg:
		fa.step(c, msg.b, recovery.From{Key: senderKey(msg.from), Ref: exSender{msg.from}, Seq: msg.seq})
		fa.e.drainCount(-1) // counted by its sender
	case *netBatchMsg:
		// From another node, through this node's inbox: decode, apply as a
		// local batch, and acknowledge through the inbox, which sends a
		// node's acknowledgements to one sender together.
		from := recovery.From{Key: senderKey(msg.sender), Ref: netSender{msg.sender, msg.inbox}, Seq: msg.seq}
		b, err := fa.e.plan.DecodeBatchInterned(msg.records, m.Fragment().Interner())
		if err != nil {
			fa.stats.Malformed.Add(1)
			fa.e.cfg.Logger.Warn("malformed batch from another node", "fragment", fa.id, "sender", msg.sender.Id, "err", err)
			from.Start = -1 // not known: the oldest batch in flight
			fa.ack(c, from)
			return
		}
		b.Epoch = msg.epoch
		fa.step(c, b, from)
	case exAckMsg:
		m.SetNow(fa.e.cfg.Now())
		m.AckedEnd(msg.seq, msg.end)
	case *wire.Acks:
		m.SetNow(fa.e.cfg.Now())
		for i, seq := range msg.Seqs {
			end := int64(-1) // unknown: a check after a restore asks again
			if i < len(msg.Ends) {
				end = msg.Ends[i]
			}
			m.AckedEnd(seq, end)
		}
	case *wire.Copied:
		m.SetNow(fa.e.cfg.Now())
		fa.copied(msg.Epoch, msg.From)
	case *wire.Known:
		m.SetNow(fa.e.cfg.Now())
		if fa.known != nil {
			fa.known.Note(msg.Member, msg.Epoch)
			fa.releaseKnown()
		}
	case exBehindMsg:
		m.SetNow(fa.e.cfg.Now())
		m.Behind(msg.ch, msg.upstream, msg.upto)
	case *wire.Behind:
		m.SetNow(fa.e.cfg.Now())
		m.Behind(int(msg.Channel), int(msg.Upstream), msg.Upto)
	case offerMsg:
		fa.offer(c, msg)
	case noHandoffMsg:
		// An answer to the request of an older wait (this node's previous
		// process asked) says nothing of this one (handedOff).
		current := msg.placement == 0 || msg.placement >= fa.waitPlacement
		if fa.gather != nil && m.Waiting() && !m.Stale() {
			if current {
				fa.gather.None(msg.from)
				if fa.gather.Done() {
					fa.endGather(c)
				}
			}
		} else if m.Waiting() && !m.Stale() && !m.Resuming() && current && fa.lacking == 0 {
			fa.noOldOwner(c, "the node named as the fragment's old owner has none to hand off", slog.LevelInfo)
		}
	case exRewindMsg:
		m.SetNow(fa.e.cfg.Now())
		m.Resend(msg.ch, msg.dest, msg.from)
		fa.e.drainCount(-1) // the rewind is handled
	case *wire.Rewind:
		m.SetNow(fa.e.cfg.Now())
		m.Resend(int(msg.Channel), int(msg.Fragment), msg.To)
	case exTrimMsg:
		m.Trim(msg.ch, msg.dest, msg.upto)
	case *wire.Durable:
		for i, f := range msg.Fragments {
			if i < len(msg.Offsets) {
				m.Trim(int(msg.Channel), int(f), msg.Offsets[i])
			}
		}
	case tickMsg:
		fr := m.Fragment()
		fr.SetHold(fa.e.hold.Load())
		m.Tick(msg.now)
		if iv := fa.e.cfg.CheckpointInterval; iv > 0 && msg.now.Sub(fa.lastCkpt) >= iv {
			fa.checkpoint(c, false)
		}
	case ckptReq:
		fa.requestCheckpoint(c, msg.final)
	case confirmLaterMsg:
		fa.confirmLater(msg.replyTo)
	case *wire.Release:
		fa.release(c, msg)
	case epochMsg:
		m.Placement(msg.epoch)
		fa.others, fa.members = msg.live, msg.members
		m.SetNow(fa.e.cfg.Now())
		fa.releaseKnown() // a majority of the new members may know of it
		if fa.gather != nil && m.Waiting() && !m.Stale() {
			fa.gather.Left(func(name string) bool { return slices.Contains(msg.live, name) })
			if fa.gather.Done() {
				fa.endGather(c)
			}
		} else if fa.lacking != 0 && m.Waiting() && !m.Stale() && len(fa.others) > 0 {
			// A member that keeps the copy it lacks may be back.
			fa.regather(c)
		}
		if msg.newStandby {
			fa.stats.StandbyEpoch.Store(0)
			if !m.Waiting() && !m.Down() {
				fa.toNewStandby()
			}
		}
	case lackMsg:
		if m.Waiting() && fa.gather == nil {
			fa.lack(c, false)
		}
	case startMsg:
		m.SetNow(fa.e.cfg.Now())
		if msg.replay {
			m.Replay()
		}
		m.Start()
		if msg.placed && !m.Waiting() {
			fa.toNewStandby()
		}
	case *wire.Resync:
		// The standby's copy is missing or behind: it is sent whole, now
		// if a checkpoint waits for its confirmation.
		fa.fullNext = true
		if _, copying := m.Copying(); copying {
			fa.recopy()
		}
	case ckptDone:
		fa.durable(c, msg)
	case handoffMsg:
		fa.handedOff(c, msg)
	case pausedMsg:
		// checkPause did the work.
	case handoffTimeoutMsg:
		gathered := false
		if msg.wait == fa.waits && fa.gather != nil && m.Waiting() && !m.Stale() {
			fa.e.cfg.Logger.Warn("not every live member answered with its copy of the fragment: starting from the newest that came",
				"fragment", fa.id, "unanswered", fa.gather.Pending())
			fa.endGather(c)
			gathered = true
		} else if msg.wait == fa.waits && fa.lacking != 0 && m.Waiting() && !m.Stale() {
			fa.regather(c) // an answer may have been lost
		}
		if msg.wait == fa.waits && m.Waiting() && !m.Stale() && fa.gather == nil && fa.lacking == 0 {
			if gathered {
				fa.startOwn(c) // no copy it gathered was taken
			} else {
				fa.noOldOwner(c, "no hand-off from the fragment's old owner", slog.LevelWarn)
			}
		}
	case *pa.Restarting:
		fa.e.cfg.Logger.Error("fragment actor restarted after an engine failure", "fragment", fa.id)
		return
	case *pa.Stopped:
		fa.stopped = true
		fa.settleReleases(c)
		return
	case *pa.Started, *pa.Stopping:
		return
	default:
		fa.e.unknown(msg)
		return
	}
	fa.carry(c)
	fa.confirmHandoffs(c)
	if s := m.SettledEpoch(); s > fa.told {
		fa.told = s
		fa.e.noteSettled(fa.id, s, true)
	}
	fa.settleReleases(c)
	fa.flushEnded(c)
	if len(fa.waiters) > 0 && !m.Writing() {
		if m.Down() || m.Waiting() {
			// It went down or stale meanwhile: as requestCheckpoint, its
			// last checkpoint is its newest sound state.
			for _, w := range fa.waiters {
				c.Send(w.pid, ckptOK{})
			}
			fa.waiters = nil
			return
		}
		// A requested checkpoint that could not be taken when asked (a
		// restored fragment checks its copy against its downstream
		// fragments first: a round trip) may be taken now.
		fa.checkpoint(c, true)
	}
}

// confirmLater confirms the hand-off of the node at replyTo once the
// fragment's state since now is on two nodes (confirms).
func (fa *fragmentActor) confirmLater(replyTo handoffRef) {
	if replyTo.addr == "" {
		return
	}
	fa.confirms = append(fa.confirms, replyTo)
	fa.confirmAfter = fa.m.Epoch()
}

// confirmHandoffs sends the hand-off confirmations that wait for a
// settled checkpoint, once there is one.
func (fa *fragmentActor) confirmHandoffs(c pa.Context) {
	if len(fa.confirms) == 0 || !fa.m.Settled(fa.confirmAfter) {
		return
	}
	for _, to := range fa.confirms {
		to.confirm(fa.e, fa.id)
	}
	fa.confirms = nil
}

// endWait ends a wait for a hand-off counted against the drain.
func (fa *fragmentActor) endWait() {
	if fa.waitCounted {
		fa.waitCounted = false
		fa.e.drainCount(-1)
	}
}

// beginWait counts a wait for a hand-off against the drain.
func (fa *fragmentActor) beginWait() {
	if !fa.waitCounted {
		fa.waitCounted = true
		fa.e.drainCount(+1)
	}
}

// senderKey names a batch's sender for the machine (From.Key). PID.String
// formats the PID as protobuf text, which cost more than applying a small
// batch.
func senderKey(pid *pa.PID) string { return pid.Address + "/" + pid.Id }

// flushEnded takes a checkpoint at once, not at the next interval, when
// the fragment's outputs on an exchange wait for one and its inputs all
// ended: a bounded pipeline's later stages get the end of their input a
// checkpoint write after it is made rather than up to an interval later
// (on the two-stage bench, whose fragments checkpoint every 100 ms, the
// end of the run waited about 130 ms for that interval). Only after a
// batch that ended a partition (ending), so that a running fragment does
// not ask at every message.
func (fa *fragmentActor) flushEnded(c pa.Context) {
	if !fa.ending || fa.e.cfg.CheckpointInterval <= 0 || fa.m.Writing() {
		return
	}
	if fa.m.Fragment().EndedUnreleased() {
		fa.checkpoint(c, false)
	}
}

// step hands the machine a batch.
func (fa *fragmentActor) step(c pa.Context, b *flowcore.Batch, from recovery.From) {
	m := fa.m
	fa.ending = fa.ending || b.Done
	p := recovery.PartitionID{Source: b.Source, Partition: b.Partition}
	now := fa.e.cfg.Now()
	m.SetNow(now)
	m.Fragment().SetHold(fa.e.hold.Load())
	before := m.Vector().End(p)
	m.Step(b, from)
	if end := m.Vector().End(p); end != before {
		fa.stats.mu.Lock()
		fa.stats.offsets[fa.e.plan.PartitionName(p.Source, p.Partition)] = end
		fa.stats.mu.Unlock()
	}
}

// carry carries out the machine's actions.
func (fa *fragmentActor) carry(c pa.Context) {
	e, m, st := fa.e, fa.m, fa.stats
	for {
		rd := m.Ready()
		// The statistics first: an acknowledgement below may let a waiter
		// (Drained) read them.
		fr := m.Fragment()
		st.Events.Store(fr.Events())
		st.storeWatermarks(fr)
		st.Retained.Store(int64(fr.Retained()))
		st.Complete.Store(fr.Complete())
		if n := fr.TooLate(); n > fa.tooLate {
			st.TooLate.Add(n - fa.tooLate)
		}
		fa.tooLate = fr.TooLate()
		// Not drained while down or holding outputs: counted before the
		// acknowledgements go, which may let a reader finish, and released
		// after the rewinds are counted, or the engine would look drained
		// in between.
		fa.countHolds(true)
		l := e.layout.Load()
		fa.sends(c, l, rd.Sends)
		for _, a := range rd.Acks {
			fa.ack(c, a)
		}
		for _, rw := range rd.Rewinds {
			fa.rewind(c, l, rw)
		}
		if rd.Commits != nil {
			fa.announce(c, l, rd.Commits)
		}
		for _, t := range rd.Trims {
			u := t.Part.Partition
			if u >= len(l.route) {
				continue
			}
			if to := l.route[u]; e.isLocal(to) {
				c.Send(to, exTrimMsg{ch: t.Part.Source, dest: fa.id, upto: t.Upto})
			} else {
				c.Send(to, &wire.Durable{Fragments: []uint32{uint32(fa.id)}, Offsets: []int64{t.Upto}, Channel: uint32(t.Part.Source)})
			}
		}
		for _, b := range rd.Behinds {
			if b.Dest >= len(l.route) {
				continue
			}
			if to := l.route[b.Dest]; e.isLocal(to) {
				c.Send(to, exBehindMsg{ch: b.Ch, upstream: fa.id, upto: b.Upto})
			} else {
				c.Send(to, &wire.Behind{Fragment: uint32(b.Dest), Upstream: uint32(fa.id), Channel: uint32(b.Ch), Upto: b.Upto})
			}
		}
		if rd.Stale != nil {
			st.Stales.Add(1)
			e.cfg.Logger.Error("fragment refuses its restored copy", "fragment", fa.id, "err", rd.Stale)
		}
		st.Stale.Store(m.Stale())
		if rd.Fetch {
			if cp := e.supersededCopy(fa.id); cp != nil {
				c.Send(c.Self(), offerMsg{cp: cp, from: e.self}) // taken if newer than the copy here
			}
			e.fetch(fa.id)
		}
		if rd.Recopy {
			fa.recopy()
		}
		for _, err := range rd.Errors {
			e.cfg.Logger.Error("fragment output", "fragment", fa.id, "err", err)
		}
		if rd.SinkFailures > 0 {
			e.cfg.Logger.Warn("a sink refused outputs: the fragment holds its input and writes them again after a backoff", "fragment", fa.id)
		}
		if rd.Failures > 0 {
			e.cfg.Logger.Warn("user function failed; restoring the fragment to retry", "fragment", fa.id)
		}
		if len(rd.DeadLetters) > 0 {
			st.Dead.Add(int64(len(rd.DeadLetters)))
			for _, d := range rd.DeadLetters {
				e.cfg.Logger.Warn("dead-lettered", "fragment", d.Fragment, "source", d.Source, "partition", d.Partition,
					"offset", d.Offset, "key", d.Key, "err", d.Error)
			}
			e.deadLetters(rd.DeadLetters)
		}
		st.Gaps.Add(int64(rd.Gaps))
		st.Duplicates.Add(int64(rd.Duplicates))
		st.Fenced.Add(int64(rd.Fenced))
		st.Failures.Add(int64(rd.Failures))
		st.Reasked.Add(int64(rd.Reasked))
		st.Replayed.Add(rd.Replayed)
		st.Batches.Add(int64(rd.Applied))
		fa.countHolds(false)
		if !rd.Restore {
			return
		}
		r, err := recovery.Restore(e.store, e.plan, fa.id)
		if err != nil {
			e.fail(err)
			return
		}
		st.Restores.Add(1)
		waiting := m.Waiting()
		m.Restored(r, false)
		fa.load(r)
		if m.Waiting() && !waiting {
			// Restored after a pause: the node that owned the fragment
			// meanwhile hands it back once it applies the placement that
			// gives it to this node again.
			fa.waits++
			fa.waitPlacement = m.PlacementEpoch()
			fa.beginWait()
			e.after(handoffWait, c.Self(), handoffTimeoutMsg{wait: fa.waits})
		}
		if h := fa.pendingHandoff; h != nil && m.Waiting() {
			fa.pendingHandoff = nil
			fa.handedOff(c, *h)
		}
	}
}

// countHolds counts, in the engine's drain count, a fragment that is down,
// stale or holds outputs back: only the holds that began (begin) or only
// those that ended.
func (fa *fragmentActor) countHolds(begin bool) {
	m := fa.m
	if o := m.Fragment().Holding(); o != fa.outputs && o == begin {
		fa.outputs = o
		fa.e.drainCount(holdDelta(o))
	}
	if h := m.Down() || m.Holding() || m.Stale(); h != fa.holding && h == begin {
		fa.holding = h
		fa.e.drainCount(holdDelta(h))
	}
}

func holdDelta(begins bool) int {
	if begins {
		return +1
	}
	return -1
}

// sends sends batches to fragments downstream: by pointer on this node,
// encoded and one message per node otherwise.
func (fa *fragmentActor) sends(c pa.Context, l *layout, sends []recovery.Send) {
	if len(sends) > 0 {
		fa.e.sent[fa.id].Store(sends[len(sends)-1].Seq) // the machine numbers them in order
	}
	var out map[string]*wire.Batches
	var buf []byte
	for _, s := range sends {
		s.Batch.Epoch = l.epoch
		to := l.route[s.Dest]
		if fa.e.isLocal(to) {
			fa.e.drainCount(+1)
			c.Send(to, &exBatchMsg{b: s.Batch, from: c.Self(), seq: s.Seq})
			continue
		}
		start := len(buf)
		enc, err := fa.e.plan.EncodeBatch(buf, s.Batch)
		if err != nil {
			fa.e.fail(fmt.Errorf("fragment %d: encode a batch for fragment %d: %w", fa.id, s.Dest, err))
			continue
		}
		buf = enc
		if out == nil {
			out = map[string]*wire.Batches{}
		}
		msg := out[to.Address]
		if msg == nil {
			self := c.Self()
			msg = &wire.Batches{Flow: fa.e.plan.Name(), Epoch: l.epoch, ReaderAddress: self.Address, ReaderId: self.Id}
			out[to.Address] = msg
		}
		msg.Fragments = append(msg.Fragments, uint32(s.Dest))
		msg.Records = append(msg.Records, enc[start:len(enc):len(enc)])
		msg.Seqs = append(msg.Seqs, s.Seq)
	}
	for addr, msg := range out {
		c.Send(pa.NewPID(addr, fa.e.plan.Name()+"/inbox"), msg)
	}
}

// ack acknowledges a batch to its sender.
func (fa *fragmentActor) ack(c pa.Context, a recovery.From) {
	switch to := a.Ref.(type) {
	case *pa.PID:
		c.Send(to, ackMsg{fragment: fa.id, start: a.Start})
	case exSender:
		c.Send(to.pid, exAckMsg{seq: a.Seq, end: a.End})
	case netSender:
		c.Send(to.inbox, netAckMsg{sender: to.sender, fragment: uint32(fa.id), seq: a.Seq, end: a.End, start: a.Start})
	}
}

// rewind asks a channel partition to send again: a source partition's
// reader (the sender the machine names, or whoever reads it now), or an
// upstream fragment. A local rewind counts against the drain until it is
// handled.
func (fa *fragmentActor) rewind(c pa.Context, l *layout, rw recovery.Rewind) {
	e := fa.e
	p := rw.Part
	if e.plan.IsExchange(p.Source) {
		if p.Partition >= len(l.route) {
			return
		}
		to := l.route[p.Partition]
		if e.isLocal(to) {
			e.drainCount(+1)
			c.Send(to, exRewindMsg{ch: p.Source, dest: fa.id, from: rw.To})
		} else {
			c.Send(to, &wire.Rewind{Fragment: uint32(fa.id), To: rw.To, Channel: uint32(p.Source)})
		}
		return
	}
	var to *pa.PID
	if rw.Ask != nil {
		switch ref := rw.Ask.Ref.(type) {
		case *pa.PID:
			to = ref
		case netSender:
			to = ref.sender
		}
	}
	i := e.partIndex(p)
	if to == nil {
		if i < 0 || i >= len(l.allRead) {
			return
		}
		to = l.allRead[i]
	}
	if e.isLocal(to) {
		// A local sender the layout no longer names as the partition's
		// reader was stopped by a placement: a rewind to it would never
		// be handled, and the drain would wait for it.
		if i < 0 || i >= len(l.allRead) || !to.Equal(l.allRead[i]) {
			return
		}
		e.drainCount(+1)
		c.Send(to, rewindMsg{to: rw.To, fragment: fa.id})
		return
	}
	c.Send(to, &wire.Rewind{Fragment: uint32(fa.id), To: rw.To})
}

// load takes a restored checkpoint's statistics.
func (fa *fragmentActor) load(r recovery.Restored) {
	fa.tooLate, fa.fromEmpty = 0, false
	fa.stats.Events.Store(r.Fragment.Events())
	fa.stats.storeWatermarks(r.Fragment)
	offs := map[string]int64{}
	for p, end := range r.Vector.Snapshot() {
		offs[fa.e.plan.PartitionName(p.Source, p.Partition)] = end
	}
	fa.stats.mu.Lock()
	fa.stats.offsets = offs
	fa.stats.durable = r.Vector.Snapshot()
	fa.stats.mu.Unlock()
	fa.stats.Epoch.Store(r.Manifest.Epoch)
}

// handedOff restores the last checkpoint of the fragment's old owner, which
// handed it to this node, and starts from it: every channel partition
// replays from there. A fragment that started already (the wait timed out)
// adopts the checkpoint if it is ahead of its own state: any checkpoint
// with its offset vector is a sound state to go on from.
func (fa *fragmentActor) handedOff(c pa.Context, msg handoffMsg) {
	e, m := fa.e, fa.m
	done := func() {
		msg.replyTo.confirm(e, fa.id)
	}
	if fa.gather != nil && m.Waiting() {
		// Any copy competes, even one made under an older placement
		// (the answer to this node's previous process, or a leaver's):
		// the gather judges it by its lineage, and the member answers
		// this wait's request too.
		dropped, _, ok := fa.gather.Copy(msg.from, msg.lineage, msg)
		if ok {
			dropped.replyTo.confirm(e, fa.id)
		}
		if fa.gather.Done() {
			fa.endGather(c)
		}
		return
	}
	if m.Resuming() {
		fa.pendingHandoff = &msg // after the restore that follows the pause
		return
	}
	if msg.asked && m.Waiting() && !m.Stale() && fa.lacking == 0 {
		// The node named as the old owner does not own the fragment and
		// offers the copy it keeps: the name was a guess (a first
		// placement, a restart within the failure detection window), and
		// its copy is only one of the copies there are. The fragment
		// gathers the live members' copies, as when that node has none
		// (noOldOwner); the node answers the gather again (sim seed 32097
		// started from a copy of placement 3 that a node fenced since then
		// kept, while a live member kept the newer copies of placement 4,
		// whose outputs were released).
		done() // not taken
		fa.e.cfg.Logger.Info("the node named as the fragment's old owner offers a copy, not its hand-off: gathering the live members' copies",
			"fragment", fa.id, "from", msg.from)
		fa.regather(c)
		return
	}
	waiting := m.Waiting()
	if !waiting {
		if msg.placement < m.PlacementEpoch() || m.Down() || !recovery.Ahead(msg.cp.Manifest.Offsets, m.Vector()) {
			e.cfg.Logger.Debug("a hand-off not ahead of the running fragment", "fragment", fa.id, "from", msg.from)
			done()
			return
		}
		if m.Writing() {
			fa.pendingHandoff = &msg // after the checkpoint being written
			return
		}
	}
	if waiting && !m.Stale() && !fa.acceptShort && recovery.Short(max(msg.lineage, fa.own()), e.settledOf(fa.id)) {
		// Neither this copy nor the one here holds the newest checkpoint
		// the fragment settled (the old owner lacked it too): the
		// fragment gathers the live members' copies, or goes on waiting
		// for one.
		done() // not taken
		if fa.lacking == 0 {
			fa.regather(c)
		}
		return
	}
	if e.olderCopy(fa.id, msg.lineage) || (m.Stale() && !e.newerCopy(fa.id, msg.lineage)) {
		if waiting && msg.placement < fa.waitPlacement {
			// Made before this wait began: the answer to a hand-off
			// request of this node's previous process (a peer's remote
			// delivers what it queued for this address once the node
			// listens again), or a hand-off of an older placement change.
			// The sender may have run the fragment since, and hands it
			// off again under the placement the fragment waits under.
			// Ended by this one, the wait started the fragment from its
			// own copy, whose unreleased outputs then reached the
			// fragments downstream, and the current hand-off, not ahead
			// of the running fragment, was refused: every copy was
			// stale from then on, and the fragment refused for good
			// (internal/alarms TestRollingKillsExact). The wait goes on
			// until the current hand-off, a NoHandoff or handoffWait.
			e.cfg.Logger.Debug("a hand-off of an older placement than the wait's, of an older lineage than the copy here, ignored",
				"fragment", fa.id, "from", msg.from, "placement", msg.placement, "waiting since", fa.waitPlacement)
			done()
			return
		}
		// The old owner's copy is of an older lineage than the one here
		// (it restored an older copy and, finding it stale, took no
		// checkpoint): the one here is the newest state.
		e.cfg.Logger.Debug("own copy kept over a hand-off of an older lineage", "fragment", fa.id, "from", msg.from, "epoch", msg.cp.Manifest.Epoch)
		done()
		m.SetNow(e.cfg.Now())
		if waiting {
			fa.runCopy()
		} else if !m.Stale() {
			// The old owner was sent input past this copy (it is ahead):
			// readers that sent it will not send this one that input
			// unless asked.
			m.Replay()
		}
		return
	}
	if !fa.take(msg.cp, msg.from) {
		return
	}
	fa.endWait()
	fa.confirmLater(msg.replyTo)
}

// own is the lineage of this node's copy of the fragment (0: none).
func (fa *fragmentActor) own() uint64 {
	m, _, _ := fa.e.store.Manifest(fa.e.plan.Name(), fa.id) // the zero manifest: none
	return m.Epoch
}

// noOldOwner ends a wait for a hand-off that the old owner did not send
// (why, logged at level). A node that keeps a copy of the fragment
// gathers the live members' copies, as for a dead owner: the old owner
// was a guess (a first placement, a restart within the failure detection
// window), and says nothing of where the fragment ran meanwhile, while
// the live members' copies, and what they know of its settled
// checkpoints, do (sim seed 19205 started a restarted node's copy of an
// older lineage than the one a majority ran meanwhile). One that keeps
// none starts from nothing at once, as a cluster's first start does.
func (fa *fragmentActor) noOldOwner(c pa.Context, why string, level slog.Level) {
	ctx := context.Background()
	if fa.own() == 0 {
		fa.e.cfg.Logger.Log(ctx, level, why+": starting from nothing", "fragment", fa.id)
		fa.startOwn(c)
		return
	}
	fa.e.cfg.Logger.Log(ctx, level, why+": gathering the live members' copies", "fragment", fa.id)
	fa.regather(c)
}

// startOwn ends a wait for a hand-off from the copy here, unless that
// copy is behind the newest checkpoint the fragment settled: then it
// gathers the live members' copies (recovery.Settled).
func (fa *fragmentActor) startOwn(c pa.Context) {
	m := fa.m
	if !m.Stale() && recovery.Short(fa.own(), fa.e.settledOf(fa.id)) {
		fa.regather(c)
		return
	}
	fa.runCopy()
}

// regather asks every live member for its copy of the fragment, as a
// fragment gained from a dead owner does (recovery.Gather): the copy
// here is behind the newest checkpoint the fragment settled.
func (fa *fragmentActor) regather(c pa.Context) {
	e := fa.e
	fa.gather = recovery.NewGather[handoffMsg](fa.others)
	fa.waits++
	fa.waitPlacement = fa.m.PlacementEpoch()
	if len(fa.others) == 0 {
		fa.endGather(c)
		return
	}
	e.after(handoffWait, c.Self(), handoffTimeoutMsg{wait: fa.waits})
	for _, m := range fa.others {
		e.askHandoff(fa.id, m, fa.waitPlacement)
	}
}

// lack leaves the fragment unavailable: no live member offered a copy as
// new as the newest checkpoint it settled, and the copy here is older.
// Started from it, it would release other values under the ids of
// outputs the sinks have. It gathers again at the next placement
// (epochMsg) or after the hand-off wait (an answer may have been lost),
// until a member that keeps such a copy is back; after lostAnswerWait if
// a member left the gather unanswered (unanswered).
func (fa *fragmentActor) lack(c pa.Context, unanswered bool) {
	e := fa.e
	settled := e.settledOf(fa.id)
	if fa.lacking == 0 {
		e.cfg.Logger.Warn("no live member keeps a copy of the fragment as new as the newest checkpoint it settled: it waits for one",
			"fragment", fa.id, "settled", settled, "here", fa.own())
		fa.lackingSince = e.cfg.Now()
	}
	fa.lacking = settled
	fa.endWait()
	fa.waits++
	again := handoffWait
	if unanswered {
		again = lostAnswerWait
	}
	if u := e.cfg.UncleanAfter; u > 0 {
		again = min(again, max(fa.lackingSince.Add(u).Sub(e.cfg.Now()), 0))
	}
	e.after(again, c.Self(), handoffTimeoutMsg{wait: fa.waits})
}

// unclean reports whether a lacking fragment waited Config.UncleanAfter
// and may start from the copies there are.
func (fa *fragmentActor) unclean() bool {
	u := fa.e.cfg.UncleanAfter
	return u > 0 && fa.lacking != 0 && !fa.e.cfg.Now().Before(fa.lackingSince.Add(u))
}

// endGather starts a fragment that gathered the live members' copies
// from the newest offered, judged as any hand-off against its own copy,
// or from its own copy if none was offered.
func (fa *fragmentActor) endGather(c pa.Context) {
	g := fa.gather
	fa.gather = nil
	best, _, from, ok := g.Best()
	best.asked = false // gathered: taken or kept as any hand-off, not gathered again
	fa.e.cfg.Logger.Debug("gathered the copies of a fragment gained from a dead owner", "fragment", fa.id,
		"offered", ok, "from", from, "unanswered", g.Pending())
	g.Know(fa.e.settledOf(fa.id))
	if settled, lacks := g.Lacks(fa.own()); lacks {
		if !fa.unclean() {
			if ok {
				best.replyTo.confirm(fa.e, fa.id) // not taken
			}
			fa.lack(c, len(g.Pending()) > 0)
			return
		}
		fa.e.cfg.Logger.Error("starting behind the newest checkpoint the fragment settled (UncleanAfter): outputs it delivered may be delivered again with other values",
			"fragment", fa.id, "settled", settled, "from", from, "here", fa.own(), "waited", fa.e.cfg.Now().Sub(fa.lackingSince))
		fa.lacking = 0
		if ok {
			fa.acceptShort = true
			fa.handedOff(c, best)
			fa.acceptShort = false
			return
		}
	}
	if ok {
		fa.handedOff(c, best)
		return
	}
	if fa.m.Resuming() {
		// It restores after a pause first: the wait ends later.
		fa.waits++
		fa.e.after(handoffWait, c.Self(), handoffTimeoutMsg{wait: fa.waits})
		return
	}
	fa.runCopy()
}

// runCopy ends the fragment's wait: it runs from the copy it holds, which
// its standby gets (toNewStandby).
func (fa *fragmentActor) runCopy() {
	fa.endWait()
	fa.m.SetNow(fa.e.cfg.Now())
	fa.m.StopWaiting()
	fa.toNewStandby()
}

// offer takes a copy another node had, if the fragment is stale and the
// copy newer than its own (recovery.Ready.Fetch).
func (fa *fragmentActor) offer(c pa.Context, msg offerMsg) {
	if !fa.m.Stale() || fa.m.Writing() || !fa.e.newerCopy(fa.id, msg.cp.Manifest.Epoch) {
		return
	}
	fa.take(msg.cp, msg.from)
}

// take restores the fragment from a checkpoint handed to it (a hand-off,
// or a newer copy a stale fragment fetched) and starts from it.
func (fa *fragmentActor) take(cp *recovery.Checkpoint, from string) bool {
	e, m := fa.e, fa.m
	e.supersede(fa.id, cp)
	if _, err := e.store.Write(e.plan.Name(), fa.id, cp); err != nil {
		e.fail(fmt.Errorf("fragment %d: write the handed-off checkpoint: %w", fa.id, err))
		return false
	}
	r, err := recovery.Restore(e.store, e.plan, fa.id)
	if err != nil {
		e.fail(fmt.Errorf("fragment %d: restore the handed-off checkpoint: %w", fa.id, err))
		return false
	}
	m.SetNow(e.cfg.Now())
	m.Restored(r, true)
	m.Start()
	fa.lacking = 0
	fa.load(r)
	fa.toNewStandby() // the standby's copy is of another lineage
	fa.stats.RestoredEpoch.Store(r.Manifest.Epoch)
	fa.stats.RestoredEvents.Store(r.Manifest.Events)
	e.cfg.Logger.Debug("fragment handed over", "fragment", fa.id, "from", from, "epoch", r.Manifest.Epoch, "events", r.Manifest.Events)
	return true
}

// copied takes the standby's confirmation of checkpoint epoch. It is
// released once a majority of the placement's members knows of it
// (recovery.Known): at once where the owner and the standby are a
// majority; else the owner notes the news in its own store, and the
// members that do not know are told (wire.Settled with reply_to) and each
// answers once the news is synced in its store (wire.Known). The members
// that did not answer within RewindTimeout are asked again (Recopy, while
// the checkpoint waits: recopy).
func (fa *fragmentActor) copied(epoch uint64, standby string) {
	e := fa.e
	l := e.layout.Load()
	if l != nil && l.cl != nil && standby != "" && standby == standbyOf(l.cl, fa.id) && epoch > fa.stats.StandbyEpoch.Load() {
		fa.stats.StandbyEpoch.Store(epoch)
	}
	if c, ok := fa.m.Copying(); !ok || epoch < c {
		return
	}
	if e.self == "" || l == nil || l.cl == nil {
		fa.m.Copied(epoch)
		return
	}
	if standby == "" && fa.id < len(l.cl.Standbys) {
		standby = l.cl.Standbys[fa.id]
	}
	if fa.known == nil {
		fa.known = recovery.Known{}
	}
	fa.confirmed = max(fa.confirmed, epoch)
	fa.known.Note(e.self, epoch)
	fa.known.Note(standby, epoch)
	if fa.releaseKnown() {
		return
	}
	e.noteSettled(fa.id, epoch, false)
	fa.askKnown(l, epoch)
}

// askKnown tells the members that do not know of checkpoint epoch, and
// asks them to answer.
func (fa *fragmentActor) askKnown(l *layout, epoch uint64) {
	e := fa.e
	msg := &wire.Settled{Flow: e.plan.Name(), Fragments: []uint32{uint32(fa.id)}, Epochs: []uint64{epoch}, ReplyTo: e.sys.Address(),
		OwnerPlacement: l.epoch}
	for _, name := range fa.known.Lacking(fa.members, epoch) {
		if pid := memberPID(l.cl, name, e.plan.Name()+"/replica"); pid != nil && name != e.self && !l.silent.has(name) {
			e.sys.Root.Send(pid, msg)
		}
	}
}

// releaseKnown releases the checkpoint the standby confirmed once a
// majority of the placement's members knows of it; false if it still
// waits.
func (fa *fragmentActor) releaseKnown() bool {
	c, ok := fa.m.Copying()
	if !ok || fa.confirmed < c || !fa.known.Enough(fa.members, c) {
		return false
	}
	fa.m.Copied(c)
	return true
}

// recopy sends the standby the whole last durable checkpoint again: it
// did not confirm the last one in time (lost, fenced, or the standby
// changed); with no standby, durable here is all there is.
func (fa *fragmentActor) recopy() {
	if c, ok := fa.m.Copying(); ok && fa.confirmed >= c {
		// The standby has it: what did not come is the answers of members
		// that know of it.
		if l := fa.e.layout.Load(); l != nil && l.cl != nil {
			fa.askKnown(l, c)
		}
		return
	}
	fa.sendWhole()
}

// sendWhole sends the standby the whole last durable checkpoint, and
// the next one whole too; with no standby, durable here is all there is.
func (fa *fragmentActor) sendWhole() {
	fa.fullNext = true
	if fa.e.self == "" || !fa.e.replicate(fa.id, nil, true, false) {
		if epoch, ok := fa.m.Copying(); ok {
			fa.m.Copied(epoch)
		}
	}
}

// toNewStandby sends the fragment's standby its last durable checkpoint,
// whole, at once, when the standby has no copy of it: a placement gave
// the fragment another standby, or the fragment starts running here from
// a copy (gained, handed off, or its own after a wait), of a lineage the
// standby may not hold. Until the standby has a copy, only the owner
// keeps the newest settled state, and the owner lost before the standby
// gets one leaves no live member able to restore the fragment. Before,
// the copy went with the next checkpoint or Recopy: a checkpoint that
// waited for the confirmation of a standby that died waited up to
// RewindTimeout for the next Recopy, and a restored fragment for its
// first checkpoint, which waits for its copy's check downstream; an
// owner killed meanwhile left the fragment with no live copy as new as
// its settled checkpoint, and its next owner waited for good. The new
// standby's confirmation also settles a checkpoint that waits (copied).
// The next checkpoint goes whole too, should this copy be fenced (a
// standby that has not applied the placement yet).
func (fa *fragmentActor) toNewStandby() {
	if fa.e.self == "" || fa.stats.Epoch.Load() == 0 {
		fa.fullNext = true // nothing durable yet: the first checkpoint goes whole
		return
	}
	fa.sendWhole()
}

func (fa *fragmentActor) requestCheckpoint(c pa.Context, final bool) {
	m := fa.m
	if err := m.Broken(); err != nil {
		c.Respond(err)
		return
	}
	if (m.Down() || m.Waiting() || (final && m.Verifying())) && !m.Writing() {
		// Its last checkpoint is its newest sound state. (A restored
		// fragment checks its copy against its downstream fragments before
		// it checkpoints: a round trip, unless one is unreachable, which a
		// stop or a hand-off does not wait for.) One that verifies its
		// copy hands it off under its lineage's number.
		c.Respond(ckptOK{lineage: m.HandoffEpoch()})
		return
	}
	want := m.Epoch() + 1
	if m.Writing() {
		want++ // the one being written may predate the request
		fa.again = true
	}
	fa.waiters = append(fa.waiters, waiter{epoch: want, pid: c.Sender()})
	if !m.Writing() {
		fa.checkpoint(c, true)
	}
}

// checkpoint hands the changes since the last checkpoint to the writer
// and goes on; ckptDone says when they are durable. A requested one
// (Engine.Checkpoint: a test, a hand-off, the engine's stop) does not
// wait for the standby's confirmation of the one before: nothing is
// released from it before its own confirmation.
func (fa *fragmentActor) checkpoint(c pa.Context, requested bool) {
	now := fa.e.cfg.Now()
	fa.m.SetNow(now)
	take := fa.m.Checkpoint
	if requested {
		take = fa.m.FinalCheckpoint
	}
	cp, err := take()
	if err != nil {
		fa.breakCheckpoints(c, err)
		return
	}
	if cp == nil {
		return
	}
	fa.lastCkpt = now
	fa.e.writes <- writeReq{frag: fa.id, cp: cp, pid: c.Self(), full: fa.fullNext, whole: fa.fromEmpty}
	fa.fullNext, fa.fromEmpty = false, false
}

// announce tells every reader, on this node or another, how far the
// fragment's newest checkpoint a restore may start from covers its
// partition (recovery.Ready.Commits: with Confirm, once the standby
// confirmed it): a reader commits its source up to what every fragment
// announced, and a source may drop what lies before. Readers on other
// nodes hear it through this node's inbox, which sends each reader the
// announcements of all its fragments together. Exchange outputs upstream
// need no holding back: the producers keep them in their own checkpoints.
func (fa *fragmentActor) announce(c pa.Context, l *layout, covered map[recovery.PartitionID]int64) {
	e := fa.e
	for i, pid := range l.allRead {
		off := covered[e.allParts[i]]
		if e.isLocal(pid) {
			c.Send(pid, &wire.Durable{Fragments: []uint32{uint32(fa.id)}, Offsets: []int64{off}})
		} else if inbox := e.inbox; inbox != nil {
			c.Send(inbox, netDurableMsg{reader: pid, fragment: uint32(fa.id), offset: off})
		}
	}
}

func (fa *fragmentActor) durable(c pa.Context, msg ckptDone) {
	fa.m.Durable(msg.offsets, msg.err)
	if msg.err != nil {
		fa.breakCheckpoints(c, msg.err)
		return
	}
	// A new checkpoint waits for its standby: what was confirmed and
	// known was of the one before (an owner that restored an older copy
	// may number its checkpoints again).
	fa.confirmed, fa.known = 0, nil
	if !msg.copying {
		fa.m.Copied(msg.epoch) // no standby: durable here is all there is
	}
	st := fa.stats
	st.Epoch.Store(msg.epoch)
	st.CkptTime.Store(msg.time)
	st.CkptBytes.Add(int64(msg.bytes))
	took := max(0, fa.e.cfg.Now().UnixNano()-msg.time)
	st.CkptTook.Store(took)
	if on := fa.e.cfg.OnCheckpoint; on != nil {
		on(fa.id, time.Duration(took), msg.bytes)
	}
	st.mu.Lock()
	st.durable = msg.offsets
	st.mu.Unlock()
	keep := fa.waiters[:0]
	for _, w := range fa.waiters {
		if msg.epoch >= w.epoch {
			c.Send(w.pid, ckptOK{})
			continue
		}
		keep = append(keep, w)
	}
	fa.waiters = keep
	if h := fa.pendingHandoff; h != nil {
		fa.pendingHandoff = nil
		fa.handedOff(c, *h)
	}
	if fa.again {
		fa.again = false
		fa.checkpoint(c, true)
	}
}

// breakCheckpoints stops checkpointing after a failure: the changes taken
// for the failed checkpoint are gone from the fragment's change set, so a
// later incremental checkpoint would store a state with holes. The fragment
// keeps serving from memory; the engine reports the error (Engine.Failed),
// on which a cluster.Node stops.
func (fa *fragmentActor) breakCheckpoints(c pa.Context, err error) {
	fa.stats.mu.Lock()
	fa.stats.ckptErr = err
	fa.stats.mu.Unlock()
	fa.e.fail(fmt.Errorf("fragment %d: checkpoints stopped: %w", fa.id, err))
	for _, w := range fa.waiters {
		c.Send(w.pid, err)
	}
	fa.waiters = nil
}

// minLevel drops records below a level.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}
func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.min}
}
func (h minLevel) WithGroup(n string) slog.Handler { return minLevel{h.Handler.WithGroup(n), h.min} }

// Handle drops protoactor remote's connection errors: a peer that starts,
// stops or dies makes them by the dozen, and the gossip layer reports
// membership itself. Batches they lose show as gaps and are replayed. At
// level debug they are kept.
func (h minLevel) Handle(ctx context.Context, r slog.Record) error {
	if h.min > slog.LevelDebug && (strings.HasPrefix(r.Message, "EndpointWriter") || strings.HasPrefix(r.Message, "EndpointReader")) {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}
