package freeport

import (
	"net"
	"strconv"
	"testing"
	"time"
)

func TestAddrIsFreeAndBelowEphemeral(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		addr, err := Addr()
		if err != nil {
			t.Fatal(err)
		}
		_, p, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(p)
		if port < low || port >= high {
			t.Fatalf("port %d outside [%d, %d)", port, low, high)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("%s is not free: %v", addr, err)
		}
		ln.Close()
		seen[addr] = true
	}
	if len(seen) < 40 {
		t.Fatalf("only %d distinct ports in 50 picks", len(seen))
	}
}

func TestClaimedPortIsNotHandedOutAgain(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(low+int(time.Now().UnixNano()%int64(high-low)))
	first := claim(addr)
	if claim(addr) {
		t.Fatalf("%s claimed twice (first claim: %v)", addr, first)
	}
}
