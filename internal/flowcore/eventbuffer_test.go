package flowcore

import (
	"cmp"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// The event buffer applies its events in exactly the order of a plain sort
// of them by (time, channel, partition, offset, record), whatever the
// partitions, their disorder, the events at the same time and the input
// events of several records — also across a crash: a run restored from
// its last checkpoint, with the events since redelivered, applies what the
// first run had not applied by that checkpoint, in that order.
func TestEventBufferAppliesInSortedOrder(t *testing.T) {
	codec := bufferCodec(t)
	type buf = eventBuffer[string, int64]
	// An input event: where it comes from, its time, and its records.
	type input struct {
		ch, part int
		off, ts  int64
		records  int
	}
	// A step of a run: an input event, or the watermark moving forward
	// (then every waiting event up to it runs), or a checkpoint.
	type step struct {
		in         *input
		wm         int64
		checkpoint bool
	}
	rapid.Check(t, func(t *rapid.T) {
		parts := rapid.IntRange(1, 4).Draw(t, "partitions")
		chans := rapid.IntRange(1, 2).Draw(t, "channels")
		var steps []step
		offs := map[[2]int]int64{}
		now := int64(100)
		for range rapid.IntRange(1, 150).Draw(t, "steps") {
			switch rapid.IntRange(0, 9).Draw(t, "kind") {
			case 0, 1:
				now += rapid.Int64Range(0, 15).Draw(t, "advance")
				steps = append(steps, step{wm: now - 20})
			case 2:
				steps = append(steps, step{checkpoint: true})
			default:
				in := &input{ch: rapid.IntRange(0, chans-1).Draw(t, "channel"), part: rapid.IntRange(0, parts-1).Draw(t, "partition"),
					ts:      now - rapid.Int64Range(0, 30).Draw(t, "lateness"), // few distinct times, some behind the watermark
					records: rapid.IntRange(1, 3).Draw(t, "records")}
				in.off = offs[[2]int{in.ch, in.part}]
				offs[[2]int{in.ch, in.part}]++
				steps = append(steps, step{in: in})
			}
		}
		steps = append(steps, step{wm: now + 1000}) // the end: everything runs
		crash := rapid.IntRange(0, len(steps)).Draw(t, "crash")

		var ran []bufPos // what the run applies, by the places of the events
		newBuf := func() *buf {
			b := &buf{fr: &Fragment{}, codec: codec}
			b.run = func(_ string, v int64) {
				c := b.cur
				if c.val != c.ts { // the value travels with its event
					t.Fatalf("event at %d ran with value %d", c.ts, c.val)
				}
				ran = append(ran, bufPos{c.ts, c.ch, c.part, c.off, c.sub})
			}
			return b
		}
		store := map[string][]byte{}
		lastCheckpoint, ranAtCheckpoint, wmAtCheckpoint := 0, 0, int64(NoWatermark)
		// run takes the steps from..to on b with the watermark at wm; the
		// first run checkpoints, the restored one does not.
		run := func(b *buf, from, to int, wm int64, first bool) {
			for i := from; i < to; i++ {
				s := steps[i]
				switch {
				case s.in != nil:
					if s.in.ts <= wm {
						continue // late: Process runs it at once, not the buffer
					}
					b.fr.cur = Cursor{Source: s.in.ch, Partition: s.in.part, Offset: s.in.off, TS: s.in.ts}
					for range s.in.records {
						b.add("k", s.in.ts)
					}
				case s.checkpoint:
					if !first {
						continue
					}
					var d Delta
					if err := b.delta(7, &d); err != nil {
						t.Fatal(err)
					}
					for _, e := range d.Deletes {
						delete(store, string(e.Key))
					}
					for _, e := range d.Puts {
						store[string(e.Key)] = e.Value
					}
					lastCheckpoint, ranAtCheckpoint, wmAtCheckpoint = i+1, len(ran), wm
				default:
					wm = max(wm, s.wm)
					for {
						if _, ok := b.next(wm); !ok {
							break
						}
						b.applyNext(b.fr)
					}
				}
			}
		}
		b := newBuf()
		run(b, 0, crash, NoWatermark, true)
		// The restored run: from the last checkpoint, the source
		// redelivers every event since.
		applied := ran[:ranAtCheckpoint]
		ran = nil
		b = newBuf()
		keys := make([]string, 0, len(store))
		for k := range store {
			keys = append(keys, k)
		}
		rapid.Permutation(keys).Draw(t, "restore order")
		for _, k := range keys {
			if err := b.restore(7, []byte(k), store[k]); err != nil {
				t.Fatal(err)
			}
		}
		// What the whole stream buffers (every event not late), as one
		// run without a crash sees it, sorted.
		var want []bufPos
		wm := int64(NoWatermark)
		for _, s := range steps {
			switch {
			case s.in != nil && s.in.ts > wm:
				for r := range s.in.records {
					want = append(want, bufPos{s.in.ts, int32(s.in.ch), int32(s.in.part), s.in.off, int32(r)})
				}
			case s.in == nil && !s.checkpoint:
				wm = max(wm, s.wm)
			}
		}
		slices.SortFunc(want, func(a, b bufPos) int {
			return cmp.Or(cmp.Compare(a.ts, b.ts), cmp.Compare(a.ch, b.ch), cmp.Compare(a.part, b.part),
				cmp.Compare(a.off, b.off), cmp.Compare(a.sub, b.sub))
		})
		run(b, lastCheckpoint, len(steps), wmAtCheckpoint, false)
		got := append(slices.Clone(applied), ran...)
		if !slices.Equal(got, want) {
			t.Fatalf("applied (%d before the checkpoint)\n%v\nwant\n%v", len(applied), got, want)
		}
		if len(b.h) != 0 {
			t.Fatalf("%d events still waiting", len(b.h))
		}
	})
}
