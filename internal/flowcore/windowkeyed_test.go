package flowcore_test

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/splice"
)

type wordStats struct {
	N    int64
	Last time.Time
}

// wordsByMinute counts words and keeps the time of their last use in
// two-minute windows every minute: a keyed window view of a struct value
// ("words"), next to a keyed view ("counts").
func wordsByMinute(in flows.Source[stamped], fragments int, opts ...flows.ViewOption[wordStats]) *flows.Flow {
	f := flows.New("words", flows.WithFragments(fragments))
	src := flows.From(f, "lines", in, flows.WithEventTime(func(s stamped) time.Time { return s.At }, time.Second))
	words := flows.FlatMap(src, func(s stamped, emit func(stamped)) {
		for _, w := range strings.Fields(s.Text) {
			emit(stamped{Text: w, At: s.At})
		}
	})
	ks := flows.KeyBy(words, func(s stamped) string { return s.Text })
	flows.WindowAggregate(ks, flows.Sliding(2*time.Minute, time.Minute), func() wordStats { return wordStats{} },
		func(a wordStats, s stamped) wordStats { return wordStats{a.N + 1, s.At} }).
		KeyedView("words", time.Hour, opts...)
	flows.Count(ks).View("counts")
	return f
}

func wordsFragment(t testing.TB, n int, opts ...flows.ViewOption[wordStats]) (*flowcore.Plan, *flowcore.Fragment) {
	in := flowstest.NewInput[stamped](1)
	for i := range n {
		in.Push(0, stamped{Text: fmt.Sprintf("w%d w%d", i%7, i%3), At: t0.Add(time.Duration(i) * 13 * time.Second)})
	}
	plan, err := flowcore.Compile(wordsByMinute(in, 1, opts...))
	if err != nil {
		t.Fatal(err)
	}
	fr := plan.NewFragment(0)
	for _, b := range batches(t, plan, 16) {
		if err := fr.Apply(b, b.PrevEnd); err != nil {
			t.Fatal(err)
		}
	}
	return plan, fr
}

// A fragment of a keyed window view answers only requests by window, and
// top only with a score (numbers have one; a struct needs one given).
func TestKeyedWindowViewRequests(t *testing.T) {
	_, fr := wordsFragment(t, 50)
	for _, req := range []splice.Request{
		{View: "words", Op: splice.OpEntries, Query: splice.Query{Limit: 10}},
		{View: "words", Op: splice.OpKey, Key: "w1"},
		{View: "words", Op: splice.OpValue},
		{View: "words", Op: splice.OpWindowEntries, Query: splice.Query{From: math.MinInt64, Top: 3}},
	} {
		if _, err := fr.Query(req); !errors.Is(err, splice.ErrBadRequest) {
			t.Errorf("%+v: %v, want a bad request", req, err)
		}
	}
}

func TestKeyedWindowViewValidate(t *testing.T) {
	in := flowstest.NewInput[string](1)
	for _, c := range []struct {
		name  string
		build func(ks flows.KeyedStream[string, string])
		want  string
	}{
		{"session windows", func(ks flows.KeyedStream[string, string]) {
			flows.SessionAggregate(ks, time.Minute, func() int { return 0 }, func(n int, _ string) int { return n + 1 },
				func(a, b int) int { return a + b }).KeyedView("v", time.Hour)
		}, `keyed window view "v": session windows have per-key bounds`},
		{"global window", func(ks flows.KeyedStream[string, string]) {
			flows.WindowAggregate(ks, flows.Global(), func() int { return 0 }, func(n int, _ string) int { return n + 1 }).
				KeyedView("v", time.Hour)
		}, `keyed window view "v": a global window has no bounds`},
		{"negative retention", func(ks flows.KeyedStream[string, string]) {
			flows.WindowAggregate(ks, flows.Tumbling(time.Minute), func() int { return 0 }, func(n int, _ string) int { return n + 1 }).
				KeyedView("v", -time.Second)
		}, `keyed window view "v": negative retention`},
		{"duplicate name", func(ks flows.KeyedStream[string, string]) {
			flows.WindowAggregate(ks, flows.Tumbling(time.Minute), func() int { return 0 }, func(n int, _ string) int { return n + 1 }).
				KeyedView("v", time.Hour).KeyedView("v", time.Hour)
		}, `duplicate view name "v"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := flows.New("x")
			src := flows.From(f, "in", in, flows.WithEventTime(func(string) time.Time { return t0 }, 0))
			ks := flows.KeyBy(src, flows.Identity[string])
			flows.Count(ks).View("count")
			c.build(ks)
			if err := f.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate() = %v, want %q", err, c.want)
			}
		})
	}
}

// BenchmarkWindowKeyedView applies events to a window operator's fragment
// without and with a keyed window view: the view reads the operator's
// state when asked, so it must cost the events next to nothing.
func BenchmarkWindowKeyedView(b *testing.B) {
	for _, withView := range []bool{false, true} {
		b.Run(fmt.Sprintf("view=%v", withView), func(b *testing.B) {
			in := flowstest.NewInput[stamped](1)
			const events = 20_000
			for i := range events {
				in.Push(0, stamped{Text: fmt.Sprintf("w%d", i%500), At: t0.Add(time.Duration(i) * 50 * time.Millisecond)})
			}
			f := flows.New("bench", flows.WithFragments(1))
			src := flows.From(f, "lines", in, flows.WithEventTime(func(s stamped) time.Time { return s.At }, time.Second))
			ks := flows.KeyBy(src, func(s stamped) string { return s.Text })
			w := flows.WindowAggregate(ks, flows.Tumbling(time.Minute), func() int64 { return 0 }, func(n int64, _ stamped) int64 { return n + 1 })
			results := 0
			flows.To(w.Results(), flows.SinkFunc[flows.WindowResult[string, int64]](func(os []flows.Output[flows.WindowResult[string, int64]]) error {
				results += len(os)
				return nil
			}))
			if withView {
				w.KeyedView("words", time.Hour)
			}
			benchFragment(b, f, events, &results)
		})
	}
}
