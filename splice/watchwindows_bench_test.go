package splice_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/splice"
)

// BenchmarkWatchKeyedWindows is one watch interval of an hourly matrix
// of 20,000 keys over 4 fragments in which 100 events came: the group
// following the fragments' changes (delta) or evaluating the whole view
// as before (whole), for a page of 100 and a top 10. Ingesting the events
// is not timed.
func BenchmarkWatchKeyedWindows(b *testing.B) {
	t0 := time.Date(2026, 11, 2, 6, 0, 0, 0, time.UTC)
	for _, q := range []splice.Query{{Limit: 100}, {Top: 10}} {
		for _, mode := range []string{"delta", "whole"} {
			b.Run(fmt.Sprintf("%s/limit=%d,top=%d", mode, q.Limit, q.Top), func(b *testing.B) {
				in := flowstest.NewInput[timedKey](2)
				d, err := flowstest.New(windowsFlow(in), time.Unix(0, 0))
				if err != nil {
					b.Fatal(err)
				}
				defer d.Close()
				for i := range 20000 {
					in.Push(i%2, timedKey{fmt.Sprintf("z%03d->z%03d", i%200, i/200), t0.Add(time.Duration(i%50) * time.Minute)})
				}
				if err := d.Drain(); err != nil {
					b.Fatal(err)
				}
				req := splice.Request{View: "tumbling", Op: splice.OpEntries, Query: q}
				w := splice.NewWatchStepper(d, req)
				defer w.Close()
				if _, _, _, err := w.Step(); err != nil {
					b.Fatal(err)
				}
				n := 0
				b.ResetTimer()
				for b.Loop() {
					b.StopTimer()
					for i := range 100 {
						n++
						in.Push(i%2, timedKey{fmt.Sprintf("z%03d->z%03d", n%200, (n/7)%100), t0.Add(50 * time.Minute)})
					}
					if err := d.Drain(); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					if mode == "delta" {
						if _, _, delta, err := w.Step(); err != nil || !delta {
							b.Fatalf("step: delta %v, %v", delta, err)
						}
					} else if _, err := splice.Evaluate(context.Background(), d, req); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
