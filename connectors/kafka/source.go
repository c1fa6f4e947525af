package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tessera-streams/tessera/connectors/internal/commit"
	"github.com/tessera-streams/tessera/flows"
)

// Config configures a Source.
type Config[T any] struct {
	// Brokers are the seed brokers, host:port.
	Brokers []string
	// Topics are read in this order: it numbers the source partitions.
	Topics []string
	// Decode turns a record into an event; an error makes the record a bad
	// record (dead-lettered), and reading goes on. Nil: the value is
	// decoded as JSON into T. The record's slices are not reused: an event
	// may keep them.
	Decode func(r *kgo.Record) (T, error)
	// Group, if set, is the consumer group whose committed offsets follow
	// the engine's commits. The source never joins it.
	Group string
	// Bounded makes each partition end (io.EOF) at its end offset as of
	// New: a batch run over what the topics hold, which drains.
	Bounded bool
	// CheckInterval is how often an idle reader checks that its topic still
	// exists; default 2s. A topic missing from two checks in a row, or
	// created again, fails the reader.
	CheckInterval time.Duration
	// Options are added to every franz-go client the source makes (TLS,
	// SASL, fetch sizes, a logger, ...). The source sets the consumed
	// partition and offset, read-committed isolation, the reset policy and
	// control records itself.
	Options []kgo.Opt
}

// Source is a Kafka source: see the package doc. It is safe for concurrent
// use; Close it after the engine has stopped.
type Source[T any] struct {
	cfg    Config[T]
	parts  []topicPartition // by source partition
	ids    map[string]kadm.TopicID
	bounds []int64     // per source partition, with Bounded: its end offset at New
	cl     *kgo.Client // for metadata and commits
	admin  *kadm.Client
	com    *commit.Committer[topicPartition] // nil without a group
	once   sync.Once
	cerr   error
}

type topicPartition struct {
	topic string
	part  int32
}

// ErrTopicGone is returned (wrapped) by Read when its topic was deleted or
// deleted and created again.
var ErrTopicGone = errors.New("topic gone")

// New returns a source over cfg.Topics, asking the brokers for their
// partitions (and, with Bounded, their end offsets). A topic that does not
// exist is an error.
func New[T any](ctx context.Context, cfg Config[T]) (*Source[T], error) {
	var errs []error
	if len(cfg.Brokers) == 0 {
		errs = append(errs, errors.New("no brokers"))
	}
	if len(cfg.Topics) == 0 {
		errs = append(errs, errors.New("no topics"))
	}
	seen := map[string]bool{}
	for _, t := range cfg.Topics {
		if t == "" || seen[t] {
			errs = append(errs, fmt.Errorf("topic %q is empty or given twice", t))
		}
		seen[t] = true
	}
	if cfg.CheckInterval < 0 {
		errs = append(errs, fmt.Errorf("negative check interval %v", cfg.CheckInterval))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("kafka source: %w", err)
	}
	if cfg.Decode == nil {
		cfg.Decode = DecodeJSON[T]
	}
	if cfg.CheckInterval == 0 {
		cfg.CheckInterval = 2 * time.Second
	}
	cl, err := kgo.NewClient(append(cfg.Options[:len(cfg.Options):len(cfg.Options)], kgo.SeedBrokers(cfg.Brokers...))...)
	if err != nil {
		return nil, fmt.Errorf("kafka source: %w", err)
	}
	s := &Source[T]{cfg: cfg, cl: cl, admin: kadm.NewClient(cl), ids: map[string]kadm.TopicID{}}
	if err := s.describe(ctx); err != nil {
		cl.Close()
		return nil, fmt.Errorf("kafka source: %w", err)
	}
	if cfg.Group != "" {
		s.com = commit.New("kafka", commitRound(s.admin, cfg.Group))
	}
	return s, nil
}

// describe numbers the partitions and reads the end offsets.
func (s *Source[T]) describe(ctx context.Context) error {
	details, err := s.admin.ListTopics(ctx, s.cfg.Topics...)
	if err != nil {
		return fmt.Errorf("describe topics %q: %w", s.cfg.Topics, err)
	}
	for _, t := range s.cfg.Topics {
		d, ok := details[t]
		switch {
		case !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition):
			return fmt.Errorf("topic %q does not exist", t)
		case d.Err != nil:
			return fmt.Errorf("topic %q: %w", t, d.Err)
		case len(d.Partitions) == 0:
			return fmt.Errorf("topic %q has no partitions", t)
		}
		s.ids[t] = d.ID
		for p := range int32(len(d.Partitions)) {
			if _, ok := d.Partitions[p]; !ok {
				return fmt.Errorf("topic %q: partition %d is missing from the metadata", t, p)
			}
			s.parts = append(s.parts, topicPartition{t, p})
		}
	}
	if !s.cfg.Bounded {
		return nil
	}
	ends, err := s.admin.ListEndOffsets(ctx, s.cfg.Topics...)
	if err != nil {
		return fmt.Errorf("list end offsets: %w", err)
	}
	for _, tp := range s.parts {
		o, ok := ends.Lookup(tp.topic, tp.part)
		if !ok || o.Err != nil {
			return fmt.Errorf("end offset of %s/%d: %v", tp.topic, tp.part, o.Err)
		}
		s.bounds = append(s.bounds, o.Offset)
	}
	return nil
}

