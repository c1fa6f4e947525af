package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tessera-streams/tessera/connectors/push"
	"github.com/tessera-streams/tessera/shard"
)

// IngestConfig configures an Ingest.
type IngestConfig[T any] struct {
	Brokers []string
	// Name is the stream's name in the URL: POST /v1/streams/{Name}/events.
	Name string
	// Topic receives the events (it must exist); a flow reads it with a
	// Source.
	Topic string
	// LedgerTopic holds the idempotency keys; empty means
	// "<Topic>.tessera-ingest". It is created with one partition if missing,
	// and must keep one: its single order decides between two attempts of
	// a key.
	LedgerTopic string
	// TransactionalID is this node's producer's transactional id: stable
	// across the node's restarts (its next start then aborts a transaction
	// the dead process left open at once, not after TransactionTimeout),
	// and different on every node (two nodes with one id fence each other
	// at every request).
	TransactionalID string
	// Decode checks and decodes an event (one JSON line or array element);
	// an event it rejects fails its whole request (400). Nil: JSON into T.
	Decode func([]byte) (T, error)
	// Key, if set, places each event: partition = hash(Key(event)) mod
	// the topic's partitions, flows.KeyPartition's partition: a flow that
	// keys the events by the same string can read the topic with
	// flows.WithKeyedPartitions, and no event crosses nodes to its
	// fragment. Nil: each request goes whole to one partition, the next
	// one round-robin.
	Key func(T) string
	// MaxBody is the largest request body; default 1 MiB, Kafka's default
	// largest record batch, so that one event always fits a record.
	MaxBody int64
	// MaxPending bounds the bytes of events waiting for their transaction:
	// past it, pushes are answered 429; default 64 MiB.
	MaxPending int64
	// IdempotencyTTL is how long a key is remembered; default 24 h. Keep
	// the ledger topic's retention at least this long.
	IdempotencyTTL time.Duration
	// TransactionTimeout is how long Kafka lets a transaction stay open
	// before aborting it; default 10 s. A node that dies with a transaction
	// open holds back the retries of the keys it held, on every node,
	// until Kafka aborts it (or the node restarts): see the package doc.
	TransactionTimeout time.Duration
	// AckTimeout bounds the wait of one group of requests for Kafka (its
	// produce, its key checks, its commit); past it they are answered 503.
	// Default 10 s.
	AckTimeout time.Duration
	// Options are added to every franz-go client (TLS, SASL, ...).
	Options []kgo.Opt
	Logger  *slog.Logger
}

// Ingest takes events pushed over HTTP into a Kafka topic, acknowledged
// once a Kafka transaction holding them committed, and applied once per
// idempotency key across nodes; see the package doc. It implements
// cluster.Stream. Close it after the node has stopped.
type Ingest[T any] struct {
	cfg    IngestConfig[T]
	parts  int32 // of Topic
	rr     atomic.Uint64
	reqs   chan *ingestReq
	stop   chan struct{}
	wg     sync.WaitGroup
	ledger *ledger
	cl     *kgo.Client // the transactional producer; nil until initialised

	mu      sync.Mutex
	closed  bool
	pending int64          // bytes queued or in a transaction
	senders sync.WaitGroup // requests between their closed check and their send
	once    sync.Once
}

// ingestReq is one request on its way through the writer.
type ingestReq struct {
	key    string
	hash   uint64
	events [][]byte
	parts  []int32 // each event's partition
	size   int
	res    push.Result
	err    error
	done   chan struct{}
}

// ledgerEntry is one key of a group record.
type ledgerEntry struct {
	Key    string      `json:"k"`
	Hash   uint64      `json:"h"`
	Result push.Result `json:"r"`
}

