package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/tessera-streams/tessera/connectors/file"
	"github.com/tessera-streams/tessera/connectors/kafka"
	"github.com/tessera-streams/tessera/connectors/nats"
	"github.com/tessera-streams/tessera/flows"
)

// WordCount is an output of -sink: a word's count after one more
// occurrence. A word counted n times has outputs 1..n, each once.
type WordCount struct {
	Word  string `json:"word"`
	Count int64  `json:"count"`
}

// sinkFlags are the -sink flags: where the count updates go, each exactly
// once, one checkpoint interval after they are made (flows.OnCheckpoint).
type sinkFlags struct {
	kind, dir, topic, subject *string
}

func addSinkFlags(fs *flag.FlagSet) *sinkFlags {
	return &sinkFlags{
		kind:    fs.String("sink", "none", "where word-count updates go, exactly once: none, file, kafka or nats"),
		dir:     fs.String("sink-dir", "", "file sink: directory of JSON-lines files, one per fragment"),
		topic:   fs.String("sink-topic", "", "kafka sink: topic (must exist; transactions, with -brokers)"),
		subject: fs.String("sink-subject", "", "nats sink: subject a JetStream stream captures (with -nats)"),
	}
}

// open makes the sink the flags name, or none, and adds its Close to
// closers.
func (sf *sinkFlags) open(ctx context.Context, flow string, brokers, natsURL string, closers *[]func() error) ([]flows.Sink[WordCount], error) {
	var (
		s   flows.Sink[WordCount]
		c   func() error
		err error
	)
	switch *sf.kind {
	case "none":
		return nil, nil
	case "file":
		if *sf.dir == "" {
			return nil, errors.New("-sink file needs -sink-dir")
		}
		fsink, ferr := file.NewSink[WordCount](*sf.dir, nil)
		s, c, err = fsink, fsink.Close, ferr
	case "kafka":
		if brokers == "" || *sf.topic == "" {
			return nil, errors.New("-sink kafka needs -brokers and -sink-topic")
		}
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second) // to check the topics
		defer cancel()
		ks, kerr := kafka.NewExactlyOnceSink(dctx, kafka.ExactlyOnceConfig[WordCount]{
			SinkConfig: kafka.SinkConfig[WordCount]{Brokers: list(brokers), Topic: *sf.topic}, Flow: flow})
		s, c, err = ks, ks.Close, kerr
	case "nats":
		if natsURL == "" || *sf.subject == "" {
			return nil, errors.New("-sink nats needs -nats and -sink-subject")
		}
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second) // to find the stream
		defer cancel()
		ns, nerr := nats.NewSink(dctx, nats.SinkConfig[WordCount]{URL: natsURL, Subject: *sf.subject})
		s, c, err = ns, ns.Close, nerr
	default:
		return nil, fmt.Errorf("-sink must be none, file, kafka or nats, got %q", *sf.kind)
	}
	if err != nil {
		return nil, err
	}
	*closers = append(*closers, c)
	return []flows.Sink[WordCount]{s}, nil
}

// toSinks sends the counts' updates to the sinks, on durable checkpoints.
func toSinks(counts flows.Table[string, int64], sinks []flows.Sink[WordCount]) {
	if len(sinks) == 0 {
		return
	}
	updates := flows.Map(counts.Updates(), func(kv flows.KV[string, int64]) WordCount {
		return WordCount{Word: kv.Key, Count: kv.Value}
	})
	for _, s := range sinks {
		flows.To(updates, s, flows.OnCheckpoint())
	}
}
