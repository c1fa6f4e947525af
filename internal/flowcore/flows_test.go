package flowcore_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/shard"
	"github.com/tessera-streams/tessera/splice"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// wordFlow counts words from lines, with a keyed view, aggregate views and
// a panic on the word "boom".
func wordFlow(in flows.Source[string], fragments int) *flows.Flow {
	f := flows.New("words", flows.WithFragments(fragments))
	lines := flows.From(f, "lines", in)
	words := flows.FlatMap(lines, func(l string, emit func(string)) {
		for _, w := range strings.Fields(l) {
			emit(w)
		}
	})
	words = flows.Filter(words, func(w string) bool { return w != "the" })
	keyed := flows.KeyBy(words, func(w string) string { return strings.ToLower(w) })
	flows.Count(keyed).View("counts")
	flows.Reduce(keyed, func(a, b string) string {
		if b == "boom" {
			panic("boom")
		}
		return b
	}).View("last")
	vals := keyed.Values()
	flows.AggregateView(vals, "total", splice.Count[string](), flows.Identity[string])
	flows.AggregateView(vals, "distinct", splice.DistinctCount(), func(w string) []byte { return []byte(w) })
	flows.AggregateView(flows.Map(vals, func(w string) int64 { return int64(len(w)) }), "letters", splice.Sum[int64](), flows.Identity[int64])
	return f
}

func TestWordCountMatchesSequential(t *testing.T) {
	in := flowstest.NewInput[string](3)
	d, err := flowstest.New(wordFlow(in, 16), t0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.BatchSize = 7
	want := map[string]int64{}
	var total, letters int64
	raw := map[string]bool{}
	for i := range 3000 {
		line := fmt.Sprintf("the w%d W%d x%d", i%17, i%17, i%5)
		in.Push(i%3, line)
		for _, w := range strings.Fields(line)[1:] {
			want[strings.ToLower(w)]++
			raw[w] = true
			total++
			letters += int64(len(w))
		}
	}
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	for w, n := range want {
		got, err := d.Get("counts", w)
		if err != nil || got != n {
			t.Fatalf("counts[%s] = %v, %v; want %d", w, got, err, n)
		}
	}
	if v, _ := d.Value("total"); v != total {
		t.Fatalf("total = %v, want %d", v, total)
	}
	if v, _ := d.Value("letters"); v != letters {
		t.Fatalf("letters = %v, want %d", v, letters)
	}
	if v, _ := d.Value("distinct"); v != uint64(len(raw)) {
		t.Fatalf("distinct = %v, want %d", v, len(raw))
	}
	es, err := d.Entries("counts", splice.Query{Top: 3})
	if err != nil || len(es) != 3 || es[0].Value != int64(600) {
		t.Fatalf("top = %v, %v", es, err)
	}
	// Key order, paging with after=.
	page1, _ := d.Entries("counts", splice.Query{Limit: 5})
	page2, _ := d.Entries("counts", splice.Query{Limit: 5, After: page1[4].Key})
	if len(page1) != 5 || len(page2) != 5 || page1[4].Key >= page2[0].Key {
		t.Fatalf("paging: %v then %v", keys(page1), keys(page2))
	}
	if _, err := d.Get("counts", "the"); !errors.Is(err, splice.ErrNotFound) {
		t.Fatalf("filtered word: err = %v", err)
	}
	if len(d.DeadLetters()) != 0 {
		t.Fatalf("dead letters: %v", d.DeadLetters())
	}
}

func keys(es []splice.Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Key)
	}
	return out
}

