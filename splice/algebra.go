package splice

import (
	"bytes"
	"cmp"
	"slices"
	"sort"

	"github.com/axiomhq/hyperloglog"
)

// Algebra is a merge algebra for an aggregate view. Each fragment folds its
// events into a partial P with Add; partials from all fragments are spliced
// with Merge; Result turns the spliced partial into the answer.
//
// Contract: Merge is associative and commutative, Zero is its neutral
// element, and folding events into one partial equals folding them into any
// split of partials and merging those. Add and Merge may modify their first
// argument and return it; they never modify the second. Clone returns a
// partial that shares nothing mutable with its argument.
type Algebra[In, P, Out any] interface {
	Zero() P
	Add(p P, x In) P
	Merge(dst, src P) P
	Clone(p P) P
	Result(p P) Out
	// Name is how the view's kind is reported ("sum", "hll", ...).
	Name() string
}

// Number is the set of types the numeric algebras accept.
type Number interface {
	~int | ~int8 | ~int16 | ~int32 | ~int64 |
		~uint | ~uint8 | ~uint16 | ~uint32 | ~uint64 | ~float32 | ~float64
}

type sum[N Number] struct{}

// Sum adds numbers.
func Sum[N Number]() Algebra[N, N, N] { return sum[N]{} }

func (sum[N]) Zero() N            { return 0 }
func (sum[N]) Add(p N, x N) N     { return p + x }
func (sum[N]) Merge(dst, src N) N { return dst + src }
func (sum[N]) Clone(p N) N        { return p }
func (sum[N]) Result(p N) N       { return p }
func (sum[N]) Name() string       { return "sum" }

type count[In any] struct{}

// Count counts events.
func Count[In any]() Algebra[In, int64, int64] { return count[In]{} }

func (count[In]) Zero() int64                { return 0 }
func (count[In]) Add(p int64, _ In) int64    { return p + 1 }
func (count[In]) Merge(dst, src int64) int64 { return dst + src }
func (count[In]) Clone(p int64) int64        { return p }
func (count[In]) Result(p int64) int64       { return p }
func (count[In]) Name() string               { return "count" }

// Opt is a value that may be absent: the partial of Min and Max, whose zero
// (no value seen) is neutral.
type Opt[T any] struct {
	Value T    `json:"value"`
	Valid bool `json:"valid"`
}

type extremum[T cmp.Ordered] struct{ max bool }

// Min keeps the smallest value.
func Min[T cmp.Ordered]() Algebra[T, Opt[T], Opt[T]] { return extremum[T]{} }

// Max keeps the largest value.
func Max[T cmp.Ordered]() Algebra[T, Opt[T], Opt[T]] { return extremum[T]{max: true} }

func (extremum[T]) Zero() Opt[T] { return Opt[T]{} }
func (e extremum[T]) Add(p Opt[T], x T) Opt[T] {
	return e.Merge(p, Opt[T]{Value: x, Valid: true})
}
func (e extremum[T]) Merge(dst, src Opt[T]) Opt[T] {
	switch {
	case !src.Valid:
		return dst
	case !dst.Valid:
		return src
	case e.max == (cmp.Compare(src.Value, dst.Value) > 0):
		return src
	}
	return dst
}
func (extremum[T]) Clone(p Opt[T]) Opt[T]  { return p }
func (extremum[T]) Result(p Opt[T]) Opt[T] { return p }
func (e extremum[T]) Name() string {
	if e.max {
		return "max"
	}
	return "min"
}

// Scored is an item of a top-k view.
type Scored struct {
	Key   string  `json:"key"`
	Score float64 `json:"score"`
}

// TopK is the partial of the top-k algebra: the best items seen, at most K,
// each key once with its best score, ordered best first (score descending,
// then key ascending).
type TopK struct {
	K     int
	Items []Scored
}

type topK struct{ k int }

// Top keeps the k items with the highest scores; a key seen more than once
// keeps its highest score. Ties are broken by key so the answer is
// deterministic.
func Top(k int) Algebra[Scored, TopK, []Scored] { return topK{k: max(k, 1)} }

func better(a, b Scored) int {
	if a.Score != b.Score {
		if a.Score > b.Score {
			return -1
		}
		return 1
	}
	return cmp.Compare(a.Key, b.Key)
}

