package flowcore_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/splice"
)

type stamped struct {
	Text string
	At   time.Time
}

// stampedFlow: lines with event times, split into words (several records
// per offset), counted per word and in tumbling windows.
func stampedFlow(in flows.Source[stamped], fragments int) *flows.Flow {
	f := flows.New("stamped", flows.WithFragments(fragments))
	src := flows.From(f, "lines", in, flows.WithEventTime(func(s stamped) time.Time { return s.At }, time.Second))
	words := flows.FlatMap(src, func(s stamped, emit func(stamped)) {
		for _, w := range strings.Fields(s.Text) {
			emit(stamped{Text: w, At: s.At})
		}
	})
	ks := flows.KeyBy(words, func(s stamped) string { return s.Text })
	flows.Count(ks).View("counts")
	w := flows.WindowAggregate(ks, flows.Tumbling(time.Minute), func() int64 { return 0 }, func(n int64, _ stamped) int64 { return n + 1 })
	flows.WindowView(w, "per-minute", splice.Sum[int64](), func(_ string, n int64) int64 { return n }, time.Hour)
	return f
}

// batches reads every batch a reader of partition 0 makes.
func batches(t interface{ Fatal(...any) }, plan *flowcore.Plan, size int) []*flowcore.Batch {
	r, err := plan.OpenReader(0, 0, 0, size)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []*flowcore.Batch
	for {
		n, err := r.Poll(context.Background(), size)
		eof := errors.Is(err, io.EOF)
		if err != nil && !eof {
			t.Fatal(err)
		}
		for f := range plan.Fragments() {
			if r.Due(f) || eof || n == 0 {
				out = append(out, r.Take(f))
			}
		}
		if eof || n == 0 {
			return out
		}
	}
}

// A batch that crosses nodes applies exactly as the one it was encoded
// from.
func TestBatchEncodingRoundTrips(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := flowstest.NewInput[stamped](1)
		words := []string{"a", "bb", "ccc", "", "é", "a b"}
		for i := range rapid.IntRange(0, 400).Draw(t, "more words") {
			words = append(words, fmt.Sprintf("w%d", i)) // enough keys to collide in a table's index
		}
		for i := range rapid.IntRange(0, 300).Draw(t, "lines") {
			var parts []string
			for range rapid.IntRange(0, 4).Draw(t, fmt.Sprint("words", i)) {
				parts = append(parts, words[rapid.IntRange(0, len(words)-1).Draw(t, "w")])
			}
			in.Push(0, stamped{Text: strings.Join(parts, " "), At: t0.Add(time.Duration(i) * 7 * time.Second)})
		}
		in.Close()
		plan, err := flowcore.Compile(stampedFlow(in, 3))
		if err != nil {
			t.Fatal(err)
		}
		direct, decoded := plan.NewFragment(0), plan.NewFragment(0)
		// Decoded with no Interner, one of its own, or the fragment's,
		// which finds keys in the fragment's tables (as a node does).
		var intern *flowcore.Interner
		switch rapid.IntRange(0, 2).Draw(t, "interner") {
		case 1:
			intern = new(flowcore.Interner)
		case 2:
			intern = decoded.Interner()
		}
		// Decoded all before any is applied, or each before it is: the
		// slots a batch's keys were found in (keySlots) were found
		// before the keys of the batches ahead of it were inserted.
		ahead := rapid.Bool().Draw(t, "decode all first")
		var pending [][2]*flowcore.Batch
		for _, b := range batches(t, plan, rapid.IntRange(1, 40).Draw(t, "batch")) {
			enc, err := plan.EncodeBatch(nil, b)
			if err != nil {
				t.Fatal(err)
			}
			var d *flowcore.Batch
			if intern != nil {
				d, err = plan.DecodeBatchInterned(enc, intern)
			} else {
				d, err = plan.DecodeBatch(enc)
			}
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if d.Source != b.Source || d.Partition != b.Partition || d.PrevEnd != b.PrevEnd || d.End != b.End ||
				d.Count != b.Count || d.Watermark != b.Watermark || d.Idle != b.Idle || d.EventTime != b.EventTime {
				t.Fatalf("header %+v, want %+v", d, b)
			}
			pending = append(pending, [2]*flowcore.Batch{b, d})
			if ahead {
				continue
			}
			for _, bd := range pending {
				// Batches go to fragment 0 only in this test; apply both copies.
				if err := direct.Apply(bd[0], bd[0].PrevEnd); err != nil {
					t.Fatal(err)
				}
				if err := decoded.Apply(bd[1], bd[1].PrevEnd); err != nil {
					t.Fatal(err)
				}
			}
			pending = pending[:0]
		}
		for _, bd := range pending {
			if err := direct.Apply(bd[0], bd[0].PrevEnd); err != nil {
				t.Fatal(err)
			}
			if err := decoded.Apply(bd[1], bd[1].PrevEnd); err != nil {
				t.Fatal(err)
			}
		}
		for _, req := range []splice.Request{
			{View: "counts", Op: splice.OpEntries, Query: splice.Query{Limit: 1000}},
			{View: "per-minute", Op: splice.OpWindows, Query: splice.Query{Limit: 1000}},
		} {
			a, err := direct.Query(req)
			if err != nil {
				t.Fatal(err)
			}
			b, err := decoded.Query(req)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(a) != fmt.Sprint(b) {
				t.Fatalf("%s: decoded %v, want %v", req.View, b, a)
			}
		}
	})
}

