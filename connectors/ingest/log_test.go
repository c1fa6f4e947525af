package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/tessera-streams/tessera/flows"
)

type event struct {
	Text string `json:"text"`
	N    int    `json:"n"`
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// clock is a settable clock for retention.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }
func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func openLog(t *testing.T, fs vfs.FS, opts Options) *Log {
	t.Helper()
	opts.FS, opts.Logger = fs, quiet()
	l, err := Open("log", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func newStream(t *testing.T, l *Log, cfg Config[event]) *Stream[event] {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "events"
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = 3
	}
	s, err := NewStream(l, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func line(n int) []byte { return fmt.Appendf(nil, `{"text":"e%d","n":%d}`, n, n) }

// readAll reads partition p from offset from to its end.
func readAll(t *testing.T, s *Stream[event], p int, from int64) ([]event, []int64) {
	t.Helper()
	r, err := s.Open(p, from)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var evs []event
	var offs []int64
	for {
		var b flows.ReadBatch[event]
		if err := r.Read(context.Background(), &b, 7); err != nil {
			t.Fatal(err)
		}
		if len(b.Bad) > 0 {
			t.Fatalf("bad records %v", b.Bad)
		}
		evs = append(evs, b.Events...)
		offs = append(offs, b.Offsets...)
		if len(b.Events) == 0 {
			if b.End != s.End(p) {
				t.Fatalf("read stopped at %d, end %d", b.End, s.End(p))
			}
			return evs, offs
		}
	}
}

// Appends are read back in order from any offset, with dense offsets, and
// a key places every event of a key in one partition.
func TestAppendAndReplay(t *testing.T) {
	l := openLog(t, vfs.NewMem(), Options{})
	s := newStream(t, l, Config[event]{Key: func(e event) string { return fmt.Sprint(e.N % 5) }})
	ctx := context.Background()
	next := 0
	for range 20 {
		var evs [][]byte
		for range 1 + rand.IntN(10) {
			evs = append(evs, line(next))
			next++
		}
		res, err := s.Append(ctx, "", evs...)
		if err != nil {
			t.Fatal(err)
		}
		if res.Accepted != len(evs) {
			t.Fatalf("accepted %d of %d", res.Accepted, len(evs))
		}
	}
	seen := 0
	keyPart := map[int]int{}
	for p := range s.Partitions() {
		evs, offs := readAll(t, s, p, 0)
		last := -1
		for i, e := range evs {
			if offs[i] != int64(i) {
				t.Fatalf("partition %d: offset %d at %d", p, offs[i], i)
			}
			if e.N <= last {
				t.Fatalf("partition %d: %d after %d", p, e.N, last)
			}
			last = e.N
			if q, ok := keyPart[e.N%5]; ok && q != p {
				t.Fatalf("key %d in partitions %d and %d", e.N%5, q, p)
			}
			keyPart[e.N%5] = p
		}
		seen += len(evs)
		if len(evs) > 2 {
			tail, _ := readAll(t, s, p, 2)
			if len(tail) != len(evs)-2 || tail[0] != evs[2] {
				t.Fatalf("replay from 2: %v, want %v", tail, evs[2:])
			}
		}
	}
	if seen != next {
		t.Fatalf("read %d events, appended %d", seen, next)
	}
}

// Without a key each request goes whole to the next partition.
func TestRoundRobin(t *testing.T) {
	l := openLog(t, vfs.NewMem(), Options{})
	s := newStream(t, l, Config[event]{})
	for i := range 6 {
		res, err := s.Append(context.Background(), "", line(2*i), line(2*i+1))
		if err != nil {
			t.Fatal(err)
		}
		want := Appended{Partition: i % 3, From: int64(i / 3 * 2), To: int64(i/3*2 + 2)}
		if len(res.Partitions) != 1 || res.Partitions[0] != want {
			t.Fatalf("append %d: %+v, want %+v", i, res.Partitions, want)
		}
	}
}

// An append acknowledged before a crash is in the log after it, whole,
// whatever part of the unsynced data the crash keeps; the log then goes on
// after what it holds.
func TestAcknowledgedAppendSurvivesCrash(t *testing.T) {
	fs := vfs.NewCrashableMem()
	l := openLog(t, fs, Options{})
	s := newStream(t, l, Config[event]{})
	rng := rand.New(rand.NewPCG(3, 4))
	var mu sync.Mutex
	acked := map[int][]Appended{} // by request number
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var n atomic.Int64
	for c := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := int(n.Add(1))
				res, err := s.Append(context.Background(), fmt.Sprintf("c%d-%d", c, i), line(i), line(-i))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked[i] = res.Partitions
				mu.Unlock()
			}
		}()
	}
	for round := range 5 {
		for n.Load() < int64(200*(round+1)) {
			time.Sleep(time.Millisecond)
		}
		mu.Lock()
		before := map[int][]Appended{}
		for k, v := range acked {
			before[k] = v
		}
		mu.Unlock()
		clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rng})
		c, err := Open("log", Options{FS: clone, Logger: quiet()})
		if err != nil {
			t.Fatalf("reopen after crash: %v", err)
		}
		cs, err := NewStream(c, Config[event]{Name: "events", Partitions: 3})
		if err != nil {
			t.Fatal(err)
		}
		evs := map[int][]event{}
		for p := range 3 {
			evs[p], _ = readAll(t, cs, p, 0)
		}
		for i, parts := range before {
			for _, a := range parts {
				if a.To > int64(len(evs[a.Partition])) {
					t.Fatalf("round %d: acknowledged append %d at %d/%d-%d lost: partition holds %d", round, i, a.Partition, a.From, a.To, len(evs[a.Partition]))
				}
				if got := evs[a.Partition][a.From]; got.N != i || evs[a.Partition][a.From+1].N != -i {
					t.Fatalf("round %d: append %d at %d/%d holds %+v", round, i, a.Partition, a.From, got)
				}
			}
		}
		// After the crash, appends go on after what survived, and a retry
		// of an acknowledged key is not applied again.
		end := cs.End(0) + cs.End(1) + cs.End(2)
		for i, parts := range before {
			res, err := cs.Append(context.Background(), fmt.Sprintf("c%d-%d", 0, i), line(i), line(-i))
			if err != nil {
				t.Fatal(err)
			}
			if res.Replayed && fmt.Sprint(res.Partitions) != fmt.Sprint(parts) {
				t.Fatalf("retry of %d answered %v, first %v", i, res.Partitions, parts)
			}
			break
		}
		if got := cs.End(0) + cs.End(1) + cs.End(2); got != end && got != end+2 {
			t.Fatalf("one retry moved the ends from %d to %d", end, got)
		}
		c.Close()
	}
	close(stop)
	wg.Wait()
}

