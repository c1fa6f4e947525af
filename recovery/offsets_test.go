package recovery

import (
	"testing"

	"pgregory.net/rapid"
)

func TestAdmitRules(t *testing.T) {
	p := PartitionID{0, 3}
	var v Vector
	steps := []struct {
		prev, end int64
		want      Verdict
		min       int64
	}{
		{0, 10, Apply, 0},
		{10, 10, Apply, 10},    // empty, in order
		{0, 10, Duplicate, 10}, // replay of what was applied
		{5, 8, Duplicate, 10},
		{5, 15, Apply, 10}, // overlap: apply from 10
		{20, 30, Gap, 15},  // 15..20 lost
		{15, 30, Apply, 15},
	}
	for i, s := range steps {
		got, min := v.Admit(p, s.prev, s.end)
		if got != s.want || min != s.min {
			t.Fatalf("step %d [%d,%d): %v min %d, want %v min %d", i, s.prev, s.end, got, min, s.want, s.min)
		}
	}
	if v.End(p) != 30 || v.End(PartitionID{1, 0}) != 0 {
		t.Fatalf("ends = %v", v.Snapshot())
	}
}

// Whatever mix of replays, duplicates and losses a fragment sees, the set of
// offsets it applies is exactly every offset once, in order, as long as the
// reader rewinds on a gap.
func TestExactlyOnceUnderReplay(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.Int64Range(1, 200).Draw(t, "events")
		var v Vector
		p := PartitionID{}
		var applied []int64
		pos := int64(0) // reader position
		sentEnd := int64(0)
		for steps := 0; v.End(p) < n && steps < 2000; steps++ {
			switch rapid.IntRange(0, 5).Draw(t, "action") {
			case 0: // the reader restarts from an older offset (replay)
				pos = rapid.Int64Range(0, pos).Draw(t, "rewind")
				sentEnd = pos
				continue
			case 1: // a batch is lost in flight
				end := min(n, pos+rapid.Int64Range(1, 10).Draw(t, "len"))
				sentEnd, pos = end, end
				continue
			}
			end := min(n, pos+rapid.Int64Range(0, 10).Draw(t, "len"))
			verdict, from := v.Admit(p, sentEnd, end)
			switch verdict {
			case Apply:
				for o := max(from, pos); o < end; o++ {
					applied = append(applied, o)
				}
				// Records before pos in this batch were sent in earlier
				// batches: a batch covers [sentEnd, end) but holds [pos, end).
				for o := from; o < min(pos, end); o++ {
					t.Fatalf("offset %d below the batch's records admitted", o)
				}
				sentEnd, pos = end, end
			case Gap:
				pos, sentEnd = from, from // rewind
			case Duplicate:
				sentEnd, pos = end, end
			}
		}
		if v.End(p) < n {
			return // ran out of steps: nothing to check
		}
		for i, o := range applied {
			if o != int64(i) {
				t.Fatalf("applied %v", applied)
			}
		}
	})
}

func TestFence(t *testing.T) {
	epoch := uint64(3)
	for _, c := range []struct {
		batch uint64
		want  Verdict
		after uint64
	}{{3, Apply, 3}, {2, Fenced, 3}, {5, Apply, 5}, {4, Fenced, 5}} {
		if got := Fence(&epoch, c.batch); got != c.want || epoch != c.after {
			t.Fatalf("Fence(batch %d) = %v, epoch %d; want %v, %d", c.batch, got, epoch, c.want, c.after)
		}
	}
}
