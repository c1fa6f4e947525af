package flowcore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/splice"
)

// Batches encoded as their records are routed (Reader.EncodeAhead) are
// the bytes encoding them when they are sent gives, with and without
// event time, whole or front-coded keys, a key that is not a field of the
// event, and fragments marked on and off between batches and within one;
// and they decode to the same state. A batch encoded ahead and applied on
// the reader's node after all (its records kept only as the run's bytes,
// then decoded back) gives the same state as one that was not, as does a
// batch whose front-coded keys outgrow maxFrontKeys within it.
func TestBatchEncodedAhead(t *testing.T) {
	long := strings.Repeat("k", 24<<10)
	for _, c := range []struct {
		name      string
		format    string
		eventTime bool
		upper     bool // the key is not a field of the event: no run
		events    int
		minAhead  int // parts encoded ahead at least
	}{
		{"front-coded", "key-%06d", false, false, 3000, 20},
		{"event time", "key-%06d", true, false, 3000, 20},
		{"whole keys", "%d", false, false, 3000, 20},
		{"key not a field", "key-%06d", false, true, 3000, 0},
		// Most batches outgrow the bound: few are sent as encoded ahead.
		{"front-coded past the bound", long + "%06d", true, false, 600, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			const fragments = 4
			in := flowstest.NewInput[keyedEvent](1)
			for i := range c.events {
				in.Push(0, keyedEvent{K: fmt.Sprintf(c.format, (i*7919)%101), T: int64(i) * int64(time.Millisecond)})
			}
			in.Close()
			f := flows.New("ahead", flows.WithFragments(fragments))
			var opts []flows.SourceOption
			if c.eventTime {
				opts = append(opts, flows.WithEventTime(func(e keyedEvent) time.Time { return time.Unix(0, e.T) }, time.Second))
			}
			src := flows.From(f, "events", in, opts...)
			key := func(e keyedEvent) string { return e.K }
			if c.upper {
				key = func(e keyedEvent) string { return "K" + e.K }
			}
			flows.Count(flows.KeyBy(src, key)).View("counts")
			plan, err := flowcore.Compile(f)
			if err != nil {
				t.Fatal(err)
			}
			plain, err := plan.OpenReader(0, 0, 0, 64)
			if err != nil {
				t.Fatal(err)
			}
			defer plain.Close()
			ahead, err := plan.OpenReader(0, 0, 0, 64)
			if err != nil {
				t.Fatal(err)
			}
			defer ahead.Close()
			for fr := range fragments - 1 {
				ahead.EncodeAhead(fr, true)
			}
			direct, decoded := plan.NewFragment(0), plan.NewFragment(0)
			// Every fragment's batches applied as read, and as encoded ahead.
			var plainFr, aheadFr [fragments]*flowcore.Fragment
			for fr := range fragments {
				plainFr[fr], aheadFr[fr] = plan.NewFragment(fr), plan.NewFragment(fr)
			}
			aheadParts := 0
			for poll := 0; ; poll++ {
				n, err := plain.Poll(context.Background(), 7)
				n2, err2 := ahead.Poll(context.Background(), 7)
				eof := errors.Is(err, io.EOF)
				if (err != nil && !eof) || n != n2 || (err == nil) != (err2 == nil) {
					t.Fatalf("poll %d: %d, %v and %d, %v", poll, n, err, n2, err2)
				}
				switch poll {
				case 60:
					ahead.EncodeAhead(fragments-1, true) // within a batch: from the next one
				case 160:
					ahead.EncodeAhead(0, false) // within a batch: this one is not encoded ahead
				}
				if poll%25 != 24 && !eof {
					continue
				}
				for fr := range fragments {
					b1, b2 := plain.Take(fr), ahead.Take(fr)
					aheadParts += b2.AheadParts()
					if b1.Count != b2.Count {
						t.Fatalf("poll %d, fragment %d: %d records, %d encoded ahead", poll, fr, b1.Count, b2.Count)
					}
					e1, err := plan.EncodeBatch(nil, b1)
					if err != nil {
						t.Fatal(err)
					}
					e2, err := plan.EncodeBatch(nil, b2)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(e1, e2) {
						t.Fatalf("poll %d, fragment %d: %d bytes encoded ahead differ from the %d encoded at once", poll, fr, len(e2), len(e1))
					}
					if fr == 0 {
						d, err := plan.DecodeBatchInterned(e2, decoded.Interner())
						if err != nil {
							t.Fatal(err)
						}
						if err := decoded.Apply(d, d.PrevEnd); err != nil {
							t.Fatal(err)
						}
						if err := direct.Apply(b1, b1.PrevEnd); err != nil {
							t.Fatal(err)
						}
					}
					if err := plainFr[fr].Apply(b1, b1.PrevEnd); err != nil {
						t.Fatal(err)
					}
					if err := aheadFr[fr].Apply(b2, b2.PrevEnd); err != nil {
						t.Fatal(err)
					}
					b1.Release()
					b2.Release()
				}
				if eof {
					break
				}
			}
			if want := 0; c.upper && aheadParts != want {
				t.Fatalf("%d parts encoded ahead, want none", aheadParts)
			} else if aheadParts < c.minAhead {
				t.Fatalf("%d parts encoded ahead", aheadParts)
			}
			req := splice.Request{View: "counts", Op: splice.OpEntries, Query: splice.Query{Limit: 1000}}
			want, err := direct.Query(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := decoded.Query(req)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got.Entries) != fmt.Sprint(want.Entries) || len(want.Entries) == 0 {
				t.Fatalf("decoded: %v, want %v", got.Entries, want.Entries)
			}
			for fr := range fragments {
				want, err := plainFr[fr].Query(req)
				if err != nil {
					t.Fatal(err)
				}
				got, err := aheadFr[fr].Query(req)
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(got.Entries) != fmt.Sprint(want.Entries) || len(want.Entries) == 0 {
					t.Fatalf("fragment %d applied as encoded ahead: %v, want %v", fr, got.Entries, want.Entries)
				}
			}
		})
	}
}

// A batch whose records were kept only as the bytes encoded ahead, applied
// on the reader's node after all, and whose bytes do not decode (a defect
// of the encoder, never a peer's input) fails the batch with a dead
// letter; it does not take the process down.
func TestBareBatchThatDoesNotDecodeFails(t *testing.T) {
	in := flowstest.NewInput[keyedEvent](1)
	for i := range 2000 {
		in.Push(0, keyedEvent{K: fmt.Sprintf("key-%06d", i%101)})
	}
	in.Close()
	f := flows.New("ahead", flows.WithFragments(1))
	flows.Count(flows.KeyBy(flows.From(f, "events", in), func(e keyedEvent) string { return e.K })).View("counts")
	plan, err := flowcore.Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	r, err := plan.OpenReader(0, 0, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.EncodeAhead(0, true)
	for {
		if _, err := r.Poll(context.Background(), 100); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			break
		}
	}
	b := r.Take(0)
	if n := b.CorruptAhead(); n != 1 {
		t.Fatalf("%d parts kept only as bytes, want 1", n)
	}
	err = plan.NewFragment(0).Apply(b, b.PrevEnd)
	var ee *flowcore.EventError
	if !errors.As(err, &ee) || !strings.Contains(ee.DeadLetter.Error, "do not decode") {
		t.Fatalf("applying a bare batch that does not decode: %v, want an event error saying so", err)
	}
}
