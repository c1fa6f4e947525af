package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/internal/exampletest"
)

// lines makes n JSON lines and the counts of their words.
func lines(n int) ([]string, map[string]int64, int64) {
	r := gen.Rand{}
	want := map[string]int64{}
	var total int64
	var out []string
	for range n {
		var ws []string
		for range 1 + r.Intn(5) {
			ws = append(ws, Vocabulary[r.Intn(100)])
		}
		text := strings.Join(ws, " ")
		Words(text, func(w string) { want[w]++; total++ })
		b, _ := json.Marshal(Line{Text: text})
		out = append(out, string(b))
	}
	return out, want, total
}

func checkWords(t *testing.T, base string, want map[string]int64) {
	t.Helper()
	got := allWords(t, base)
	if len(got) != len(want) {
		t.Fatalf("%d words, want %d", len(got), len(want))
	}
	for w, n := range want {
		if got[w] != n {
			t.Fatalf("%q = %d, want %d", w, got[w], n)
		}
	}
}

// -source kafka counts the lines of a topic's partitions, exactly.
func TestKafkaSource(t *testing.T) {
	addrs := exampletest.KafkaBroker(t, "lines:3") // stopped after the example (cleanups run last first)
	brokers := strings.Join(addrs, ",")
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic("lines"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	vs, want, total := lines(3000)
	var recs []*kgo.Record
	for _, v := range vs {
		recs = append(recs, &kgo.Record{Value: []byte(v)})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	base := exampletest.Run(t, run, "/v1/views/total", "-source", "kafka", "-brokers", brokers, "-topics", "lines", "-group", "wordcount",
		"-fragments", "16", "-http", exampletest.FreePort(t), "-progress", "0")
	waitTotal(t, base, total)
	checkWords(t, base, want)
}

// -source nats counts the messages of a JetStream stream, exactly.
func TestNATSSource(t *testing.T) {
	url, js := natsServer(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "LINES", Subjects: []string{"lines.*"}}); err != nil {
		t.Fatal(err)
	}
	vs, want, total := lines(3000)
	for i, v := range vs {
		if _, err := js.PublishAsync(fmt.Sprintf("lines.%d", i%2), []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	base := exampletest.Run(t, run, "/v1/views/total", "-source", "nats", "-nats", url, "-stream", "LINES", "-subjects", "lines.0,lines.1",
		"-fragments", "16", "-http", exampletest.FreePort(t), "-progress", "0")
	waitTotal(t, base, total)
	checkWords(t, base, want)
}
