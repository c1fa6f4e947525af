package actor

import (
	"sync"

	pa "github.com/asynkron/protoactor-go/actor"
)

// workers runs the mailboxes of the engine's busiest actors (fragments,
// readers, the inbox) on goroutines it keeps between runs.
//
// protoactor's default dispatcher starts a goroutine every time an idle
// mailbox gets a message. Such a goroutine starts with a small stack that
// a fragment's apply (or a batch's decoding) grows by copying, two or
// three times, and the runtime frees the grown stack when the goroutine
// ends: in three nodes, where a fragment's mailbox empties after each
// batch from another node, the goroutines' starts and their stacks'
// growth took a fortieth of the CPU. A worker here runs one mailbox run
// after the other on the same goroutine, its stack grown once.
//
// Schedule never blocks: with no worker idle it starts one. At most
// maxIdleWorkers wait for work; the others end when their run does. Close
// stops the idle workers and waits for the running ones; a mailbox
// scheduled after Close runs on a goroutine of its own, as protoactor's
// dispatcher runs it.
type workers struct {
	throughput int
	mu         sync.Mutex
	idle       []chan func() // LIFO: the last worker to finish has its stack in the caches
	closed     bool
	wg         sync.WaitGroup
}

// maxIdleWorkers bounds the goroutines that wait for a mailbox to run:
// about as many as the mailboxes that run at once on a busy node.
const maxIdleWorkers = 64

var _ pa.Dispatcher = (*workers)(nil)

func newWorkers(throughput int) *workers { return &workers{throughput: throughput} }

func (w *workers) Throughput() int { return w.throughput }

func (w *workers) Schedule(fn func()) {
	w.mu.Lock()
	if n := len(w.idle); n > 0 {
		ch := w.idle[n-1]
		w.idle = w.idle[:n-1]
		w.mu.Unlock()
		ch <- fn // buffered: the worker took itself off the list to wait
		return
	}
	if w.closed {
		w.mu.Unlock()
		go fn()
		return
	}
	w.wg.Add(1)
	w.mu.Unlock()
	go w.run(make(chan func(), 1), fn)
}

// run runs fn, then whatever it is handed on ch, until it is handed nil,
// finds maxIdleWorkers idle, or the workers are closed.
func (w *workers) run(ch chan func(), fn func()) {
	defer w.wg.Done()
	for fn != nil {
		fn()
		w.mu.Lock()
		if w.closed || len(w.idle) >= maxIdleWorkers {
			w.mu.Unlock()
			return
		}
		w.idle = append(w.idle, ch)
		w.mu.Unlock()
		fn = <-ch
	}
}

// Close stops the idle workers and waits for the running ones to finish
// their runs. Safe to call twice.
func (w *workers) Close() {
	w.mu.Lock()
	w.closed = true
	idle := w.idle
	w.idle = nil
	w.mu.Unlock()
	for _, ch := range idle {
		ch <- nil
	}
	w.wg.Wait()
}