// NewIngest checks the topic, creates the ledger topic if missing and
// starts reading it.
func NewIngest[T any](ctx context.Context, cfg IngestConfig[T]) (*Ingest[T], error) {
	switch {
	case len(cfg.Brokers) == 0:
		return nil, errors.New("kafka ingest: no brokers")
	case cfg.Name == "":
		return nil, errors.New("kafka ingest: no stream name")
	case cfg.Topic == "":
		return nil, errors.New("kafka ingest: no topic")
	case cfg.TransactionalID == "":
		return nil, errors.New("kafka ingest: no transactional id (one per node, stable across its restarts)")
	case cfg.MaxBody < 0 || cfg.MaxPending < 0 || cfg.IdempotencyTTL < 0 || cfg.TransactionTimeout < 0 || cfg.AckTimeout < 0:
		return nil, errors.New("kafka ingest: negative limit")
	}
	if cfg.LedgerTopic == "" {
		cfg.LedgerTopic = cfg.Topic + ".tessera-ingest"
	}
	if cfg.Decode == nil {
		cfg.Decode = func(b []byte) (T, error) {
			var v T
			err := json.Unmarshal(b, &v)
			return v, err
		}
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = 1 << 20
	}
	if cfg.MaxPending == 0 {
		cfg.MaxPending = 64 << 20
	}
	if cfg.IdempotencyTTL == 0 {
		cfg.IdempotencyTTL = 24 * time.Hour
	}
	if cfg.TransactionTimeout == 0 {
		cfg.TransactionTimeout = 10 * time.Second
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	admin, err := kgo.NewClient(append(cfg.Options[:len(cfg.Options):len(cfg.Options)], kgo.SeedBrokers(cfg.Brokers...))...)
	if err != nil {
		return nil, fmt.Errorf("kafka ingest: %w", err)
	}
	defer admin.Close()
	adm := kadm.NewClient(admin)
	parts, err := awaitTopic(ctx, adm, cfg.Topic)
	if err != nil {
		return nil, fmt.Errorf("kafka ingest: %w", err)
	}
	if err := prepareLedger(ctx, adm, cfg.LedgerTopic, cfg.IdempotencyTTL); err != nil {
		return nil, fmt.Errorf("kafka ingest: %w", err)
	}
	lg, err := openLedger(cfg.Brokers, cfg.LedgerTopic, cfg.Options, cfg.IdempotencyTTL, cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("kafka ingest: %w", err)
	}
	in := &Ingest[T]{cfg: cfg, parts: parts, reqs: make(chan *ingestReq, 256), stop: make(chan struct{}), ledger: lg}
	in.wg.Add(1)
	go in.write()
	return in, nil
}

// prepareLedger creates the ledger topic, one partition, if it is
// missing, and checks that it has one partition.
func prepareLedger(ctx context.Context, adm *kadm.Client, topic string, ttl time.Duration) error {
	details, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return fmt.Errorf("describe topic %q: %w", topic, err)
	}
	if d, ok := details[topic]; !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
		retention := fmt.Sprint(2 * ttl.Milliseconds())
		_, err := adm.CreateTopic(ctx, 1, -1, map[string]*string{"retention.ms": &retention}, topic)
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create ledger topic %q: %w", topic, err)
		}
	} else if d.Err != nil {
		return fmt.Errorf("topic %q: %w", topic, d.Err)
	}
	n, err := awaitTopic(ctx, adm, topic)
	if err != nil {
		return err
	}
	if n != 1 {
		return fmt.Errorf("ledger topic %q has %d partitions: it must have one", topic, n)
	}
	return nil
}

// Name is the stream's name.
func (in *Ingest[T]) Name() string { return in.cfg.Name }

// NodeLocal is false: acknowledged events are in Kafka.
func (in *Ingest[T]) NodeLocal() bool { return false }

// ServeHTTP answers POST /v1/streams/{Name}/events: see the package doc.
func (in *Ingest[T]) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	push.Serve(w, r, in.cfg.Name, in.cfg.MaxBody, in.cfg.Decode, in.append)
}

// Append appends events (each one JSON value, which Decode must take), as
// a request with idempotency key key ("" for none) would, and returns once
// a committed transaction holds them.
func (in *Ingest[T]) Append(ctx context.Context, key string, events ...[]byte) (push.Result, error) {
	pr, err := push.Events(key, events, in.cfg.Decode)
	if err != nil {
		return push.Result{}, err
	}
	return in.append(ctx, pr)
}

