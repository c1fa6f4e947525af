package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tessera-streams/tessera/connectors/kafka"
	"github.com/tessera-streams/tessera/examples/transport/sim"
)

// KafkaOptions are the flags of -source kafka and -produce.
type KafkaOptions struct {
	Source  string // sim or kafka
	Brokers string
	Topic   string
	Group   string
	Bounded bool
	Produce bool
}

func (k *KafkaOptions) register(fs interface {
	StringVar(*string, string, string, string)
	BoolVar(*bool, string, bool, string)
}) {
	fs.StringVar(&k.Source, "source", "sim", "where pings come from: sim (the simulation, in the node) or kafka (a topic that -produce filled)")
	fs.StringVar(&k.Brokers, "brokers", "", "kafka: comma-separated seed brokers")
	fs.StringVar(&k.Topic, "topic", "pings", "kafka: the pings' topic, a partition per network element (-partitions)")
	fs.StringVar(&k.Group, "group", "", "kafka source: consumer group whose offsets follow the checkpoints (empty: none)")
	fs.BoolVar(&k.Bounded, "bounded", false, "kafka source: read each partition up to its end at start, then finish (a batch run)")
	fs.BoolVar(&k.Produce, "produce", false, "produce the simulation's pings into -topic (created if missing) and exit, instead of running a node")
}

func (k *KafkaOptions) check() error {
	switch {
	case k.Source != "sim" && k.Source != "kafka":
		return fmt.Errorf("-source must be sim or kafka, got %q", k.Source)
	case (k.Source == "kafka" || k.Produce) && (k.Brokers == "" || k.Topic == ""):
		return errors.New("-source kafka and -produce need -brokers and -topic")
	}
	return nil
}

func (k *KafkaOptions) brokers() []string { return strings.Split(k.Brokers, ",") }

// pingSize is the size of a ping's record value: subscriber, cell, time
// (Unix nanoseconds) and kind, big-endian.
const pingSize = 8 + 4 + 8 + 1

// AppendPing appends a ping's record value to b.
func AppendPing(b []byte, p sim.Ping) []byte {
	b = binary.BigEndian.AppendUint64(b, p.Sub)
	b = binary.BigEndian.AppendUint32(b, uint32(p.Cell))
	b = binary.BigEndian.AppendUint64(b, uint64(p.At.UnixNano()))
	return append(b, byte(p.Kind))
}

// decodePing reads a record value of AppendPing for a network of cells
// cells: anything else is a bad record, dead-lettered with its offset.
func decodePing(cells int) func(*kgo.Record) (sim.Ping, error) {
	return func(r *kgo.Record) (sim.Ping, error) {
		v := r.Value
		if len(v) != pingSize {
			return sim.Ping{}, fmt.Errorf("ping record of %d bytes, want %d", len(v), pingSize)
		}
		p := sim.Ping{Sub: binary.BigEndian.Uint64(v), Cell: int32(binary.BigEndian.Uint32(v[8:])),
			At: time.Unix(0, int64(binary.BigEndian.Uint64(v[12:]))).UTC(), Kind: sim.Kind(v[20])}
		if p.Cell < 0 || int(p.Cell) >= cells || p.Kind > sim.Periodic {
			return sim.Ping{}, fmt.Errorf("ping of cell %d, kind %d: no such cell or kind (%d cells)", p.Cell, p.Kind, cells)
		}
		return p, nil
	}
}

// kafkaSource reads the pings of the topic; the simulation gives the
// network (the cell plan) and the ground truth the accuracy is scored on.
func (k *KafkaOptions) kafkaSource(ctx context.Context, s *sim.Sim) (*kafka.Source[sim.Ping], error) {
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second) // to describe the topic
	defer cancel()
	src, err := kafka.New(dctx, kafka.Config[sim.Ping]{Brokers: k.brokers(), Topics: []string{k.Topic}, Group: k.Group,
		Bounded: k.Bounded, Decode: decodePing(len(s.Cells))})
	if err != nil {
		return nil, err
	}
	// A partition no element writes would hold the watermark back.
	if src.Partitions() != len(s.Parts) {
		src.Close()
		return nil, fmt.Errorf("-source kafka: %s has %d partitions, the simulation %d (-partitions)", k.Topic, src.Partitions(), len(s.Parts))
	}
	return src, nil
}

// produce writes each partition of the simulation, in delivery order,
// into the partition of the topic with its number, creating the topic
// with as many partitions if it is missing; it returns the pings written.
func (k *KafkaOptions) produce(ctx context.Context, s *sim.Sim) (int, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.brokers()...), kgo.DefaultProduceTopic(k.Topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		return 0, fmt.Errorf("produce: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	details, err := adm.ListTopics(ctx, k.Topic)
	if err != nil {
		return 0, fmt.Errorf("produce: describe %s: %w", k.Topic, err)
	}
	if d, ok := details[k.Topic]; !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
		resp, err := adm.CreateTopic(ctx, int32(len(s.Parts)), -1, nil, k.Topic)
		if err == nil {
			err = resp.Err
		}
		if err != nil {
			return 0, fmt.Errorf("produce: create %s: %w", k.Topic, err)
		}
	} else if d.Err != nil {
		return 0, fmt.Errorf("produce: describe %s: %w", k.Topic, d.Err)
	} else if len(d.Partitions) != len(s.Parts) {
		return 0, fmt.Errorf("produce: %s has %d partitions, the simulation %d (-partitions)", k.Topic, len(d.Partitions), len(s.Parts))
	}
	n := 0
	var mu sync.Mutex
	var first error
	done := func(_ *kgo.Record, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil && first == nil {
			first = err
		}
	}
	for p, pings := range s.Parts {
		buf := make([]byte, 0, len(pings)*pingSize)
		for _, ping := range pings {
			buf = AppendPing(buf, ping)
			v := buf[len(buf)-pingSize:]
			cl.Produce(ctx, &kgo.Record{Partition: int32(p), Value: v[:len(v):len(v)]}, done)
			n++
		}
	}
	if err := cl.Flush(ctx); err != nil {
		return 0, fmt.Errorf("produce: %w", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if first != nil {
		return 0, fmt.Errorf("produce: %w", first)
	}
	return n, nil
}
