package nats

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tessera-streams/tessera/flows"
)

const benchMessages = 100_000

func benchStream(b *testing.B) (string, jetstream.JetStream) {
	url, js := embedded(b)
	createStream(b, js, jetstream.StreamConfig{Name: "BENCH", Subjects: []string{"bench"}})
	for i := range benchMessages {
		if _, err := js.PublishAsync("bench", fmt.Appendf(nil, `{"text":"w%d w%d"}`, i%1000, i%77)); err != nil {
			b.Fatal(err)
		}
		if i%1000 == 999 { // at most 4000 may wait for their acks
			<-js.PublishAsyncComplete()
		}
	}
	<-js.PublishAsyncComplete()
	return url, js
}

func rawString(m jetstream.Msg) (string, error) { return string(m.Data()), nil }

// The source's reader, polled 1024 events at a time (after an empty poll,
// 10µs; the engine waits IdleDelay), against a plain ordered consumer
// iterating with Messages doing the same per-message work.
func BenchmarkSourceRead(b *testing.B) {
	url, _ := benchStream(b)
	s, err := New(context.Background(), Config[string]{URL: url, Stream: "BENCH", Decode: rawString})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	var batch flows.ReadBatch[string]
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		pr, err := s.Open(0, 0)
		if err != nil {
			b.Fatal(err)
		}
		for batch.End <= benchMessages {
			batch.Reset()
			if err := pr.Read(ctx, &batch, 1024); err != nil {
				b.Fatal(err)
			}
			if len(batch.Events) == 0 {
				time.Sleep(10 * time.Microsecond)
			}
		}
		batch.End = 0
		pr.Close()
	}
	b.ReportMetric(float64(b.N*benchMessages)/time.Since(start).Seconds(), "records/s")
}

func BenchmarkPlainOrderedConsumer(b *testing.B) {
	_, js := benchStream(b)
	ctx := context.Background()
	st, err := js.Stream(ctx, "BENCH")
	if err != nil {
		b.Fatal(err)
	}
	events := make([]string, 0, benchMessages)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
		if err != nil {
			b.Fatal(err)
		}
		it, err := cons.Messages()
		if err != nil {
			b.Fatal(err)
		}
		events = events[:0]
		for len(events) < benchMessages {
			m, err := it.Next()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := m.Metadata(); err != nil {
				b.Fatal(err)
			}
			events = append(events, string(m.Data()))
		}
		it.Stop()
	}
	b.ReportMetric(float64(b.N*benchMessages)/time.Since(start).Seconds(), "records/s")
}
