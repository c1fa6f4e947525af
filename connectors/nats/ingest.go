package nats

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tessera-streams/tessera/connectors/push"
	"github.com/tessera-streams/tessera/shard"
)

// hashHeader carries the hash of the request body an event came in, so
// that a key reused with another body can be told from a retry.
const hashHeader = "Tessera-Body-Hash"

// IngestConfig configures an Ingest.
type IngestConfig[T any] struct {
	URL string
	// Name is the stream's name in the URL: POST /v1/streams/{Name}/events.
	Name string
	// Stream is the JetStream stream that stores the events; a flow reads
	// it with a Source over the same Subjects.
	Stream string
	// Subjects are the partitions' subjects, in partition order (a Source
	// with the same Subjects numbers them alike); literal subjects the
	// stream captures. Empty: the stream's subjects, which must then be
	// literal.
	Subjects []string
	// Decode checks and decodes an event (one JSON line or array element);
	// an event it rejects fails its whole request (400). Nil: JSON into T.
	Decode func([]byte) (T, error)
	// Key, if set, places each event: partition = hash(Key(event)) mod
	// len(Subjects), flows.KeyPartition's partition (a flow keyed by the
	// same string can read the subjects with flows.WithKeyedPartitions).
	// Nil: each request goes whole to one partition: with an
	// idempotency key, hash(key) mod len(Subjects), so that a retry on any
	// node goes where the first attempt went; without, the next one
	// round-robin.
	Key func(T) string
	// MaxBody is the largest request body; default 8 MiB.
	MaxBody int64
	// MaxPending bounds the bytes of events waiting for JetStream's
	// acknowledgement: past it, pushes are answered 429; default 64 MiB.
	MaxPending int64
	// AckTimeout bounds the wait of a request for JetStream (messages not
	// acknowledged within AckWait are published again, with their ids);
	// past it the request is answered 503. Default 10 s.
	AckTimeout time.Duration
	// AckWait is how long a message waits for its acknowledgement before
	// it is published again; default 2 s.
	AckWait time.Duration
	Options []natsgo.Option
}

// Ingest takes events pushed over HTTP into a JetStream stream,
// acknowledged once JetStream acknowledged every one, and applied once per
// idempotency key within the stream's duplicate window; see the package
// doc. It implements cluster.Stream and is safe for concurrent use. Close
// it after the node has stopped.
type Ingest[T any] struct {
	cfg     IngestConfig[T]
	nc      *natsgo.Conn
	js      jetstream.JetStream
	stream  jetstream.Stream
	window  time.Duration // the stream's duplicate window
	rr      atomic.Uint64
	pending atomic.Int64
	once    sync.Once
}

// NewIngest connects and checks the stream and its subjects.
func NewIngest[T any](ctx context.Context, cfg IngestConfig[T]) (*Ingest[T], error) {
	switch {
	case cfg.URL == "":
		return nil, errors.New("nats ingest: no URL")
	case cfg.Name == "":
		return nil, errors.New("nats ingest: no stream name")
	case cfg.Stream == "":
		return nil, errors.New("nats ingest: no JetStream stream")
	case cfg.MaxBody < 0 || cfg.MaxPending < 0 || cfg.AckTimeout < 0 || cfg.AckWait < 0:
		return nil, errors.New("nats ingest: negative limit")
	}
	if cfg.Decode == nil {
		cfg.Decode = func(b []byte) (T, error) {
			var v T
			err := json.Unmarshal(b, &v)
			return v, err
		}
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = 8 << 20
	}
	if cfg.MaxPending == 0 {
		cfg.MaxPending = 64 << 20
	}
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = 10 * time.Second
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = 2 * time.Second
	}
	nc, err := natsgo.Connect(cfg.URL, cfg.Options...)
	if err != nil {
		return nil, fmt.Errorf("nats ingest: connect to %s: %w", cfg.URL, err)
	}
	in := &Ingest[T]{cfg: cfg, nc: nc}
	if err := in.describe(ctx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("nats ingest: %w", err)
	}
	return in, nil
}

