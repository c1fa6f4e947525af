package flowstest_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/splice"
)

// A Process in event-time order that counts a key's events into sessions
// with event-time timers (each event moves its key's timer to its time
// plus the gap; the timer emits the session to an OnCheckpoint sink and
// clears the state), over more keys than a block of rows, of odd shapes,
// with checkpoints, crashes and restarts at random points and the input
// ending while timers are due, delivers each session of a sequential
// reference once by id, and leaves no state.
func TestProcessSessionsInEventTimeOrderEqualReference(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rng := rand.New(rand.NewPCG(rapid.Uint64().Draw(t, "seed"), 3))
		nusers := rapid.IntRange(1, 100).Draw(t, "users")
		users := make([]string, nusers)
		long := strings.Repeat("u", rapid.SampledFrom([]int{0, 130, 300}).Draw(t, "prefix"))
		for i := range users {
			users[i] = fmt.Sprintf("%s%d", long, i)
		}
		users[0] = ""
		gap := time.Duration(rapid.IntRange(1, 10).Draw(t, "gap minutes")) * time.Minute
		delay := time.Minute
		partitions := rapid.IntRange(1, 3).Draw(t, "partitions")
		fragments := rapid.IntRange(1, 4).Draw(t, "fragments")
		parts := make([][]click, partitions)
		var all []click
		for p := range parts {
			parts[p] = walkClicks(rng, rapid.IntRange(0, 300).Draw(t, "events"), users, 2*time.Minute, delay-time.Nanosecond)
			all = append(all, parts[p]...)
		}

		// Sequential reference (sessionModel): per key, sessions break
		// where an event comes at or after the one before plus the gap;
		// the end of the input closes them all.
		closed, _ := sessionModel(all, gap, math.MaxInt64)
		var want []string
		for _, x := range closed {
			want = append(want, fmt.Sprintf("%q %d %d %d", x.User, x.N, x.Start, x.End))
		}
		slices.Sort(want)

		in := flowstest.NewInput[click](partitions)
		f := flows.New("sessions", flows.WithFragments(fragments))
		ks := flows.KeyBy(flows.From(f, "clicks", in, flows.WithEventTime(func(c click) time.Time { return c.At }, delay)),
			func(c click) string { return c.User })
		p := sessionStage(ks, gap)
		p.View("open")
		sink := flowstest.Collect(p.Out(), flows.OnCheckpoint())
		d, err := flowstest.New(f, time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		d.BatchSize = rapid.IntRange(1, 40).Draw(t, "batch")
		must(t, pushInChunks(d, in, parts, rng, 50))
		in.Close()
		if rng.IntN(2) == 0 {
			// Right as the end of the input makes every timer due.
			if err := d.Crash(rng.IntN(fragments)); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.Settle(); err != nil {
			t.Fatal(err)
		}
		if err := d.Checkpoint(); err != nil {
			t.Fatal(err)
		}
		if err := d.Settle(); err != nil {
			t.Fatal(err)
		}
		seen := map[flows.OutputID]sess{}
		var got []string
		for _, o := range sink.Outputs() {
			if prev, ok := seen[o.ID]; ok {
				if prev != o.Value {
					t.Fatalf("output %v delivered as %v, then %v", o.ID, prev, o.Value)
				}
				continue
			}
			seen[o.ID] = o.Value
			got = append(got, fmt.Sprintf("%q %d %d %d", o.Value.User, o.Value.N, o.Value.Start, o.Value.End))
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("sessions:\n%v\nwant\n%v", got, want)
		}
		if es, err := d.Entries("open", splice.Query{Limit: 1000}); err != nil || len(es) != 0 {
			t.Fatalf("state left: %v, %v", es, err)
		}
	})
}
