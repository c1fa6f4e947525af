package splice

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// modelCutter is a flow of one source partition "in/0" counted by n
// fragments: event i belongs to fragment i mod n. Every Gather lets each
// fragment apply a random number of further events first (concurrent
// ingest), unless the input is paused; a pause may also leave a fragment
// behind (it restored meanwhile), which a snapshot must notice.
type modelCutter struct {
	mu      sync.Mutex
	rt      *rapid.T
	applied []int64 // per fragment: events below this offset applied
	read    int64   // the reader's position
	paused  bool
	lagging bool // the next pause leaves fragment 0 behind once
}

func (m *modelCutter) Views() []Spec {
	return []Spec{{Name: "total", Kind: Aggregate, Algebra: "sum", Splice: func(ps []any) any {
		var n int64
		for _, p := range ps {
			n += p.(int64)
		}
		return n
	}}}
}

func (m *modelCutter) Freshness() []Freshness { return nil }

// heldBelow is the number of events fragment f holds below offset end.
func heldBelow(f, n int, end int64) int64 {
	if end <= int64(f) {
		return 0
	}
	return (end-int64(f)-1)/int64(n) + 1
}

func (m *modelCutter) Gather(_ context.Context, req Request, _ int) ([]Answer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Answer
	for f := range m.applied {
		if !m.paused {
			// The reader reads on; the fragment catches up at least half
			// of the way.
			m.read += 1 + int64(rapid.IntRange(0, 5).Draw(m.rt, "read"))
			gap := m.read - m.applied[f]
			m.applied[f] = min(m.read, m.applied[f]+(gap+1)/2+int64(rapid.IntRange(0, 3).Draw(m.rt, "apply")))
		}
		out = append(out, Answer{Partial: heldBelow(f, len(m.applied), m.applied[f]),
			Freshness: Freshness{Fragment: f, Offsets: map[string]int64{"in/0": m.applied[f]}}})
	}
	return out, nil
}

func (m *modelCutter) Pause(context.Context) (Hold, func(), error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.read += 1 + int64(rapid.IntRange(0, 5).Draw(m.rt, "read")) // read since the last pause
	for f := range m.applied {
		m.applied[f] = m.read // the reader sends everything up to its position
	}
	if m.lagging {
		m.lagging = false
		m.applied[0] = max(0, m.read-3)
	}
	m.paused = true
	return Hold{Offsets: map[string]int64{"in/0": m.read}}, func() {
		m.mu.Lock()
		m.paused = false
		m.mu.Unlock()
	}, nil
}

// A snapshot answer under concurrent ingest counts exactly its cut, and
// every fragment reports the cut; a latest answer covers its lower cut;
// min_offsets is honoured or the read times out.
func TestEvaluateReadModel(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		n := rapid.IntRange(1, 6).Draw(rt, "fragments")
		m := &modelCutter{rt: rt, applied: make([]int64, n), lagging: rapid.Bool().Draw(rt, "lagging")}
		for range rapid.IntRange(1, 10).Draw(rt, "reads") {
			o := ReadOptions{Consistency: rapid.SampledFrom([]Consistency{Latest, Snapshot}).Draw(rt, "consistency"), Timeout: time.Second}
			var want int64
			if rapid.Bool().Draw(rt, "min") {
				want = m.read + int64(rapid.IntRange(0, 10).Draw(rt, "ahead"))
				o.MinOffsets = map[string]int64{"in/0": want}
			}
			res, err := EvaluateRead(context.Background(), m, Request{View: "total"}, o)
			if err != nil {
				rt.Fatalf("%+v: %v", o, err)
			}
			cut := res.Cut.Offsets["in/0"]
			if res.Cut.Consistency != o.Consistency || cut < want {
				rt.Fatalf("cut %+v, want %s covering %d", res.Cut, o.Consistency, want)
			}
			total := res.Value.(int64)
			if o.Consistency == Snapshot && total != cut {
				rt.Fatalf("snapshot counts %d at cut %d", total, cut)
			}
			if o.Consistency == Latest && total < cut {
				rt.Fatalf("latest counts %d below its lower cut %d", total, cut)
			}
		}
	})
}

// A min_offsets that never comes is a CutTimeoutError naming it, which
// the HTTP layer answers 504.
func TestEvaluateReadTimesOut(t *testing.T) {
	g := &movingGatherer{answers: []Answer{{Partial: int64(1), Freshness: Freshness{Offsets: map[string]int64{"in/0": 4}}}}}
	_, err := EvaluateRead(context.Background(), g, Request{View: "total"},
		ReadOptions{MinOffsets: map[string]int64{"in/0": 9}, Timeout: 20 * time.Millisecond})
	var te *CutTimeoutError
	if !errors.As(err, &te) || !errors.Is(err, context.DeadlineExceeded) || te.Reason != "fragment 0 applied in/0 up to 4, not yet to 9" {
		t.Fatalf("err = %v", err)
	}
	_, err = EvaluateRead(context.Background(), g, Request{View: "total"}, ReadOptions{Consistency: Snapshot})
	if !errors.Is(err, ErrBadRequest) {
		t.Fatalf("snapshot of a gatherer that cannot cut: %v", err)
	}
}

// lateCutter is a Cutter whose input stands at in/0:4, and whose second
// pause finds the read's deadline passed before the read's context says so
// (an engine reads the clock itself).
type lateCutter struct {
	movingGatherer
	pauses int
}

func (c *lateCutter) Pause(context.Context) (Hold, func(), error) {
	c.pauses++
	if c.pauses > 1 {
		return Hold{}, nil, context.DeadlineExceeded
	}
	return Hold{Offsets: map[string]int64{"in/0": 4}}, func() {}, nil
}

