//go:build !amd64

package flowcore

import "unsafe"

// canPrefetch: no prefetch is written for this architecture, prefetchLines
// and prefetch3 do nothing (see readahead_amd64.go), and a bulk count reads
// ahead with loads.
const canPrefetch = false

func prefetch3(a, b, c unsafe.Pointer) {}

func prefetchLines(p unsafe.Pointer, n uintptr) {}
