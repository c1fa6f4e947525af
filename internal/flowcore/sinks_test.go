package flowcore

import (
	"fmt"
	"testing"
)

// recordSink keeps the values of every Write, one slice per Write.
type recordSink struct{ writes [][]int64 }

func (r *recordSink) Write(out []Output[int64]) error {
	var vs []int64
	for _, o := range out {
		vs = append(vs, o.Value)
	}
	r.writes = append(r.writes, vs)
	return nil
}

func (s *committedSink[T]) emit(vs ...T) {
	for _, v := range vs {
		s.out = append(s.out, Output[T]{ID: OutputID{Offset: int64(len(s.out))}, Value: v})
	}
}

// With a lag, a durable checkpoint releases what the checkpoint before it
// covered; a restored checkpoint releases all it holds at once. Without,
// each releases what it covers.
func TestCommittedSinkReleaseLag(t *testing.T) {
	vc, err := DefaultCodec[int64]()
	if err != nil {
		t.Fatal(err)
	}
	for _, lag := range []bool{false, true} {
		rec := &recordSink{}
		s := &committedSink[int64]{sink: rec, vc: vc}
		checkpoint := func() *Delta {
			d := &Delta{}
			if err := s.delta(0, d); err != nil {
				t.Fatal(err)
			}
			return d
		}
		s.emit(1, 2, 3)
		checkpoint()
		s.emit(4)
		if err := s.release(lag); err != nil { // the first checkpoint is durable
			t.Fatal(err)
		}
		checkpoint()
		s.emit(5)
		if err := s.release(lag); err != nil { // the second
			t.Fatal(err)
		}
		d := checkpoint() // holds what is not delivered yet
		want := "[[1 2 3] [4]]"
		if lag {
			want = "[[1 2 3]]"
		}
		if got := fmt.Sprint(rec.writes); got != want {
			t.Fatalf("lag %t: writes %s, want %s", lag, got, want)
		}

		// A restore of the last checkpoint delivers what it holds at the
		// first release, with or without a lag.
		rec2 := &recordSink{}
		r := &committedSink[int64]{sink: rec2, vc: vc}
		if len(d.Puts) != 1 {
			t.Fatalf("lag %t: checkpoint puts %v", lag, d.Puts)
		}
		if err := r.restore(0, nil, d.Puts[0].Value); err != nil {
			t.Fatal(err)
		}
		if err := r.release(lag); err != nil {
			t.Fatal(err)
		}
		want = "[[5]]"
		if lag {
			want = "[[4 5]]"
		}
		if got := fmt.Sprint(rec2.writes); got != want {
			t.Fatalf("lag %t: after a restore, writes %s, want %s", lag, got, want)
		}
	}
}
