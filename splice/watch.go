package splice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// watchHub shares evaluations among watchers: the watchers of one request
// (view, parameters) and interval form a group, whose goroutine evaluates
// the view once per interval and writes every watcher its change. A
// thousand watchers of a view cost one evaluation per interval, one diff
// (the watchers that sent the group's previous result share the change to
// the next, encoded once) and a thousand writes of the same bytes. A
// keyed view's evaluation and diff are built from the entries its
// fragments changed since the group's last answer (watchdelta.go), not
// from the whole view; so are a windowed keyed view's over a range of
// windows (watchwindows.go), and an aggregate or windowed view's merge
// asks only for the partials that changed.
//
// The group's goroutine writes the events itself, one watcher after the
// other, rather than waking a goroutine per watcher: a thousand goroutines
// made runnable at once every interval would queue every other request of
// the process (a point lookup) behind them. A write that does not complete
// within writeTimeout (a client that stopped reading) ends that
// watcher's stream, so a slow client never holds the others back.
//
// A group starts with its first watcher, which waits for its first
// evaluation (later ones start from the group's latest), and stops when its
// last watcher leaves: unsubscribe waits for its goroutine. A watcher that
// has not sent the previous result (it just joined, or an evaluation
// failed) diffs against what it sent last, so it loses nothing but
// intermediate states.
type watchHub struct {
	g    Gatherer
	done <-chan struct{} // stops every group (the node is stopping)

	mu     sync.Mutex
	groups map[watchKey]*watchGroup
}

// watchWriteTimeout bounds one small event's write to one watcher; a
// large one gets more time, as if the client read 10 MB/s.
const watchWriteTimeout = 200 * time.Millisecond

func writeTimeout(n int) time.Duration {
	return watchWriteTimeout + time.Duration(n/10)*time.Microsecond
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
	delta  *deltaWatch   // a keyed view's answer kept from changes (watchdelta.go); the group's goroutine's
}

// watchUpdate is one evaluation, with its snapshot for diffs; shared by
// every watcher, read only.
type watchUpdate struct {
	res  Result
	snap map[string][]byte
	err  error
	// seq numbers the group's updates from 1; prevSeq and prevSnap are
	// the update before (0, nil if there is none or it failed), whose
	// watchers share this update's change event, made once (shared).
	seq, prevSeq uint64
	prevSnap     map[string][]byte
	once         sync.Once
	change       []byte
	// delta: built from the fragments' changes on the update before,
	// whose watchers deltaEvent takes here (nil: nothing changed).
	delta      bool
	deltaEvent []byte
}

// shared is the event that takes a watcher that sent the group's
// previous update to u: the change, an "unavailable" event, or an "error"
// (end says the stream ends with it). Made once for every watcher.
func (u *watchUpdate) shared() (ev []byte, end bool) {
	u.once.Do(func() {
		if u.delta {
			u.change = u.deltaEvent
			return
		}
		u.change, _ = u.event(u.prevSnap)
	})
	var ue *UnavailableError
	return u.change, u.err != nil && !errors.As(u.err, &ue)
}

// event is the event that takes a watcher from the answer whose snapshot
// is last to u (nil: nothing changed).
func (u *watchUpdate) event(last map[string][]byte) ([]byte, bool) {
	var ue *UnavailableError
	switch {
	case errors.As(u.err, &ue):
		// Fragments are moving: say so, and the next interval tries again.
		return sseEvent("unavailable", unavailableAnswer{Error: cleanError(u.err), Fragments: ue.Fragments,
			RetryAfter: max(1, int(math.Ceil(ue.RetryAfter.Seconds())))}), false
	case u.err != nil:
		return sseEvent("error", map[string]string{"error": cleanError(u.err)}), true
	}
	return changeEvent(last, u), false
}

func sseEvent(event string, v any) []byte {
	b, _ := json.Marshal(v)
	return fmt.Appendf(nil, "event: %s\ndata: %s\n\n", event, b)
}

// watcher is one client's stream. Once started, the group's goroutine
// writes its events through write; ended is closed when it stops doing so
// for good (a write failed, or an error ended the stream).
type watcher struct {
	g      *watchGroup
	active bool // hub.mu: the group writes to it

	mu      sync.Mutex // held while writing
	gone    bool       // no more writes: its handler returned, or it ended
	write   func([]byte) error
	last    map[string][]byte // what it sent last
	lastSeq uint64
	ended   chan struct{}
}

func newWatchHub(g Gatherer, done <-chan struct{}) *watchHub {
	return &watchHub{g: g, done: done, groups: map[watchKey]*watchGroup{}}
}

// subscribe adds a watcher of req at interval and returns it with the
// group's latest evaluation, once there is one; nil if ctx ends first.
// The group writes to it only once it is started.
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
	w := &watcher{g: g, ended: make(chan struct{})}
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
	return w, g.last
}

// start has the group write w's events through write from its next
// update on; first is what w's client was sent already.
func (h *watchHub) start(w *watcher, first *watchUpdate, write func([]byte) error) {
	w.mu.Lock()
	w.write, w.last, w.lastSeq = write, first.snap, first.seq
	w.mu.Unlock()
	h.mu.Lock()
	w.active = true
	h.mu.Unlock()
}

// unsubscribe removes w and waits for any write to it to end; the last
// watcher of a group stops it and waits for its goroutine.
func (h *watchHub) unsubscribe(w *watcher) {
	w.mu.Lock()
	w.gone = true
	w.mu.Unlock()
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
	if u := h.evaluateDelta(g); u != nil {
		return u
	}
	res, err := Evaluate(g.ctx, h.g, g.key.req)
	if err != nil {
		return &watchUpdate{err: err}
	}
	res.Cut = Cut{Consistency: Latest, Offsets: LowerCut(res.Freshness)}
	return &watchUpdate{res: res, snap: snapshot(res)}
}

// publish makes u the group's latest update and writes it to every
// started watcher, one after the other.
func (h *watchHub) publish(g *watchGroup, u *watchUpdate) {
	h.mu.Lock()
	if p := g.last; p != nil {
		u.seq = p.seq + 1
		if p.err == nil && u.err == nil {
			u.prevSeq, u.prevSnap = p.seq, p.snap
		}
	} else {
		u.seq = 1
	}
	g.last = u
	ws := make([]*watcher, 0, len(g.subs))
	for w := range g.subs {
		if w.active {
			ws = append(ws, w)
		}
	}
	h.mu.Unlock()
	for _, w := range ws {
		if g.ctx.Err() != nil {
			return
		}
		w.deliver(u)
	}
}

// deliver writes w the event that takes it to u, if any.
func (w *watcher) deliver(u *watchUpdate) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gone {
		return
	}
	var ev []byte
	var end bool
	if u.err != nil || (u.prevSeq != 0 && u.prevSeq == w.lastSeq) {
		ev, end = u.shared()
	} else {
		ev, end = u.event(w.last)
	}
	if u.err == nil {
		w.last, w.lastSeq = u.snap, u.seq
	}
	if ev != nil && w.write(ev) != nil {
		end = true
	}
	if end {
		w.gone = true
		close(w.ended)
	}
}
