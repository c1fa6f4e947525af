package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tessera-streams/tessera/connectors/kafka"
	"github.com/tessera-streams/tessera/connectors/nats"
)

// The kafka-ingest and nats-ingest rows: the http-ingest clients (the
// same bodies, ingestClients at a time) push into kafka.Ingest and
// nats.Ingest, the stores a cluster pushes into, served by net/http on
// loopback; the figure is events acknowledged durable per second (by a
// committed Kafka transaction; by JetStream's acknowledgement of every
// event). No flow reads them: the rows measure the ingest path. The
// baseline is a plain net/http handler that checks every line is JSON
// (as plainIngest) and produces the request's lines with a plain client
// (franz-go's idempotent producer, acks=all; JetStream PublishMsgAsync,
// waiting for every acknowledgement), one partition a request,
// round-robin. Both brokers run in this process (kfake in memory;
// nats-server storing files), on the same two cores as the clients.
//
// What the engine's side adds: Kafka, a transaction per group of
// requests and a ledger record (idempotency across nodes, see the kafka
// package doc); JetStream, a message id per event (the stream's duplicate
// window). The goal leaves it half the baseline's rate.

// ingestBodies is the http-ingest requests for the first n events (JSON
// lines of bev, ingestBatch a request) and each key's count.
func ingestBodies(in *input, n int) ([][]byte, map[string]int64) {
	want := map[string]int64{}
	var bodies [][]byte
	for first := 0; first < n; first += ingestBatch {
		var b bytes.Buffer
		for i := first; i < min(first+ingestBatch, n); i++ {
			k := in.keys[in.idx[i]]
			want[k]++
			fmt.Fprintf(&b, "{\"K\":%q}\n", k)
		}
		bodies = append(bodies, b.Bytes())
	}
	return bodies, want
}

// brokerEvents is how many events the broker rows push: kfake keeps every
// record in memory, and both brokers share the cores with the clients.
func brokerEvents(in *input, p params) int {
	return min(kafkaEvents(p), len(in.idx))
}

// serveLoopback serves h on a loopback port until the returned stop.
func serveLoopback(h http.Handler) (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	return "http://" + ln.Addr().String() + "/v1/streams/events/events", func() {
		srv.Close()
		<-done
	}, nil
}

// pushProfiled serves h on loopback and pushes the bodies to it, with a
// CPU profile of the push when -cpuprofile is set and engine is.
func pushProfiled(h http.Handler, bodies [][]byte, engine bool) (cost, []float64, error) {
	url, stop, err := serveLoopback(h)
	if err != nil {
		return cost{}, nil, err
	}
	defer stop()
	if engine && profile != "" {
		stopProfile, err := startProfile(profile)
		if err != nil {
			return cost{}, nil, err
		}
		defer stopProfile()
	}
	return pushAll(url, bodies)
}

// checkLines reads a request body as plainIngest does: every line JSON.
func checkLines(body []byte) ([][]byte, error) {
	var lines [][]byte
	var v bev
	for line := range bytes.Lines(body) {
		line = bytes.TrimSuffix(line, []byte("\n"))
		if err := json.Unmarshal(line, &v); err != nil {
			return nil, err
		}
		lines = append(lines, line)
	}
	return lines, nil
}

