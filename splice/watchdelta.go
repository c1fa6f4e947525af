package splice

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
)

// A keyed view's watch group keeps its answer from the fragments' changes
// rather than evaluating the whole view every interval: it asks every
// fragment for the entries changed since the marks of its last answer
// (OpChanges: one comparison per key in the fragment, and only the
// changed entries boxed and sent), applies them to the answer it holds,
// encodes only those, and builds the watchers' shared diff from them. A
// fragment that cannot say what changed (restored or moved, a view that
// forgets keys, too many changes) answers Reset, and the group evaluates
// the whole view once — after taking the new marks, so that nothing
// changed in between is missed (a change seen twice is applied twice,
// which is harmless: it carries the value, not an increment).
//
// What the group holds is exact as long as it can tell what replaces an
// entry that leaves it, which it cannot always do:
//   - a page (limit, prefix) holds the first Limit entries in key order
//     and whether more follow. A changed key inside the page's range is
//     put in, one beyond it when more follow is not, and the page is cut
//     back to Limit; a key that leaves the view (hidden) while more
//     follow would need the next one, or may have been the last one after
//     the page: the whole view is evaluated;
//   - a top-n set holds the n best and, when it holds n, no entry outside
//     scores better than its lowest. A changed key is a candidate; a
//     member whose new score falls below the old lowest, or that leaves
//     the view, while the set is full, might be passed by a key never
//     seen: the whole view is evaluated. A view whose scores only grow (a
//     count) never is.
//
// An after= page is evaluated whole each interval (the key to compare
// with is known only in the view's own type, which the fragments parse).

// deltaWatch is a watch group's answer as of marks (have: it is
// current; else the next interval evaluates the view whole).
type deltaWatch struct {
	marks []ChangeMark // by fragment
	have  bool
	res   Result
	snap  map[string][]byte
	parts []any // an aggregate view's partials, by fragment
	// wins: a windowed keyed view's windows, each with its own page or
	// top set before cutPage (watchwindows.go).
	wins []KeyedWindow
	// wparts: a windowed view's partials, by window start and fragment
	// (watchwindows.go); horizon, the largest the fragments reported.
	wparts  map[int64]*windowParts
	horizon int64
}

// deltaEligible reports whether req's watch can follow the fragments'
// changes.
func deltaEligible(spec Spec, req Request) bool {
	switch spec.Kind {
	case Aggregate:
		return spec.Splice != nil
	case Windowed:
		return req.Op == OpWindows && spec.Splice != nil
	case WindowedKeyed:
		return req.Op == OpEntries && !req.Query.Latest && !req.Query.Paged() && spec.Compare != nil
	}
	return spec.Kind == Keyed && req.Op == OpEntries && !req.Query.Paged() && spec.Compare != nil
}

// evaluateDelta is the group's next update built from the fragments'
// changes, or nil when the request cannot follow them.
func (h *watchHub) evaluateDelta(g *watchGroup) *watchUpdate {
	spec, err := FindSpec(h.g, g.key.req.View)
	if err != nil || !deltaEligible(spec, g.key.req) {
		return nil
	}
	d := g.delta
	if d == nil {
		d = &deltaWatch{}
		g.delta = d
	}
	req := g.key.req
	req.Op, req.Since = OpChanges, ""
	if d.have {
		req.Since = FormatMarks(d.marks)
	}
	ans, err := h.g.Gather(g.ctx, req, -1)
	if err != nil {
		d.have = false
		return &watchUpdate{err: err}
	}
	switch spec.Kind {
	case Aggregate:
		return h.aggregateDelta(g, spec, d, ans)
	case WindowedKeyed:
		return h.keyedWindowsDelta(g, spec, d, ans)
	case Windowed:
		return h.windowsDelta(g, spec, d, ans)
	}
	marks := make([]ChangeMark, len(ans))
	reset := !d.have
	var fresh []Freshness
	var changed []Entry
	var hidden []string
	for _, a := range ans {
		f := a.Freshness.Fragment
		if f < 0 || f >= 1<<20 {
			return &watchUpdate{err: fmt.Errorf("an answer of fragment %d", f)}
		}
		if f >= len(marks) {
			marks = append(marks, make([]ChangeMark, f+1-len(marks))...)
		}
		fresh = append(fresh, a.Freshness)
		if a.Changes == nil || a.Changes.Reset {
			reset = true
		}
		if a.Changes != nil {
			marks[f] = ChangeMark{Instance: a.Changes.Instance, Gen: a.Changes.Gen}
			hidden = append(hidden, a.Changes.Hidden...)
		}
		changed = append(changed, a.Entries...)
	}
	d.marks = marks
	if !reset {
		if u, ok := d.apply(spec, g.key.req.Query, changed, hidden, fresh); ok {
			return u
		}
	}
	// Whole, as of no earlier than the marks just taken.
	res, err := Evaluate(g.ctx, h.g, g.key.req)
	if err != nil {
		d.have = false
		return &watchUpdate{err: err}
	}
	res.Cut = Cut{Consistency: Latest, Offsets: LowerCut(res.Freshness)}
	d.have, d.res, d.snap = true, res, snapshot(res)
	return &watchUpdate{res: res, snap: d.snap}
}

