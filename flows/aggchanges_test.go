package flows_test

import (
	"fmt"
	"testing"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
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
	plan, err := f.Plan()
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
