package actor

import (
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/splice"
)

// FragmentStats are a fragment's counters, safe to read concurrently.
type FragmentStats struct {
	ID         int
	Events     atomic.Int64 // records applied (since the first start)
	Batches    atomic.Int64
	Duplicates atomic.Int64 // batches dropped as duplicates
	Gaps       atomic.Int64 // batches dropped after a loss, each followed by a rewind
	Fenced     atomic.Int64 // batches dropped as sent under an older placement epoch
	Malformed  atomic.Int64 // batches from other nodes that did not decode
	Reasked    atomic.Int64 // rewinds asked again of a remote reader that did not replay
	// RestoredEpoch and RestoredEvents: the checkpoint the fragment
	// started from on this node (0, 0: none, it starts empty). After a
	// failover it is the standby copy.
	RestoredEpoch  atomic.Uint64
	RestoredEvents atomic.Int64
	Failures       atomic.Int64 // user-function failures (each restores the fragment)
	Dead           atomic.Int64 // events dead-lettered after MaxAttempts failures
	Restores       atomic.Int64 // restores from a checkpoint after a failure
	Replayed       atomic.Int64 // source offsets received again that were applied before (replays)
	Epoch          atomic.Uint64
	StandbyEpoch   atomic.Uint64 // the newest checkpoint its standby confirmed since it became its standby (0: none yet, or no standby); once not 0, the standby holds every checkpoint the fragment settled
	Watermark      atomic.Int64  // event-time watermark, unix ns (flowcore.NoWatermark: none): the least of its input channels'
	TooLate        atomic.Int64  // events too late for every window (replays may count again)
	CkptTime       atomic.Int64  // unix nanoseconds of the last durable checkpoint
	CkptBytes      atomic.Int64  // bytes written by checkpoints
	CkptTook       atomic.Int64  // ns from taking the last durable checkpoint to its being durable
	Retained       atomic.Int64  // exchange outputs kept until downstream checkpoints cover them
	Complete       atomic.Bool   // every input ended and was applied, every output sent (Fragment.Complete)
	mu             sync.Mutex
	offsets        map[string]int64
	durable        map[recovery.PartitionID]int64 // offsets of the last durable checkpoint
	ckptErr        error
	fa             *fragmentActor // its actor, for the read path (fragmentActor.query)

	// channelWMs is the watermark of each input channel (unix ns,
	// flowcore.NoWatermark: none): a view's answer gives the one of the
	// channel that feeds its stage (Plan.ViewChannel).
	channelWMs []atomic.Int64

	// Stale: the fragment restored a copy older than what fragments
	// downstream applied and refuses until a newer one comes (Stales
	// counts such stops).
	Stale  atomic.Bool
	Stales atomic.Int64
}

// storeWatermarks takes fr's watermarks: its own and each channel's.
func (s *FragmentStats) storeWatermarks(fr *flowcore.Fragment) {
	s.Watermark.Store(fr.Watermark())
	for ch := range s.channelWMs {
		s.channelWMs[ch].Store(fr.ChannelWatermark(ch))
	}
}

// freshness is the fragment's freshness, with its own watermark (the
// least of its channels').
func (s *FragmentStats) freshness() splice.Freshness { return s.freshnessOf(-1) }

// freshnessOf is the fragment's freshness for a view whose stage input
// channel ch feeds (-1: the fragment's own watermark).
func (s *FragmentStats) freshnessOf(ch int) splice.Freshness {
	f := splice.Freshness{Fragment: s.ID, Epoch: s.Epoch.Load(), Offsets: s.Offsets(), Complete: s.Complete.Load()}
	wm := s.Watermark.Load()
	if ch >= 0 && ch < len(s.channelWMs) {
		wm = s.channelWMs[ch].Load()
	}
	if wm != flowcore.NoWatermark {
		t := time.Unix(0, wm).UTC()
		f.Watermark = &t
	}
	return f
}

// Offsets copies the fragment's offset vector, by partition name.
func (s *FragmentStats) Offsets() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.offsets)
}

// CheckpointError is the error of the last failed checkpoint write, if any.
func (s *FragmentStats) CheckpointError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ckptErr
}

// ReaderStats are a reader's counters.
type ReaderStats struct {
	Source    string
	Partition int
	Position  atomic.Int64
	Events    atomic.Int64 // events read, replays included
	Bad       atomic.Int64 // malformed records
	Stalls    atomic.Int64 // times it waited for credits
	Crossed   atomic.Int64 // records sent to fragments on other nodes, replays included
	Rewinds   atomic.Int64
	Done      atomic.Bool // the partition is exhausted and everything was applied
	// Committed is the offset up to which every fragment, on any node, has
	// a durable checkpoint of the partition: what the source was committed
	// (-1 until every fragment checkpointed once).
	Committed atomic.Int64
}
