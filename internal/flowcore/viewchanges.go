package flowcore

import (
	"strings"
	"sync/atomic"

	"github.com/tessera-streams/tessera/splice"
)

// Changes of keyed, windowed and aggregate views, for watches
// (splice.OpChanges).
//
// A fragment counts its Publish calls (gen), which a driver makes at every
// batch boundary. A table shown as a view stamps each slot with the
// generation it last changed in: one store per change, no allocation. A
// request for the changes since a mark scans the stamps — a comparison per
// key, where evaluating the view would box, sort and encode every entry —
// and answers the changed entries with the generation now as the next
// mark: whatever changes later is stamped with it or a later one. A
// restore builds a new Fragment with another instance number, so a mark
// of the old state asks for a reset, as does a view that forgets keys (a
// state TTL: deletions are not stamped), a view with no table (Process),
// and more changes than maxChanges (the whole view is then cheaper).
//
// An aggregate view stamps its partial the same way (aggview.go): a
// changes request answers the partial if it changed since the mark, or
// that it did not (Unchanged), and, for no valid mark, the partial — a
// partial is a state, not an increment, so there is never a reset.
// Window operators under a KeyedView or a WindowView stamp their state
// (windowkeyed.go, windowview.go).

// instances numbers Fragments, so that a mark names the state it was
// taken of.
var instances atomic.Uint64

// maxChanges bounds the entries one fragment answers a changes request
// with; beyond it, it asks for a reset.
const maxChanges = 4096

// changeTracker is a view whose changes a fragment can tell.
// changedSince answers a changes request of the view with the fragment's
// mark now; valid says that since is a mark of this fragment's state
// (else the view answers as if everything changed, or asks for a reset).
type changeTracker interface {
	viewName() string
	changedSince(q splice.Query, since uint64, valid bool, now *splice.ChangeMark) splice.Answer
}

type tableChanges[K comparable, V any] struct {
	view string
	t    *table[K, V]
	o    viewOptions[V]
}

func (c tableChanges[K, V]) viewName() string { return c.view }

func (c tableChanges[K, V]) changedSince(q splice.Query, since uint64, valid bool, now *splice.ChangeMark) splice.Answer {
	if !valid {
		now.Reset = true
		return splice.Answer{Changes: now}
	}
	es, hidden, ok := c.changed(q, since, maxChanges)
	now.Reset, now.Hidden = !ok, hidden
	return splice.Answer{Entries: es, Changes: now}
}

// changed is the entries changed in generation since or later, among
// those matching q.Prefix, and the keys among them the view does not
// show; ok false for a reset.
func (c tableChanges[K, V]) changed(q splice.Query, since uint64, max int) (out []splice.Entry, hidden []string, ok bool) {
	t := c.t
	if t.exp != nil {
		return nil, nil, false
	}
	for i, st := range t.stamp {
		if st < since {
			continue
		}
		k, v := t.keys[i], t.vals[i]
		key := t.kc.Format(k)
		if q.Prefix != "" && !strings.HasPrefix(key, q.Prefix) {
			continue
		}
		if len(out)+len(hidden) == max {
			return nil, nil, false
		}
		if !c.o.publish(v) {
			hidden = append(hidden, key)
			continue
		}
		e := splice.Entry{Key: key, Value: v, Sort: k}
		if c.o.score != nil {
			e.Score = c.o.score(v)
		}
		out = append(out, e)
	}
	return out, hidden, true
}

// queryChanges answers an OpChanges request of view v.
func (fr *Fragment) queryChanges(req splice.Request) splice.Answer {
	now := &splice.ChangeMark{Instance: fr.instance, Gen: fr.gen}
	since, ok := splice.MarkOf(req.Since, fr.id)
	valid := ok && since.Instance == fr.instance && since.Gen <= fr.gen
	for _, c := range fr.changes {
		if c.viewName() == req.View {
			return c.changedSince(req.Query, since.Gen, valid, now)
		}
	}
	now.Reset = true
	return splice.Answer{Changes: now}
}