// plainHandler answers a push with do(lines of the body, partition).
func plainHandler(parts int, do func(ctx context.Context, lines [][]byte, part int) error) http.Handler {
	var rr atomic.Uint64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		lines, err := checkLines(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := do(r.Context(), lines, int((rr.Add(1)-1)%uint64(parts))); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"accepted":%d}`, len(lines))
	})
}

// brokerRow describes one broker ingest row.
type brokerRow struct {
	name, versus, baseline, note string
	labels                       [2]string // the baseline's and the engine's, in the progress lines
	// push pushes the bodies through the engine's ingest or the plain
	// handler and checks that the broker holds n events.
	push func(bodies [][]byte, n int, p params, engine bool) (cost, []float64, error)
}

// run measures the row: baseline and engine interleaved, p.rounds each.
func (b brokerRow) run(in *input, p params, w io.Writer) (Result, error) {
	n := brokerEvents(in, p)
	bodies, _ := ingestBodies(in, n)
	var eng, base costs
	var lat, rss []float64
	for round := 1; round <= p.rounds; round++ {
		runtime.GC()
		c, _, err := b.push(bodies, n, p, false)
		if err != nil {
			return Result{}, fmt.Errorf("baseline: %w", err)
		}
		base = append(base, c)
		runtime.GC()
		resetPeakRSS()
		c, l, err := b.push(bodies, n, p, true)
		if err != nil {
			return Result{}, err
		}
		eng, lat, rss = append(eng, c), append(lat, l...), append(rss, peakRSSMB())
		fmt.Fprintf(w, "  round %d: %s %v, %s %v\n", round, b.labels[0], base.last(), b.labels[1], eng.last())
	}
	r := Result{Name: b.name, Events: n, Rounds: p.rounds, Versus: b.versus, Goal: atLeast("ratio", 0.5),
		Baseline: b.baseline, PeakRSSMB: medianF(rss), Note: b.note}
	r.against(eng.rate(n), eng.cpuPerEvent(n), base.rate(n), base.cpuPerEvent(n))
	r.P50Ms, r.P99Ms = percentile(lat, 0.5), percentile(lat, 0.99)
	return r, nil
}

func kafkaIngest(in *input, p params, w io.Writer) (Result, error) {
	return brokerRow{name: "kafka-ingest", versus: "http+franz-go",
		baseline: "a plain net/http handler producing each request's lines with franz-go's idempotent producer (acks=all), no transaction",
		note: fmt.Sprintf("%d clients over loopback, %d events a request, kfake in process; figure: events in committed transactions acknowledged/s; p50/p99: request acknowledgement; CPU includes the clients and the broker",
			ingestClients, ingestBatch),
		labels: [2]string{"plain net/http + franz-go", "kafka.Ingest"}, push: kafkaPush}.run(in, p, w)
}

// kafkaPush pushes the bodies into a fresh kfake topic through
// kafka.Ingest (engine) or the plain handler, and checks that the topic
// then holds n committed records.
func kafkaPush(bodies [][]byte, n int, p params, engine bool) (cost, []float64, error) {
	const topic = "events"
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(p.partitions), topic))
	if err != nil {
		return cost{}, nil, err
	}
	defer kc.Close()
	brokers := kc.ListenAddrs()
	ctx := context.Background()
	var h http.Handler
	if engine {
		logger := slog.New(slog.NewTextHandler(io.Discard, nil))
		ing, err := kafka.NewIngest(ctx, kafka.IngestConfig[bev]{Brokers: brokers, Name: "events", Topic: topic,
			TransactionalID: "bench-ingest", Logger: logger})
		if err != nil {
			return cost{}, nil, err
		}
		defer ing.Close()
		h = ing
	} else {
		cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(topic),
			kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0))
		if err != nil {
			return cost{}, nil, err
		}
		defer cl.Close()
		h = plainHandler(p.partitions, func(ctx context.Context, lines [][]byte, part int) error {
			recs := make([]*kgo.Record, len(lines))
			for i, l := range lines {
				recs[i] = &kgo.Record{Partition: int32(part), Value: l}
			}
			return cl.ProduceSync(ctx, recs...).FirstErr()
		})
	}
	c, lat, err := pushProfiled(h, bodies, engine)
	if err != nil {
		return cost{}, nil, err
	}
	got, err := committedRecords(brokers, topic, n)
	if err == nil && got != n {
		err = fmt.Errorf("the topic holds %d committed records, %d were acknowledged", got, n)
	}
	return c, lat, err
}

// committedRecords counts the records of topic, read committed, until it
// has read n or a minute passed.
func committedRecords(brokers []string, topic string, n int) (int, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got := 0
	for got < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return got, nil
		}
		if err := fs.Err0(); err != nil {
			return got, err
		}
		got += fs.NumRecords()
	}
	return got, nil
}

func natsIngest(in *input, p params, w io.Writer) (Result, error) {
	return brokerRow{name: "nats-ingest", versus: "http+jetstream",
		baseline: "a plain net/http handler publishing each request's lines to JetStream (PublishMsgAsync, every acknowledgement awaited), no message ids",
		note: fmt.Sprintf("%d clients over loopback, %d events a request, nats-server in process (file store); figure: events acknowledged by JetStream/s; p50/p99: request acknowledgement; CPU includes the clients and the server",
			ingestClients, ingestBatch),
		labels: [2]string{"plain net/http + JetStream", "nats.Ingest"}, push: natsPush}.run(in, p, w)
}

// natsPush pushes the bodies into a fresh JetStream stream through
// nats.Ingest (engine) or the plain handler, and checks that the stream
// then holds n messages.
func natsPush(bodies [][]byte, n int, p params, engine bool) (cost, []float64, error) {
	dir, err := os.MkdirTemp("", "tessera-bench-nats")
	if err != nil {
		return cost{}, nil, err
	}
	defer os.RemoveAll(dir)
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		return cost{}, nil, err
	}
	ns.Start()
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}()
	if !ns.ReadyForConnections(10 * time.Second) {
		return cost{}, nil, errors.New("nats-server not ready in 10s")
	}
	nc, err := natsgo.Connect(ns.ClientURL())
	if err != nil {
		return cost{}, nil, err
	}
	defer nc.Close()
	// 8 clients × 500 events outstanding: over jetstream's default bound
	// (4000), at which PublishMsgAsync stalls.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1<<14))
	if err != nil {
		return cost{}, nil, err
	}
	ctx := context.Background()
	subjects := make([]string, p.partitions)
	for i := range subjects {
		subjects[i] = "events." + strconv.Itoa(i)
	}
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: subjects})
	if err != nil {
		return cost{}, nil, err
	}
	var h http.Handler
	if engine {
		ing, err := nats.NewIngest(ctx, nats.IngestConfig[bev]{URL: ns.ClientURL(), Name: "events", Stream: "EVENTS", Subjects: subjects})
		if err != nil {
			return cost{}, nil, err
		}
		defer ing.Close()
		h = ing
	} else {
		h = plainHandler(p.partitions, func(ctx context.Context, lines [][]byte, part int) error {
			futs := make([]jetstream.PubAckFuture, len(lines))
			for i, l := range lines {
				f, err := js.PublishMsgAsync(&natsgo.Msg{Subject: subjects[part], Data: l})
				if err != nil {
					return err
				}
				futs[i] = f
			}
			for _, f := range futs {
				select {
				case <-f.Ok():
				case err := <-f.Err():
					return err
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		})
	}
	c, lat, err := pushProfiled(h, bodies, engine)
	if err != nil {
		return cost{}, nil, err
	}
	info, err := st.Info(ctx)
	if err == nil && info.State.Msgs != uint64(n) {
		err = fmt.Errorf("the stream holds %d messages, %d were acknowledged", info.State.Msgs, n)
	}
	return c, lat, err
}
