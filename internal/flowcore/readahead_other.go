//go:build !amd64

package flowcore

import "unsafe"

// canPrefetch: no prefetch is written for this architecture, and
// prefetch3 does nothing (see readahead_amd64.go); a bulk count reads
// ahead with loads.
const canPrefetch = false

func prefetch3(a, b, c unsafe.Pointer) {}
