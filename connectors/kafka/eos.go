package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/recovery"
)

// scanTimeout bounds the read of a progress marker, and the wait for the
// transactions open on its partition to end.
const scanTimeout = 30 * time.Second

// ErrFenced wraps the error of a Write whose transaction Kafka refused
// because a newer producer with the same transactional id (a newer owner
// of the fragment) initialised since: nothing of that Write is visible.
var ErrFenced = errors.New("kafka sink: fenced by a newer owner of the fragment")

// ErrPaused wraps the error of a Write during which this process was
// found stopped (SIGSTOP, a paused VM) for longer than
// ExactlyOnceConfig.PauseLimit: another node may have taken the fragment
// over meanwhile, so the Write commits nothing.
var ErrPaused = errors.New("kafka sink: the process was paused during the write")

// ExactlyOnceConfig configures an ExactlyOnceSink.
type ExactlyOnceConfig[T any] struct {
	SinkConfig[T]
	// Flow names the flow: fragment f's transactional id is
	// "<Flow>-<f>". Two flows writing at once must have different names.
	Flow string
	// ProgressTopic holds each fragment's last committed output id; empty
	// means "<Topic>.tessera-progress". It is created (compacted, with
	// ProgressPartitions partitions) if missing. Never add partitions to
	// it: a fragment's marker is looked for in one partition, chosen by
	// the partition count the sink saw when it was made.
	ProgressTopic      string
	ProgressPartitions int32 // 0: 1
	// TransactionTimeout is how long Kafka lets a transaction stay open
	// before aborting it (0: franz-go's 40 s). A Write holds one
	// transaction open for as long as it takes.
	TransactionTimeout time.Duration
	// FenceBackoff is how long, after a Write of a fragment failed with
	// ErrFenced, the fragment's Writes fail at once instead of
	// re-initialising its producer, which would fence the newer owner in
	// turn: time for the engine to learn that the fragment moved and stop
	// this (zombie) copy. 0: 10 s; negative: none. An owner that really
	// took the fragment back waits for it once.
	FenceBackoff time.Duration
	// PauseLimit: a Write that finds the process was stopped longer than
	// this since the Write began (two readings of the clock that far
	// apart, while a goroutine reads it every PauseLimit/4) commits
	// nothing and fails with ErrPaused. Keep it at most the time after
	// which the cluster may place a silent node's fragments elsewhere
	// (cluster.PauseLimit). 0: 1 s; negative: no watch.
	PauseLimit time.Duration
	// Now is the clock the pause watch reads; nil: time.Now.
	Now func() time.Time
}

// ExactlyOnceSink writes the outputs of each fragment in Kafka
// transactions, one per Write, with a progress marker that makes a
// redelivered Write skip what an earlier transaction committed; see the
// package doc. Use it with flows.OnCheckpoint. It is safe for concurrent
// use by different fragments; Close it after the engine has stopped.
type ExactlyOnceSink[T any] struct {
	cfg      ExactlyOnceConfig[T]
	admin    *kgo.Client // topic checks and marker offsets
	parts    int32       // of the progress topic
	mu       sync.Mutex
	frags    map[int]*txnProducer
	closed   bool
	closeOne sync.Once
	watch    *pauseWatch // nil: no watch
	started  uint64      // the pause count when the sink started
	stop     chan struct{}
	wg       sync.WaitGroup // the watch's goroutine
}

// txnProducer is one fragment's transactional producer. A fragment's
// Writes come one at a time, but mu also orders them against Close.
type txnProducer struct {
	mu   sync.Mutex
	id   string      // transactional id
	cl   *kgo.Client // nil until (re)initialised
	skip string      // the marker read at initialisation; "" for none
	used bool        // a Write ran since initialisation
	// last is the last output this producer committed (if any): a
	// fragment that moved away and back to this node restores a state
	// whose pending outputs may hold, as a prefix, outputs this producer
	// committed when it owned the fragment before; they are skipped.
	last    flows.OutputID
	hasLast bool
	shut    bool // the sink is closed: never initialise again
	// pauses is the pause count when this fragment's producer last acted
	// (a Write, Restored) or, before that, when the sink started: a pause
	// since then may have come between the engine's own pause check and
	// this Write, so the Write commits nothing (ErrPaused).
	pauses uint64
	// fenced is when a Write of this producer was last fenced; zero if
	// it was not since it last initialised.
	fenced time.Time
}

