package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tessera-streams/tessera/connectors/internal/commit"
	"github.com/tessera-streams/tessera/flows"
)

// Config configures a Source.
type Config[T any] struct {
	// URL is the NATS server URL (several, comma-separated).
	URL string
	// Stream is the JetStream stream to read.
	Stream string
	// Subjects are the partitions' subject filters, in partition order;
	// none: the stream's subjects.
	Subjects []string
	// Decode turns a message into an event; an error makes it a bad record
	// (dead-lettered), and reading goes on. Nil: the data is decoded as
	// JSON into T. An event may keep the message's slices.
	Decode func(m jetstream.Msg) (T, error)
	// Bounded makes each partition end (io.EOF) after its last message as
	// of New: a batch run over what the stream holds, which drains.
	Bounded bool
	// TrimCommitted makes Commit purge the partition's messages below the
	// committed offset.
	TrimCommitted bool
	// CheckInterval is how often an idle reader checks that the stream
	// still exists; default 2s. A stream missing from two checks in a row,
	// or created again, fails the reader.
	CheckInterval time.Duration
	// Options are added to the connection's (credentials, TLS, a name...).
	Options []natsgo.Option
}

// Source is a JetStream source: see the package doc. It is safe for
// concurrent use; Close it after the engine has stopped.
type Source[T any] struct {
	cfg     Config[T]
	nc      *natsgo.Conn
	js      jetstream.JetStream
	stream  jetstream.Stream
	created time.Time                 // the stream's creation: another one is another stream
	bounds  []int64                   // per partition, with Bounded: the sequence after its last message at New
	trim    *commit.Committer[string] // nil without TrimCommitted
	once    sync.Once
	cerr    error
}

// ErrStreamGone is returned (wrapped) by Read when the stream was deleted,
// or deleted and created again.
var ErrStreamGone = errors.New("stream gone")

// New connects and returns a source over cfg.Stream, which must exist.
func New[T any](ctx context.Context, cfg Config[T]) (*Source[T], error) {
	var errs []error
	if cfg.URL == "" {
		errs = append(errs, errors.New("no URL"))
	}
	if cfg.Stream == "" {
		errs = append(errs, errors.New("no stream"))
	}
	if cfg.CheckInterval < 0 {
		errs = append(errs, fmt.Errorf("negative check interval %v", cfg.CheckInterval))
	}
	for i, a := range cfg.Subjects {
		if a == "" {
			errs = append(errs, errors.New("empty subject"))
		}
		for _, b := range cfg.Subjects[:i] {
			if subjectsCollide(a, b) {
				errs = append(errs, fmt.Errorf("subjects %q and %q overlap: a message would be in two partitions", b, a))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("nats source: %w", err)
	}
	if cfg.Decode == nil {
		cfg.Decode = DecodeJSON[T]
	}
	if cfg.CheckInterval == 0 {
		cfg.CheckInterval = 2 * time.Second
	}
	nc, err := natsgo.Connect(cfg.URL, cfg.Options...)
	if err != nil {
		return nil, fmt.Errorf("nats source: connect to %s: %w", cfg.URL, err)
	}
	s := &Source[T]{cfg: cfg, nc: nc}
	if err := s.describe(ctx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("nats source: %w", err)
	}
	if cfg.TrimCommitted {
		s.trim = commit.New("nats", purgeRound(s.stream))
	}
	return s, nil
}

func (s *Source[T]) describe(ctx context.Context) error {
	var err error
	if s.js, err = jetstream.New(s.nc); err != nil {
		return err
	}
	if s.stream, err = s.js.Stream(ctx, s.cfg.Stream); err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("stream %q does not exist", s.cfg.Stream)
		}
		return fmt.Errorf("stream %q: %w", s.cfg.Stream, err)
	}
	info := s.stream.CachedInfo()
	s.created = info.Created
	if len(s.cfg.Subjects) == 0 {
		s.cfg.Subjects = append([]string(nil), info.Config.Subjects...)
		if len(s.cfg.Subjects) == 0 {
			return fmt.Errorf("stream %q has no subjects: give Subjects", s.cfg.Stream)
		}
	}
	// A filter that matches none of the subjects the stream stores (a
	// typo) would be a partition that never holds a message. One that
	// matches a part of them (orders.* of orders.eu and orders.us) reads
	// that part. A stream without subjects of its own (a mirror, or one
	// that sources others) stores any: it is not checked.
	if stored := info.Config.Subjects; len(stored) > 0 {
		for _, subj := range s.cfg.Subjects {
			if !slices.ContainsFunc(stored, func(st string) bool { return subjectsOverlap(subj, st) }) {
				return fmt.Errorf("subject %q matches none of the subjects stream %q stores (%s)", subj, s.cfg.Stream, strings.Join(stored, ", "))
			}
		}
	}
	if !s.cfg.Bounded {
		return nil
	}
	for _, subj := range s.cfg.Subjects {
		m, err := s.stream.GetLastMsgForSubject(ctx, subj)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			s.bounds = append(s.bounds, 0)
		case err != nil:
			return fmt.Errorf("last message of %q: %w", subj, err)
		default:
			s.bounds = append(s.bounds, int64(m.Sequence)+1)
		}
	}
	return nil
}

