package actor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	pa "github.com/asynkron/protoactor-go/actor"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/internal/wire"
	"github.com/tessera-streams/tessera/recovery"
)

// maxAlertRecords is how many alert records an engine keeps in memory for
// queries; the store keeps them all.
const maxAlertRecords = 10_000

// alertChunk bounds the records of one wire.AlertLog: gRPC refuses frames
// over 4 MB, and protoactor's endpoint writer sends several messages in
// one.
const alertChunk = 256 << 10

// alertLog is the engine's side of the flow's alerts: its copy of the
// alert log (recovery.AlertLog holds the rules; see doc.go), the latest
// records for queries, and in a cluster the addresses of the nodes it
// exchanges the log with.
type alertLog struct {
	evalMu   sync.Mutex         // one evaluation at a time
	mu       sync.Mutex         // guards the fields below
	m        *recovery.AlertLog // nil: the flow declares no alert
	records  []json.RawMessage  // the latest maxAlertRecords, oldest first
	seq      uint64             // records in the log
	changed  chan struct{}      // closed and replaced when records are added
	stopped  bool               // the engine stops, or a write failed: nothing more is written
	addrs    map[string]string  // remote address of each node, by name
	parts    map[string]*wire.AlertLog
	proposed []proposedAlert // the records of the step this node evaluated last
	pauses   uint64          // the pauses of the node the log has handled (pause.go)
}

// proposedAlert keeps a record this node raised as evaluated, so that
// OnAlert sees its value's own type rather than the JSON decoding of it.
type proposedAlert struct {
	raw []byte
	rec flows.AlertRecord
}

// loadAlerts restores the flow's alert log from the store: its version,
// the alerts' states, the records.
func (e *Engine) loadAlerts() error {
	e.hold.Store(math.MaxInt64)
	if len(e.plan.Alerts()) == 0 {
		return nil
	}
	a := &e.alerts
	a.changed = make(chan struct{})
	a.addrs, a.parts = map[string]string{}, map[string]*wire.AlertLog{}
	states, recs, err := e.store.LoadAlerts(e.plan.Name())
	if err != nil {
		return err
	}
	version, err := e.store.AlertVersion(e.plan.Name())
	if err != nil {
		return err
	}
	hold, err := e.alertHold(states)
	if err != nil {
		return err
	}
	a.seq = uint64(len(recs))
	for _, r := range recs[max(0, len(recs)-maxAlertRecords):] {
		a.records = append(a.records, json.RawMessage(r))
	}
	a.m = recovery.NewAlertLog(recovery.AlertLogConfig{Self: e.self, Cluster: e.cfg.Cluster != nil}, version, a.seq, states)
	if st, at, ok, err := e.store.PreparedAlert(e.plan.Name()); err != nil {
		return err
	} else if ok {
		a.m.RestorePrepared(st, at)
	}
	e.hold.Store(hold)
	return nil
}

// alerter is an evaluator of the flow's alerts at states.
func (e *Engine) alerter(states map[string][]byte) (*flowcore.Alerter, error) {
	al := e.plan.NewAlerter()
	for name, st := range states {
		if err := al.Restore(name, st); err != nil {
			return nil, fmt.Errorf("restore alerts of %s: %w", e.plan.Name(), err)
		}
	}
	return al, nil
}

// alertHold is how far the fragments must keep windows for the alerts at
// states (Fragment.SetHold).
func (e *Engine) alertHold(states map[string][]byte) (int64, error) {
	al, err := e.alerter(states)
	if err != nil {
		return 0, err
	}
	return al.Hold(), nil
}

// startAlerts spawns the actor that exchanges the alert log with the
// other nodes, and applies the first placement.
func (e *Engine) startAlerts(cl *ClusterConfig) error {
	if e.alerts.m == nil {
		return nil
	}
	if len(cl.Alerts) == 0 {
		return errors.New("the placement gives the flow's alerts no owner (ClusterConfig.Alerts)")
	}
	if _, err := e.sys.Root.SpawnNamed(pa.PropsFromProducer(func() pa.Actor { return &alertActor{e: e} }),
		e.plan.Name()+"/alerts"); err != nil {
		return fmt.Errorf("spawn alerts actor: %w", err)
	}
	e.placeAlerts(cl)
	return nil
}

