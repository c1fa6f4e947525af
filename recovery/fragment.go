package recovery

import (
	"fmt"
	"time"

	"github.com/tessera-streams/tessera/internal/flowcore"
)

// Take builds the next checkpoint of a fragment: the state changed since
// its last checkpoint and its offset vector. It is called by the fragment's
// owner between batches; writing it (Store.Write) may happen elsewhere,
// later.
func Take(fr *flowcore.Fragment, vec *Vector, fragments int, epoch uint64, now time.Time) (*Checkpoint, error) {
	d, err := fr.TakeDelta()
	if err != nil {
		return nil, err
	}
	return &Checkpoint{
		Manifest: Manifest{Epoch: epoch, Fragments: fragments, Time: now.UnixNano(), Entries: d.Entries,
			Events: d.Events, Offsets: vec.Snapshot()},
		Reset: d.Reset, Puts: d.Puts, Deletes: d.Deletes,
	}, nil
}

// Restored is a fragment rebuilt from its last checkpoint.
type Restored struct {
	Fragment *flowcore.Fragment
	Vector   Vector
	Manifest Manifest // zero if there was no checkpoint
	Found    bool
}

// Restore rebuilds fragment id of plan from its last checkpoint in s, or
// empty if it has none. A checkpoint that fails its integrity checks, or
// that belongs to a flow with another fragment count, is an error: the
// fragment must not serve what it cannot trust.
func Restore(s *Store, plan *flowcore.Plan, id int) (Restored, error) {
	fr := plan.NewFragment(id)
	m, ok, err := s.Load(plan.Name(), id, fr.Restore)
	if err != nil {
		return Restored{}, err
	}
	r := Restored{Fragment: fr, Manifest: m, Found: ok}
	if !ok {
		return r, nil
	}
	if m.Fragments != plan.Fragments() {
		return Restored{}, fmt.Errorf("restore fragment %d of %s: checkpoint has %d fragments, the flow %d: state cannot be re-sharded",
			id, plan.Name(), m.Fragments, plan.Fragments())
	}
	for p, end := range m.Offsets {
		r.Vector.Set(p, end)
	}
	fr.SetEvents(m.Events)
	fr.Restored()
	return r, nil
}
