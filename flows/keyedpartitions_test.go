package flows_test

import (
	"strconv"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/shard"
)

// A key's partition under WithKeyedPartitions (KeyPartition) is its
// fragment mod the partitions, for string and integer keys: the fragment
// a keyed view finds the key in, which is where KeyBy routes it. So a
// partition's keys all belong to the fragments its reader is placed with
// (shard.Spec). The ingest connectors partition keyed events by it.
func TestKeyPartitionIsTheFragmentModThePartitions(t *testing.T) {
	plans := map[int]*flowcore.Plan{}
	for _, parts := range []int{1, 2, 4, 8} {
		f := flows.New("keyed", flows.WithFragments(16))
		in := flowstest.NewInput[string](parts)
		in.Close()
		words := flows.From(f, "words", in, flows.WithKeyedPartitions())
		flows.Count(flows.KeyBy(words, func(w string) string { return w })).View("counts")
		flows.Count(flows.KeyBy(words, func(w string) int64 { return int64(len(w)) * 7919 })).View("lengths")
		p, err := flowcore.Compile(f)
		if err != nil {
			t.Fatal(err)
		}
		if p.KeyGroups() != parts {
			t.Fatalf("%d keyed partitions: %d key groups", parts, p.KeyGroups())
		}
		plans[parts] = p
	}
	rapid.Check(t, func(t *rapid.T) {
		parts := rapid.SampledFrom([]int{1, 2, 4, 8}).Draw(t, "partitions")
		w := rapid.String().Draw(t, "word")
		views := plans[parts].Views()
		frag, err := views[0].FragmentOf(w)
		if err != nil {
			t.Fatal(err)
		}
		if p, err := flows.KeyPartition(w, parts); err != nil || p != frag%parts {
			t.Fatalf("KeyPartition(%q, %d) = %d, %v; its fragment %d", w, parts, p, err, frag)
		}
		// The ingest connectors' partition of a keyed event.
		if p, _ := flows.KeyPartition(w, parts); p != shard.Fragment(shard.String(w), parts) {
			t.Fatalf("KeyPartition(%q, %d) = %d, the ingest connectors' partition %d", w, parts, p, shard.Fragment(shard.String(w), parts))
		}
		n := int64(len(w)) * 7919
		frag, err = views[1].FragmentOf(flowcoreKey(n))
		if err != nil {
			t.Fatal(err)
		}
		if p, err := flows.KeyPartition(n, parts); err != nil || p != frag%parts {
			t.Fatalf("KeyPartition(%d, %d) = %d, %v; its fragment %d", n, parts, p, err, frag)
		}
	})
	if _, err := flows.KeyPartition("a", 0); err == nil {
		t.Fatal("KeyPartition with no partitions: no error")
	}
}

// flowcoreKey is an integer key as a view's query names it.
func flowcoreKey(n int64) string { return strconv.FormatInt(n, 10) }

// A flow whose keyed partitions do not divide its fragments, or whose
// keyed sources differ in partitions, fails to build.
func TestKeyedPartitionsMustDivideTheFragments(t *testing.T) {
	build := func(fragments int, parts ...int) error {
		f := flows.New("keyed", flows.WithFragments(fragments))
		for i, n := range parts {
			in := flowstest.NewInput[string](n)
			in.Close()
			s := flows.From(f, string(rune('a'+i)), in, flows.WithKeyedPartitions())
			flows.Count(flows.KeyBy(s, func(w string) string { return w })).View("counts" + string(rune('a'+i)))
		}
		_, err := flowcore.Compile(f)
		return err
	}
	if err := build(64, 4, 4); err != nil {
		t.Fatalf("4 and 4 keyed partitions of 64 fragments: %v", err)
	}
	for _, c := range []struct {
		fragments int
		parts     []int
		want      string
	}{
		{64, []int{3}, "do not divide"},
		{8, []int{16}, "do not divide"},
		{64, []int{4, 8}, "must have as many"},
	} {
		err := build(c.fragments, c.parts...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%d fragments, keyed partitions %v: %v, want an error saying %q", c.fragments, c.parts, err, c.want)
		}
	}
}