// placeAlerts applies a placement to the alert log.
func (e *Engine) placeAlerts(cl *ClusterConfig) {
	a := &e.alerts
	if a.m == nil || len(cl.Alerts) == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped {
		return
	}
	var members, leaving []string
	for name, addr := range cl.Remotes {
		a.addrs[name] = addr
		members = append(members, name)
	}
	for name, addr := range cl.Leaving {
		a.addrs[name] = addr
		leaving = append(leaving, name)
	}
	slices.Sort(members)
	slices.Sort(leaving)
	standby := ""
	if len(cl.Alerts) > 1 {
		standby = cl.Alerts[1]
	}
	now := e.cfg.Now()
	a.m.Place(cl.Epoch, cl.Alerts[0], standby, members, leaving, now)
	a.m.Unfence(now) // Resume: the same placement again, after a fence
	e.carryAlerts()
}

// fenceAlerts stops the alerts with the fragments when the node loses its
// majority (Engine.Fence): no step is evaluated, committed or taken as a
// standby until it is placed again.
func (e *Engine) fenceAlerts() {
	e.withAlerts(func(a *alertLog) {
		a.m.Fence()
		a.proposed = nil
		e.carryAlerts()
	})
}

// withAlerts runs f with a.mu held, if the flow has alerts and the log
// still writes.
func (e *Engine) withAlerts(f func(a *alertLog)) {
	a := &e.alerts
	if a.m == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.stopped {
		f(a)
	}
}

// alertLoop drives the alert log: it ticks it (messages not answered go
// again) and, on its own goroutine, evaluates whenever it may, so that an
// evaluation waiting for a node that died does not hold the ticks up.
func (e *Engine) alertLoop() {
	defer e.bg.Done()
	eval := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-e.stop:
				return
			case <-eval:
				e.stepAlerts()
			}
		}
	}()
	defer wg.Wait()
	t := time.NewTicker(e.cfg.AlertInterval)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			e.tickAlerts()
			select {
			case eval <- struct{}{}:
			default: // an evaluation runs
			}
		}
	}
}

func (e *Engine) tickAlerts() {
	e.withAlerts(func(a *alertLog) {
		e.alertsCheckPause()
		a.m.Tick(e.cfg.Now())
		e.carryAlerts()
	})
}

