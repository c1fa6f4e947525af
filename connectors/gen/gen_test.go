package gen

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
)

func word(_ int, _ int64, r *Rand) int { return r.Intn(1000) }

func readAll(t *testing.T, s *Source[int], p int, from int64) []int {
	t.Helper()
	pr, err := s.Open(p, from)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	var b flows.ReadBatch[int]
	for {
		b.Reset()
		err := pr.Read(context.Background(), &b, 7)
		out = append(out, b.Events...)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestDeterministicAndReplayable(t *testing.T) {
	s, err := New(Config{Partitions: 3, Seed: 7, Events: 100}, word)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for p := range 3 {
		all := readAll(t, s, p, 0)
		total += len(all)
		again := readAll(t, s, p, 0)
		tail := readAll(t, s, p, 10)
		for i := range all {
			if all[i] != again[i] || (i >= 10 && tail[i-10] != all[i]) {
				t.Fatalf("partition %d offset %d differs on replay", p, i)
			}
		}
	}
	if total != 100 {
		t.Fatalf("generated %d events, want 100", total)
	}
	other, _ := New(Config{Partitions: 3, Seed: 8, Events: 100}, word)
	if readAll(t, other, 0, 0)[0] == readAll(t, s, 0, 0)[0] && readAll(t, other, 0, 0)[1] == readAll(t, s, 0, 0)[1] {
		t.Fatal("seed does not change the events")
	}
}

func TestRate(t *testing.T) {
	now := time.Unix(0, 0)
	s, _ := New(Config{Partitions: 2, Rate: 100, Now: func() time.Time { return now }}, word)
	pr, _ := s.Open(0, 0)
	var b flows.ReadBatch[int]
	if err := pr.Read(context.Background(), &b, 1000); err != nil || len(b.Events) != 0 {
		t.Fatalf("at t=0: %d events, %v", len(b.Events), err)
	}
	now = now.Add(2 * time.Second)
	if err := pr.Read(context.Background(), &b, 1000); err != nil || len(b.Events) != 100 {
		t.Fatalf("at t=2s: %d events (want 100 for half of 100/s), %v", len(b.Events), err)
	}
}

func TestBadConfig(t *testing.T) {
	for _, c := range []Config{{Partitions: 0}, {Partitions: 1, Events: -1}, {Partitions: 1, Rate: -1}} {
		if _, err := New(c, word); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}

// A restarted process opens its partitions at the restored offsets: they go
// on at the rate from there at once, not after as long as the last run took.
// A rewind within the run catches up at full speed; an open ahead of the
// schedule starts a new one there.
func TestRateAfterRestart(t *testing.T) {
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	s, _ := New(Config{Partitions: 2, Rate: 100, Now: clock}, word)
	read := func(pr flows.PartitionReader[int]) (int, int64) {
		t.Helper()
		var b flows.ReadBatch[int]
		if err := pr.Read(context.Background(), &b, 1_000_000); err != nil {
			t.Fatal(err)
		}
		if len(b.Events) > 0 && b.Offsets[0] != b.End-int64(len(b.Events)) {
			t.Fatalf("offsets %d.. end %d", b.Offsets[0], b.End)
		}
		return len(b.Events), b.End
	}
	pr, _ := s.Open(0, 1_000_000) // restored after a long run
	if n, end := read(pr); n != 0 || end != 1_000_000 {
		t.Fatalf("at the restored offset: %d events, end %d", n, end)
	}
	now = now.Add(2 * time.Second)
	if n, end := read(pr); n != 100 || end != 1_000_100 {
		t.Fatalf("2s after the restart: %d events, end %d; want 100 (half of 100/s for 2s)", n, end)
	}
	// A rewind catches up at once, to the schedule and no further.
	back, _ := s.Open(0, 1_000_000)
	if n, end := read(back); n != 100 || end != 1_000_100 {
		t.Fatalf("rewound reader: %d events, end %d", n, end)
	}
	// Opened ahead of the schedule: a new schedule from there.
	ahead, _ := s.Open(0, 5_000_000)
	now = now.Add(time.Second)
	if n, end := read(ahead); n != 50 || end != 5_000_050 {
		t.Fatalf("reader opened ahead: %d events, end %d", n, end)
	}
	// The other partition's schedule starts at its own first open.
	other, _ := s.Open(1, 7)
	now = now.Add(time.Second)
	if n, end := read(other); n != 50 || end != 57 {
		t.Fatalf("partition 1: %d events, end %d", n, end)
	}
}
