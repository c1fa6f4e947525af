package cluster

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/tessera-streams/tessera/actor"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/shard"
)

// Placement is where a flow's fragments and source partitions run: every
// node computes the same one from the same members (rendezvous hashing).
type Placement struct {
	Epoch     uint64            `json:"epoch"`
	Members   []string          `json:"members"`
	Fragments []string          `json:"fragments"` // owner of each fragment
	Readers   []string          `json:"readers"`   // owner of each source partition, in source order
	Remotes   map[string]string `json:"-"`
}

// Place computes the placement of plan over members. Source partition i is
// placed as if it were fragment fragments+i, so that partitions spread
// independently of fragments.
func Place(plan *flows.Plan, members []Member, epoch uint64) Placement {
	p := Placement{Epoch: epoch, Remotes: map[string]string{}}
	for _, m := range members {
		p.Members = append(p.Members, m.Name)
		p.Remotes[m.Name] = m.Remote
	}
	slices.Sort(p.Members)
	g := plan.Fragments()
	tab := shard.Assign(p.Members, g, 1)
	for f := range g {
		p.Fragments = append(p.Fragments, tab.Owner(f))
	}
	i := 0
	for _, s := range plan.Sources() {
		for range s.Partitions {
			p.Readers = append(p.Readers, shard.Place(g+i, p.Members, 1)[0])
			i++
		}
	}
	return p
}

func (p Placement) engine(self string) *actor.ClusterConfig {
	return &actor.ClusterConfig{Self: self, Remote: p.Remotes[self], Epoch: p.Epoch,
		Fragments: p.Fragments, Readers: p.Readers, Remotes: p.Remotes}
}

// settle waits until at least expect members are alive and the member list
// and epoch have not changed for a second, then returns the placement.
func (n *Node) settle(ctx context.Context, m *Membership, plan *flows.Plan, expect int) (Placement, error) {
	var last string
	var since, logged time.Time
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		ms := m.Members()
		key := fmt.Sprint(names(ms), m.Epoch())
		now := time.Now()
		if key != last {
			last, since = key, now
		}
		if len(ms) >= expect && now.Sub(since) >= time.Second {
			return Place(plan, ms, m.Epoch()), nil
		}
		if now.Sub(logged) >= 2*time.Second {
			logged = now
			n.cfg.Logger.Info("waiting for the cluster to settle", "members", names(ms), "expect", expect)
		}
		select {
		case <-ctx.Done():
			return Placement{}, ctx.Err()
		case <-t.C:
		}
	}
}

func names(ms []Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return out
}