// stepAlerts evaluates the windows completed since the last step, if this
// node owns the alerts, and hands the alerts raised with the progress to
// the log: on a single node (or without a standby) it writes them in one
// synced batch and only then announces them; in a cluster it first
// prepares them with its standby and a majority of the members. An alert
// is raised once, crash or not.
func (e *Engine) stepAlerts() {
	a := &e.alerts
	if a.m == nil {
		return
	}
	a.evalMu.Lock()
	defer a.evalMu.Unlock()
	a.mu.Lock()
	if a.stopped {
		a.mu.Unlock()
		return
	}
	base, states, ok := a.m.Evaluate()
	a.mu.Unlock()
	if !ok {
		return
	}
	al, err := e.alerter(states)
	if err != nil {
		e.fail(err)
		return
	}
	now := e.cfg.Now()
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.QueryTimeout)
	defer cancel()
	go func() {
		// Stopping: the fragments stop and answer no more.
		select {
		case <-e.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	recs, progressed, err := al.Step(ctx, liveGatherer{e}, now)
	if err != nil {
		// A fragment restoring after a failure cannot answer: try again at
		// the next step. Progress made before the error is kept.
		e.cfg.Logger.Debug("alert evaluation", "err", err)
	}
	if al.Lost > 0 {
		e.cfg.Logger.Error("alert windows dropped before evaluation", "windows", al.Lost)
	}
	if len(progressed) == 0 {
		return
	}
	raw := make([][]byte, len(recs))
	proposed := make([]proposedAlert, len(recs))
	for i, r := range recs {
		if raw[i], err = json.Marshal(r); err != nil {
			e.fail(fmt.Errorf("encode alert %q: %w", r.Alert, err))
			return
		}
		proposed[i] = proposedAlert{raw: raw[i], rec: r}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped {
		return
	}
	e.alertsCheckPause() // a step evaluated across a pause is dropped
	if a.m.Propose(base, raw, progressed, al.Lost, now) {
		a.proposed = proposed
	}
	e.carryAlerts()
}

// alertsCheckPause (a.mu held): after a pause of the node, an owner of the
// alerts drops the step it has not committed and catches up again before
// it evaluates or commits anything (recovery.AlertLog.Resumed).
func (e *Engine) alertsCheckPause() {
	a := &e.alerts
	if e.pause == nil || a.m == nil {
		return
	}
	n, gap := e.pause.Observe(time.Now())
	e.notePause(gap)
	if a.m.FollowPauses(n, &a.pauses, e.cfg.Now()) {
		e.carryAlerts()
	}
}

// pausedAlerts makes the alerts notice a pause of the node at once.
func (e *Engine) pausedAlerts() {
	e.withAlerts(func(*alertLog) { e.alertsCheckPause() })
}

// finalAlerts evaluates once more as a single node stops: its fragments
// took their final checkpoints. In a cluster the next owner goes on.
func (e *Engine) finalAlerts() {
	if e.cfg.Cluster == nil {
		e.stepAlerts()
	}
}

// stopAlerts ends the alert log's writes: the store closes next.
func (e *Engine) stopAlerts() {
	a := &e.alerts
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopped = true
}

// carryAlerts carries out what the alert log asks (a.mu held): writes, in
// order, each with its announcement; then messages.
func (e *Engine) carryAlerts() {
	a := &e.alerts
	rd := a.m.Ready()
	added := false
	for _, w := range rd.Writes {
		if w.Prepared {
			// Synced before the acknowledgement that follows it goes out.
			if err := e.store.WritePreparedAlert(e.plan.Name(), w.PreparedAt, w.AlertStep); err != nil {
				a.stopped = true
				e.fail(err)
				return
			}
			continue
		}
		if w.First != a.seq {
			a.stopped = true
			e.fail(fmt.Errorf("alerts of %s: a write from record %d on a log of %d", e.plan.Name(), w.First, a.seq))
			return
		}
		if err := e.store.WriteAlertLog(e.plan.Name(), w.Version, w.States, w.First, w.Records, w.Sync); err != nil {
			// The log moved past these windows in memory: stop rather than
			// skip alerts.
			a.stopped = true
			e.fail(err)
			return
		}
		for _, r := range w.Records {
			a.records = append(a.records, json.RawMessage(r))
		}
		a.seq += uint64(len(w.Records))
		added = added || len(w.Records) > 0
		if w.Announce {
			e.announce(w.Records)
		}
	}
	if len(rd.Writes) > 0 {
		if len(a.records) > maxAlertRecords {
			a.records = append([]json.RawMessage(nil), a.records[len(a.records)-maxAlertRecords:]...)
		}
		_, _, states := a.m.Version()
		if h, err := e.alertHold(states); err != nil {
			e.cfg.Logger.Error("alert states", "err", err)
		} else {
			e.hold.Store(h)
		}
	}
	if added {
		close(a.changed)
		a.changed = make(chan struct{})
	}
	for _, m := range rd.Sends {
		e.sendAlert(m)
	}
}

// announce logs the alerts this node raised and hands them to OnAlert.
func (e *Engine) announce(raw [][]byte) {
	a := &e.alerts
	for _, b := range raw {
		var r flows.AlertRecord
		if i := slices.IndexFunc(a.proposed, func(p proposedAlert) bool { return bytes.Equal(p.raw, b) }); i >= 0 {
			r = a.proposed[i].rec
		} else if err := json.Unmarshal(b, &r); err != nil {
			e.cfg.Logger.Error("decode an alert taken over", "err", err)
			continue
		}
		e.cfg.Logger.Warn("alert", "alert", r.Alert, "view", r.View, "window_start", r.Start, "window_end", r.End,
			"value", r.Value, "previous", r.Previous)
		if e.cfg.OnAlert != nil {
			e.cfg.OnAlert(r)
		}
	}
	a.proposed = nil
}

// logRecords reads records [from, to) of the log: the latest from memory,
// older ones from the store.
func (e *Engine) logRecords(from, to uint64) ([][]byte, error) {
	a := &e.alerts
	if from >= to {
		return nil, nil
	}
	if to > a.seq {
		return nil, fmt.Errorf("records up to %d of a log of %d", to, a.seq)
	}
	if first := a.seq - uint64(len(a.records)); from >= first {
		out := make([][]byte, 0, to-from)
		for _, r := range a.records[from-first : to-first] {
			out = append(out, r)
		}
		return out, nil
	}
	return e.store.AlertRecords(e.plan.Name(), from, to)
}

// sendAlert sends a message of the alert log to another node, in pieces
// if its records are large.
func (e *Engine) sendAlert(m recovery.AlertMsg) {
	a := &e.alerts
	addr, ok := a.addrs[m.To]
	if !ok {
		e.cfg.Logger.Debug("alert log message to an unknown node", "node", m.To)
		return
	}
	if m.Kind == recovery.AlertCommit || m.Kind == recovery.AlertAnswer {
		recs, err := e.logRecords(m.First, m.Total)
		if err != nil {
			e.cfg.Logger.Warn("read alert records for another node", "node", m.To, "err", err)
			return
		}
		m.Records = recs
	}
	pid := pa.NewPID(addr, e.plan.Name()+"/alerts")
	for _, w := range alertParts(m, e.plan.Name(), e.self, e.sys.Address()) {
		e.sys.Root.Send(pid, w)
	}
}

// alertParts encodes a message of the alert log from node self (at remote
// address replyTo) as wire messages of at most alertChunk bytes of records
// (or one record), all but the last marked More; the last carries Held.
func alertParts(m recovery.AlertMsg, flow, self, replyTo string) []*wire.AlertLog {
	var out []*wire.AlertLog
	recs, first := m.Records, m.First
	for {
		n, size := 0, 0
		for n < len(recs) && (n == 0 || size+len(recs[n]) <= alertChunk) {
			size += len(recs[n])
			n++
		}
		part := m.AlertStep
		part.First, part.Records = first, recs[:n:n]
		w := encodeAlertStep(&part, m.Total)
		w.Flow, w.Kind, w.Node, w.ReplyTo, w.Placement = flow, uint32(m.Kind), self, replyTo, m.Placement
		w.Prepared, w.PreparedAt, w.Fenced, w.NotYet, w.More = m.Prepared, m.PreparedAt, m.Fenced, m.NotYet, n < len(recs)
		if m.Held != nil && !w.More {
			w.Held = encodeAlertStep(m.Held, m.Held.Total())
		}
		out = append(out, w)
		if !w.More {
			return out
		}
		first += uint64(n)
		recs = recs[n:]
	}
}

func encodeAlertStep(st *recovery.AlertStep, total uint64) *wire.AlertLog {
	w := &wire.AlertLog{Version: st.Version, First: st.First, Total: total, Records: st.Records, Lost: st.Lost}
	for _, name := range slices.Sorted(maps.Keys(st.States)) {
		w.Names = append(w.Names, name)
		w.States = append(w.States, st.States[name])
	}
	return w
}

func decodeAlertStep(w *wire.AlertLog) (recovery.AlertStep, error) {
	if len(w.Names) != len(w.States) {
		return recovery.AlertStep{}, fmt.Errorf("%d alert names for %d states", len(w.Names), len(w.States))
	}
	st := recovery.AlertStep{Version: w.Version, First: w.First, Records: w.Records, Lost: w.Lost, States: map[string][]byte{}}
	for i, name := range w.Names {
		st.States[name] = w.States[i]
	}
	if st.Total() != w.Total && len(w.Records) > 0 {
		return recovery.AlertStep{}, fmt.Errorf("records [%d, %d) of a log of %d", w.First, st.Total(), w.Total)
	}
	return st, nil
}

// alertActor receives the alert log's messages from the other nodes.
type alertActor struct{ e *Engine }

func (x *alertActor) Receive(c pa.Context) {
	w, ok := c.Message().(*wire.AlertLog)
	if !ok {
		x.e.unknown(c.Message())
		return
	}
	x.e.receiveAlert(w)
}

func (e *Engine) receiveAlert(w *wire.AlertLog) {
	a := &e.alerts
	if w.Flow != e.plan.Name() || a.m == nil || w.Kind < uint32(recovery.AlertPrepare) || w.Kind > uint32(recovery.AlertAck) {
		e.malformed.Add(1)
		e.cfg.Logger.Warn("alert log message for another flow, or of an unknown kind", "flow", w.Flow, "kind", w.Kind, "from", w.Node)
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped {
		return
	}
	e.alertsCheckPause()
	if w.Node != "" && w.ReplyTo != "" {
		a.addrs[w.Node] = w.ReplyTo
	}
	if w = a.assemble(w); w == nil {
		return
	}
	st, err := decodeAlertStep(w)
	var held *recovery.AlertStep
	if err == nil && w.Held != nil {
		var h recovery.AlertStep
		h, err = decodeAlertStep(w.Held)
		held = &h
	}
	if err != nil {
		e.malformed.Add(1)
		e.cfg.Logger.Warn("malformed alert log message", "from", w.Node, "err", err)
		return
	}
	a.m.Receive(recovery.AlertMsg{Kind: recovery.AlertKind(w.Kind), From: w.Node, To: e.self, Placement: w.Placement,
		AlertStep: st, Total: w.Total, Prepared: w.Prepared, PreparedAt: w.PreparedAt, Fenced: w.Fenced, NotYet: w.NotYet,
		Held: held}, e.cfg.Now())
	e.carryAlerts()
}

// assemble joins a message sent in pieces: nil until its last piece. A
// piece that does not follow the ones held starts again (a lost piece
// shows as a gap to the log, which asks again). It takes the pieces over:
// the first grows into the message.
func (a *alertLog) assemble(w *wire.AlertLog) *wire.AlertLog {
	key := fmt.Sprint(w.Node, "/", w.Kind)
	buf := a.parts[key]
	follows := buf != nil && buf.Version == w.Version && buf.Total == w.Total && buf.Placement == w.Placement &&
		buf.First+uint64(len(buf.Records)) == w.First
	switch {
	case follows:
		buf.Records = append(buf.Records, w.Records...)
		buf.More, buf.Held = w.More, w.Held
	case w.More:
		a.parts[key] = w
		return nil
	default:
		delete(a.parts, key)
		return w
	}
	if buf.More {
		return nil
	}
	delete(a.parts, key)
	return buf
}

// Alerts returns the alert records raised so far (the latest 10,000, as
// JSON, oldest first), how many were raised in all, how many windows were
// dropped before evaluation, and a channel closed when more are raised.
// In a cluster they are this node's copy of the cluster's alert log: every
// node answers with the same records, each once (a copy may lag the
// owner's by a message).
func (e *Engine) Alerts() (records []json.RawMessage, total uint64, lost int64, changed <-chan struct{}) {
	a := &e.alerts
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		return nil, 0, 0, nil
	}
	return append([]json.RawMessage(nil), a.records...), a.seq, a.m.Lost(), a.changed
}

// AlertOwner is the node that evaluates the flow's alerts in the placement
// this node applied ("" on a single node, or without alerts).
func (e *Engine) AlertOwner() string {
	a := &e.alerts
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		return ""
	}
	return a.m.Owner()
}
