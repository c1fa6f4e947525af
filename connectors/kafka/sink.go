package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tessera-streams/tessera/flows"
)

// SinkConfig configures a Sink.
type SinkConfig[T any] struct {
	Brokers []string
	Topic   string
	// Encode makes a record's value from an output; nil encodes JSON.
	Encode func(v T) ([]byte, error)
	// WriteTimeout bounds a Write; 0 waits until every record is
	// acknowledged, however long franz-go retries. A Write that fails
	// loses nothing: the fragment gives the outputs again after a
	// backoff, for as long as the topic refuses them, and holds its input
	// meanwhile.
	WriteTimeout time.Duration
	// Options are added to the producer client (TLS, SASL, compression,
	// ...). The sink sets acks=all itself.
	Options []kgo.Opt
}

// Sink writes outputs to a Kafka topic, keyed by their ids; see the
// package doc. It is safe for concurrent use. Close it after the engine
// has stopped.
type Sink[T any] struct {
	cfg  SinkConfig[T]
	cl   *kgo.Client
	once sync.Once
}

// NewSink returns a sink to cfg.Topic, which must exist.
func NewSink[T any](ctx context.Context, cfg SinkConfig[T]) (*Sink[T], error) {
	switch {
	case len(cfg.Brokers) == 0:
		return nil, errors.New("kafka sink: no brokers")
	case cfg.Topic == "":
		return nil, errors.New("kafka sink: no topic")
	case cfg.WriteTimeout < 0:
		return nil, fmt.Errorf("kafka sink: negative write timeout %v", cfg.WriteTimeout)
	}
	if cfg.Encode == nil {
		cfg.Encode = func(v T) ([]byte, error) { return json.Marshal(v) }
	}
	opts := append(cfg.Options[:len(cfg.Options):len(cfg.Options)],
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.DefaultProduceTopic(cfg.Topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka sink: %w", err)
	}
	s := &Sink[T]{cfg: cfg, cl: cl}
	if err := s.checkTopic(ctx); err != nil {
		cl.Close()
		return nil, fmt.Errorf("kafka sink: %w", err)
	}
	return s, nil
}

func (s *Sink[T]) checkTopic(ctx context.Context) error {
	details, err := kadm.NewClient(s.cl).ListTopics(ctx, s.cfg.Topic)
	if err != nil {
		return fmt.Errorf("describe topic %q: %w", s.cfg.Topic, err)
	}
	d, ok := details[s.cfg.Topic]
	switch {
	case !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition):
		return fmt.Errorf("topic %q does not exist", s.cfg.Topic)
	case d.Err != nil:
		return fmt.Errorf("topic %q: %w", s.cfg.Topic, d.Err)
	}
	return nil
}

// Write produces out and returns once every record is acknowledged, or
// with the first error (some records may then be written: a retry writes
// them again, with the same keys).
func (s *Sink[T]) Write(out []flows.Output[T]) error {
	if len(out) == 0 {
		return nil
	}
	recs := make([]kgo.Record, len(out))
	ptrs := make([]*kgo.Record, len(out))
	for i, o := range out {
		v, err := s.cfg.Encode(o.Value)
		if err != nil {
			return fmt.Errorf("kafka sink: encode output %s: %w", outputKey(o.ID), err)
		}
		recs[i] = kgo.Record{Key: []byte(outputKey(o.ID)), Value: v}
		ptrs[i] = &recs[i]
	}
	ctx := context.Background()
	if s.cfg.WriteTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.WriteTimeout)
		defer cancel()
	}
	if err := s.cl.ProduceSync(ctx, ptrs...).FirstErr(); err != nil {
		if errors.Is(err, kerr.UnknownTopicID) {
			// The topic was deleted and made again: franz-go keeps the
			// old topic's id, and fails every record, until it is
			// purged. The next Write learns the new topic.
			s.cl.PurgeTopicsFromProducing(s.cfg.Topic)
		}
		return fmt.Errorf("kafka sink: produce %d outputs to %q: %w", len(out), s.cfg.Topic, err)
	}
	return nil
}

// Close closes the producer; a Write still waiting fails. Safe to call
// twice.
func (s *Sink[T]) Close() error {
	s.once.Do(s.cl.Close)
	return nil
}

// outputKey is the record key of an output: its id's stable text
// (flows.OutputID.String). Equal ids give equal keys.
func outputKey(id flows.OutputID) string { return id.String() }
