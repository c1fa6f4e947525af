package nats

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tessera-streams/tessera/flows"
)

// A subject filter that the stream does not store (a typo: "line.a" for
// a stream of "lines.*") is bad configuration: New must refuse it, as it
// refuses a missing stream, rather than give a partition that never holds
// a message. With Bounded, such a partition ends at once (io.EOF at 0)
// and a batch run "drains" having read nothing of it, silently.
func TestSubjectOutsideStreamIsRefused(t *testing.T) {
	url, js := embedded(t)
	createStream(t, js, jetstream.StreamConfig{Name: "EV", Subjects: []string{"lines.*"}})
	publish(t, js, "lines.a", `{"text":"1"}`, `{"text":"2"}`)
	for _, bounded := range []bool{false, true} {
		s, err := New(context.Background(), Config[line]{URL: url, Stream: "EV", Subjects: []string{"lines.a", "line.b"}, Bounded: bounded})
		if err != nil {
			continue // refused before anything starts: right
		}
		defer s.Close()
		pr, err := s.Open(1, 0)
		if err != nil {
			t.Errorf("bounded=%v: New took subject %q, which stream EV (lines.*) does not store; Open refused it only later: %v", bounded, "line.b", err)
			continue
		}
		var b flows.ReadBatch[line]
		rerr := pr.Read(context.Background(), &b, 10)
		pr.Close()
		t.Errorf("bounded=%v: New and Open took subject %q, which stream EV (lines.*) does not store; Read = %v (io.EOF: %v)",
			bounded, "line.b", rerr, errors.Is(rerr, io.EOF))
	}
}
