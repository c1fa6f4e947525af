package splice

import (
	"context"
	"sync"
	"time"
)

// watchHub shares evaluations among watchers: the watchers of one request
// (view, parameters) and interval form a group, whose goroutine evaluates
// the view once per interval and hands every watcher the result. A
// thousand watchers of a view cost one evaluation per interval, plus each
// one's diff and write.
//
// A group starts with its first watcher, which waits for its first
// evaluation (later ones start from the group's latest), and stops when its
// last watcher leaves: unsubscribe waits for its goroutine. A watcher that
// falls behind skips to the newest result (it diffs against what it sent
// last, so it loses nothing but intermediate states). The watchers that
// sent a group's previous result share the diff to the next one, encoded
// once: a thousand watchers cost one evaluation, one diff and a thousand
// writes of the same bytes.
type watchHub struct {
	g    Gatherer
	done <-chan struct{} // stops every group (the node is stopping)

	mu     sync.Mutex
	groups map[watchKey]*watchGroup
}

type watchKey struct {
	req      Request
	interval time.Duration
}

type watchGroup struct {
	key    watchKey
	subs   map[*watcher]struct{} // hub.mu
	last   *watchUpdate          // hub.mu; nil until the first evaluation
	ready  chan struct{}         // closed after the first evaluation
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when the group's goroutine returns
}

// watchUpdate is one evaluation, with its snapshot for diffs; shared by
// every watcher, read only.
type watchUpdate struct {
	res  Result
	snap map[string][]byte
	err  error
	// seq numbers the group's updates from 1; prevSeq and prevSnap are
	// the update before (0, nil for the first), whose watchers share
	// this update's change event, made once (sharedChange).
	seq, prevSeq uint64
	prevSnap     map[string][]byte
	once         sync.Once
	change       []byte
}

// sharedChange is the change event from the group's previous update to
// u, encoded once for every watcher that sent the previous one.
func (u *watchUpdate) sharedChange() []byte {
	u.once.Do(func() { u.change = changeEvent(u.prevSnap, u) })
	return u.change
}

type watcher struct {
	g  *watchGroup
	ch chan *watchUpdate // the newest update not yet taken
}

func newWatchHub(g Gatherer, done <-chan struct{}) *watchHub {
	return &watchHub{g: g, done: done, groups: map[watchKey]*watchGroup{}}
}

// subscribe adds a watcher of req at interval and returns it with the
// group's latest evaluation, once there is one; nil if ctx ends first.
func (h *watchHub) subscribe(ctx context.Context, req Request, interval time.Duration) (*watcher, *watchUpdate) {
	key := watchKey{req, interval}
	h.mu.Lock()
	g := h.groups[key]
	if g == nil {
		g = &watchGroup{key: key, subs: map[*watcher]struct{}{}, ready: make(chan struct{}), done: make(chan struct{})}
		g.ctx, g.cancel = context.WithCancel(context.Background())
		h.groups[key] = g
		go h.run(g)
	}
	w := &watcher{g: g, ch: make(chan *watchUpdate, 1)}
	g.subs[w] = struct{}{}
	h.mu.Unlock()
	select {
	case <-g.ready:
	case <-ctx.Done():
		h.unsubscribe(w)
		return nil, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-w.ch: // last is newer, or the same
	default:
	}
	return w, g.last
}

// unsubscribe removes w; the last watcher of a group stops it and waits
// for its goroutine.
func (h *watchHub) unsubscribe(w *watcher) {
	g := w.g
	h.mu.Lock()
	delete(g.subs, w)
	last := len(g.subs) == 0
	if last {
		if h.groups[g.key] == g {
			delete(h.groups, g.key)
		}
		g.cancel()
	}
	h.mu.Unlock()
	if last {
		<-g.done
	}
}

func (h *watchHub) run(g *watchGroup) {
	defer close(g.done)
	h.publish(g, h.evaluate(g))
	close(g.ready)
	t := time.NewTicker(g.key.interval)
	defer t.Stop()
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-h.done:
			return
		case <-t.C:
		}
		h.publish(g, h.evaluate(g))
	}
}

func (h *watchHub) evaluate(g *watchGroup) *watchUpdate {
	res, err := Evaluate(g.ctx, h.g, g.key.req)
	if err != nil {
		return &watchUpdate{err: err}
	}
	return &watchUpdate{res: res, snap: snapshot(res)}
}

func (h *watchHub) publish(g *watchGroup, u *watchUpdate) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if p := g.last; p != nil {
		u.seq = p.seq + 1
		if p.err == nil && u.err == nil {
			u.prevSeq, u.prevSnap = p.seq, p.snap
		}
	} else {
		u.seq = 1
	}
	g.last = u
	for w := range g.subs {
		select {
		case <-w.ch: // not taken yet: the newer one replaces it
		default:
		}
		w.ch <- u
	}
}
