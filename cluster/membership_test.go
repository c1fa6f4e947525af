package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"

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
	a := startMember(t, "a", nil, meta(0))
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
	if err := c.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	eventually(t, "c left", agree("a,b", all[:2]), all[:2]...)
	e2 := a.Epoch()
	if e2 <= e3 {
		t.Fatalf("epoch %d after a leave, %d before", e2, e3)
	}
	b.Shutdown() // a crash: no goodbye
	start := time.Now()
	eventually(t, "b declared dead", agree("a", all[:1]))
	t.Logf("crash detected in %v", time.Since(start))
	if a.Epoch() <= e2 {
		t.Fatalf("epoch %d after a crash, %d before", a.Epoch(), e2)
	}
	a.Shutdown()
}

// A node running another flow is refused, with an error on its side.
func TestMembershipRefusesAnotherFlow(t *testing.T) {
	a := startMember(t, "a", nil, &wire.Meta{Flow: "f", Fragments: 8, Version: "1"})
	defer a.Shutdown()
	for _, meta := range []*wire.Meta{
		{Flow: "g", Fragments: 8, Version: "1"},
		{Flow: "f", Fragments: 16, Version: "1"},
		{Flow: "f", Fragments: 8, Version: "2"},
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