func (in *Ingest[T]) append(ctx context.Context, pr *push.Request[T]) (push.Result, error) {
	if len(pr.Events) == 0 && pr.Key == "" {
		return push.Result{Partitions: []push.Appended{}}, nil
	}
	if pr.Key != "" {
		if res, err, ok := in.ledger.lookup(pr.Key, pr.Hash); ok {
			return res, err
		}
	}
	req := &ingestReq{key: pr.Key, hash: pr.Hash, events: pr.Events, size: pr.Size, done: make(chan struct{})}
	req.parts = make([]int32, len(pr.Events))
	if in.cfg.Key == nil {
		p := int32((in.rr.Add(1) - 1) % uint64(in.parts))
		for i := range req.parts {
			req.parts[i] = p
		}
	} else {
		for i, v := range pr.Values {
			req.parts[i] = int32(shard.Fragment(shard.String(in.cfg.Key(v)), int(in.parts)))
		}
	}
	in.mu.Lock()
	switch {
	case in.closed:
		in.mu.Unlock()
		return push.Result{}, fmt.Errorf("kafka ingest: %w: closing", push.ErrUnavailable)
	case in.pending > 0 && in.pending+int64(req.size) > in.cfg.MaxPending:
		in.mu.Unlock()
		return push.Result{}, fmt.Errorf("kafka ingest: %w: %d bytes wait for Kafka", push.ErrBusy, in.pending)
	}
	in.pending += int64(req.size)
	in.senders.Add(1)
	in.mu.Unlock()
	in.reqs <- req
	in.senders.Done()
	select {
	case <-req.done:
		return req.res, req.err
	case <-ctx.Done():
		return push.Result{}, ctx.Err()
	}
}

// Close stops taking requests, answers those queued with 503, and stops
// the writer and the ledger reader. A transaction left open is aborted
// when this node's next producer initialises, or after
// TransactionTimeout. Safe to call twice.
func (in *Ingest[T]) Close() error {
	in.once.Do(func() {
		in.mu.Lock()
		in.closed = true
		in.mu.Unlock()
		in.senders.Wait()
		close(in.stop)
		in.wg.Wait()
		if in.cl != nil {
			in.cl.Close()
		}
		in.ledger.close()
	})
	return nil
}

// Group bounds: requests and bytes of events one transaction takes.
const (
	maxGroupRequests = 256
	maxGroupBytes    = 4 << 20
)

// write is the writer goroutine: it takes the queued requests, up to the
// group bounds, into one transaction.
func (in *Ingest[T]) write() {
	defer in.wg.Done()
	var group []*ingestReq
	for {
		group = group[:0]
		select {
		case r := <-in.reqs:
			group = append(group, r)
		case <-in.stop:
			for {
				select {
				case r := <-in.reqs:
					in.answer(r, push.Result{}, fmt.Errorf("kafka ingest: %w: closing", push.ErrUnavailable))
				default:
					return
				}
			}
		}
		size := group[0].size
	more:
		for len(group) < maxGroupRequests && size < maxGroupBytes {
			select {
			case r := <-in.reqs:
				group = append(group, r)
				size += r.size
			default:
				break more
			}
		}
		in.commitGroup(group)
	}
}

func (in *Ingest[T]) answer(r *ingestReq, res push.Result, err error) {
	in.mu.Lock()
	in.pending -= int64(r.size)
	in.mu.Unlock()
	r.res, r.err = res, err
	close(r.done)
}

