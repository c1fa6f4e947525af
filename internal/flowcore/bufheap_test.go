package flowcore

import (
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// Whatever the pushes and pops, the heap gives back its events in the
// order of cmp, each once.
func TestBufHeapPopsInOrder(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var h bufHeap[string, int]
		var ref []buffered[string, int]
		ops := rapid.SliceOfN(rapid.IntRange(-1, 40), 1, 300).Draw(t, "ops")
		for i, op := range ops {
			if op < 0 || op%5 == 0 {
				if len(ref) == 0 {
					continue
				}
				var got buffered[string, int]
				h.pop(&got)
				j := 0
				for k := range ref {
					if ref[k].cmp(&ref[j]) < 0 {
						j = k
					}
				}
				if got.cmp(&ref[j]) != 0 || got.val != ref[j].val {
					t.Fatalf("op %d: popped %+v, want %+v", i, got, ref[j])
				}
				ref = slices.Delete(ref, j, j+1)
				continue
			}
			// Few distinct times, so the later fields decide often.
			e := buffered[string, int]{ts: int64(op % 7), ch: int32(op % 2), part: int32(op % 3), off: int64(i), val: i}
			h.push(e)
			ref = append(ref, e)
		}
		if len(h) != len(ref) {
			t.Fatalf("%d events held, want %d", len(h), len(ref))
		}
	})
}
