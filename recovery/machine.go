package recovery

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/internal/flowcore"
)

// Machine is the rules of one fragment, as a state machine: the batches
// it is sent, their acknowledgements, failures of user functions, restores,
// checkpoints and their durability, the outputs it sends fragments
// downstream and what they ask of it again. It is driven by calls and
// answers with actions (Ready), in the manner of etcd raft's RawNode: it
// does no I/O, starts no goroutine and reads no clock. The fragment actor
// carries the actions out over protoactor; the flowstest harness and the
// simulation carry them out in memory. Nothing else holds these rules.
//
// The rules, for a batch of channel partition p covering [PrevEnd, End):
//   - fence: a batch sent under an older placement epoch is dropped, and
//     its sender asked to send again from the recorded end (it was
//     re-placed);
//   - admit (Vector.Admit): a duplicate is dropped, but its watermark is
//     still observed (a fragment restored after the batch was first sent
//     needs that progress); a gap is dropped and the channel partition
//     asked to rewind to the recorded end, once per sender until it
//     replays (a replay asked of whoever reads a source partition does
//     not stand for a reader whose batch shows a gap: that one is asked
//     too); an overlap applies the records at or after the end;
//   - a user function that fails on an event leaves the state untrusted:
//     the fragment is restored from its last durable checkpoint (after a
//     checkpoint being written lands), holds all input for a backoff that
//     grows with the attempts, then asks every channel partition to replay
//     from its restored vector; after MaxAttempts the event is skipped and
//     dead-lettered;
//   - a rewind unanswered for RewindTimeout is asked again (the request or
//     the replay was lost with a connection); after a tenth of it for an
//     exchange partition not heard from since a restore (Confirm: the
//     answer may have gone to the fragment's old owner), and from where a
//     replay got to if a batch dropped as a gap meanwhile showed that the
//     sender has more (the replay came out of order);
//   - a fragment waiting for a hand-off takes no input until the old
//     owner's checkpoint (or the wait's end), sends nothing downstream,
//     not even what a downstream fragment asks for again, and its replay
//     asks the readers whose batches it dropped meanwhile as well;
//   - a fragment on a node that was paused long enough for the others to
//     take it over (Resumed) trusts nothing it holds: like a failed one it
//     applies, checkpoints and releases nothing, restores its last durable
//     checkpoint (after one being written lands), and then waits for a
//     hand-off, from the node that owned it meanwhile, as a fragment taken
//     over from a live owner does;
//   - outputs for fragments downstream (exchanges) leave once a durable
//     checkpoint covers them (see internal/flowcore's exchange.go), with Replicated
//     once the checkpoint after it is durable: Durable sends them; with
//     Confirm once the standby confirms the copy (Copied), and a fragment
//     started from a copy checks it against what its downstream fragments
//     applied first (the package doc: strong productions);
//     a batch sent downstream and not acknowledged for RewindTimeout was
//     lost (a connection broke) and is sent again, with everything sent
//     to that fragment since;
//   - a batch is acknowledged once applied or observed (dropped batches
//     at once), unless the fragment keeps more than MaxRetained outputs that no
//     downstream checkpoint covers yet: then acknowledgements wait until
//     downstream checkpoints catch up, and back-pressure reaches the
//     sources. Downstream checkpoints never wait for upstream ones, so the
//     wait cannot form a cycle.
type Machine struct {
	plan      *flowcore.Plan
	id        int
	frag      *flowcore.Fragment
	vec       Vector
	cfg       MachineConfig
	epoch     uint64 // of the last checkpoint taken (maybe not yet durable)
	placement uint64 // the newest placement epoch seen
	now       time.Time

	down    bool      // a user function failed: the state is untrusted until restored
	backoff time.Time // restored after a failure: input waits until then (zero: not waiting)
	waiting bool      // taken over from a live owner: input waits for its last checkpoint
	resumed bool      // the node was paused: the restore that follows waits for a hand-off
	writing bool      // a checkpoint is with the writer
	broken  error     // a checkpoint failed: no further checkpoints

	downAttempt int
	// sinkHeld: a sink refused outputs made at once, which the fragment
	// keeps and writes again after the backoff (holdSinks); sinkAttempts:
	// the refusals in a row, which set the backoff.
	sinkHeld     bool
	sinkAttempts int
	attempts     map[flows.EventID]int
	skips        map[flows.EventID]bool
	awaiting     map[PartitionID]awaited
	// dropped: per source partition, the sender of the last batch dropped
	// while the fragment waited, was down or backed off. The replay asks
	// it too (replayAll).
	dropped map[PartitionID]From

	// Batches sent downstream are numbered (from FirstSend);
	// acknowledgements held while too many outputs are retained.
	nextSend uint64
	held     []From
	unacked  []sentBatch // batches sent downstream and not acknowledged, in order

	lastDurable map[PartitionID]int64 // Replicated: the newest durable checkpoint's vector

	// Confirm (see MachineConfig): the durable checkpoint whose standby
	// copy is awaited, its vector and when it was last sent; the
	// downstream fragments (exchange channel, fragment) that have not yet
	// said where they are since the last restore, and the first send
	// number after it; stale: a downstream fragment applied more than
	// the restored checkpoint holds.
	copying     bool
	copyEpoch   uint64
	settled     uint64 // the newest checkpoint confirmed (Copied): on two nodes
	copyOffsets map[PartitionID]int64
	copyAt      time.Time
	verifying   map[[2]int]bool
	unsettled   map[PartitionID]bool // exchange inputs not heard from since the restore
	// probers: per exchange input, the last batch acknowledged with an
	// end of -1 because other inputs were unsettled (answerProbers).
	probers   []prober
	probeFrom uint64
	stale     bool
	staleAt   time.Time

	ready Ready
}

// DefaultRewindTimeout is how long a fragment waits for a replay it asked
// for, or for the acknowledgement of a batch it sent, before it asks or
// sends again.
const DefaultRewindTimeout = 3 * time.Second

// sentBatch is a batch sent downstream, until its acknowledgement.
type sentBatch struct {
	seq      uint64
	ch, dest int
	from     int64
	end      int64
	at       time.Time
}

