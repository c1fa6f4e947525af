package recovery

import (
	"maps"
	"slices"
	"time"
)

// AlertLog is the rules of a flow's alert log in a cluster, as a state
// machine: one node, the owner of the flow's alerts, evaluates them and
// appends each evaluation step (the alerts raised and every alert's new
// state) to a log that every node holds a copy of. Like Machine it does no
// I/O, starts no goroutine and reads no clock: it is driven by calls
// (Place, Evaluate and Propose, Receive, Tick) and answers with actions
// (Ready): writes to carry out in order, then messages to send.
//
// The log is a sequence of steps, numbered by its version (steps
// committed); records are numbered from 0 across steps. Its rules:
//
//   - prepare, then commit: the owner sends each step it evaluated to
//     every other member, which stores it, synced, as the step it holds
//     prepared (a write with Prepared) and acknowledges; once its standby
//     and, with the owner, a majority of the placement's members hold it
//     (shard.Majority: in a cluster of three, the standby is enough) the
//     owner writes it, synced, and announces it (a step is committed once
//     the owner wrote it); then it sends the step to every other node,
//     which appends it to its copy. A node's copy is therefore always a
//     prefix of the committed log, and a committed step is on the disks
//     of the owner, its standby and a majority (prepared or appended),
//     and outlives their restarts (RestorePrepared);
//   - a new owner catches up before it evaluates: it asks every other
//     node of its placement for what it holds (sync) and waits for every
//     answer; it appends the longest log it is answered, then a prepared
//     step that extends it (its dead predecessor may have committed and
//     announced it: it is taken over, never evaluated again). A node
//     answers only once it has applied the asker's placement, and from
//     then on fences prepares and commits of an older placement or of
//     another owner: the old owner can no longer commit anything the new
//     one would not see;
//   - an owner that loses ownership, or sees the placement change, drops
//     the step it has not committed (the next owner evaluates those
//     windows again, from the committed state) and catches up again if it
//     owns the alerts in the new placement;
//   - a node cut off from the majority of its cluster is fenced (Fence)
//     before the majority places the alerts elsewhere: as owner it drops
//     the step it has not committed and evaluates nothing, as standby it
//     refuses prepares, until it applies a placement again. Without it, an
//     owner cut off together with its standby (two of five nodes) could
//     commit a step the new owner on the other side evaluates again. The
//     fence comes only when their lease runs out, and until then the
//     majority rule of the commit keeps them from committing: the other
//     side holds every step committed (the simulation in alertlog_test.go
//     cuts the two off at any point and fences them later; with the
//     standby's copy alone, seed 15 raised a crossing twice);
//   - a node whose copy is behind (a lost message, a new node) is sent the
//     records it lacks with the states at the owner's version; messages
//     not acknowledged are sent again after Retry.
//
// A crossing is thus raised exactly once as long as one of the owner and
// its standby survives a placement change (the fragments' checkpoints
// make the same assumption, with Replicas = 2); see actor/doc.go for
// what happens when the owner dies at each point of a step.
type AlertLog struct {
	cfg AlertLogConfig

	// The placement: its epoch, the owner of the alerts, its standby,
	// the other members (every one must answer a catch-up) and the
	// members leaving (asked, not waited for).
	epoch          uint64
	owner, standby string
	members        []string
	leaving        []string

	// The committed log this node holds.
	version, total uint64
	states         map[string][]byte
	lost           int64

	// Owner: caught up in this placement; the catch-up's answers and the
	// best prepared step seen; the step waiting for the standby; what
	// each other node holds.
	ready       bool
	answered    map[string]bool
	syncAt      time.Time
	held        *AlertStep
	heldAt      uint64 // the placement epoch held was prepared under
	pending     *AlertStep
	pendingAt   time.Time
	pendingWait time.Duration // before the prepare is sent again
	// holders: the members that hold the pending step prepared, by its
	// version. It is committed once its standby and a majority of the
	// placement's members do (Known, with the owner).
	holders Known
	peers   map[string]*alertPeer

	// Standby: the step the owner prepared with this node, and the
	// owner's placement epoch then.
	prepared   *AlertStep
	preparedAt uint64

	// fenced: the node lost the majority of its cluster (Fence) and
	// neither evaluates, commits nor takes a prepared step until it
	// applies a placement again (Place, Unfence).
	fenced bool

	rd AlertReady
}

// AlertLogConfig configures an AlertLog.
type AlertLogConfig struct {
	Self string
	// Cluster: the log is replicated (Place gives the owner); otherwise
	// this node owns the alerts and commits each step at once.
	Cluster bool
	// Retry: what is not answered is sent again after Retry, then after
	// twice as long each time, up to 32 × Retry; default 300ms.
	Retry time.Duration
}

