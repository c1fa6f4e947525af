package actor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"time"

	pa "github.com/asynkron/protoactor-go/actor"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/internal/wire"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/splice"
)

type fragmentActor struct {
	e         *Engine
	frag      *flows.Fragment
	vec       recovery.Vector
	epoch     uint64 // of the last checkpoint taken (maybe not yet durable)
	placement uint64 // the newest placement epoch seen
	tooLate   int64  // the fragment's too-late count already added to stats
	stats     *FragmentStats
	lastCkpt  time.Time
	writing   bool // a checkpoint is with the writer
	down      bool // a user function failed: the state is untrusted until restored
	backoff   bool // restored after a failure: input waits for the replay
	handoff   bool // taken over from a live owner: input waits for its last checkpoint
	// pendingHandoff: a hand-off that came while a checkpoint was being
	// written, adopted once it is durable.
	pendingHandoff *handoffMsg
	downAttempt    int      // the failed event's attempt, for the backoff
	again          bool     // take another as soon as it is durable
	waiters        []waiter // on-demand checkpoint requests
	broken         error    // a checkpoint write failed: no further checkpoints
	fullNext       bool     // send the standby the whole next checkpoint
	attempts       map[flows.EventID]int
	skips          map[flows.EventID]bool
	// awaiting: a rewind was asked of this reader ("*": of every reader),
	// so gaps from it are dropped silently until the replay arrives. A gap
	// from another reader (the partition moved to another node) asks again,
	// and so does a tick when a remote reader has not replayed for
	// rewindTimeout (the rewind or the replay was lost with a connection).
	awaiting map[recovery.PartitionID]awaited
}

type awaited struct {
	reader string // the reader's PID, "*" for any
	pid    *pa.PID
	to     int64
	at     time.Time
}

// rewindTimeout is how long a fragment waits for a remote reader's replay
// before it asks again.
const rewindTimeout = 3 * time.Second

func minInt(a, b int64) int64 {
	if a < b {
		return a
	}
	return b
}

type waiter struct {
	epoch uint64 // durable at or after this epoch answers it
	pid   *pa.PID
}

func (fa *fragmentActor) Receive(c pa.Context) {
	switch m := c.Message().(type) {
	case *batchMsg:
		fa.batch(c, m)
		c.Send(m.reader, ackMsg{fragment: fa.frag.ID()})
	case *netBatchMsg:
		// From a reader on another node, through this node's inbox:
		// decode, apply as a local batch, and acknowledge through the
		// inbox, which sends a node's acknowledgements to a reader
		// together.
		b, err := fa.e.plan.DecodeBatch(m.records)
		if err != nil {
			fa.stats.Malformed.Add(1)
			fa.e.cfg.Logger.Warn("malformed batch from another node", "fragment", fa.frag.ID(), "reader", m.reader.Id, "err", err)
		} else {
			b.Epoch = m.epoch
			fa.batch(c, &batchMsg{b: b, reader: m.reader})
		}
		c.Send(m.inbox, netAckMsg{reader: m.reader, fragment: uint32(fa.frag.ID())})
	case tickMsg:
		fa.reask(c, m.now)
		fa.frag.SetHold(fa.e.hold.Load())
		dls, err := fa.frag.Advance(m.now)
		fa.timerFailures(dls, err)
		if iv := fa.e.cfg.CheckpointInterval; iv > 0 && m.now.Sub(fa.lastCkpt) >= iv {
			fa.checkpoint(c)
		}
	case ckptReq:
		fa.requestCheckpoint(c)
	case epochMsg:
		fa.placement = max(fa.placement, m.epoch)
	case *wire.Resync:
		fa.fullNext = true // the standby's copy is missing or behind
	case ckptDone:
		fa.durable(c, m)
	case resumeMsg:
		fa.resume(c)
	case replayMsg:
		fa.replay(c)
	case handoffMsg:
		fa.handedOff(c, m)
	case handoffTimeoutMsg:
		if fa.handoff {
			fa.e.cfg.Logger.Warn("no hand-off from the fragment's old owner: starting from the local copy", "fragment", fa.frag.ID())
			fa.handoff = false
			fa.e.drainCount(-1)
			fa.replay(c)
		}
	case *queryMsg:
		if fa.down {
			m.reply <- queryReply{err: fmt.Errorf("%w: fragment %d is restoring after a failure", splice.ErrUnavailable, fa.frag.ID())}
			return
		}
		if fa.handoff {
			m.reply <- queryReply{err: fmt.Errorf("%w: fragment %d is being handed over to this node", splice.ErrUnavailable, fa.frag.ID())}
			return
		}
		ans, err := fa.frag.Query(m.req)
		ans.Freshness = fa.stats.freshness()
		m.reply <- queryReply{ans: ans, err: err}
		// The asker is now runnable on this P, behind this mailbox's loop,
		// which under full ingest may run for a whole time slice: let it
		// have the processor now.
		runtime.Gosched()
	case *pa.Restarting:
		fa.e.cfg.Logger.Error("fragment actor restarted after an engine failure", "fragment", fa.frag.ID())
	default:
		fa.e.unknown(m)
	}
}