// MachineConfig are a machine's limits. Zero fields take the defaults.
type MachineConfig struct {
	MaxAttempts   int           // default 3
	Backoff       time.Duration // times the attempt; default 100ms, negative for none
	RewindTimeout time.Duration // default DefaultRewindTimeout
	MaxRetained   int           // outputs kept for downstream checkpoints before input waits; default 1<<20
	// Replicated: checkpoints are copied to a standby, which may restore
	// the one before the newest durable one (the owner died before it
	// replicated): upstream fragments are told to forget outputs only up
	// to the checkpoint before, and OnCheckpoint sinks are delivered what
	// that one covers (flowcore.Fragment.LagReleases).
	Replicated bool
	// Confirm (with Replicated) is the strong rule: a checkpoint's
	// outputs (exchanges, OnCheckpoint sinks) are released, and upstream
	// fragments told it covers theirs, only once the driver confirms that
	// the standby holds it durably (Copied; at once where there is no
	// standby), and no checkpoint is taken before the last one is
	// confirmed. After every restore the fragment asks every fragment
	// downstream where it is (the acknowledgement of its first batch
	// carries the receiver's end, From.End, given to AckedEnd) and takes
	// no checkpoint until all answered; if one applied more than the
	// restored checkpoint holds, the copy is stale: the fragment applies,
	// checkpoints and releases nothing and asks for a newer copy
	// (Ready.Fetch) until one comes (Restored with handoff true). No lag
	// (LagReleases) is needed then. The driver must carry out Copied,
	// AckedEnd, Recopy and Fetch; without Confirm it need not.
	Confirm bool
	// FirstSend numbers the machine's first batch sent downstream
	// (Send.Seq; zero: 1), and the ones after follow it. An
	// acknowledgement names its batch by that number alone and goes to
	// the sender's address (the fragment actor's name; a node and a
	// fragment), which the fragment's next machine there shares: one
	// made when the node gains the fragment again (after a fence or a
	// move), or one of the next process at that address, to which
	// protoactor's remote delivers what it queued. Such a machine may be
	// sent the late acknowledgement of an earlier one's batch, above all
	// a downstream fragment's second answer to a probe (answerProbers),
	// which comes once that fragment has heard from all its upstreams:
	// seconds later if one was away. Taken for the machine's own batch of
	// that number, its end would prove the machine's copy stale when it
	// is not (an end past that batch's, on another exchange: sim visits
	// seed 84150 waited for good), or settle the check of a fragment that
	// has not answered. So a driver that makes a fragment's machines one
	// after another numbers each past every number the ones before it
	// sent (the simulation per node, the engine per fragment from a
	// random start per process). It stays below 1<<63: numbers never wrap.
	FirstSend uint64
}

func (c *MachineConfig) defaults() {
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 3
	}
	if c.Backoff == 0 {
		c.Backoff = 100 * time.Millisecond
	}
	if c.RewindTimeout <= 0 {
		c.RewindTimeout = DefaultRewindTimeout
	}
	if c.MaxRetained <= 0 {
		c.MaxRetained = 1 << 20
	}
}

// From is where a batch came from, as the driver names it: Key identifies
// the sender (a rewind is asked of it again only if a gap comes from
// another); Ref is the driver's handle to answer it; Seq, for an exchange
// batch, its number at the sender (to acknowledge it).
type From struct {
	Key string
	Ref any
	Seq uint64
	// End is set by the machine on the acknowledgement of an exchange
	// batch: how far the receiver applied the sender's partition, -1 if
	// it does not know yet (it waits for a hand-off or a restore). The
	// driver passes it back to the sender (AckedEnd).
	End int64
	// Start is set by the machine on every acknowledgement: where the
	// batch began on its partition (its PrevEnd), which a reader's
	// Credits.Ack matches against its batches in flight. A driver that
	// acknowledges a batch it could not decode sets it to -1.
	Start int64
}

type awaited struct {
	from   string // the sender asked; "" for any
	to     int64
	at     time.Time
	repeat bool // asked, and asked again after RewindTimeout until answered
	// beyond is the largest End of a batch dropped as a gap meanwhile:
	// its sender had records up to there, and a replay that fills less
	// leaves the wait on (see Step), not asked yet: a gap asks at once.
	beyond  int64
	unasked bool
}

// Ready is what the driver is to carry out, in this order.
type Ready struct {
	// Sends are batches for fragments downstream (exchanges); Acked(Seq)
	// takes their acknowledgements.
	Sends []Send
	// Acks are the batches to acknowledge to their senders.
	Acks []From
	// Rewinds ask a channel partition to send again from To: for a source
	// partition, its reader; for an exchange partition, the upstream
	// fragment (Resend). Ask is the sender to ask, nil for whoever has it.
	Rewinds []Rewind
	// Trims tell upstream fragments how far this fragment's durable
	// checkpoint covers their outputs (Trim).
	Trims []Trim
	// Commits is the vector of the newest checkpoint a restore may start
	// from — durable and, with Confirm, confirmed by the standby; with
	// Replicated alone, the one before the newest durable — for the
	// readers: they commit their sources up to what every fragment's
	// Commits cover (a source may then drop what lies before). Nil when
	// nothing new is covered.
	Commits map[PartitionID]int64
	// DeadLetters are events and timers given up on.
	DeadLetters []flows.DeadLetter
	// Restore: load the fragment's last durable checkpoint and call
	// Restored with it.
	Restore bool
	// Errors are failures to report: a sink's refusal, of outputs made
	// as they are (SinkFailures) or on a checkpoint (OnCheckpoint: they
	// stay, and are delivered on the next); neither loses them.
	Errors []error
	// SinkFailures counts refusals of outputs made as they are: the
	// fragment holds them, and its input, and writes them again at a Tick
	// after a backoff (SinkHeld).
	SinkFailures int
	// Recopy (Confirm): the standby did not confirm the last durable
	// checkpoint in time: send it the whole checkpoint again (to the
	// fragment's standby now), or call Copied if there is none.
	Recopy bool
	// Stale (Confirm) says, once, why the fragment stopped: it restored a
	// checkpoint older than what a fragment downstream applied. Fetch asks
	// the driver to offer it a newer copy from any node that has one
	// (Restored with handoff true), again every RewindTimeout while it is
	// stale.
	Stale error
	Fetch bool
	// Behinds (Confirm) tell fragments downstream that asked for records
	// this fragment no longer keeps (their durable checkpoints covered
	// them) to check whether they restored a copy older than that (Behind).
	Behinds []Behind
	// Counters of what happened, for the driver's statistics.
	Applied, Duplicates, Gaps, Fenced, Failures, Reasked, Resent int
	Replayed                                                     int64
}

