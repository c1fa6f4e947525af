package recovery_test

import (
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/recovery"
)

// A user function fails while a checkpoint is being written, and that
// write fails: Durable must still ask for the restore (it once returned on
// the error first, and the fragment stayed down for good, serving nothing
// and dropping all its input as gaps). Its last durable checkpoint is a
// sound state to go on from.
func TestMachineFailureThenFailedCheckpointRestores(t *testing.T) {
	r := countRig(t, newStore(t), "failed-write", 2, 1)
	failingInput(r, 1)
	m := r.machine(0, recovery.MachineConfig{Backoff: -1})
	m.Step(r.batch(t, 0, 0, 2, 0), reader(0))
	r.checkpoint(t, m, 0)
	if cp, err := m.Checkpoint(); cp == nil || err != nil { // its write will fail
		t.Fatalf("checkpoint: %v %v", cp, err)
	}
	m.Step(r.batch(t, 0, 2, 6, 0), reader(0))
	if rd := m.Ready(); rd.Failures != 1 || rd.Restore {
		t.Fatalf("failures %d, restore %v: want the restore to wait for the checkpoint being written", rd.Failures, rd.Restore)
	}
	failed := errors.New("disk full")
	m.Durable(nil, failed)
	if !errors.Is(m.Broken(), failed) {
		t.Fatalf("broken %v", m.Broken())
	}
	if rd := m.Ready(); !rd.Restore {
		m.Tick(r.now.Add(time.Hour))
		m.Step(r.batch(t, 1, 0, 4, 0), reader(1))
		later := m.Ready()
		t.Fatalf("no restore once the checkpoint being written failed: an hour later the fragment is still down (%v), "+
			"serving %q, and drops its input (%d gaps, %d applied)", m.Down(), m.Serving(), later.Gaps, later.Applied)
	}
	m.Restored(r.restore(t, 0), false)
	m.Ready()
	m.Step(r.batch(t, 0, 2, 6, 0), reader(0))
	m.Step(r.batch(t, 1, 0, 4, 0), reader(1))
	if rd := m.Ready(); rd.Applied != 2 || m.Serving() != nil {
		t.Fatalf("after the restore: %+v, serving %v", rd, m.Serving())
	}
	if got, want := view(t, m, "counts"), map[string]int64{"a": 4, "b": 3, "c": 3}; !maps.Equal(got, want) {
		t.Fatalf("counts %v, want %v", got, want)
	}
}

// After a heal two nodes may both read a source partition for a moment:
// the one the fragment's placement names, about to lose it, and the one
// that read further for the fragment's old owner on its side of the
// partition. The fragment replays (asked of whoever reads the partition);
// the further reader's batch then shows a gap. Its rewind must be asked of
// that reader too: the other one answers at the fragment's end with an
// empty batch, which ends the wait, and the further reader would never
// learn that the fragment lacks what it read (sim seed 4934 lost 12 events
// so).
func TestMachineGapFromReaderAheadDuringReplay(t *testing.T) {
	r := countRig(t, newStore(t), "reader-ahead", 1, 1)
	r.push(0, "a", "b", "c", "a", "b", "c")
	m := r.machine(0, recovery.MachineConfig{})
	m.Step(r.batch(t, 0, 0, 2, 0), reader(0))
	m.Ready()
	m.Replay()
	if got, want := rewinds(m.Ready().Rewinds), []rewind{{part(sourceCh, 0), 2, ""}}; !slices.Equal(got, want) {
		t.Fatalf("replay %v, want %v", got, want)
	}
	ahead := recovery.From{Key: "reader-0-ahead"}
	m.Step(r.batch(t, 0, 4, 6, 0), ahead)
	if got, want := rewinds(m.Ready().Rewinds), []rewind{{part(sourceCh, 0), 2, ahead.Key}}; !slices.Equal(got, want) {
		t.Fatalf("a gap from a reader ahead during the replay: rewinds %v, want %v", got, want)
	}
	m.Step(r.batch(t, 0, 5, 6, 0), ahead)
	if rd := m.Ready(); len(rd.Rewinds) != 0 {
		t.Fatalf("asked the reader ahead twice: %v", rewinds(rd.Rewinds))
	}
	m.Step(r.batch(t, 0, 2, 2, 0), reader(0)) // the other reader's answer: nothing new
	m.Step(r.batch(t, 0, 2, 6, 0), ahead)     // the reader ahead rewound
	if rd := m.Ready(); rd.Applied != 2 {
		t.Fatalf("after both answers: %+v", rd)
	}
	if got, want := view(t, m, "counts"), map[string]int64{"a": 2, "b": 2, "c": 2}; !maps.Equal(got, want) {
		t.Fatalf("counts %v, want %v", got, want)
	}
}

