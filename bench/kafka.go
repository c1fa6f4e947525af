package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tessera-streams/tessera/actor"
	"github.com/tessera-streams/tessera/connectors/kafka"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/internal/flowcore"
)

// The Kafka rows run against kfake, franz-go's in-process Kafka, in this
// process: the broker's work is on the same two cores as the engine's and
// the baseline's, so both sides pay it alike and the ratio is the figure
// to read, not the absolute rate. kfake keeps every record in memory: the
// rows use fewer events than the others (kafkaEvents).
func kafkaEvents(p params) int {
	if p.quick {
		return 200_000
	}
	return 1_000_000
}

// kafkaCluster is an in-process Kafka with topic holding the first n
// events' keys, spread round-robin over partitions.
func kafkaCluster(in *input, n, partitions int, topic string) (*kfake.Cluster, []string, error) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(partitions), topic))
	if err != nil {
		return nil, nil, err
	}
	brokers := c.ListenAddrs()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(0))
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	defer cl.Close()
	recs := make([]*kgo.Record, 0, 10_000)
	for i := range n {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(i % partitions), Value: []byte(in.keys[in.idx[i]])})
		if len(recs) == cap(recs) || i == n-1 {
			if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
				c.Close()
				return nil, nil, err
			}
			recs = recs[:0]
		}
	}
	return c, brokers, nil
}

func rawKey(r *kgo.Record) (string, error) { return string(r.Value), nil }

// kafkaSource: the keyed count reading a topic through the Kafka source,
// against one franz-go client consuming every partition and counting in
// a map, in the same process. Both count the same records exactly.
func kafkaSource(in *input, p params, w io.Writer) (Result, error) {
	n := min(kafkaEvents(p), len(in.idx))
	c, brokers, err := kafkaCluster(in, n, p.partitions, "keys")
	if err != nil {
		return Result{}, err
	}
	defer c.Close()
	want := map[string]int64{}
	for _, k := range in.idx[:n] {
		want[in.keys[k]]++
	}
	var loop, eng costs
	var rss []float64
	for round := 1; round <= p.rounds; round++ {
		runtime.GC()
		var got map[string]int64
		var lerr error
		loop = append(loop, measure(func() { got, lerr = consumeCount(brokers, "keys", n) }))
		if lerr != nil {
			return Result{}, fmt.Errorf("consume loop: %w", lerr)
		}
		if err := same(want, got); err != nil {
			return Result{}, fmt.Errorf("consume loop: %w", err)
		}
		runtime.GC()
		r, err := kafkaEngine(brokers, p)
		if err != nil {
			return Result{}, err
		}
		if err := same(want, r.counts); err != nil {
			return Result{}, fmt.Errorf("engine: %w", err)
		}
		eng = append(eng, r.cost)
		rss = append(rss, r.peakRSS)
		fmt.Fprintf(w, "  round %d: consume loop %v, engine %v\n", round, loop.last(), eng.last())
	}
	r := Result{Name: "kafka-source", Events: n, Rounds: p.rounds, Versus: "franz-go loop",
		Baseline:  "one franz-go client consuming every partition into a map, same process and broker",
		PeakRSSMB: medianF(rss), Goal: atLeast("ratio", 0.5),
		Note: fmt.Sprintf("keyed count from kfake (in-process), %d partitions", p.partitions)}
	r.against(eng.rate(n), eng.cpuPerEvent(n), loop.rate(n), loop.cpuPerEvent(n))
	return r, nil
}

// consumeCount counts the values of the first n records of topic, read
// from the start by one client.
func consumeCount(brokers []string, topic string, n int) (map[string]int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	counts := map[string]int64{}
	for read := 0; read < n; {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			return nil, err
		}
		fs.EachRecord(func(r *kgo.Record) {
			counts[string(r.Value)]++
			read++
		})
	}
	return counts, nil
}

func kafkaEngine(brokers []string, p params) (engineResult, error) {
	var res engineResult
	src, err := kafka.New(context.Background(), kafka.Config[string]{Brokers: brokers, Topics: []string{"keys"}, Decode: rawKey, Bounded: true})
	if err != nil {
		return res, err
	}
	defer src.Close()
	f := flows.New("bench-kafka", flows.WithFragments(p.fragments))
	ks := flows.KeyBy(flows.From(f, "keys", flows.Source[string](src)), flows.Identity[string])
	flows.Count(ks).View("counts")
	e, spent, err := startFlow(f, p, -1)
	if err != nil {
		return res, err
	}
	defer e.Stop()
	<-e.Drained()
	res.cost = spent()
	res.peakRSS = peakRSSMB()
	if err := e.Err(); err != nil {
		return res, err
	}
	res.counts, err = engineCounts(e)
	return res, err
}

