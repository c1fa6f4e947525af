package actor

import (
	"sync"
	"testing"
	"time"
)

// The pause rule on a virtual clock: readings closer than the limit are
// no pause; the first reading after a longer gap, whichever goroutine
// makes it, counts one pause, and every later reading (or one taken before
// the pause and handed in late) sees it counted.
func TestPauseClock(t *testing.T) {
	const limit = 1150 * time.Millisecond
	t0 := time.Unix(1_000_000, 0)
	p := &pauseClock{limit: limit}
	for i := range 40 { // 2 s of ticks every 50 ms: no pause
		if n, gap := p.Observe(t0.Add(time.Duration(i) * 50 * time.Millisecond)); n != 0 || gap != 0 {
			t.Fatalf("tick %d: %d pauses, gap %v", i, n, gap)
		}
	}
	last := t0.Add(39 * 50 * time.Millisecond)
	if n, _ := p.Observe(last.Add(limit)); n != 0 {
		t.Fatal("a gap of exactly the limit counted as a pause")
	}
	last = last.Add(limit)
	// SIGSTOP for 3 s. A reading taken before the stop and handed in after
	// the first reading after it sees the pause, not a second one.
	before := last.Add(10 * time.Millisecond)
	after := last.Add(3 * time.Second)
	n, gap := p.Observe(after)
	if n != 1 || gap != 3*time.Second {
		t.Fatalf("after a 3s stop: %d pauses, gap %v; want 1, 3s", n, gap)
	}
	if n, gap := p.Observe(before); n != 1 || gap != 0 {
		t.Fatalf("a late reading: %d pauses, gap %v", n, gap)
	}
	if n, gap := p.Observe(after.Add(50 * time.Millisecond)); n != 1 || gap != 0 {
		t.Fatalf("the tick after: %d pauses, gap %v", n, gap)
	}
	if n := p.Declare(); n != 2 || p.Count() != 2 {
		t.Fatalf("declared: %d pauses", n)
	}

	// Every goroutine that wakes up after the stop reads it; one counts it.
	p = &pauseClock{limit: limit}
	p.Observe(t0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	gaps := 0
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, gap := p.Observe(t0.Add(2*time.Second + time.Duration(i)*time.Millisecond))
			mu.Lock()
			defer mu.Unlock()
			if n != 1 {
				t.Errorf("a goroutine after the stop saw %d pauses", n)
			}
			if gap > 0 {
				gaps++
			}
		}()
	}
	wg.Wait()
	if gaps != 1 {
		t.Fatalf("%d readings counted the stop, want 1", gaps)
	}

	// No limit: the clock is not watched.
	p = &pauseClock{}
	p.Observe(t0)
	if n, _ := p.Observe(t0.Add(time.Hour)); n != 0 {
		t.Fatal("a clock without a limit counted a pause")
	}
}
