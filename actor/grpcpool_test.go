package actor

import "testing"

func TestDirtyPool(t *testing.T) {
	p := &dirtyPool{}
	for _, n := range []int{1, 255, 256, 257, 4096, 300 << 10, 1 << poolMaxShift} {
		b := p.Get(n)
		if len(*b) != n {
			t.Fatalf("Get(%d): len %d", n, len(*b))
		}
		if c := cap(*b); c < n || c&(c-1) != 0 || c < 1<<poolMinShift {
			t.Fatalf("Get(%d): cap %d, want a power of two class at least %d", n, c, n)
		}
		// gRPC puts back a prefix of what it got.
		*b = (*b)[:n/2]
		p.Put(b)
	}
	// A buffer put back is handed out again as it is, not cleared. (A
	// sync.Pool may drop what it holds, so ask until one comes back or
	// the tries run out; without -race it comes back at once.)
	reused := false
	for range 100 {
		b := p.Get(1000)
		(*b)[0] = 0xAB
		p.Put(b)
		if c := p.Get(700); cap(*c) == 1024 && (*c)[0] == 0xAB {
			reused = true
			break
		}
	}
	if !reused {
		t.Error("a 1 KiB buffer was never reused")
	}
	// Outside the classes: allocated, and never kept.
	big := p.Get(1<<poolMaxShift + 1)
	if len(*big) != 1<<poolMaxShift+1 {
		t.Fatalf("Get(over the classes): len %d", len(*big))
	}
	p.Put(big)
	odd := make([]byte, 3000)
	p.Put(&odd)
	if b := p.Get(3000); cap(*b) != 4096 {
		t.Fatalf("Get(3000) after putting back a 3000-byte buffer: cap %d, want 4096", cap(*b))
	}
}