func (t topK) Zero() TopK { return TopK{K: t.k} }
func (t topK) Add(p TopK, x Scored) TopK {
	if i := slices.IndexFunc(p.Items, func(s Scored) bool { return s.Key == x.Key }); i >= 0 {
		if x.Score <= p.Items[i].Score {
			return p
		}
		p.Items = slices.Delete(p.Items, i, i+1)
	} else if len(p.Items) == t.k && better(x, p.Items[t.k-1]) > 0 {
		return p
	}
	i, _ := slices.BinarySearchFunc(p.Items, x, better)
	p.Items = slices.Insert(p.Items, i, x)
	if len(p.Items) > t.k {
		p.Items = p.Items[:t.k]
	}
	return p
}
func (t topK) Merge(dst, src TopK) TopK {
	for _, x := range src.Items {
		dst = t.Add(dst, x)
	}
	return dst
}
func (topK) Clone(p TopK) TopK      { p.Items = slices.Clone(p.Items); return p }
func (topK) Result(p TopK) []Scored { return slices.Clone(p.Items) }
func (topK) Name() string           { return "top-k" }

// Distinct is the partial of the distinct-count algebra: a HyperLogLog
// sketch (dense, precision 14: about 0.8% standard error, 16 KiB).
type Distinct struct{ sk *hyperloglog.Sketch }

// MarshalBinary encodes the sketch (empty for the zero partial).
func (d Distinct) MarshalBinary() ([]byte, error) {
	if d.sk == nil {
		return []byte{}, nil
	}
	return d.sk.MarshalBinary()
}

// UnmarshalBinary decodes MarshalBinary's output.
func (d *Distinct) UnmarshalBinary(b []byte) error {
	if len(b) == 0 {
		d.sk = nil
		return nil
	}
	sk := hyperloglog.NewNoSparse()
	// The sketch decodes in place: give it its own copy.
	if err := sk.UnmarshalBinary(bytes.Clone(b)); err != nil {
		return err
	}
	d.sk = sk
	return nil
}

type distinct struct{}

// DistinctCount estimates the number of distinct byte strings added.
// Merging sketches takes the register-wise maximum, so splicing fragments
// gives exactly the sketch of processing every item in one place.
func DistinctCount() Algebra[[]byte, Distinct, uint64] { return distinct{} }

func (distinct) Zero() Distinct { return Distinct{} }
func (distinct) Add(p Distinct, x []byte) Distinct {
	if p.sk == nil {
		p.sk = hyperloglog.NewNoSparse()
	}
	p.sk.Insert(x)
	return p
}
func (distinct) Merge(dst, src Distinct) Distinct {
	if src.sk == nil {
		return dst
	}
	if dst.sk == nil {
		return Distinct{sk: src.sk.Clone()}
	}
	// Both sketches have the same precision, the only error Merge returns.
	_ = dst.sk.Merge(src.sk)
	return dst
}
func (distinct) Clone(p Distinct) Distinct {
	if p.sk == nil {
		return p
	}
	return Distinct{sk: p.sk.Clone()}
}
func (distinct) Result(p Distinct) uint64 {
	if p.sk == nil {
		return 0
	}
	return p.sk.Estimate()
}
func (distinct) Name() string { return "distinct-count" }

// Histogram is the partial of the histogram algebra.
type Histogram struct {
	Bounds []float64 `json:"bounds"` // upper bounds of the buckets; a last bucket takes the rest
	Counts []int64   `json:"counts"` // len(Bounds)+1 counts
	Sum    float64   `json:"sum"`
	Count  int64     `json:"count"`
}

type histogram struct{ bounds []float64 }

// NewHistogram counts values into buckets with the given upper bounds
// (inclusive), which must be increasing; values above the last bound go to
// an overflow bucket.
func NewHistogram(bounds ...float64) Algebra[float64, Histogram, Histogram] {
	b := slices.Clone(bounds)
	sort.Float64s(b)
	return histogram{bounds: slices.Compact(b)}
}

func (h histogram) Zero() Histogram {
	return Histogram{Bounds: h.bounds, Counts: make([]int64, len(h.bounds)+1)}
}
func (h histogram) Add(p Histogram, x float64) Histogram {
	if p.Counts == nil {
		p = h.Zero()
	}
	i, _ := slices.BinarySearch(h.bounds, x)
	p.Counts[i]++
	p.Sum += x
	p.Count++
	return p
}
func (h histogram) Merge(dst, src Histogram) Histogram {
	if src.Counts == nil {
		return dst
	}
	if dst.Counts == nil {
		dst = h.Zero()
	}
	for i, c := range src.Counts {
		dst.Counts[i] += c
	}
	dst.Sum += src.Sum
	dst.Count += src.Count
	return dst
}
func (histogram) Clone(p Histogram) Histogram {
	p.Counts = slices.Clone(p.Counts)
	return p
}
func (h histogram) Result(p Histogram) Histogram {
	if p.Counts == nil {
		return h.Zero()
	}
	return h.Clone(p)
}
func (histogram) Name() string { return "histogram" }
