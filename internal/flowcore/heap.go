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
// The hole left at the top goes down to a leaf along the lesser children
// (one comparison a level), and the last element goes up from there
// (rarely more than a level: it is one of the greatest): fewer
// comparisons than sifting the last element down from the top, which
// takes two a level, to about the bottom.
func heapPop[E heapElem[E]](h *[]E) E {
	s := *h
	n := len(s) - 1
	top, last := s[0], s[n]
	var zero E
	s[n] = zero
	s = s[:n]
	*h = s
	if n == 0 {
		return top
	}
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		c := l
		if r := l + 1; r < n && s[r].before(s[l]) {
			c = r
		}
		s[i] = s[c]
		i = c
	}
	for i > 0 {
		p := (i - 1) / 2
		if !last.before(s[p]) {
			break
		}
		s[i] = s[p]
		i = p
	}
	s[i] = last
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