// NewExactlyOnceSink returns a transactional sink to cfg.Topic, which must
// exist, creating the progress topic if it is missing.
func NewExactlyOnceSink[T any](ctx context.Context, cfg ExactlyOnceConfig[T]) (*ExactlyOnceSink[T], error) {
	switch {
	case len(cfg.Brokers) == 0:
		return nil, errors.New("kafka sink: no brokers")
	case cfg.Topic == "":
		return nil, errors.New("kafka sink: no topic")
	case cfg.Flow == "":
		return nil, errors.New("kafka sink: no flow name (transactional ids are <flow>-<fragment>)")
	case cfg.WriteTimeout < 0 || cfg.TransactionTimeout < 0:
		return nil, errors.New("kafka sink: negative timeout")
	case cfg.ProgressPartitions < 0:
		return nil, fmt.Errorf("kafka sink: %d progress partitions", cfg.ProgressPartitions)
	}
	if cfg.Encode == nil {
		cfg.Encode = func(v T) ([]byte, error) { return json.Marshal(v) }
	}
	if cfg.ProgressTopic == "" {
		cfg.ProgressTopic = cfg.Topic + ".tessera-progress"
	}
	if cfg.FenceBackoff == 0 {
		cfg.FenceBackoff = 10 * time.Second
	}
	if cfg.ProgressPartitions == 0 {
		cfg.ProgressPartitions = 1
	}
	if cfg.PauseLimit == 0 {
		cfg.PauseLimit = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	opts := append(cfg.Options[:len(cfg.Options):len(cfg.Options)], kgo.SeedBrokers(cfg.Brokers...))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka sink: %w", err)
	}
	s := &ExactlyOnceSink[T]{cfg: cfg, admin: cl, frags: map[int]*txnProducer{}, stop: make(chan struct{})}
	if err := s.prepareTopics(ctx); err != nil {
		cl.Close()
		return nil, fmt.Errorf("kafka sink: %w", err)
	}
	if cfg.PauseLimit > 0 {
		s.watch = &pauseWatch{now: cfg.Now, clock: recovery.NewPauseClock(cfg.PauseLimit)}
		s.started = s.watch.observe()
		s.wg.Add(1)
		go s.watchPauses()
	}
	return s, nil
}

// watchPauses reads the clock every PauseLimit/4 until Close, so that a
// long wait of a Write (a slow broker, a transaction that holds the
// markers back) is not taken for a pause: only a stopped process leaves a
// gap longer than the limit.
func (s *ExactlyOnceSink[T]) watchPauses() {
	defer s.wg.Done()
	t := time.NewTicker(max(s.cfg.PauseLimit/4, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.watch.observe()
		}
	}
}

// pauseWatch notices that the process was stopped by the node's own rule
// (recovery.PauseClock: a gap between two readings of the clock, by
// whichever goroutine, longer than the limit), shared by the sink's
// goroutines. The first reading after a gap counts it; every later one
// sees the count.
type pauseWatch struct {
	now   func() time.Time
	mu    sync.Mutex
	clock *recovery.PauseClock
}

// observe reads the clock and returns the pauses seen so far.
func (w *pauseWatch) observe() uint64 {
	if w == nil {
		return 0
	}
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	n, _ := w.clock.Observe(now)
	return n
}

func (s *ExactlyOnceSink[T]) prepareTopics(ctx context.Context) error {
	adm := kadm.NewClient(s.admin)
	details, err := adm.ListTopics(ctx, s.cfg.Topic, s.cfg.ProgressTopic)
	if err != nil {
		return fmt.Errorf("describe topics: %w", err)
	}
	if d, ok := details[s.cfg.Topic]; !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
		return fmt.Errorf("topic %q does not exist", s.cfg.Topic)
	} else if d.Err != nil {
		return fmt.Errorf("topic %q: %w", s.cfg.Topic, d.Err)
	}
	if d, ok := details[s.cfg.ProgressTopic]; ok && d.Err == nil && len(d.Partitions) > 0 {
		s.parts = int32(len(d.Partitions))
		return nil
	} else if ok && d.Err != nil && !errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
		return fmt.Errorf("topic %q: %w", s.cfg.ProgressTopic, d.Err)
	}
	compact := map[string]*string{"cleanup.policy": kmsg.StringPtr("compact")}
	_, err = adm.CreateTopic(ctx, s.cfg.ProgressPartitions, -1, compact, s.cfg.ProgressTopic)
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create progress topic %q: %w", s.cfg.ProgressTopic, err)
	}
	// Created here or by another node at once: wait until the brokers
	// serve it, and take its partition count from them.
	s.parts, err = awaitTopic(ctx, adm, s.cfg.ProgressTopic)
	return err
}

