package kafka

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tessera-streams/tessera/flows"
)

// readTopic reads every record of topic up to its end offsets, committed
// or not.
func readTopic(t testing.TB, brokers []string, topic string) []*kgo.Record {
	t.Helper()
	return readRecords(t, brokers, topic, false)
}

func outputs(n int, tag string) []flows.Output[line] {
	out := make([]flows.Output[line], n)
	for i := range out {
		out[i] = flows.Output[line]{ID: flows.OutputID{Fragment: i % 4, Partition: i % 3, Offset: int64(i), Index: i % 2},
			Value: line{Text: fmt.Sprintf("%s-%d", tag, i)}}
	}
	return out
}

// Written twice (a replay), the outputs are in the topic twice with equal
// keys; compacted, the topic holds each once.
func TestSinkKeysByOutputID(t *testing.T) {
	c, brokers := cluster(t, nil)
	ctx := context.Background()
	compact := map[string]*string{"cleanup.policy": kmsg.StringPtr("compact")}
	if _, err := admin(t, brokers).CreateTopic(ctx, 1, 1, compact, "out"); err != nil {
		t.Fatal(err)
	}
	s, err := NewSink(ctx, SinkConfig[line]{Brokers: brokers, Topic: "out"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Write(outputs(100, "first")); err != nil {
		t.Fatal(err)
	}
	// Acknowledged means readable: no wait.
	if recs := readTopic(t, brokers, "out"); len(recs) != 100 {
		t.Fatalf("%d records after the first write", len(recs))
	}
	if err := s.Write(outputs(100, "again")); err != nil {
		t.Fatal(err)
	}
	if recs := readTopic(t, brokers, "out"); len(recs) != 200 {
		t.Fatalf("%d records after the replay, want 200 (at-least-once)", len(recs))
	}
	// Compaction never cleans the active segment (in kfake, the last
	// batch): one more output closes the replay's.
	last := flows.Output[line]{ID: flows.OutputID{Fragment: 9, Offset: 1000}, Value: line{Text: "last"}}
	if err := s.Write([]flows.Output[line]{last}); err != nil {
		t.Fatal(err)
	}
	c.Compact()
	recs := readTopic(t, brokers, "out")
	byKey := map[string]string{}
	for _, r := range recs {
		if _, dup := byKey[string(r.Key)]; dup {
			t.Fatalf("key %s twice after compaction", r.Key)
		}
		byKey[string(r.Key)] = string(r.Value)
	}
	for _, o := range outputs(100, "again") {
		v, _ := json.Marshal(o.Value)
		if byKey[outputKey(o.ID)] != string(v) {
			t.Fatalf("%s = %q, want %s", outputKey(o.ID), byKey[outputKey(o.ID)], v)
		}
	}
	if len(byKey) != 101 {
		t.Fatalf("%d keys after compaction, want 100 and the last", len(byKey))
	}
	s.Close()
	if err := s.Write(outputs(1, "closed")); err == nil {
		t.Fatal("write after Close: no error")
	}
}

func TestSinkMissingTopic(t *testing.T) {
	_, brokers := cluster(t, nil)
	_, err := NewSink(context.Background(), SinkConfig[line]{Brokers: brokers, Topic: "nope"})
	if err == nil || !strings.Contains(err.Error(), `topic "nope" does not exist`) {
		t.Fatalf("NewSink = %v", err)
	}
}

func TestSinkEncodeError(t *testing.T) {
	_, brokers := cluster(t, map[string]int32{"out": 1})
	s, err := NewSink(context.Background(), SinkConfig[line]{Brokers: brokers, Topic: "out",
		Encode: func(l line) ([]byte, error) { return nil, fmt.Errorf("cannot encode %q", l.Text) }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Write(outputs(1, "x")); err == nil || !strings.Contains(err.Error(), `cannot encode "x-0"`) {
		t.Fatalf("Write = %v", err)
	}
}
