package commit

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// broker records the committer's rounds and fails each partition as many
// times as the test says.
type broker struct {
	mu      sync.Mutex
	fail    map[string]int
	rounds  []string
	settled chan struct{}
}

func newBroker(fail map[string]int) *broker {
	return &broker{fail: fail, settled: make(chan struct{}, 100)}
}

func (b *broker) send(_ context.Context, batch map[string]int64) map[string]error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rounds = append(b.rounds, fmt.Sprint(batch))
	errs := map[string]error{}
	for p := range batch {
		if b.fail[p] > 0 {
			b.fail[p]--
			errs[p] = fmt.Errorf("%s refused", p)
		}
	}
	return errs
}

// committer starts a committer on b that retries only when a reader
// commits (the retry after a backoff is tested apart).
func (b *broker) committer() *Committer[string] {
	return start("test", b.send, func() { b.settled <- struct{}{} }, time.Hour)
}

func (b *broker) sent() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.rounds, " ")
}

func TestCommitsAreSentRetriedAndReported(t *testing.T) {
	b := newBroker(map[string]int{"a": 2})
	c := b.committer()
	steps := []struct {
		part    string
		off     int64
		wantErr string
		round   bool
	}{
		{"a", 5, "", true},          // fails
		{"b", 9, "", true},          // a is sent again with b, and fails again
		{"b", 7, "", false},         // lower than committed: nothing to send
		{"a", 6, "a refused", true}, // the last round's error, once
		{"a", 6, "", false},
	}
	for i, s := range steps {
		err := c.Commit(s.part, s.off)
		if (err == nil) != (s.wantErr == "") || err != nil && !strings.Contains(err.Error(), s.wantErr) {
			t.Fatalf("step %d: Commit(%s, %d) = %v, want %q", i, s.part, s.off, err, s.wantErr)
		}
		if s.round {
			<-b.settled
		}
	}
	if err := c.Close(); err != nil { // nothing pending: no round
		t.Fatalf("Close: %v", err)
	}
	if got, want := b.sent(), "map[a:5] map[a:5 b:9] map[a:6]"; got != want {
		t.Fatalf("rounds %q, want %q", got, want)
	}
	if err := c.Commit("a", 7); err == nil {
		t.Fatal("Commit after Close did not fail")
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestCloseSendsWhatIsPendingAndReturnsItsErrors(t *testing.T) {
	b := newBroker(map[string]int{"b": 2})
	c := b.committer()
	if err := c.Commit("a", 1); err != nil {
		t.Fatal(err)
	}
	<-b.settled
	if err := c.Commit("b", 2); err != nil {
		t.Fatal(err)
	}
	<-b.settled
	err := c.Close() // b is sent once more, and fails
	if err == nil || !strings.Contains(err.Error(), "b refused") {
		t.Fatalf("Close = %v, want the last round's error", err)
	}
	if got, want := b.sent(), "map[a:1] map[b:2] map[b:2]"; got != want {
		t.Fatalf("rounds %q, want %q", got, want)
	}
}

func TestALaterSuccessClearsAFailure(t *testing.T) {
	b := newBroker(map[string]int{"a": 1})
	c := b.committer()
	if err := c.Commit("a", 1); err != nil {
		t.Fatal(err)
	}
	<-b.settled
	if err := c.Commit("a", 2); err == nil {
		t.Fatal("the failure of the first round was not returned")
	}
	<-b.settled
	if err := c.Close(); err != nil {
		t.Fatalf("Close = %v after a successful round", err)
	}
	if b.sent() != "map[a:1] map[a:2]" {
		t.Fatalf("rounds %q", b.sent())
	}
}

// A failed round is retried after a backoff even if no reader commits
// again (an idle source).
func TestFailedRoundIsRetriedWithoutACommit(t *testing.T) {
	b := newBroker(map[string]int{"a": 2})
	c := start("test", b.send, func() { b.settled <- struct{}{} }, time.Millisecond)
	if err := c.Commit("a", 1); err != nil {
		t.Fatal(err)
	}
	for range 3 { // fails, fails again, then goes through
		<-b.settled
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close = %v after the retry went through", err)
	}
	if got, want := b.sent(), "map[a:1] map[a:1] map[a:1]"; got != want {
		t.Fatalf("rounds %q, want %q", got, want)
	}
}