func (fa *fragmentActor) batch(c pa.Context, m *batchMsg) {
	b := m.b
	defer b.Release()
	if fa.down || fa.backoff || fa.handoff {
		// The replay after the restore brings it again. A batch that
		// happens to follow on from the restored offsets waits too: the
		// backoff holds all input, not only what is out of order.
		fa.stats.Gaps.Add(1)
		return
	}
	p := recovery.PartitionID{Source: b.Source, Partition: b.Partition}
	if recovery.Fence(&fa.placement, b.Epoch) == recovery.Fenced {
		// Sent under an older placement: dropped, and, as for a gap, the
		// partition's reader is asked to send it again (by then under the
		// new placement), or a reader that reached its end would leave
		// the fragment short.
		fa.stats.Fenced.Add(1)
		if a, ok := fa.awaiting[p]; !ok || (a.reader != "*" && a.reader != m.reader.String()) {
			fa.rewind(c, p, m.reader, fa.vec.End(p))
		}
		return
	}
	verdict, min := fa.vec.Admit(p, b.PrevEnd, b.End)
	if verdict != recovery.Gap && b.PrevEnd < min {
		fa.stats.Replayed.Add(minInt(b.End, min) - b.PrevEnd)
	}
	switch verdict {
	case recovery.Duplicate:
		fa.stats.Duplicates.Add(1)
		return
	case recovery.Gap:
		fa.stats.Gaps.Add(1)
		if a, ok := fa.awaiting[p]; !ok || (a.reader != "*" && a.reader != m.reader.String()) {
			fa.rewind(c, p, m.reader, min)
		}
		return
	}
	delete(fa.awaiting, p)
	fa.frag.SetNow(fa.e.cfg.Now())
	fa.frag.SetHold(fa.e.hold.Load())
	err := fa.frag.Apply(b, min)
	var ee *flows.EventError
	if errors.As(err, &ee) {
		fa.failure(c, ee)
		return
	}
	if err != nil {
		fa.e.cfg.Logger.Error("fragment output", "fragment", fa.frag.ID(), "err", err)
	}
	fa.stats.Events.Store(fa.frag.Events())
	fa.stats.Watermark.Store(fa.frag.Watermark())
	if n := fa.frag.TooLate(); n > fa.tooLate {
		fa.stats.TooLate.Add(n - fa.tooLate)
	}
	fa.tooLate = fa.frag.TooLate()
	fa.stats.Batches.Add(1)
	fa.stats.mu.Lock()
	fa.stats.offsets[fa.e.plan.PartitionName(b.Source, b.Partition)] = b.End
	fa.stats.mu.Unlock()
}

