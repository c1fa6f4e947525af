package splice

import (
	"fmt"
	"reflect"
	"testing"

	"pgregory.net/rapid"
)

// checkAlgebra draws streams of inputs, splits them into random fragments and
// checks the algebra's laws through Result, the only thing users observe:
// associativity, commutativity, a neutral Zero, and that splicing the
// fragments' partials equals folding every input into one partial.
func checkAlgebra[In, P, Out any](t *testing.T, alg Algebra[In, P, Out], gen *rapid.Generator[In]) {
	t.Helper()
	fold := func(xs []In) P {
		p := alg.Zero()
		for _, x := range xs {
			p = alg.Add(p, x)
		}
		return p
	}
	res := func(p P) Out { return alg.Result(alg.Clone(p)) }
	same := func(t *rapid.T, what string, a, b Out) {
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("%s: %v != %v", what, a, b)
		}
	}
	rapid.Check(t, func(t *rapid.T) {
		xs := rapid.SliceOf(gen).Draw(t, "events")
		// Split into fragments by a drawn assignment.
		n := rapid.IntRange(1, 8).Draw(t, "fragments")
		parts := make([][]In, n)
		for _, x := range xs {
			f := rapid.IntRange(0, n-1).Draw(t, "fragment")
			parts[f] = append(parts[f], x)
		}
		whole := res(fold(xs))
		spliced := alg.Zero()
		for _, part := range parts {
			spliced = alg.Merge(spliced, fold(part))
		}
		same(t, "splice(fragments) vs one fragment", res(spliced), whole)

		a, b, c := fold(parts[0]), fold(parts[n/2]), fold(parts[n-1])
		left := alg.Merge(alg.Merge(alg.Clone(a), b), c)
		right := alg.Merge(alg.Clone(a), alg.Merge(alg.Clone(b), c))
		same(t, "associative", res(left), res(right))
		same(t, "commutative", res(alg.Merge(alg.Clone(a), b)), res(alg.Merge(alg.Clone(b), a)))
		same(t, "zero neutral (left)", res(alg.Merge(alg.Zero(), a)), res(a))
		same(t, "zero neutral (right)", res(alg.Merge(alg.Clone(a), alg.Zero())), res(a))
		// Merge never modifies its second argument.
		before := res(b)
		alg.Merge(alg.Clone(a), b)
		same(t, "src untouched", res(b), before)
	})
}

// Floats are drawn from integers so that addition is exact and the laws can
// be checked for equality; the algebras themselves accept any float.
var smallFloat = rapid.Custom(func(t *rapid.T) float64 { return float64(rapid.IntRange(-1000, 1000).Draw(t, "f")) })

func TestSum(t *testing.T)   { checkAlgebra(t, Sum[int64](), rapid.Int64()) }
func TestSumF(t *testing.T)  { checkAlgebra(t, Sum[float64](), smallFloat) }
func TestCount(t *testing.T) { checkAlgebra(t, Count[string](), rapid.String()) }
func TestMin(t *testing.T)   { checkAlgebra(t, Min[int](), rapid.Int()) }
func TestMax(t *testing.T)   { checkAlgebra(t, Max[string](), rapid.String()) }
func TestTopK(t *testing.T) {
	gen := rapid.Custom(func(t *rapid.T) Scored {
		return Scored{
			Key:   fmt.Sprintf("k%d", rapid.IntRange(0, 30).Draw(t, "key")),
			Score: float64(rapid.IntRange(0, 20).Draw(t, "score")),
		}
	})
	for _, k := range []int{1, 3, 10} {
		checkAlgebra(t, Top(k), gen)
	}
}
func TestDistinct(t *testing.T) {
	checkAlgebra(t, DistinctCount(), rapid.SliceOfN(rapid.Byte(), 0, 6))
}
func TestHistogram(t *testing.T) {
	checkAlgebra(t, NewHistogram(-100, 0, 10, 500), smallFloat)
}

func TestMinMaxValues(t *testing.T) {
	mn, mx := Min[int](), Max[int]()
	p, q := mn.Zero(), mx.Zero()
	for _, x := range []int{5, -3, 9, 0} {
		p, q = mn.Add(p, x), mx.Add(q, x)
	}
	if got := mn.Result(p); got != (Opt[int]{-3, true}) {
		t.Errorf("min = %v", got)
	}
	if got := mx.Result(q); got != (Opt[int]{9, true}) {
		t.Errorf("max = %v", got)
	}
}

func TestTopKKeepsBest(t *testing.T) {
	alg := Top(2)
	p := alg.Zero()
	for _, s := range []Scored{{"a", 1}, {"b", 5}, {"c", 3}, {"a", 7}, {"b", 2}} {
		p = alg.Add(p, s)
	}
	want := []Scored{{"a", 7}, {"b", 5}}
	if got := alg.Result(p); !reflect.DeepEqual(got, want) {
		t.Errorf("top = %v, want %v", got, want)
	}
}

func TestDistinctEstimate(t *testing.T) {
	alg := DistinctCount()
	p := alg.Zero()
	for i := range 100000 {
		p = alg.Add(p, fmt.Appendf(nil, "user-%d", i%20000))
	}
	got := alg.Result(p)
	if got < 19000 || got > 21000 {
		t.Errorf("distinct = %d, want about 20000", got)
	}
}

func TestHistogramBuckets(t *testing.T) {
	alg := NewHistogram(10, 1, 5) // unsorted on purpose
	p := alg.Zero()
	for _, x := range []float64{0, 1, 2, 5, 6, 10, 11, 100} {
		p = alg.Add(p, x)
	}
	got := alg.Result(p)
	if want := []int64{2, 2, 2, 2}; !reflect.DeepEqual(got.Counts, want) {
		t.Errorf("counts = %v, want %v", got.Counts, want)
	}
	if got.Count != 8 || got.Sum != 135 {
		t.Errorf("count, sum = %d, %v", got.Count, got.Sum)
	}
}
