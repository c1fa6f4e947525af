package flowcore_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/splice"
)

type lyClick struct {
	User string
	At   int64
}

// lyFlow is a flow with every kind of stateful operator: a Process with a
// TTL re-keyed into a table, windows with a windowed keyed view and a
// window view, sessions, an aggregate view and a sink on checkpoints.
// tag goes into a Map's function only: the layout must not see it.
func lyFlow(t *testing.T, tag string, window time.Duration, opts ...flowcore.WindowOption) *flowcore.Plan {
	t.Helper()
	in := flowstest.NewInput[lyClick](2)
	f := flowcore.New("layout")
	s := flowcore.From(f, "clicks", flowcore.Source[lyClick](in),
		flowcore.WithEventTime(func(c lyClick) time.Time { return time.Unix(0, c.At) }, time.Second))
	s = flowcore.Map(s, func(c lyClick) lyClick { c.User += tag; return c })
	users := flowcore.KeyBy(s, func(c lyClick) string { return c.User })
	p := flowcore.Process(users, flowcore.Handler[string, lyClick, int64, string]{
		OnEvent: func(c *flowcore.Context[string, int64, string], v lyClick) {}}, flowcore.WithStateTTL(time.Hour))
	p.View("last")
	flowcore.Count(flowcore.KeyBy(p.Out(), func(s string) string { return s })).View("outs")
	w := flowcore.WindowAggregate(users, flowcore.Tumbling(window), func() int64 { return 0 },
		func(n int64, _ lyClick) int64 { return n + 1 }, opts...)
	w.KeyedView("per-user", time.Hour)
	flowcore.WindowView(w, "all", splice.Sum[int64](), func(_ string, n int64) int64 { return n }, time.Hour)
	flowcore.SessionAggregate(users, time.Minute, func() int64 { return 0 }, func(n int64, _ lyClick) int64 { return n + 1 },
		func(a, b int64) int64 { return a + b })
	flowcore.AggregateView(users.Values(), "clicks", splice.Count[lyClick](), func(c lyClick) lyClick { return c })
	flowcore.To(users.Values(), flowcore.Sink[lyClick](flowcore.SinkFunc[lyClick](func([]flowcore.Output[lyClick]) error { return nil })),
		flowcore.OnCheckpoint())
	plan, err := flowcore.Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	return plan
}

func TestLayout(t *testing.T) {
	a := lyFlow(t, "", time.Minute)
	t.Logf("layout:\n%s", strings.Join(a.Layout(), "\n"))
	for _, want := range []string{
		`layout 1`,
		`fragments 64`,
		`source 0: "clicks", with event time`,
		`stage 0: KeyBy string of github.com/tessera-streams/tessera/internal/flowcore_test.lyClick{User string; At int64} from source 0`,
		`stage 1: KeyBy string of string through exchange 0 from stage 0`,
		`operator 0 of stage 0: Process of state int64 by string, out string, with a TTL of 1h0m0s, view "last"`,
		`operator 1 of stage 1: table of int64 by string, view "outs"`,
		`operator 2 of stage 0: WindowAggregate of int64, windows of 1m0s every 1m0s, in slices`,
		`operator 3 of stage 0: keyed window view "per-user" of operator 2, int64 by string`,
		`operator 4 of stage 0: window view "all" of operator 2, partials int64, algebra sum {}`,
		`operator 5 of stage 0: SessionAggregate of int64, gap 1m0s`,
		`operator 6 of stage 0: aggregate view "clicks" of partials int64, algebra count {}`,
		`operator 7 of stage 0: sink on checkpoints of github.com/tessera-streams/tessera/internal/flowcore_test.lyClick{User string; At int64}`,
	} {
		if !slices.Contains(a.Layout(), want) {
			t.Errorf("no line %q", want)
		}
	}
	// The functions are not the layout; the windows' bounds are.
	if b := lyFlow(t, "!", time.Minute); !slices.Equal(a.Layout(), b.Layout()) || a.LayoutHash() != b.LayoutHash() {
		t.Errorf("another Map function changed the layout:\n%q\n%q", a.Layout(), b.Layout())
	}
	if c := lyFlow(t, "", time.Hour); slices.Equal(a.Layout(), c.Layout()) || a.LayoutHash() == c.LayoutHash() {
		t.Error("windows of an hour laid out as windows of a minute")
	}
	// Early firings keep the windows' state per window, not in slices.
	if d := lyFlow(t, "", time.Minute, flowcore.EarlyEvery(time.Second)); slices.Equal(a.Layout(), d.Layout()) {
		t.Error("windows that fire early laid out as sliced windows")
	}
}