// failure handles a user function's failure on an event: the fragment's
// state may be half updated, so it is restored from its last checkpoint and
// the readers rewind to it; after MaxAttempts the event is skipped and
// dead-lettered. Other fragments never stop.
func (fa *fragmentActor) failure(c pa.Context, ee *flows.EventError) {
	fa.stats.Failures.Add(1)
	fa.attempts[ee.Event]++
	n := fa.attempts[ee.Event]
	log := fa.e.cfg.Logger.With("fragment", fa.frag.ID(), "source", ee.DeadLetter.Source,
		"partition", ee.DeadLetter.Partition, "offset", ee.DeadLetter.Offset, "key", ee.DeadLetter.Key)
	if n >= fa.e.cfg.MaxAttempts {
		fa.skips[ee.Event] = true
		delete(fa.attempts, ee.Event)
		dl := ee.DeadLetter
		dl.Error = fmt.Sprintf("%s (after %d attempts)", dl.Error, n)
		fa.stats.Dead.Add(1)
		log.Warn("user function failed; event dead-lettered", "attempts", n, "err", ee.DeadLetter.Error)
		fa.e.deadLetters([]flows.DeadLetter{dl})
	} else {
		log.Warn("user function failed; restoring the fragment to retry", "attempt", n, "err", ee.DeadLetter.Error)
	}
	// The state may be half updated: apply, checkpoint and serve nothing
	// until it is restored. A checkpoint on its way to the store was taken
	// before the failure, from a sound state: let it land first, so that the
	// restore reads the newest checkpoint and nothing lands after it.
	fa.down = true
	fa.downAttempt = n
	fa.e.drainCount(+1) // not drained while down
	if !fa.writing {
		fa.recover(c)
	}
}

// recover restores the last checkpoint, then waits a backoff before the
// replay. Until the backoff ends, batches are gaps against the restored
// vector: dropped and acknowledged, so no reader waits for this fragment.
func (fa *fragmentActor) recover(c pa.Context) {
	if err := fa.restore(); err != nil {
		fa.e.fail(err)
		return
	}
	fa.down, fa.backoff = false, true
	for _, p := range fa.e.allParts {
		fa.awaiting[p] = awaited{reader: "*"}
	}
	fa.e.after(fa.e.cfg.RetryBackoff*time.Duration(fa.downAttempt), c.Self(), resumeMsg{})
}

// resume asks every reader to replay from the restored offsets.
func (fa *fragmentActor) resume(c pa.Context) {
	fa.backoff = false
	for i, pid := range fa.e.layout.Load().allRead {
		p := fa.e.allParts[i]
		fa.rewind(c, p, pid, fa.vec.End(p))
	}
	fa.e.drainCount(-1)
}

// reask repeats the rewinds that readers have not answered with a replay
// for rewindTimeout: a remote rewind or its replay can be lost with a
// connection, a partition's reader can move to another node meanwhile
// (the rewind then goes to the reader that has it now), and a reader that
// was itself rewinding may have passed over it. A replay that is
// only slow comes twice: the second copy is a duplicate and dropped.
func (fa *fragmentActor) reask(c pa.Context, now time.Time) {
	l := fa.e.layout.Load()
	for i, p := range fa.e.allParts {
		a, ok := fa.awaiting[p]
		if !ok || a.pid == nil || now.Sub(a.at) < rewindTimeout {
			continue
		}
		fa.stats.Reasked.Add(1)
		pid := l.allRead[i]
		fa.rewind(c, p, pid, a.to)
	}
}

// rewind asks a reader, local or remote, to read partition p again from
// offset to. A local rewind counts against the drain until the reader
// handled it.
func (fa *fragmentActor) rewind(c pa.Context, p recovery.PartitionID, reader *pa.PID, to int64) {
	fa.awaiting[p] = awaited{reader: reader.String(), pid: reader, to: to, at: fa.e.cfg.Now()}
	if fa.e.isLocal(reader) {
		fa.e.drainCount(+1)
		c.Send(reader, rewindMsg{to: to})
		return
	}
	c.Send(reader, &wire.Rewind{Fragment: uint32(fa.frag.ID()), To: to})
}

// restore replaces the fragment's state by its last durable checkpoint.
func (fa *fragmentActor) restore() error {
	// A checkpoint on its way to the store would be durable under our feet;
	// the restore reads whatever is durable now, and so do its offsets.
	r, err := recovery.Restore(fa.e.store, fa.e.plan, fa.frag.ID())
	if err != nil {
		return err
	}
	fa.stats.Restores.Add(1)
	fa.load(r)
	return nil
}

