package flows

import (
	"strconv"
	"testing"
	"unsafe"
)

// A key seen again is the same string; the interner stays bounded, and
// rests after a run of strings that never repeat.
func TestInterner(t *testing.T) {
	var in Interner
	a := in.String([]byte("key-1"))
	b := in.String([]byte("key-1"))
	if a != "key-1" || unsafe.StringData(a) != unsafe.StringData(b) {
		t.Fatalf("%q and %q are not one string", a, b)
	}
	if c := in.String([]byte("key-2")); c != "key-2" || unsafe.StringData(c) == unsafe.StringData(a) {
		t.Fatalf("key-2 gave %q", c)
	}
	for i := range 3 * maxInterned {
		if s := in.String([]byte(strconv.Itoa(i))); s != strconv.Itoa(i) {
			t.Fatalf("%d gave %q", i, s)
		}
		if len(in.m) > maxInterned {
			t.Fatalf("%d strings held, at most %d", len(in.m), maxInterned)
		}
	}
	if in.rest == 0 {
		t.Fatal("strings that never repeat did not make the interner rest")
	}
	x, y := in.String([]byte("key-1")), in.String([]byte("key-1"))
	if x != "key-1" || y != "key-1" || unsafe.StringData(x) == unsafe.StringData(y) {
		t.Fatal("a resting interner still interned")
	}
	var none *Interner
	if s := none.String([]byte("k")); s != "k" {
		t.Fatalf("nil interner gave %q", s)
	}
}
