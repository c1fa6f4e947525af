package cluster

import (
	"bytes"
	"fmt"
	"log"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/internal/syncbuf"
	"github.com/tessera-streams/tessera/internal/wire"
)

func startMember(t *testing.T, name string, seeds []string, meta *wire.Meta) *Membership {
	t.Helper()
	m, err := Join(MemberConfig{Name: name, Bind: "127.0.0.1:0", Seeds: seeds, Meta: meta, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// logged reports whether a text-handler log has a line at level with msg
// about node.
func logged(log, level, msg, node string) bool {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "level="+level+" ") && strings.Contains(l, fmt.Sprintf("msg=%q", msg)) && strings.Contains(l, " node="+node+" ") {
			return true
		}
	}
	return false
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool, ms ...*Membership) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("not within 10s: %s\n%s", what, dump(ms))
}

func dump(ms []*Membership) string {
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&b, "%s: epoch %d, members %+v\n", m.cfg.Name, m.Epoch(), m.Members())
	}
	return b.String()
}

func joinNames(ms []Member) string {
	var s []string
	for _, m := range ms {
		s = append(s, m.Name)
	}
	return strings.Join(s, ",")
}

// Three nodes on 127.0.0.1 agree on the members and on the placement
// epoch (the largest any member announces); a
// graceful leave and a crash both reach the others, and the epoch only
// grows.
func TestMembershipConverges(t *testing.T) {
	meta := func(i int) *wire.Meta {
		return &wire.Meta{Remote: fmt.Sprintf("127.0.0.1:%d", 9000+i), Flow: "f", Fragments: 8, Version: "1"}
	}
	var logs syncbuf.Buffer
	a, err := Join(MemberConfig{Name: "a", Bind: "127.0.0.1:0", Meta: meta(0),
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	b := startMember(t, "b", []string{a.Addr()}, meta(1))
	c := startMember(t, "c", []string{a.Addr()}, meta(2))
	all := []*Membership{a, b, c}
	agree := func(want string, live []*Membership) func() bool {
		return func() bool {
			e := live[0].Epoch()
			for _, m := range live {
				if joinNames(m.Members()) != want || m.Epoch() != e {
					return false
				}
			}
			return true
		}
	}
	eventually(t, "three members, one epoch", agree("a,b,c", all), all...)
	e3 := a.Epoch()
	if got := a.Members()[1].Remote; got != "127.0.0.1:9001" {
		t.Fatalf("b's remote address %q", got)
	}
	// As a node that stops does, handing off first. The update may not
	// be broadcast within SetLeaving's second on a busy machine: what
	// counts is that a sees it.
	_ = c.SetLeaving()
	eventually(t, "c leaving", func() bool { _, ok := a.Leaving()["c"]; return ok }, all...)
	if err := c.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	eventually(t, "c left", agree("a,b", all[:2]), all[:2]...)
	// The bump that follows a change runs apart from the member list's
	// update (Membership.loop): the epoch grows soon after, not at once.
	eventually(t, "the epoch grows after a leave", func() bool { return a.Epoch() > e3 }, all[:2]...)
	eventually(t, "a and b agree on the epoch", agree("a,b", all[:2]), all[:2]...)
	e2 := a.Epoch()
	if l := logs.String(); !logged(l, "INFO", "member left", "c") || logged(l, "WARN", "member died", "c") {
		t.Fatalf("a graceful leave is logged at Info, not as a death:\n%s", l)
	}
	b.Shutdown() // a crash: no goodbye
	start := time.Now()
	eventually(t, "b declared dead", agree("a", all[:1]))
	t.Logf("crash detected in %v", time.Since(start))
	if l := logs.String(); !logged(l, "WARN", "member died", "b") {
		t.Fatalf("a death is logged at Warn:\n%s", l)
	}
	eventually(t, "the epoch grows after a crash", func() bool { return a.Epoch() > e2 }, all[:1]...)
	a.Shutdown()
}

// A placement's epoch is the largest a member announced then, and that
// member may restart with a smaller one. A node that joins bumps past
// every placement the members applied (SetAgreed), not only past the
// epochs they announce: below it, it placed alone, the others never placed
// again, and every batch between them was fenced for good
// (internal/alarms TestRollingKillsExact: a node restarted several times
// in a row placed at 16 while the others had applied 17).
func TestJoinBumpsPastTheAppliedPlacement(t *testing.T) {
	meta := func(i int) *wire.Meta {
		return &wire.Meta{Remote: fmt.Sprintf("127.0.0.1:%d", 9000+i), Flow: "f", Fragments: 8, Version: "1"}
	}
	a := startMember(t, "a", nil, meta(0))
	b := startMember(t, "b", []string{a.Addr()}, meta(1))
	eventually(t, "a and b see each other", func() bool {
		return joinNames(a.Members()) == "a,b" && joinNames(b.Members()) == "a,b"
	}, a, b)
	const applied = 40 // announced by a member since restarted with a smaller epoch
	if e := max(a.Epoch(), b.Epoch()); e >= applied {
		t.Fatalf("the members announce epoch %d already: nothing to test", e)
	}
	for _, m := range []*Membership{a, b} {
		m.SetAgreed(agreed{Epoch: applied, Members: []string{"a", "b", "c"}})
	}
	eventually(t, "each hears the other's placement", func() bool {
		return a.Agreed().Epoch == applied && b.Agreed().Epoch == applied
	}, a, b)
	c := startMember(t, "c", []string{a.Addr()}, meta(2))
	all := []*Membership{a, b, c}
	eventually(t, "every member's epoch past the placement applied", func() bool {
		for _, m := range all {
			if len(m.Members()) != 3 || m.Epoch() <= applied {
				return false
			}
		}
		return true
	}, all...)
	// One after another, so that no probe of a member gone waits out its
	// timeout after the test (goleak).
	for i := len(all) - 1; i > 0; i-- {
		if err := all[i].Leave(time.Second); err != nil {
			t.Fatal(err)
		}
		eventually(t, all[i].cfg.Name+" left", func() bool { return len(a.Members()) == i }, all[:i]...)
	}
	a.Shutdown()
}

// A node running another flow is refused, with an error on its side: by
// name, fragments, version, or layout (its stages and stateful operators).
func TestMembershipRefusesAnotherFlow(t *testing.T) {
	a := startMember(t, "a", nil, &wire.Meta{Flow: "f", Fragments: 8, Version: "1", Layout: 7})
	defer a.Shutdown()
	for _, meta := range []*wire.Meta{
		{Flow: "g", Fragments: 8, Version: "1", Layout: 7},
		{Flow: "f", Fragments: 16, Version: "1", Layout: 7},
		{Flow: "f", Fragments: 8, Version: "2", Layout: 7},
		{Flow: "f", Fragments: 8, Version: "1", Layout: 9},
	} {
		_, err := Join(MemberConfig{Name: "x", Bind: "127.0.0.1:0", Seeds: []string{a.Addr()}, Meta: meta, Logger: quiet()})
		if err == nil || !strings.Contains(err.Error(), "this cluster runs") {
			t.Fatalf("%v: joined (%v)", meta, err)
		}
		t.Logf("refused: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if got := joinNames(a.Members()); got != "a" {
		t.Fatalf("members %s", got)
	}
}

// With a gossip key, a node with another key or none cannot join: its
// Join fails and the members never list it.
func TestGossipKeyKeepsStrangersOut(t *testing.T) {
	key := func(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }
	meta := &wire.Meta{Flow: "f", Fragments: 8, Version: "1"}
	join := func(name string, k []byte, seeds []string) (*Membership, error) {
		return Join(MemberConfig{Name: name, Bind: "127.0.0.1:0", Seeds: seeds, Meta: meta, Logger: quiet(), Key: k,
			JoinTimeout: time.Second})
	}
	a, err := join("a", key(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	b, err := join("b", key(1), []string{a.Addr()})
	if err != nil {
		t.Fatalf("a node with the key: %v", err)
	}
	defer b.Shutdown()
	eventually(t, "b joined", func() bool { return joinNames(a.Members()) == "a,b" }, a, b)
	for name, k := range map[string][]byte{"wrong-key": key(2), "no-key": nil} {
		if m, err := join(name, k, []string{a.Addr()}); err == nil {
			m.Shutdown()
			t.Errorf("%s joined", name)
		}
	}
	if got := joinNames(a.Members()); got != "a,b" {
		t.Fatalf("members %s", got)
	}
	if _, err := join("short", []byte("0123456789"), nil); err == nil {
		t.Fatal("a 10-byte key accepted")
	}
}

// memberlist (v0.5.1) says only in a log line that this node refuted the
// news of its own death: the line, as its logger writes it, reaches
// OnDeclaredDead once; a refuted suspicion (the others had not declared
// it dead) and other lines do not.
func TestRefutedDeathReachesOnDeclaredDead(t *testing.T) {
	calls := 0
	w := slogWriter{l: slog.New(slog.DiscardHandler), dead: func() { calls++ }}
	l := log.New(w, "", 0)
	l.Printf("[WARN] memberlist: Refuting a suspect message (from: %s)", "n0")
	l.Printf("[DEBUG] memberlist: Stream connection from=%s", "127.0.0.1:1")
	if calls != 0 {
		t.Fatalf("OnDeclaredDead called %d times for a suspicion", calls)
	}
	l.Printf("[WARN] memberlist: Refuting a dead message (from: %s)", "n0")
	if calls != 1 {
		t.Fatalf("OnDeclaredDead called %d times for a refuted death, want 1", calls)
	}
}
