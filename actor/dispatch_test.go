package actor

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// Every scheduled function runs exactly once, on workers that are reused
// (fewer goroutines than runs), from many schedulers at once, and Close
// waits for the runs under way and ends every worker (goleak checks it).
func TestWorkersRunEachOnce(t *testing.T) {
	w := newWorkers(300)
	const schedulers, each = 8, 2000
	var ran [schedulers * each]atomic.Int32
	var done sync.WaitGroup
	done.Add(schedulers * each)
	var wg sync.WaitGroup
	for s := range schedulers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				n := s*each + i
				w.Schedule(func() {
					ran[n].Add(1)
					done.Done()
				})
			}
		}()
	}
	wg.Wait()
	done.Wait()
	for i := range ran {
		if got := ran[i].Load(); got != 1 {
			t.Fatalf("function %d ran %d times", i, got)
		}
	}
	// A run that is under way when Close is called finishes before
	// Close returns.
	block, release := make(chan struct{}), make(chan struct{})
	var finished atomic.Bool
	w.Schedule(func() {
		close(block)
		<-release
		finished.Store(true)
	})
	<-block
	closed := make(chan struct{})
	go func() { w.Close(); close(closed) }()
	for {
		w.mu.Lock()
		c := w.closed
		w.mu.Unlock()
		if c {
			break
		}
		runtime.Gosched()
	}
	for range 100 {
		select {
		case <-closed:
			t.Fatal("Close returned while a run was under way")
		default:
			runtime.Gosched()
		}
	}
	close(release)
	<-closed
	if !finished.Load() {
		t.Fatal("Close returned before the run under way finished")
	}
	// After Close a function still runs, on a goroutine of its own.
	after := make(chan struct{})
	w.Schedule(func() { close(after) })
	<-after
	w.Close()
}

// Runs reuse idle workers: scheduled one after the other, the runs take
// one goroutine, not one each.
func TestWorkersReuse(t *testing.T) {
	w := newWorkers(300)
	defer w.Close()
	for range 100 {
		done := make(chan struct{})
		w.Schedule(func() { close(done) })
		<-done
		// The worker puts itself on the idle list after its run: wait
		// for it, so that the next run finds it.
		for {
			w.mu.Lock()
			n := len(w.idle)
			w.mu.Unlock()
			if n == 1 {
				break
			}
			runtime.Gosched()
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.idle) != 1 {
		t.Fatalf("%d idle workers after 100 runs one at a time, want 1", len(w.idle))
	}
}
