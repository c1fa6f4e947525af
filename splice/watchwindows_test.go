package splice_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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

type timedKey struct {
	Key string
	At  time.Time
}

// pushTimed moves now on by up to 40 minutes and pushes up to 30 events
// of the keys k0 to k<keys-1> at times up to 30 minutes before it (late
// and too late ones among them); it returns the new now.
func pushTimed(rt *rapid.T, in *flowstest.Input[timedKey], now time.Time, keys int) time.Time {
	now = now.Add(time.Duration(rapid.IntRange(0, 40).Draw(rt, "minutes")) * time.Minute)
	for range rapid.IntRange(0, 30).Draw(rt, "events") {
		at := now.Add(-time.Duration(rapid.IntRange(0, 30).Draw(rt, "late")) * time.Minute)
		in.Push(rapid.IntRange(0, 1).Draw(rt, "partition"),
			timedKey{fmt.Sprintf("k%d", rapid.IntRange(0, keys-1).Draw(rt, "key")), at})
	}
	return now
}

// stepTimed is a step of the windowed watch properties: it pushes timed
// events (pushTimed) and drains them, and from the second step on crashes
// one fragment one time in ten (crashOne) and drains again; it returns the
// new now.
func stepTimed(rt *rapid.T, d *flowstest.Driver, in *flowstest.Input[timedKey], now time.Time, keys, step int) time.Time {
	now = pushTimed(rt, in, now, keys)
	if err := d.Drain(); err != nil {
		rt.Fatal(err)
	}
	if step > 0 && rapid.IntRange(0, 9).Draw(rt, "crash") == 0 {
		crashOne(rt, d)
		if err := d.Drain(); err != nil {
			rt.Fatal(err)
		}
	}
	return now
}

// sameRaw reports whether two answers hold the same JSON bytes under the
// same keys.
func sameRaw(a, b map[string]json.RawMessage) bool {
	return maps.EqualFunc(a, b, func(x, y json.RawMessage) bool { return bytes.Equal(x, y) })
}

// windowsFlow counts keys per window in windowed keyed views over 4
// fragments: hourly tumbling windows (sliced state), two-hour windows
// sliding by the hour with per-window state ("sliding") and with slices
// ("sliced"), and hourly windows that show odd counts only ("odd", whose
// entries leave: its watch evaluates whole).
func windowsFlow(in flows.Source[timedKey]) *flows.Flow {
	f := flows.New("windelta", flows.WithFragments(4))
	src := flows.From(f, "in", in, flows.WithEventTime(func(t timedKey) time.Time { return t.At }, 10*time.Minute))
	ks := flows.KeyBy(src, func(t timedKey) string { return t.Key })
	count := func() int64 { return 0 }
	add := func(n int64, _ timedKey) int64 { return n + 1 }
	flows.WindowAggregate(ks, flows.Tumbling(time.Hour), count, add).KeyedView("tumbling", 3*time.Hour)
	flows.WindowAggregate(ks, flows.Sliding(2*time.Hour, time.Hour), count, add).KeyedView("sliding", 2*time.Hour)
	flows.WindowAggregateMerge(ks, flows.Sliding(2*time.Hour, time.Hour), count, add, func(a, b int64) int64 { return a + b }).
		KeyedView("sliced", 2*time.Hour)
	flows.WindowAggregate(ks, flows.Tumbling(time.Hour), count, add).
		KeyedView("odd", 3*time.Hour, flows.PublishIf(func(n int64) bool { return n%2 == 1 }))
	return f
}

