package flowcore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/splice"
)

// wideEvent's first string field may hold the key too (the field form
// then cuts that one), and its events run past 64 bytes.
type wideEvent struct {
	Pad string
	K   string
	N   int64
	B   []byte
}

// internedRun is one fragment fed the way a node feeds it batches from
// another node: encoded, decoded through its Interner, possibly well
// ahead of their apply, with the engine's rules for what was applied:
// records below the recorded end of their partition are dropped, a batch
// after a gap is dropped and its partition read again from the end, a
// restore goes back to the checkpoint's ends and reads again from them.
type internedRun struct {
	t       *rapid.T
	plan    *flowcore.Plan
	readers []*flowcore.Reader
	fr      *flowcore.Fragment
	end     []int64 // per partition: the fragment's recorded end
	pending []*flowcore.Batch
	sent    [][][]byte // per partition: every batch encoded, for replays
	store   map[[2]string][]byte
	ckEnd   []int64
}

func (r *internedRun) poll(p, max int) {
	rd := r.readers[p]
	_, err := rd.Poll(context.Background(), max)
	if err != nil && !errors.Is(err, io.EOF) {
		r.t.Fatal(err)
	}
	if !rd.Due(0) {
		return
	}
	b := rd.Take(0)
	enc, err := r.plan.EncodeBatch(nil, b)
	if err != nil {
		r.t.Fatal(err)
	}
	b.Release()
	r.sent[p] = append(r.sent[p], enc)
	r.decode(enc)
}

func (r *internedRun) decode(enc []byte) {
	b, err := r.plan.DecodeBatchInterned(enc, r.fr.Interner())
	if err != nil {
		r.t.Fatal(err)
	}
	r.pending = append(r.pending, b)
}

// apply applies pending batch i as the fragment's machine would.
func (r *internedRun) apply(i int) {
	b := r.pending[i]
	r.pending = slices.Delete(r.pending, i, i+1)
	defer b.Release()
	p := b.Partition
	if b.PrevEnd > r.end[p] {
		// A gap: the engine drops the batch and has the partition read
		// again from its end.
		if err := r.readers[p].Rewind(r.end[p]); err != nil {
			r.t.Fatal(err)
		}
		return
	}
	if err := r.fr.Apply(b, max(b.PrevEnd, r.end[p])); err != nil {
		r.t.Fatal(err)
	}
	r.end[p] = max(r.end[p], b.End)
}

func (r *internedRun) checkpoint() {
	d, err := r.fr.TakeDelta()
	if err != nil {
		r.t.Fatal(err)
	}
	for _, ns := range d.Reset {
		for k := range r.store {
			if k[0] == fmt.Sprint(ns) {
				delete(r.store, k)
			}
		}
	}
	for _, e := range d.Deletes {
		delete(r.store, [2]string{fmt.Sprint(e.Namespace), string(e.Key)})
	}
	for _, e := range d.Puts {
		r.store[[2]string{fmt.Sprint(e.Namespace), string(e.Key)}] = slices.Clone(e.Value)
	}
	r.ckEnd = slices.Clone(r.end)
}

// restore replaces the fragment with one restored from the last
// checkpoint; the batches pending stay, decoded through the old one's
// Interner.
func (r *internedRun) restore() {
	var es []flowcore.StateEntry
	for k, v := range r.store {
		var ns uint16
		fmt.Sscan(k[0], &ns)
		es = append(es, flowcore.StateEntry{Namespace: ns, Key: []byte(k[1]), Value: v})
	}
	slices.SortFunc(es, func(a, b flowcore.StateEntry) int {
		if a.Namespace != b.Namespace {
			return int(a.Namespace) - int(b.Namespace)
		}
		return bytes.Compare(a.Key, b.Key)
	})
	fr := r.plan.NewFragment(0)
	for _, e := range es {
		if err := fr.Restore(e); err != nil {
			r.t.Fatal(err)
		}
	}
	fr.Restored()
	r.fr = fr
	copy(r.end, r.ckEnd)
	for p, rd := range r.readers {
		if err := rd.Rewind(r.end[p]); err != nil {
			r.t.Fatal(err)
		}
	}
}

func (r *internedRun) view(name string) map[string]int64 {
	a, err := r.fr.Query(splice.Request{View: name, Op: splice.OpEntries, Query: splice.Query{Limit: 1 << 20}})
	if err != nil {
		r.t.Fatal(err)
	}
	m := map[string]int64{}
	for _, e := range a.Entries {
		m[e.Key] = e.Value.(int64)
	}
	// Each key found again alone (the index, not the rows' scan).
	for k, v := range m {
		a, err := r.fr.Query(splice.Request{View: name, Op: splice.OpKey, Key: k})
		if err != nil {
			r.t.Fatal(err)
		}
		if len(a.Entries) != 1 || a.Entries[0].Value.(int64) != v {
			r.t.Fatalf("%s: key %.40q alone: %v, among all: %d", name, k, a.Entries, v)
		}
	}
	return m
}

