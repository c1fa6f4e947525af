package flowcore

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/tessera-streams/tessera/splice"
)

// WindowedView is a view declared by WindowView: one value per event-time
// window, spliced over every fragment. Alert watches it.
type WindowedView[Out any] struct {
	f           *Flow
	name        string
	size, slide int64
	ok          bool
}

// Name is the view's name.
func (v WindowedView[Out]) Name() string { return v.name }

// WindowView declares a view of a windowed aggregate by window: for each
// window, alg folds extract(key, value) over every key's value of that
// window. Each fragment keeps its partial per window, and queries splice
// them window by window (GET /v1/views/{name}?window=latest, ?from=&to=).
// A window is queryable from its first event until retain after its end
// (by the watermark; when a bounded input ends, the windows retained then
// stay); while it is open its partial follows the keys' current values. Session windows have per-key bounds and have no such
// view.
//
// For instance, the number of distinct keys seen in each window:
//
//	flows.WindowView(w, "visitors", splice.Count[struct{}](), func(string, int64) struct{} { return struct{}{} }, time.Hour)
func WindowView[K comparable, T, A, In, P, Out any](w Windowed[K, T, A], name string, alg splice.Algebra[In, P, Out],
	extract func(K, A) In, retain time.Duration) WindowedView[Out] {
	f := w.f
	v := WindowedView[Out]{f: f, name: name, size: w.w.size, slide: w.w.slide}
	switch {
	case w.session:
		f.errorf("window view %q: session windows have per-key bounds: use Results() instead", name)
		return v
	case w.w.global:
		f.errorf("window view %q: a global window has no bounds: use an AggregateView of Results() instead", name)
		return v
	case alg == nil || extract == nil:
		f.errorf("window view %q: algebra and extract must not be nil", name)
		return v
	case retain < 0:
		f.errorf("window view %q: negative retention %v", name, retain)
		return v
	}
	pc, err := DefaultCodec[P]()
	if err != nil {
		f.errorf("window view %q: partials of %s: %v", name, alg.Name(), err)
		return v
	}
	op := f.addOp(w.in.stage, fmt.Sprintf("window view %q of operator %d, partials %s, algebra %s", name, w.op, typeName[P](), algebraDesc(alg)))
	f.fragW = append(f.fragW, func(fr *Fragment) {
		wo := fr.ops[w.op].(windowIndexed[K, A])
		vo := &winView[K, A, In, P, Out]{alg: alg, extract: extract, pc: pc, size: w.w.size, retain: int64(retain),
			closed: map[int64]P{}, dirty: map[int64]struct{}{}}
		fr.ops[op] = vo
		wo.addView(vo)
		wo.trackChanges(&fr.gen)
		vo.gen = &fr.gen
		fr.changes = append(fr.changes, winViewChanges[K, A, In, P, Out]{view: name, vo: vo, wo: wo})
	})
	spec := splice.Spec{Name: name, Kind: splice.Windowed, Algebra: alg.Name(),
		Splice: spliceParts(alg)}
	f.views = append(f.views, viewDef{spec: spec, stage: w.in.stage, parts: anyCodec(pc), query: func(fr *Fragment, req splice.Request) (splice.Answer, error) {
		if req.Op != splice.OpWindows {
			return splice.Answer{}, fmt.Errorf("%w: view %q is windowed: query it by window", splice.ErrBadRequest, name)
		}
		wo := fr.ops[w.op].(windowIndexed[K, A])
		vo := fr.ops[op].(*winView[K, A, In, P, Out])
		return vo.query(wo.openWindows(), req.Query), nil
	}})
	v.ok = true
	return v
}

// winView is a fragment's side of a WindowView: the partials of windows
// whose state is gone (closed), until the watermark passes their end by
// retain. Open windows' partials are folded from the window state when
// asked.
type winView[K comparable, A, In, P, Out any] struct {
	alg          splice.Algebra[In, P, Out]
	extract      func(K, A) In
	pc           Codec[P]
	size, retain int64
	closed       map[int64]P
	dirty        map[int64]struct{} // starts set or dropped since the last checkpoint
	horizon      int64              // the largest end of a dropped window
	horizonDirty bool
	// gen is the fragment's publish generation; closedAt, the generation
	// in which each closed window last took a key; dropped, the one in
	// which a window was last dropped (watches: winViewChanges).
	gen      *uint64
	closedAt map[int64]uint64
	dropped  uint64
}

