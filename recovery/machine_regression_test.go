package recovery_test

import (
	"errors"
	"maps"
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
