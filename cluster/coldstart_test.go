package cluster

import (
	"testing"
	"time"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/internal/wire"
)

// A node's first placement, when no member runs yet, gathers the live
// members' copies of its fragments before it starts them
// (actor.ClusterConfig.ColdStart) if the cluster placed before: the node
// itself did (its kept membership; sim visits seed 10488), or a member
// gossips a placement it applied while this node, new, has none (sim
// visits seed 53505, where the new node started every fragment from
// nothing beside the copies of the members restarting). A cluster's
// very first start gathers nothing.
func TestFirstPlacementGathersIfTheClusterPlacedBefore(t *testing.T) {
	src, _ := gen.New(gen.Config{Partitions: 2, Seed: 1, Events: 10}, word)
	plan, err := flowcore.Compile(testFlow(src))
	if err != nil {
		t.Fatal(err)
	}
	meta := func(name string, founder bool) *wire.Meta {
		return &wire.Meta{Remote: "127.0.0.1:1", Http: "127.0.0.1:1", Flow: plan.Name(), Fragments: uint32(plan.Fragments()),
			Version: plan.Version(), Founder: founder}
	}
	for _, tc := range []struct {
		name   string
		gossip agreed // what a, restarting and not running yet, applied last
		kept   agreed // what b applied last, from its data directory
		cold   bool
	}{
		{name: "the cluster's first start", cold: false},
		{name: "a placed before, b is new", gossip: agreed{Epoch: 4, Members: []string{"a"}}, cold: true},
		{name: "b placed before", kept: agreed{Epoch: 4, Members: []string{"a", "b"}}, cold: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := startMember(t, "a", nil, meta("a", true))
			defer a.Shutdown()
			if tc.gossip.Epoch > 0 {
				a.SetAgreed(tc.gossip)
			}
			n := &Node{cfg: Config{Name: "b", Join: []string{a.Addr()}, Expect: 2, DataDir: t.TempDir(), Logger: quiet()}}
			n.mem = startMember(t, "b", []string{a.Addr()}, meta("b", false))
			defer func() {
				if err := n.mem.Leave(time.Second); err != nil {
					t.Error(err)
				}
				eventually(t, "b left", func() bool { return len(a.Members()) == 1 }, a)
			}()
			cl, _, err := n.placeFirst(t.Context(), plan, tc.kept)
			if err != nil {
				t.Fatal(err)
			}
			if got := joinNames(a.Members()); got != "a,b" {
				t.Fatalf("placed over %s, not a and b", got)
			}
			if cl.ColdStart != tc.cold {
				t.Fatalf("ColdStart = %v, want %v (placement epoch %d, agreed %+v)", cl.ColdStart, tc.cold, n.place.Epoch, n.agr)
			}
			if cl.AwaitHandoff != nil {
				t.Fatalf("waits for hand-offs %v though no member runs", cl.AwaitHandoff)
			}
		})
	}
}