// Send is a batch for fragment Dest.
type Send struct {
	Dest  int
	Seq   uint64
	Batch *flowcore.Batch
}

// Rewind asks channel partition Part to be sent again from To.
type Rewind struct {
	Part PartitionID
	To   int64
	Ask  *From
}

// Behind tells fragment Dest that this fragment's records on exchange
// channel Ch begin at Upto: Dest's durable checkpoint covered them.
type Behind struct {
	Dest, Ch int
	Upto     int64
}

// Trim tells upstream fragment Part.Partition of exchange channel
// Part.Source that this fragment's durable checkpoint covers its outputs
// up to Upto.
type Trim struct {
	Part PartitionID
	Upto int64
}

// NewMachine makes the machine of fragment id from its restored state, at
// placement epoch placement. A fragment that waits for a hand-off takes no
// input until Restored or StopWaiting.
func NewMachine(plan *flowcore.Plan, id int, r Restored, placement uint64, waitHandoff bool, cfg MachineConfig) *Machine {
	cfg.defaults()
	m := &Machine{plan: plan, id: id, frag: r.Fragment, vec: r.Vector, epoch: r.Manifest.Epoch, placement: placement, cfg: cfg,
		attempts: map[flows.EventID]int{}, skips: map[flows.EventID]bool{}, awaiting: map[PartitionID]awaited{},
		dropped: map[PartitionID]From{}, waiting: waitHandoff}
	if cfg.FirstSend > 0 {
		m.nextSend = cfg.FirstSend - 1 // send numbers the next one
	}
	if cfg.Replicated && !cfg.Confirm {
		m.frag.LagReleases()
	}
	if cfg.Confirm {
		// Every start from a checkpoint begins a new lineage: its replay
		// interleaves the inputs anew. Its checkpoints are numbered past
		// every lineage of an older placement, so that of two copies the
		// one with the larger epoch is the live one (hand-offs and fetched
		// copies are judged by it).
		m.epoch = max(m.epoch, placement<<32)
		if !r.Found {
			m.frag.Restored() // tells every fragment downstream where it is: at 0
		}
		if !waitHandoff {
			m.startVerify()
		}
	}
	if waitHandoff {
		m.awaitAll()
	}
	return m
}

// Fragment is the fragment's state; the driver may read it (queries,
// statistics) between calls.
func (m *Machine) Fragment() *flowcore.Fragment { return m.frag }

// Vector is the fragment's offset vector.
func (m *Machine) Vector() *Vector { return &m.vec }

// Epoch is the epoch of the last checkpoint taken.
func (m *Machine) Epoch() uint64 { return m.epoch }

// Serving reports whether the fragment's state may be read: it is not
// untrusted after a failure nor waiting for a hand-off.
func (m *Machine) Serving() error {
	switch {
	case m.down:
		return fmt.Errorf("fragment %d is restoring after a failure", m.id)
	case m.stale:
		return fmt.Errorf("fragment %d restored a checkpoint older than what fragments downstream applied: it waits for a newer copy", m.id)
	case m.waiting:
		return fmt.Errorf("fragment %d is being handed over to this node", m.id)
	}
	return nil
}

// Stale reports whether the fragment waits for a copy newer than the one
// it restored (Confirm).
func (m *Machine) Stale() bool { return m.stale }

// Holding reports whether input waits for a backoff after a restore.
func (m *Machine) Holding() bool { return !m.backoff.IsZero() }

// PlacementEpoch is the newest placement epoch the fragment has seen.
func (m *Machine) PlacementEpoch() uint64 { return m.placement }

// Waiting reports whether the fragment waits for a hand-off.
func (m *Machine) Waiting() bool { return m.waiting }

// Down reports whether the fragment's newest sound state is its last
// checkpoint: it failed and waits for its restore, or it holds outputs a
// sink refused (SinkHeld), which a checkpoint must not cover. A checkpoint
// asked of it (a hand-off, a stop) is that last one.
func (m *Machine) Down() bool { return m.down || m.sinkHeld }

// Writing reports whether a checkpoint is with the writer.
func (m *Machine) Writing() bool { return m.writing }

// Broken is the error that stopped checkpoints, if any.
func (m *Machine) Broken() error { return m.broken }

// Ready returns the actions accumulated since the last call and forgets
// them.
func (m *Machine) Ready() Ready {
	r := m.ready
	m.ready = Ready{}
	return r
}

// SetNow sets the processing time for the calls that follow.
func (m *Machine) SetNow(t time.Time) { m.now = t }

// Placement raises the placement epoch the fragment fences batches with.
func (m *Machine) Placement(epoch uint64) { m.placement = max(m.placement, epoch) }