// apply takes the changed entries and the keys that left the view into
// the answer d holds; ok false when it cannot tell the answer exactly.
func (d *deltaWatch) apply(spec Spec, q Query, changed []Entry, hidden []string, fresh []Freshness) (*watchUpdate, bool) {
	old := d.res.Entries
	res := Result{Spec: spec, Freshness: fresh, More: d.res.More}
	res.Cut = Cut{Consistency: Latest, Offsets: LowerCut(fresh)}
	if len(changed) == 0 && len(hidden) == 0 {
		res.Entries = old
		d.res = res
		return &watchUpdate{res: res, snap: d.snap, delta: true}, true
	}
	byKey := make(map[string]int, len(changed))
	for i, e := range changed {
		byKey[e.Key] = i
	}
	gone := make(map[string]bool, len(hidden))
	for _, k := range hidden {
		gone[k] = true
	}
	var entries []Entry
	if q.Top > 0 {
		var ok bool
		if entries, ok = applyTop(spec, q.Top, old, changed, byKey, gone); !ok {
			return nil, false
		}
	} else {
		var ok bool
		if entries, res.More, ok = applyPage(spec, q.Limit, old, d.res.More, changed, byKey, gone); !ok {
			return nil, false
		}
	}
	res.Entries = entries
	// Encode only the entries that changed; the others keep their bytes.
	snap := make(map[string][]byte, len(entries))
	var diff []jsonEntry
	for _, e := range entries {
		b, was := d.snap[e.Key]
		if _, ch := byKey[e.Key]; ch || !was {
			nb, _ := json.Marshal(e.Value)
			if !was || !bytes.Equal(b, nb) {
				diff = append(diff, newJSONEntry(e))
			}
			b = nb
		}
		snap[e.Key] = b
	}
	var removed []string
	for _, e := range old {
		if _, ok := snap[e.Key]; !ok {
			removed = append(removed, e.Key)
		}
	}
	slices.Sort(removed)
	d.res, d.snap = res, snap
	u := &watchUpdate{res: res, snap: snap, delta: true}
	if len(diff) > 0 || len(removed) > 0 {
		u.deltaEvent = changesEvent(diff, removed, res)
	}
	return u, true
}

// applyPage is the page old (the first limit entries in key order, more
// following) with the changes.
func applyPage(spec Spec, limit int, old []Entry, more bool, changed []Entry, byKey map[string]int, gone map[string]bool) ([]Entry, bool, bool) {
	out := make([]Entry, 0, len(old)+len(changed))
	in := make(map[string]bool, len(old))
	for _, e := range old {
		in[e.Key] = true
		if gone[e.Key] {
			if more {
				return nil, false, false // the entry after the page would come in: unknown
			}
			continue
		}
		if i, ok := byKey[e.Key]; ok {
			e = changed[i]
		}
		out = append(out, e)
	}
	if more {
		// A key beyond the page that left the view may have been the
		// last one after it: whether more follow is unknown.
		for k := range gone {
			if !in[k] {
				return nil, false, false
			}
		}
	}
	sorted := true
	for _, e := range changed {
		if in[e.Key] {
			continue
		}
		// Beyond the page's last key, while more follow, it stays out:
		// the page's range holds every entry in it.
		if more && len(old) > 0 && spec.Compare(e.Sort, old[len(old)-1].Sort) > 0 {
			continue
		}
		out = append(out, e)
		sorted = false
	}
	if !sorted {
		slices.SortFunc(out, func(a, b Entry) int { return spec.Compare(a.Sort, b.Sort) })
	}
	if len(out) > limit {
		return out[:limit], true, true
	}
	return out, more, true
}

