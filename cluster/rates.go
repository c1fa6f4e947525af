package cluster

import (
	"maps"
	"sync"
	"time"

	"github.com/tessera-streams/tessera/actor"
)

// rates samples the engine's counters into events/s, per fragment and
// reader (keyed by their counters: a placement change adds and removes
// them).
type rates struct {
	mu          sync.Mutex
	frag        map[*actor.FragmentStats]float64
	read        map[*actor.ReaderStats]float64
	total       float64
	lastF       map[*actor.FragmentStats]int64
	lastR       map[*actor.ReaderStats]int64
	lastT       time.Time
	initialized bool
}

func (r *rates) run(e *actor.Engine, h *history, every time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	r.sample(e, time.Now())
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			r.sample(e, now)
			r.record(e, h, now)
		}
	}
}

// record adds the rates just sampled to the history.
func (r *rates) record(e *actor.Engine, h *history, now time.Time) {
	r.mu.Lock()
	read := maps.Clone(r.read)
	var applied float64
	for _, v := range r.frag {
		applied += v
	}
	r.mu.Unlock()
	h.record(now, e, read, applied)
}

func (r *rates) sample(e *actor.Engine, now time.Time) {
	curF := map[*actor.FragmentStats]int64{}
	for _, f := range e.Fragments() {
		curF[f] = f.Events.Load()
	}
	curR := map[*actor.ReaderStats]int64{}
	for _, x := range e.Readers() {
		curR[x] = x.Events.Load()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.initialized {
		dt := now.Sub(r.lastT).Seconds()
		r.frag, r.read, r.total = map[*actor.FragmentStats]float64{}, map[*actor.ReaderStats]float64{}, 0
		for f, c := range curF {
			if last, ok := r.lastF[f]; ok {
				r.frag[f] = float64(c-last) / dt
			}
		}
		for x, c := range curR {
			if last, ok := r.lastR[x]; ok {
				r.read[x] = float64(c-last) / dt
				r.total += r.read[x]
			}
		}
	}
	r.lastF, r.lastR, r.lastT, r.initialized = curF, curR, now, true
}

func (r *rates) fragment(f *actor.FragmentStats) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.frag[f]
}

func (r *rates) reader(x *actor.ReaderStats) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.read[x]
}

func (r *rates) all() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}