// Step judges a batch and, if it is admitted, applies it.
func (m *Machine) Step(b *flowcore.Batch, from From) {
	defer b.Release()
	from.Start = b.PrevEnd
	p := PartitionID{Source: b.Source, Partition: b.Partition}
	if m.cfg.Confirm && m.plan.IsExchange(p.Source) {
		// Where this fragment is on the sender's partition, for the
		// sender's check after its restore: what applying b adds is
		// released by the sender already, so the end before b will do.
		from.End = m.vec.End(p)
		if m.down || m.waiting || len(m.unsettled) > 0 {
			// Its own restored copy may yet prove stale (an upstream
			// says Behind) and be replaced by a newer one: its end
			// proves nothing until every upstream answered.
			from.End = -1
			if !m.down && !m.waiting {
				m.noteProber(p, from)
			}
		}
		defer m.answerProbers()
	}
	if m.down || m.waiting || m.sinkHeld || !m.backoff.IsZero() {
		// The replay after the restore (or the hand-off) brings it again.
		// A batch that happens to follow on from the restored offsets waits
		// too: the backoff holds all input, not only what is out of order.
		m.ready.Gaps++
		m.ready.Acks = append(m.ready.Acks, from)
		if !m.plan.IsExchange(p.Source) {
			m.dropped[p] = from
		}
		return
	}
	if Fence(&m.placement, b.Epoch) == Fenced {
		m.ready.Fenced++
		m.ready.Acks = append(m.ready.Acks, from)
		m.gap(p, from, m.vec.End(p))
		return
	}
	verdict, min := m.vec.Admit(p, b.PrevEnd, b.End)
	if verdict != Gap && b.PrevEnd < min {
		m.ready.Replayed += minInt64(b.End, min) - b.PrevEnd
	}
	switch verdict {
	case Duplicate:
		delete(m.unsettled, p)
		m.ready.Duplicates++
		m.frag.SetNow(m.now)
		m.result(m.frag.Observe(b), from, false)
		return
	case Gap:
		m.ready.Gaps++
		m.ready.Acks = append(m.ready.Acks, from)
		m.gap(p, from, min)
		if a, ok := m.awaiting[p]; ok && b.End > a.beyond {
			a.beyond = b.End
			m.awaiting[p] = a
		}
		return
	}
	a, asked := m.awaiting[p]
	delete(m.awaiting, p)
	delete(m.unsettled, p)
	m.frag.SetNow(m.now)
	m.result(m.frag.Apply(b, min), from, true)
	if end := m.vec.End(p); asked && a.beyond > end && !m.down {
		// The replay's batches may come out of order (a network that
		// reorders, or the answers to two requests crossing): a later one
		// that came first was dropped as a gap, silently since its sender
		// was asked already, and this one fills only part of the hole. No
		// sender will send the rest unless asked: a reader at its end has
		// nothing due, and every batch was acknowledged (sim scenario
		// duplication_reordering left a fragment 416 offsets short for
		// good). The wait goes on from here, asked again a tenth of
		// RewindTimeout from now unless the rest, still on its way, comes
		// first.
		// It keeps beyond: a second batch that fills another part of the
		// hole must not end the wait short of it (sim seed 24836: a
		// reordered replay filled 0–256, then 256–512, of a hole the
		// sender had sent up to 595, and the fragment never asked for
		// the rest).
		m.awaiting[p] = awaited{from: a.from, to: end, at: m.probeAgainAt(), repeat: true, unasked: true, beyond: a.beyond}
	}
}

// gap asks for p again from to, unless that was asked of this sender
// and not yet answered, or the fragment drops gaps until its replay. (A
// wait that goes on after a replay filled part of the hole was not asked
// yet: a gap asks at once.)
//
// A replay asked of whoever reads a source partition does not cover a gap
// from a reader that is ahead of the fragment: the driver names the
// reader of its own placement, which after a heal may be a node that is
// about to lose the partition to the sender. That one answers at the
// fragment's end (with an empty batch if it has read nothing new),
// which ends the wait, while the sender, which read further for the
// fragment's old owner on its side of the partition, never hears of the
// gap: sim seed 4934 lost 12 events so. So the sender is asked too. An
// exchange's rewind goes to the upstream fragment's owner whoever sent
// the batch, so asking again there would only repeat the same request.
func (m *Machine) gap(p PartitionID, from From, to int64) {
	if a, ok := m.awaiting[p]; ok && !a.unasked &&
		(a.from == from.Key || a.from == "" && (!a.repeat || m.plan.IsExchange(p.Source))) {
		return
	}
	m.rewind(p, &from, to)
}

func (m *Machine) rewind(p PartitionID, ask *From, to int64) {
	a := awaited{to: to, at: m.now, repeat: true}
	if m.unsettled[p] {
		// After a restore (Confirm), the upstream fragment's answer is
		// what settles p, and until every input settled this fragment
		// answers its own upstreams' probes with -1: their first
		// checkpoints wait on it, and so does its own (its downstream
		// fragments answer it alike). An upstream that has not applied
		// the placement that moved this fragment yet sends its answer to
		// the fragment's old owner, where it is lost, and one with no new
		// outputs sends nothing else: after a failover every restored
		// fragment took its first checkpoint only after RewindTimeout,
		// and a second crash within those seconds found no standby copy
		// of it (sim scenario kill_both_in_turn). Asked again a tenth of
		// RewindTimeout from now, as a probe is resent: by then the
		// upstream has most likely placed.
		a.at = m.probeAgainAt()
	}
	if ask != nil {
		a.from = ask.Key
	}
	m.awaiting[p] = a
	m.ready.Rewinds = append(m.ready.Rewinds, Rewind{Part: p, To: to, Ask: ask})
}

// result takes what applying (or observing, for a duplicate) a batch from
// from did.
func (m *Machine) result(err error, from From, applied bool) {
	var ee *flowcore.EventError
	if errors.As(err, &ee) {
		// The timers that failed in this batch fire again in the replay
		// of the checkpoint the failure restores.
		m.frag.TimerDeadLetters()
		m.ready.Acks = append(m.ready.Acks, from)
		m.failure(ee)
		return
	}
	if err != nil {
		m.holdSinks(err) // the batch is applied; its outputs wait
	}
	m.ready.DeadLetters = append(m.ready.DeadLetters, m.frag.TimerDeadLetters()...)
	if applied {
		m.ready.Applied++
	}
	m.sendOutputs()
	if m.frag.Retained() > m.cfg.MaxRetained {
		m.held = append(m.held, from)
		return
	}
	m.ready.Acks = append(m.ready.Acks, from)
}

// sendOutputs sends the batches due downstream.
func (m *Machine) sendOutputs() {
	m.frag.TakeOutputs(m.send)
}

func (m *Machine) send(dest int, b *flowcore.Batch) {
	m.nextSend++
	at := m.now
	if m.verifying[[2]int{b.Source, dest}] {
		at = m.probeAgainAt() // a probe lost (its fragment not placed yet) costs a tenth
	}
	m.unacked = append(m.unacked, sentBatch{seq: m.nextSend, ch: b.Source, dest: dest, from: b.PrevEnd, end: b.End, at: at})
	m.ready.Sends = append(m.ready.Sends, Send{Dest: dest, Seq: m.nextSend, Batch: b})
}

