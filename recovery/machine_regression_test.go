package recovery_test

import (
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/recovery"
)

// A user function fails while a checkpoint is being written, and that
// write fails. The machine rightly waits for the write's answer before it
// asks for the restore (failure, machine.go:356), but Durable returns on
// the error (machine.go:518-519) before it looks at the failure
// (machine.go:530-531), so no Restore ever comes: the fragment stays down
// for good, serves nothing and drops all its input as gaps, and with
// checkpoints broken nothing else restores it. Its last durable checkpoint
// (or the failed one, if it landed after all: a pebble batch is all or
// nothing) is a sound state: it should be restored and go on, as after any
// other failure.
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
