package flowcore

import (
	"cmp"
	"container/heap"
	"fmt"
	"slices"
	"strings"

	"github.com/tessera-streams/tessera/shard"
	"github.com/tessera-streams/tessera/splice"
)

// addKeyedView registers a keyed view of stage whose fragments answer with sel:
// the entries for q (after may be nil), or only the key *only.
func addKeyedView[K comparable](f *Flow, name string, stage int, kc KeyCodec[K], hash func(K) uint64, vals valueCodec,
	sel func(fr *Fragment, q splice.Query, after *K, only *K) []splice.Entry) {
	if kc == nil {
		return // KeyBy reported the missing codec
	}
	spec := keyedSpec(f, name, splice.Keyed, kc, hash)
	f.views = append(f.views, viewDef{spec: spec, stage: stage, vals: vals, parseKey: func(s string) (any, error) { return kc.Parse(s) },
		query: func(fr *Fragment, req splice.Request) (splice.Answer, error) {
			switch req.Op {
			case splice.OpKey:
				k, err := kc.Parse(req.Key)
				if err != nil {
					return splice.Answer{}, err
				}
				return splice.Answer{Entries: sel(fr, req.Query, nil, &k)}, nil
			case splice.OpEntries:
				var after *K
				if req.Query.Paged() {
					k, err := kc.Parse(req.Query.After)
					if err != nil {
						return splice.Answer{}, err
					}
					after = &k
				}
				es := sel(fr, req.Query, after, nil)
				if es == nil && req.Query.Top > 0 {
					return splice.Answer{}, fmt.Errorf("%w: view %q has no score for ?top=", splice.ErrBadRequest, name)
				}
				return splice.Answer{Entries: es}, nil
			}
			return splice.Answer{}, fmt.Errorf("%w: view %q is keyed", splice.ErrBadRequest, name)
		}})
}

// keyedSpec is the spec of a view whose entries are keys of kc, each in
// the fragment its hash names.
func keyedSpec[K comparable](f *Flow, name string, kind splice.Kind, kc KeyCodec[K], hash func(K) uint64) splice.Spec {
	g := f.fragments
	return splice.Spec{
		Name: name, Kind: kind,
		FragmentOf: func(key string) (int, error) {
			k, err := kc.Parse(key)
			if err != nil {
				return 0, fmt.Errorf("key %q: %w", key, err)
			}
			return shard.Fragment(hash(k), g), nil
		},
		CheckAfter: func(key string) error {
			if _, err := kc.Parse(key); err != nil {
				return fmt.Errorf("after %q: %w", key, err)
			}
			return nil
		},
		Compare: func(a, b any) int { return kc.Compare(a.(K), b.(K)) },
	}
}

// selectKeys picks a fragment's entries for q among n keys: the first
// q.Limit+1 after *after in key order (one more than asked, so the splice
// can tell whether more follow), or the q.Top best by score, among the
// entries o publishes. It filters and
// ranks in the keys' own types and boxes only what it returns. It returns
// nil for a Top query without a scorer.
func selectKeys[K comparable, V any](n int, at func(int) (K, V), q splice.Query, after *K, kc KeyCodec[K], o viewOptions[V]) []splice.Entry {
	score := o.score
	if q.Top > 0 && score == nil {
		return nil
	}
	type cand struct {
		k K
		v V
		s float64
	}
	var cmpf func(a, b cand) int
	limit := q.Limit + 1
	if q.Top > 0 {
		limit = q.Top
		cmpf = func(a, b cand) int {
			if c := cmp.Compare(b.s, a.s); c != 0 {
				return c
			}
			return kc.Compare(a.k, b.k)
		}
	} else {
		cmpf = func(a, b cand) int { return kc.Compare(a.k, b.k) }
	}
	// A small limit among many keys keeps the best `limit` in a bounded
	// heap while it scans (a top-10 of a fragment's keys allocates ten
	// candidates, not one per key); else every candidate is sorted.
	bounded := limit*4 < n
	h := &candHeap[cand]{less: func(a, b cand) bool { return cmpf(a, b) > 0 }}
	var cs []cand
	for i := range n {
		k, v := at(i)
		if q.Prefix != "" && !strings.HasPrefix(kc.Format(k), q.Prefix) {
			continue
		}
		if q.Top <= 0 && after != nil && kc.Compare(k, *after) <= 0 {
			continue
		}
		if !o.publish(v) {
			continue
		}
		c := cand{k: k, v: v}
		if q.Top > 0 {
			c.s = score(v)
		}
		switch {
		case !bounded:
			cs = append(cs, c)
		case len(h.xs) < limit:
			heap.Push(h, c)
		case cmpf(c, h.xs[0]) < 0:
			h.xs[0] = c
			heap.Fix(h, 0)
		}
	}
	if bounded {
		cs = h.xs
	}
	slices.SortFunc(cs, cmpf)
	cs = cs[:min(len(cs), limit)]
	out := make([]splice.Entry, len(cs))
	for i, c := range cs {
		out[i] = splice.Entry{Key: kc.Format(c.k), Value: c.v, Score: c.s, Sort: c.k}
	}
	return out
}

type candHeap[T any] struct {
	xs   []T
	less func(a, b T) bool
}

func (h *candHeap[T]) Len() int           { return len(h.xs) }
func (h *candHeap[T]) Less(i, j int) bool { return h.less(h.xs[i], h.xs[j]) }
func (h *candHeap[T]) Swap(i, j int)      { h.xs[i], h.xs[j] = h.xs[j], h.xs[i] }
func (h *candHeap[T]) Push(x any)         { h.xs = append(h.xs, x.(T)) }
func (h *candHeap[T]) Pop() any {
	x := h.xs[len(h.xs)-1]
	h.xs = h.xs[:len(h.xs)-1]
	return x
}
