package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tessera-streams/tessera/flows"
)

// SinkConfig configures a Sink.
type SinkConfig[T any] struct {
	URL     string
	Subject string // a stream must capture it
	// Encode makes a message's data from an output; nil encodes JSON.
	Encode func(v T) ([]byte, error)
	// AckWait is how long a published message waits for its
	// acknowledgement before it is published again; default 5s.
	AckWait time.Duration
	// WriteTimeout bounds a Write; 0 retries until every message is
	// acknowledged. A Write that fails loses nothing: the fragment gives
	// the outputs again after a backoff, for as long as the stream
	// refuses them, and holds its input meanwhile.
	WriteTimeout time.Duration
	Options      []natsgo.Option
}

// Sink publishes outputs to a subject with their ids as Nats-Msg-Id; see
// the package doc. It is safe for concurrent use. Close it after the
// engine has stopped.
type Sink[T any] struct {
	cfg    SinkConfig[T]
	nc     *natsgo.Conn
	js     jetstream.JetStream
	stream string
	once   sync.Once
}

// NewSink connects and returns a sink to cfg.Subject, which a stream must
// capture.
func NewSink[T any](ctx context.Context, cfg SinkConfig[T]) (*Sink[T], error) {
	switch {
	case cfg.URL == "":
		return nil, errors.New("nats sink: no URL")
	case cfg.Subject == "":
		return nil, errors.New("nats sink: no subject")
	case cfg.AckWait < 0 || cfg.WriteTimeout < 0:
		return nil, fmt.Errorf("nats sink: negative ack wait %v or write timeout %v", cfg.AckWait, cfg.WriteTimeout)
	}
	if cfg.Encode == nil {
		cfg.Encode = func(v T) ([]byte, error) { return json.Marshal(v) }
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = 5 * time.Second
	}
	nc, err := natsgo.Connect(cfg.URL, cfg.Options...)
	if err != nil {
		return nil, fmt.Errorf("nats sink: connect to %s: %w", cfg.URL, err)
	}
	js, err := jetstream.New(nc)
	if err == nil {
		s := &Sink[T]{cfg: cfg, nc: nc, js: js}
		if s.stream, err = js.StreamNameBySubject(ctx, cfg.Subject); err == nil {
			return s, nil
		}
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			err = fmt.Errorf("no stream captures subject %q", cfg.Subject)
		}
	}
	nc.Close()
	return nil, fmt.Errorf("nats sink: %w", err)
}

// Stream is the stream that captures the sink's subject.
func (s *Sink[T]) Stream() string { return s.stream }

// Write publishes out and returns once every message is acknowledged
// (stored, or dropped by the stream as a duplicate of one stored), or with
// an error (some may then be stored: a retry publishes them again, with
// the same ids).
func (s *Sink[T]) Write(out []flows.Output[T]) error {
	if len(out) == 0 {
		return nil
	}
	msgs := make([]*natsgo.Msg, len(out))
	for i, o := range out {
		data, err := s.cfg.Encode(o.Value)
		if err != nil {
			return fmt.Errorf("nats sink: encode output %s: %w", outputKey(o.ID), err)
		}
		msgs[i] = &natsgo.Msg{Subject: s.cfg.Subject, Data: data, Header: natsgo.Header{jetstream.MsgIDHeader: {outputKey(o.ID)}}}
	}
	ctx := context.Background()
	if s.cfg.WriteTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.WriteTimeout)
		defer cancel()
	}
	// In chunks: jetstream holds at most 4000 unacknowledged messages
	// before PublishMsgAsync stalls.
	for len(msgs) > 0 {
		chunk := msgs[:min(len(msgs), publishChunk)]
		msgs = msgs[len(chunk):]
		for {
			var err error
			if chunk, err = s.publish(ctx, chunk); err != nil {
				return fmt.Errorf("nats sink: publish %d outputs to %q: %w", len(out), s.cfg.Subject, err)
			}
			if len(chunk) == 0 {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("nats sink: %d of %d outputs to %q not acknowledged: %w", len(chunk)+len(msgs), len(out), s.cfg.Subject, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

const publishChunk = 1000

// publish publishes msgs asynchronously and waits for their
// acknowledgements; it returns the messages to publish again (no answer in
// AckWait, or a connection that broke), or an error that another try would
// not mend.
func (s *Sink[T]) publish(ctx context.Context, msgs []*natsgo.Msg) ([]*natsgo.Msg, error) {
	futs := make([]jetstream.PubAckFuture, 0, len(msgs))
	var again []*natsgo.Msg
	for _, m := range msgs {
		f, err := s.js.PublishMsgAsync(m)
		if err != nil {
			if s.nc.IsClosed() {
				return nil, err
			}
			again = append(again, m)
			continue
		}
		futs = append(futs, f)
	}
	timeout := time.NewTimer(s.cfg.AckWait)
	defer timeout.Stop()
	for i, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, natsgo.ErrNoResponders) || s.nc.IsClosed() {
				return nil, err
			}
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) {
				return nil, err // the stream refused it (too large, a limit): final
			}
			again = append(again, f.Msg())
		case <-timeout.C:
			for _, f := range futs[i:] {
				again = append(again, f.Msg())
			}
			return again, nil
		case <-ctx.Done():
			for _, f := range futs[i:] {
				again = append(again, f.Msg())
			}
			return again, nil
		}
	}
	return again, nil
}

// Close closes the connection. Safe to call twice.
func (s *Sink[T]) Close() error {
	s.once.Do(s.nc.Close)
	return nil
}

// outputKey is the message id of an output: its id's stable text
// (flows.OutputID.String). Equal ids give equal keys.
func outputKey(id flows.OutputID) string { return id.String() }