// A retry with the same key is applied once, also after a restart and
// when concurrent; another body with that key is refused; keys expire.
func TestIdempotencyKey(t *testing.T) {
	fs := vfs.NewMem()
	clk := newClock()
	l := openLog(t, fs, Options{Now: clk.now, IdempotencyTTL: time.Hour})
	s := newStream(t, l, Config[event]{})
	ctx := context.Background()
	first, err := s.Append(ctx, "k1", line(1), line(2))
	if err != nil || first.Replayed {
		t.Fatal(first, err)
	}
	again, err := s.Append(ctx, "k1", line(1), line(2))
	if err != nil || !again.Replayed || fmt.Sprint(again.Partitions) != fmt.Sprint(first.Partitions) {
		t.Fatalf("retry: %+v %v, first %+v", again, err, first)
	}
	if _, err := s.Append(ctx, "k1", line(3)); !errors.Is(err, ErrKeyReused) {
		t.Fatalf("another body with k1: %v, want ErrKeyReused", err)
	}
	// Concurrent requests with one key: one append.
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Append(ctx, "k2", line(4)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	total := func(s *Stream[event]) int64 { return s.End(0) + s.End(1) + s.End(2) }
	if got := total(s); got != 3 {
		t.Fatalf("%d events after k1 twice and k2 eight times, want 3", got)
	}
	l.Close()
	l = openLog(t, fs, Options{Now: clk.now, IdempotencyTTL: time.Hour})
	s = newStream(t, l, Config[event]{})
	if res, err := s.Append(ctx, "k1", line(1), line(2)); err != nil || !res.Replayed {
		t.Fatalf("retry after a restart: %+v %v", res, err)
	}
	clk.add(2 * time.Hour)
	if res, err := s.Append(ctx, "k1", line(1), line(2)); err != nil || res.Replayed {
		t.Fatalf("k1 after its TTL: %+v %v, want a new append", res, err)
	}
	// Retention deletes k2, and the first k1's expiry, not the new k1.
	if err := l.Trim(); err != nil {
		t.Fatal(err)
	}
	if res, err := s.Append(ctx, "k1", line(1), line(2)); err != nil || !res.Replayed {
		t.Fatalf("k1 used again after its TTL, then retried: %+v %v", res, err)
	}
	if res, err := s.Append(ctx, "k2", line(4)); err != nil || res.Replayed {
		t.Fatalf("k2 after its TTL: %+v %v, want a new append", res, err)
	}
	if got := total(s); got != 6 {
		t.Fatalf("%d events, want 6", got)
	}
}

// Retention deletes committed events past MaxAge and, over MaxBytes, the
// oldest committed ones; never what the flow has not committed. Reading
// from a deleted offset is an error.
func TestRetention(t *testing.T) {
	clk := newClock()
	l := openLog(t, vfs.NewMem(), Options{Now: clk.now, MaxAge: time.Hour, MaxBytes: 4000, RetentionInterval: time.Hour})
	s := newStream(t, l, Config[event]{Partitions: 1})
	ctx := context.Background()
	for i := range 10 {
		if _, err := s.Append(ctx, "", line(i)); err != nil {
			t.Fatal(err)
		}
		clk.add(time.Minute)
	}
	clk.add(2 * time.Hour)
	if err := l.Trim(); err != nil {
		t.Fatal(err)
	}
	if s.Start(0) != 0 {
		t.Fatalf("uncommitted events deleted: start %d", s.Start(0))
	}
	r, err := s.Open(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	r.(flows.Committer).Commit(4)
	r.Close()
	if err := l.Trim(); err != nil {
		t.Fatal(err)
	}
	if s.Start(0) != 4 {
		t.Fatalf("after commit 4: start %d", s.Start(0))
	}
	if _, err := s.Open(0, 3); !errors.Is(err, ErrTrimmed) {
		t.Fatalf("open at a deleted offset: %v", err)
	}
	if evs, _ := readAll(t, s, 0, 4); len(evs) != 6 || evs[0].N != 4 {
		t.Fatalf("from 4: %v", evs)
	}
	// Size: fill the log to MaxBytes with fresh events, until it refuses
	// more; committing lets retention make room by deleting the oldest.
	for {
		_, err := s.Append(ctx, "", line(99))
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !l.full(len(line(99))) {
		t.Fatal("the log should be full")
	}
	r, _ = s.Open(0, s.End(0))
	r.(flows.Committer).Commit(s.End(0) - 10)
	r.Close()
	if err := l.Trim(); err != nil {
		t.Fatal(err)
	}
	if l.Bytes() > 4000 || s.End(0)-s.Start(0) < 10 {
		t.Fatalf("after trimming to size: %d bytes, %d events held", l.Bytes(), s.End(0)-s.Start(0))
	}
}

// A stream's partitions are fixed.
func TestPartitionsFixed(t *testing.T) {
	fs := vfs.NewMem()
	l := openLog(t, fs, Options{})
	newStream(t, l, Config[event]{Partitions: 2})
	l.Close()
	l = openLog(t, fs, Options{})
	if _, err := NewStream(l, Config[event]{Name: "events", Partitions: 3}); err == nil {
		t.Fatal("a stream reopened with other partitions")
	}
	if _, err := NewStream(l, Config[event]{Name: "a/b", Partitions: 3}); err == nil {
		t.Fatal("a stream name with a slash")
	}
}

// Events stored a key each (the layout before blocks) are refused at open
// with an error that says so, never read as missing.
func TestOldLayoutRefused(t *testing.T) {
	fs := vfs.NewMem()
	l := openLog(t, fs, Options{})
	newStream(t, l, Config[event]{Partitions: 1})
	if err := l.db.Set(offsetKey(kindEvent, "events", 0, 0), line(1), nil); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l = openLog(t, fs, Options{})
	if _, err := NewStream(l, Config[event]{Name: "events", Partitions: 1}); err == nil || !strings.Contains(err.Error(), "earlier version") {
		t.Fatalf("open a stream in the old layout: %v", err)
	}
}

// A reader open while events are appended takes them as the append
// decoded them, not decoding their bytes again; what it has not seen
// decoded (appended before it opened, or read again after a rewind) it
// decodes from the log. Either way it reads every event once, in order.
func TestReaderTakesDecodedAppends(t *testing.T) {
	l := openLog(t, vfs.NewMem(), Options{})
	var decodes atomic.Int64
	s := newStream(t, l, Config[event]{Partitions: 2, Key: func(e event) string { return fmt.Sprint(e.N % 3) },
		Decode: func(b []byte) (event, error) {
			decodes.Add(1)
			return DecodeJSON[event](b)
		}})
	ctx := context.Background()
	n := 0
	appendN := func(k int) {
		t.Helper()
		var evs [][]byte
		for range k {
			evs = append(evs, line(n))
			n++
		}
		if _, err := s.Append(ctx, "", evs...); err != nil {
			t.Fatal(err)
		}
	}
	appendN(10) // before any reader: read from the log
	readers := make([]flows.PartitionReader[event], 2)
	for p := range readers {
		r, err := s.Open(p, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		readers[p] = r
	}
	for _, k := range []int{5, 1, 13} {
		appendN(k)
	}
	before := decodes.Load()
	got := map[int]int{} // event number → times read
	for p, r := range readers {
		var next int64
		for {
			var b flows.ReadBatch[event]
			if err := r.Read(ctx, &b, 4); err != nil {
				t.Fatal(err)
			}
			for i, ev := range b.Events {
				if b.Offsets[i] != next {
					t.Fatalf("partition %d: offset %d, want %d", p, b.Offsets[i], next)
				}
				next++
				if want := (event{Text: fmt.Sprintf("e%d", ev.N), N: ev.N}); ev != want {
					t.Fatalf("partition %d offset %d: %+v", p, b.Offsets[i], ev)
				}
				got[ev.N]++
			}
			if len(b.Events) == 0 {
				if b.End != s.End(p) {
					t.Fatalf("partition %d: read stopped at %d, end %d", p, b.End, s.End(p))
				}
				break
			}
		}
	}
	for i := range n {
		if got[i] != 1 {
			t.Fatalf("event %d read %d times", i, got[i])
		}
	}
	// The 10 events appended before the readers opened were decoded again;
	// the 19 after, not.
	if d := decodes.Load() - before; d != 10 {
		t.Fatalf("the readers decoded %d events, want the 10 appended before they opened", d)
	}
	// Read again from the start: from the log, the same events.
	before = decodes.Load()
	evs, _ := readAll(t, s, 0, 0)
	evs1, _ := readAll(t, s, 1, 0)
	if len(evs)+len(evs1) != n || decodes.Load()-before != int64(n) {
		t.Fatalf("a second read gave %d events with %d decodes, want %d of each", len(evs)+len(evs1), decodes.Load()-before, n)
	}
}