// Acked takes the acknowledgement of send seq by its fragment. What a
// fragment downstream has is known by its durable checkpoints (Trim);
// acknowledgements only tell that a batch arrived: one unacknowledged for
// RewindTimeout was lost on the way (a connection broke) and is sent
// again — else a lost last batch would leave its fragment short for good.
func (m *Machine) Acked(seq uint64) { m.AckedEnd(seq, -1) }

// AckedEnd is Acked with the receiver's end on this fragment's partition
// (From.End), which Confirm checks after a restore: an end beyond the
// batch's (whose End is where the restored checkpoint left the exchange)
// means the receiver applied outputs this checkpoint does not hold, and
// the fragment is stale; an end within it that the receiver is where this
// fragment is. An acknowledgement without the end (-1: the receiver waits
// for its own state) leaves the batch to be sent again.
func (m *Machine) AckedEnd(seq uint64, end int64) {
	i, ok := slices.BinarySearchFunc(m.unacked, seq, func(s sentBatch, seq uint64) int { return cmp.Compare(s.seq, seq) })
	if !ok {
		return
	}
	s := m.unacked[i]
	if k := [2]int{s.ch, s.dest}; m.cfg.Confirm && s.seq > m.probeFrom && m.verifying[k] {
		switch {
		case end < 0:
			m.unacked[i].at = m.probeAgainAt()
			return
		case end > s.end:
			m.goStale(s, end)
			return
		}
		delete(m.verifying, k)
	}
	m.unacked = slices.Delete(m.unacked, i, i+1)
}

type prober struct {
	p    PartitionID
	from From
}

// noteProber keeps the batch of exchange input p, acknowledged with an
// end of -1 while other inputs were unsettled, to be answered again with
// its end once they settle (answerProbers).
func (m *Machine) noteProber(p PartitionID, from From) {
	for i := range m.probers {
		if m.probers[i].p == p {
			m.probers[i].from = from // a later batch answers the sender as well
			return
		}
	}
	m.probers = append(m.probers, prober{p, from})
}

// answerProbers acknowledges again, with their ends, the batches answered
// with -1 while the fragment's exchange inputs were unsettled, once all
// settled. After a restore every fragment of a stage that feeds itself
// (or of two stages on the same fragments) probes every other and
// answers -1 until it heard from all: without this second answer each
// prober waited a tenth of RewindTimeout to ask again, and no fragment
// took its first checkpoint — nor released an output — meanwhile (on the
// two-stage bench, for the first 450 ms of a run that takes 1.2 to 2 s,
// while its exchanges' logs grew to 3.6M records). The end is the one
// now: the sender, verifying, released nothing new since its probe, so
// what this fragment applied of it is what the probe would have said.
func (m *Machine) answerProbers() {
	if len(m.probers) == 0 || len(m.unsettled) > 0 || m.down || m.waiting {
		return
	}
	for _, pr := range m.probers {
		a := pr.from
		a.End = m.vec.End(pr.p)
		m.ready.Acks = append(m.ready.Acks, a)
	}
	m.probers = m.probers[:0]
}

// probeAgainAt is the send time that makes resendLost send a probe again
// a tenth of RewindTimeout from now: the answer is on its way (the
// receiver is placed, or has heard from its upstreams) soon. As the time
// of a rewind, it makes Tick ask again as soon.
func (m *Machine) probeAgainAt() time.Time {
	return m.now.Add(m.cfg.RewindTimeout/10 - m.cfg.RewindTimeout)
}

// startVerify asks, after a restore, every fragment downstream where it
// is (the restored exchanges send each a batch: Fragment.Restored).
func (m *Machine) startVerify() {
	if !m.cfg.Confirm {
		return
	}
	m.verifying = map[[2]int]bool{}
	m.unsettled = map[PartitionID]bool{}
	m.probers = m.probers[:0]
	m.probeFrom = m.nextSend
	for _, ch := range m.plan.Exchanges() {
		for d := range m.plan.Fragments() {
			m.verifying[[2]int{ch, d}] = true
			m.unsettled[PartitionID{Source: ch, Partition: d}] = true
		}
	}
}

// goStale stops a fragment whose restored checkpoint is older than what
// fragment s.dest applied of its outputs: a replay would interleave its
// inputs anew and contradict what that fragment applied.
func (m *Machine) goStale(s sentBatch, end int64) {
	m.stop(fmt.Errorf("fragment %d restored a checkpoint that covers its outputs on channel %d up to %d, but fragment %d applied them up to %d: it waits for a newer copy",
		m.id, s.ch, s.end, s.dest, end))
}

// Behind takes an upstream fragment's word that its records for this one
// on exchange channel ch begin at upto (Confirm): if this fragment is
// before that, it restored a checkpoint older than a durable one of its
// own, and the records between are gone from upstream: it stops and waits
// for a newer copy.
func (m *Machine) Behind(ch, upstream int, upto int64) {
	p := PartitionID{Source: ch, Partition: upstream}
	if !m.cfg.Confirm || m.stale || m.down || m.waiting || m.vec.End(p) >= upto {
		return
	}
	m.stop(fmt.Errorf("fragment %d restored a checkpoint that applied fragment %d's outputs on channel %d up to %d, but a durable checkpoint of its own covered them up to %d: it waits for a newer copy",
		m.id, upstream, ch, m.vec.End(p), upto))
}

// stop makes the fragment wait for a newer copy (Fetch), as for a
// hand-off: it applies, checkpoints and releases nothing meanwhile.
func (m *Machine) stop(why error) {
	m.stale, m.staleAt = true, m.now
	m.waiting = true
	m.probers = m.probers[:0]
	clear(m.verifying)
	m.unacked = m.unacked[:0]
	m.awaitAll()
	m.ready.Stale = why
	m.ready.Fetch = true
}

// Copied confirms that the fragment's standby holds checkpoint epoch
// durably (Confirm): its outputs are released and upstream fragments
// told how far it covers theirs.
func (m *Machine) Copied(epoch uint64) {
	if !m.copying || epoch < m.copyEpoch {
		return
	}
	m.copying = false
	m.settled = max(m.settled, m.copyEpoch)
	for p, end := range m.copyOffsets {
		if m.plan.IsExchange(p.Source) {
			m.ready.Trims = append(m.ready.Trims, Trim{Part: p, Upto: end})
		}
	}
	m.ready.Commits = m.copyOffsets
	m.copyOffsets = nil
	if m.down || m.waiting {
		return
	}
	if err := m.frag.Released(); err != nil {
		m.ready.Errors = append(m.ready.Errors, err)
	}
	m.sendOutputs()
}

