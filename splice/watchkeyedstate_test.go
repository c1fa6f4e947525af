package splice_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/splice"
)

// keyedStateFlow keeps keyed views whose entries leave and whose scores
// fall, over 4 fragments: counts whose keys expire 20 minutes (event
// time) after their last event ("ttl"), the minute of each key's latest
// event, shown only when even ("minute": it falls, and keys leave and
// come back), and a process function's state that it clears every third
// event of a key ("proc").
func keyedStateFlow(in flows.Source[timedKey]) *flows.Flow {
	f := flows.New("keyed-state", flows.WithFragments(4))
	src := flows.From(f, "in", in, flows.WithEventTime(func(e timedKey) time.Time { return e.At }, 5*time.Minute))
	ks := flows.KeyBy(src, func(e timedKey) string { return e.Key })
	flows.Count(ks, flows.WithStateTTL(20*time.Minute)).View("ttl")
	flows.Aggregate(ks, func() int64 { return 0 }, func(_ int64, e timedKey) int64 { return int64(e.At.Minute()) }).
		View("minute", flows.PublishIf(func(m int64) bool { return m%2 == 0 }))
	flows.Process(ks, flows.Handler[string, timedKey, int64, string]{
		OnEvent: func(c *flows.Context[string, int64, string], e timedKey) {
			n, _ := c.State()
			if n == 2 {
				c.ClearState()
				return
			}
			c.SetState(n + 1)
		},
	}).View("proc")
	return f
}

// A watch of a keyed view whose keys expire by TTL, leave (PublishIf,
// ClearState) and fall in score tells the truth: after random events and
// crashes, each diff applied to the previous answer is what a fresh
// evaluation answers, for pages, prefixes and top sets.
func TestWatchKeyedViewsWithExpiryAndRemovals(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		in := flowstest.NewInput[timedKey](2)
		d, err := flowstest.New(keyedStateFlow(in), time.Unix(0, 0))
		if err != nil {
			rt.Fatal(err)
		}
		defer d.Close()
		req := splice.Request{
			View: rapid.SampledFrom([]string{"ttl", "minute", "proc"}).Draw(rt, "view"),
			Op:   splice.OpEntries,
			Query: rapid.SampledFrom([]splice.Query{{Limit: 1000}, {Limit: 4}, {Limit: 2, Prefix: "k1"}, {Top: 3}, {Top: 20}}).
				Draw(rt, "query"),
		}
		w := splice.NewWatchStepper(d, req)
		defer w.Close()
		keys := rapid.IntRange(3, 30).Draw(rt, "keys")
		now := time.Date(2026, 11, 2, 6, 0, 0, 0, time.UTC)
		var prev map[string]json.RawMessage
		for step := range rapid.IntRange(2, 12).Draw(rt, "steps") {
			now = stepTimed(rt, d, in, now, keys, step)
			res, ev, _, err := w.Step()
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
			}
			prev = now
		}
	})
}
