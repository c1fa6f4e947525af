package splice

import "context"

// WatchStepper runs one watch group of a request by hand, one interval per
// Step, as the hub's goroutine does (for tests outside the package).
type WatchStepper struct {
	h *watchHub
	g *watchGroup
}

// NewWatchStepper is a watch group of req over g with no watchers.
func NewWatchStepper(g Gatherer, req Request) *WatchStepper {
	grp := &watchGroup{key: watchKey{req: req}, subs: map[*watcher]struct{}{}, ready: make(chan struct{}), done: make(chan struct{})}
	grp.ctx, grp.cancel = context.WithCancel(context.Background())
	return &WatchStepper{h: newWatchHub(g, nil), g: grp}
}

// Step evaluates the group's next update: its answer, the event that
// takes a watcher of the previous update to it (nil: nothing changed, or
// there was none), and whether it was built from the fragments' changes.
func (s *WatchStepper) Step() (res Result, event []byte, delta bool, err error) {
	u := s.h.evaluate(s.g)
	s.h.publish(s.g, u)
	if u.err == nil && u.prevSeq != 0 {
		event, _ = u.shared()
	}
	return u.res, event, u.delta, u.err
}

// Close ends the group.
func (s *WatchStepper) Close() { s.g.cancel() }

// KeyedWindowJSON is a window as a watch's events carry it.
func KeyedWindowJSON(kw KeyedWindow) []byte { return keyedWindowJSON(kw) }