// Splicing any number of fragments equals processing every event on one.
func TestSpliceEqualsOneFragment(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		lines := rapid.SliceOf(rapid.SliceOfN(rapid.SampledFrom([]string{"a", "b", "c", "D", "e", "the", "ff"}), 0, 5)).Draw(t, "lines")
		g := rapid.IntRange(1, 40).Draw(t, "fragments")
		p := rapid.IntRange(1, 4).Draw(t, "partitions")
		bs := rapid.IntRange(1, 50).Draw(t, "batch")
		run := func(frags, parts int) map[string]any {
			in := flowstest.NewInput[string](parts)
			d, err := flowstest.New(wordFlow(in, frags), t0)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			d.BatchSize = bs
			for i, l := range lines {
				in.Push(i%parts, strings.Join(l, " "))
			}
			if err := d.Drain(); err != nil {
				t.Fatal(err)
			}
			out := map[string]any{}
			for _, v := range []string{"total", "distinct", "letters"} {
				out[v], _ = d.Value(v)
			}
			es, _ := d.Entries("counts", splice.Query{})
			for _, e := range es {
				out["counts/"+e.Key] = e.Value
			}
			return out
		}
		one, many := run(1, 1), run(g, p)
		if !reflect.DeepEqual(one, many) {
			t.Fatalf("one fragment %v\n%d fragments %v", one, g, many)
		}
	})
}

