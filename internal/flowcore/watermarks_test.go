package flowcore

import (
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// A partition known idle stays idle when its reader, started anew (a
// failover moved it), sends a batch before it read anything: the
// channel's watermark goes on with the other partitions. It stood still
// before, at the idle partition's old watermark.
func TestWatermarksIdlePartitionStaysIdleForANewReader(t *testing.T) {
	w := newWatermarks(3)
	w.observe(0, 100, false)
	w.observe(1, 50, false)
	w.observe(2, 120, false)
	if w.wm != 50 {
		t.Fatalf("watermark %d, want 50", w.wm)
	}
	w.observe(1, 50, true) // partition 1 goes idle
	if w.wm != 100 {
		t.Fatalf("watermark %d with partition 1 idle, want 100", w.wm)
	}
	// Its reader starts again elsewhere and sends a batch with nothing
	// read yet.
	if w.observe(1, NoWatermark, false) {
		t.Fatal("a batch without a watermark moved the channel's")
	}
	if !w.parts[1].idle {
		t.Fatal("a batch without a watermark made an idle partition active")
	}
	if !w.observe(0, 300, false) || w.wm != 120 {
		t.Fatalf("watermark %d once partition 0 is at 300, want 120 (partition 1 idle)", w.wm)
	}
	// An event read by the new reader makes the partition active again.
	w.observe(1, 130, false)
	w.observe(2, 400, false)
	if w.parts[1].idle || w.wm != 130 {
		t.Fatalf("watermark %d (partition 1 idle %v), want 130 with partition 1 active", w.wm, w.parts[1].idle)
	}
}

// A batch without a watermark that does not say its partition is idle
// changes nothing: a channel that sees such batches among others ends
// where it ends without them, partition by partition.
func TestWatermarksBatchWithoutWatermarkIsNoOp(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		parts := rapid.IntRange(1, 4).Draw(t, "parts")
		type obs struct {
			part int
			wm   int64
			idle bool
		}
		n := rapid.IntRange(0, 40).Draw(t, "n")
		var all, informative []obs
		for range n {
			o := obs{part: rapid.IntRange(0, parts-1).Draw(t, "part")}
			if rapid.Bool().Draw(t, "none") {
				o.wm = NoWatermark // a reader that read nothing since it opened
			} else {
				o.wm = rapid.Int64Range(-5, 50).Draw(t, "wm")
				o.idle = rapid.Bool().Draw(t, "idle")
			}
			if o.wm == NoWatermark && rapid.Bool().Draw(t, "idleNone") {
				o.idle = true // an idle reader with no event yet
			}
			all = append(all, o)
			if o.wm != NoWatermark || o.idle {
				informative = append(informative, o)
			}
		}
		with, without := newWatermarks(parts), newWatermarks(parts)
		for _, o := range all {
			with.observe(o.part, o.wm, o.idle)
		}
		for _, o := range informative {
			without.observe(o.part, o.wm, o.idle)
		}
		if with.wm != without.wm || !slices.Equal(with.parts, without.parts) {
			t.Fatalf("with batches without a watermark: %d %+v; without them: %d %+v", with.wm, with.parts, without.wm, without.parts)
		}
	})
}
