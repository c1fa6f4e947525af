package nats

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tessera-streams/tessera/flows"
)

// readStream reads every message of a stream, in order.
func readStream(t testing.TB, js jetstream.JetStream, name string) []jetstream.Msg {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for uint64(len(msgs)) < info.State.Msgs {
		b, err := cons.Fetch(int(info.State.Msgs)-len(msgs), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range b.Messages() {
			msgs = append(msgs, m)
		}
		if err := b.Error(); err != nil {
			t.Fatal(err)
		}
	}
	return msgs
}

func outputs(n int, tag string) []flows.Output[line] {
	out := make([]flows.Output[line], n)
	for i := range out {
		out[i] = flows.Output[line]{ID: flows.OutputID{Fragment: i % 4, Partition: i % 3, Offset: int64(i), Index: i % 2},
			Value: line{Text: fmt.Sprintf("%s-%d", tag, i)}}
	}
	return out
}

// Outputs written twice (a replay within the duplicate window) are stored
// once, with their ids as Nats-Msg-Id.
func TestSinkStoresReplaysOnce(t *testing.T) {
	url, js := embedded(t)
	createStream(t, js, jetstream.StreamConfig{Name: "OUT", Subjects: []string{"out"}})
	s, err := NewSink(context.Background(), SinkConfig[line]{URL: url, Subject: "out"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Stream() != "OUT" {
		t.Fatalf("stream %q", s.Stream())
	}
	first := outputs(2500, "first") // more than a publishing chunk
	if err := s.Write(first); err != nil {
		t.Fatal(err)
	}
	if msgs := readStream(t, js, "OUT"); len(msgs) != 2500 {
		t.Fatalf("%d messages after the first write", len(msgs))
	}
	if err := s.Write(outputs(2500, "again")); err != nil {
		t.Fatal(err)
	}
	msgs := readStream(t, js, "OUT")
	if len(msgs) != 2500 {
		t.Fatalf("%d messages after the replay, want 2500", len(msgs))
	}
	for i, m := range msgs {
		want, _ := json.Marshal(first[i].Value)
		if id := m.Headers().Get(jetstream.MsgIDHeader); id != outputKey(first[i].ID) || string(m.Data()) != string(want) {
			t.Fatalf("message %d: id %q, data %s; want %q, %s", i, id, m.Data(), outputKey(first[i].ID), want)
		}
	}
	s.Close()
	if err := s.Write(outputs(1, "closed")); err == nil {
		t.Fatal("write after Close: no error")
	}
}

func TestSinkWithoutStream(t *testing.T) {
	url, _ := embedded(t)
	_, err := NewSink(context.Background(), SinkConfig[line]{URL: url, Subject: "nowhere"})
	if err == nil || !strings.Contains(err.Error(), `no stream captures subject "nowhere"`) {
		t.Fatalf("NewSink = %v", err)
	}
}

// A stream deleted under a sink makes Write fail, at once.
func TestSinkStreamDeleted(t *testing.T) {
	url, js := embedded(t)
	createStream(t, js, jetstream.StreamConfig{Name: "OUT", Subjects: []string{"out"}})
	s, err := NewSink(context.Background(), SinkConfig[line]{URL: url, Subject: "out"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := js.DeleteStream(context.Background(), "OUT"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := s.Write(outputs(3, "x")); err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("Write = %v after %v", err, time.Since(start))
	}
}
