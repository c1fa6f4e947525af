package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/tessera-streams/tessera/actor"
	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/splice"
)

type count = flows.KV[string, int64]

func wordFlow(src flows.Source[line], sink flows.Sink[count]) *flowcore.Plan {
	f := flows.New("wordcount", flows.WithFragments(8))
	ws := flows.FlatMap(flows.From(f, "lines", src), func(l line, emit func(string)) {
		for _, w := range strings.Fields(l.Text) {
			emit(w)
		}
	})
	counts := flows.Count(flows.KeyBy(ws, flows.Identity[string])).View("words")
	flows.To(counts.Updates(), sink)
	plan, err := flowcore.Compile(f)
	if err != nil {
		panic(err)
	}
	return plan
}

// corpus writes n lines to each partition of "lines" (some malformed) and
// adds what it wrote to want.
type corpus struct {
	r         gen.Rand
	want      map[string]int64
	words     int64
	malformed int64
	ends      map[int32]int64
}

func (c *corpus) write(t *testing.T, brokers []string, n int) {
	for p := range int32(3) {
		var vs []string
		for i := range n {
			if i%501 == 7 {
				vs = append(vs, "{not json")
				c.malformed++
				continue
			}
			var ws []string
			for range c.r.Intn(6) {
				w := fmt.Sprintf("w%d", c.r.Intn(200))
				ws = append(ws, w)
				c.want[w]++
				c.words++
			}
			b, _ := json.Marshal(line{Text: strings.Join(ws, " ")})
			vs = append(vs, string(b))
		}
		produce(t, brokers, "lines", p, vs...)
		c.ends[p] += int64(len(vs))
	}
}

// A word count on the engine, from a Kafka topic to a view and to another
// topic, in two runs over one checkpoint store, with more records written
// between them: every count is exact, malformed records are dead letters,
// the second run resumes at the checkpointed Kafka offsets, the group's
// committed offsets reach the end (lag 0), and the topic written holds one
// update per word read.
func TestWordCountFlow(t *testing.T) {
	_, brokers := cluster(t, map[string]int32{"lines": 3, "counts": 2})
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := recovery.Open("checkpoints", vfs.NewMem(), logger)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	sink, err := NewSink(ctx, SinkConfig[count]{Brokers: brokers, Topic: "counts"})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	c := &corpus{want: map[string]int64{}, ends: map[int32]int64{}}
	var dead atomic.Int64
	for run := range 2 {
		c.write(t, brokers, 1000)
		src := newSource(t, Config[line]{Brokers: brokers, Topics: []string{"lines"}, Group: "wordcount", Bounded: true})
		e, err := actor.Start(wordFlow(src, sink), actor.Config{Logger: logger, Store: store, CheckpointInterval: 50 * time.Millisecond,
			OnDeadLetters: func(dls []flows.DeadLetter) { dead.Add(int64(len(dls))) }})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-e.Drained():
		case <-e.Failed():
			t.Fatal(e.Err())
		case <-time.After(30 * time.Second):
			t.Fatal("not drained in 30s")
		}
		// Each run reads only its own records: the second resumes at the
		// offsets the first checkpointed.
		for _, r := range e.Readers() {
			if n := r.Events.Load(); n != 1000-2 {
				t.Fatalf("run %d: partition %d read %d events, want the %d good records written for this run", run+1, r.Partition, n, 1000-2)
			}
		}
		all, err := splice.Evaluate(ctx, e, splice.Request{View: "words", Op: splice.OpEntries, Query: splice.Query{Limit: 1000}})
		if err != nil {
			t.Fatal(err)
		}
		if len(all.Entries) != len(c.want) {
			t.Fatalf("run %d: %d words, want %d", run+1, len(all.Entries), len(c.want))
		}
		for _, en := range all.Entries {
			if en.Value != c.want[en.Key] {
				t.Fatalf("run %d: %s = %v, want %d", run+1, en.Key, en.Value, c.want[en.Key])
			}
		}
		if dead.Load() != c.malformed {
			t.Fatalf("run %d: %d dead letters, want %d", run+1, dead.Load(), c.malformed)
		}
		// Once every checkpoint covers everything, the group is at the end.
		if err := e.Checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
		waitCommitted(t, brokers, "wordcount", c.ends)
		e.Stop()
		src.Close()
	}

	// The sink's topic: one record per word read, keyed by output id; the
	// last value of each word is its count.
	recs := readTopic(t, brokers, "counts")
	ids := map[string]bool{}
	last := map[string]int64{}
	for _, rec := range recs {
		ids[string(rec.Key)] = true
		var kv count
		if err := json.Unmarshal(rec.Value, &kv); err != nil {
			t.Fatal(err)
		}
		last[kv.Key] = max(last[kv.Key], kv.Value)
	}
	if int64(len(recs)) != c.words || int64(len(ids)) != c.words {
		t.Fatalf("%d records with %d ids, want %d", len(recs), len(ids), c.words)
	}
	for w, n := range c.want {
		if last[w] != n {
			t.Fatalf("%s: last update %d, want %d", w, last[w], n)
		}
	}
}

func waitCommitted(t *testing.T, brokers []string, group string, ends map[int32]int64) {
	t.Helper()
	adm := admin(t, brokers)
	deadline := time.Now().Add(10 * time.Second)
	for {
		offs, err := adm.FetchOffsets(context.Background(), group)
		if err != nil && !errors.Is(err, kerr.GroupIDNotFound) { // not yet committed
			t.Fatal(err)
		}
		at := 0
		for p, end := range ends {
			if o, ok := offs.Lookup("lines", p); ok && o.At == end {
				at++
			}
		}
		if at == len(ends) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("committed %v, want %v", offs, ends)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
