package flowcore

import (
	"testing"
	"unsafe"
)

// Prefetches change no memory, fault on no address and cover any length,
// aligned or not.
func TestPrefetchesLeaveMemory(t *testing.T) {
	buf := make([]byte, 256)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	p := unsafe.Pointer(&buf[0])
	for off := range len(buf) {
		prefetch3(unsafe.Add(p, off), nil, unsafe.Add(p, len(buf)-1-off))
		for _, n := range []int{0, 1, 63, 64, 65, 130, len(buf) - off} {
			if off+n <= len(buf) {
				prefetchLines(unsafe.Add(p, off), uintptr(n))
			}
		}
	}
	for i := range buf {
		if buf[i] != byte(i*7) {
			t.Fatalf("byte %d is %d after the prefetches, want %d", i, buf[i], byte(i*7))
		}
	}
}