func (v *winView[K, A, In, P, Out]) closeWindow(k K, start int64, acc A) {
	p, ok := v.closed[start]
	if !ok {
		p = v.alg.Zero()
	}
	v.closed[start] = v.alg.Add(p, v.extract(k, acc))
	v.dirty[start] = struct{}{}
	if v.gen != nil {
		if v.closedAt == nil {
			v.closedAt = map[int64]uint64{}
		}
		v.closedAt[start] = *v.gen
	}
}

// expire drops closed windows past retention whose alerts (if any) were
// evaluated (Fragment.SetHold).
func (v *winView[K, A, In, P, Out]) expire(fr *Fragment, wm int64) {
	if wm == NoWatermark || wm == math.MaxInt64 {
		return // nothing complete yet, or the input ended: keep the last windows
	}
	for s := range v.closed {
		if end := s + v.size; satAdd(end, v.retain) <= wm && end <= fr.hold {
			delete(v.closed, s)
			delete(v.closedAt, s)
			if v.gen != nil {
				v.dropped = *v.gen
			}
			v.dirty[s] = struct{}{}
			if end > v.horizon {
				v.horizon, v.horizonDirty = end, true
			}
		}
	}
}

func (v *winView[K, A, In, P, Out]) query(open openWindows[K, A], q splice.Query) splice.Answer {
	starts := v.starts(open, q)
	out := make([]splice.WindowPartial, len(starts))
	for i, s := range starts {
		out[i] = splice.WindowPartial{Start: s, End: s + v.size, Partial: v.fold(open, s)}
	}
	return splice.Answer{Windows: out, Horizon: v.horizon}
}

// starts lists the windows starting in [q.From, q.To), closed or open, in
// start order.
func (v *winView[K, A, In, P, Out]) starts(open openWindows[K, A], q splice.Query) []int64 {
	in := func(s int64) bool { return s >= q.From && q.Before(s) }
	var starts []int64
	for s := range v.closed {
		if in(s) {
			starts = append(starts, s)
		}
	}
	for _, s := range open.openStarts() {
		if _, ok := v.closed[s]; !ok && in(s) {
			starts = append(starts, s)
		}
	}
	slices.Sort(starts)
	return starts
}

// fold is window s's partial: its closed part and its open keys.
func (v *winView[K, A, In, P, Out]) fold(open openWindows[K, A], s int64) P {
	p, ok := v.closed[s]
	if ok {
		p = v.alg.Clone(p)
	} else {
		p = v.alg.Zero()
	}
	open.openEach(s, func(k K, a A) { p = v.alg.Add(p, v.extract(k, a)) })
	return p
}

// winViewChanges tells a watch which windows of a WindowView changed since
// a mark (splice.OpChanges): those in the query's range that took a key
// as they closed, or whose open state was stamped since, each with its
// partial; the others are left out. A window dropped since the mark asks
// for a reset (the watch would not know it left).
type winViewChanges[K comparable, A, In, P, Out any] struct {
	view string
	vo   *winView[K, A, In, P, Out]
	wo   windowIndexed[K, A]
}

func (c winViewChanges[K, A, In, P, Out]) viewName() string { return c.view }

func (c winViewChanges[K, A, In, P, Out]) changedSince(q splice.Query, since uint64, valid bool, now *splice.ChangeMark) splice.Answer {
	v := c.vo
	if !valid || since <= v.dropped {
		now.Reset = true
		return splice.Answer{Changes: now}
	}
	open := c.wo.openWindows()
	var out []splice.WindowPartial
	for _, s := range v.starts(open, q) {
		changed := false
		if at, ok := v.closedAt[s]; ok && at >= since {
			changed = true
		} else {
			open.openChanged(s, since, func(K, A) { changed = true })
		}
		if changed {
			out = append(out, splice.WindowPartial{Start: s, End: s + v.size, Partial: v.fold(open, s)})
		}
	}
	return splice.Answer{Windows: out, Horizon: v.horizon, Changes: now}
}