func TestPoisonEventIsRetriedThenDeadLettered(t *testing.T) {
	in := flowstest.NewInput[string](1)
	d, err := flowstest.New(wordFlow(in, 4), t0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	in.Push(0, "x boom y", "x boom y z")
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	dl := d.DeadLetters()
	if len(dl) != 1 || dl[0].Offset != 1 || dl[0].Key != "boom" || !strings.Contains(dl[0].Error, "after 3 attempts") {
		t.Fatalf("dead letters = %+v", dl)
	}
	if d.Restores() != 3 {
		t.Fatalf("%d restores, want 3", d.Restores())
	}
	// The poisoned event is skipped whole in its fragment (its count of
	// "boom" too, and of any word of the event in the same fragment); its
	// words in other fragments count once. Nothing is half applied.
	frag := func(w string) int { return shard.Fragment(shard.String(w), 4) }
	var total int64
	for w, n := range map[string]int64{"x": 2, "y": 2, "z": 1, "boom": 2} {
		if frag(w) == frag("boom") {
			n--
		}
		total += n
		if got, _ := d.Get("counts", w); got != n {
			t.Errorf("counts[%s] = %v, want %d", w, got, n)
		}
	}
	if got, _ := d.Value("total"); got != total {
		t.Errorf("total = %v, want %d", got, total)
	}
}

type session struct {
	Events int
	Start  time.Time
}

func TestProcessWithTimers(t *testing.T) {
	in := flowstest.NewInput[string](1)
	f := flows.New("sessions", flows.WithFragments(8))
	ks := flows.KeyBy(flows.From(f, "clicks", in), func(u string) string { return u })
	p := flows.Process(ks, flows.Handler[string, string, session, string]{
		OnEvent: func(c *flows.Context[string, session, string], _ string) {
			s, ok := c.State()
			if !ok {
				s.Start = c.Now()
			}
			s.Events++
			c.SetState(s)
			c.SetProcessingTimer(c.Now().Add(time.Minute))
		},
		OnTimer: func(c *flows.Context[string, session, string], at time.Time) {
			if s, _ := c.State(); !c.Now().Before(s.Start.Add(time.Minute)) {
				c.Emit(fmt.Sprintf("%s:%d", c.Key(), s.Events))
				c.ClearState()
			}
		},
	})
	p.View("open", flows.ScoreBy(func(s session) float64 { return float64(s.Events) }))
	outs := flowstest.Collect(p.Out())
	d, err := flowstest.New(f, t0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	in.Push(0, "ann", "bob", "ann")
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	if err := d.Advance(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if closed := outs.Values(); len(closed) != 0 {
		t.Fatalf("closed early: %v", closed)
	}
	if v, _ := d.Get("open", "ann"); v.(session).Events != 2 {
		t.Fatalf("open[ann] = %v", v)
	}
	if err := d.Advance(31 * time.Second); err != nil {
		t.Fatal(err)
	}
	if closed := outs.Values(); len(closed) != 2 || !slices.Contains(closed, "ann:2") || !slices.Contains(closed, "bob:1") {
		t.Fatalf("closed = %v", closed)
	}
	if _, err := d.Get("open", "ann"); !errors.Is(err, splice.ErrNotFound) {
		t.Fatalf("state not cleared: %v", err)
	}
}

func TestSinkIDsAreDeterministic(t *testing.T) {
	run := func() []flows.OutputID {
		in := flowstest.NewInput[string](2)
		f := flows.New("ids", flows.WithFragments(4))
		ks := flows.KeyBy(flows.From(f, "in", in), func(s string) string { return s })
		outs := flowstest.Collect(ks.Values())
		d, err := flowstest.New(f, t0)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		in.Push(0, "a", "b", "a")
		in.Push(1, "c")
		if err := d.Drain(); err != nil {
			t.Fatal(err)
		}
		var ids []flows.OutputID
		for _, o := range outs.Outputs() {
			ids = append(ids, o.ID)
		}
		return ids
	}
	a, b := run(), run()
	if len(a) != 4 || !reflect.DeepEqual(a, b) {
		t.Fatalf("ids differ or missing: %v vs %v", a, b)
	}
}

type opaque struct{ n int } // unexported field: no default codec

// opaqueCodec is a user's codec for opaque.
type opaqueCodec struct{}

func (opaqueCodec) Append(dst []byte, v opaque) ([]byte, error) {
	return binary.AppendVarint(dst, int64(v.n)), nil
}

func (opaqueCodec) Decode(b []byte) (opaque, error) {
	n, k := binary.Varint(b)
	if k <= 0 || k != len(b) {
		return opaque{}, fmt.Errorf("opaque: bad varint of %d bytes", len(b))
	}
	return opaque{int(n)}, nil
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// A state type without a default codec runs with the codec the flow
// passes, checkpoints included.
func TestUserStateCodec(t *testing.T) {
	f := flows.New("x", flows.WithFragments(2))
	in := flowstest.NewInput[string](1)
	ks := flows.KeyBy(flows.From(f, "in", in), flows.Identity[string])
	flows.Aggregate(ks, func() opaque { return opaque{} }, func(o opaque, _ string) opaque { return opaque{o.n + 1} },
		flows.WithStateCodec[opaque](opaqueCodec{})).View("n")
	d, err := flowstest.New(f, t0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	in.Push(0, "a", "b", "a")
	for _, step := range []func() error{d.Drain, d.Checkpoint, func() error { return d.Crash(0) }, func() error { return d.Crash(1) }} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	in.Push(0, "a")
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	if got, err := flowstest.GetOf[opaque](d, "n", "a"); err != nil || got.n != 3 {
		t.Fatalf("a = %v, %v; want 3 after restoring through the codec", got, err)
	}
	if d.Restores() != 2 {
		t.Fatalf("%d restores, want 2", d.Restores())
	}
}

func TestValidate(t *testing.T) {
	in := flowstest.NewInput[string](1)
	cases := []struct {
		name  string
		build func() *flows.Flow
		want  string
	}{
		{"no source", func() *flows.Flow { return flows.New("x") }, "has no source"},
		{"no outputs", func() *flows.Flow {
			f := flows.New("x")
			flows.From(f, "in", in)
			return f
		}, "no view and no sink"},
		{"duplicate views", func() *flows.Flow {
			f := flows.New("x")
			ks := flows.KeyBy(flows.From(f, "in", in), flows.Identity[string])
			flows.Count(ks).View("v")
			flows.Count(ks).View("v")
			return f
		}, `duplicate view name "v"`},
		{"aggregate view before the key", func() *flows.Flow {
			f := flows.New("x")
			flows.AggregateView(flows.From(f, "in", in), "n", splice.Count[string](), flows.Identity[string])
			return f
		}, "must come after KeyBy"},
		{"missing key codec", func() *flows.Flow {
			f := flows.New("x")
			ks := flows.KeyBy(flows.From(f, "in", in), func(s string) [2]int { return [2]int{} })
			flows.Count(ks).View("v")
			return f
		}, "missing codec"},
		{"missing state codec", func() *flows.Flow {
			f := flows.New("x")
			ks := flows.KeyBy(flows.From(f, "in", in), flows.Identity[string])
			flows.Aggregate(ks, func() opaque { return opaque{} }, func(o opaque, _ string) opaque { return o }).View("v")
			return f
		}, "missing codec for state"},
		{"state codec of another type", func() *flows.Flow {
			f := flows.New("x")
			ks := flows.KeyBy(flows.From(f, "in", in), flows.Identity[string])
			flows.Aggregate(ks, func() opaque { return opaque{} }, func(o opaque, _ string) opaque { return o },
				flows.WithStateCodec(must(flows.DefaultCodec[int]()))).View("v")
			return f
		}, "is not a Codec[flowcore_test.opaque]"},
		{"key codec of another type", func() *flows.Flow {
			f := flows.New("x")
			ks := flows.KeyBy(flows.From(f, "in", in), flows.Identity[string], flows.WithKeyCodec(must(flows.DefaultKeyCodec[int]())))
			flows.Count(ks).View("v")
			return f
		}, "is not a KeyCodec[string]"},
		{"event-time order without event time", func() *flows.Flow {
			f := flows.New("x")
			ks := flows.KeyBy(flows.From(f, "in", in), flows.Identity[string])
			p := flows.Process(ks, flows.Handler[string, string, int, string]{OnEvent: func(*flows.Context[string, int, string], string) {}},
				flows.InEventTimeOrder())
			flows.Count(flows.KeyBy(p.Out(), flows.Identity[string])).View("v")
			return f
		}, "InEventTimeOrder needs a source with event time"},
		{"nil function", func() *flows.Flow {
			f := flows.New("x")
			ks := flows.KeyBy(flows.Map[string, string](flows.From(f, "in", in), nil), flows.Identity[string])
			flows.Count(ks).View("v")
			return f
		}, "function is nil"},
		{"window without event time", func() *flows.Flow {
			f := flows.New("x")
			ks := flows.KeyBy(flows.From(f, "in", in), flows.Identity[string])
			flows.To(flows.WindowAggregate(ks, flows.Tumbling(time.Minute), func() int { return 0 }, func(n int, _ string) int { return n }).Results(),
				flows.SinkFunc[flows.WindowResult[string, int]](func([]flows.Output[flows.WindowResult[string, int]]) error { return nil }))
			return f
		}, "has no event time"},
		{"bad sliding windows", func() *flows.Flow {
			f := flows.New("x")
			src := flows.From(f, "in", in, flows.WithEventTime(func(string) time.Time { return time.Time{} }, 0))
			ks := flows.KeyBy(src, flows.Identity[string])
			flows.To(flows.SessionAggregate(ks, time.Minute, func() int { return 0 }, func(n int, _ string) int { return n },
				func(a, b int) int { return a + b }, flows.AllowedLateness(-time.Second)).Results(),
				flows.SinkFunc[flows.WindowResult[string, int]](func([]flows.Output[flows.WindowResult[string, int]]) error { return nil }))
			flows.WindowAggregate(ks, flows.Sliding(time.Second, time.Minute), func() int { return 0 }, func(n int, _ string) int { return n })
			return f
		}, "negative allowed lateness"},
		{"window without an inverse", func() *flows.Flow {
			f := flows.New("x")
			src := flows.From(f, "in", in, flows.WithEventTime(func(string) time.Time { return time.Time{} }, 0))
			ks := flows.KeyBy(src, flows.Identity[string])
			flows.WindowAggregateInvertible(ks, flows.Sliding(time.Minute, time.Second), func() int { return 0 }, func(n int, _ string) int { return n },
				func(a, b int) int { return a + b }, nil)
			return f
		}, "merge and inverse must not be nil"},
		{"TTL without event time", func() *flows.Flow {
			f := flows.New("x")
			ks := flows.KeyBy(flows.From(f, "in", in), flows.Identity[string])
			flows.Process(ks, flows.Handler[string, string, int, int]{OnEvent: func(*flows.Context[string, int, int], string) {}},
				flows.WithStateTTL(time.Minute)).View("v")
			return f
		}, "needs a source with event time"},
		{"bad fragments", func() *flows.Flow {
			f := flows.New("x", flows.WithFragments(0))
			ks := flows.KeyBy(flows.From(f, "in", in), flows.Identity[string])
			flows.Count(ks).View("v")
			return f
		}, "fragments must be"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.build().Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate() = %v, want %q", err, c.want)
			}
			if _, err := flowstest.New(c.build(), t0); err == nil {
				t.Fatal("a flow that fails Validate was run")
			}
		})
	}
}