// DecodeJSON decodes a record's value as JSON.
func DecodeJSON[T any](r *kgo.Record) (T, error) {
	var v T
	err := json.Unmarshal(r.Value, &v)
	return v, err
}

// Partitions implements flows.Source.
func (s *Source[T]) Partitions() int { return len(s.parts) }

// TopicPartition is the topic and Kafka partition of source partition p.
func (s *Source[T]) TopicPartition(p int) (string, int32) {
	return s.parts[p].topic, s.parts[p].part
}

// End is the offset at which source partition p ends with Bounded, or -1.
func (s *Source[T]) End(p int) int64 {
	if s.bounds == nil {
		return -1
	}
	return s.bounds[p]
}

// Close stops the committer, after it has sent the last offsets it was
// given, and closes the source's client. Readers are closed by whoever
// opened them. Safe to call twice.
func (s *Source[T]) Close() error {
	s.once.Do(func() {
		if s.com != nil {
			s.cerr = s.com.Close()
		}
		s.admin.Close()
	})
	return s.cerr
}

// Open implements flows.Source: a consumer of exactly that topic partition
// at offset from (0: the log start).
func (s *Source[T]) Open(p int, from int64) (flows.PartitionReader[T], error) {
	if p < 0 || p >= len(s.parts) {
		return nil, fmt.Errorf("kafka: no partition %d", p)
	}
	if from < 0 {
		return nil, fmt.Errorf("kafka: negative offset %d", from)
	}
	tp := s.parts[p]
	start := kgo.NewOffset().At(from)
	if from == 0 {
		start = kgo.NewOffset().AtStart()
	}
	opts := append(s.cfg.Options[:len(s.cfg.Options):len(s.cfg.Options)],
		kgo.SeedBrokers(s.cfg.Brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{tp.topic: {tp.part: start}}),
		// An offset out of range is an error of the partition, not a
		// jump to elsewhere in the log: a checkpoint needs every record.
		kgo.ConsumeResetOffset(kgo.NoResetOffset()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Transaction markers advance End, so that a reader ends at the
		// end of a partition and commits cover them.
		kgo.KeepControlRecords(),
		// UNKNOWN_TOPIC_OR_PARTITION and UNKNOWN_TOPIC_ID tell a deleted
		// topic; the reader checks the metadata when it sees them.
		kgo.KeepRetryableFetchErrors(),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: %s/%d: %w", tp.topic, tp.part, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &reader[T]{s: s, tp: tp, where: fmt.Sprintf("%s/%d", tp.topic, tp.part), cl: cl, next: from, bound: -1,
		ctx: ctx, cancel: cancel, checked: make(chan checkResult, 1)}
	if s.bounds != nil {
		r.bound = s.bounds[p]
	}
	return r, nil
}

type reader[T any] struct {
	s     *Source[T]
	tp    topicPartition
	where string // topic/partition, for bad records and errors
	cl    *kgo.Client
	next  int64 // the offset after the last record consumed
	bound int64 // with Bounded: the end; -1 otherwise
	err   error // a fatal error: every later Read returns it

	// The topic check runs in its own goroutine so that Read never waits
	// for the network.
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	checking  bool
	checked   chan checkResult
	lastCheck time.Time
	missing   int // checks in a row that did not find the topic
}

// noWait makes PollRecords return at once with what the client has
// buffered (franz-go documents a nil context for this).
var noWait context.Context

func (r *reader[T]) Read(ctx context.Context, b *flows.ReadBatch[T], max int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.End = r.next
	if r.err != nil {
		return r.err
	}
	r.takeCheck()
	if r.err != nil {
		return r.err
	}
	if r.bound >= 0 && r.next >= r.bound {
		return io.EOF
	}
	fs := r.cl.PollRecords(noWait, max)
	suspect := false
	fs.EachError(func(_ string, _ int32, err error) {
		switch {
		case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
			suspect = true // deleted, or a broker that does not know it yet
		case errors.Is(err, kerr.OffsetOutOfRange):
			r.fail(fmt.Errorf("offset %d is no longer in the log (trimmed by retention or deleted): %w", r.next, err))
		case kerr.IsRetriable(err):
			// The client retries by itself (a leader moved, a broker is
			// restarting).
		default:
			r.fail(err)
		}
	})
	if r.err != nil {
		b.End = r.next
		return r.err
	}
	n := 0
	fs.EachRecord(func(rec *kgo.Record) {
		if rec.Offset < r.next || (r.bound >= 0 && r.next >= r.bound) {
			return
		}
		if r.bound >= 0 && rec.Offset >= r.bound {
			r.next = r.bound // everything before the bound was consumed
			return
		}
		r.next = rec.Offset + 1
		n++
		if rec.Attrs.IsControl() {
			return
		}
		v, err := r.s.cfg.Decode(rec)
		if err != nil {
			b.Bad = append(b.Bad, flows.BadRecord{Offset: rec.Offset, Where: r.where, Raw: rec.Value, Err: err})
			return
		}
		b.Events = append(b.Events, v)
		b.Offsets = append(b.Offsets, rec.Offset)
	})
	b.End = r.next
	if suspect || (n == 0 && time.Since(r.lastCheck) >= r.s.cfg.CheckInterval) {
		r.startCheck()
	}
	if r.bound >= 0 && r.next >= r.bound {
		return io.EOF
	}
	return nil
}

func (r *reader[T]) fail(err error) {
	if r.err == nil {
		r.err = fmt.Errorf("kafka %s: %w", r.where, err)
	}
}

type checkResult int

const (
	topicThere     checkResult = iota
	topicUnknown               // the metadata could not be read: no verdict
	topicMissing               // the topic or the partition is not there
	topicRecreated             // the topic has another id than at New
)

// startCheck asks the brokers, in the background, whether the topic and
// partition still exist, unless a check is running.
func (r *reader[T]) startCheck() {
	if r.checking {
		return
	}
	r.checking = true
	r.lastCheck = time.Now()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		defer cancel()
		r.checked <- r.s.check(ctx, r.tp)
	}()
}

