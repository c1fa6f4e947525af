package flowcore_test

import (
	"context"
	"errors"
	"io"
	"testing"

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
