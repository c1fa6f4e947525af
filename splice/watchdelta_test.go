package splice_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/splice"
)

// deltaFlow counts keys in "counts" (scored by the count) and in "odd",
// which shows only odd counts: its keys leave and come back.
func deltaFlow(in flows.Source[string]) *flows.Flow {
	f := flows.New("delta", flows.WithFragments(4))
	c := flows.Count(flows.KeyBy(flows.From(f, "in", in), flows.Identity[string]))
	score := flows.ScoreBy(func(n int64) float64 { return float64(n) })
	c.View("counts", score)
	c.View("odd", score, flows.PublishIf(func(n int64) bool { return n%2 == 1 }))
	return f
}

// A watch built from the fragments' changes tells the truth: after random
// updates (and now and then a fragment's crash, which makes it evaluate
// the whole view), each diff applied to the previous answer is the whole
// view's answer now, for pages, prefixes and top sets, in the order a
// full evaluation gives. Views whose entries only grow follow the changes
// after the first interval.
// crashOne checkpoints every fragment and crashes one of the 4, drawn, as
// may happen between two watch intervals; it returns which.
func crashOne(rt *rapid.T, d *flowstest.Driver) int {
	if err := d.Checkpoint(); err != nil {
		rt.Fatal(err)
	}
	f := rapid.IntRange(0, 3).Draw(rt, "fragment")
	if err := d.Crash(f); err != nil {
		rt.Fatal(err)
	}
	return f
}

func TestWatchDiffsFromChanges(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		in := flowstest.NewInput[string](2)
		d, err := flowstest.New(deltaFlow(in), time.Unix(0, 0))
		if err != nil {
			rt.Fatal(err)
		}
		defer d.Close()
		req := splice.Request{
			View: rapid.SampledFrom([]string{"counts", "odd"}).Draw(rt, "view"),
			Op:   splice.OpEntries,
			Query: rapid.SampledFrom([]splice.Query{{Limit: 1000}, {Limit: 4}, {Limit: 3, Prefix: "k1"}, {Top: 3}, {Top: 20}}).
				Draw(rt, "query"),
		}
		w := splice.NewWatchStepper(d, req)
		defer w.Close()
		keys := rapid.IntRange(3, 40).Draw(rt, "keys")
		var prev map[string]json.RawMessage
		crashed := false
		for step := range rapid.IntRange(2, 12).Draw(rt, "steps") {
			for range rapid.IntRange(0, 30).Draw(rt, "events") {
				in.Push(rapid.IntRange(0, 1).Draw(rt, "partition"), fmt.Sprintf("k%d", rapid.IntRange(0, keys-1).Draw(rt, "key")))
			}
			if err := d.Drain(); err != nil {
				rt.Fatal(err)
			}
			if step > 0 && rapid.IntRange(0, 9).Draw(rt, "crash") == 0 {
				crashOne(rt, d)
				crashed = true
			}
			res, ev, delta, err := w.Step()
			if err != nil {
				rt.Fatal(err)
			}
			full, err := splice.Evaluate(context.Background(), d, req)
			if err != nil {
				rt.Fatal(err)
			}
			if got, want := keysOf(res.Entries), keysOf(full.Entries); !slices.Equal(got, want) || res.More != full.More {
				rt.Fatalf("step %d: the watch's answer is %v (more %v), a full evaluation %v (more %v)", step, got, res.More, want, full.More)
			}
			now := answerMap(full.Entries)
			if step > 0 {
				got := applyEvent(rt, prev, ev)
				if !sameRaw(got, now) {
					rt.Fatalf("step %d: the diff %s applied to %v gives %v, a full evaluation %v", step, ev, prev, got, now)
				}
				if !delta && req.View == "counts" && !crashed {
					rt.Fatalf("step %d: a view whose entries only grow evaluated whole", step)
				}
			}
			prev = now
		}
	})
}

func keysOf(es []splice.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Key
	}
	return out
}

func answerMap(es []splice.Entry) map[string]json.RawMessage {
	m := make(map[string]json.RawMessage, len(es))
	for _, e := range es {
		m[e.Key], _ = json.Marshal(e.Value)
	}
	return m
}

// applyEvent applies a "changes" event (nil: nothing changed) to prev.
func applyEvent(rt *rapid.T, prev map[string]json.RawMessage, ev []byte) map[string]json.RawMessage {
	out := maps.Clone(prev)
	if ev == nil {
		return out
	}
	head, data, ok := bytes.Cut(ev, []byte("\ndata: "))
	if !ok || !bytes.Equal(head, []byte("event: changes")) {
		rt.Fatalf("event %q is not a change", ev)
	}
	var c struct {
		Entries []struct {
			Key   string
			Value json.RawMessage
		}
		Removed []string
	}
	if err := json.Unmarshal(bytes.TrimSpace(data), &c); err != nil {
		rt.Fatalf("event %q: %v", ev, err)
	}
	for _, k := range c.Removed {
		delete(out, k)
	}
	for _, e := range c.Entries {
		out[e.Key] = e.Value
	}
	return out
}