// awaitTopic polls until the brokers list the offsets of a topic just
// created (metadata reaches them after the creation is acknowledged), and
// returns its partition count. (Offsets, not ListTopics, which answers
// from the client's metadata cache for a few seconds.)
func awaitTopic(ctx context.Context, adm *kadm.Client, topic string) (int32, error) {
	for {
		offs, err := adm.ListStartOffsets(ctx, topic)
		if err == nil && offs.Error() == nil && len(offs[topic]) > 0 {
			return int32(len(offs[topic])), nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("topic %q created but not served: %w", topic, errors.Join(err, offs.Error(), ctx.Err()))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TransactionalID is the transactional id of fragment frag's producer.
func (s *ExactlyOnceSink[T]) TransactionalID(frag int) string {
	return fmt.Sprintf("%s-%d", s.cfg.Flow, frag)
}

// Write commits out, the outputs of one fragment, in one transaction
// together with the fragment's progress marker (the id of its last
// output). After the fragment's producer is (re)initialised, the outputs
// up to and including the marker a committed transaction left are skipped:
// they are in Kafka already. On any error the producer is dropped (a
// transaction left open is aborted by the next initialisation, or by
// Kafka's transaction timeout) and the error returned; the engine delivers
// the outputs again at the next checkpoint.
func (s *ExactlyOnceSink[T]) Write(out []flows.Output[T]) error {
	if len(out) == 0 {
		return nil
	}
	frag := out[0].ID.Fragment
	for _, o := range out[1:] {
		if o.ID.Fragment != frag {
			return fmt.Errorf("kafka sink: one Write holds outputs of fragments %d and %d", frag, o.ID.Fragment)
		}
	}
	p, err := s.producer(frag)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shut {
		return errors.New("kafka sink: closed")
	}
	if !p.fenced.IsZero() && time.Since(p.fenced) < s.cfg.FenceBackoff {
		return fmt.Errorf("kafka sink: fragment %d (%s): %w %v ago: not taking it back before %v",
			frag, p.id, ErrFenced, time.Since(p.fenced).Round(time.Millisecond), s.cfg.FenceBackoff)
	}
	ctx := context.Background()
	if s.cfg.WriteTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.WriteTimeout)
		defer cancel()
	}
	pauses := s.watch.observe()
	if pauses != p.pauses {
		// Stopped after the engine last checked but before this Write (or
		// before an earlier one): the fragment may have moved meanwhile.
		// The engine notices the pause too and restores; the Write after
		// that goes ahead.
		p.pauses = pauses
		if p.cl != nil {
			p.cl.Close()
			p.cl = nil
		}
		return fmt.Errorf("kafka sink: fragment %d (%s): %w (before it began)", frag, p.id, ErrPaused)
	}
	err = s.write(ctx, p, out, pauses)
	p.pauses = s.watch.observe()
	if err != nil {
		if p.cl != nil {
			p.cl.Close()
			p.cl = nil
		}
		if errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) {
			p.fenced = time.Now()
			err = fmt.Errorf("%w: %w", ErrFenced, err)
		}
		return fmt.Errorf("kafka sink: fragment %d (%s): %w", frag, p.id, err)
	}
	return nil
}

// Restored ends the fragment's producer session (flows.RestoredSink): the
// fragment restored a checkpoint and delivers its pending outputs again,
// and an earlier owner may have committed some of them (or this producer,
// before the fragment moved away and back). The next Write initialises a
// producer, which fences any other owner and reads the fragment's last
// marker: the outputs up to it are skipped.
func (s *ExactlyOnceSink[T]) Restored(frag int) {
	p, err := s.producer(frag)
	if err != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cl != nil {
		p.cl.Close()
		p.cl = nil
	}
	p.pauses = s.watch.observe()
}

var _ flows.RestoredSink = (*ExactlyOnceSink[int])(nil)

func (s *ExactlyOnceSink[T]) producer(frag int) (*txnProducer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("kafka sink: closed")
	}
	p := s.frags[frag]
	if p == nil {
		p = &txnProducer{id: s.TransactionalID(frag), pauses: s.started}
		s.frags[frag] = p
	}
	return p, nil
}

