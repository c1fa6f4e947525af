package actor

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/tessera-streams/tessera/flows"
)

// maxAlertRecords is how many alert records an engine keeps in memory for
// queries; the store keeps them all.
const maxAlertRecords = 10_000

// alertLog is the engine's side of the flow's alerts: the evaluator, and
// the records raised so far.
type alertLog struct {
	alerter *flows.Alerter // nil: the flow declares no alert
	mu      sync.Mutex     // one evaluation at a time; guards the fields below
	records []json.RawMessage
	seq     uint64        // records written in all
	changed chan struct{} // closed and replaced when a record is added
	lost    int64
}

// loadAlerts restores the alerts' progress and records from the store.
func (e *Engine) loadAlerts() error {
	e.hold.Store(math.MaxInt64)
	if len(e.plan.Alerts()) == 0 {
		return nil
	}
	a := &e.alerts
	a.alerter = e.plan.NewAlerter()
	a.changed = make(chan struct{})
	states, recs, err := e.store.LoadAlerts(e.plan.Name())
	if err != nil {
		return err
	}
	for name, st := range states {
		if err := a.alerter.Restore(name, st); err != nil {
			return fmt.Errorf("restore alerts of %s: %w", e.plan.Name(), err)
		}
	}
	a.seq = uint64(len(recs))
	for _, r := range recs {
		a.records = append(a.records, json.RawMessage(r))
	}
	a.records = a.records[max(0, len(a.records)-maxAlertRecords):]
	e.hold.Store(a.alerter.Hold())
	return nil
}

func (e *Engine) alertLoop() {
	defer e.bg.Done()
	t := time.NewTicker(e.cfg.AlertInterval)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			e.stepAlerts()
		}
	}
}

// stepAlerts evaluates the windows completed since the last step, writes
// the alerts raised together with the progress in one synced batch, and
// only then announces them: an alert is raised once, crash or not.
func (e *Engine) stepAlerts() {
	a := &e.alerts
	if a.alerter == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.QueryTimeout)
	defer cancel()
	recs, states, err := a.alerter.Step(ctx, e, e.cfg.Now())
	if err != nil {
		// A fragment restoring after a failure cannot answer: try again at
		// the next step. Progress made before the error is kept in states.
		e.cfg.Logger.Debug("alert evaluation", "err", err)
	}
	if lost := a.alerter.Lost; lost > a.lost {
		e.cfg.Logger.Error("alert windows dropped before evaluation", "windows", lost-a.lost)
		a.lost = lost
	}
	if len(states) == 0 {
		return
	}
	raw := make([][]byte, len(recs))
	for i, r := range recs {
		if raw[i], err = json.Marshal(r); err != nil {
			e.fail(fmt.Errorf("encode alert %q: %w", r.Alert, err))
			return
		}
	}
	if err := e.store.WriteAlerts(e.plan.Name(), states, a.seq, raw); err != nil {
		// The evaluator moved past these windows in memory: stop rather
		// than skip alerts.
		e.fail(err)
		return
	}
	a.seq += uint64(len(raw))
	e.hold.Store(a.alerter.Hold())
	for i, r := range recs {
		e.cfg.Logger.Warn("alert", "alert", r.Alert, "view", r.View, "window_start", r.Start, "window_end", r.End,
			"value", r.Value, "previous", r.Previous)
		a.records = append(a.records, raw[i])
		if e.cfg.OnAlert != nil {
			e.cfg.OnAlert(r)
		}
	}
	if len(a.records) > maxAlertRecords {
		a.records = append([]json.RawMessage(nil), a.records[len(a.records)-maxAlertRecords:]...)
	}
	if len(recs) > 0 {
		close(a.changed)
		a.changed = make(chan struct{})
	}
}

// Alerts returns the alert records raised so far (the latest 10,000, as
// JSON, oldest first), how many were raised in all, how many windows were
// dropped before evaluation, and a channel closed when more are raised.
func (e *Engine) Alerts() (records []json.RawMessage, total uint64, lost int64, changed <-chan struct{}) {
	a := &e.alerts
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]json.RawMessage(nil), a.records...), a.seq, a.lost, a.changed
}