// AlertStep is a piece of the alert log: the records numbered from First
// (in a step the owner evaluated, the ones it raised), and every alert's
// state at Version.
type AlertStep struct {
	Version uint64 // steps committed, this one included
	First   uint64 // the number of Records[0]
	Records [][]byte
	States  map[string][]byte
	Lost    int64 // windows dropped before their evaluation, in all
}

// Total is the number of records in the log after the step.
func (s *AlertStep) Total() uint64 { return s.First + uint64(len(s.Records)) }

// AlertKind is what an AlertMsg is.
type AlertKind uint8

// The kinds of AlertMsg.
const (
	AlertPrepare AlertKind = iota + 1 // owner → every member: hold this step
	AlertCommit                       // owner → any node: the log up to Version
	AlertSync                         // new owner → every node: what do you hold?
	AlertAnswer                       // node → new owner: what it holds
	AlertAck                          // node → owner: what it holds now
)

// AlertMsg is a message between two nodes' AlertLogs.
//
// Prepare carries the step; Commit and Answer the sender's log after
// Version: its records from First up to Total (AlertLog leaves Records out
// of the messages it sends: the node sending them reads them from its copy
// of the log) and its states; Sync and Ack the sender's Version and Total.
type AlertMsg struct {
	Kind      AlertKind
	From, To  string
	Placement uint64 // the sender's placement epoch
	AlertStep
	Total uint64
	// Ack: the version of the step the sender holds prepared (0: none),
	// and the placement epoch of its Prepare: an owner drops its step at
	// a placement change and may prepare another of the same version.
	Prepared, PreparedAt uint64
	Fenced               bool       // Ack, Answer: refused; the sender is at a newer placement or has another owner
	NotYet               bool       // Answer: the sender has not applied the asker's placement yet: ask again
	Held                 *AlertStep // Answer: the step the sender holds prepared, and PreparedAt
}

// AlertWrite appends records (numbered from First, which is the number of
// records written before) and sets the states and version, in one batch.
// With Prepared it is instead the step this node holds prepared for the
// owner, under placement PreparedAt: stored, synced, in place of the one
// before (Store.WritePreparedAlert), and not part of the log.
type AlertWrite struct {
	AlertStep
	Sync bool // the commit point: synced before anything that follows
	// Announce: the records are raised by this node now (log them, call
	// the engine's OnAlert); otherwise they were raised elsewhere.
	Announce   bool
	Prepared   bool
	PreparedAt uint64
}

// AlertReady is what an AlertLog asks of its node: writes, in order, then
// messages to send.
type AlertReady struct {
	Writes []AlertWrite
	Sends  []AlertMsg
}

type alertPeer struct {
	version, total uint64
	known          bool // heard from in this placement
	sentAt         time.Time
	wait           time.Duration // before it is sent the log again
}

// backoff doubles a wait, from Retry up to 32 × Retry.
func (l *AlertLog) backoff(d time.Duration) time.Duration {
	return min(max(2*d, l.cfg.Retry), 32*l.cfg.Retry)
}

// NewAlertLog starts an alert log from what the node's store holds.
func NewAlertLog(cfg AlertLogConfig, version, total uint64, states map[string][]byte) *AlertLog {
	if cfg.Retry <= 0 {
		cfg.Retry = 300 * time.Millisecond
	}
	l := &AlertLog{cfg: cfg, version: version, total: total, states: maps.Clone(states), peers: map[string]*alertPeer{}}
	if l.states == nil {
		l.states = map[string][]byte{}
	}
	if !cfg.Cluster {
		l.owner, l.ready = cfg.Self, true
	}
	return l
}

// RestorePrepared takes back the step this node held prepared when it
// stopped (Store.PreparedAlert), prepared under placement at: the owner
// may have committed it counting this node, and a new owner's catch-up
// must find it here. One the log already holds is dropped.
func (l *AlertLog) RestorePrepared(st AlertStep, at uint64) {
	if l.cfg.Cluster && st.Version > l.version {
		l.prepared, l.preparedAt = &st, at
	}
}

// Prepared is the step this node holds prepared for the owner, and the
// placement it was prepared under (nil: none).
func (l *AlertLog) Prepared() (*AlertStep, uint64) { return l.prepared, l.preparedAt }

// Ready returns the actions accumulated since the last call.
func (l *AlertLog) Ready() AlertReady {
	rd := l.rd
	l.rd = AlertReady{}
	return rd
}