// startFlow plans f and starts it on an engine with the bench's batch
// sizes and a checkpoint interval (negative: none); spent says what the
// run has cost since just before the start.
func startFlow(f *flows.Flow, p params, interval time.Duration) (e *actor.Engine, spent func() cost, err error) {
	plan, err := flowcore.Compile(f)
	if err != nil {
		return nil, nil, err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	resetPeakRSS()
	cpu, start := cpuTime(), time.Now()
	e, err = actor.Start(plan, actor.Config{Logger: logger, BatchSize: p.batch, PollSize: p.batch, CheckpointInterval: interval})
	return e, func() cost { return cost{time.Since(start), cpuTime() - cpu} }, err
}

// keyCount is an output of the sink rows: a key's count after an event.
type keyCount struct {
	K string `json:"k"`
	N int64  `json:"n"`
}

// countingSink counts the outputs its sink accepted.
type countingSink struct {
	sink flows.Sink[keyCount]
	n    atomic.Int64
}

func (s *countingSink) Write(out []flows.Output[keyCount]) error {
	if err := s.sink.Write(out); err != nil {
		return err
	}
	s.n.Add(int64(len(out)))
	return nil
}

// kafkaEOSSink: the keyed count sending every update to a Kafka topic on
// checkpoints (flows.OnCheckpoint), through the exactly-once sink, against
// the same flow through the at-least-once sink. Time runs from the
// engine's start to the last output acknowledged.
func kafkaEOSSink(in *input, p params, w io.Writer) (Result, error) {
	n := min(kafkaEvents(p)/2, len(in.idx))
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		return Result{}, err
	}
	defer c.Close()
	brokers := c.ListenAddrs()
	adm, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return Result{}, err
	}
	defer adm.Close()
	var alo, eos costs
	var rss []float64
	const interval = 200 * time.Millisecond
	for round := 1; round <= p.rounds; round++ {
		for _, exactly := range []bool{false, true} {
			topic := fmt.Sprintf("out-%d-%t", round, exactly)
			if _, err := kadm.NewClient(adm).CreateTopic(context.Background(), int32(p.partitions), 1, nil, topic); err != nil {
				return Result{}, err
			}
			runtime.GC()
			r, err := sinkEngine(in, n, p, brokers, topic, exactly, interval)
			if err != nil {
				return Result{}, fmt.Errorf("exactly-once %t: %w", exactly, err)
			}
			if exactly {
				eos = append(eos, r.cost)
				rss = append(rss, r.peakRSS)
			} else {
				alo = append(alo, r.cost)
			}
		}
		fmt.Fprintf(w, "  round %d: at-least-once %v, exactly-once %v\n", round, alo.last(), eos.last())
	}
	r := Result{Name: "kafka-eos-sink", Events: n, Rounds: p.rounds, Versus: "at-least-once",
		Baseline:  "the same flow through the at-least-once Kafka sink (acks=all, idempotent producer)",
		PeakRSSMB: medianF(rss), Goal: atLeast("ratio", 0.5),
		Note: fmt.Sprintf("count updates to kfake on checkpoints every %v, %d fragments", interval, p.fragments)}
	r.against(eos.rate(n), eos.cpuPerEvent(n), alo.rate(n), alo.cpuPerEvent(n))
	return r, nil
}

func sinkEngine(in *input, n int, p params, brokers []string, topic string, exactly bool, interval time.Duration) (engineResult, error) {
	var res engineResult
	cfg := kafka.SinkConfig[keyCount]{Brokers: brokers, Topic: topic}
	var sink flows.Sink[keyCount]
	var closeSink func() error
	if exactly {
		s, err := kafka.NewExactlyOnceSink(context.Background(), kafka.ExactlyOnceConfig[keyCount]{SinkConfig: cfg, Flow: topic})
		if err != nil {
			return res, err
		}
		sink, closeSink = s, s.Close
	} else {
		s, err := kafka.NewSink(context.Background(), cfg)
		if err != nil {
			return res, err
		}
		sink, closeSink = s, s.Close
	}
	defer closeSink()
	counted := &countingSink{sink: sink}
	src := &sliceSource{in: in, parts: p.partitions, repeat: 1, upto: float64(n) / float64(len(in.idx))}
	f := flows.New("bench-sink", flows.WithFragments(p.fragments))
	ks := flows.KeyBy(flows.From(f, "keys", flows.Source[bev](src)), func(e bev) string { return e.K })
	updates := flows.Map(flows.Count(ks).Updates(), func(kv flows.KV[string, int64]) keyCount { return keyCount{kv.Key, kv.Value} })
	flows.To(updates, flows.Sink[keyCount](counted), flows.OnCheckpoint())
	e, spent, err := startFlow(f, p, interval)
	if err != nil {
		return res, err
	}
	defer e.Stop()
	<-e.Drained()
	var applied int64
	for _, r := range e.Readers() {
		applied += r.Events.Load()
	}
	for deadline := time.Now().Add(5 * time.Minute); counted.n.Load() < applied; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			return res, fmt.Errorf("%d of %d outputs delivered after 5 minutes", counted.n.Load(), applied)
		}
	}
	res.cost = spent()
	res.peakRSS = peakRSSMB()
	if got := counted.n.Load(); got != applied || applied == 0 {
		return res, fmt.Errorf("%d outputs delivered for %d events", got, applied)
	}
	return res, errors.Join(e.Err())
}