// A watch of a windowed keyed view built from the fragments' changes
// tells the truth: after random events (in and out of order, late and too
// late, windows opening, closing and expiring) and crashes, each event
// applied to the previous answer is a full evaluation's answer, window by
// window, for pages, prefixes, top sets and ranges of windows. Steps in
// which no window expired and no fragment crashed follow the changes.
func TestWatchKeyedWindowsFromChanges(t *testing.T) {
	t0 := time.Date(2026, 11, 2, 6, 0, 0, 0, time.UTC)
	rapid.Check(t, func(rt *rapid.T) {
		in := flowstest.NewInput[timedKey](2)
		d, err := flowstest.New(windowsFlow(in), time.Unix(0, 0))
		if err != nil {
			rt.Fatal(err)
		}
		defer d.Close()
		req := splice.Request{
			View: rapid.SampledFrom([]string{"tumbling", "sliding", "sliced", "odd"}).Draw(rt, "view"),
			Op:   splice.OpEntries,
			Query: rapid.SampledFrom([]splice.Query{{Limit: 1000}, {Limit: 3}, {Limit: 2, Prefix: "k1"}, {Top: 3},
				{Limit: 5, From: t0.Add(time.Hour).UnixNano(), To: t0.Add(4 * time.Hour).UnixNano()}}).Draw(rt, "query"),
		}
		w := splice.NewWatchStepper(d, req)
		defer w.Close()
		keys := rapid.IntRange(2, 30).Draw(rt, "keys")
		now := t0
		var prev map[string]json.RawMessage
		followed := 0
		for step := range rapid.IntRange(2, 12).Draw(rt, "steps") {
			now = stepTimed(rt, d, in, now, keys, step)
			res, ev, delta, err := w.Step()
			full, ferr := splice.Evaluate(context.Background(), d, req)
			if ferr != nil || err != nil {
				if errors.Is(ferr, splice.ErrNotFound) && errors.Is(err, splice.ErrNotFound) {
					continue
				}
				rt.Fatalf("step %d: the watch's error %v, a full evaluation's %v", step, err, ferr)
			}
			got, want := windowsMap(res.KeyedWindows), windowsMap(full.KeyedWindows)
			if !sameRaw(got, want) ||
				res.More != full.More || res.NextAfter != full.NextAfter {
				rt.Fatalf("step %d: the watch's answer is %s (next %q), a full evaluation's %s (next %q)",
					step, mapString(got), res.NextAfter, mapString(want), full.NextAfter)
			}
			if prev != nil {
				if after := applyWindowsEvent(rt, prev, ev); !sameRaw(after, want) {
					rt.Fatalf("step %d: the event %s applied to %s gives %s, a full evaluation %s", step, ev, mapString(prev), mapString(after), mapString(want))
				}
				if delta {
					followed++
				}
			}
			prev = want
		}
		if req.View == "odd" && followed > 0 {
			rt.Fatalf("a view whose entries leave followed changes %d times", followed)
		}
	})
}

// The watch of a live hourly matrix follows the changes: keys that only
// count up in windows that stay open never make it evaluate the whole
// view after the first interval.
func TestWatchKeyedWindowsFollowsChanges(t *testing.T) {
	t0 := time.Date(2026, 11, 2, 6, 0, 0, 0, time.UTC)
	in := flowstest.NewInput[timedKey](2)
	d, err := flowstest.New(windowsFlow(in), time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, view := range []string{"tumbling", "sliding", "sliced"} {
		for _, q := range []splice.Query{{Limit: 4}, {Top: 3}} {
			w := splice.NewWatchStepper(d, splice.Request{View: view, Op: splice.OpEntries, Query: q})
			for step := range 6 {
				for i := range 20 {
					in.Push(i%2, timedKey{fmt.Sprintf("k%d", (i*7+step)%13), t0.Add(time.Duration(step*5+i%3) * time.Minute)})
				}
				if err := d.Drain(); err != nil {
					t.Fatal(err)
				}
				_, _, delta, err := w.Step()
				if err != nil {
					t.Fatal(err)
				}
				if step > 0 && !delta {
					t.Errorf("%s %+v: step %d evaluated the whole view", view, q, step)
				}
			}
			w.Close()
		}
	}
}

func windowsMap(ws []splice.KeyedWindow) map[string]json.RawMessage {
	m := make(map[string]json.RawMessage, len(ws))
	for _, kw := range ws {
		m[kw.Start.Format(time.RFC3339Nano)] = splice.KeyedWindowJSON(kw)
	}
	return m
}

func mapString(m map[string]json.RawMessage) string {
	var b bytes.Buffer
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "%s=%s ", k, m[k])
	}
	return b.String()
}

// applyWindowsEvent applies a windowed keyed "changes" event (nil:
// nothing changed) to prev.
func applyWindowsEvent(rt *rapid.T, prev map[string]json.RawMessage, ev []byte) map[string]json.RawMessage {
	out := maps.Clone(prev)
	if ev == nil {
		return out
	}
	head, data, ok := bytes.Cut(ev, []byte("\ndata: "))
	if !ok || !bytes.Equal(head, []byte("event: changes")) {
		rt.Fatalf("event %q is not a change", ev)
	}
	var c struct {
		Windows []json.RawMessage
		Removed []string
	}
	if err := json.Unmarshal(bytes.TrimSpace(data), &c); err != nil {
		rt.Fatalf("event %q: %v", ev, err)
	}
	for _, k := range c.Removed {
		delete(out, k)
	}
	for _, w := range c.Windows {
		var s struct{ Start time.Time }
		if err := json.Unmarshal(w, &s); err != nil {
			rt.Fatalf("window %s: %v", w, err)
		}
		out[s.Start.UTC().Format(time.RFC3339Nano)] = w
	}
	return out
}
