package flowcore

import "unsafe"

// canPrefetch reports whether prefetch3 and prefetchLines ask the CPU for
// anything.
const canPrefetch = true

// prefetch3 asks the CPU to bring the lines at a, b and c into its caches,
// and returns without waiting for them. A prefetch neither faults nor
// changes memory: any address may be given. Three at once, as a bulk
// count wants them, since a call of assembly is not inlined.
//
//go:noescape
func prefetch3(a, b, c unsafe.Pointer)

// prefetchLines asks the CPU for the lines of the n bytes at p, to be
// written, and returns without waiting for them.
//
//go:noescape
func prefetchLines(p unsafe.Pointer, n uintptr)
