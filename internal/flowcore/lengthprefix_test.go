package flowcore

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// A length written in the one byte reserved for it, or moving what follows
// when it takes more, reads back as a length-prefixed field.
func TestPutShortLength(t *testing.T) {
	for _, n := range []int{0, 1, 127, 128, 300, 16383, 16384, 1 << 21} {
		body := make([]byte, n)
		for i := range body {
			body[i] = byte(i * 7)
		}
		dst := append([]byte("head"), 0)
		dst = putShortLength(append(dst, body...), 4)
		want := binary.AppendUvarint([]byte("head"), uint64(n))
		if want = append(want, body...); !bytes.Equal(dst, want) {
			t.Fatalf("length %d: wrote %d bytes, want %d (or different ones)", n, len(dst), len(want))
		}
	}
}
