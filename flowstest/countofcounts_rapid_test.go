package flowstest_test

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/splice"
)

// A count of counts of counts keyed by integers (the exchanges' compact
// checkpoint entries, a count's runs of one key) over skewed words unlike
// the examples' (empty, longer than 128 and 256 bytes, sharing long
// prefixes), with checkpoints, crashes, restarts and a network that
// loses, duplicates and reorders batches, equals a plain reference: the
// second stage holds, per n, how many words were counted n times or more
// (each word's updates carry 1 to its count); the third, per m, how many
// n the second stage counted m times or more.
func TestCountOfCountsEqualsReference(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		prefix := strings.Repeat("w", rapid.SampledFrom([]int{0, 100, 127, 128, 255, 256, 400}).Draw(t, "prefix"))
		vocab := []string{"", prefix, prefix + "x", strings.Repeat("y", 129)}
		for i := range rapid.IntRange(1, 12).Draw(t, "vocabulary") {
			vocab = append(vocab, prefix+strconv.Itoa(i))
		}
		hot := rapid.Float64Range(0, 0.95).Draw(t, "hot")
		partitions := rapid.IntRange(1, 3).Draw(t, "partitions")
		fragments := rapid.IntRange(1, 5).Draw(t, "fragments")
		sinks := rapid.Bool().Draw(t, "sinks")
		rng := rand.New(rand.NewPCG(rapid.Uint64().Draw(t, "seed"), 1))
		words := make([][]string, partitions)
		count := map[string]int64{}
		for p := range words {
			for range rng.IntN(300) {
				w := vocab[0]
				if rng.Float64() >= hot {
					w = vocab[rng.IntN(len(vocab))]
				}
				words[p] = append(words[p], w)
				count[w]++
			}
		}
		atLeast := func(m map[string]int64) map[string]int64 {
			out := map[string]int64{}
			for _, n := range m {
				for v := int64(1); v <= n; v++ {
					out[strconv.FormatInt(v, 10)]++
				}
			}
			return out
		}
		want := []map[string]int64{count, atLeast(count), atLeast(atLeast(count))}

		in := flowstest.NewInput[string](partitions)
		f := flows.New("spectra", flows.WithFragments(fragments))
		counts := flows.Count(flows.KeyBy(flows.From(f, "words", in), flows.Identity[string])).View("stage0")
		spectrum := flows.Count(flows.KeyBy(counts.Updates(), func(kv flows.KV[string, int64]) int64 { return kv.Value })).View("stage1")
		spectrum2 := flows.Count(flows.KeyBy(spectrum.Updates(), func(kv flows.KV[int64, int64]) int64 { return kv.Value })).View("stage2")
		var got *flowstest.Collector[flows.KV[int64, int64]]
		if sinks {
			// Subscribed to, the last count is applied record by record.
			got = flowstest.Collect(spectrum2.Updates(), flows.OnCheckpoint())
		}
		d, err := flowstest.New(f, time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		d.BatchSize = rapid.IntRange(1, 50).Draw(t, "batch")
		if rapid.Bool().Draw(t, "network faults") {
			d.Faults = flowstest.Faults{Rand: rand.New(rand.NewPCG(rng.Uint64(), 2)), Drop: 0.05, Duplicate: 0.2, Reorder: 0.3}
		}
		must(t, pushInChunks(d, in, words, rng, 60))
		in.Close()
		if err := d.Crash(rng.IntN(fragments)); err != nil {
			t.Fatal(err)
		}
		if err := d.Settle(); err != nil {
			t.Fatal(err)
		}
		for s, w := range want {
			es, err := flowstest.EntriesOf[int64](d, fmt.Sprintf("stage%d", s), splice.Query{Limit: 100000})
			if err != nil {
				t.Fatal(err)
			}
			m := map[string]int64{}
			for _, e := range es {
				m[e.Key] = e.Value
			}
			if !maps.Equal(m, w) {
				t.Fatalf("stage %d: %v, want %v", s, m, w)
			}
		}
		if sinks {
			if err := d.Checkpoint(); err != nil {
				t.Fatal(err)
			}
			// Each key's updates were delivered with 1 to its count, each
			// once by id.
			seen := map[flows.OutputID]flows.KV[int64, int64]{}
			last := map[string]int64{}
			for _, o := range got.Outputs() {
				if prev, ok := seen[o.ID]; ok {
					if prev != o.Value {
						t.Fatalf("output %v delivered as %v, then %v", o.ID, prev, o.Value)
					}
					continue
				}
				seen[o.ID] = o.Value
				k := strconv.FormatInt(o.Value.Key, 10)
				last[k] = max(last[k], o.Value.Value)
			}
			if !maps.Equal(last, want[2]) || len(seen) != int(sum(want[2])) {
				t.Fatalf("sink: %d outputs, largest per key %v, want %d outputs, %v", len(seen), last, sum(want[2]), want[2])
			}
		}
	})
}

func sum(m map[string]int64) int64 {
	n := int64(0)
	for _, v := range m {
		n += v
	}
	return n
}