// Version is the version and the number of records of the committed log
// this node holds, and every alert's state at that version.
func (l *AlertLog) Version() (version, total uint64, states map[string][]byte) {
	return l.version, l.total, l.states
}

// Lost is how many windows were dropped before their evaluation.
func (l *AlertLog) Lost() int64 { return l.lost }

// Owner is the owner of the alerts in the placement this node applied.
func (l *AlertLog) Owner() string { return l.owner }

// Place applies a placement of a newer epoch: the owner of the alerts,
// its standby ("" for none), the other members and the members leaving.
func (l *AlertLog) Place(epoch uint64, owner, standby string, members, leaving []string, now time.Time) {
	if !l.cfg.Cluster || epoch <= l.epoch {
		return
	}
	l.epoch, l.owner, l.standby, l.fenced = epoch, owner, standby, false
	l.members = slices.DeleteFunc(slices.Clone(members), func(m string) bool { return m == l.cfg.Self })
	l.leaving = slices.DeleteFunc(slices.Clone(leaving), func(m string) bool { return m == l.cfg.Self })
	l.pending, l.ready, l.answered, l.held = nil, false, nil, nil
	l.peers = map[string]*alertPeer{}
	if owner != l.cfg.Self {
		return
	}
	l.answered = map[string]bool{}
	l.held, l.heldAt = l.prepared, l.preparedAt
	l.sendSyncs(now)
	l.maybeReady(now)
}

// Resumed: this node was paused (or declared dead) long enough for the
// others to move the alerts elsewhere and back, under placements it never
// saw. An owner drops the step it has not committed and catches up again,
// as at a placement change: it evaluates nothing until every node of its
// placement answered, and a node at a newer placement refuses it until
// this node applies that placement too.
func (l *AlertLog) Resumed(now time.Time) {
	if !l.cfg.Cluster || l.owner != l.cfg.Self || l.fenced {
		return
	}
	l.pending, l.ready = nil, false
	l.answered = map[string]bool{}
	l.held, l.heldAt = l.prepared, l.preparedAt
	l.peers = map[string]*alertPeer{}
	l.sendSyncs(now)
	l.maybeReady(now)
}

// Fence: this node no longer hears a majority of its cluster, which will
// place the alerts without it. It stops at once: as owner it drops the
// step it has not committed and evaluates nothing; as standby it refuses
// the prepares of any owner. It still appends commits (they are
// committed) and answers catch-ups. A placement of a newer epoch (Place)
// or the same one again (Unfence) ends the fence.
func (l *AlertLog) Fence() {
	if !l.cfg.Cluster {
		return
	}
	l.fenced = true
	l.pending, l.ready, l.answered, l.held = nil, false, nil, nil
}

// Unfence: the node hears a majority again and the cluster placed nothing
// new meanwhile, so it applies the same placement again. As owner it
// catches up again before it evaluates, as after a pause (Resumed).
func (l *AlertLog) Unfence(now time.Time) {
	if !l.fenced {
		return
	}
	l.fenced = false
	l.Resumed(now)
}

// Fenced reports whether the node is fenced.
func (l *AlertLog) Fenced() bool { return l.fenced }

// Evaluate reports whether this node may evaluate a step now (it owns the
// alerts, caught up, and has no step waiting for its standby), and from
// which version and states.
func (l *AlertLog) Evaluate() (version uint64, states map[string][]byte, ok bool) {
	if l.owner != l.cfg.Self || !l.ready || l.pending != nil || l.fenced {
		return 0, nil, false
	}
	return l.version, maps.Clone(l.states), true
}

// Propose hands the log a step evaluated from version base: the records
// raised, the states of the alerts that progressed, and the windows found
// dropped. It is dropped (false) if the log moved on meanwhile.
func (l *AlertLog) Propose(base uint64, records [][]byte, progressed map[string][]byte, lost int64, now time.Time) bool {
	if _, _, ok := l.Evaluate(); !ok || base != l.version {
		return false
	}
	states := maps.Clone(l.states)
	maps.Copy(states, progressed)
	st := AlertStep{Version: l.version + 1, First: l.total, Records: records, States: states, Lost: l.lost + lost}
	if l.standby == "" {
		l.commit(st, true, now)
		return true
	}
	l.pending, l.pendingWait, l.holders = &st, 0, Known{l.cfg.Self: st.Version}
	l.sendPrepare(now)
	return true
}