type lyTagged struct {
	N    int64  `json:"n"`
	Note string `json:"note,omitempty"`
}

// lyCodec is a key codec the flow gives: it may encode strings otherwise.
type lyCodec struct{ flowcore.KeyCodec[string] }

func layoutOf(t *testing.T, build func(f *flowcore.Flow, s flowcore.Stream[lyClick])) []string {
	t.Helper()
	f := flowcore.New("layout")
	build(f, flowcore.From(f, "clicks", flowcore.Source[lyClick](flowstest.NewInput[lyClick](1)),
		flowcore.WithEventTime(func(c lyClick) time.Time { return time.Unix(0, c.At) }, time.Second)))
	plan, err := flowcore.Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	return plan.Layout()
}

// Each pair of flows lays out its state differently though their
// operators' types are alike: an algebra's kind or parameters, the window
// operator a view reads, codecs given, a Process's TTL, a source's event
// time. Each pair must have two layouts.
func TestLayoutTellsAlikeOperatorsApart(t *testing.T) {
	user := func(c lyClick) string { return c.User }
	at := func(c lyClick) int64 { return c.At }
	one := func(c lyClick) float64 { return 1 }
	kc, err := flowcore.DefaultKeyCodec[string]()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := flowcore.DefaultCodec[int64]()
	if err != nil {
		t.Fatal(err)
	}
	count := func(n int64, _ lyClick) int64 { return n + 1 }
	zero := func() int64 { return 0 }
	windowView := func(which int) func(f *flowcore.Flow, s flowcore.Stream[lyClick]) {
		return func(f *flowcore.Flow, s flowcore.Stream[lyClick]) {
			ks := flowcore.KeyBy(s, user)
			ws := []flowcore.Windowed[string, lyClick, int64]{
				flowcore.WindowAggregate(ks, flowcore.Tumbling(time.Minute), zero, count),
				flowcore.WindowAggregate(ks, flowcore.Tumbling(time.Hour), zero, count),
			}
			flowcore.WindowView(ws[which], "v", splice.Sum[int64](), func(_ string, n int64) int64 { return n }, time.Hour)
		}
	}
	process := func(ttl time.Duration) func(f *flowcore.Flow, s flowcore.Stream[lyClick]) {
		return func(f *flowcore.Flow, s flowcore.Stream[lyClick]) {
			flowcore.Process(flowcore.KeyBy(s, user), flowcore.Handler[string, lyClick, int64, string]{
				OnEvent: func(*flowcore.Context[string, int64, string], lyClick) {}}, flowcore.WithStateTTL(ttl)).View("p")
		}
	}
	for name, pair := range map[string][2]func(f *flowcore.Flow, s flowcore.Stream[lyClick]){
		"sum or count": {
			func(f *flowcore.Flow, s flowcore.Stream[lyClick]) {
				flowcore.AggregateView(flowcore.KeyBy(s, user).Values(), "a", splice.Sum[int64](), at)
			},
			func(f *flowcore.Flow, s flowcore.Stream[lyClick]) {
				flowcore.AggregateView(flowcore.KeyBy(s, user).Values(), "a", splice.Count[lyClick](), func(c lyClick) lyClick { return c })
			}},
		"histogram bounds": {
			func(f *flowcore.Flow, s flowcore.Stream[lyClick]) {
				flowcore.AggregateView(flowcore.KeyBy(s, user).Values(), "a", splice.NewHistogram(5), one)
			},
			func(f *flowcore.Flow, s flowcore.Stream[lyClick]) {
				flowcore.AggregateView(flowcore.KeyBy(s, user).Values(), "a", splice.NewHistogram(5, 10), one)
			}},
		"the windows a view reads": {windowView(0), windowView(1)},
		"a key codec given": {
			func(f *flowcore.Flow, s flowcore.Stream[lyClick]) { flowcore.Count(flowcore.KeyBy(s, user)).View("c") },
			func(f *flowcore.Flow, s flowcore.Stream[lyClick]) {
				flowcore.Count(flowcore.KeyBy(s, user, flowcore.WithKeyCodec[string](lyCodec{kc}))).View("c")
			}},
		"a state codec given": {
			func(f *flowcore.Flow, s flowcore.Stream[lyClick]) {
				flowcore.Aggregate(flowcore.KeyBy(s, user), zero, count).View("c")
			},
			func(f *flowcore.Flow, s flowcore.Stream[lyClick]) {
				flowcore.Aggregate(flowcore.KeyBy(s, user), zero, count, flowcore.WithStateCodec(sc)).View("c")
			}},
		"a Process's TTL": {process(time.Hour), process(2 * time.Hour)},
	} {
		a, b := layoutOf(t, pair[0]), layoutOf(t, pair[1])
		if slices.Equal(a, b) {
			t.Errorf("%s: one layout for both flows: %q", name, a)
		}
	}
	// A struct's fields, in order, with the names the JSON codec gives
	// them.
	tagged := layoutOf(t, func(f *flowcore.Flow, s flowcore.Stream[lyClick]) {
		flowcore.Aggregate(flowcore.KeyBy(s, user), func() lyTagged { return lyTagged{} },
			func(a lyTagged, c lyClick) lyTagged { a.N++; return a }).View("t")
	})
	if want := `lyTagged{N int64 json:"n"; Note string json:"note,omitempty"}`; !strings.Contains(strings.Join(tagged, "\n"), want) {
		t.Errorf("no %s in %q", want, tagged)
	}
	// A source with event time and one without.
	plain := flowcore.New("layout")
	flowcore.Count(flowcore.KeyBy(flowcore.From(plain, "clicks", flowcore.Source[lyClick](flowstest.NewInput[lyClick](1))), user)).View("c")
	p, err := flowcore.Compile(plain)
	if err != nil {
		t.Fatal(err)
	}
	timed := layoutOf(t, func(f *flowcore.Flow, s flowcore.Stream[lyClick]) { flowcore.Count(flowcore.KeyBy(s, user)).View("c") })
	if slices.Equal(p.Layout(), timed) {
		t.Errorf("event time: one layout for both flows: %q", timed)
	}
}

// A store takes a source with more partitions, so the layout leaves
// partition counts out; nodes of one cluster must agree on them, so the
// hash they compare at join holds them.
func TestLayoutHashHoldsPartitions(t *testing.T) {
	plan := func(parts int) *flowcore.Plan {
		f := flowcore.New("layout")
		s := flowcore.From(f, "clicks", flowcore.Source[lyClick](flowstest.NewInput[lyClick](parts)))
		flowcore.Count(flowcore.KeyBy(s, func(c lyClick) string { return c.User })).View("c")
		p, err := flowcore.Compile(f)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	two, four := plan(2), plan(4)
	if !slices.Equal(two.Layout(), four.Layout()) {
		t.Errorf("partition counts in the layout: %q, %q", two.Layout(), four.Layout())
	}
	if two.LayoutHash() == four.LayoutHash() || two.LayoutHash() != plan(2).LayoutHash() {
		t.Error("the hash nodes compare does not tell 2 partitions from 4, or not 2 from 2")
	}
}
