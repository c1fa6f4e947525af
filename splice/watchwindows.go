package splice

import (
	"fmt"
	"slices"
	"time"
)

// A windowed keyed view's watch group (window ranges, not window=latest
// nor after=) keeps each window of its answer as its own page or top set,
// before the page is cut to one range of keys over every window (cutPage):
// the fragments answer a changes request with every window in the range,
// its number of keys, and the entries of the keys stamped since the
// group's marks; the group applies them to each window as a keyed view's
// watch does (applyPage, applyTop: an entry of an open window only ever
// changes value, so neither needs a key it has not seen), takes in new
// windows whole (all their keys are stamped after the mark), drops windows
// no fragment lists any more, and cuts a copy of the result. A fragment
// that dropped a window since the mark, restored, shows entries
// conditionally (PublishIf) or changed too much answers Reset: the group
// evaluates the whole view.
//
// For an hourly origin→destination matrix watched live, a fragment's work
// per interval is one comparison per key of its open windows and the
// entries of the pairs that saw trips, where evaluating the view would
// sort or rank every pair of every window and send each window's page.

// keyedWindowsDelta is a windowed keyed view's next update from the
// fragments' answers to a changes request.
func (h *watchHub) keyedWindowsDelta(g *watchGroup, spec Spec, d *deltaWatch, ans []Answer) *watchUpdate {
	marks, reset, err := takeMarks(ans)
	if err != nil {
		d.have = false
		return &watchUpdate{err: err}
	}
	q := g.key.req.Query
	if q.Limit <= 0 {
		q.Limit = DefaultLimit
	}
	var u *watchUpdate
	if d.have && !reset {
		u = d.applyWindows(spec, q, ans)
	}
	if u == nil {
		// Whole, as of no earlier than the marks just taken.
		res, err := evaluateKeyedWindowsUncut(g.ctx, h.g, spec, g.key.req)
		if err != nil {
			d.have = false
			return &watchUpdate{err: err}
		}
		d.wins = res.KeyedWindows
		cut := res
		cut.KeyedWindows = slices.Clone(res.KeyedWindows)
		if q.Top <= 0 {
			cutPage(&cut, spec.Compare)
		}
		cut.Cut = Cut{Consistency: Latest, Offsets: LowerCut(cut.Freshness)}
		u = &watchUpdate{res: cut, snap: snapshot(cut)}
	}
	d.marks, d.have, d.res, d.snap = marks, true, u.res, u.snap
	return u
}

// takeMarks is every answer's mark by fragment, and whether one asked
// for a reset (or has no mark).
func takeMarks(ans []Answer) ([]ChangeMark, bool, error) {
	marks := make([]ChangeMark, len(ans))
	reset := false
	for _, a := range ans {
		f := a.Freshness.Fragment
		if f < 0 || f >= 1<<20 {
			return nil, false, fmt.Errorf("an answer of fragment %d", f)
		}
		if f >= len(marks) {
			marks = append(marks, make([]ChangeMark, f+1-len(marks))...)
		}
		if a.Changes == nil || a.Changes.Reset {
			reset = true
		}
		if a.Changes != nil {
			marks[f] = ChangeMark{Instance: a.Changes.Instance, Gen: a.Changes.Gen}
		}
	}
	return marks, reset, nil
}

// applyWindows takes the fragments' changed entries into the windows d
// holds; nil when it cannot tell the answer exactly.
func (d *deltaWatch) applyWindows(spec Spec, q Query, ans []Answer) *watchUpdate {
	res := Result{Spec: spec}
	wm := completeUpTo(ans)
	parts, starts := gatherKeyedWindows(ans, &res)
	held := make(map[int64]*KeyedWindow, len(d.wins))
	for i := range d.wins {
		held[d.wins[i].Start.UnixNano()] = &d.wins[i]
	}
	wins := make([]KeyedWindow, len(starts))
	for i, s := range starts {
		p := parts[s]
		var old []Entry
		more := false
		if w := held[s]; w != nil {
			old, more = w.Entries, w.More
		}
		var changed []Entry
		for _, l := range p.lists {
			changed = append(changed, l...)
		}
		byKey := make(map[string]int, len(changed))
		for j, e := range changed {
			byKey[e.Key] = j
		}
		kw := KeyedWindow{Start: time.Unix(0, s).UTC(), End: time.Unix(0, p.end).UTC(), Complete: p.end <= wm, Keys: p.keys}
		if len(changed) == 0 {
			kw.Entries, kw.More = old, more
		} else if q.Top > 0 {
			var ok bool
			if kw.Entries, ok = applyTop(spec, q.Top, old, changed, byKey, nil); !ok {
				return nil
			}
		} else {
			var ok bool
			if kw.Entries, kw.More, ok = applyPage(spec, q.Limit, old, more, changed, byKey, nil); !ok {
				return nil
			}
		}
		wins[i] = kw
	}
	d.wins = wins
	res.KeyedWindows = slices.Clone(wins)
	if q.Top <= 0 {
		cutPage(&res, spec.Compare)
	}
	res.Cut = Cut{Consistency: Latest, Offsets: LowerCut(res.Freshness)}
	u := &watchUpdate{res: res, snap: snapshot(res), delta: true}
	// d.snap is the group's previous update's, whenever that one
	// succeeded: the only case in which its watchers share this event.
	u.deltaEvent = changeEvent(d.snap, u)
	return u
}

