package actor

import (
	"sync"
	"testing"
	"time"
)

// The node's pause clock is read by every fragment actor, the engine's
// ticker and the alerts at once (the rule itself is recovery.PauseClock's,
// tested there): every goroutine that wakes up after the stop reads it,
// and one counts it.
func TestPauseClockShared(t *testing.T) {
	const limit = 1150 * time.Millisecond
	t0 := time.Unix(1_000_000, 0)
	p := newPauseClock(limit)
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
	if n := p.Declare(); n != 2 || p.Count() != 2 {
		t.Fatalf("declared: %d pauses", n)
	}
}
