package flowcore_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/splice"
)

// An aggregate view's changes answer crosses nodes: its partial when it
// changed since the mark (or for no mark), else none and Unchanged.
func TestAggregateChangesRoundTrip(t *testing.T) {
	in := flowstest.NewInput[string](1)
	for i := range 20 {
		in.Push(0, fmt.Sprintf("w%d", i%3))
	}
	in.Close()
	f := flows.New("aggchanges", flows.WithFragments(1))
	flows.AggregateView(flows.KeyBy(flows.From(f, "in", in), flows.Identity[string]).Values(), "total",
		splice.Count[string](), flows.Identity[string])
	plan, err := flowcore.Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	fr := plan.NewFragment(0)
	roundTrip := func(req splice.Request) splice.Answer {
		t.Helper()
		a, err := fr.Query(req)
		if err != nil {
			t.Fatal(err)
		}
		enc, err := plan.EncodeAnswer(req.View, a)
		if err != nil {
			t.Fatal(err)
		}
		got, err := plan.DecodeAnswer(req.View, enc)
		if err != nil {
			t.Fatal(err)
		}
		if got.Changes == nil || fmt.Sprintf("%+v", *got.Changes) != fmt.Sprintf("%+v", *a.Changes) || fmt.Sprint(got.Partial) != fmt.Sprint(a.Partial) {
			t.Fatalf("decoded %+v (mark %+v), want %+v (mark %+v)", got, got.Changes, a, a.Changes)
		}
		return got
	}
	first := roundTrip(splice.Request{View: "total", Op: splice.OpChanges})
	if first.Changes.Unchanged || first.Changes.Reset || first.Partial != int64(0) {
		t.Fatalf("changes without a mark: %+v (mark %+v); want the partial 0", first, first.Changes)
	}
	since := splice.FormatMarks([]splice.ChangeMark{*first.Changes})
	if a := roundTrip(splice.Request{View: "total", Op: splice.OpChanges, Since: since}); !a.Changes.Unchanged || a.Partial != nil {
		t.Fatalf("changes after none: %+v (mark %+v); want unchanged", a, a.Changes)
	}
	for _, b := range batches(t, plan, 16) {
		if err := fr.Apply(b, b.PrevEnd); err != nil {
			t.Fatal(err)
		}
	}
	fr.Publish()
	a := roundTrip(splice.Request{View: "total", Op: splice.OpChanges, Since: since})
	if a.Changes.Unchanged || a.Partial != int64(20) {
		t.Fatalf("changes after 20 events: %+v (mark %+v); want the partial 20", a, a.Changes)
	}
	again := splice.FormatMarks([]splice.ChangeMark{*a.Changes})
	if a := roundTrip(splice.Request{View: "total", Op: splice.OpChanges, Since: again}); !a.Changes.Unchanged {
		t.Fatalf("changes after none: %+v (mark %+v); want unchanged", a, a.Changes)
	}
}

// A windowed view's and a windowed keyed view's changes answers cross
// nodes: the windows that changed, with their partials, or every window in
// range with its number of keys and the changed entries.
func TestWindowChangesRoundTrip(t *testing.T) {
	t0 := time.Date(2026, 11, 2, 6, 0, 0, 0, time.UTC)
	in := flowstest.NewInput[stamped](1)
	for i := range 30 {
		in.Push(0, stamped{Text: fmt.Sprintf("w%d", i%4), At: t0.Add(time.Duration(i) * 10 * time.Second)})
	}
	in.Close()
	f := flows.New("winchanges", flows.WithFragments(1))
	src := flows.From(f, "lines", in, flows.WithEventTime(func(s stamped) time.Time { return s.At }, time.Second))
	ks := flows.KeyBy(src, func(s stamped) string { return s.Text })
	w := flows.WindowAggregate(ks, flows.Tumbling(time.Minute), func() int64 { return 0 }, func(n int64, _ stamped) int64 { return n + 1 })
	flows.WindowView(w, "per-minute", splice.Sum[int64](), func(_ string, n int64) int64 { return n }, time.Hour)
	w.KeyedView("by-key", time.Hour)
	plan, err := flowcore.Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	fr := plan.NewFragment(0)
	marks := map[string]string{}
	for _, view := range []string{"per-minute", "by-key"} {
		a, err := fr.Query(splice.Request{View: view, Op: splice.OpChanges})
		if err != nil || a.Changes == nil {
			t.Fatalf("%s: changes without a mark: %+v, %v", view, a, err)
		}
		marks[view] = splice.FormatMarks([]splice.ChangeMark{*a.Changes})
	}
	for _, b := range batches(t, plan, 16) {
		if err := fr.Apply(b, b.PrevEnd); err != nil {
			t.Fatal(err)
		}
	}
	fr.Publish()
	for _, view := range []string{"per-minute", "by-key"} {
		req := splice.Request{View: view, Op: splice.OpChanges, Since: marks[view]}
		a, err := fr.Query(req)
		if err != nil || a.Changes == nil || a.Changes.Reset || len(a.Windows) == 0 {
			t.Fatalf("%s: changes since %s: %+v, %v; want the windows", view, marks[view], a, err)
		}
		enc, err := plan.EncodeAnswer(view, a)
		if err != nil {
			t.Fatal(err)
		}
		got, err := plan.DecodeAnswer(view, enc)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprintf("%v", got.Windows) != fmt.Sprintf("%v", a.Windows) || got.Changes == nil ||
			fmt.Sprintf("%+v", *got.Changes) != fmt.Sprintf("%+v", *a.Changes) {
			t.Fatalf("%s: decoded %+v (mark %+v), want %+v (mark %+v)", view, got, got.Changes, a, a.Changes)
		}
	}
}
