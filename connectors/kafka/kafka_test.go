package kafka

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tessera-streams/tessera/flows"
)

type line struct {
	Text string `json:"text"`
}

// cluster starts an in-process Kafka with the topics (name → partitions).
func cluster(t testing.TB, topics map[string]int32) (*kfake.Cluster, []string) {
	t.Helper()
	opts := []kfake.Opt{kfake.NumBrokers(1)}
	for name, n := range topics {
		opts = append(opts, kfake.SeedTopics(n, name))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, c.ListenAddrs()
}

func admin(t testing.TB, brokers []string) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// produce writes the values to topic/partition, in order, and waits.
func produce(t testing.TB, brokers []string, topic string, part int32, values ...string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	recs := make([]*kgo.Record, len(values))
	for i, v := range values {
		recs[i] = &kgo.Record{Topic: topic, Partition: part, Value: []byte(v)}
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func newSource(t testing.TB, cfg Config[line]) *Source[line] {
	t.Helper()
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

type got struct {
	texts []string
	offs  []int64
	bad   []flows.BadRecord
	end   int64
}

// readUntil reads pr in batches of at most max until stop says so, EOF or
// an error (returned).
func readUntil(pr flows.PartitionReader[line], max int, g *got, stop func(g *got) bool) error {
	deadline := time.Now().Add(10 * time.Second)
	var b flows.ReadBatch[line]
	for !stop(g) {
		b.Reset()
		err := pr.Read(context.Background(), &b, max)
		for i, e := range b.Events {
			g.texts, g.offs = append(g.texts, e.Text), append(g.offs, b.Offsets[i])
		}
		g.bad, g.end = append(g.bad, b.Bad...), b.End
		if err != nil {
			return err
		}
		if len(b.Events) > max || len(b.Events)+len(b.Bad) > max {
			return fmt.Errorf("read %d events and %d bad records, max %d", len(b.Events), len(b.Bad), max)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("stuck at %d after 10s (%d events)", g.end, len(g.texts))
		}
		if len(b.Events) == 0 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	return nil
}

func values(p, n int) []string {
	var vs []string
	for i := range n {
		if i%17 == 5 {
			vs = append(vs, fmt.Sprintf("not json %d/%d", p, i))
			continue
		}
		vs = append(vs, fmt.Sprintf(`{"text":"p%d-%d"}`, p, i))
	}
	return vs
}

// Partitions are numbered topic by topic, in the configured order; a
// partition read in part, then opened again at the offset reached, yields
// every record exactly once, and malformed records go to Bad with their
// offsets.
func TestReadAndReopenExactlyOnce(t *testing.T) {
	_, brokers := cluster(t, map[string]int32{"a": 2, "b": 3})
	for p := range int32(3) {
		produce(t, brokers, "b", p, values(int(p), 100)...)
	}
	s := newSource(t, Config[line]{Brokers: brokers, Topics: []string{"b", "a"}})
	if s.Partitions() != 5 {
		t.Fatalf("%d partitions, want 5", s.Partitions())
	}
	for i, want := range []string{"b/0", "b/1", "b/2", "a/0", "a/1"} {
		if topic, p := s.TopicPartition(i); fmt.Sprintf("%s/%d", topic, p) != want {
			t.Fatalf("partition %d is %s/%d, want %s", i, topic, p, want)
		}
	}
	for p := range 3 {
		var g got
		pr, err := s.Open(p, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := readUntil(pr, 7, &g, func(g *got) bool { return g.end >= 40 }); err != nil {
			t.Fatal(err)
		}
		pr.Close()
		pr, err = s.Open(p, g.end)
		if err != nil {
			t.Fatal(err)
		}
		if err := readUntil(pr, 7, &g, func(g *got) bool { return g.end >= 100 }); err != nil {
			t.Fatal(err)
		}
		pr.Close()
		want := values(p, 100)
		seen := map[int64]bool{}
		for i, off := range g.offs {
			if seen[off] || want[off] != fmt.Sprintf(`{"text":"%s"}`, g.texts[i]) {
				t.Fatalf("partition %d: event %q at offset %d (seen before: %v)", p, g.texts[i], off, seen[off])
			}
			seen[off] = true
		}
		for _, b := range g.bad {
			if seen[b.Offset] || string(b.Raw) != want[b.Offset] || b.Where != fmt.Sprintf("b/%d", p) || b.Err == nil {
				t.Fatalf("partition %d: bad record %+v", p, b)
			}
			seen[b.Offset] = true
		}
		if len(seen) != 100 || len(g.bad) != 6 || g.end != 100 {
			t.Fatalf("partition %d: %d offsets (%d bad), end %d; want 100 (6 bad), end 100", p, len(seen), len(g.bad), g.end)
		}
	}
}

// A bounded source ends at the end offsets it saw at New, past transaction
// markers, and reads only committed transactions.
func TestBoundedReadCommitted(t *testing.T) {
	_, brokers := cluster(t, map[string]int32{"t": 1})
	produce(t, brokers, "t", 0, `{"text":"plain"}`)
	tx, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.TransactionalID("tx"), kgo.DefaultProduceTopic("t"))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	ctx := context.Background()
	for _, commit := range []kgo.TransactionEndTry{kgo.TryCommit, kgo.TryAbort, kgo.TryCommit} {
		if err := tx.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		text := map[kgo.TransactionEndTry]string{kgo.TryCommit: "committed", kgo.TryAbort: "aborted"}[commit]
		if err := tx.ProduceSync(ctx, &kgo.Record{Value: []byte(`{"text":"` + text + `"}`)}, &kgo.Record{Value: []byte(`{"text":"` + text + `"}`)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := tx.EndTransaction(ctx, commit); err != nil {
			t.Fatal(err)
		}
	}
	s := newSource(t, Config[line]{Brokers: brokers, Topics: []string{"t"}, Bounded: true})
	// 1 plain record, then 3 transactions of 2 records and a marker each.
	if s.End(0) != 10 {
		t.Fatalf("end offset %d, want 10", s.End(0))
	}
	pr, err := s.Open(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	var g got
	if err := readUntil(pr, 100, &g, func(*got) bool { return false }); !errors.Is(err, io.EOF) {
		t.Fatalf("read: %v, want io.EOF", err)
	}
	if strings.Join(g.texts, ",") != "plain,committed,committed,committed,committed" || g.end != 10 {
		t.Fatalf("read %v, end %d", g.texts, g.end)
	}
	// Opened at the end, it ends at once.
	pr2, _ := s.Open(0, 10)
	defer pr2.Close()
	var b flows.ReadBatch[line]
	if err := pr2.Read(ctx, &b, 10); !errors.Is(err, io.EOF) || b.End != 10 {
		t.Fatalf("at the end: %v, end %d", err, b.End)
	}
}

// Commit moves the group's committed offset, read back by an admin client;
// Close sends the last one.
func TestCommitMovesGroupOffset(t *testing.T) {
	_, brokers := cluster(t, map[string]int32{"t": 2})
	produce(t, brokers, "t", 1, values(1, 50)...)
	s, err := New(context.Background(), Config[line]{Brokers: brokers, Topics: []string{"t"}, Group: "tessera-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pr, _ := s.Open(1, 0)
	defer pr.Close()
	adm := admin(t, brokers)
	committed := func() int64 {
		offs, err := adm.FetchOffsets(context.Background(), "tessera-test")
		if errors.Is(err, kerr.GroupIDNotFound) {
			return -1 // nothing committed yet
		}
		if err != nil {
			t.Fatal(err)
		}
		o, ok := offs.Lookup("t", 1)
		if !ok {
			return -1
		}
		return o.At
	}
	if err := pr.(flows.Committer).Commit(42); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for committed() != 42 {
		if time.Now().After(deadline) {
			t.Fatalf("committed offset %d, want 42", committed())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := pr.(flows.Committer).Commit(50); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if c := committed(); c != 50 {
		t.Fatalf("after Close: committed %d, want 50", c)
	}
	if err := pr.(flows.Committer).Commit(51); err == nil {
		t.Fatal("commit after Close: no error")
	}
	// What lag tools compute: the end offset less the committed one.
	ends, err := adm.ListEndOffsets(context.Background(), "t")
	if err != nil {
		t.Fatal(err)
	}
	if end, _ := ends.Lookup("t", 1); end.Offset-committed() != 0 {
		t.Fatalf("lag of t/1: end %d, committed %d", end.Offset, committed())
	}
}

// A topic that does not exist is an error of New; one deleted after New is
// an error of Read, soon.
func TestMissingTopicIsAnError(t *testing.T) {
	_, brokers := cluster(t, map[string]int32{"t": 1, "u": 1})
	_, err := New(context.Background(), Config[line]{Brokers: brokers, Topics: []string{"t", "nope"}})
	if err == nil || !strings.Contains(err.Error(), `topic "nope" does not exist`) {
		t.Fatalf("New = %v", err)
	}
	produce(t, brokers, "t", 0, values(0, 10)...)
	s := newSource(t, Config[line]{Brokers: brokers, Topics: []string{"t", "u"}, CheckInterval: 20 * time.Millisecond})
	reading, _ := s.Open(0, 0)
	defer reading.Close()
	var g got
	if err := readUntil(reading, 100, &g, func(g *got) bool { return g.end >= 10 }); err != nil {
		t.Fatal(err)
	}
	adm := admin(t, brokers)
	if _, err := adm.DeleteTopics(context.Background(), "t", "u"); err != nil {
		t.Fatal(err)
	}
	opened, _ := s.Open(1, 0) // after the deletion
	defer opened.Close()
	for name, pr := range map[string]flows.PartitionReader[line]{"reading": reading, "opened": opened} {
		err := readUntil(pr, 100, &got{}, func(*got) bool { return false })
		if !errors.Is(err, ErrTopicGone) || !strings.Contains(err.Error(), "no longer exists") {
			t.Fatalf("%s reader: %v, want ErrTopicGone", name, err)
		}
	}
}

// A topic deleted and created again under the same name is not the topic
// the checkpoints' offsets are of.
func TestRecreatedTopicIsAnError(t *testing.T) {
	_, brokers := cluster(t, map[string]int32{"t": 1})
	s := newSource(t, Config[line]{Brokers: brokers, Topics: []string{"t"}, CheckInterval: 20 * time.Millisecond})
	adm := admin(t, brokers)
	ctx := context.Background()
	if _, err := adm.DeleteTopics(ctx, "t"); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, "t"); err != nil {
		t.Fatal(err)
	}
	pr, _ := s.Open(0, 0)
	defer pr.Close()
	err := readUntil(pr, 100, &got{}, func(*got) bool { return false })
	if !errors.Is(err, ErrTopicGone) || !strings.Contains(err.Error(), "created again") {
		t.Fatalf("read: %v", err)
	}
}

// Opening at an offset Kafka no longer has (retention trimmed it) is an
// error, not a silent jump to the log start.
func TestTrimmedOffsetIsAnError(t *testing.T) {
	_, brokers := cluster(t, map[string]int32{"t": 1})
	produce(t, brokers, "t", 0, values(0, 20)...)
	var trim kadm.Offsets
	trim.AddOffset("t", 0, 15, -1)
	resp, err := admin(t, brokers).DeleteRecords(context.Background(), trim)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	s := newSource(t, Config[line]{Brokers: brokers, Topics: []string{"t"}})
	pr, _ := s.Open(0, 5)
	defer pr.Close()
	err = readUntil(pr, 100, &got{}, func(*got) bool { return false })
	if err == nil || !strings.Contains(err.Error(), "offset 5 is no longer in the log") {
		t.Fatalf("read at a trimmed offset: %v", err)
	}
	// From the beginning (0) is the log start, wherever it is now.
	pr0, _ := s.Open(0, 0)
	defer pr0.Close()
	var g got
	if err := readUntil(pr0, 100, &g, func(g *got) bool { return g.end >= 20 }); err != nil {
		t.Fatal(err)
	}
	if g.offs[0] != 15 {
		t.Fatalf("from the beginning: first offset %d, want 15", g.offs[0])
	}
}

func TestBadConfig(t *testing.T) {
	for _, c := range []Config[line]{{}, {Brokers: []string{"127.0.0.1:1"}}, {Brokers: []string{"127.0.0.1:1"}, Topics: []string{"a", "a"}},
		{Brokers: []string{"127.0.0.1:1"}, Topics: []string{"a"}, CheckInterval: -1}} {
		if _, err := New(context.Background(), c); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}

func TestOutputKeyFollowsTheID(t *testing.T) {
	id := flows.OutputID{Fragment: 3, Source: 0, Partition: 1, Offset: 42, Index: 2}
	if k := outputKey(id); k != "3/e/0/1/42/0/2" {
		t.Fatalf("key %q", k)
	}
	other := id
	other.Index = 3
	if outputKey(other) == outputKey(id) {
		t.Fatal("two ids, one key")
	}
}
