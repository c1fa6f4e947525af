package nats

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"pgregory.net/rapid"

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
	// A filter that matches a part of what a stream stores is taken.
	createStream(t, js, jetstream.StreamConfig{Name: "OR", Subjects: []string{"orders.eu", "orders.us"}})
	s, err := New(context.Background(), Config[line]{URL: url, Stream: "OR", Subjects: []string{"orders.*"}})
	if err != nil {
		t.Fatalf("orders.* of a stream of orders.eu and orders.us: %v", err)
	}
	s.Close()
}

// subjectsOverlap(a, b) holds exactly when some subject matches both, as
// the NATS server matches them (server.SubjectMatchesFilter), over every
// subject of up to five tokens of a small alphabet; and a filter that
// matches a part of what the stream stores is taken.
func TestSubjectsOverlapAgreesWithServer(t *testing.T) {
	tokens := []string{"a", "b"}
	var subjects []string
	var grow func(s string, n int)
	grow = func(s string, n int) {
		if n == 0 {
			return
		}
		for _, tk := range tokens {
			subj := tk
			if s != "" {
				subj = s + "." + tk
			}
			subjects = append(subjects, subj)
			grow(subj, n-1)
		}
	}
	grow("", 5)
	pattern := rapid.Custom(func(t *rapid.T) string {
		n := rapid.IntRange(1, 4).Draw(t, "tokens")
		parts := make([]string, n)
		for i := range parts {
			parts[i] = rapid.SampledFrom([]string{"a", "b", "*"}).Draw(t, "token")
		}
		if rapid.Bool().Draw(t, "tail") {
			parts[n-1] = ">"
		}
		return strings.Join(parts, ".")
	})
	rapid.Check(t, func(t *rapid.T) {
		a, b := pattern.Draw(t, "a"), pattern.Draw(t, "b")
		want := slices.ContainsFunc(subjects, func(s string) bool {
			return server.SubjectMatchesFilter(s, a) && server.SubjectMatchesFilter(s, b)
		})
		if got := subjectsOverlap(a, b); got != want {
			t.Fatalf("subjectsOverlap(%q, %q) = %v, want %v", a, b, got, want)
		}
	})
	for _, c := range [][2]string{{"orders.*", "orders.eu"}, {"a.>", "a.*"}, {"lines.a", "lines.*"}} {
		if !subjectsOverlap(c[0], c[1]) {
			t.Errorf("filter %q of a stream of %q refused", c[0], c[1])
		}
	}
}
