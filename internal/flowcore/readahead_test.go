package flowcore

import (
	"testing"
	"unsafe"
)

// A read-ahead prefetch changes no memory and faults on no address.
func TestPrefetch3LeavesMemory(t *testing.T) {
	buf := make([]byte, 256)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	p := unsafe.Pointer(&buf[0])
	for off := range len(buf) {
		prefetch3(unsafe.Add(p, off), nil, unsafe.Add(p, len(buf)-1-off))
	}
	for i := range buf {
		if buf[i] != byte(i*7) {
			t.Fatalf("byte %d is %d after the prefetches, want %d", i, buf[i], byte(i*7))
		}
	}
}
