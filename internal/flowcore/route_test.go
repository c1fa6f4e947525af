package flowcore_test

import (
	"context"
	"errors"
	"io"
	"strconv"
	"testing"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
)

// A reader's batches hold every record once, each key in one fragment's
// batches only and in the order read, whether a poll routes fewer records
// to a fragment than its batch buffer has room for or more (the buffer
// grows), and whether the batches are taken when full or left to grow.
func TestRoutedBatchesHoldEveryRecordInOrder(t *testing.T) {
	const events, fragments = 5000, 8
	in := flowstest.NewInput[int64](1)
	for i := range events {
		in.Push(0, int64(i))
	}
	in.Close()
	f := flows.New("route", flows.WithFragments(fragments))
	ks := flows.KeyBy(flows.From(f, "events", in), func(v int64) int64 { return v % 97 })
	flows.Count(ks).View("counts")
	plan, err := flowcore.Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	frs := make([]*flowcore.Fragment, fragments)
	for i := range frs {
		frs[i] = plan.NewFragment(i)
	}
	r, err := plan.OpenReader(0, 0, 0, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	got := make([][]int64, fragments)
	take := func(fr int) {
		b := r.Take(fr)
		for _, s := range flowcore.BatchEvents(frs[fr], b) {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				t.Fatalf("fragment %d: event %q: %v", fr, s, err)
			}
			got[fr] = append(got[fr], v)
		}
		b.Release()
	}
	// Polls of 3 records (a fragment's buffer has room) to 700 (it has
	// not), and batches left pending past full on every other poll.
	sizes := []int{3, 700, 40, 1, 250}
	for poll := 0; ; poll++ {
		_, err := r.Poll(context.Background(), sizes[poll%len(sizes)])
		eof := errors.Is(err, io.EOF)
		if err != nil && !eof {
			t.Fatal(err)
		}
		full := r.Full()
		if eof {
			for fr := range fragments {
				take(fr)
			}
			break
		}
		if poll%2 == 0 {
			for _, fr := range full {
				take(fr)
			}
		}
	}

	seen := make([]bool, events)
	keyAt := map[int64]int{}
	for fr, vs := range got {
		for i, v := range vs {
			if v < 0 || v >= events || seen[v] {
				t.Fatalf("fragment %d got event %d twice or out of range", fr, v)
			}
			seen[v] = true
			if i > 0 && vs[i-1] >= v {
				t.Fatalf("fragment %d got event %d after %d", fr, v, vs[i-1])
			}
			if at, ok := keyAt[v%97]; ok && at != fr {
				t.Fatalf("key %d went to fragments %d and %d", v%97, at, fr)
			}
			keyAt[v%97] = fr
		}
	}
	for v, ok := range seen {
		if !ok {
			t.Fatalf("event %d was not routed", v)
		}
	}
}
