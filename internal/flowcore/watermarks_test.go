package flowcore

import (
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// A partition known idle stays idle when its reader sends what it knows
// less of than the fragment: a batch before it read anything (it started
// anew after a failover), and a replay (it rewound for another fragment
// and reads again what this one applied). The channel's watermark goes
// on with the other partitions; it stood still before, at the idle
// partition's old watermark.
func TestWatermarksIdlePartitionStaysIdle(t *testing.T) {
	w := newWatermarks(3)
	w.observe(0, 100, false, false)
	w.observe(1, 50, false, false)
	w.observe(2, 120, false, false)
	if w.wm != 50 {
		t.Fatalf("watermark %d, want 50", w.wm)
	}
	w.observe(1, 50, true, false) // partition 1 goes idle
	if w.wm != 100 {
		t.Fatalf("watermark %d with partition 1 idle, want 100", w.wm)
	}
	if w.observe(1, NoWatermark, false, false) {
		t.Fatal("a batch without a watermark moved the channel's")
	}
	if !w.parts[1].idle {
		t.Fatal("a batch without a watermark made an idle partition active")
	}
	if w.observe(1, 40, false, true) || !w.parts[1].idle {
		t.Fatalf("a replay made an idle partition active (watermark %d)", w.wm)
	}
	if !w.observe(0, 300, false, false) || w.wm != 120 {
		t.Fatalf("watermark %d once partition 0 is at 300, want 120 (partition 1 idle)", w.wm)
	}
	// A new event of partition 1 makes it active again.
	w.observe(1, 130, false, false)
	w.observe(2, 400, false, false)
	if w.parts[1].idle || w.wm != 130 {
		t.Fatalf("watermark %d (partition 1 idle %v), want 130 with partition 1 active", w.wm, w.parts[1].idle)
	}
}

type wmObs struct {
	part         int
	wm           int64
	idle, replay bool
}

func drawWMObs(t *rapid.T, parts int) wmObs {
	o := wmObs{part: rapid.IntRange(0, parts-1).Draw(t, "part"), idle: rapid.Bool().Draw(t, "idle"),
		replay: rapid.Bool().Draw(t, "replay")}
	if rapid.Bool().Draw(t, "none") {
		o.wm = NoWatermark // a reader that read nothing since it opened
	} else {
		o.wm = rapid.Int64Range(-5, 50).Draw(t, "wm")
	}
	return o
}

// A batch without a watermark that does not say its partition is idle
// changes nothing: a channel that sees such batches among others ends
// where it ends without them, partition by partition. A replay never
// makes an idle partition active, and the channel's watermark never
// falls.
func TestWatermarksBatchesThatTellNothing(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		parts := rapid.IntRange(1, 4).Draw(t, "parts")
		all := rapid.SliceOfN(rapid.Custom(func(t *rapid.T) wmObs { return drawWMObs(t, parts) }), 0, 40).Draw(t, "batches")
		with, without := newWatermarks(parts), newWatermarks(parts)
		for _, o := range all {
			wasIdle, before := with.parts[o.part].idle, with.wm
			with.observe(o.part, o.wm, o.idle, o.replay)
			if o.replay && wasIdle && !with.parts[o.part].idle {
				t.Fatalf("a replay (%+v) made idle partition %d active", o, o.part)
			}
			if with.wm < before {
				t.Fatalf("the watermark fell from %d to %d", before, with.wm)
			}
			if o.wm != NoWatermark || o.idle {
				without.observe(o.part, o.wm, o.idle, o.replay)
			}
		}
		if with.wm != without.wm || !slices.Equal(with.parts, without.parts) {
			t.Fatalf("with batches without a watermark: %d %+v; without them: %d %+v", with.wm, with.parts, without.wm, without.parts)
		}
	})
}
