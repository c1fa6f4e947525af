package actor

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/recovery"
)

// A flow changed between two runs on the same store. The checkpoints are
// laid out by the flow's sources, stages and stateful operators: a run of
// another layout must not start on them (a stage added before a count
// took the count's state, silently; a new state type failed to decode
// with no word of why). A layout that only adds stages and operators
// after the old ones starts on them: the old views go on exactly, the new
// ones count what is read from then on. Rolled back, the flow starts
// again unless the checkpoints hold state of what it lacks.

type lyAcc struct {
	N    int64
	Last string
}

// lyFlow is the word count of the first n events of the input, in one of
// its variants.
func lyFlow(variant string, n int) *flows.Flow {
	in := flowstest.NewInput[string](2)
	for i := range n {
		in.Push(i%2, lyWord(i))
	}
	in.Close()
	f := flows.New("layout", flows.WithFragments(8))
	s := flows.From(f, "words", flows.Source[string](in))
	words := func() flows.Table[string, int64] {
		return flows.Count(flows.KeyBy(s, flows.Identity[string])).View("words")
	}
	upper := func() {
		flows.Count(flows.KeyBy(flows.Map(s, strings.ToUpper), flows.Identity[string])).View("upper")
	}
	switch variant {
	case "v1":
		words()
		upper()
	case "swapped": // the same two counts, declared the other way round
		upper()
		words()
	case "state type": // words keeps a struct
		flows.Aggregate(flows.KeyBy(s, flows.Identity[string]), func() lyAcc { return lyAcc{} },
			func(a lyAcc, w string) lyAcc { return lyAcc{a.N + 1, w} }).View("words")
		upper()
	case "stage before": // a count of another stage, declared first
		flows.Count(flows.KeyBy(flows.Map(s, func(w string) string { return w + "!" }), flows.Identity[string])).View("loud")
		words()
		upper()
	case "grown": // a count by length after the others, and one of the word counts' updates through an exchange
		w := words()
		upper()
		flows.Count(flows.KeyBy(s, func(w string) int { return len(w) })).View("lengths")
		flows.Count(flows.KeyBy(w.Updates(), func(kv flows.KV[string, int64]) string { return kv.Key[:2] })).View("updates")
	}
	return f
}

func lyWord(i int) string { return fmt.Sprintf("w%d", i%37*(1+i%5)) }

// lyRun runs variant over the first n events on the store in dir to the
// end, and returns the engine (stopped by the test) or Start's error.
func lyRun(t *testing.T, dir, variant string, n int) (*Engine, *recovery.Store, error) {
	t.Helper()
	st := oeOpen(t, dir)
	plan, err := flowcore.Compile(lyFlow(variant, n))
	if err != nil {
		t.Fatal(err)
	}
	e, err := Start(plan, Config{Store: st, CheckpointInterval: 10 * time.Millisecond, Logger: quiet()})
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	ohDrained(t, e, variant)
	return e, st, nil
}

// lyWant is the count of each word of events [from, to) (by f of the
// word).
func lyWant[K comparable](from, to int, f func(string) K) map[K]int64 {
	out := map[K]int64{}
	for i := from; i < to; i++ {
		out[f(lyWord(i))]++
	}
	return out
}

func lyCheck[K comparable](t *testing.T, e *Engine, view string, want map[K]int64) {
	t.Helper()
	got := oeEntries(t, e, view)
	if len(got) != len(want) {
		t.Fatalf("view %s: %d keys, want %d", view, len(got), len(want))
	}
	for k, n := range want {
		if v := got[fmt.Sprint(k)]; v != n {
			t.Fatalf("view %s: %v = %v, want %d", view, k, v, n)
		}
	}
}

func TestEngineRefusesCheckpointsOfAnotherLayout(t *testing.T) {
	dir := t.TempDir()
	e, st, err := lyRun(t, dir, "v1", 1000)
	if err != nil {
		t.Fatal(err)
	}
	e.Stop()
	st.Close()
	for _, v := range []string{"swapped", "state type", "stage before"} {
		_, _, err := lyRun(t, dir, v, 2000)
		if !errors.Is(err, recovery.ErrLayout) {
			t.Fatalf("%s: started on the checkpoints of v1: %v", v, err)
		}
		t.Logf("%s: %v", v, err)
	}
	// The refusals left the checkpoints as they were: v1 goes on exactly.
	e, st, err = lyRun(t, dir, "v1", 2000)
	if err != nil {
		t.Fatal(err)
	}
	lyCheck(t, e, "words", lyWant(0, 2000, flows.Identity[string]))
	lyCheck(t, e, "upper", lyWant(0, 2000, strings.ToUpper))
	e.Stop()
	st.Close()
	// A grown flow that read nothing new before it crashed, rolled back:
	// its new operators hold no state, and v1 goes on as before.
	st = oeOpen(t, dir)
	plan, err := flowcore.Compile(lyFlow("grown", 2000))
	if err != nil {
		t.Fatal(err)
	}
	e, err = Start(plan, Config{Store: st, CheckpointInterval: time.Hour, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	oeCrash(e)
	st.Close()
	e, st, err = lyRun(t, dir, "v1", 2000)
	if err != nil {
		t.Fatal(err)
	}
	lyCheck(t, e, "words", lyWant(0, 2000, flows.Identity[string]))
	e.Stop()
	st.Close()
	// A count added after the others: the old views go on, the new one
	// counts the events read from the checkpoints' offsets on.
	e, st, err = lyRun(t, dir, "grown", 3000)
	if err != nil {
		t.Fatal(err)
	}
	lyCheckGrown(t, e, 3000)
	e.Stop()
	st.Close()
	// Rolled back, v1 does not start on checkpoints that hold state of the
	// grown flow's new operators, and says so; crashed and restarted, the
	// grown flow recovers its new counts too.
	if _, _, err := lyRun(t, dir, "v1", 3000); err == nil || !strings.Contains(err.Error(), "belongs to no operator of this flow") {
		t.Fatalf("v1 on the checkpoints of the grown flow: %v", err)
	}
	e, st, err = lyRun(t, dir, "grown", 4000)
	if err != nil {
		t.Fatal(err)
	}
	lyCheckGrown(t, e, 4000)
	oeCrash(e)
	st.Close()
	e, st, err = lyRun(t, dir, "grown", 4000)
	if err != nil {
		t.Fatal(err)
	}
	lyCheckGrown(t, e, 4000)
	e.Stop()
	st.Close()
}

// lyCheckGrown checks the views of the flow grown after 2000 events, once
// it applied n: the old views count every event, the new ones those from
// 2000 on.
func lyCheckGrown(t *testing.T, e *Engine, n int) {
	t.Helper()
	lyCheck(t, e, "words", lyWant(0, n, flows.Identity[string]))
	lyCheck(t, e, "upper", lyWant(0, n, strings.ToUpper))
	lyCheck(t, e, "lengths", lyWant(2000, n, func(w string) int { return len(w) }))
	lyCheck(t, e, "updates", lyWant(2000, n, func(w string) string { return w[:2] }))
}