// Tick sends again what was not answered.
func (l *AlertLog) Tick(now time.Time) {
	if l.owner != l.cfg.Self || !l.cfg.Cluster || l.fenced {
		return
	}
	if !l.ready {
		if now.Sub(l.syncAt) >= l.cfg.Retry {
			l.sendSyncs(now)
		}
		return
	}
	if l.pending != nil && now.Sub(l.pendingAt) >= l.pendingWait {
		l.sendPrepare(now)
	}
	for _, m := range l.members {
		if p := l.peers[m]; p != nil && p.known && p.version < l.version && now.Sub(p.sentAt) >= p.wait {
			l.sendCommit(m, now)
		}
	}
}

// Receive handles a message from another node.
func (l *AlertLog) Receive(m AlertMsg, now time.Time) {
	if !l.cfg.Cluster {
		return
	}
	switch m.Kind {
	case AlertPrepare:
		l.onPrepare(m)
	case AlertCommit:
		l.onCommit(m)
	case AlertSync:
		l.onSync(m)
	case AlertAnswer:
		l.onAnswer(m, now)
	case AlertAck:
		l.onAck(m, now)
	}
}

// stale: m comes from an older placement, or from a node that is not the
// owner in this one.
func (l *AlertLog) stale(m AlertMsg) bool {
	return m.Placement < l.epoch || (m.Placement == l.epoch && m.From != l.owner)
}

func (l *AlertLog) ack(to string) AlertMsg {
	a := AlertMsg{Kind: AlertAck, From: l.cfg.Self, To: to, Placement: l.epoch, Total: l.total}
	a.Version = l.version
	if l.prepared != nil {
		a.Prepared, a.PreparedAt = l.prepared.Version, l.preparedAt
	}
	return a
}

func (l *AlertLog) onPrepare(m AlertMsg) {
	if l.fenced || l.stale(m) {
		a := l.ack(m.From)
		a.Fenced = true
		l.send(a)
		return
	}
	if m.Version == l.version+1 && m.First == l.total &&
		(l.prepared == nil || l.prepared.Version != m.Version || l.preparedAt != m.Placement) {
		st := m.AlertStep
		l.prepared, l.preparedAt = &st, m.Placement
		l.rd.Writes = append(l.rd.Writes, AlertWrite{AlertStep: st, Sync: true, Prepared: true, PreparedAt: m.Placement})
	}
	l.send(l.ack(m.From))
}

func (l *AlertLog) onCommit(m AlertMsg) {
	if l.stale(m) {
		a := l.ack(m.From)
		a.Fenced = true
		l.send(a)
		return
	}
	l.extend(m.AlertStep, m.Total, false)
	l.send(l.ack(m.From))
}

// extend appends st (the log up to total) if it is newer than this copy
// and reaches it.
func (l *AlertLog) extend(st AlertStep, total uint64, owner bool) bool {
	if st.Version <= l.version || st.First > l.total || total < l.total || st.Total() != total {
		return false
	}
	w := AlertWrite{AlertStep: AlertStep{Version: st.Version, First: l.total, Records: st.Records[l.total-st.First:],
		States: maps.Clone(st.States), Lost: max(l.lost, st.Lost)}, Sync: owner}
	l.rd.Writes = append(l.rd.Writes, w)
	l.version, l.total, l.states, l.lost = st.Version, total, w.States, w.Lost
	if l.prepared != nil && l.prepared.Version <= l.version {
		l.prepared = nil
	}
	if l.pending != nil && l.pending.Version <= l.version {
		l.pending = nil
	}
	return true
}

func (l *AlertLog) onSync(m AlertMsg) {
	a := AlertMsg{Kind: AlertAnswer, From: l.cfg.Self, To: m.From, Placement: l.epoch, Total: l.total}
	a.Version, a.First = l.version, l.total
	switch {
	case m.Placement > l.epoch:
		a.NotYet = true
	case m.Placement < l.epoch || m.From != l.owner:
		a.Fenced = true
	default:
		if l.version > m.Version && m.Total <= l.total {
			a.First = m.Total
		}
		a.States, a.Lost = l.states, l.lost
		a.Held, a.PreparedAt = l.prepared, l.preparedAt
	}
	l.send(a)
}

func (l *AlertLog) onAnswer(m AlertMsg, now time.Time) {
	if l.owner != l.cfg.Self || l.ready || l.answered == nil || m.Placement != l.epoch || m.NotYet || m.Fenced {
		return
	}
	l.answered[m.From] = true
	l.peers[m.From] = &alertPeer{version: m.Version, total: m.Total, known: true}
	l.extend(m.AlertStep, m.Total, true)
	// Of two steps prepared with the same version, only the one prepared
	// under the newer placement may have been committed: an owner drops
	// its step at a placement change, and prepares it again.
	if h := m.Held; h != nil && (l.held == nil || h.Version > l.held.Version ||
		(h.Version == l.held.Version && m.PreparedAt > l.heldAt)) {
		l.held, l.heldAt = h, m.PreparedAt
	}
	l.maybeReady(now)
}