// Settled reports whether a checkpoint taken after epoch since is durable
// here and, where there is a standby, confirmed there (Copied): the
// fragment's state since then is on two nodes. A fragment that took over
// a hand-off confirms it to the node that handed it off only once the
// first checkpoint after the copy it took is settled (since: its epoch
// when it took it), for the sender may leave at once and take its copy
// with it: until then the copy here is the only one (sim visits seed 77:
// a leaver confirmed as soon as the new owner had written its hand-off,
// left, and the new owner's standby had no copy when the new owner was
// cut off).
func (m *Machine) Settled(since uint64) bool {
	return m.epoch > since && !m.writing && !m.copying
}

// SettledEpoch is the epoch of the newest checkpoint this machine took
// and saw confirmed (Copied; 0: none): the outputs it released are in it,
// and a fragment that later starts from an older copy would release
// others under their ids (Settled records it for the whole cluster).
func (m *Machine) SettledEpoch() uint64 { return m.settled }

// Verifying reports whether the fragment waits, after a restore, for
// fragments downstream to say where they are (Confirm): it takes no
// checkpoint until then.
func (m *Machine) Verifying() bool { return len(m.verifying) > 0 }

// Copying reports whether a durable checkpoint waits for its standby's
// confirmation, and which.
func (m *Machine) Copying() (uint64, bool) { return m.copyEpoch, m.copying }

// Unacknowledged is the number of batches sent downstream and not
// acknowledged.
func (m *Machine) Unacknowledged() int { return len(m.unacked) }

// Rewinding reports whether the fragment waits for a rewind it asked for
// and will ask again after RewindTimeout (Tick): the records it lacks
// are on their way, or were lost on the way again.
func (m *Machine) Rewinding() bool {
	for _, a := range m.awaiting {
		if a.repeat {
			return true
		}
	}
	return false
}

// resendLost sends again, to each fragment, from the oldest of its batches
// unacknowledged for RewindTimeout (its records since then, in one batch).
//
// Every batch is looked at, not only the oldest: a probe's time is set
// back to make it due a tenth of RewindTimeout on (probeAgainAt), and an
// older batch sent since less than RewindTimeout would hold it back.
func (m *Machine) resendLost() {
	if m.down {
		return
	}
	due := false
	for _, s := range m.unacked {
		if m.now.Sub(s.at) >= m.cfg.RewindTimeout {
			due = true
			break
		}
	}
	if !due {
		return
	}
	type dest struct{ ch, dest int }
	var lost []sentBatch
	seen := map[dest]bool{}
	m.unacked = slices.DeleteFunc(m.unacked, func(s sentBatch) bool {
		if m.now.Sub(s.at) < m.cfg.RewindTimeout {
			return false
		}
		if d := (dest{s.ch, s.dest}); !seen[d] {
			seen[d] = true
			lost = append(lost, s)
		}
		return true
	})
	for _, s := range lost {
		m.ready.Resent++
		from := s.from
		if base, _ := m.frag.Kept(s.ch, s.dest); m.cfg.Confirm && from < base {
			// The receiver's confirmed checkpoint covers the records before
			// base (Trim came since the batch left): it has them. Resend
			// would answer a request for them with Behind, and a probe of
			// a verifying fragment would be gone with no batch to answer
			// it: sim seed 1833 kept a fragment verifying for good, its
			// outputs never released.
			from = base
		}
		m.Resend(s.ch, s.dest, from)
	}
}

// releaseHeld acknowledges the held batches, once the outputs retained
// are few enough again, or the state that made them is gone (a restore).
func (m *Machine) releaseHeld(all bool) {
	if len(m.held) > 0 && (all || m.frag.Retained() <= m.cfg.MaxRetained) {
		m.ready.Acks = append(m.ready.Acks, m.held...)
		m.held = m.held[:0]
	}
}

// failure handles a user function's failure on an event.
func (m *Machine) failure(ee *flowcore.EventError) {
	m.ready.Failures++
	m.attempts[ee.Event]++
	n := m.attempts[ee.Event]
	if n >= m.cfg.MaxAttempts {
		m.skips[ee.Event] = true
		delete(m.attempts, ee.Event)
		dl := ee.DeadLetter
		dl.Error = fmt.Sprintf("%s (after %d attempts)", dl.Error, n)
		m.ready.DeadLetters = append(m.ready.DeadLetters, dl)
	}
	// The state may be half updated: apply, checkpoint and serve nothing
	// until it is restored. A checkpoint on its way to the store was taken
	// before the failure, from a sound state: let it land first, so that the
	// restore reads the newest checkpoint and nothing lands after it.
	m.down, m.downAttempt = true, n
	m.releaseHeld(true)
	if !m.writing {
		m.ready.Restore = true
	}
}

// maxSinkBackoff bounds the attempts that multiply Config.Backoff before
// a refused sink is tried again: a sink down for long is tried every
// 10 backoffs (a second by default), not ever more rarely.
const maxSinkBackoff = 10

// holdSinks takes a sink's refusal of outputs made as they are (not
// OnCheckpoint). The fragment keeps them and, after a backoff, writes
// them again (Tick), for as long as the sink refuses: no event is at
// fault, so none is dead-lettered. Meanwhile it applies no input (it is
// dropped, and replayed once the sink took them), fires no
// processing-time timer, and takes no checkpoint, which would cover
// outputs the sink does not have: a restore (a crash, a hand-off, which
// takes the last checkpoint) makes them again with the same ids.
func (m *Machine) holdSinks(err error) {
	m.ready.Errors = append(m.ready.Errors, err)
	m.ready.SinkFailures++
	m.sinkAttempts++
	m.sinkHeld = true
	m.backoff = m.now
	if m.cfg.Backoff > 0 {
		m.backoff = m.now.Add(m.cfg.Backoff * time.Duration(min(m.sinkAttempts, maxSinkBackoff)))
	}
	m.awaitAll()
}

