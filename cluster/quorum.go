package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/tessera-streams/tessera/actor"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/shard"
)

// agreedFile is where a node keeps the membership of the last placement it
// applied (DataDir/membership.json): a restarted node counts its majority
// against it before it places (settle), as a running node does against its
// last placement (follow).
const agreedFile = "membership.json"

// agreed is the last agreed membership: the members of a placement a node
// applied and its epoch, the agreed memberships before it
// (shard.Agreement), and the newest placement epoch the node caught up
// with (Caught; actor.Engine.CaughtUp). A file kept before Before
// existed has none, and is not cut: the rule is then a majority of
// Members alone, as it was.
type agreed struct {
	Epoch   uint64         `json:"epoch"`
	Members []string       `json:"members"`
	Before  []shard.Placed `json:"before,omitempty"`
	Cut     bool           `json:"cut,omitempty"`
	Caught  uint64         `json:"caught,omitempty"`
}

func (a agreed) agreement() shard.Agreement {
	return shard.Agreement{Placed: shard.Placed{Epoch: a.Epoch, Members: a.Members}, Before: a.Before, Cut: a.Cut}
}

// next is the agreed membership once the node applies p, a being the one
// its side counted against and own its own (shard.Agreement.Extend,
// Next).
func (a agreed) next(p Placement, own agreed) agreed {
	g := a.agreement().Extend(own.agreement()).Next(shard.Placed{Epoch: p.Epoch, Members: p.Members}, own.Caught)
	return agreed{Epoch: g.Epoch, Members: g.Members, Before: g.Before, Cut: g.Cut, Caught: own.Caught}
}

// loadAgreed reads the last agreed membership kept in dir; none (zero) if
// dir is empty or holds none yet.
func loadAgreed(dir string) (agreed, error) {
	if dir == "" {
		return agreed{}, nil
	}
	b, err := os.ReadFile(filepath.Join(dir, agreedFile))
	if errors.Is(err, fs.ErrNotExist) {
		return agreed{}, nil
	}
	if err != nil {
		return agreed{}, fmt.Errorf("read the last agreed membership: %w", err)
	}
	var a agreed
	if err := json.Unmarshal(b, &a); err != nil {
		return agreed{}, fmt.Errorf("read the last agreed membership %s: %w", filepath.Join(dir, agreedFile), err)
	}
	return a, nil
}

// saveAgreed keeps a in dir (written aside, then renamed: a crash leaves
// the old one or the new one).
func saveAgreed(dir string, a agreed) error {
	if dir == "" {
		return nil
	}
	b, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("keep the agreed membership: %w", err)
	}
	tmp := filepath.Join(dir, agreedFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("keep the agreed membership: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, agreedFile)); err != nil {
		return fmt.Errorf("keep the agreed membership: %w", err)
	}
	return nil
}

// side is what this node sees of the cluster for the majority rule: the
// live members, leaving or not.
func side(ms []Member, leaving map[string]string) []string {
	out := names(ms)
	for name := range leaving {
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

// lease is how long a round trip with a member (Membership.Heard) counts
// as that member hearing this node, in a cluster whose agreed membership
// has members nodes: a node probes one peer every gossipProbeInterval, so
// each peer about once a round of members probes, and a shuffled round may
// put two probes of a peer up to two rounds apart; the probe timeout on
// top. A node that had no round trip with a majority within the lease
// stops owning (follow); a majority that declares a member dead waits the
// lease before it places without it, so the member stopped first.
func lease(members int) time.Duration {
	return time.Duration(2*max(members, 2))*gossipProbeInterval + gossipProbeTimeout
}

// quorum reports whether side may own under a, the agreed membership
// counted against, with what its members caught up with: this node own's,
// the others' as they gossip it (shard.Agreement.Quorum).
func quorum(a, own agreed, side []string, m *Membership, self string) bool {
	caught := m.Caught()
	caught[self] = own.Caught
	return a.agreement().Quorum(side, caught)
}

// newestAgreed is the agreed membership a node counts its majority
// against: the members of the last placement it applied, or of a newer
// one a peer applied and gossips (Membership.Agreed), as the simulation's
// nodes do. A node that missed placements — cut off, or stopped, while the
// cluster grew or shrank — would otherwise count against members the
// others no longer count: three of an old five it still hears could make
// it a majority beside the true majority of the new membership.
func newestAgreed(own agreed, m *Membership) agreed {
	if peer := m.Agreed(); peer.Epoch > own.Epoch {
		return peer
	}
	return own
}

// fenceConfig is the placement a node that lost its majority assumes the
// others apply: its last one's members without it, at its epoch
// (actor.Engine.Fence).
func fenceConfig(plan *flowcore.Plan, last Placement, self string) *actor.ClusterConfig {
	var others []Member
	for _, m := range last.Members {
		if m != self {
			others = append(others, Member{Name: m, Remote: last.Remotes[m]})
		}
	}
	return Place(plan, others, last.Epoch).engine(self)
}