// subjectsOverlap reports whether some subject matches both a and b
// (NATS wildcards: "*" one token, ">" one or more tokens at the end).
func subjectsOverlap(a, b string) bool {
	ta, tb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(ta) && i < len(tb); i++ {
		x, y := ta[i], tb[i]
		switch {
		case x == ">" || y == ">":
			return true // both have a token here, and ">" takes it and the rest
		case x != y && x != "*" && y != "*":
			return false
		}
	}
	return len(ta) == len(tb)
}

// DecodeJSON decodes a message's data as JSON.
func DecodeJSON[T any](m jetstream.Msg) (T, error) {
	var v T
	err := json.Unmarshal(m.Data(), &v)
	return v, err
}

// Partitions implements flows.Source.
func (s *Source[T]) Partitions() int { return len(s.cfg.Subjects) }

// Subject is partition p's subject filter.
func (s *Source[T]) Subject(p int) string { return s.cfg.Subjects[p] }

// End is the offset at which partition p ends with Bounded, or -1.
func (s *Source[T]) End(p int) int64 {
	if s.bounds == nil {
		return -1
	}
	return s.bounds[p]
}

// Close stops the trimmer, after it has purged what it was last given,
// and closes the connection. Readers are closed by whoever opened them.
// Safe to call twice.
func (s *Source[T]) Close() error {
	s.once.Do(func() {
		if s.trim != nil {
			s.cerr = s.trim.Close()
		}
		s.nc.Close()
	})
	return s.cerr
}

// bufferLimit is how many messages a reader holds for Read; the consumer
// waits while it is full.
const bufferLimit = 4096

// Open implements flows.Source: an ordered consumer of partition p's
// subject from stream sequence from (0: the first message).
func (s *Source[T]) Open(p int, from int64) (flows.PartitionReader[T], error) {
	if p < 0 || p >= len(s.cfg.Subjects) {
		return nil, fmt.Errorf("nats: no partition %d", p)
	}
	if from < 0 {
		return nil, fmt.Errorf("nats: negative offset %d", from)
	}
	subj := s.cfg.Subjects[p]
	r := &reader[T]{s: s, subj: subj, next: from, bound: -1, checked: make(chan checkResult, 1)}
	r.cond = sync.NewCond(&r.mu)
	r.ctx, r.cancel = context.WithCancel(context.Background())
	if s.bounds != nil {
		r.bound = s.bounds[p]
		if from >= r.bound {
			return r, nil // nothing to read: no consumer
		}
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}, DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, uint64(from)
	}
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	cons, err := s.stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		r.cancel()
		return nil, fmt.Errorf("nats: consumer of %s/%s at %d: %w", s.cfg.Stream, subj, from, err)
	}
	r.cc, err = cons.Consume(r.deliver, jetstream.PullMaxMessages(1024), jetstream.ConsumeErrHandler(r.consumeErr))
	if err != nil {
		r.cancel()
		return nil, fmt.Errorf("nats: consume %s/%s at %d: %w", s.cfg.Stream, subj, from, err)
	}
	return r, nil
}

type reader[T any] struct {
	s     *Source[T]
	subj  string
	cc    jetstream.ConsumeContext // nil when there is nothing to read
	next  int64                    // the sequence after the last message consumed
	bound int64                    // with Bounded: the end; -1 otherwise
	err   error                    // a fatal error: every later Read returns it

	// The consumer's goroutine appends to buf; Read takes from it.
	mu      sync.Mutex
	cond    *sync.Cond // buf has room, or the reader closed
	buf     []jetstream.Msg
	trouble bool // the consumer reported an error since the last Read
	closed  bool
	take    []jetstream.Msg // Read's copy of buf, reused

	// The stream check runs in its own goroutine so that Read never waits
	// for the network.
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	checking  bool
	checked   chan checkResult
	lastCheck time.Time
	missing   int
}

// deliver runs on the consumer's goroutine; it waits while buf is full,
// which holds the consumer's pull requests back.
func (r *reader[T]) deliver(m jetstream.Msg) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.buf) >= bufferLimit && !r.closed {
		r.cond.Wait()
	}
	if !r.closed {
		r.buf = append(r.buf, m)
	}
}

func (r *reader[T]) consumeErr(_ jetstream.ConsumeContext, err error) {
	r.mu.Lock()
	r.trouble = true
	r.mu.Unlock()
}