// Entries: key = start (8 bytes) → partial; key "h" → horizon.
func (v *winView[K, A, In, P, Out]) delta(ns uint16, d *Delta) error {
	for s := range v.dirty {
		key := binary.BigEndian.AppendUint64(nil, uint64(s))
		p, ok := v.closed[s]
		if !ok {
			d.Deletes = append(d.Deletes, StateEntry{Namespace: ns, Key: key})
			continue
		}
		val, err := v.pc.Append(nil, p)
		if err != nil {
			return fmt.Errorf("encode window partial: %w", err)
		}
		d.Puts = append(d.Puts, StateEntry{Namespace: ns, Key: key, Value: val})
	}
	clear(v.dirty)
	if v.horizonDirty {
		d.Puts = append(d.Puts, StateEntry{Namespace: ns, Key: []byte("h"), Value: binary.BigEndian.AppendUint64(nil, uint64(v.horizon))})
		v.horizonDirty = false
	}
	d.Entries += int64(len(v.closed))
	if v.horizon != 0 {
		d.Entries++
	}
	return nil
}

func (v *winView[K, A, In, P, Out]) restore(_ uint16, key, val []byte) error {
	if string(key) == "h" && len(val) == 8 {
		v.horizon = int64(binary.BigEndian.Uint64(val))
		return nil
	}
	if len(key) != 8 {
		return fmt.Errorf("window view entry with a %d-byte key", len(key))
	}
	p, err := v.pc.Decode(val)
	if err != nil {
		return fmt.Errorf("decode window partial: %w", err)
	}
	v.closed[int64(binary.BigEndian.Uint64(key))] = p
	return nil
}

// SetHold keeps windows of window views that end after t even past their
// retention: an engine holds the windows its alerts have not evaluated yet
// (Alerter.Hold). Default: no hold.
func (fr *Fragment) SetHold(t int64) { fr.hold = t }

// Alert raises an alert on a windowed view: for each complete window (every
// fragment's watermark passed its end), in window order, fire(previous,
// current) decides from the previous window's value and this one's. A
// window without any event has the algebra's zero value. For a rising edge
// over a threshold:
//
//	flows.Alert(v, "crowded", func(prev, cur int64) bool { return prev <= limit && cur > limit })
//
// Engines evaluate alerts on the spliced view and write each alert and the
// evaluation's progress in one durable step, so an alert is raised once
// per crossing across crashes and restarts (for windows whose values the
// replay reproduces: no allowed lateness, no events too late). In a
// cluster one node evaluates them and every node lists them, each once,
// across the failure of that node (see package actor).
func Alert[Out any](v WindowedView[Out], name string, fire func(prev, cur Out) bool) {
	f := v.f
	if f == nil {
		return
	}
	if !v.ok {
		return // WindowView reported why
	}
	if fire == nil {
		f.errorf("alert %q: fire must not be nil", name)
		return
	}
	oc, err := DefaultCodec[Out]()
	if err != nil {
		f.errorf("alert %q: values of view %q: %v", name, v.name, err)
		return
	}
	f.alerts = append(f.alerts, alertDef{name: name, view: v.name, size: v.size, slide: v.slide,
		fire:   func(prev, cur any) bool { return fire(prev.(Out), cur.(Out)) },
		encode: func(b []byte, x any) ([]byte, error) { return oc.Append(b, x.(Out)) },
		decode: func(b []byte) (any, error) { return oc.Decode(b) }})
}

type alertDef struct {
	name, view  string
	size, slide int64
	fire        func(prev, cur any) bool
	encode      func([]byte, any) ([]byte, error)
	decode      func([]byte) (any, error)
}

// AlertInfo describes a declared alert.
type AlertInfo struct {
	Name string `json:"name"`
	View string `json:"view"`
}

// Alerts lists the flow's alerts.
func (p *Plan) Alerts() []AlertInfo {
	out := make([]AlertInfo, len(p.f.alerts))
	for i, a := range p.f.alerts {
		out[i] = AlertInfo{Name: a.name, View: a.view}
	}
	return out
}

