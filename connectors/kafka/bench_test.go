package kafka

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tessera-streams/tessera/flows"
)

const benchRecords = 200_000

// benchTopic is a one-partition topic of benchRecords small JSON records.
func benchTopic(b *testing.B) []string {
	_, brokers := cluster(b, map[string]int32{"bench": 1})
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic("bench"))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	recs := make([]*kgo.Record, 0, 10_000)
	for i := range benchRecords {
		recs = append(recs, &kgo.Record{Value: fmt.Appendf(nil, `{"text":"w%d w%d"}`, i%1000, i%77)})
		if len(recs) == cap(recs) {
			if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
				b.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	return brokers
}

func rawString(r *kgo.Record) (string, error) { return string(r.Value), nil }

// The source's reader, polled 1024 events at a time, against a plain
// franz-go consume loop doing the same per-record work. Read never waits:
// after an empty poll the caller does (here 10µs; the engine IdleDelay,
// 10ms by default, which bounds a partition to one fetch per 10ms when the
// reader keeps up with the broker).
func BenchmarkSourceRead(b *testing.B) {
	brokers := benchTopic(b)
	s, err := New(context.Background(), Config[string]{Brokers: brokers, Topics: []string{"bench"}, Decode: rawString})
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
		for batch.End < benchRecords {
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
	b.ReportMetric(float64(b.N*benchRecords)/time.Since(start).Seconds(), "records/s")
}

func BenchmarkPlainConsume(b *testing.B) {
	brokers := benchTopic(b)
	ctx := context.Background()
	events := make([]string, 0, 1024)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...),
			kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"bench": {0: kgo.NewOffset().AtStart()}}))
		if err != nil {
			b.Fatal(err)
		}
		for n := 0; n < benchRecords; {
			fs := cl.PollRecords(ctx, 1024)
			if err := fs.Err0(); err != nil {
				b.Fatal(err)
			}
			events = events[:0]
			fs.EachRecord(func(r *kgo.Record) { events = append(events, string(r.Value)) })
			n += len(events)
		}
		cl.Close()
	}
	b.ReportMetric(float64(b.N*benchRecords)/time.Since(start).Seconds(), "records/s")
}