// retrySinks writes again, once the backoff ended, what a sink refused;
// it reports whether the fragment may go on.
func (m *Machine) retrySinks() bool {
	if err := m.frag.RetrySinks(); err != nil {
		m.holdSinks(err)
		return false
	}
	m.sinkHeld, m.sinkAttempts = false, 0
	return true
}

// SinkHeld reports whether the fragment holds outputs a sink refused, to
// write them again at a Tick after the backoff.
func (m *Machine) SinkHeld() bool { return m.sinkHeld }

// Resumed drops the fragment's state: its node was stopped (or declared
// dead) for long enough that another node may have taken the fragment
// over, applied what came meanwhile and released its outputs. Nothing the
// fragment holds is released: no outputs, no checkpoint; input is dropped
// (and acknowledged). It restores its last durable checkpoint (a Restore
// action, after a checkpoint being written lands) and then waits for a
// hand-off (Restored(r, true)) or the wait's end (StopWaiting).
func (m *Machine) Resumed() {
	m.resumed, m.down = true, true
	m.backoff = time.Time{}
	m.releaseHeld(true)
	if !m.writing {
		m.ready.Restore = true
	}
}

// Resuming reports whether the fragment dropped its state after a pause
// and its restore has not happened yet: a hand-off waits for it.
func (m *Machine) Resuming() bool { return m.resumed }

// Attempts is how often the event failed so far (0 after it was skipped).
func (m *Machine) Attempts(ev flows.EventID) int { return m.attempts[ev] }

// Restored replaces the fragment's state by a checkpoint loaded from the
// store, after a Restore action (a failure), or a hand-off (handoff true).
// After a failure, input waits for the backoff, then every channel
// partition replays from the restored vector; after a hand-off at once;
// after Resumed, input waits for a hand-off.
func (m *Machine) Restored(r Restored, handoff bool) {
	own := m.epoch
	m.frag, m.vec = r.Fragment, r.Vector
	if m.cfg.Replicated && !m.cfg.Confirm {
		m.frag.LagReleases()
	}
	if m.cfg.Confirm && !r.Found {
		m.frag.Restored()
	}
	m.stale = false
	if m.sinkHeld { // the restore makes again what a sink refused
		m.sinkHeld, m.sinkAttempts, m.backoff = false, 0, time.Time{}
	}
	m.epoch = max(r.Manifest.Epoch, own) // epochs only grow: checkpoint waiters count on it
	m.unacked = m.unacked[:0]            // the restored fragment tells every fragment where it is
	for ev := range m.skips {
		m.frag.Skip(ev)
	}
	m.releaseHeld(true)
	if m.resumed && !handoff {
		m.resumed, m.down, m.waiting = false, false, true
		m.awaitAll()
		return
	}
	m.resumed = false
	m.startVerify()
	if handoff || !m.down {
		m.waiting, m.down = false, false
		m.replayAll()
		return
	}
	m.down = false
	if m.cfg.Backoff < 0 {
		m.replayAll()
		return
	}
	m.backoff = m.now.Add(m.cfg.Backoff * time.Duration(m.downAttempt))
	m.awaitAll()
}

// Start sends every fragment downstream where this one's outputs are (a
// restored fragment's, and they ask for what they lack): called once
// after NewMachine.
func (m *Machine) Start() {
	if m.waiting {
		return
	}
	if err := m.frag.Released(); err != nil { // what the restored checkpoint holds
		m.ready.Errors = append(m.ready.Errors, err)
	}
	m.sendOutputs()
}

// Replay asks every channel partition to send again from the fragment's
// vector: a fragment that starts on a node after a placement change
// restored a checkpoint that may be older than what its old owner was
// sent, and senders that reached their end would send nothing that shows
// the gap.
func (m *Machine) Replay() { m.replayAll() }

// StopWaiting ends the wait for a hand-off that did not come: the fragment
// goes on from its own state and asks every channel partition to replay.
func (m *Machine) StopWaiting() {
	if m.waiting && !m.stale {
		m.waiting = false
		m.startVerify()
		m.replayAll()
	}
}

// awaitAll drops every channel's gaps silently until the replay.
func (m *Machine) awaitAll() {
	for _, p := range m.inputs() {
		m.awaiting[p] = awaited{}
	}
}

// replayAll asks every channel partition to send again from the vector:
// whoever reads a source partition now, and the reader whose batch of it
// was dropped meanwhile, if any. That reader took the acknowledgement as
// delivery, so only a rewind makes it send those records again. The
// driver names the reader of the placement it applied last, which may be
// one about to stop: sim seed 12937 (with a cold start that gathered on
// a cluster's first placement) asked a reader that had read nothing for
// the fragment, and whose last, empty batch at the fragment's end, sent as
// it stopped, ended the wait. The new reader, which had sent the
// partition whole while the fragment waited, was never asked, and the
// fragment never applied that partition.
func (m *Machine) replayAll() {
	for _, p := range m.inputs() {
		m.rewind(p, nil, m.vec.End(p))
		if from, ok := m.dropped[p]; ok {
			m.ready.Rewinds = append(m.ready.Rewinds, Rewind{Part: p, To: m.vec.End(p), Ask: &from})
		}
	}
	clear(m.dropped)
}

// inputs is every channel partition.
func (m *Machine) inputs() []PartitionID {
	var out []PartitionID
	for ch, c := range m.plan.Channels() {
		for part := range c.Partitions {
			out = append(out, PartitionID{Source: ch, Partition: part})
		}
	}
	return out
}

// Tick moves the processing time: processing-time timers fire, a backoff
// that ended asks for the replay, and rewinds unanswered for
// RewindTimeout are asked again (of whoever has the partition now).
func (m *Machine) Tick(now time.Time) {
	m.now = now
	if (m.sinkHeld || !m.backoff.IsZero()) && !now.Before(m.backoff) {
		if !m.sinkHeld || m.retrySinks() {
			m.backoff = time.Time{}
			m.replayAll()
		}
	}
	for p, a := range m.awaiting {
		if a.repeat && now.Sub(a.at) >= m.cfg.RewindTimeout {
			m.ready.Reasked++
			m.rewind(p, nil, a.to)
		}
	}
	m.resendLost()
	if m.copying && now.Sub(m.copyAt) >= m.cfg.RewindTimeout {
		m.copyAt = now
		m.ready.Recopy = true
	}
	if m.stale && now.Sub(m.staleAt) >= m.cfg.RewindTimeout {
		m.staleAt = now
		m.ready.Fetch = true
	}
	if m.down || m.waiting || m.sinkHeld {
		return
	}
	dls, err := m.frag.Advance(now)
	if err != nil {
		m.holdSinks(err)
	}
	m.ready.DeadLetters = append(m.ready.DeadLetters, dls...)
	m.sendOutputs()
}

