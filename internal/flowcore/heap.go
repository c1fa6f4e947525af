package flowcore

// A binary min-heap over a slice, typed: container/heap boxes every pushed
// element into an interface, an allocation per timer set. Elements order
// themselves (before); equal ones come out in no particular order.

type heapElem[E any] interface{ before(E) bool }

func heapPush[E heapElem[E]](h *[]E, e E) {
	*h = append(*h, e)
	heapUp(*h, len(*h)-1)
}

// heapPop removes and returns the least element (h must not be empty).
func heapPop[E heapElem[E]](h *[]E) E {
	s := *h
	n := len(s) - 1
	top := s[0]
	s[0] = s[n]
	var zero E
	s[n] = zero
	*h = s[:n]
	heapDown(*h, 0)
	return top
}

// heapFix restores the order after element i changed.
func heapFix[E heapElem[E]](h []E, i int) {
	if !heapDown(h, i) {
		heapUp(h, i)
	}
}

func heapUp[E heapElem[E]](h []E, i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h[i].before(h[p]) {
			return
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

// heapDown sifts element i down; it says whether it moved.
func heapDown[E heapElem[E]](h []E, i int) bool {
	start := i
	for {
		l := 2*i + 1
		if l >= len(h) {
			break
		}
		c := l
		if r := l + 1; r < len(h) && h[r].before(h[l]) {
			c = r
		}
		if !h[c].before(h[i]) {
			break
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
	return i > start
}
