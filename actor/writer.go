package actor

import (
	pa "github.com/asynkron/protoactor-go/actor"

	"github.com/tessera-streams/tessera/recovery"
)

type writeReq struct {
	frag int
	cp   *recovery.Checkpoint
	pid  *pa.PID
	full bool // replicate the whole checkpoint
	// whole: cp holds the whole state already (the first checkpoint of a
	// fragment that started empty), so a full copy need not be read back.
	whole bool
	// settled, with no cp: closed once every checkpoint queued before it
	// is committed (settleWrites).
	settled chan struct{}
}

// writer commits checkpoints; fragments never wait for it.
//
// Checkpoints that queued while the last ones were written are committed
// together: each in its own batch, then one sync for all (group commit),
// so that the disk flushes once per round, not once per fragment.
func (e *Engine) writer() {
	defer e.bg.Done()
	const most = 256
	reqs := make([]writeReq, 0, most)
	ns := make([]int, most)
	errs := make([]error, most)
	for req := range e.writes {
		reqs = append(reqs[:0], req)
	more:
		for len(reqs) < most {
			select {
			case r, ok := <-e.writes:
				if !ok {
					break more
				}
				reqs = append(reqs, r)
			default:
				break more
			}
		}
		written := false
		for i, r := range reqs {
			if r.cp == nil {
				continue
			}
			ns[i], errs[i] = e.store.WriteUnsynced(e.plan.Name(), r.frag, r.cp)
			written = written || errs[i] == nil
		}
		if written {
			if err := e.store.Sync(); err != nil {
				for i := range reqs {
					if errs[i] == nil {
						errs[i] = err
					}
				}
			}
		}
		for i, r := range reqs {
			if r.cp == nil {
				close(r.settled)
				continue
			}
			copying := false
			if errs[i] == nil && e.self != "" {
				copying = e.replicate(r.frag, r.cp, r.full, r.whole)
			}
			if r.pid != nil {
				e.sys.Root.Send(r.pid, ckptDone{epoch: r.cp.Manifest.Epoch, offsets: r.cp.Manifest.Offsets,
					time: r.cp.Manifest.Time, bytes: ns[i], err: errs[i], copying: copying})
			}
		}
	}
}

// settleWrites returns once the checkpoints queued before it are
// committed (or failed). The caller holds placeMu, so that shutdown does
// not close the queue meanwhile.
func (e *Engine) settleWrites() {
	if e.settling != nil {
		e.settling()
	}
	settled := make(chan struct{})
	e.writes <- writeReq{settled: settled}
	<-settled
}
