package flowstest_test

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/splice"
)

// publishFlow counts trips per origin→destination pair: hourly, in "all"
// and in "pub", which publishes only pairs with at least minTrips trips
// in the hour; and over all time, in "total" and "total-pub" (at least
// minTotal).
func publishFlow(in flows.Source[journey], minTrips, minTotal int64) *flows.Flow {
	f := flows.New("od", flows.WithFragments(4))
	src := flows.From(f, "trips", in, flows.WithEventTime(func(t journey) time.Time { return t.At }, time.Minute))
	od := flows.KeyBy(src, journeyOD)
	w := flows.WindowAggregate(od, flows.Tumbling(time.Hour), func() int64 { return 0 }, func(n int64, _ journey) int64 { return n + 1 })
	w.KeyedView("all", 48*time.Hour)
	w.KeyedView("pub", 48*time.Hour, flows.PublishIf(func(n int64) bool { return n >= minTrips }))
	c := flows.Count(od)
	c.View("total")
	c.View("total-pub", flows.PublishIf(func(n int64) bool { return n >= minTotal }))
	return f
}

// A view with PublishIf answers every query form as if it held only the
// entries it publishes: pages (limit, after) walk exactly those, top
// ranks among them, prefix filters them, a window counts them, and a
// lookup of a suppressed key is not found — on a windowed keyed view and
// a table's view.
func TestPublishIfLeavesEntriesOut(t *testing.T) {
	const minTrips, minTotal = 3, 34
	rng := rand.New(rand.NewPCG(3, 5))
	in := flowstest.NewInput[journey](2)
	in.Push(0, walkJourneys(rng, 600, 6, 2*time.Minute, 0)...)
	in.Push(1, walkJourneys(rng, 600, 6, 2*time.Minute, 0)...)
	in.Close()
	d, err := flowstest.New(publishFlow(in, minTrips, minTotal), time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	all, err := query(d, "all", splice.Query{Limit: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	suppressed := 0
	for _, kw := range all.KeyedWindows {
		want := map[string]int64{}
		for _, e := range kw.Entries {
			if n := e.Value.(int64); n >= minTrips {
				want[e.Key] = n
			} else {
				suppressed++
			}
		}
		q := splice.Query{From: kw.Start.UnixNano(), To: kw.Start.UnixNano() + 1}
		// Pages of 3 walk the published entries once each, in key order.
		got := map[string]int64{}
		var prev string
		for q.Limit = 3; ; {
			res, err := query(d, "pub", q)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.KeyedWindows) != 1 {
				t.Fatalf("window %v: %d windows in a page", kw.Start, len(res.KeyedWindows))
			}
			pw := res.KeyedWindows[0]
			if pw.Keys != int64(len(want)) {
				t.Fatalf("window %v counts %d keys, publishes %d", kw.Start, pw.Keys, len(want))
			}
			if res.More && len(pw.Entries) != q.Limit {
				t.Fatalf("window %v: a page of %d entries with more to come", kw.Start, len(pw.Entries))
			}
			for _, e := range pw.Entries {
				if e.Key <= prev {
					t.Fatalf("window %v: %s after %s", kw.Start, e.Key, prev)
				}
				prev = e.Key
				got[e.Key] = e.Value.(int64)
			}
			if !res.More {
				break
			}
			q.After, q.HasAfter = res.NextAfter, true
		}
		if !mapsEqual(got, want) {
			t.Fatalf("window %v: pages hold %v, want %v", kw.Start, got, want)
		}
		// Top ranks among the published entries.
		res, err := query(d, "pub", splice.Query{From: q.From, To: q.To, Top: 4, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		best := sortedByCount(want)
		if es := res.KeyedWindows[0].Entries; !slices.Equal(keysOf(es), best[:min(4, len(best))]) {
			t.Fatalf("window %v: top %v, want %v", kw.Start, keysOf(es), best[:min(4, len(best))])
		}
		// Prefix filters them.
		res, err = query(d, "pub", splice.Query{From: q.From, To: q.To, Prefix: "z01->", Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range res.KeyedWindows[0].Entries {
			if !strings.HasPrefix(e.Key, "z01->") || want[e.Key] == 0 {
				t.Fatalf("window %v: prefix answered %s", kw.Start, e.Key)
			}
		}
		// A lookup finds a published key and not a suppressed one.
		for _, e := range kw.Entries {
			res, err := queryKey(d, "pub", e.Key, splice.Query{From: q.From, To: q.To})
			if _, ok := want[e.Key]; ok != (err == nil) || (err != nil && !errors.Is(err, splice.ErrNotFound)) {
				t.Fatalf("window %v: lookup of %s (value %v): %v, %+v", kw.Start, e.Key, e.Value, err, res.KeyedWindows)
			}
		}
	}
	if suppressed == 0 {
		t.Fatal("no entry below the threshold: the test proves nothing")
	}
	// A table's view.
	total, err := query(d, "total", splice.Query{Limit: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{}
	for _, e := range total.Entries {
		if n := e.Value.(int64); n >= minTotal {
			want[e.Key] = n
		} else if _, err := queryKey(d, "total-pub", e.Key, splice.Query{}); !errors.Is(err, splice.ErrNotFound) {
			t.Fatalf("total-pub: lookup of %s with %d trips: %v", e.Key, n, err)
		}
	}
	if len(want) == 0 || len(want) == len(total.Entries) {
		t.Fatalf("%d of %d totals published: the test proves nothing", len(want), len(total.Entries))
	}
	got := map[string]int64{}
	for q := (splice.Query{Limit: 2}); ; {
		res, err := query(d, "total-pub", q)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range res.Entries {
			got[e.Key] = e.Value.(int64)
		}
		if !res.More {
			break
		}
		q.After, q.HasAfter = res.Entries[len(res.Entries)-1].Key, true
	}
	if !mapsEqual(got, want) {
		t.Fatalf("total-pub pages hold %v, want %v", got, want)
	}
}

func mapsEqual(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func sortedByCount(m map[string]int64) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.SortFunc(ks, func(a, b string) int { return cmp.Or(cmp.Compare(m[b], m[a]), strings.Compare(a, b)) })
	return ks
}

func keysOf(es []splice.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Key
	}
	return out
}

// A table view's top answer after a restart, or after one fragment's
// crash, is the one before it: the restored keys rank by their restored
// values. Before, a restore took its keys in at the zero value and their
// values after without telling the views' top sets: every restored key
// ranked at zero, and a PublishIf that refuses zero left them all out.
func TestTopAfterRestore(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	in := flowstest.NewInput[journey](2)
	in.Push(0, walkJourneys(rng, 600, 6, 2*time.Minute, 0)...)
	in.Push(1, walkJourneys(rng, 600, 6, 2*time.Minute, 0)...)
	in.Close()
	d, err := flowstest.New(publishFlow(in, 3, 34), time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	must(t, d.Drain())
	tops := func() string {
		var out []string
		for _, view := range []string{"total", "total-pub"} {
			res, err := query(d, view, splice.Query{Top: 5, Limit: 5})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range res.Entries {
				out = append(out, fmt.Sprintf("%s %s=%v", view, e.Key, e.Value))
			}
		}
		return strings.Join(out, ", ")
	}
	want := tops()
	if strings.Count(want, "total-pub") != 5 {
		t.Fatalf("top answers before a restore: %s, want five published entries", want)
	}
	must(t, d.Checkpoint())
	must(t, d.Crash(0))
	must(t, d.Drain())
	if got := tops(); got != want {
		t.Fatalf("after fragment 0's crash:\n\t%s\nwant\n\t%s", got, want)
	}
	must(t, d.Restart())
	must(t, d.Drain())
	if got := tops(); got != want {
		t.Fatalf("after a restart:\n\t%s\nwant\n\t%s", got, want)
	}
}

// Restamp dates the records a process function emits: an hourly window
// downstream counts them by their new time, late ones included within the
// allowed lateness.
func TestRestampDatesRecordsDownstream(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 1))
	evs := walkJourneys(rng, 800, 5, 2*time.Minute, 0)
	in := flowstest.NewInput[journey](1)
	in.Push(0, evs...)
	in.Close()
	const back = 40 * time.Minute
	f := flows.New("restamp", flows.WithFragments(3))
	src := flows.From(f, "trips", in, flows.WithEventTime(func(t journey) time.Time { return t.At }, time.Minute))
	echo := flows.Process(flows.KeyBy(src, func(j journey) string { return j.From }), flows.Handler[string, journey, int64, journey]{
		OnEvent: func(c *flows.Context[string, int64, journey], j journey) { c.Emit(j) },
	}).Out()
	dated := flows.Restamp(echo, func(j journey) time.Time { return j.At.Add(-back) })
	flows.WindowAggregate(flows.KeyBy(dated, journeyOD), flows.Tumbling(time.Hour), func() int64 { return 0 },
		func(n int64, _ journey) int64 { return n + 1 }, flows.AllowedLateness(2*back)).KeyedView("od", 48*time.Hour)
	d, err := flowstest.New(f, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Settle(); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{}
	for _, j := range evs {
		want[j.At.Add(-back).Truncate(time.Hour).UTC().Format(time.RFC3339)+" "+journeyOD(j)]++
	}
	res, err := query(d, "od", splice.Query{Limit: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, kw := range res.KeyedWindows {
		for _, e := range kw.Entries {
			got[kw.Start.Format(time.RFC3339)+" "+e.Key] = e.Value.(int64)
		}
	}
	if !mapsEqual(got, want) {
		t.Fatalf("%d hourly cells, want %d", len(got), len(want))
	}
	bad := flows.New("bad")
	flows.Restamp(flows.From(bad, "trips", in), func(j journey) time.Time { return j.At })
	if bad.Validate() == nil {
		t.Fatal("Restamp before the key validated")
	}
}
