// Package freeport finds loopback ports for the nodes that tests and
// benchmarks start.
//
// A port the kernel hands out for ":0" comes from its ephemeral range,
// which is also where every outgoing connection takes its local port: one
// of the many connections a test makes can take the port between the
// check and the child process binding it. Ports here come from below that
// range (32768 and up on Linux), at random, so only another caller of this
// package picking the same one at the same moment can collide.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
)

const (
	low  = 20000
	high = 32000
)

// Addr returns "127.0.0.1:port" for a port that is free for TCP and UDP
// (a gossip port needs both).
func Addr() (string, error) {
	for range 200 {
		addr := fmt.Sprintf("127.0.0.1:%d", low+rand.IntN(high-low))
		if free(addr) {
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
