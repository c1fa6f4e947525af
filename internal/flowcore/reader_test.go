package flowcore_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
)

// A reader that starts past the beginning (it moved to another node, or
// its node restarted) tells every fragment where it starts, even with
// nothing new to read: a fragment behind that offset — its rewind was
// answered by the old reader just before it moved, with nothing yet
// re-read — sees the gap in that batch and asks again. A reader that
// starts at the beginning has nothing to tell before it reads.
func TestReaderStartingLateTellsEveryFragment(t *testing.T) {
	in := flowstest.NewInput[int64](1)
	for i := range 50 {
		in.Push(0, int64(i))
	}
	const fragments = 4
	f := flows.New("late", flows.WithFragments(fragments))
	flows.Count(flows.KeyBy(flows.From(f, "events", in), func(v int64) int64 { return v % 7 })).View("counts")
	plan, err := flowcore.Compile(f)
	if err != nil {
		t.Fatal(err)
	}

	r, err := plan.OpenReader(0, 0, 50, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Poll(context.Background(), 16); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	for fr := range fragments {
		if !r.Due(fr) {
			t.Fatalf("a reader started at 50 has nothing due for fragment %d", fr)
		}
		b := r.Take(fr)
		if b.PrevEnd != 50 || b.End != 50 {
			t.Fatalf("fragment %d: batch [%d, %d), want [50, 50)", fr, b.PrevEnd, b.End)
		}
		b.Release()
		if r.Due(fr) {
			t.Fatalf("fragment %d is due again with nothing new", fr)
		}
	}

	r0, err := plan.OpenReader(0, 0, 0, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer r0.Close()
	for fr := range fragments {
		if r0.Due(fr) {
			t.Fatalf("a reader started at 0 has a batch due for fragment %d before it read", fr)
		}
	}
}

// badSource is one bounded partition of n events, 0 to n-1 at offsets 0
// to n-1, but the records at offsets in bad are malformed.
type badSource struct {
	n   int64
	bad map[int64]bool
}

func (s badSource) Partitions() int { return 1 }
func (s badSource) Open(_ int, from int64) (flows.PartitionReader[int64], error) {
	return &badReader{s: s, at: from}, nil
}

type badReader struct {
	s  badSource
	at int64
}

func (r *badReader) Read(_ context.Context, b *flows.ReadBatch[int64], max int) error {
	for ; r.at < r.s.n && len(b.Events) < max; r.at++ {
		if r.s.bad[r.at] {
			b.Bad = append(b.Bad, flows.BadRecord{Offset: r.at, Where: "bad", Err: errors.New("malformed")})
			continue
		}
		b.Events, b.Offsets = append(b.Events, r.at), append(b.Offsets, r.at)
	}
	b.End = r.at
	if r.at == r.s.n {
		return io.EOF
	}
	return nil
}
func (r *badReader) Close() error { return nil }

// A reader rewound (a fragment restored, or asked again after a gap)
// reads its partition again, and with it the records it already sent to
// the dead letters: it reports each of them once — a malformed record, an
// event a user function before the key panicked on, an event time out of
// range — and after the rewind still reports the ones it had not reached.
// A reader opened anew has reported nothing and reports what it reads.
func TestRewoundReaderReportsDeadLettersOnce(t *testing.T) {
	const n = 40
	src := badSource{n: n, bad: map[int64]bool{3: true, 25: true}}
	f := flows.New("dead", flows.WithFragments(2))
	evs := flows.From(f, "events", src, flows.WithEventTime(func(v int64) time.Time {
		if v == 17 || v == 31 {
			return time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)
		}
		return time.Unix(v, 0)
	}, time.Second))
	evs = flows.Map(evs, func(v int64) int64 {
		if v == 9 || v == 35 {
			panic("nine")
		}
		return v
	})
	flows.Count(flows.KeyBy(evs, func(v int64) int64 { return v % 3 })).View("counts")
	plan, err := flowcore.Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	// offsets reports the offsets of the dead letters r reports while it
	// reads to offset end.
	offsets := func(r *flowcore.Reader, end int64) []int64 {
		var got []int64
		for r.Position() < end {
			if _, err := r.Poll(context.Background(), 4); err != nil && !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			for _, b := range r.TakeBad() {
				got = append(got, b.Offset)
			}
			for _, d := range r.TakeDeadLetters() {
				got = append(got, d.Offset)
			}
		}
		slices.Sort(got)
		return got
	}
	r, err := plan.OpenReader(0, 0, 0, 8)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got, want := offsets(r, 20), []int64{3, 9, 17}; !slices.Equal(got, want) {
		t.Fatalf("dead letters of [0, 20): %v, want %v", got, want)
	}
	for _, to := range []int64{0, 5, 12} {
		if err := r.Rewind(to); err != nil {
			t.Fatal(err)
		}
		if got := offsets(r, 20); len(got) != 0 {
			t.Fatalf("rewound to %d and read to 20 again: dead letters %v again", to, got)
		}
	}
	if err := r.Rewind(2); err != nil {
		t.Fatal(err)
	}
	if got, want := offsets(r, n), []int64{25, 31, 35}; !slices.Equal(got, want) {
		t.Fatalf("rewound to 2 and read to the end: dead letters %v, want %v", got, want)
	}

	again, err := plan.OpenReader(0, 0, 4, 8)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if got, want := offsets(again, n), []int64{9, 17, 25, 31, 35}; !slices.Equal(got, want) {
		t.Fatalf("a reader opened at 4: dead letters %v, want %v", got, want)
	}
}