// Resend sends fragment dest its records of exchange channel ch again
// from from: it restored an older checkpoint. A fragment that is down
// answers nothing (what it holds may be a half-applied event's), nor does
// one that waits; once restored, or its wait over, it tells every
// fragment downstream where it is, and they ask again.
func (m *Machine) Resend(ch, dest int, from int64) {
	if m.down || m.waiting {
		// A waiting fragment's outputs are its own copy's, which the
		// hand-off or a gathered copy may replace, and which may not even
		// be durable (written, not yet synced, when the node was fenced):
		// sim seed 20409 sent a downstream fragment 60 records from such a
		// copy, lost in the crash that followed, and the fragment waited
		// for a newer copy for good. The downstream asks again after
		// RewindTimeout.
		return
	}
	base, sent := m.frag.Kept(ch, dest)
	if m.cfg.Confirm && from > sent && m.verifying[[2]int{ch, dest}] {
		// It applied more than this fragment sent since its restore: the
		// restored copy is stale (an answer at from would look like
		// agreement).
		m.goStale(sentBatch{ch: ch, dest: dest, end: sent}, from)
		return
	}
	if m.cfg.Confirm && from < base {
		// Its durable checkpoint covered these records; if it asks for them,
		// it restored an older copy (or the request is an old one): it
		// checks (Behind). Records from base on would leave a hole.
		m.ready.Behinds = append(m.ready.Behinds, Behind{Dest: dest, Ch: ch, Upto: base})
		return
	}
	if b := m.frag.Resend(ch, dest, from); b != nil {
		m.send(dest, b)
	}
}

// Trim forgets the records of exchange channel ch that fragment dest's
// durable checkpoint covers.
func (m *Machine) Trim(ch, dest int, upto int64) {
	m.frag.Trim(ch, dest, upto)
	m.releaseHeld(false)
}

// Checkpoint takes the next checkpoint, for the writer; nil when one is
// being written, checkpoints are broken, or the state is not sound (down,
// waiting for a hand-off). Durable says when it is durable.
func (m *Machine) Checkpoint() (*Checkpoint, error) {
	if m.copying {
		return nil, nil
	}
	return m.FinalCheckpoint()
}

// FinalCheckpoint is the checkpoint a fragment that is handed off takes
// last: with Confirm it does not wait for the standby's copy of the one
// before (nothing is released from it here; its new owner restores it and
// checks it as any copy). Neither takes one before the fragment's
// downstream fragments said where they are: a copy that may be stale must
// not outnumber the copies that are not.
func (m *Machine) FinalCheckpoint() (*Checkpoint, error) {
	if m.writing || m.broken != nil || m.down || m.sinkHeld || m.waiting || len(m.verifying) > 0 {
		return nil, nil
	}
	cp, err := Take(m.frag, &m.vec, m.plan.Fragments(), m.epoch+1, m.now)
	if err != nil {
		m.broken = err
		return nil, err
	}
	m.epoch++
	m.writing = true
	return cp, nil
}

// HandoffEpoch is the lineage a hand-off of the fragment is judged by
// (Confirm), when FinalCheckpoint took none because the fragment still
// verifies the copy it started from: the driver hands off its last
// durable checkpoint (none after an empty start), of an older lineage,
// and the new owner compares this epoch, not the checkpoint's, with its
// own copy. The lineage began: upstream fragments verified their own
// copies against its ends (From.End) and released against them. An
// older lineage's copy on the new owner may have applied an upstream
// lineage those fragments left since, and must not win over it: sim
// seed 6458 had a fragment that started empty on a joining node hand off
// "epoch 0", its new owner keep its own copy from before a pause, and
// apply its upstream's new lineage on top of what it had applied of the
// old one. The copy handed off is the lineage's start and all it exposed
// (outputs only what the copy holds, ends its vector), so the new owner
// goes on from it as from the lineage. It stores the copy under the
// copy's own epoch: should the copy prove stale there, a newer copy
// fetched from another node may still replace it. Zero when the
// fragment holds no lineage of its own: it waits, is stale, or is down
// (a failure or a pause: its last durable checkpoint is all there is).
func (m *Machine) HandoffEpoch() uint64 {
	if !m.cfg.Confirm || m.down || m.waiting || m.stale || m.resumed {
		return 0
	}
	return m.epoch
}

// Durable takes the writer's answer for the checkpoint being written.
// After a failure that waited for it, the restore follows; upstream
// fragments learn how far it covers their outputs.
func (m *Machine) Durable(offsets map[PartitionID]int64, err error) {
	m.writing = false
	if err != nil {
		// The changes taken for the failed checkpoint are gone from the
		// fragment's change set: a later incremental checkpoint would store
		// a state with holes. A failure that waited for this write still
		// restores (the last durable checkpoint is sound).
		m.broken = err
		if m.down {
			m.ready.Restore = true
		}
		return
	}
	if m.cfg.Confirm {
		m.copying, m.copyEpoch, m.copyOffsets, m.copyAt = true, m.epoch, offsets, m.now
		if m.down {
			m.ready.Restore = true
		}
		return
	}
	covered := offsets
	if m.cfg.Replicated {
		covered, m.lastDurable = m.lastDurable, offsets
	}
	for p, end := range covered {
		if m.plan.IsExchange(p.Source) {
			m.ready.Trims = append(m.ready.Trims, Trim{Part: p, Upto: end})
		}
	}
	m.ready.Commits = covered
	if m.down {
		m.ready.Restore = true
		return
	}
	if err := m.frag.Released(); err != nil {
		m.ready.Errors = append(m.ready.Errors, err)
	}
	m.sendOutputs()
}

func minInt64(a, b int64) int64 {
	if a < b {
		return a
	}
	return b
}
