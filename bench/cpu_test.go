package main

import (
	"os"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	// utime 1234 and stime 56 ticks; the command holds spaces and ')'.
	line := "4242 (bench (node) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 1234 56 0 0 20 0 9 0 100 2000000 3000 18446744073709551615\n"
	got, err := parseStatCPU([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if want := 12900 * time.Millisecond; got != want {
		t.Errorf("parseStatCPU = %v, want %v", got, want)
	}
	for _, bad := range []string{"", "4242 bench S 1", "4242 (bench) S 1 2 3", "4242 (bench) S 1 4242 4242 0 -1 4194560 1000 0 0 0 x 56 0"} {
		if d, err := parseStatCPU([]byte(bad)); err == nil {
			t.Errorf("parseStatCPU(%q) = %v, want an error", bad, d)
		}
	}
}

// procCPU of this process agrees with getrusage once it has burnt CPU.
func TestProcCPU(t *testing.T) {
	start := cpuTime()
	x := 0
	for cpuTime()-start < 300*time.Millisecond {
		for i := range 100_000 {
			x += i
		}
	}
	self := cpuTime()
	proc, err := procCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if d := self - proc; d < -50*time.Millisecond || d > 50*time.Millisecond {
		t.Errorf("/proc/self/stat says %v of CPU, getrusage %v (%d)", proc, self, x)
	}
}
