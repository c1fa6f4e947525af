package flowcore_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
)

// BenchmarkDecodeApplyNode decodes and applies other nodes' batches as one
// node of three does in the three-nodes bench: a keyed count over 100k
// keys in 64 fragments, of which the node owns 21, each fragment's batches
// decoded through its own Interner (which finds keys in its table) and
// applied. The tables hold every key already, as they do after the first
// seconds of a run. It reports the time per event.
func BenchmarkDecodeApplyNode(b *testing.B) {
	const events, keys, fragments, owned, size = 1 << 18, 100_000, 64, 21, 64
	plan, r := keyedNodeReader(b, events, keys, fragments, 4*size, "key-%06d", func(i int) int64 { return int64(i) })
	defer r.Close()
	type part struct {
		frag int
		enc  []byte
		n    int
	}
	var parts []part
	total := 0
	for done := false; !done; {
		n, err := r.Poll(b.Context(), size*fragments) // about size records a fragment
		done = err != nil || n == 0
		for fr := range owned {
			if r.Due(fr) || done {
				bt := r.Take(fr)
				enc, err := plan.EncodeBatch(nil, bt)
				if err != nil {
					b.Fatal(err)
				}
				parts = append(parts, part{fr, enc, bt.Count})
				total += bt.Count
				bt.Release()
			}
		}
	}
	frs := make([]*flowcore.Fragment, owned)
	for i := range frs {
		frs[i] = plan.NewFragment(i)
	}
	apply := func() {
		for _, p := range parts {
			fr := frs[p.frag]
			bt, err := plan.DecodeBatchInterned(p.enc, fr.Interner())
			if err != nil {
				b.Fatal(err)
			}
			if err := fr.Apply(bt, bt.PrevEnd); err != nil {
				b.Fatal(err)
			}
			bt.Release()
		}
	}
	apply() // every key in its table
	b.ResetTimer()
	for range b.N {
		apply()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*total), "ns/event")
}

// BenchmarkEncodeNode encodes batches for other nodes as a reader of the
// three-nodes bench does: the keyed count's events, whose key is a field
// of the event, in batches of about 64 records per fragment. It reports
// the time per event.
func BenchmarkEncodeNode(b *testing.B) {
	const events, keys, fragments, size = 1 << 18, 100_000, 64, 64
	plan, r := keyedNodeReader(b, events, keys, fragments, 4*size, "key-%07d", func(i int) int64 { return int64(i % 1024) })
	defer r.Close()
	var batches []*flowcore.Batch
	total := 0
	for done := false; !done; {
		n, err := r.Poll(b.Context(), size*fragments)
		done = err != nil || n == 0
		for fr := range fragments {
			if r.Due(fr) || done {
				bt := r.Take(fr)
				batches = append(batches, bt)
				total += bt.Count
			}
		}
	}
	buf := make([]byte, 0, 1<<20)
	var bytes int
	b.ResetTimer()
	for range b.N {
		bytes = 0
		for _, bt := range batches {
			enc, err := plan.EncodeBatch(buf[:0], bt)
			if err != nil {
				b.Fatal(err)
			}
			bytes += len(enc)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*total), "ns/event")
	b.ReportMetric(float64(bytes)/float64(total), "B/event")
}

// keyedNodeReader compiles a keyed count over events random picks of keys
// named by format, with event times from ts, and opens its one partition's
// reader with batches of batch records.
func keyedNodeReader(b *testing.B, events, keys, fragments, batch int, format string, ts func(int) int64) (*flowcore.Plan, *flowcore.Reader) {
	b.Helper()
	in := flowstest.NewInput[keyedEvent](1)
	rng := rand.New(rand.NewPCG(7, 8))
	names := make([]string, keys)
	for i := range names {
		names[i] = fmt.Sprintf(format, i)
	}
	for i := range events {
		in.Push(0, keyedEvent{K: names[rng.IntN(keys)], T: ts(i)})
	}
	in.Close()
	f := flows.New("node", flows.WithFragments(fragments))
	flows.Count(flows.KeyBy(flows.From(f, "events", in), func(e keyedEvent) string { return e.K })).View("counts")
	plan, err := flowcore.Compile(f)
	if err != nil {
		b.Fatal(err)
	}
	r, err := plan.OpenReader(0, 0, 0, batch)
	if err != nil {
		b.Fatal(err)
	}
	return plan, r
}

// BenchmarkEncodeAheadNode reads, routes and encodes a reader's batches
// for fragments on other nodes as the three-nodes bench does: polls of 512
// events of the keyed count, every fragment's batch taken and encoded
// every 15 polls (about 120 records, the 5 ms flush of that bench), each
// batch encoded when it is sent (at-send) or as its records are routed
// (ahead, Reader.EncodeAhead). It reports the time per event.
func BenchmarkEncodeAheadNode(b *testing.B) {
	const events, keys, fragments = 1 << 20, 100_000, 64
	for _, ahead := range []bool{false, true} {
		name := "at-send"
		if ahead {
			name = "ahead"
		}
		b.Run(name, func(b *testing.B) {
			buf := make([]byte, 0, 1<<20)
			total := 0
			for range b.N {
				b.StopTimer()
				plan, r := keyedNodeReader(b, events, keys, fragments, 512, "key-%07d", func(i int) int64 { return int64(i % 1024) })
				for f := range fragments {
					r.EncodeAhead(f, ahead)
				}
				b.StartTimer()
				for poll := 0; ; poll++ {
					n, err := r.Poll(b.Context(), 512)
					total += n
					done := err != nil || n == 0
					if poll%15 == 14 || done {
						for f := range fragments {
							bt := r.Take(f)
							if _, err := plan.EncodeBatch(buf[:0], bt); err != nil {
								b.Fatal(err)
							}
							bt.Release()
						}
					}
					if done {
						break
					}
				}
				b.StopTimer()
				r.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(total), "ns/event")
		})
	}
}