// A snapshot read whose deadline the engine sees first is still a
// CutTimeoutError saying what the read waited for (the 504's message),
// not a bare "context deadline exceeded".
func TestEvaluateReadDeadlineSeenFirst(t *testing.T) {
	g := &lateCutter{movingGatherer: movingGatherer{answers: []Answer{{Partial: int64(1), Freshness: Freshness{Offsets: map[string]int64{"in/0": 4}}}}}}
	_, err := EvaluateRead(context.Background(), g, Request{View: "total"},
		ReadOptions{Consistency: Snapshot, MinOffsets: map[string]int64{"in/0": 9}, Timeout: time.Minute})
	var te *CutTimeoutError
	if !errors.As(err, &te) || !errors.Is(err, context.DeadlineExceeded) || te.Reason != "the input read so far is in/0 up to 4, not yet 9" {
		t.Fatalf("err = %v", err)
	}
}

func TestParseReadOptions(t *testing.T) {
	for _, tc := range []struct {
		q, err string
	}{
		{"consistency=snapshot&min_offsets=a/0:1,b/2:30&timeout=2s", ""},
		{"consistency=strong", "consistency must be latest or snapshot"},
		{"min_offsets=a:1", "source/partition:offset"},
		{"min_offsets=a/x:1", "source/partition:offset"},
		{"min_offsets=a/0:-1", "source/partition:offset"},
		{"min_offsets=a/0:1,a/0:2", "twice"},
		{"timeout=2m", "timeout must be"},
		{"timeout=0s", "timeout must be"},
		{"consistency=latest&consistency=snapshot", "given 2 times"},
	} {
		v, _ := url.ParseQuery(tc.q)
		o, err := ParseReadOptions(v)
		if tc.err == "" {
			if err != nil || o.Consistency != Snapshot || o.Timeout != 2*time.Second || FormatOffsets(o.MinOffsets) != "a/0:1,b/2:30" || len(v) != 0 {
				t.Errorf("%s: %+v, %v (left %v)", tc.q, o, err, v)
			}
			continue
		}
		if !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: err %v, want %q", tc.q, err, tc.err)
		}
	}
}

// Over HTTP: every answer states its cut; a snapshot of a gatherer that
// cannot cut and a watch with read options are 400; a min_offsets never
// reached is a JSON 504.
func TestReadOptionsOverHTTP(t *testing.T) {
	g := &movingGatherer{answers: []Answer{
		{Partial: int64(2), Freshness: Freshness{Fragment: 0, Offsets: map[string]int64{"in/0": 4, "in/1": 7}}},
		{Partial: int64(3), Freshness: Freshness{Fragment: 1, Offsets: map[string]int64{"in/0": 6, "in/1": 5}}},
	}}
	srv := serve(t, g)
	var a struct {
		Value int64
		Cut   Cut
	}
	resp, err := http.Get(srv.URL + "/v1/views/total")
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&a)
	resp.Body.Close()
	if err != nil || a.Value != 5 || a.Cut.Consistency != Latest || FormatOffsets(a.Cut.Offsets) != "in/0:4,in/1:5" {
		t.Fatalf("answer %+v (%v), want the latest cut in/0:4,in/1:5", a, err)
	}
	for q, want := range map[string]int{
		"/v1/views/total?consistency=snapshot":                    400,
		"/v1/views/total/watch?consistency=snapshot":              400,
		"/v1/views/total?min_offsets=in/0:5&timeout=30ms":         504,
		"/v1/views/total?min_offsets=in/0:4,in/1:5&timeout=30ms":  200,
		"/v1/views/total?min_offsets=in/0:4,in/1:%ZZ&timeout=3ms": 400,
	} {
		resp, err := http.Get(srv.URL + q)
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != want || (want != 200 && e.Error == "") {
			t.Errorf("%s: %d %q, want %d with an error", q, resp.StatusCode, e.Error, want)
		}
	}
}

// A fragment downstream of an exchange is at the cut only if it applied
// exactly what each upstream fragment sent it up to the cut: less (a
// checkpoint behind) or more (outputs made after the cut) is not.
func TestNotAtChecksExchanges(t *testing.T) {
	hold := Hold{Offsets: map[string]int64{"in/0": 10}, Exchanges: map[string][]int64{"x": {7, 3}},
		Applied: map[int]map[string]int64{0: {"x/0": 5, "x/1": 3}, 1: {"x/0": 7, "x/1": 0}}}
	at := func(f int, x0, x1 int64) Freshness {
		return Freshness{Fragment: f, Offsets: map[string]int64{"in/0": 10, "x/0": x0, "x/1": x1}}
	}
	for _, c := range []struct {
		fs   []Freshness
		want string
	}{
		{[]Freshness{at(0, 5, 3), at(1, 7, 0)}, ""},
		{[]Freshness{at(0, 5, 3), at(1, 6, 0)}, "fragment 1 applied x/0 up to 6, not the cut's 7"},
		{[]Freshness{at(0, 5, 4), at(1, 7, 0)}, "fragment 0 applied x/1 up to 4, not the cut's 3"},
		{[]Freshness{{Fragment: 0, Offsets: map[string]int64{"in/0": 9, "x/0": 5, "x/1": 3}}}, "fragment 0 is at in/0 9, not at the cut's 10"},
	} {
		if got := notAt(c.fs, hold); got != c.want {
			t.Errorf("notAt(%v) = %q, want %q", c.fs, got, c.want)
		}
	}
}