// AlertRecord is one raised alert.
type AlertRecord struct {
	Alert    string    `json:"alert"`
	View     string    `json:"view"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	Value    any       `json:"value"`
	Previous any       `json:"previous"`
	Raised   time.Time `json:"raised"` // processing time of the evaluation
}

// Alerter evaluates a flow's alerts over its spliced windowed views. It is
// pure: an engine drives it (Step), makes its records and states durable
// together, and restores the states after a restart.
type Alerter struct {
	defs []alertDef
	st   []alertState
	// Lost counts windows an alert could not evaluate because fragments
	// had dropped them (see Fragment.SetHold).
	Lost int64
}

type alertState struct {
	started bool  // a window was evaluated
	lastEnd int64 // the end of the last evaluated window
	prev    any   // its value
}

// NewAlerter returns an alerter that has evaluated nothing.
func (p *Plan) NewAlerter() *Alerter {
	return &Alerter{defs: p.f.alerts, st: make([]alertState, len(p.f.alerts))}
}

// Restore sets an alert's progress from its state (as Step returned it).
func (a *Alerter) Restore(name string, b []byte) error {
	for i, d := range a.defs {
		if d.name != name {
			continue
		}
		if len(b) < 9 {
			return fmt.Errorf("alert %q: state of %d bytes", name, len(b))
		}
		prev, err := d.decode(b[9:])
		if err != nil {
			return fmt.Errorf("alert %q: %w", name, err)
		}
		a.st[i] = alertState{started: b[0] == 1, lastEnd: int64(binary.BigEndian.Uint64(b[1:9])), prev: prev}
		return nil
	}
	return fmt.Errorf("alert %q is not declared by the flow (the flow changed?)", name)
}

// Hold is the end of the earliest window some alert has yet to evaluate
// past: fragments must keep windows ending after it (Fragment.SetHold).
func (a *Alerter) Hold() int64 {
	h := int64(math.MaxInt64)
	for _, s := range a.st {
		if !s.started {
			return math.MinInt64
		}
		h = min(h, s.lastEnd)
	}
	return h
}

// maxEmptyWindows bounds the empty windows an alert steps through between
// two windows with events; beyond it the gap counts as one empty window.
const maxEmptyWindows = 1 << 20

// Step evaluates every window completed since the last step, for every
// alert, and returns the alerts raised and the new states of the alerts
// that progressed (to write durably with the records).
func (a *Alerter) Step(ctx context.Context, g splice.Gatherer, now time.Time) (recs []AlertRecord, states map[string][]byte, err error) {
	for i, d := range a.defs {
		st := &a.st[i]
		q := splice.Query{From: math.MinInt64, Limit: math.MaxInt}
		if st.started {
			q.From = st.lastEnd - d.size + 1
		}
		res, err := splice.Evaluate(ctx, g, splice.Request{View: d.view, Op: splice.OpWindows, Query: q})
		if err != nil {
			return recs, states, fmt.Errorf("alert %q: %w", d.name, err)
		}
		if st.started && res.Horizon > st.lastEnd {
			a.Lost += (res.Horizon - st.lastEnd) / d.slide
		}
		zero := res.Spec.Splice(nil)
		progressed := false
		eval := func(start, end int64, v any) {
			if !st.started {
				st.prev = zero
			}
			if d.fire(st.prev, v) {
				recs = append(recs, AlertRecord{Alert: d.name, View: d.view, Start: time.Unix(0, start).UTC(),
					End: time.Unix(0, end).UTC(), Value: v, Previous: st.prev, Raised: now})
			}
			st.started, st.lastEnd, st.prev = true, end, v
			progressed = true
		}
		for _, w := range res.Windows {
			end := w.End.UnixNano()
			if !w.Complete {
				break
			}
			if st.started && end <= st.lastEnd {
				continue
			}
			if st.started {
				next := st.lastEnd + d.slide
				if (end-next)/d.slide > maxEmptyWindows {
					next = end - d.slide // one empty window stands for the gap
				}
				for ; next < end; next += d.slide {
					eval(next-d.size, next, zero)
				}
			}
			eval(w.Start.UnixNano(), end, w.Value)
		}
		if progressed {
			b := []byte{1}
			b = binary.BigEndian.AppendUint64(b, uint64(st.lastEnd))
			if b, err = d.encode(b, st.prev); err != nil {
				return recs, states, fmt.Errorf("alert %q: %w", d.name, err)
			}
			if states == nil {
				states = map[string][]byte{}
			}
			states[d.name] = b
		}
	}
	return recs, states, nil
}