// drawKeys draws a pool of keys unlike the examples': empty, longer than
// the Interner keeps (128 bytes) and than the arena packs (256), sharing
// long prefixes (front coding), and one hot key.
func drawKeys(t *rapid.T) []string {
	var keys []string
	n := rapid.IntRange(1, 40).Draw(t, "keys")
	prefix := strings.Repeat("p", rapid.SampledFrom([]int{0, 7, 120, 127, 128, 200, 255, 256, 300}).Draw(t, "prefix"))
	for i := range n {
		switch rapid.IntRange(0, 4).Draw(t, "kind") {
		case 0:
			keys = append(keys, "")
		case 1:
			keys = append(keys, fmt.Sprintf("%s%d", prefix, i))
		case 2:
			keys = append(keys, strings.Repeat(string(rune('a'+i%26)), rapid.IntRange(1, 300).Draw(t, "len")))
		case 3:
			keys = append(keys, fmt.Sprintf("k%d", i))
		default:
			keys = append(keys, prefix+strings.Repeat("q", rapid.IntRange(0, 140).Draw(t, "tail")))
		}
	}
	return keys
}

// Counts, a second count and a sum over one stage, fed as batches from
// another node decoded ahead through the fragment's Interner (key slots,
// arena), interleaved with checkpoints, restores into a new fragment,
// replays of batches already applied (whole or in part), batches dropped
// after a gap and partitions read again, equal counting every event once.
func TestInternedBatchesWithReplaysCountEveryEventOnce(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		keys := drawKeys(t)
		hot := rapid.Float64Range(0, 0.95).Draw(t, "hot")
		parts := rapid.IntRange(1, 3).Draw(t, "partitions")
		ttlFirst := rapid.Bool().Draw(t, "ttl table first")
		et := ttlFirst || rapid.Bool().Draw(t, "event time")
		in := flowstest.NewInput[wideEvent](parts)
		wantN, wantSum := map[string]int64{}, map[string]int64{}
		evs := make([]int, parts)
		for p := range parts {
			evs[p] = rapid.IntRange(0, 400).Draw(t, "events")
			for i := range evs[p] {
				k := keys[0]
				if rapid.Float64Range(0, 1).Draw(t, "u") >= hot {
					k = rapid.SampledFrom(keys).Draw(t, "key")
				}
				e := wideEvent{K: k, N: int64(i%7 - 3)}
				switch rapid.IntRange(0, 3).Draw(t, "pad") {
				case 0:
					e.Pad = k
				case 1:
					e.Pad = strings.Repeat("z", rapid.IntRange(60, 200).Draw(t, "pad len"))
				case 2:
					e.B = []byte(k)
				}
				in.Push(p, e)
				wantN[k]++
				wantSum[k] += e.N
			}
		}
		in.Close()
		f := flows.New("interned", flows.WithFragments(1))
		var opts []flows.SourceOption
		if et {
			opts = append(opts, flows.WithEventTime(func(e wideEvent) time.Time { return time.Unix(int64(e.N), 0) }, time.Second))
		}
		ks := flows.KeyBy(flows.From(f, "events", in, opts...), func(e wideEvent) string { return e.K })
		if ttlFirst {
			// First on the stage, it is the table the decoding finds
			// keys in (its state expires at the input's end: not
			// compared).
			flows.Count(ks, flows.WithStateTTL(1000*time.Hour))
		}
		flows.Count(ks).View("counts")
		flows.Aggregate(ks, func() int64 { return 0 }, func(a int64, e wideEvent) int64 { return a + e.N }).View("sums")
		flows.Count(ks).View("counts2")
		plan, err := flowcore.Compile(f)
		if err != nil {
			t.Fatal(err)
		}
		r := &internedRun{t: t, plan: plan, fr: plan.NewFragment(0), end: make([]int64, parts), sent: make([][][]byte, parts),
			store: map[[2]string][]byte{}, ckEnd: make([]int64, parts)}
		for p := range parts {
			rd, err := plan.OpenReader(0, p, 0, rapid.IntRange(1, 64).Draw(t, "batch"))
			if err != nil {
				t.Fatal(err)
			}
			defer rd.Close()
			r.readers = append(r.readers, rd)
		}
		for range rapid.IntRange(0, 200).Draw(t, "steps") {
			switch rapid.IntRange(0, 9).Draw(t, "step") {
			case 0, 1, 2:
				p := rapid.IntRange(0, parts-1).Draw(t, "p")
				r.readers[p].EncodeAhead(0, rapid.Bool().Draw(t, "ahead"))
				r.poll(p, rapid.IntRange(1, 100).Draw(t, "poll"))
			case 3, 4, 5:
				if len(r.pending) > 0 {
					i := 0
					if rapid.IntRange(0, 4).Draw(t, "reorder") == 0 {
						i = rapid.IntRange(0, len(r.pending)-1).Draw(t, "i")
					}
					r.apply(i)
				}
			case 6:
				r.checkpoint()
			case 7:
				r.restore()
			case 8:
				p := rapid.IntRange(0, parts-1).Draw(t, "p")
				if len(r.sent[p]) > 0 {
					r.decode(rapid.SampledFrom(r.sent[p]).Draw(t, "replay"))
				}
			case 9:
				for p := range parts {
					r.readers[p].SetBatchSize(rapid.IntRange(1, 64).Draw(t, "batch"))
				}
			}
		}
		for len(r.pending) > 0 {
			r.apply(0)
		}
		for p := range parts {
			if err := r.readers[p].Rewind(r.end[p]); err != nil {
				t.Fatal(err)
			}
			for r.end[p] < int64(evs[p]) {
				r.poll(p, 1000)
				for len(r.pending) > 0 {
					r.apply(0)
				}
			}
		}
		for _, v := range []string{"counts", "counts2"} {
			if got := r.view(v); !maps.Equal(got, wantN) {
				t.Fatalf("%s %v, want %v", v, got, wantN)
			}
		}
		if got := r.view("sums"); !maps.Equal(got, wantSum) {
			t.Fatalf("sums %v, want %v", got, wantSum)
		}
	})
}
