package nats

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tessera-streams/tessera/flows"
)

type line struct {
	Text string `json:"text"`
}

// embedded starts a NATS server with JetStream on 127.0.0.1, storing in a
// temporary directory, and returns its URL and a JetStream context.
func embedded(t testing.TB) (string, jetstream.JetStream) {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready in 10s")
	}
	nc, err := natsgo.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return ns.ClientURL(), js
}

func createStream(t testing.TB, js jetstream.JetStream, cfg jetstream.StreamConfig) jetstream.Stream {
	t.Helper()
	s, err := js.CreateStream(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// publish publishes the values to subj and returns their sequences.
func publish(t testing.TB, js jetstream.JetStream, subj string, values ...string) []int64 {
	t.Helper()
	var seqs []int64
	for _, v := range values {
		ack, err := js.Publish(context.Background(), subj, []byte(v))
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, int64(ack.Sequence))
	}
	return seqs
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
		if len(b.Events)+len(b.Bad) > max {
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

// Partitions are the subjects, in order; offsets are stream sequences,
// interleaved between subjects; a partition read in part and opened again
// at the offset reached yields every message exactly once, and malformed
// messages go to Bad with their sequences.
func TestReadAndReopenExactlyOnce(t *testing.T) {
	url, js := embedded(t)
	createStream(t, js, jetstream.StreamConfig{Name: "EV", Subjects: []string{"ev.a", "ev.b.*"}})
	seqs := map[int]map[int64]string{0: {}, 1: {}}
	va, vb := values(0, 100), values(1, 100)
	for i := range 100 { // interleaved: sequences of one subject have gaps
		seqs[0][publish(t, js, "ev.a", va[i])[0]] = va[i]
		seqs[1][publish(t, js, fmt.Sprintf("ev.b.%d", i%3), vb[i])[0]] = vb[i]
	}
	s := newSource(t, Config[line]{URL: url, Stream: "EV"})
	if s.Partitions() != 2 || s.Subject(0) != "ev.a" || s.Subject(1) != "ev.b.*" {
		t.Fatalf("partitions %d: %q, %q", s.Partitions(), s.Subject(0), s.Subject(1))
	}
	for p := range 2 {
		var g got
		pr, err := s.Open(p, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := readUntil(pr, 7, &g, func(g *got) bool { return len(g.offs)+len(g.bad) >= 40 }); err != nil {
			t.Fatal(err)
		}
		pr.Close()
		pr, err = s.Open(p, g.end)
		if err != nil {
			t.Fatal(err)
		}
		if err := readUntil(pr, 7, &g, func(g *got) bool { return len(g.offs)+len(g.bad) >= 100 }); err != nil {
			t.Fatal(err)
		}
		pr.Close()
		seen := map[int64]bool{}
		for i, off := range g.offs {
			if seen[off] || seqs[p][off] != fmt.Sprintf(`{"text":"%s"}`, g.texts[i]) {
				t.Fatalf("partition %d: event %q at sequence %d (seen before: %v)", p, g.texts[i], off, seen[off])
			}
			seen[off] = true
		}
		for _, b := range g.bad {
			if seen[b.Offset] || string(b.Raw) != seqs[p][b.Offset] || !strings.HasPrefix(b.Where, "ev.") || b.Err == nil {
				t.Fatalf("partition %d: bad record %+v", p, b)
			}
			seen[b.Offset] = true
		}
		var last int64
		for off := range seqs[p] {
			last = max(last, off)
		}
		if len(seen) != 100 || len(g.bad) != 6 || g.end != last+1 {
			t.Fatalf("partition %d: %d sequences (%d bad), end %d; want 100 (6 bad), end %d", p, len(seen), len(g.bad), g.end, last+1)
		}
	}
}

// A bounded source ends after the last message each subject had at New.
func TestBounded(t *testing.T) {
	url, js := embedded(t)
	createStream(t, js, jetstream.StreamConfig{Name: "EV", Subjects: []string{"a", "b", "c"}})
	publish(t, js, "a", `{"text":"1"}`, `{"text":"2"}`)
	last := publish(t, js, "b", `{"text":"3"}`)[0]
	s := newSource(t, Config[line]{URL: url, Stream: "EV", Bounded: true})
	publish(t, js, "b", `{"text":"after New"}`)
	if s.End(0) != 3 || s.End(1) != last+1 || s.End(2) != 0 {
		t.Fatalf("ends %d, %d, %d", s.End(0), s.End(1), s.End(2))
	}
	var texts []string
	for p := range 3 {
		pr, err := s.Open(p, 0)
		if err != nil {
			t.Fatal(err)
		}
		var g got
		if err := readUntil(pr, 10, &g, func(*got) bool { return false }); !errors.Is(err, io.EOF) || g.end != s.End(p) {
			t.Fatalf("partition %d: %v at %d, want io.EOF at %d", p, err, g.end, s.End(p))
		}
		texts = append(texts, g.texts...)
		pr.Close()
	}
	if strings.Join(texts, ",") != "1,2,3" {
		t.Fatalf("read %v", texts)
	}
}

// With TrimCommitted, Commit purges the partition's messages below the
// offset, and only that partition's; Close sends the last one.
func TestCommitTrims(t *testing.T) {
	url, js := embedded(t)
	st := createStream(t, js, jetstream.StreamConfig{Name: "EV", Subjects: []string{"a", "b"}})
	seqs := publish(t, js, "a", values(0, 10)...)
	publish(t, js, "b", values(1, 10)...)
	s, err := New(context.Background(), Config[line]{URL: url, Stream: "EV", TrimCommitted: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pr, err := s.Open(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	count := func(subj string) uint64 {
		info, err := st.Info(context.Background(), jetstream.WithSubjectFilter(subj))
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Subjects[subj]
	}
	if err := pr.(flows.Committer).Commit(seqs[4]); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for count("a") != 6 {
		if time.Now().After(deadline) {
			t.Fatalf("%d messages on a, want 6 after the commit", count("a"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := pr.(flows.Committer).Commit(seqs[9]); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if a, b := count("a"), count("b"); a != 1 || b != 10 {
		t.Fatalf("after Close: %d messages on a (want 1), %d on b (want 10)", a, b)
	}
}

// A stream that does not exist is an error of New; one deleted after New
// is an error of Read, soon, and so is one created again.
func TestMissingStreamIsAnError(t *testing.T) {
	url, js := embedded(t)
	if _, err := New(context.Background(), Config[line]{URL: url, Stream: "NOPE"}); err == nil || !strings.Contains(err.Error(), `stream "NOPE" does not exist`) {
		t.Fatalf("New = %v", err)
	}
	ctx := context.Background()
	for _, recreate := range []bool{false, true} {
		createStream(t, js, jetstream.StreamConfig{Name: "EV", Subjects: []string{"a"}})
		publish(t, js, "a", values(0, 10)...)
		s := newSource(t, Config[line]{URL: url, Stream: "EV", CheckInterval: 20 * time.Millisecond})
		pr, err := s.Open(0, 0)
		if err != nil {
			t.Fatal(err)
		}
		var g got
		if err := readUntil(pr, 100, &g, func(g *got) bool { return g.end >= 11 }); err != nil {
			t.Fatal(err)
		}
		if err := js.DeleteStream(ctx, "EV"); err != nil {
			t.Fatal(err)
		}
		want := "no longer exists"
		if recreate {
			time.Sleep(10 * time.Millisecond) // another creation time
			createStream(t, js, jetstream.StreamConfig{Name: "EV", Subjects: []string{"a"}})
			want = "created again"
		}
		err = readUntil(pr, 100, &got{}, func(*got) bool { return false })
		if !errors.Is(err, ErrStreamGone) || !strings.Contains(err.Error(), want) {
			t.Fatalf("recreate %v: read %v, want %q", recreate, err, want)
		}
		pr.Close() // waits for the consumer's reset in progress, about 1s
		s.Close()
		if recreate {
			js.DeleteStream(ctx, "EV")
		}
	}
}

func TestBadConfig(t *testing.T) {
	for _, c := range []Config[line]{{}, {URL: "nats://127.0.0.1:1"}, {URL: "nats://127.0.0.1:1", Stream: "S", Subjects: []string{"a.*", "a.b"}},
		{URL: "nats://127.0.0.1:1", Stream: "S", CheckInterval: -1}} {
		if _, err := New(context.Background(), c); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}

func TestSubjectsCollide(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"a", "a", true}, {"a", "b", false}, {"a.*", "a.b", true}, {"a.>", "a.b.c", true}, {"a.>", "a", false},
		{"a.*", "a.b.c", false}, {"*.b", "a.*", true}, {">", "x.y", true}, {"a.b", "a.c", false}, {"a.*.c", "a.b.d", false},
	} {
		if got := subjectsCollide(c.a, c.b); got != c.want || subjectsCollide(c.b, c.a) != c.want {
			t.Errorf("subjectsCollide(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
