package flowcore_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/splice"
)

// Answers of keyed window views cross nodes intact: every window's bounds,
// number of keys and entries (their values, scores and keys in their own
// type), for every request such a view answers.
func TestKeyedWindowAnswerEncodingRoundTrips(t *testing.T) {
	plan, fr := wordsFragment(t, 200, flows.ScoreBy(func(s wordStats) float64 { return float64(s.N) }))
	all := splice.Query{From: math.MinInt64, Limit: 1000}
	for _, req := range []splice.Request{
		{View: "words", Op: splice.OpWindows, Query: all},
		{View: "words", Op: splice.OpWindowEntries, Query: all},
		{View: "words", Op: splice.OpWindowEntries, Query: splice.Query{From: math.MinInt64, Top: 2}},
		{View: "words", Op: splice.OpWindowEntries, Query: splice.Query{From: math.MinInt64, Limit: 2, After: "w1", Prefix: "w"}},
		{View: "words", Op: splice.OpWindowKey, Key: "w2", Query: all},
	} {
		a, err := fr.Query(req)
		if err != nil {
			t.Fatal(err)
		}
		entries := 0
		for _, w := range a.Windows {
			entries += len(w.Entries)
			if w.Keys == 0 {
				t.Fatalf("%v: window %d without keys", req, w.Start)
			}
		}
		if len(a.Windows) == 0 || (req.Op != splice.OpWindows && entries == 0) {
			t.Fatalf("%v: a trivial answer %+v", req, a)
		}
		a.Freshness = splice.Freshness{Fragment: 3, Epoch: 9, Offsets: map[string]int64{"lines/0": 200}}
		a.Horizon = 12345
		enc, err := plan.EncodeAnswer(req.View, a)
		if err != nil {
			t.Fatal(err)
		}
		got, err := plan.DecodeAnswer(req.View, enc)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", a) {
			t.Fatalf("%v: decoded %+v, want %+v", req, got, a)
		}
		if _, err := plan.DecodeAnswer(req.View, enc[:len(enc)-1]); err == nil {
			t.Fatalf("%v: a truncated answer decoded", req)
		}
		// A keyed view's answers keep the encoding nodes built before
		// keyed window views read; the two do not mix.
		if _, err := plan.DecodeAnswer("counts", enc); err == nil {
			t.Fatalf("%v: decoded as an answer of another kind of view", req)
		}
	}
	a, err := fr.Query(splice.Request{View: "counts", Op: splice.OpEntries, Query: splice.Query{Limit: 10}})
	if err != nil {
		t.Fatal(err)
	}
	enc, err := plan.EncodeAnswer("counts", a)
	if err != nil || enc[0] != 1 {
		t.Fatalf("a keyed view's answer: version %d, %v", enc[0], err)
	}
	if _, err := plan.DecodeAnswer("words", enc); err == nil {
		t.Fatal("a keyed view's answer decoded as a keyed window view's")
	}
}

func FuzzDecodeKeyedWindowAnswer(f *testing.F) {
	plan, fr := wordsFragment(f, 6)
	for _, req := range []splice.Request{
		{View: "words", Op: splice.OpWindows, Query: splice.Query{From: math.MinInt64, Limit: 10}},
		{View: "words", Op: splice.OpWindowEntries, Query: splice.Query{From: math.MinInt64, Limit: 10}},
		{View: "words", Op: splice.OpWindowKey, Key: "w1", Query: splice.Query{From: math.MinInt64}},
	} {
		a, err := fr.Query(req)
		if err != nil {
			f.Fatal(err)
		}
		enc, err := plan.EncodeAnswer(req.View, a)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(enc)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := plan.DecodeAnswer("words", data)
		if err != nil {
			return
		}
		if _, err := plan.EncodeAnswer("words", a); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
	})
}
