package sim

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/tessera-streams/tessera/splice"
)

// Converged reports whether every running node placed the same members at
// the same epoch, every fragment runs on its owner and serves, and every
// source partition has its reader: the cluster is whole again.
func (c *Cluster) Converged() bool {
	up := c.Up()
	if len(up) == 0 {
		return false
	}
	ref := c.nodes[up[0]].placed
	if ref == nil || !slices.Equal(ref.members, up) {
		return false
	}
	for _, name := range up[1:] {
		p := c.nodes[name].placed
		if p == nil || p.epoch != ref.epoch || !slices.Equal(p.members, ref.members) {
			return false
		}
	}
	for f, owner := range ref.layout.Fragments {
		o := c.nodes[owner]
		if o == nil || o.frags[f] == nil || o.frags[f].m.Serving() != nil || o.frags[f].m.Holding() {
			return false
		}
	}
	for i, owner := range ref.layout.Readers {
		if o := c.nodes[owner]; o == nil || o.readers[i] == nil {
			return false
		}
	}
	return true
}

// Views implements splice.Gatherer.
func (c *Cluster) Views() []splice.Spec { return c.plan.Views() }

// Gather implements splice.Gatherer: each fragment is asked of its owner
// in the placement of the first running node (a query lands on one node
// and goes to the owners it knows). A fragment whose owner does not run it
// or cannot serve it makes the answer fail.
func (c *Cluster) Gather(_ context.Context, req splice.Request, only int) ([]splice.Answer, error) {
	up := c.Up()
	if len(up) == 0 {
		return nil, fmt.Errorf("sim: no node is running")
	}
	p := c.nodes[up[0]].placed
	if p == nil {
		return nil, fmt.Errorf("sim: %s has not placed yet", up[0])
	}
	var out []splice.Answer
	for f, owner := range p.layout.Fragments {
		if only >= 0 && f != only {
			continue
		}
		o := c.nodes[owner]
		var fr *frag
		if o != nil && o.up {
			fr = o.frags[f]
		}
		if fr == nil {
			return nil, &splice.UnavailableError{Fragments: []int{f}, Reason: fmt.Sprintf("%s does not run fragment %d", owner, f)}
		}
		if err := fr.m.Serving(); err != nil {
			return nil, &splice.UnavailableError{Fragments: []int{f}, Reason: err.Error()}
		}
		a, err := fr.m.Fragment().Query(req)
		if err != nil {
			return nil, err
		}
		a.Freshness = splice.Freshness{Fragment: f, Epoch: fr.m.Epoch(), Complete: fr.m.Fragment().Complete()}
		out = append(out, a)
	}
	return out, nil
}

// Freshness implements splice.Gatherer.
func (c *Cluster) Freshness() []splice.Freshness {
	out := make([]splice.Freshness, c.plan.Fragments())
	for f := range out {
		out[f].Fragment = f
	}
	return out
}

// Query evaluates a request over the cluster, as a node's HTTP API does.
func (c *Cluster) Query(req splice.Request) (splice.Result, error) {
	return splice.Evaluate(context.Background(), c, req)
}

// Placement describes the placement each running node applied: its epoch
// and members, and the fragments and source partitions each member owns.
// Nodes that agree share a paragraph.
func (c *Cluster) Placement() string {
	var b strings.Builder
	seen := map[string][]string{}
	var order []string
	for _, name := range c.Up() {
		p := c.nodes[name].placed
		var d strings.Builder
		switch n := c.nodes[name]; {
		case n.follow.Fenced():
			fmt.Fprintf(&d, "  fenced: no majority of %s (epoch %d); owns nothing\n", strings.Join(n.agreed, " "), n.agreedEpoch)
		case n.follow.Away():
			fmt.Fprintf(&d, "  back from a fence (epoch %d): waits to resume or place; owns nothing\n", n.follow.Epoch())
		case p == nil:
			d.WriteString("  not placed yet\n")
		default:
			fmt.Fprintf(&d, "  epoch %d, members %s", p.epoch, strings.Join(p.members, " "))
			if len(p.leaving) > 0 {
				fmt.Fprintf(&d, ", leaving %s", strings.Join(p.leaving, " "))
			}
			d.WriteString("\n")
			for _, m := range p.members {
				var fs, rs []string
				for f, o := range p.layout.Fragments {
					if o == m {
						fs = append(fs, fmt.Sprint(f))
					}
				}
				for i, o := range p.layout.Readers {
					if o == m {
						rs = append(rs, c.plan.PartitionName(c.parts[i].source, c.parts[i].partition))
					}
				}
				fmt.Fprintf(&d, "  %s: fragments %s; reads %s\n", m, orNone(fs), orNone(rs))
			}
		}
		k := d.String()
		if _, ok := seen[k]; !ok {
			order = append(order, k)
		}
		seen[k] = append(seen[k], name)
	}
	if len(order) == 0 {
		return "no node is running\n"
	}
	for _, k := range order {
		fmt.Fprintf(&b, "%s:\n%s", strings.Join(seen[k], " "), k)
	}
	return b.String()
}

func orNone(xs []string) string {
	if len(xs) == 0 {
		return "none"
	}
	return strings.Join(xs, " ")
}

// Status describes every fragment each running node runs: its
// checkpoint epoch and placement epoch, its offset vector, and whether
// it waits, is down or holds input back.
func (c *Cluster) Status() string {
	var b strings.Builder
	for _, name := range c.Up() {
		n := c.nodes[name]
		for _, f := range sortedKeys(n.frags) {
			m := n.frags[f].m
			fmt.Fprintf(&b, "%s fragment %d: epoch %d, placement %d", name, f, m.Epoch(), m.PlacementEpoch())
			if err := m.Serving(); err != nil {
				fmt.Fprintf(&b, " (%v)", err)
			}
			if m.Holding() {
				b.WriteString(" (holding)")
			}
			if u := m.Unacknowledged(); u > 0 {
				fmt.Fprintf(&b, ", %d unacknowledged", u)
			}
			snap := m.Vector().Snapshot()
			var ps []string
			for p, end := range snap {
				ps = append(ps, fmt.Sprintf("%s=%d", c.plan.PartitionName(p.Source, p.Partition), end))
			}
			slices.Sort(ps)
			fmt.Fprintf(&b, "; %s\n", strings.Join(ps, " "))
		}
	}
	return b.String()
}