func (in *Ingest[T]) describe(ctx context.Context) error {
	var err error
	if in.js, err = jetstream.New(in.nc); err != nil {
		return err
	}
	if in.stream, err = in.js.Stream(ctx, in.cfg.Stream); err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("stream %q does not exist", in.cfg.Stream)
		}
		return fmt.Errorf("stream %q: %w", in.cfg.Stream, err)
	}
	info := in.stream.CachedInfo()
	in.window = info.Config.Duplicates
	if len(in.cfg.Subjects) == 0 {
		in.cfg.Subjects = append([]string(nil), info.Config.Subjects...)
	}
	if len(in.cfg.Subjects) == 0 {
		return fmt.Errorf("stream %q has no subjects: give Subjects", in.cfg.Stream)
	}
	for _, s := range in.cfg.Subjects {
		if strings.ContainsAny(s, "*>") {
			return fmt.Errorf("subject %q is a wildcard: ingest publishes to literal subjects (give Subjects)", s)
		}
		name, err := in.js.StreamNameBySubject(ctx, s)
		if err != nil || name != in.cfg.Stream {
			return fmt.Errorf("subject %q is not captured by stream %q (%v)", s, in.cfg.Stream, err)
		}
	}
	return nil
}

// Name is the stream's name.
func (in *Ingest[T]) Name() string { return in.cfg.Name }

// NodeLocal is false: acknowledged events are in JetStream.
func (in *Ingest[T]) NodeLocal() bool { return false }

// Subjects are the partitions' subjects, in partition order.
func (in *Ingest[T]) Subjects() []string { return append([]string(nil), in.cfg.Subjects...) }

// DuplicateWindow is how long the stream remembers message ids: an
// idempotency key is applied once within it.
func (in *Ingest[T]) DuplicateWindow() time.Duration { return in.window }

// ServeHTTP answers POST /v1/streams/{Name}/events: see the package doc.
func (in *Ingest[T]) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	push.Serve(w, r, in.cfg.Name, in.cfg.MaxBody, in.cfg.Decode, in.append)
}

// Append appends events (each one JSON value, which Decode must take), as
// a request with idempotency key key ("" for none) would, and returns once
// JetStream has acknowledged them.
func (in *Ingest[T]) Append(ctx context.Context, key string, events ...[]byte) (push.Result, error) {
	pr, err := push.Events(key, events, in.cfg.Decode)
	if err != nil {
		return push.Result{}, err
	}
	return in.append(ctx, pr)
}

