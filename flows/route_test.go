package flows_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
)

// A reader routes a poll's records to their fragments one fragment after
// the other, yet every fragment applies its records in the order they
// came: an order-sensitive fold over two records per event, through
// batches smaller than what a poll brings some fragments, equals the fold
// in event order.
func TestReaderRoutesInOrder(t *testing.T) {
	in := flowstest.NewInput[int64](1)
	for i := range int64(3000) {
		in.Push(0, i)
	}
	in.Close()
	f := flows.New("route", flows.WithFragments(8))
	recs := flows.FlatMap(flows.From(f, "events", in), func(v int64, emit func(int64)) {
		emit(2 * v)
		emit(2*v + 1)
	})
	flows.Reduce(flows.KeyBy(recs, func(v int64) int64 { return v % 13 }), func(acc, v int64) int64 { return acc*31 + v }).View("folds")
	d, err := flowstest.New(f, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.BatchSize = 7
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	want := map[int64]int64{}
	for v := range int64(6000) {
		if acc, ok := want[v%13]; ok {
			want[v%13] = acc*31 + v
		} else {
			want[v%13] = v
		}
	}
	for k, w := range want {
		got, err := flowstest.GetOf[int64](d, "folds", fmt.Sprint(k))
		if err != nil {
			t.Fatal(err)
		}
		if got != w {
			t.Fatalf("key %d: fold %d, want %d", k, got, w)
		}
	}
}