// applyTop is the top-n set old with the changes.
func applyTop(spec Spec, n int, old []Entry, changed []Entry, byKey map[string]int, gone map[string]bool) ([]Entry, bool) {
	full := len(old) >= n
	out := make([]Entry, 0, len(old)+len(changed))
	in := make(map[string]bool, len(old))
	for _, e := range old {
		in[e.Key] = true
		if gone[e.Key] {
			if full {
				return nil, false
			}
			continue
		}
		if i, ok := byKey[e.Key]; ok {
			ne := changed[i]
			if full && byScore(ne, old[len(old)-1], spec.Compare) > 0 {
				return nil, false // fell below the lowest: an unseen key may pass it
			}
			e = ne
		}
		out = append(out, e)
	}
	for _, e := range changed {
		if !in[e.Key] {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b Entry) int { return byScore(a, b, spec.Compare) })
	return out[:min(len(out), n)], true
}

// changesEvent is the "changes" event with these entries and removed keys
// (those that are not valid UTF-8 in "removed_base64", keybytes.go).
func changesEvent(changed []jsonEntry, removed []string, res Result) []byte {
	if changed == nil {
		changed = []jsonEntry{}
	}
	removed, removedB64 := removedKeys(removed)
	if removed == nil {
		removed = []string{}
	}
	v := map[string]any{"entries": changed, "removed": removed, "freshness": res.Freshness, "cut": cutOf(res)}
	if removedB64 != nil {
		v["removed_base64"] = removedB64
	}
	b, _ := json.Marshal(v)
	return fmt.Appendf(nil, "event: %s\ndata: %s\n\n", "changes", b)
}

// aggregateDelta is an aggregate view's next update from the fragments'
// answers to a changes request: each answers its partial only if it
// changed since the group's mark, so a fragment that saw no event is
// neither encoded nor sent again, and an interval in which none changed
// costs no merge and no encoding. The partials are merged as Evaluate
// does; the watchers' "value" event is made from the result.
func (h *watchHub) aggregateDelta(g *watchGroup, spec Spec, d *deltaWatch, ans []Answer) *watchUpdate {
	marks := make([]ChangeMark, len(d.parts))
	parts := make([]any, len(d.parts))
	copy(parts, d.parts)
	seen := make([]bool, len(d.parts))
	fresh := make([]Freshness, 0, len(ans))
	changed := !d.have
	for _, a := range ans {
		f := a.Freshness.Fragment
		if f < 0 || f >= 1<<20 {
			d.have = false
			return &watchUpdate{err: fmt.Errorf("an answer of fragment %d", f)}
		}
		if f >= len(parts) {
			n := f + 1 - len(parts)
			parts = append(parts, make([]any, n)...)
			marks = append(marks, make([]ChangeMark, n)...)
			seen = append(seen, make([]bool, n)...)
		}
		fresh = append(fresh, a.Freshness)
		c := a.Changes
		switch {
		case c == nil || c.Reset:
			// A fragment that cannot answer changes: evaluate whole, and
			// ask every fragment for its partial next time.
			d.have, d.parts = false, nil
			res, err := Evaluate(g.ctx, h.g, g.key.req)
			if err != nil {
				return &watchUpdate{err: err}
			}
			res.Cut = Cut{Consistency: Latest, Offsets: LowerCut(res.Freshness)}
			d.res, d.snap = res, snapshot(res)
			return &watchUpdate{res: res, snap: d.snap}
		case c.Unchanged:
			if !d.have || f >= len(d.parts) || d.parts[f] == nil {
				// Unchanged since a mark the group holds no partial of: a
				// peer's mistake; start over.
				d.have, d.parts = false, nil
				return &watchUpdate{err: fmt.Errorf("fragment %d answered an unchanged partial of view %q the watch does not hold", f, spec.Name)}
			}
		default:
			parts[f], changed = a.Partial, true
		}
		marks[f], seen[f] = ChangeMark{Instance: c.Instance, Gen: c.Gen}, true
	}
	if len(ans) != len(parts) || slices.Contains(seen, false) {
		// Fragments answered once each, or the group's partials are
		// not the view's: start over.
		d.have, d.parts = false, nil
		return &watchUpdate{err: fmt.Errorf("view %q: %d fragments answered, the watch holds %d partials", spec.Name, len(ans), len(parts))}
	}
	res := Result{Spec: spec, Freshness: fresh, Value: d.res.Value}
	res.Cut = Cut{Consistency: Latest, Offsets: LowerCut(fresh)}
	u := &watchUpdate{res: res, snap: d.snap, delta: true}
	if changed {
		u.res.Value = spec.Splice(parts)
		u.snap = snapshot(u.res)
		// d.snap is the group's previous update's, whenever that one
		// succeeded: the only case in which its watchers share this event.
		u.deltaEvent = changeEvent(d.snap, u)
	}
	d.marks, d.parts, d.have, d.res, d.snap = marks, parts, true, u.res, u.snap
	return u
}