// commitGroup applies a group: requests whose key the ledger holds are
// answered from it; the others go into one transaction, retried without
// the requests that lost their key to another attempt.
func (in *Ingest[T]) commitGroup(group []*ingestReq) {
	ctx, cancel := context.WithTimeout(context.Background(), in.cfg.AckTimeout)
	defer cancel()
	for len(group) > 0 {
		// A key twice in the group: the second waits for the first.
		var todo, again []*ingestReq
		seen := map[string]bool{}
		for _, r := range group {
			if r.key != "" {
				if res, err, ok := in.ledger.lookup(r.key, r.hash); ok {
					in.answer(r, res, err)
					continue
				}
				if seen[r.key] {
					again = append(again, r)
					continue
				}
				seen[r.key] = true
			}
			todo = append(todo, r)
		}
		lost, err := in.transact(ctx, todo)
		if err != nil {
			in.cfg.Logger.Warn("kafka ingest: transaction failed", "stream", in.cfg.Name, "requests", len(todo), "err", err)
			if errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) {
				err = fmt.Errorf("fenced by another producer with transactional id %q (two nodes with one id?): %w", in.cfg.TransactionalID, err)
			}
			err = fmt.Errorf("kafka ingest: %w: %w", push.ErrUnavailable, err)
			for _, r := range append(todo, again...) {
				in.answer(r, push.Result{}, err)
			}
			return
		}
		if len(lost) == 0 {
			for _, r := range todo {
				in.answer(r, r.res, nil)
			}
			group = again
			continue
		}
		// Aborted: the losers are answered from the ledger at the next
		// turn, the others go again.
		group = append(todo, again...)
	}
}

// transact produces a group's events and its ledger record in one
// transaction and commits it, unless an earlier attempt of one of its keys
// committed: then it aborts and returns those keys. See the package doc.
func (in *Ingest[T]) transact(ctx context.Context, group []*ingestReq) (lost []string, err error) {
	if len(group) == 0 {
		return nil, nil
	}
	if in.cl == nil {
		opts := append(in.cfg.Options[:len(in.cfg.Options):len(in.cfg.Options)],
			kgo.SeedBrokers(in.cfg.Brokers...),
			kgo.TransactionalID(in.cfg.TransactionalID),
			kgo.TransactionTimeout(in.cfg.TransactionTimeout),
			kgo.RequiredAcks(kgo.AllISRAcks()),
			kgo.RecordPartitioner(kgo.ManualPartitioner()),
		)
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			return nil, err
		}
		// Initialising fences an older producer of the id (this node's
		// previous process) and aborts a transaction it left open.
		if _, _, err := cl.ProducerID(ctx); err != nil {
			cl.Close()
			return nil, fmt.Errorf("initialise producer %q: %w", in.cfg.TransactionalID, err)
		}
		in.cl = cl
	}
	fail := func(err error) ([]string, error) {
		if in.cl == nil { // closed by produce
			return nil, err
		}
		actx, cancel := context.WithTimeout(context.Background(), in.cfg.AckTimeout)
		defer cancel()
		if aerr := in.cl.EndTransaction(actx, kgo.TryAbort); aerr != nil {
			// The next initialisation aborts what is left open.
			in.cl.Close()
			in.cl = nil
		}
		return nil, err
	}
	if err := in.cl.BeginTransaction(); err != nil {
		in.cl.Close()
		in.cl = nil
		return nil, fmt.Errorf("begin transaction: %w", err)
	}
	var recs []*kgo.Record
	for _, r := range group {
		for i, ev := range r.events {
			recs = append(recs, &kgo.Record{Topic: in.cfg.Topic, Partition: r.parts[i], Value: ev})
		}
	}
	if err := in.produce(ctx, recs...); err != nil {
		return fail(fmt.Errorf("produce %d events to %q: %w", len(recs), in.cfg.Topic, err))
	}
	var entries []ledgerEntry
	at := 0
	for _, r := range group {
		r.res = resultOf(recs[at : at+len(r.events)])
		at += len(r.events)
		if r.key != "" {
			entries = append(entries, ledgerEntry{Key: r.key, Hash: r.hash, Result: r.res})
		}
	}
	if len(entries) == 0 {
		if err := in.cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			return fail(fmt.Errorf("commit: %w", err))
		}
		return nil, nil
	}
	value, err := json.Marshal(entries)
	if err != nil {
		return fail(err)
	}
	rec := &kgo.Record{Topic: in.cfg.LedgerTopic, Partition: 0, Value: value}
	if err := in.produce(ctx, rec); err != nil {
		return fail(fmt.Errorf("produce to the ledger %q: %w", in.cfg.LedgerTopic, err))
	}
	keys := make([]string, len(entries))
	for i, e := range entries {
		keys[i] = e.Key
	}
	lost, err = in.ledger.decide(ctx, rec.Offset, keys)
	if err != nil {
		return fail(fmt.Errorf("decide the keys at ledger offset %d: %w", rec.Offset, err))
	}
	if len(lost) > 0 {
		fail(nil)
		return lost, nil
	}
	if err := in.cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return fail(fmt.Errorf("commit: %w", err))
	}
	return nil, nil
}

