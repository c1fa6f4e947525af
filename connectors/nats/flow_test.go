package nats

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/nats-io/nats.go/jetstream"

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

type corpus struct {
	r         gen.Rand
	want      map[string]int64
	words     int64
	malformed int64
}

// write publishes n lines to each of lines.0, lines.1, lines.2, some
// malformed, interleaved.
func (c *corpus) write(t *testing.T, js jetstream.JetStream, n int) {
	for i := range n {
		for p := range 3 {
			v := "{not json"
			if i%501 == 7 {
				c.malformed++
			} else {
				var ws []string
				for range c.r.Intn(6) {
					w := fmt.Sprintf("w%d", c.r.Intn(200))
					ws = append(ws, w)
					c.want[w]++
					c.words++
				}
				b, _ := json.Marshal(line{Text: strings.Join(ws, " ")})
				v = string(b)
			}
			if _, err := js.PublishAsync(fmt.Sprintf("lines.%d", p), []byte(v)); err != nil {
				t.Fatal(err)
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(10 * time.Second):
		t.Fatal("publishing took more than 10s")
	}
}

// A word count on the engine, from a JetStream stream to a view and to
// another stream, in two runs over one checkpoint store, with more messages
// published between them: every count is exact, malformed messages are
// dead letters, the second run resumes at the checkpointed sequences,
// commits trim what every checkpoint covers, and the stream written holds
// one update per word read.
func TestWordCountFlow(t *testing.T) {
	url, js := embedded(t)
	ctx := context.Background()
	lines := createStream(t, js, jetstream.StreamConfig{Name: "LINES", Subjects: []string{"lines.*"}})
	createStream(t, js, jetstream.StreamConfig{Name: "COUNTS", Subjects: []string{"counts"}})
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := recovery.Open("checkpoints", vfs.NewMem(), logger)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	sink, err := NewSink(ctx, SinkConfig[count]{URL: url, Subject: "counts"})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	c := &corpus{want: map[string]int64{}}
	var dead atomic.Int64
	for run := range 2 {
		c.write(t, js, 1000)
		src := newSource(t, Config[line]{URL: url, Stream: "LINES", Subjects: []string{"lines.0", "lines.1", "lines.2"},
			Bounded: true, TrimCommitted: true})
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
		for _, r := range e.Readers() {
			if n := r.Events.Load(); n != 1000-2 {
				t.Fatalf("run %d: partition %d read %d events, want the %d good messages published for this run", run+1, r.Partition, n, 1000-2)
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
		// Once every checkpoint covers everything, the commits have
		// trimmed it all.
		if err := e.Checkpoint(ctx); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			info, err := lines.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if info.State.Msgs == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("run %d: %d messages left in LINES after the commits", run+1, info.State.Msgs)
			}
			time.Sleep(20 * time.Millisecond)
		}
		e.Stop()
		src.Close()
	}

	msgs := readStream(t, js, "COUNTS")
	ids := map[string]bool{}
	last := map[string]int64{}
	for _, m := range msgs {
		ids[m.Headers().Get(jetstream.MsgIDHeader)] = true
		var kv count
		if err := json.Unmarshal(m.Data(), &kv); err != nil {
			t.Fatal(err)
		}
		last[kv.Key] = max(last[kv.Key], kv.Value)
	}
	if int64(len(msgs)) != c.words || int64(len(ids)) != c.words {
		t.Fatalf("%d messages with %d ids, want %d", len(msgs), len(ids), c.words)
	}
	for w, n := range c.want {
		if last[w] != n {
			t.Fatalf("%s: last update %d, want %d", w, last[w], n)
		}
	}
}