// A replay may come out of order (a network that reorders, or the answers
// to two requests crossing): its later batch, first to arrive, is dropped
// as a gap without a new request (its sender was asked already), and its
// first batch fills only part of the hole. The rest must be asked for
// again: a reader at its end sends nothing unless asked, and every batch
// was acknowledged (sim scenario duplication_reordering left a fragment
// 416 offsets short for good). The request waits a tenth of
// RewindTimeout, for the rest if it is still on its way.
func TestMachineReorderedReplayAskedAgain(t *testing.T) {
	const timeout = 3 * time.Second
	for _, late := range []bool{true, false} {
		r := countRig(t, newStore(t), "reordered-replay", 1, 1)
		r.push(0, "a", "b", "c", "a", "b", "c", "a", "b")
		m := r.machine(0, recovery.MachineConfig{RewindTimeout: timeout})
		t0 := r.now
		m.Step(r.batch(t, 0, 0, 2, 0), reader(0))
		m.Step(r.batch(t, 0, 4, 8, 0), reader(0))
		if got, want := rewinds(m.Ready().Rewinds), []rewind{{part(sourceCh, 0), 2, "reader-0"}}; !slices.Equal(got, want) {
			t.Fatalf("a gap: rewinds %v, want %v", got, want)
		}
		m.Step(r.batch(t, 0, 4, 8, 0), reader(0)) // the replay's second batch, first
		m.Step(r.batch(t, 0, 2, 4, 0), reader(0)) // its first
		if rd := m.Ready(); len(rd.Rewinds) != 0 || rd.Applied != 1 || !m.Rewinding() {
			t.Fatalf("the replay's first batch after its second: %d rewinds, %d applied, rewinding %v; want the wait to go on",
				len(rd.Rewinds), rd.Applied, m.Rewinding())
		}
		if !late {
			m.Step(r.batch(t, 0, 4, 8, 0), reader(0)) // the rest was on its way
		}
		m.Tick(t0.Add(timeout/10 - time.Nanosecond))
		if rd := m.Ready(); len(rd.Rewinds) != 0 {
			t.Fatalf("asked again before a tenth of the timeout: %v", rewinds(rd.Rewinds))
		}
		m.Tick(t0.Add(timeout / 10))
		var want []rewind
		if late {
			want = []rewind{{part(sourceCh, 0), 4, ""}}
		}
		if got := rewinds(m.Ready().Rewinds); !slices.Equal(got, want) && (len(got) > 0 || len(want) > 0) {
			t.Fatalf("rest late %v: rewinds %v, want %v", late, got, want)
		}
		if late {
			m.Step(r.batch(t, 0, 4, 8, 0), reader(0))
			m.Ready()
		}
		m.Tick(t0.Add(time.Hour))
		if rd := m.Ready(); len(rd.Rewinds) != 0 || m.Rewinding() {
			t.Fatalf("rest late %v: still asking once everything came: %v", late, rewinds(rd.Rewinds))
		}
		if got, want := view(t, m, "counts"), map[string]int64{"a": 3, "b": 3, "c": 2}; !maps.Equal(got, want) {
			t.Fatalf("rest late %v: counts %v, want %v", late, got, want)
		}
	}
}

// The same, with the hole filled by two batches, each a part: the wait
// goes on after both until the rest comes, however many parts fill it
// meanwhile (sim seed 24836: a reordered replay filled 0–256, then
// 256–512, of a hole its sender had sent up to 595; the wait ended at 512,
// and the fragment never asked for the rest).
func TestMachineReplayInPartsAskedAgain(t *testing.T) {
	const timeout = 3 * time.Second
	r := countRig(t, newStore(t), "replay-in-parts", 1, 1)
	r.push(0, "a", "b", "c", "a", "b", "c", "a", "b")
	m := r.machine(0, recovery.MachineConfig{RewindTimeout: timeout})
	t0 := r.now
	m.Step(r.batch(t, 0, 2, 6, 0), reader(0)) // a gap: asked from 0
	m.Step(r.batch(t, 0, 6, 8, 0), reader(0)) // the sender had sent up to 8
	if got, want := rewinds(m.Ready().Rewinds), []rewind{{part(sourceCh, 0), 0, "reader-0"}}; !slices.Equal(got, want) {
		t.Fatalf("a gap: rewinds %v, want %v", got, want)
	}
	m.Step(r.batch(t, 0, 0, 2, 0), reader(0)) // the replay's first part
	m.Step(r.batch(t, 0, 2, 4, 0), reader(0)) // its second
	if rd := m.Ready(); len(rd.Rewinds) != 0 || rd.Applied != 2 || !m.Rewinding() {
		t.Fatalf("two parts of the hole: %d rewinds, %d applied, rewinding %v; want the wait to go on",
			len(rd.Rewinds), rd.Applied, m.Rewinding())
	}
	m.Tick(t0.Add(timeout / 10))
	if got, want := rewinds(m.Ready().Rewinds), []rewind{{part(sourceCh, 0), 4, ""}}; !slices.Equal(got, want) {
		t.Fatalf("a tenth of the timeout on: rewinds %v, want %v", got, want)
	}
	m.Step(r.batch(t, 0, 4, 8, 0), reader(0))
	m.Ready()
	m.Tick(t0.Add(time.Hour))
	if rd := m.Ready(); len(rd.Rewinds) != 0 || m.Rewinding() {
		t.Fatalf("still asking once everything came: %v", rewinds(rd.Rewinds))
	}
	if got, want := view(t, m, "counts"), map[string]int64{"a": 3, "b": 3, "c": 2}; !maps.Equal(got, want) {
		t.Fatalf("counts %v, want %v", got, want)
	}
}
