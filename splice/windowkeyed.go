package splice

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// KeyedWindow is one window of a windowed keyed view, spliced over every
// fragment: the entries the query selected among the window's keys.
type KeyedWindow struct {
	Start, End time.Time
	// Complete: every fragment's watermark passed the window's end, so
	// only late data within the allowed lateness can still change it.
	Complete bool
	// Keys is the number of keys the window holds, over every fragment,
	// before prefix, paging and top select among them.
	Keys    int64
	Entries []Entry
	// More: the window has keys after its last entry (see
	// Result.NextAfter).
	More bool
}

// completeUpTo is the event time every fragment that answered has
// completed: the smallest watermark (math.MinInt64 if a fragment has none,
// or none answered). A window ending at or before it is complete.
func completeUpTo(ans []Answer) int64 {
	if len(ans) == 0 {
		return math.MinInt64
	}
	wm := int64(math.MaxInt64)
	for _, a := range ans {
		if a.Freshness.Watermark == nil {
			return math.MinInt64
		}
		wm = min(wm, a.Freshness.Watermark.UnixNano())
	}
	return wm
}

// latestComplete is the start of the latest window in the answers that
// ends at or before wm.
func latestComplete(ans []Answer, wm int64) (start int64, ok bool) {
	for _, a := range ans {
		for _, w := range a.Windows {
			if w.End <= wm && (!ok || w.Start > start) {
				start, ok = w.Start, true
			}
		}
	}
	return start, ok
}

// keyedWindowParts is what the fragments answered of one window.
type keyedWindowParts struct {
	end   int64
	keys  int64
	lists [][]Entry
}

// gatherKeyedWindows groups the fragments' windows by start, and notes
// their freshness and horizon in res.
func gatherKeyedWindows(ans []Answer, res *Result) (map[int64]*keyedWindowParts, []int64) {
	wins := map[int64]*keyedWindowParts{}
	var starts []int64
	for _, a := range ans {
		res.Freshness = append(res.Freshness, a.Freshness)
		res.Horizon = max(res.Horizon, a.Horizon)
		for _, w := range a.Windows {
			p := wins[w.Start]
			if p == nil {
				p = &keyedWindowParts{end: w.End}
				wins[w.Start] = p
				starts = append(starts, w.Start)
			}
			p.keys += w.Keys
			p.lists = append(p.lists, w.Entries)
		}
	}
	slices.Sort(starts)
	return wins, starts
}

// evaluateKeyedWindows answers a windowed keyed view: per window in
// [From, To) — or only the latest complete one, as for a windowed view —
// the entries Limit, After, Prefix and Top select (OpEntries), or one
// key's value in each window that has it (OpKey).
//
// Latest takes two rounds: every fragment lists its windows, which with
// their watermarks name the latest complete window; then the fragments
// select entries of that window only. A key lookup asks every fragment
// too, not only the key's: completeness and the latest window depend on
// all of them.
func evaluateKeyedWindows(ctx context.Context, g Gatherer, spec Spec, req Request) (Result, error) {
	if req.Op == OpKey {
		return evaluateWindowKey(ctx, g, spec, req)
	}
	res, err := evaluateKeyedWindowsUncut(ctx, g, spec, req)
	if err == nil && req.Query.Top <= 0 {
		cutPage(&res, spec.Compare)
	}
	return res, err
}