func FuzzDecodeBatch(f *testing.F) {
	in := flowstest.NewInput[stamped](1)
	in.Push(0, stamped{"a b", t0}, stamped{"c", t0.Add(time.Second)}, stamped{"", t0.Add(2 * time.Second)}, stamped{"bb ccc", t0.Add(3 * time.Second)},
		stamped{"key-01 key-02 key-011 key-1", t0.Add(4 * time.Second)}) // front-coded keys
	in.Close()
	plan, err := flowcore.Compile(stampedFlow(in, 1))
	if err != nil {
		f.Fatal(err)
	}
	for _, b := range batches(f, plan, 2) {
		enc, err := plan.EncodeBatch(nil, b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(enc)
		if enc, err = plan.EncodeBatchV2(nil, b); err != nil {
			f.Fatal(err)
		}
		f.Add(enc)
	}
	f.Add([]byte{1, 0, 0, 0, 0, 2, 1, 1, 0, 0})
	// held: a fragment whose tables hold the seeds' keys, so that its
	// Interner finds keys in them (keyBatch).
	held := plan.NewFragment(0)
	for _, b := range batches(f, plan, 2) {
		if err := held.Apply(b, b.PrevEnd); err != nil {
			f.Fatal(err)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := plan.DecodeBatch(data)
		bi, erri := plan.DecodeBatchInterned(data, held.Interner())
		if (err == nil) != (erri == nil) {
			t.Fatalf("decoded alone: %v; through a fragment's Interner: %v", err, erri)
		}
		if err != nil {
			return
		}
		if a, c := fmt.Sprint(flowcore.BatchEvents(held, b)), fmt.Sprint(flowcore.BatchEvents(held, bi)); a != c {
			t.Fatalf("decoded alone %s, through a fragment's Interner %s", a, c)
		}
		enc, err := plan.EncodeBatch(nil, b)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if _, err := plan.DecodeBatch(enc); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		fr := plan.NewFragment(0)
		_ = fr.Apply(b, b.PrevEnd) // must not panic
	})
}

// Answers cross nodes intact: keyed entries (with their keys in their own
// type, for ordering), aggregate partials and window partials.
func TestAnswerEncodingRoundTrips(t *testing.T) {
	in := flowstest.NewInput[stamped](1)
	for i := range 200 {
		in.Push(0, stamped{Text: fmt.Sprintf("w%d w%d", i%7, i%3), At: t0.Add(time.Duration(i) * 13 * time.Second)})
	}
	in.Close()
	f := stampedFlow(in, 1)
	plan, err := flowcore.Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	fr := plan.NewFragment(0)
	for _, b := range batches(t, plan, 16) {
		if err := fr.Apply(b, b.PrevEnd); err != nil {
			t.Fatal(err)
		}
	}
	for _, req := range []splice.Request{
		{View: "counts", Op: splice.OpEntries, Query: splice.Query{Limit: 1000}},
		{View: "counts", Op: splice.OpEntries, Query: splice.Query{Limit: 1000, Top: 2}},
		{View: "counts", Op: splice.OpKey, Key: "w1"},
		{View: "per-minute", Op: splice.OpWindows, Query: splice.Query{Limit: 1000}},
	} {
		a, err := fr.Query(req)
		if err != nil {
			t.Fatal(err)
		}
		a.Freshness = splice.Freshness{Fragment: 3, Epoch: 9, Offsets: map[string]int64{"lines/0": 200}}
		enc, err := plan.EncodeAnswer(req.View, a)
		if err != nil {
			t.Fatal(err)
		}
		got, err := plan.DecodeAnswer(req.View, enc)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", a) || len(a.Entries)+len(a.Windows) == 0 {
			t.Fatalf("%v: decoded %+v, want %+v", req, got, a)
		}
		if _, err := plan.DecodeAnswer(req.View, enc[:len(enc)-1]); err == nil {
			t.Fatalf("%v: a truncated answer decoded", req)
		}
	}
}