// maybeReady ends the catch-up once every member answered: a prepared
// step that extends the log is committed (its owner may have announced it
// before it died), and the other nodes are sent what they lack.
func (l *AlertLog) maybeReady(now time.Time) {
	for _, m := range l.members {
		if !l.answered[m] {
			return
		}
	}
	l.ready = true
	h := l.held
	l.answered, l.held = nil, nil
	if h != nil && h.Version == l.version+1 && h.First == l.total {
		l.commit(*h, true, now)
		return
	}
	l.pushAll(now)
}

func (l *AlertLog) onAck(m AlertMsg, now time.Time) {
	if l.owner != l.cfg.Self || m.Fenced {
		return
	}
	p := l.peer(m.From)
	behind := m.Version < l.version
	if m.Version > p.version || !p.known {
		p.wait = 0 // it progressed: the next message to it goes at once
	}
	p.version, p.total, p.known = m.Version, m.Total, true
	if pd := l.pending; pd != nil && m.Prepared == pd.Version && m.PreparedAt == l.epoch {
		l.holders.Note(m.From, pd.Version)
		if l.committable() {
			l.pending = nil
			l.commit(*pd, true, now)
			return
		}
	}
	// A node behind is sent what it lacks, backing off while it does not
	// progress: every message is acknowledged, and the acknowledgements
	// of messages sent before it caught up must not each send it the log
	// again (nor a connection that stalls pile copies up).
	if l.ready && behind && now.Sub(p.sentAt) >= p.wait {
		l.sendCommit(m.From, now)
		if l.pending != nil && l.holders[m.From] < l.pending.Version {
			l.prepareAt(m.From) // it can take the step once it caught up
		}
	}
}

// commit writes a step as the owner, then sends it to the others.
func (l *AlertLog) commit(st AlertStep, announce bool, now time.Time) {
	if !l.extend(st, st.Total(), true) {
		return
	}
	l.rd.Writes[len(l.rd.Writes)-1].Announce = announce
	l.pushAll(now)
}

func (l *AlertLog) peer(name string) *alertPeer {
	p := l.peers[name]
	if p == nil {
		p = &alertPeer{}
		l.peers[name] = p
	}
	return p
}

// pushAll sends every node known to be behind what it lacks.
func (l *AlertLog) pushAll(now time.Time) {
	for _, m := range l.members {
		if p := l.peers[m]; p != nil && p.known && p.version < l.version {
			l.sendCommit(m, now)
		}
	}
}

func (l *AlertLog) sendCommit(to string, now time.Time) {
	p := l.peer(to)
	c := AlertMsg{Kind: AlertCommit, From: l.cfg.Self, To: to, Placement: l.epoch, Total: l.total}
	c.Version, c.First, c.States, c.Lost = l.version, min(p.total, l.total), l.states, l.lost
	p.sentAt, p.wait = now, l.backoff(p.wait)
	l.send(c)
}

// committable reports whether the pending step may be committed: its standby
// holds it, and with the owner a majority of the placement's members.
// The standby's copy alone was not enough: an owner cut off together with
// its standby (two of five) goes on until its lease runs out, and a step
// it committed meanwhile no node on the other side holds, whose new owner
// would evaluate it again.
func (l *AlertLog) committable() bool {
	v := l.pending.Version
	return l.holders[l.standby] >= v && l.holders.Enough(append(slices.Clone(l.members), l.cfg.Self), v)
}

// sendPrepare sends the pending step to every member that does not hold
// it yet.
func (l *AlertLog) sendPrepare(now time.Time) {
	l.pendingAt, l.pendingWait = now, l.backoff(l.pendingWait)
	for _, m := range l.holders.Lacking(l.members, l.pending.Version) {
		l.prepareAt(m)
	}
}

func (l *AlertLog) prepareAt(to string) {
	p := AlertMsg{Kind: AlertPrepare, From: l.cfg.Self, To: to, Placement: l.epoch, AlertStep: *l.pending}
	p.Total = l.pending.Total()
	l.send(p)
}

func (l *AlertLog) sendSyncs(now time.Time) {
	l.syncAt = now
	for _, m := range append(slices.Clone(l.members), l.leaving...) {
		if l.answered[m] {
			continue
		}
		s := AlertMsg{Kind: AlertSync, From: l.cfg.Self, To: m, Placement: l.epoch, Total: l.total}
		s.Version = l.version
		l.send(s)
	}
}

func (l *AlertLog) send(m AlertMsg) { l.rd.Sends = append(l.rd.Sends, m) }
