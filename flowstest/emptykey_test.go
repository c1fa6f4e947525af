package flowstest_test

import (
	"math"
	"slices"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/splice"
)

// The empty key is a key like any other: pages of one entry reach every
// key after it, in a keyed view and in each window of a windowed keyed
// view, and a lookup finds it. A query without HasAfter starts at the
// first key; with it, an After of "" starts after the empty key.
func TestEmptyKeyPagesAndLookups(t *testing.T) {
	keys := []string{"", "a", "", "b", "", "c", "a"}
	var evs []journey
	at := time.Date(2026, 11, 2, 6, 0, 0, 0, time.UTC)
	for i, k := range keys {
		evs = append(evs, journey{From: k, At: at.Add(time.Duration(i) * time.Minute)})
	}
	in := flowstest.NewInput[journey](1)
	in.Push(0, evs...)
	in.Close()
	f := flows.New("empty", flows.WithFragments(3))
	byFrom := flows.KeyBy(flows.From(f, "trips", in, flows.WithEventTime(func(j journey) time.Time { return j.At }, 0)),
		func(j journey) string { return j.From })
	flows.Count(byFrom).View("n")
	flows.WindowAggregate(byFrom, flows.Tumbling(time.Hour), func() int64 { return 0 },
		func(n int64, _ journey) int64 { return n + 1 }).KeyedView("w", 48*time.Hour)
	d, err := flowstest.New(f, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Settle(); err != nil {
		t.Fatal(err)
	}
	want := []string{"", "a", "b", "c"}

	var paged []string
	q := splice.Query{Limit: 1}
	for range 10 {
		es, err := d.Entries("n", q)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			paged = append(paged, e.Key)
		}
		if len(es) == 0 {
			break
		}
		q.After, q.HasAfter = es[len(es)-1].Key, true
	}
	if !slices.Equal(paged, want) {
		t.Fatalf("keyed view in pages of 1: %q, want %q", paged, want)
	}
	if v, err := d.Get("n", ""); err != nil || v != int64(3) {
		t.Fatalf("the empty key: %v, %v; want 3", v, err)
	}
	if es, err := d.Entries("n", splice.Query{Limit: 10, After: ""}); err != nil || len(es) != 4 {
		t.Fatalf("no HasAfter: %v, %v; want every key", es, err)
	}

	paged = paged[:0]
	wq := splice.Query{From: math.MinInt64, Limit: 1}
	for range 10 {
		res, err := query(d, "w", wq)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.KeyedWindows) != 1 {
			t.Fatalf("windows: %+v", res.KeyedWindows)
		}
		for _, e := range res.KeyedWindows[0].Entries {
			paged = append(paged, e.Key)
		}
		if !res.More {
			break
		}
		wq.After, wq.HasAfter = res.NextAfter, true
	}
	if !slices.Equal(paged, want) {
		t.Fatalf("windowed keyed view in pages of 1: %q, want %q", paged, want)
	}
	res, err := queryKey(d, "w", "", splice.Query{From: math.MinInt64})
	if err != nil || len(res.KeyedWindows) != 1 || len(res.KeyedWindows[0].Entries) != 1 || res.KeyedWindows[0].Entries[0].Value != int64(3) {
		t.Fatalf("the empty key's windows: %+v, %v", res.KeyedWindows, err)
	}
}
