package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/tessera-streams/tessera/cluster"
	"github.com/tessera-streams/tessera/connectors/ingest"
	"github.com/tessera-streams/tessera/connectors/kafka"
	"github.com/tessera-streams/tessera/connectors/nats"
	"github.com/tessera-streams/tessera/flows"
)

// ingestFlags say where -source http keeps the pushed lines.
type ingestFlags struct {
	kind, brokers, topics, group string
	natsURL, stream, subjects    string
	partitions                   int
}

// httpSource is -source http: the node serves POST
// /v1/streams/lines/events and the flow reads what it acknowledged.
//
//   - -ingest log: the stream "lines" of an embedded log in <data>/ingest
//     (a single node only: the log is on its disk).
//   - -ingest kafka: the topic of -topics, which the node produces the lines
//     into in transactions (transactional id wordcount-lines-<node>), and
//     which the flow reads as a Kafka source: for a cluster.
//   - -ingest nats: the JetStream stream of -stream, which the node
//     publishes the lines to (the Idempotency-Key in their Nats-Msg-Id), on
//     the subjects of -subjects (default: the stream's), one per
//     partition, and which the flow reads as a NATS source: for a cluster.
//
// It returns what to close once the node has stopped.
func httpSource(ctx context.Context, node *cluster.Flags, f ingestFlags) (flows.Source[Line], func() error, error) {
	switch f.kind {
	case "log":
		if node.Data == "" {
			return nil, nil, errors.New("-source http needs -data: a push is acknowledged once its events are durable in the log there")
		}
		l, err := ingest.Open(filepath.Join(node.Data, "ingest"), ingest.Options{})
		if err != nil {
			return nil, nil, err
		}
		s, err := ingest.NewStream(l, ingest.Config[Line]{Name: "lines", Partitions: f.partitions})
		if err != nil {
			l.Close()
			return nil, nil, err
		}
		node.Streams = append(node.Streams, s)
		return s, l.Close, nil
	case "kafka":
		topics := list(f.topics)
		if f.brokers == "" || len(topics) != 1 {
			return nil, nil, errors.New("-source http -ingest kafka needs -brokers and one topic in -topics")
		}
		name := node.Node
		if name == "" {
			name, _ = os.Hostname()
		}
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second) // to describe the topics
		defer cancel()
		in, err := kafka.NewIngest(dctx, kafka.IngestConfig[Line]{Brokers: list(f.brokers), Name: "lines", Topic: topics[0],
			TransactionalID: "wordcount-lines-" + name})
		if err != nil {
			return nil, nil, err
		}
		s, err := kafka.New(dctx, kafka.Config[Line]{Brokers: list(f.brokers), Topics: topics, Group: f.group})
		if err != nil {
			in.Close()
			return nil, nil, err
		}
		node.Streams = append(node.Streams, in)
		return s, func() error { return errors.Join(in.Close(), s.Close()) }, nil
	case "nats":
		if f.natsURL == "" || f.stream == "" {
			return nil, nil, errors.New("-source http -ingest nats needs -nats and -stream")
		}
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second) // to describe the stream
		defer cancel()
		in, err := nats.NewIngest(dctx, nats.IngestConfig[Line]{URL: f.natsURL, Name: "lines", Stream: f.stream, Subjects: list(f.subjects)})
		if err != nil {
			return nil, nil, err
		}
		s, err := nats.New(dctx, nats.Config[Line]{URL: f.natsURL, Stream: f.stream, Subjects: in.Subjects()})
		if err != nil {
			in.Close()
			return nil, nil, err
		}
		node.Streams = append(node.Streams, in)
		return s, func() error { return errors.Join(in.Close(), s.Close()) }, nil
	default:
		return nil, nil, fmt.Errorf("-ingest must be log, kafka or nats, got %q", f.kind)
	}
}
