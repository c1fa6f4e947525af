package flowcore

import (
	"fmt"

	"github.com/tessera-streams/tessera/splice"
)

// AggregateView declares a view that every fragment folds the stream into
// with alg, and that queries splice by merging the fragments' partials.
// extract picks the algebra's input from an event. The stream must come
// after KeyBy.
func AggregateView[T, In, P, Out any](s Stream[T], name string, alg splice.Algebra[In, P, Out], extract func(T) In) {
	if !s.ok("AggregateView", alg, extract) {
		return
	}
	f := s.f
	if s.side != fragmentSide {
		f.errorf("aggregate view %q: its stream (%s) must come after KeyBy: every fragment keeps a partial", name, s.what)
		return
	}
	pc, err := DefaultCodec[P]()
	if err != nil {
		f.errorf("aggregate view %q: partials of %s: %v", name, alg.Name(), err)
	}
	op := f.addOp(s.stage, fmt.Sprintf("aggregate view %q of partials %s, algebra %s", name, typeName[P](), algebraDesc(alg)))
	f.fragW = append(f.fragW, func(fr *Fragment) {
		st := &aggState[P]{p: alg.Zero(), pc: pc, dirty: true}
		fr.ops[op] = st
		s.attach(&fr.core, func(v T) {
			st.p = alg.Add(st.p, extract(v))
			st.dirty = true
			st.stamp = fr.gen
		})
		fr.changes = append(fr.changes, aggChanges[P]{view: name, st: st, clone: alg.Clone})
	})
	spec := splice.Spec{Name: name, Kind: splice.Aggregate, Algebra: alg.Name(),
		Splice: spliceParts(alg)}
	f.views = append(f.views, viewDef{spec: spec, stage: s.stage, parts: anyCodec(pc), query: func(fr *Fragment, req splice.Request) (splice.Answer, error) {
		if req.Op != splice.OpValue {
			return splice.Answer{}, fmt.Errorf("%w: view %q is an aggregate: it has no keys", splice.ErrBadRequest, name)
		}
		return splice.Answer{Partial: alg.Clone(fr.ops[op].(*aggState[P]).p)}, nil
	}})
}

// aggState is a fragment's partial of an aggregate view: one entry.
type aggState[P any] struct {
	p     P
	pc    Codec[P]
	dirty bool
	// stamp is the fragment's publish generation when p last changed
	// (viewchanges.go): a watch whose mark is later need not be sent p.
	stamp uint64
}

// aggChanges tells a watch whether a fragment's partial changed since a
// mark, so that the watch asks each fragment for its partial only when it
// did (splice.ChangeMark.Unchanged).
type aggChanges[P any] struct {
	view  string
	st    *aggState[P]
	clone func(P) P
}

func (c aggChanges[P]) viewName() string { return c.view }

// changedSince is the fragment's partial, or nil if it has not changed in
// generation since or later (valid: since is a mark of this fragment).
func (c aggChanges[P]) changedSince(_ splice.Query, since uint64, valid bool, now *splice.ChangeMark) splice.Answer {
	if valid && c.st.stamp < since {
		now.Unchanged = true
		return splice.Answer{Changes: now}
	}
	return splice.Answer{Partial: c.clone(c.st.p), Changes: now}
}

func (a *aggState[P]) delta(ns uint16, d *Delta) error {
	d.Entries++
	if !a.dirty {
		return nil
	}
	v, err := a.pc.Append(nil, a.p)
	if err != nil {
		return fmt.Errorf("encode partial: %w", err)
	}
	d.Puts = append(d.Puts, StateEntry{Namespace: ns, Key: []byte{}, Value: v})
	a.dirty = false
	return nil
}

func (a *aggState[P]) restore(_ uint16, key, val []byte) error {
	p, err := a.pc.Decode(val)
	if err != nil {
		return fmt.Errorf("decode partial: %w", err)
	}
	a.p, a.dirty = p, false
	return nil
}

// Identity returns its argument: the extract function of an aggregate view
// whose algebra takes the events themselves.
func Identity[T any](v T) T { return v }

// spliceParts merges the fragments' partials of an algebra's view into
// its result.
func spliceParts[In, P, Out any](alg splice.Algebra[In, P, Out]) func(parts []any) any {
	return func(parts []any) any {
		acc := alg.Zero()
		for _, p := range parts {
			acc = alg.Merge(acc, p.(P))
		}
		return alg.Result(acc)
	}
}