// write commits out in one transaction; pauses is the pause count read
// when the Write began.
//
// A Write begun before the process was stopped must not go on after it:
// while it was stopped, another node may have taken the fragment over and
// committed more of its outputs. Kafka refuses what the stopped producer
// sends once the new owner has initialised — unless this Write initialises
// its producer only now, after the stop: then it is this Write that fences
// the new owner, reads the new owner's marker (not among this fragment's
// stale outputs, so nothing is skipped) and commits outputs the new owner
// committed already (seen: a node SIGSTOPped inside its fragment's first
// Write delivered the fragment's first outputs twice). The fragment's
// engine notices the pause at its next message and restores; the Write
// must not commit before that, so it checks the pause watch once its
// producer is initialised and again before it commits.
func (s *ExactlyOnceSink[T]) write(ctx context.Context, p *txnProducer, out []flows.Output[T], pauses uint64) error {
	if p.cl == nil {
		if err := s.initProducer(ctx, p); err != nil {
			return err
		}
	}
	if s.watch.observe() != pauses {
		return ErrPaused
	}
	if !p.used {
		p.used = true
		out = skipCommitted(out, p.skip)
	}
	if p.hasLast {
		for i := range out {
			if out[i].ID == p.last {
				out = out[i+1:]
				break
			}
		}
	}
	if len(out) == 0 {
		return nil
	}
	recs := make([]kgo.Record, len(out)+1)
	ptrs := make([]*kgo.Record, len(recs))
	for i, o := range out {
		v, err := s.cfg.Encode(o.Value)
		if err != nil {
			return fmt.Errorf("encode output %s: %w", outputKey(o.ID), err)
		}
		recs[i] = kgo.Record{Topic: s.cfg.Topic, Key: []byte(outputKey(o.ID)), Value: v}
	}
	last := outputKey(out[len(out)-1].ID)
	recs[len(out)] = kgo.Record{Topic: s.cfg.ProgressTopic, Key: []byte(p.id), Value: []byte(last)}
	for i := range recs {
		ptrs[i] = &recs[i]
	}
	if err := p.cl.BeginTransaction(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	if err := p.cl.ProduceSync(ctx, ptrs...).FirstErr(); err != nil {
		return fmt.Errorf("produce %d outputs: %w", len(out), err)
	}
	if s.watch.observe() != pauses {
		// Abort rather than leave the transaction open: an open one holds
		// back read_committed readers of the markers until it ends.
		return errors.Join(ErrPaused, p.cl.EndTransaction(ctx, kgo.TryAbort))
	}
	if err := p.cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return fmt.Errorf("commit %d outputs: %w", len(out), err)
	}
	p.last, p.hasLast = out[len(out)-1].ID, true
	return nil
}

// skipCommitted drops the outputs up to and including the one whose id is
// marker, if out holds it: outputs come again in the order they came, so
// a committed transaction's outputs are a prefix of the redelivery.
func skipCommitted[T any](out []flows.Output[T], marker string) []flows.Output[T] {
	if marker == "" {
		return out
	}
	for i := range out {
		if outputKey(out[i].ID) == marker {
			return out[i+1:]
		}
	}
	return out
}

