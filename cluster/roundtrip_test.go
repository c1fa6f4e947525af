package cluster

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/tessera-streams/tessera/internal/wire"
	"github.com/tessera-streams/tessera/shard"
)

// A heartbeat's echo is a round trip as of when the heartbeat went, however
// late it comes back: a node whose peers answer slowly (a loaded machine)
// keeps its majority as long as the whole round trip fits in the lease.
// Echoes of heartbeats never sent or long forgotten, and from nodes that
// are not live members, count for nothing, and a late echo never moves a
// round trip back.
func TestHeartbeatEchoIsARoundTripFromItsSending(t *testing.T) {
	m := &Membership{cfg: MemberConfig{Name: "a"}, peers: map[string]peer{"b": {gossip: "127.0.0.1:7001"}},
		contact: map[string]time.Time{}, echoes: make(chan beatMsg, 1)}
	now := time.Now()
	lease := lease(3)

	m.onBeat(encodeBeat(msgHeartbeat, 41, "b"))
	e := <-m.echoes
	if e.to != (memberlist.Address{Addr: "127.0.0.1:7001", Name: "b"}) || !bytes.Equal(e.msg, encodeBeat(msgEcho, 41, "a")) {
		t.Fatalf("a heartbeat from b is echoed as %+v", e)
	}

	late := m.beats.next(now.Add(-lease + 200*time.Millisecond)) // sent 1.4 s ago, echoed only now
	m.onBeat(encodeBeat(msgEcho, late, "b"))
	if h := m.Heard(lease); !slices.Equal(h, []string{"a", "b"}) {
		t.Fatalf("heard %v within the lease after an echo of 1.4 s, want a and b", h)
	}
	if h := m.Heard(time.Second); !slices.Equal(h, []string{"a"}) {
		t.Fatalf("heard %v within 1 s: the echo counted from its arrival, not from its heartbeat", h)
	}

	older := m.beats.next(now.Add(-5 * time.Second))
	m.contact["b"] = now
	m.onBeat(encodeBeat(msgEcho, older, "b"))
	if !m.contact["b"].Equal(now) {
		t.Fatal("a late echo moved the round trip back")
	}

	delete(m.contact, "b")
	m.onBeat(encodeBeat(msgEcho, m.beats.seq, "b")) // never sent
	m.onBeat(encodeBeat(msgEcho, late, "c"))        // not a member
	m.onBeat(encodeBeat(msgEcho, late, "a"))        // itself
	for range heartbeats {
		m.beats.next(now)
	}
	m.onBeat(encodeBeat(msgEcho, late, "b")) // forgotten
	if h := m.Heard(time.Hour); !slices.Equal(h, []string{"a"}) || m.echoed != 2 {
		t.Fatalf("heard %v after echoes that do not count (%d counted, want the 2 above)", h, m.echoed)
	}
}

// Two members on loopback echo each other's heartbeats, and the last
// placement one applied reaches the other by gossip.
func TestGossipCarriesHeartbeatsAndTheAgreedMembership(t *testing.T) {
	meta := &wire.Meta{Remote: "127.0.0.1:9000", Flow: "f", Fragments: 8, Version: "1"}
	a := startMember(t, "a", nil, meta)
	defer a.Shutdown()
	b := startMember(t, "b", []string{a.Addr()}, meta)
	defer b.Shutdown()
	echoed := func(m *Membership) uint64 {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.echoed
	}
	eventually(t, "both members echoed", func() bool { return echoed(a) > 0 && echoed(b) > 0 }, a, b)

	a.SetAgreed(agreed{Epoch: 5, Members: []string{"a", "b"}, Before: []shard.Placed{{Epoch: 3, Members: []string{"a"}}}, Cut: true, Caught: 3})
	eventually(t, "b learns a's agreed membership", func() bool {
		g := b.Agreed()
		return g.Epoch == 5 && slices.Equal(g.Members, []string{"a", "b"}) && len(g.Before) == 1 &&
			g.Before[0].Epoch == 3 && slices.Equal(g.Before[0].Members, []string{"a"}) && g.Cut && b.Caught()["a"] == 3
	}, a, b)
	if g := a.Agreed(); g.Epoch != 0 {
		t.Errorf("a counts its own gossip as a peer's (epoch %d)", g.Epoch)
	}
}

func FuzzDecodeBeat(f *testing.F) {
	f.Add(encodeBeat(msgHeartbeat, 7, "n1"))
	f.Add(encodeBeat(msgEcho, 1<<40, "node-2"))
	f.Add([]byte{msgEcho, 0x80})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		kind, seq, name, ok := decodeBeat(b)
		if !ok {
			return
		}
		if name == "" {
			t.Fatalf("decoded %x without a name", b)
		}
		if again := encodeBeat(kind, seq, name); len(again) > len(b) {
			t.Fatalf("decoded %x as %d %d %q, which encodes longer: %x", b, kind, seq, name, again)
		}
	})
}