// load replaces the fragment's state by a restored checkpoint.
func (fa *fragmentActor) load(r recovery.Restored) {
	fa.frag, fa.vec, fa.epoch, fa.tooLate = r.Fragment, r.Vector, r.Manifest.Epoch, 0
	for ev := range fa.skips {
		fa.frag.Skip(ev)
	}
	fa.stats.Events.Store(fa.frag.Events())
	fa.stats.Watermark.Store(fa.frag.Watermark())
	offs := map[string]int64{}
	for p, end := range fa.vec.Snapshot() {
		offs[fa.e.plan.PartitionName(p.Source, p.Partition)] = end
	}
	fa.stats.mu.Lock()
	fa.stats.offsets = offs
	fa.stats.durable = r.Vector.Snapshot()
	fa.stats.mu.Unlock()
	fa.stats.Epoch.Store(r.Manifest.Epoch)
}

// ahead reports whether offsets cover more input than v does.
func ahead(offsets map[recovery.PartitionID]int64, v *recovery.Vector) bool {
	var a, b int64
	for _, end := range offsets {
		a += end
	}
	for _, end := range v.Snapshot() {
		b += end
	}
	return a > b
}

// replay asks every reader to read again from where the fragment is: a
// fragment that starts on this node after a placement change restored a
// checkpoint older than what the readers sent its old owner, and readers
// that reached the end of their input would send nothing more that shows
// the gap.
func (fa *fragmentActor) replay(c pa.Context) {
	for i, pid := range fa.e.layout.Load().allRead {
		p := fa.e.allParts[i]
		fa.rewind(c, p, pid, fa.vec.End(p))
	}
}

// handedOff restores the last checkpoint of the fragment's old owner, which
// handed it to this node, and starts from it: the readers replay from
// there. A fragment that started already (a node that joined starts its
// fragments at once, before the old owners hand them over; or the wait
// timed out) adopts the checkpoint if it is ahead of its own state: any
// checkpoint with its offset vector is a sound state to go on from.
func (fa *fragmentActor) handedOff(c pa.Context, m handoffMsg) {
	e := fa.e
	done := func() {
		if m.replyTo != "" {
			c.Send(pa.NewPID(m.replyTo, e.plan.Name()+"/replica"), &wire.HandoffDone{Fragment: uint32(fa.frag.ID())})
		}
	}
	if !fa.handoff {
		if m.placement < fa.placement || fa.down || !ahead(m.cp.Manifest.Offsets, &fa.vec) {
			e.cfg.Logger.Debug("a hand-off not ahead of the running fragment", "fragment", fa.frag.ID(), "from", m.from)
			done()
			return
		}
		if fa.writing {
			fa.pendingHandoff = &m // after the checkpoint being written
			return
		}
		e.drainCount(+1) // balanced below, as for a waiting fragment
	}
	if _, err := e.store.Write(e.plan.Name(), fa.frag.ID(), m.cp); err != nil {
		e.fail(fmt.Errorf("fragment %d: write the handed-off checkpoint: %w", fa.frag.ID(), err))
		return
	}
	r, err := recovery.Restore(e.store, e.plan, fa.frag.ID())
	if err != nil {
		e.fail(fmt.Errorf("fragment %d: restore the handed-off checkpoint: %w", fa.frag.ID(), err))
		return
	}
	own := fa.epoch
	fa.load(r)
	fa.epoch = max(fa.epoch, own) // epochs only grow: checkpoint waiters count on it
	fa.fullNext = true            // the standby's copy is of another lineage
	fa.stats.RestoredEpoch.Store(r.Manifest.Epoch)
	fa.stats.RestoredEvents.Store(r.Manifest.Events)
	fa.handoff = false
	e.drainCount(-1)
	fa.replay(c)
	done()
	e.cfg.Logger.Debug("fragment handed over", "fragment", fa.frag.ID(), "from", m.from, "epoch", r.Manifest.Epoch, "events", r.Manifest.Events)
}

