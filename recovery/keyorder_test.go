package recovery

import (
	"bytes"
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// A checkpoint is written in key order, yet a key listed twice keeps the
// value listed last, and the entries come back whole.
func TestWriteInKeyOrderKeepsLastValue(t *testing.T) {
	s, err := Open("db", vfs.NewMem(), quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cp := &Checkpoint{Manifest: Manifest{Epoch: 1, Fragments: 4, Entries: 4}, Puts: []Entry{
		{Namespace: 2, Key: []byte("b"), Value: []byte("b1")},
		{Namespace: 0, Key: []byte("z"), Value: []byte("z")},
		{Namespace: 2, Key: []byte("a"), Value: []byte("a")},
		{Namespace: 2, Key: []byte("b"), Value: []byte("b2")},
		{Namespace: 1, Key: []byte("b"), Value: []byte("nb")},
	}}
	if _, err := s.Write("f", 3, cp); err != nil {
		t.Fatal(err)
	}
	var got []string
	if _, ok, err := s.Load("f", 3, func(e Entry) error {
		got = append(got, fmt.Sprintf("%d/%s=%s", e.Namespace, e.Key, e.Value))
		return nil
	}); err != nil || !ok {
		t.Fatalf("load: %v %v", ok, err)
	}
	if want := "[0/z=z 1/b=nb 2/a=a 2/b=b2]"; fmt.Sprint(got) != want {
		t.Fatalf("loaded %v, want %s", got, want)
	}
	if cp.Puts[0].Value[1] != '1' || cp.Puts[1].Namespace != 0 {
		t.Fatalf("the checkpoint's entries were reordered: %v", cp.Puts)
	}
}

// BenchmarkWriteCheckpoint writes incremental checkpoints of a fragment of
// 2,000 keys, each changing every key (a keyed count under load), as the
// owner and a standby do every interval.
func BenchmarkWriteCheckpoint(b *testing.B) {
	s, err := Open(b.TempDir(), nil, quiet())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	keys := make([][]byte, 2000)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "key-%07d", rng.IntN(10_000_000))
	}
	b.ReportAllocs()
	for i := range b.N {
		cp := &Checkpoint{Manifest: Manifest{Epoch: uint64(i + 1), Fragments: 64}}
		for _, j := range rng.Perm(len(keys)) {
			cp.Puts = append(cp.Puts, Entry{Namespace: 2, Key: keys[j], Value: []byte{1, 2, 3, 4, 5, 6, 7, 8}})
		}
		if _, err := s.WriteUnsynced("bench", 7, cp); err != nil {
			b.Fatal(err)
		}
	}
}

// keyOrder sorts by namespace, then key, then index, whatever the keys
// share: long common prefixes, keys that end where others go on (padded
// heads tie), zero bytes, keys listed twice, and more entries of one
// namespace than its packed sort takes.
func TestKeyOrderMatchesPlainSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for round := range 200 {
		n := rng.IntN(300)
		if round == 0 {
			n = 1<<16 + 10
		}
		es := make([]Entry, n)
		prefix := []byte("shared-prefix-")[:rng.IntN(15)]
		for i := range es {
			k := append([]byte(nil), prefix...)
			for range rng.IntN(12) {
				k = append(k, []byte{0, 1, 'a', 0xff}[rng.IntN(4)])
			}
			if i > 0 && rng.IntN(8) == 0 {
				k = es[rng.IntN(i)].Key
			}
			es[i] = Entry{Namespace: uint16(rng.IntN(3)), Key: k}
		}
		want := make([]int32, n)
		for i := range want {
			want[i] = int32(i)
		}
		slices.SortStableFunc(want, func(a, b int32) int {
			if c := cmp.Compare(es[a].Namespace, es[b].Namespace); c != 0 {
				return c
			}
			return bytes.Compare(es[a].Key, es[b].Key)
		})
		if got := keyOrder(es); !slices.Equal(got, want) {
			t.Fatalf("round %d: keyOrder of %d entries differs from a stable sort", round, n)
		}
	}
}
