package flowstest_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
)

// A sink at once after the key that refuses writes: the fragment keeps
// what it refused and takes no checkpoint that would cover it. Whether
// the next Drain writes the held outputs again, or the fragment crashes
// first and its replay makes them again, or the whole flow restarts,
// every count update reaches the sink, once by id, with its value.
func TestRefusedOutputsHeldUntilWritten(t *testing.T) {
	for _, then := range []string{"drain", "crash", "restart"} {
		t.Run(then, func(t *testing.T) {
			in := flowstest.NewInput[string](2)
			refuse := 0
			got := map[flows.OutputID]string{}
			sink := flows.SinkFunc[flows.KV[string, int64]](func(out []flows.Output[flows.KV[string, int64]]) error {
				if refuse > 0 {
					refuse--
					return errors.New("sink down")
				}
				for _, o := range out {
					v := fmt.Sprintf("%s=%d", o.Value.Key, o.Value.Value)
					if had, ok := got[o.ID]; ok && had != v {
						t.Errorf("output %v: %s, then %s", o.ID, had, v)
					}
					got[o.ID] = v
				}
				return nil
			})
			f := flows.New("held", flows.WithFragments(1))
			flows.To(flows.Count(flows.KeyBy(flows.From(f, "words", flows.Source[string](in)), flows.Identity[string])).Updates(), sink)
			d, err := flowstest.New(f, time.Unix(0, 0))
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			want := map[string]bool{}
			n := map[string]int{}
			push := func(words ...string) {
				for i, w := range words {
					in.Push(i%2, w)
					n[w]++
					want[fmt.Sprintf("%s=%d", w, n[w])] = true
				}
			}
			push("a", "b", "a")
			must(t, d.Settle())
			refuse = 2 // the next write, and the next after it
			push("a", "c", "b", "a")
			if err := d.Drain(); err == nil {
				t.Fatal("Drain of a refused write: no error")
			}
			// None of the held fragment: it would cover what the sink lacks.
			if err := d.Checkpoint(); err == nil || !strings.Contains(err.Error(), "took no checkpoint") {
				t.Fatalf("a checkpoint of the fragment holding refused outputs: %v", err)
			}
			switch then {
			case "drain":
				if err := d.Drain(); err == nil {
					t.Fatal("Drain of a write refused again: no error")
				}
			case "crash":
				err = d.Crash(0) // its replay's write may be refused: the second refusal
			case "restart":
				err = d.Restart()
			}
			if err != nil && !strings.Contains(err.Error(), "sink down") {
				t.Fatal(err)
			}
			push("c")
			in.Close()
			for range 3 { // until the sink took what it refused
				if err = d.Settle(); err == nil {
					break
				}
			}
			must(t, err)
			if refuse != 0 {
				t.Fatalf("%d refusals left", refuse)
			}
			vals := map[string]bool{}
			for _, v := range got {
				vals[v] = true
			}
			for v := range want {
				if !vals[v] {
					t.Errorf("the sink lacks %s (it has %v)", v, vals)
				}
			}
			if len(vals) != len(want) {
				t.Errorf("the sink has %d updates, want %d: %v", len(vals), len(want), vals)
			}
		})
	}
}