func (fa *fragmentActor) requestCheckpoint(c pa.Context) {
	if fa.broken != nil {
		c.Respond(fa.broken)
		return
	}
	if (fa.down || fa.handoff) && !fa.writing {
		// Its last checkpoint is its newest sound state.
		c.Respond(ckptOK{})
		return
	}
	want := fa.epoch + 1
	if fa.writing {
		want++ // the one being written may predate the request
		fa.again = true
	}
	fa.waiters = append(fa.waiters, waiter{epoch: want, pid: c.Sender()})
	if !fa.writing {
		fa.checkpoint(c)
	}
}

// checkpoint hands the changes since the last checkpoint to the writer
// and goes on; ckptDone says when they are durable.
func (fa *fragmentActor) checkpoint(c pa.Context) {
	if fa.writing || fa.broken != nil || fa.down || fa.handoff {
		return
	}
	now := fa.e.cfg.Now()
	cp, err := recovery.Take(fa.frag, &fa.vec, fa.e.plan.Fragments(), fa.epoch+1, now)
	if err != nil {
		fa.breakCheckpoints(c, err)
		return
	}
	fa.epoch++
	fa.lastCkpt = now
	fa.writing = true
	fa.e.writes <- writeReq{frag: fa.frag.ID(), cp: cp, pid: c.Self(), full: fa.fullNext}
	fa.fullNext = false
}

func (fa *fragmentActor) durable(c pa.Context, m ckptDone) {
	fa.writing = false
	if m.err != nil {
		fa.breakCheckpoints(c, m.err)
		return
	}
	fa.stats.Epoch.Store(m.epoch)
	fa.stats.CkptTime.Store(m.time)
	fa.stats.CkptBytes.Add(int64(m.bytes))
	fa.stats.mu.Lock()
	fa.stats.durable = m.offsets
	fa.stats.mu.Unlock()
	// Every reader, on this node or another, learns how far this
	// checkpoint covers its partition: it commits its source up to what
	// every fragment announced.
	// Readers on other nodes hear it through this node's inbox, which
	// sends each reader the announcements of all its fragments together.
	for i, pid := range fa.e.layout.Load().allRead {
		off := m.offsets[fa.e.allParts[i]]
		if fa.e.isLocal(pid) {
			c.Send(pid, &wire.Durable{Fragments: []uint32{uint32(fa.frag.ID())}, Offsets: []int64{off}})
		} else if inbox := fa.e.inbox; inbox != nil {
			c.Send(inbox, netDurableMsg{reader: pid, fragment: uint32(fa.frag.ID()), offset: off})
		}
	}
	keep := fa.waiters[:0]
	for _, w := range fa.waiters {
		if m.epoch >= w.epoch {
			c.Send(w.pid, ckptOK{})
			continue
		}
		keep = append(keep, w)
	}
	fa.waiters = keep
	if fa.down {
		fa.recover(c)
	}
	if m := fa.pendingHandoff; m != nil {
		fa.pendingHandoff = nil
		fa.handedOff(c, *m)
	}
	if fa.again {
		fa.again = false
		fa.checkpoint(c)
	}
}

// breakCheckpoints stops checkpointing after a failure: the changes taken
// for the failed checkpoint are gone from the fragment's change set, so a
// later incremental checkpoint would store a state with holes. The fragment
// keeps serving from memory; the engine reports the error (Engine.Failed),
// on which a cluster.Node stops.
func (fa *fragmentActor) breakCheckpoints(c pa.Context, err error) {
	fa.broken = err
	fa.stats.mu.Lock()
	fa.stats.ckptErr = err
	fa.stats.mu.Unlock()
	fa.e.fail(fmt.Errorf("fragment %d: checkpoints stopped: %w", fa.frag.ID(), err))
	for _, w := range fa.waiters {
		c.Send(w.pid, err)
	}
	fa.waiters = nil
}

func (fa *fragmentActor) timerFailures(dls []flows.DeadLetter, err error) {
	if err != nil {
		fa.e.cfg.Logger.Error("fragment output", "fragment", fa.frag.ID(), "err", err)
	}
	if len(dls) == 0 {
		return
	}
	fa.stats.Dead.Add(int64(len(dls)))
	for _, d := range dls {
		fa.e.cfg.Logger.Warn("timer function failed; dead-lettered", "fragment", d.Fragment, "key", d.Key, "err", d.Error)
	}
	fa.e.deadLetters(dls)
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