// initProducer makes p's client and initialises its producer id, which
// fences any older producer of the transactional id and aborts (or, if its
// commit had begun, completes) a transaction it left open; then it reads
// the fragment's last committed marker.
func (s *ExactlyOnceSink[T]) initProducer(ctx context.Context, p *txnProducer) error {
	opts := append(s.cfg.Options[:len(s.cfg.Options):len(s.cfg.Options)],
		kgo.SeedBrokers(s.cfg.Brokers...),
		kgo.TransactionalID(p.id),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(progressPartitioner{topic: s.cfg.ProgressTopic, parts: s.parts}),
	)
	if s.cfg.TransactionTimeout > 0 {
		opts = append(opts, kgo.TransactionTimeout(s.cfg.TransactionTimeout))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	if _, _, err := cl.ProducerID(ctx); err != nil {
		cl.Close()
		return fmt.Errorf("initialise producer: %w", err)
	}
	marker, err := s.lastMarker(ctx, p.id)
	if err != nil {
		cl.Close()
		return err
	}
	p.cl, p.skip, p.used, p.fenced, p.hasLast = cl, marker, false, time.Time{}, false
	return nil
}

// lastMarker reads the last committed progress marker of transactional id
// txn: it scans the end of the marker's partition, read committed, in
// windows that grow from the end until one holds the key or the start is
// reached (in a compacted topic, each fragment's last marker is near the
// end; the scan costs one fetch in the usual case).
//
// The partition is shared by the markers of several fragments, and
// read_committed reads only up to the last stable offset: the first
// offset of a transaction still open, which may be another fragment's
// (a dead owner's, until its next owner initialises or Kafka times it
// out) with this fragment's last marker after it. So the scan first waits
// until the last stable offset reaches the high watermark read after this
// producer's initialisation: everything written before is then decided,
// this fragment's last marker included.
func (s *ExactlyOnceSink[T]) lastMarker(ctx context.Context, txn string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, scanTimeout)
	defer cancel()
	topic, part := s.cfg.ProgressTopic, progressPartition(txn, s.parts)
	adm := kadm.NewClient(s.admin)
	offset := func(list func(context.Context, ...string) (kadm.ListedOffsets, error)) (int64, error) {
		offs, err := list(ctx, topic)
		if err != nil {
			return 0, err
		}
		o, ok := offs.Lookup(topic, part)
		if !ok || o.Err != nil {
			return 0, fmt.Errorf("no offset of %s/%d: %w", topic, part, o.Err)
		}
		return o.Offset, nil
	}
	start, err := offset(adm.ListStartOffsets)
	if err != nil {
		return "", fmt.Errorf("read marker: %w", err)
	}
	hwm, err := offset(adm.ListEndOffsets)
	if err != nil {
		return "", fmt.Errorf("read marker: %w", err)
	}
	var end int64
	for {
		if end, err = offset(adm.ListCommittedOffsets); err != nil {
			return "", fmt.Errorf("read marker: %w", err)
		}
		if end >= hwm {
			break
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("read marker: a transaction holds %s/%d at %d (below %d): %w", topic, part, end, hwm, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	for window := int64(256); ; window *= 8 {
		from := max(start, end-window)
		marker, found, err := s.scanMarker(ctx, topic, part, from, end, txn)
		if err != nil || found || from == start {
			return marker, err
		}
	}
}

// scanMarker reads topic/part from offset from up to end (a last stable
// offset) and returns the last value of key txn.
func (s *ExactlyOnceSink[T]) scanMarker(ctx context.Context, topic string, part int32, from, end int64, txn string) (string, bool, error) {
	if from >= end {
		return "", false, nil
	}
	opts := append(s.cfg.Options[:len(s.cfg.Options):len(s.cfg.Options)],
		kgo.SeedBrokers(s.cfg.Brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {part: kgo.NewOffset().At(from)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// The last offset below the end may be a transaction marker.
		kgo.KeepControlRecords(),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return "", false, err
	}
	defer cl.Close()
	// A record of the range missing (compacted away) would leave the scan
	// waiting for it: lastMarker bounds it even when Writes are not.
	var marker string
	found := false
	for next := from; next < end; {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return "", false, fmt.Errorf("read marker of %s at %s/%d %d..%d: %w", txn, topic, part, next, end, err)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) {
			if !kerr.IsRetriable(err) {
				ferr = err
			}
		})
		if ferr != nil {
			return "", false, fmt.Errorf("read marker of %s: %w", txn, ferr)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset >= end {
				return
			}
			next = r.Offset + 1
			if !r.Attrs.IsControl() && string(r.Key) == txn {
				marker, found = string(r.Value), true
			}
		})
	}
	return marker, found, nil
}

// Close closes every producer; a transaction left open is aborted when the
// fragment's producer is next initialised (here or elsewhere) or when it
// times out. Safe to call twice.
func (s *ExactlyOnceSink[T]) Close() error {
	s.closeOne.Do(func() {
		close(s.stop)
		s.wg.Wait()
		s.mu.Lock()
		s.closed = true
		frags := s.frags
		s.mu.Unlock()
		for _, p := range frags {
			p.mu.Lock()
			if p.cl != nil {
				p.cl.Close()
				p.cl = nil
			}
			p.shut = true
			p.mu.Unlock()
		}
		s.admin.Close()
	})
	return nil
}

// progressPartition is the partition of the progress topic that holds
// transactional id txn's markers.
func progressPartition(txn string, parts int32) int32 {
	h := fnv.New32a()
	h.Write([]byte(txn))
	return int32(h.Sum32() % uint32(parts))
}

// progressPartitioner places markers by progressPartition and the
// outputs by their keys, as Kafka's default partitioner does.
type progressPartitioner struct {
	topic string
	parts int32
}

func (pp progressPartitioner) ForTopic(topic string) kgo.TopicPartitioner {
	if topic == pp.topic {
		return markerPartitioner(pp.parts)
	}
	return kgo.StickyKeyPartitioner(nil).ForTopic(topic)
}

type markerPartitioner int32

func (markerPartitioner) RequiresConsistency(*kgo.Record) bool { return true }

// Partition ignores n: the reader looks in the partition the sink counted
// when it was made.
func (mp markerPartitioner) Partition(r *kgo.Record, _ int) int {
	return int(progressPartition(string(r.Key), int32(mp)))
}
