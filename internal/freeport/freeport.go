// Package freeport finds loopback ports for the nodes that tests and
// benchmarks start.
//
// A port the kernel hands out for ":0" comes from its ephemeral range,
// which is also where every outgoing connection takes its local port: one
// of the many connections a test makes can take the port between the
// check and the child process binding it. Ports here come from below that
// range (32768 and up on Linux), at random. Callers in other processes (go
// test runs packages side by side) could still pick the same port between
// one's check and its child's bind: a port handed out is claimed for
// claimFor by a file in a directory every caller on the machine shares,
// and no other caller takes it meanwhile.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

const (
	low  = 20000
	high = 32000
	// claimFor is how long a port handed out stays claimed: longer than
	// a test keeps a node's ports across its restarts.
	claimFor = 15 * time.Minute
)

// Addr returns "127.0.0.1:port" for a port that is free for TCP and UDP
// (a gossip port needs both).
func Addr() (string, error) {
	for range 200 {
		addr := fmt.Sprintf("127.0.0.1:%d", low+rand.IntN(high-low))
		if free(addr) && claim(addr) {
			return addr, nil
		}
	}
	return "", fmt.Errorf("no free port on 127.0.0.1 in [%d, %d)", low, high)
}

func free(addr string) bool {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	pc.Close()
	return true
}

// claim marks addr's port as handed out, unless another caller did so
// within claimFor; it says whether the port is this caller's. Without a
// usable directory nothing is claimed and every free port is taken.
func claim(addr string) bool {
	_, port, _ := net.SplitHostPort(addr)
	dir := filepath.Join(os.TempDir(), "tessera-freeport")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return true
	}
	name := filepath.Join(dir, port)
	f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
	if err == nil {
		f.Close()
		return true
	}
	fi, serr := os.Stat(name)
	if serr != nil || time.Since(fi.ModTime()) < claimFor {
		return false
	}
	// A stale claim: renew it, unless another caller renewed it first.
	stale := name + "." + strconv.Itoa(os.Getpid()) + ".stale"
	if os.Rename(name, stale) != nil {
		return false
	}
	os.Remove(stale)
	f, err = os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
	if err != nil {
		return false
	}
	f.Close()
	return true
}