// produce produces recs and waits until they are acknowledged, or until
// ctx ends: then it closes the producer (franz-go does not fail records
// already sent when their context ends, and keeps retrying them), whose
// open transaction the next initialisation aborts.
func (in *Ingest[T]) produce(ctx context.Context, recs ...*kgo.Record) error {
	done := make(chan error, 1)
	go func() { done <- in.cl.ProduceSync(ctx, recs...).FirstErr() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		in.cl.Close()
		in.cl = nil
		<-done
		return ctx.Err()
	}
}

// resultOf is a request's result from its produced records: per
// partition, the first offset and the one after the last.
func resultOf(recs []*kgo.Record) push.Result {
	res := push.Result{Accepted: len(recs), Partitions: []push.Appended{}}
	at := map[int32]int{}
	for _, r := range recs {
		i, ok := at[r.Partition]
		if !ok {
			i = len(res.Partitions)
			at[r.Partition] = i
			res.Partitions = append(res.Partitions, push.Appended{Partition: int(r.Partition), From: r.Offset, To: r.Offset + 1})
		}
		a := &res.Partitions[i]
		a.From, a.To = min(a.From, r.Offset), max(a.To, r.Offset+1)
	}
	return res
}

// ledger reads the ledger topic, uncommitted records included, and keeps
// every key's attempts: the committed one (its result), and those whose
// transaction is still open.
type ledger struct {
	topic  string
	ttl    time.Duration
	cl     *kgo.Client
	cancel context.CancelFunc
	done   chan struct{}
	logger *slog.Logger

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when pos or an outcome changes
	pos     int64         // every record below is read
	err     error         // the reader failed
	keys    map[string]*keyState
	open    map[int64][]*attempt // by producer id: its open transaction's records
	expiry  []expiring           // committed keys in commit order
}

type keyState struct {
	committed *committedKey
	pending   []*attempt
}

type committedKey struct {
	offset int64
	at     time.Time
	hash   uint64
	res    push.Result
}

// attempt is one group record of a transaction not yet ended.
type attempt struct {
	offset  int64
	at      time.Time
	entries []ledgerEntry
}

type expiring struct {
	key    string
	offset int64
	at     time.Time
}

func openLedger(brokers []string, topic string, extra []kgo.Opt, ttl time.Duration, logger *slog.Logger) (*ledger, error) {
	opts := append(extra[:len(extra):len(extra)],
		kgo.SeedBrokers(brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadUncommitted()),
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(200*time.Millisecond),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &ledger{topic: topic, ttl: ttl, cl: cl, cancel: cancel, done: make(chan struct{}), logger: logger,
		changed: make(chan struct{}), keys: map[string]*keyState{}, open: map[int64][]*attempt{}}
	go l.read(ctx)
	return l, nil
}

func (l *ledger) close() {
	l.cancel()
	<-l.done
	l.cl.Close()
}

// read is the ledger's reader goroutine.
func (l *ledger) read(ctx context.Context) {
	defer close(l.done)
	for {
		fs := l.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) {
			if !kerr.IsRetriable(err) && !errors.Is(err, context.Canceled) {
				ferr = err
			}
		})
		l.mu.Lock()
		if ferr != nil && l.err == nil {
			l.err = ferr
			l.logger.Error("kafka ingest: reading the ledger failed", "topic", l.topic, "err", ferr)
		}
		fs.EachRecord(l.apply)
		l.prune(time.Now())
		close(l.changed)
		l.changed = make(chan struct{})
		l.mu.Unlock()
	}
}

