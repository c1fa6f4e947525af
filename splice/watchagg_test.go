package splice_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/splice"
)

// aggFlow keeps three aggregate views of its keys, over 4 fragments: a
// count, a histogram of the keys' lengths and a distinct count.
func aggFlow(in flows.Source[string]) *flows.Flow {
	f := flows.New("aggdelta", flows.WithFragments(4))
	ks := flows.KeyBy(flows.From(f, "in", in), flows.Identity[string])
	flows.Count(ks).View("counts") // its spec places keys in fragments
	keyed := ks.Values()
	flows.AggregateView(keyed, "total", splice.Count[string](), flows.Identity[string])
	flows.AggregateView(keyed, "lengths", splice.NewHistogram(2, 3), func(s string) float64 { return float64(len(s)) })
	flows.AggregateView(keyed, "distinct", splice.DistinctCount(), func(s string) []byte { return []byte(s) })
	return f
}

// partialCounter counts the partials that fragments answer to changes
// requests.
type partialCounter struct {
	splice.Gatherer
	mu       sync.Mutex
	partials int
}

func (c *partialCounter) Gather(ctx context.Context, req splice.Request, only int) ([]splice.Answer, error) {
	ans, err := c.Gatherer.Gather(ctx, req, only)
	if req.Op == splice.OpChanges {
		c.mu.Lock()
		for _, a := range ans {
			if a.Partial != nil {
				c.partials++
			}
		}
		c.mu.Unlock()
	}
	return ans, err
}

func (c *partialCounter) take() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.partials
	c.partials = 0
	return n
}

// A watch of an aggregate view merges the partials it holds with the
// ones the fragments changed since its last answer, and tells the truth:
// after random updates and crashes, each event applied to the previous
// answer gives a full evaluation's value. An interval in which no event
// came asks no fragment for its partial, and one in which events came to
// some fragments asks only those.
func TestWatchAggregateFromChanges(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		in := flowstest.NewInput[string](2)
		d, err := flowstest.New(aggFlow(in), time.Unix(0, 0))
		if err != nil {
			rt.Fatal(err)
		}
		defer d.Close()
		req := splice.Request{View: rapid.SampledFrom([]string{"total", "lengths", "distinct"}).Draw(rt, "view"), Op: splice.OpValue}
		g := &partialCounter{Gatherer: d}
		w := splice.NewWatchStepper(g, req)
		defer w.Close()
		spec, err := splice.FindSpec(d, "counts")
		if err != nil {
			rt.Fatal(err)
		}
		keys := rapid.IntRange(1, 40).Draw(rt, "keys")
		var prev json.RawMessage
		for step := range rapid.IntRange(2, 12).Draw(rt, "steps") {
			touched := map[int]bool{}
			if rapid.Bool().Draw(rt, "some events") {
				for range rapid.IntRange(1, 30).Draw(rt, "events") {
					k := fmt.Sprintf("k%d", rapid.IntRange(0, keys-1).Draw(rt, "key"))
					in.Push(rapid.IntRange(0, 1).Draw(rt, "partition"), k)
					f, err := spec.FragmentOf(k)
					if err != nil {
						rt.Fatal(err)
					}
					touched[f] = true
				}
			}
			if err := d.Drain(); err != nil {
				rt.Fatal(err)
			}
			crashed := false
			if step > 0 && rapid.IntRange(0, 5).Draw(rt, "crash") == 0 {
				f := crashOne(rt, d)
				if err := d.Drain(); err != nil {
					rt.Fatal(err)
				}
				touched[f], crashed = true, true
			}
			g.take()
			res, ev, delta, err := w.Step()
			if err != nil {
				rt.Fatal(err)
			}
			asked := g.take()
			full, err := splice.Evaluate(context.Background(), d, req)
			if err != nil {
				rt.Fatal(err)
			}
			now, _ := json.Marshal(full.Value)
			if got, _ := json.Marshal(res.Value); !bytes.Equal(got, now) {
				rt.Fatalf("step %d: the watch's value is %s, a full evaluation's %s", step, got, now)
			}
			if step == 0 {
				if asked != 4 {
					rt.Fatalf("step 0: %d fragments sent their partial, want all 4", asked)
				}
			} else {
				if got := applyValue(rt, prev, ev); !bytes.Equal(got, now) {
					rt.Fatalf("step %d: the event %q applied to %s gives %s, a full evaluation %s", step, ev, prev, got, now)
				}
				if !delta {
					rt.Fatalf("step %d: evaluated whole", step)
				}
				// A restored fragment may have replayed events the others
				// dropped as duplicates: it alone sends more.
				if asked > len(touched) || (!crashed && asked != len(touched)) {
					rt.Fatalf("step %d: %d fragments sent their partial, %d saw events (crash %v)", step, asked, len(touched), crashed)
				}
			}
			prev = now
		}
	})
}

// applyValue applies a "value" event (nil: nothing changed) to prev.
func applyValue(rt *rapid.T, prev json.RawMessage, ev []byte) json.RawMessage {
	if ev == nil {
		return prev
	}
	head, data, ok := bytes.Cut(ev, []byte("\ndata: "))
	if !ok || !bytes.Equal(head, []byte("event: value")) {
		rt.Fatalf("event %q is not a value", ev)
	}
	var v struct{ Value json.RawMessage }
	if err := json.Unmarshal(bytes.TrimSpace(data), &v); err != nil {
		rt.Fatalf("event %q: %v", ev, err)
	}
	return v.Value
}