func (in *Ingest[T]) append(ctx context.Context, pr *push.Request[T]) (push.Result, error) {
	if len(pr.Events) == 0 {
		return push.Result{Partitions: []push.Appended{}}, nil
	}
	if n := in.pending.Add(int64(pr.Size)); n > int64(pr.Size) && n > in.cfg.MaxPending {
		in.pending.Add(-int64(pr.Size))
		return push.Result{}, fmt.Errorf("nats ingest: %w: %d bytes wait for JetStream", push.ErrBusy, n-int64(pr.Size))
	}
	defer in.pending.Add(-int64(pr.Size))
	// Message ids: the key's, so that a retry (here or on another node)
	// is dropped as a duplicate; without a key, the request's own, so that
	// publishing again after a missing acknowledgement is safe.
	id := pr.Key
	if id == "" {
		var b [16]byte
		rand.Read(b[:])
		id = "~" + hex.EncodeToString(b[:])
	}
	hash := strconv.FormatUint(pr.Hash, 16)
	parts := make([]int, len(pr.Events))
	if in.cfg.Key == nil {
		// A retry, on any node, must choose the partition the first
		// attempt chose: its duplicates' acknowledgements name the
		// sequences stored there.
		p := int((in.rr.Add(1) - 1) % uint64(len(in.cfg.Subjects)))
		if pr.Key != "" {
			p = shard.Fragment(shard.String(pr.Key), len(in.cfg.Subjects))
		}
		for i := range parts {
			parts[i] = p
		}
	} else {
		for i, v := range pr.Values {
			parts[i] = shard.Fragment(shard.String(in.cfg.Key(v)), len(in.cfg.Subjects))
		}
	}
	msgs := make([]*natsgo.Msg, len(pr.Events))
	for i, ev := range pr.Events {
		h := natsgo.Header{jetstream.MsgIDHeader: {id + "/" + strconv.Itoa(i)}}
		if pr.Key != "" {
			h.Set(hashHeader, hash)
		}
		msgs[i] = &natsgo.Msg{Subject: in.cfg.Subjects[parts[i]], Data: ev, Header: h}
	}
	ctx, cancel := context.WithTimeout(ctx, in.cfg.AckTimeout)
	defer cancel()
	fail := func(err error) (push.Result, error) {
		if errors.Is(err, context.Canceled) {
			return push.Result{}, err
		}
		return push.Result{}, fmt.Errorf("nats ingest: %w: %w", push.ErrUnavailable, err)
	}
	// With a key, the first event goes alone: if the stream holds it
	// already, from a request with another body, nothing is published.
	first := 0
	if pr.Key != "" {
		first = 1
	}
	acks, err := in.publish(ctx, msgs[:first])
	if err != nil {
		return fail(err)
	}
	if first == 1 && acks[0].Duplicate {
		m, err := in.stream.GetMsg(ctx, acks[0].Sequence)
		if err != nil {
			return fail(fmt.Errorf("read message %d back: %w", acks[0].Sequence, err))
		}
		if m.Header.Get(hashHeader) != hash {
			return push.Result{}, fmt.Errorf("nats ingest: %w", push.ErrKeyReused)
		}
	}
	rest, err := in.publish(ctx, msgs[first:])
	if err != nil {
		return fail(err)
	}
	acks = append(acks, rest...)
	res := push.Result{Accepted: len(msgs), Partitions: []push.Appended{}, Replayed: pr.Key != ""}
	at := map[int]int{}
	for i, a := range acks {
		res.Replayed = res.Replayed && a.Duplicate
		seq := int64(a.Sequence)
		j, ok := at[parts[i]]
		if !ok {
			j = len(res.Partitions)
			at[parts[i]] = j
			res.Partitions = append(res.Partitions, push.Appended{Partition: parts[i], From: seq, To: seq + 1})
		}
		p := &res.Partitions[j]
		p.From, p.To = min(p.From, seq), max(p.To, seq+1)
	}
	return res, nil
}

// publish publishes msgs and returns their acknowledgements, in order.
// Messages without an acknowledgement within AckWait are published again
// (their ids make it safe) until ctx ends.
func (in *Ingest[T]) publish(ctx context.Context, msgs []*natsgo.Msg) ([]*jetstream.PubAck, error) {
	acks := make([]*jetstream.PubAck, len(msgs))
	todo := make([]int, len(msgs))
	for i := range todo {
		todo[i] = i
	}
	for len(todo) > 0 {
		var again []int
		// In chunks: jetstream holds at most 4000 unacknowledged messages
		// before PublishMsgAsync stalls.
		for start := 0; start < len(todo); start += publishChunk {
			chunk := todo[start:min(len(todo), start+publishChunk)]
			futs := make([]jetstream.PubAckFuture, len(chunk))
			for k, i := range chunk {
				f, err := in.js.PublishMsgAsync(msgs[i])
				if err != nil {
					if in.nc.IsClosed() {
						return nil, err
					}
					again = append(again, i)
					continue
				}
				futs[k] = f
			}
			timeout := time.NewTimer(in.cfg.AckWait)
			for k, f := range futs {
				if f == nil {
					continue
				}
				select {
				case a := <-f.Ok():
					acks[chunk[k]] = a
				case err := <-f.Err():
					var apiErr *jetstream.APIError
					if errors.As(err, &apiErr) {
						timeout.Stop()
						return nil, err // the stream refused it (too large, a limit): final
					}
					again = append(again, chunk[k])
				case <-timeout.C:
					for k2, f2 := range futs[k:] {
						if f2 != nil {
							again = append(again, chunk[k+k2])
						}
					}
					goto next
				case <-ctx.Done():
					timeout.Stop()
					return nil, ctx.Err()
				}
			}
		next:
			timeout.Stop()
		}
		if len(again) > 0 {
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("%d of %d events not acknowledged: %w", len(again), len(msgs), ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
		todo = again
	}
	return acks, nil
}

// Close closes the connection; requests still waiting fail. Safe to call
// twice.
func (in *Ingest[T]) Close() error {
	in.once.Do(in.nc.Close)
	return nil
}