// evaluateKeyedWindowsUncut is evaluateKeyedWindows's answer to OpEntries
// before cutPage: each window's own page (a watch keeps them,
// watchwindows.go).
func evaluateKeyedWindowsUncut(ctx context.Context, g Gatherer, spec Spec, req Request) (Result, error) {
	res := Result{Spec: spec, Latest: req.Query.Latest}
	q := req.Query
	if q.Limit <= 0 {
		q.Limit = DefaultLimit
	}
	if q.Paged() {
		if err := spec.CheckAfter(q.After); err != nil {
			return res, errors.Join(ErrBadRequest, err)
		}
	}
	var latest int64
	if q.Latest {
		list, err := g.Gather(ctx, Request{View: req.View, Op: OpWindows, Query: q}, -1)
		if err != nil {
			return res, err
		}
		s, ok := latestComplete(list, completeUpTo(list))
		if !ok {
			return res, fmt.Errorf("%w: no complete window of view %q yet", ErrNotFound, spec.Name)
		}
		latest = s
		// [s, s+1) holds one start.
		q.From, q.To, q.Bounded = s, s+1, true
	}
	ans, err := g.Gather(ctx, Request{View: req.View, Op: OpWindowEntries, Query: q}, -1)
	if err != nil {
		return res, err
	}
	wm := completeUpTo(ans)
	wins, starts := gatherKeyedWindows(ans, &res)
	if q.Latest {
		if _, ok := wins[latest]; !ok {
			return res, fmt.Errorf("%w: window %s of view %q is no longer retained", ErrNotFound,
				time.Unix(0, latest).UTC().Format(time.RFC3339Nano), spec.Name)
		}
		starts = []int64{latest}
	}
	res.KeyedWindows = make([]KeyedWindow, len(starts))
	for i, s := range starts {
		p := wins[s]
		kw := KeyedWindow{Start: time.Unix(0, s).UTC(), End: time.Unix(0, p.end).UTC(), Complete: p.end <= wm, Keys: p.keys}
		if q.Top > 0 {
			kw.Entries = MergeTop(p.lists, q.Top, spec.Compare)
		} else {
			kw.Entries, kw.More = MergeOrdered(p.lists, q.Limit, spec.Compare)
		}
		res.KeyedWindows[i] = kw
	}
	return res, nil
}

// cutPage makes a page of a windowed keyed answer one range of keys in
// every window: (after, b], b the smallest last key of a window with more
// keys. Entries past b are left out (their windows have more), so the
// next page, after=b (Result.NextAfter), goes on in every window with
// neither gaps nor repeats.
func cutPage(res *Result, compare func(a, b any) int) {
	var bound *Entry
	for i := range res.KeyedWindows {
		kw := &res.KeyedWindows[i]
		if kw.More && len(kw.Entries) > 0 {
			if last := &kw.Entries[len(kw.Entries)-1]; bound == nil || compare(last.Sort, bound.Sort) < 0 {
				bound = last
			}
		}
	}
	if bound == nil {
		return
	}
	for i := range res.KeyedWindows {
		kw := &res.KeyedWindows[i]
		n, _ := slices.BinarySearchFunc(kw.Entries, bound.Sort, func(e Entry, b any) int { return compare(e.Sort, b) })
		if n < len(kw.Entries) && compare(kw.Entries[n].Sort, bound.Sort) == 0 {
			n++
		}
		if n < len(kw.Entries) {
			kw.Entries, kw.More = kw.Entries[:n], true
		}
	}
	res.More, res.NextAfter = true, bound.Key
}

// evaluateWindowKey answers one key of a windowed keyed view: the windows
// in range that hold it (of Latest, the latest complete window, if it
// holds it), each with the key's entry; ErrNotFound if none does.
func evaluateWindowKey(ctx context.Context, g Gatherer, spec Spec, req Request) (Result, error) {
	res := Result{Spec: spec, Latest: req.Query.Latest}
	if _, err := spec.FragmentOf(req.Key); err != nil {
		return res, errors.Join(ErrBadRequest, err)
	}
	req.Op = OpWindowKey
	ans, err := g.Gather(ctx, req, -1)
	if err != nil {
		return res, err
	}
	wm := completeUpTo(ans)
	wins, starts := gatherKeyedWindows(ans, &res)
	if req.Query.Latest {
		s, ok := latestComplete(ans, wm)
		if !ok {
			return res, fmt.Errorf("%w: no complete window of view %q yet", ErrNotFound, spec.Name)
		}
		starts = []int64{s}
	}
	for _, s := range starts {
		p := wins[s]
		var es []Entry
		for _, l := range p.lists {
			es = append(es, l...)
		}
		if len(es) == 0 {
			continue
		}
		res.KeyedWindows = append(res.KeyedWindows, KeyedWindow{Start: time.Unix(0, s).UTC(), End: time.Unix(0, p.end).UTC(),
			Complete: p.end <= wm, Keys: p.keys, Entries: es[:1]})
	}
	if len(res.KeyedWindows) == 0 {
		return res, ErrNotFound
	}
	return res, nil
}