func (r *reader[T]) Read(ctx context.Context, b *flows.ReadBatch[T], max int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.End = r.next
	r.takeCheck()
	if r.err != nil {
		return r.err
	}
	if r.bound >= 0 && r.next >= r.bound {
		return io.EOF
	}
	r.mu.Lock()
	n := min(max, len(r.buf))
	r.take = append(r.take[:0], r.buf[:n]...)
	rest := copy(r.buf, r.buf[n:])
	clear(r.buf[rest:])
	r.buf = r.buf[:rest]
	trouble := r.trouble
	r.trouble = false
	r.cond.Signal()
	r.mu.Unlock()
	for i, m := range r.take {
		r.take[i] = nil
		meta, err := m.Metadata()
		if err != nil {
			r.fail(fmt.Errorf("message without JetStream metadata: %w", err))
			break
		}
		seq := int64(meta.Sequence.Stream)
		if seq < r.next {
			continue
		}
		if r.bound >= 0 && seq >= r.bound {
			r.next = r.bound
			break
		}
		r.next = seq + 1
		v, err := r.s.cfg.Decode(m)
		if err != nil {
			b.Bad = append(b.Bad, flows.BadRecord{Offset: seq, Where: m.Subject(), Raw: m.Data(), Err: err})
			continue
		}
		b.Events = append(b.Events, v)
		b.Offsets = append(b.Offsets, seq)
	}
	b.End = r.next
	if r.err != nil {
		return r.err
	}
	if trouble || (n == 0 && time.Since(r.lastCheck) >= r.s.cfg.CheckInterval) {
		r.startCheck()
	}
	if r.bound >= 0 && r.next >= r.bound {
		return io.EOF
	}
	return nil
}

func (r *reader[T]) fail(err error) {
	if r.err == nil {
		r.err = fmt.Errorf("nats %s/%s: %w", r.s.cfg.Stream, r.subj, err)
	}
}

type checkResult int

const (
	streamThere     checkResult = iota
	streamUnknown               // the server could not say: no verdict
	streamMissing               // the stream does not exist
	streamRecreated             // the stream was created after New
)

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
		r.checked <- r.s.check(ctx)
	}()
}

func (r *reader[T]) takeCheck() {
	if !r.checking {
		return
	}
	select {
	case res := <-r.checked:
		r.checking = false
		switch res {
		case streamThere:
			r.missing = 0
		case streamRecreated:
			r.fail(fmt.Errorf("%w: %q was deleted and created again: its sequences are not the ones the checkpoints hold", ErrStreamGone, r.s.cfg.Stream))
		case streamMissing:
			r.missing++
			if r.missing >= 2 {
				r.fail(fmt.Errorf("%w: %q no longer exists", ErrStreamGone, r.s.cfg.Stream))
			}
		}
	default:
	}
}

func (s *Source[T]) check(ctx context.Context) checkResult {
	info, err := s.js.Stream(ctx, s.cfg.Stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return streamMissing
	case err != nil:
		return streamUnknown
	case !info.CachedInfo().Created.Equal(s.created):
		return streamRecreated
	}
	return streamThere
}

// Commit implements flows.Committer: with TrimCommitted, the partition's
// messages below offset are purged, in the background; an error of an
// earlier purge is returned by the next call. Otherwise it does nothing.
func (r *reader[T]) Commit(offset int64) error {
	if r.s.trim == nil {
		return nil
	}
	return r.s.trim.Commit(r.subj, offset)
}

func (r *reader[T]) Close() error {
	r.mu.Lock()
	r.closed = true
	r.cond.Broadcast()
	r.mu.Unlock()
	r.cancel()
	if r.cc != nil {
		r.cc.Stop()
		<-r.cc.Closed()
	}
	r.wg.Wait()
	return nil
}

// purgeRound purges each subject below its committed offset.
func purgeRound(stream jetstream.Stream) commit.Send[string] {
	return func(ctx context.Context, batch map[string]int64) map[string]error {
		errs := map[string]error{}
		for subj, off := range batch {
			err := stream.Purge(ctx, jetstream.WithPurgeSubject(subj), jetstream.WithPurgeSequence(uint64(off)))
			if err != nil {
				errs[subj] = fmt.Errorf("nats: purge %s below %d: %w", subj, off, err)
			}
		}
		return errs
	}
}

// subjectsCollide reports whether some subject matches both filters: tokens
// are separated by dots, * matches one token and > one or more at the end.
func subjectsCollide(a, b string) bool {
	at, bt := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; ; i++ {
		switch {
		case i == len(at) && i == len(bt):
			return true
		case i == len(at) || i == len(bt):
			return false
		case at[i] == ">" || bt[i] == ">":
			return true
		case at[i] != "*" && bt[i] != "*" && at[i] != bt[i]:
			return false
		}
	}
}
