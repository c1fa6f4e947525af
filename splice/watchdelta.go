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
//     follow would need the next one: the whole view is evaluated;
//   - a top-n set holds the n best and, when it holds n, no entry outside
//     scores better than its lowest. A changed key is a candidate; a
//     member whose new score falls below the old lowest, or that leaves
//     the view, while the set is full, might be passed by a key never
//     seen: the whole view is evaluated. A view whose scores only grow (a
//     count) never is.
//
// An after= page is evaluated whole each interval (the key to compare
// with is known only in the view's own type, which the fragments parse).

// deltaWatch is a keyed watch group's answer as of marks (have: it is
// current; else the next interval evaluates the view whole).
type deltaWatch struct {
	marks []ChangeMark // by fragment
	have  bool
	res   Result
	snap  map[string][]byte
}

// deltaEligible reports whether req's watch can follow the fragments'
// changes.
func deltaEligible(spec Spec, req Request) bool {
	return spec.Kind == Keyed && req.Op == OpEntries && req.Query.After == "" && spec.Compare != nil
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
				diff = append(diff, jsonEntry{e.Key, e.Value})
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

// changesEvent is the "changes" event with these entries and removed keys.
func changesEvent(changed []jsonEntry, removed []string, res Result) []byte {
	if changed == nil {
		changed = []jsonEntry{}
	}
	if removed == nil {
		removed = []string{}
	}
	b, _ := json.Marshal(map[string]any{"entries": changed, "removed": removed, "freshness": res.Freshness, "cut": cutOf(res)})
	return fmt.Appendf(nil, "event: %s\ndata: %s\n\n", "changes", b)
}