// takeCheck takes the result of a finished check, if any.
func (r *reader[T]) takeCheck() {
	if !r.checking {
		return
	}
	select {
	case res := <-r.checked:
		r.checking = false
		switch res {
		case topicThere:
			r.missing = 0
		case topicRecreated:
			r.fail(fmt.Errorf("%w: %q was deleted and created again: its offsets are not the ones the checkpoints hold", ErrTopicGone, r.tp.topic))
		case topicMissing:
			// One answer without the topic may come from a broker that
			// has not caught up; two in a row, CheckInterval apart, is a
			// deleted topic.
			r.missing++
			if r.missing >= 2 {
				r.fail(fmt.Errorf("%w: %q (or its partition %d) no longer exists", ErrTopicGone, r.tp.topic, r.tp.part))
			}
		}
	default:
	}
}

// check looks tp up in the brokers' metadata, asked afresh: kadm's
// ListTopics answers from the client's cache, which keeps a deleted topic
// for MetadataMinAge.
func (s *Source[T]) check(ctx context.Context, tp topicPartition) checkResult {
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(tp.topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, s.cl)
	if err != nil {
		return topicUnknown
	}
	for _, t := range resp.Topics {
		if t.Topic == nil || *t.Topic != tp.topic {
			continue
		}
		switch err := kerr.ErrorForCode(t.ErrorCode); {
		case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
			return topicMissing
		case err != nil:
			return topicUnknown
		case kadm.TopicID(t.TopicID) != s.ids[tp.topic] && t.TopicID != [16]byte{} && s.ids[tp.topic] != (kadm.TopicID{}):
			return topicRecreated
		}
		for _, p := range t.Partitions {
			if p.Partition == tp.part {
				return topicThere
			}
		}
		return topicMissing
	}
	return topicMissing
}

// Commit implements flows.Committer: the group's offset of this partition
// is set to offset, in the background; an error of an earlier commit of
// the partition is returned by the next call. Without a group it does
// nothing.
func (r *reader[T]) Commit(offset int64) error {
	if r.s.com == nil {
		return nil
	}
	return r.s.com.Commit(r.tp, offset)
}

func (r *reader[T]) Close() error {
	r.cancel()
	r.wg.Wait()
	r.cl.Close()
	return nil
}

// commitRound commits a round of offsets for the group in one request.
func commitRound(admin *kadm.Client, group string) commit.Send[topicPartition] {
	return func(ctx context.Context, batch map[topicPartition]int64) map[topicPartition]error {
		var os kadm.Offsets
		for tp, off := range batch {
			os.AddOffset(tp.topic, tp.part, off, -1)
		}
		resps, err := admin.CommitOffsets(ctx, group, os)
		errs := map[topicPartition]error{}
		for tp, off := range batch {
			perr := err
			if perr == nil {
				if r, ok := resps.Lookup(tp.topic, tp.part); !ok {
					perr = errors.New("no answer for the partition")
				} else {
					perr = r.Err
				}
			}
			if perr != nil {
				errs[tp] = fmt.Errorf("kafka: commit %s/%d at %d for group %q: %w", tp.topic, tp.part, off, group, perr)
			}
		}
		return errs
	}
}