// A changes answer crosses nodes with its mark: the changed entries, the
// fragment's instance and generation, and the keys it hides.
func TestChangesAnswerRoundTrips(t *testing.T) {
	in := flowstest.NewInput[stamped](1)
	for i := range 50 {
		in.Push(0, stamped{Text: fmt.Sprintf("w%d", i%5), At: t0.Add(time.Duration(i) * time.Second)})
	}
	in.Close()
	plan, err := flowcore.Compile(stampedFlow(in, 1))
	if err != nil {
		t.Fatal(err)
	}
	fr := plan.NewFragment(0)
	first, err := fr.Query(splice.Request{View: "counts", Op: splice.OpChanges})
	if err != nil || first.Changes == nil || !first.Changes.Reset {
		t.Fatalf("changes without a mark: %+v, %v; want a reset with the fragment's mark", first, err)
	}
	since := splice.FormatMarks([]splice.ChangeMark{*first.Changes})
	for _, b := range batches(t, plan, 16) {
		if err := fr.Apply(b, b.PrevEnd); err != nil {
			t.Fatal(err)
		}
	}
	fr.Publish() // the batch boundary, where a driver publishes
	req := splice.Request{View: "counts", Op: splice.OpChanges, Since: since}
	a, err := fr.Query(req)
	if err != nil || a.Changes == nil || a.Changes.Reset || len(a.Entries) != 5 {
		t.Fatalf("changes since %s: %+v, %v; want the 5 words", since, a, err)
	}
	// Hidden keys cross nodes with their bytes, valid UTF-8 or not.
	a.Changes.Hidden = []string{"w9", "\xff\x01", "\xfe"}
	enc, err := plan.EncodeAnswer(req.View, a)
	if err != nil {
		t.Fatal(err)
	}
	got, err := plan.DecodeAnswer(req.View, enc)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprintf("%+v", got.Entries) != fmt.Sprintf("%+v", a.Entries) || got.Changes == nil ||
		fmt.Sprintf("%+v", *got.Changes) != fmt.Sprintf("%+v", *a.Changes) {
		t.Fatalf("decoded %+v (mark %+v), want %+v (mark %+v)", got, got.Changes, a, a.Changes)
	}
	// Nothing changed since: nothing to send.
	again, err := fr.Query(splice.Request{View: "counts", Op: splice.OpChanges, Since: splice.FormatMarks([]splice.ChangeMark{*a.Changes})})
	if err != nil || again.Changes.Reset || len(again.Entries) != 0 {
		t.Fatalf("changes after none: %+v, %v", again, err)
	}
}

func FuzzDecodeAnswer(f *testing.F) {
	in := flowstest.NewInput[stamped](1)
	in.Push(0, stamped{"a b", t0}, stamped{"c", t0.Add(time.Minute)})
	in.Close()
	plan, err := flowcore.Compile(stampedFlow(in, 1))
	if err != nil {
		f.Fatal(err)
	}
	fr := plan.NewFragment(0)
	for _, b := range batches(f, plan, 2) {
		_ = fr.Apply(b, b.PrevEnd)
	}
	for _, req := range []splice.Request{
		{View: "counts", Op: splice.OpEntries, Query: splice.Query{Limit: 10}},
		{View: "per-minute", Op: splice.OpWindows, Query: splice.Query{Limit: 10}},
	} {
		a, _ := fr.Query(req)
		enc, err := plan.EncodeAnswer(req.View, a)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(req.View, enc)
	}
	f.Fuzz(func(t *testing.T, view string, data []byte) {
		a, err := plan.DecodeAnswer(view, data)
		if err != nil {
			return
		}
		if _, err := plan.EncodeAnswer(view, a); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
	})
}