// apply takes one record of the ledger, in offset order; l.mu is held.
func (l *ledger) apply(r *kgo.Record) {
	l.pos = r.Offset + 1
	if r.Attrs.IsControl() {
		var k kmsg.ControlRecordKey
		if err := k.ReadFrom(r.Key); err != nil {
			l.logger.Warn("kafka ingest: unreadable control record in the ledger", "offset", r.Offset, "err", err)
			return
		}
		commit := k.Type == kmsg.ControlRecordKeyTypeCommit
		for _, a := range l.open[r.ProducerID] {
			l.end(a, commit)
		}
		delete(l.open, r.ProducerID)
		return
	}
	var entries []ledgerEntry
	if err := json.Unmarshal(r.Value, &entries); err != nil {
		l.logger.Warn("kafka ingest: unreadable ledger record", "offset", r.Offset, "err", err)
		return
	}
	a := &attempt{offset: r.Offset, at: r.Timestamp, entries: entries}
	for _, e := range entries {
		ks := l.keys[e.Key]
		if ks == nil {
			ks = &keyState{}
			l.keys[e.Key] = ks
		}
		ks.pending = append(ks.pending, a)
	}
	if r.Attrs.IsTransactional() {
		l.open[r.ProducerID] = append(l.open[r.ProducerID], a)
	} else {
		l.end(a, true)
	}
}

// end resolves an attempt; l.mu is held.
func (l *ledger) end(a *attempt, committed bool) {
	for _, e := range a.entries {
		ks := l.keys[e.Key]
		if ks == nil {
			continue
		}
		for i, p := range ks.pending {
			if p == a {
				ks.pending = append(ks.pending[:i], ks.pending[i+1:]...)
				break
			}
		}
		if committed && ks.committed == nil {
			ks.committed = &committedKey{offset: a.offset, at: a.at, hash: e.Hash, res: e.Result}
			l.expiry = append(l.expiry, expiring{key: e.Key, offset: a.offset, at: a.at})
		}
		if ks.committed == nil && len(ks.pending) == 0 {
			delete(l.keys, e.Key)
		}
	}
}

// prune forgets the committed keys older than the TTL; l.mu is held.
func (l *ledger) prune(now time.Time) {
	i := 0
	for ; i < len(l.expiry) && now.Sub(l.expiry[i].at) > l.ttl; i++ {
		x := l.expiry[i]
		if ks := l.keys[x.key]; ks != nil && ks.committed != nil && ks.committed.offset == x.offset {
			ks.committed = nil
			if len(ks.pending) == 0 {
				delete(l.keys, x.key)
			}
		}
	}
	l.expiry = l.expiry[i:]
}

// lookup answers a key the ledger holds committed (read so far): its
// result, replayed, or ErrKeyReused for another body.
func (l *ledger) lookup(key string, hash uint64) (push.Result, error, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ks := l.keys[key]
	if ks == nil || ks.committed == nil || time.Since(ks.committed.at) > l.ttl {
		return push.Result{}, nil, false
	}
	if ks.committed.hash != hash {
		return push.Result{}, push.ErrKeyReused, true
	}
	res := ks.committed.res
	res.Replayed = true
	return res, nil, true
}

// decide waits until the ledger is read past offset (the group record of
// the caller's open transaction) and until every attempt of keys below
// it has ended, and returns the keys that one of those attempts committed:
// the caller must abort. The attempt with the lowest offset that commits
// wins a key, and an attempt waits only for lower ones, so no two wait
// for each other.
func (l *ledger) decide(ctx context.Context, offset int64, keys []string) ([]string, error) {
	for {
		l.mu.Lock()
		if l.err != nil {
			err := l.err
			l.mu.Unlock()
			return nil, fmt.Errorf("ledger: %w", err)
		}
		var lost []string
		wait := l.pos <= offset
		for _, k := range keys {
			if wait {
				break
			}
			ks := l.keys[k]
			if ks == nil {
				continue
			}
			if c := ks.committed; c != nil && c.offset < offset && time.Since(c.at) <= l.ttl {
				lost = append(lost, k)
				continue
			}
			for _, a := range ks.pending {
				if a.offset < offset {
					wait = true
					break
				}
			}
		}
		changed := l.changed
		l.mu.Unlock()
		if !wait {
			return lost, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("an earlier attempt of a key is still open, or the ledger is behind: %w", ctx.Err())
		}
	}
}
