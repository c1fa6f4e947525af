// Package commit tells a source, in the background, how far its readers'
// partitions have been committed by the cluster: a Kafka consumer group's
// offsets, a JetStream stream purged below them. Readers call Commit from
// their own goroutines and never wait for the broker; one goroutine sends
// every partition that moved since its last round in the next.
package commit

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Send carries out one round: it tells the broker the offset of each
// partition in batch and returns the error of each partition that failed
// (nil or a missing entry: done). The error should name the partition: it
// reaches the reader that commits it next, and Close.
type Send[P comparable] func(ctx context.Context, batch map[P]int64) map[P]error

// Committer sends the offsets readers commit. A failed partition is sent
// again in the next round, unless a newer offset came meanwhile; a round
// with failures is followed by one after a backoff (1 s, doubling to 30 s)
// even if no reader commits again, so an idle source's offsets get there.
type Committer[P comparable] struct {
	name    string
	send    Send[P]
	mu      sync.Mutex
	pending map[P]int64
	high    map[P]int64 // the highest offset each partition committed
	errs    map[P]error // of the last round, returned by the next Commit
	closed  bool
	wake    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
	settled func() // tests: called after each round's outcome is recorded
	retry   time.Duration
}

// Rounds are bounded: a round that takes longer is cancelled, and what it
// did not send is pending again.
const (
	roundTimeout = 10 * time.Second
	finalTimeout = 5 * time.Second // the round at Close
	retryFirst   = time.Second
	retryMost    = 30 * time.Second
)

// New starts a committer; name prefixes its own errors ("kafka", "nats").
func New[P comparable](name string, send Send[P]) *Committer[P] {
	return start(name, send, func() {}, retryFirst)
}

func start[P comparable](name string, send Send[P], settled func(), retry time.Duration) *Committer[P] {
	c := &Committer[P]{name: name, send: send, pending: map[P]int64{}, high: map[P]int64{}, errs: map[P]error{},
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}), settled: settled, retry: retry}
	go c.run()
	return c
}

// Commit records that p may be committed up to offset and returns the
// error of p's last failed round, if any. An offset at or below one
// committed before changes nothing: a group's offsets never go back. It
// never blocks on the broker.
func (c *Committer[P]) Commit(p P, offset int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New(c.name + ": commit after the source was closed")
	}
	err := c.errs[p]
	delete(c.errs, p)
	if offset <= c.high[p] {
		return err
	}
	c.high[p] = offset
	c.pending[p] = offset
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return err
}

func (c *Committer[P]) run() {
	defer close(c.done)
	var retry <-chan time.Time
	backoff := c.retry
	for {
		select {
		case <-c.wake:
		case <-retry:
		case <-c.stop:
			c.round(finalTimeout) // what came last
			return
		}
		retry = nil
		if c.round(roundTimeout) {
			retry = time.After(backoff)
			backoff = min(2*backoff, max(retryMost, c.retry))
		} else {
			backoff = c.retry
		}
	}
}

// round sends what is pending and reports whether some of it failed.
func (c *Committer[P]) round(timeout time.Duration) (failed bool) {
	c.mu.Lock()
	batch := c.pending
	c.pending = map[P]int64{}
	c.mu.Unlock()
	if len(batch) == 0 {
		return false
	}
	defer c.settled()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	errs := c.send(ctx, batch)
	c.mu.Lock()
	defer c.mu.Unlock()
	for p, off := range batch {
		err := errs[p]
		if err == nil {
			delete(c.errs, p) // an older failure is moot
			continue
		}
		c.errs[p] = err
		failed = true
		if _, newer := c.pending[p]; !newer {
			c.pending[p] = off
		}
	}
	return failed
}

// Close sends what is pending in a last round, stops, and returns the
// errors no Commit returned. Safe to call twice.
func (c *Committer[P]) Close() error {
	c.once.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		close(c.stop)
	})
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, err := range c.errs {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