// A windowed view's watch group keeps every fragment's partial of every
// window in its range: a fragment answers a changes request with the
// windows that changed since the mark (a key changed, or the window
// closed), each with its partial, and the group merges again only those
// windows. A fragment that dropped a window since the mark, or restored,
// answers Reset: the group asks every fragment for every window's partial
// (OpWindows), as a full evaluation does, and goes on from there.

// windowParts is one window's partials, by fragment (nil: the fragment
// does not hold it).
type windowParts struct {
	end   int64
	parts []any
	value any  // spliced from parts
	valid bool // value is parts'
}

// windowsDelta is a windowed view's next update from the fragments'
// answers to a changes request.
func (h *watchHub) windowsDelta(g *watchGroup, spec Spec, d *deltaWatch, ans []Answer) *watchUpdate {
	marks, reset, err := takeMarks(ans)
	if err != nil {
		d.have = false
		return &watchUpdate{err: err}
	}
	delta := d.have && !reset
	if !delta {
		// Whole, as of no earlier than the marks just taken.
		req := g.key.req
		req.Op = OpWindows
		if ans, err = h.g.Gather(g.ctx, req, -1); err != nil {
			d.have = false
			return &watchUpdate{err: err}
		}
		d.wparts, d.horizon = map[int64]*windowParts{}, 0
	}
	n := len(marks)
	for _, a := range ans {
		f := a.Freshness.Fragment
		if f < 0 || f >= 1<<20 {
			d.have = false
			return &watchUpdate{err: fmt.Errorf("an answer of fragment %d", f)}
		}
		n = max(n, f+1)
		d.horizon = max(d.horizon, a.Horizon)
		for _, w := range a.Windows {
			p := d.wparts[w.Start]
			if p == nil {
				p = &windowParts{end: w.End}
				d.wparts[w.Start] = p
			}
			if f >= len(p.parts) {
				p.parts = append(p.parts, make([]any, f+1-len(p.parts))...)
			}
			p.parts[f], p.valid = w.Partial, false
		}
	}
	res, err := windowsResult(spec, g.key.req.Query, d.wparts, ans, d.horizon)
	if err != nil {
		d.have = false
		return &watchUpdate{err: err}
	}
	res.Cut = Cut{Consistency: Latest, Offsets: LowerCut(res.Freshness)}
	u := &watchUpdate{res: res, snap: snapshot(res), delta: delta}
	if delta {
		// d.snap is the group's previous update's, whenever that one
		// succeeded: the only case in which its watchers share this event.
		u.deltaEvent = changeEvent(d.snap, u)
	}
	d.marks, d.have, d.res, d.snap = marks, true, u.res, u.snap
	return u
}

// windowsResult is evaluateWindows's answer from the partials held: the
// windows in range (the latest complete one, or the last Limit), each
// spliced from its fragments' partials, complete by the answers'
// watermarks.
func windowsResult(spec Spec, q Query, wparts map[int64]*windowParts, ans []Answer, horizon int64) (Result, error) {
	res := Result{Spec: spec, Latest: q.Latest, Horizon: horizon}
	for _, a := range ans {
		res.Freshness = append(res.Freshness, a.Freshness)
	}
	wm := completeUpTo(ans)
	starts := make([]int64, 0, len(wparts))
	for s := range wparts {
		starts = append(starts, s)
	}
	slices.Sort(starts)
	if q.Latest {
		i := len(starts) - 1
		for i >= 0 && wparts[starts[i]].end > wm {
			i--
		}
		if i < 0 {
			return res, fmt.Errorf("%w: no complete window of view %q yet", ErrNotFound, spec.Name)
		}
		starts = starts[i : i+1]
	}
	if lim := q.Limit; lim > 0 && len(starts) > lim {
		starts, res.More = starts[len(starts)-lim:], true
	}
	res.Windows = make([]Window, len(starts))
	for i, s := range starts {
		p := wparts[s]
		if !p.valid {
			parts := make([]any, 0, len(p.parts))
			for _, x := range p.parts {
				if x != nil {
					parts = append(parts, x)
				}
			}
			p.value, p.valid = spec.Splice(parts), true
		}
		res.Windows[i] = Window{Start: time.Unix(0, s).UTC(), End: time.Unix(0, p.end).UTC(),
			Value: p.value, Complete: p.end <= wm}
	}
	return res, nil
}
