package shard

import (
	"slices"
	"time"
)

// FollowConfig is how long a Follower lets the member list stand still
// before it acts on it.
type FollowConfig struct {
	// Start: before a node's first placement, the member list and epoch
	// stand still this long (the others that start at the same time show
	// up meanwhile), and it holds at least Expect members.
	Start  time.Duration
	Expect int
	// Settle: before a later placement. Every node computes the same
	// placement from the same members and epoch; a change that comes in
	// waves (a partition that several nodes detect one by one) is placed
	// once, after the last wave.
	Settle time.Duration
	// Resume: a node back from a fence waits at least this long, so that a
	// newer epoch the others placed meanwhile reaches it before it takes
	// its old placement up again (StepResume).
	Resume time.Duration
	// Retell: how often a node that applied a placement tells its report
	// of it (CatchUp) again to the members that say they have not caught
	// up with it, as a report may be lost (actor.Engine.Retell).
	Retell time.Duration
}

// DefaultFollow is the real cluster's timing (cluster.Node), which the
// simulation uses too.
var DefaultFollow = FollowConfig{Start: time.Second, Settle: 300 * time.Millisecond, Resume: 3 * time.Second, Retell: time.Second}

// View is what a node sees of the cluster at one moment: the input of a
// Follower's Next.
type View struct {
	Now time.Time
	// Members are the live members that stay; Leaving the live ones that
	// announced they leave (they hand off, and own nothing in the next
	// placement). Both sorted.
	Members, Leaving []string
	// Epoch is the placement epoch the members agree on: the largest epoch
	// of a live member, raised on every change of the member list.
	Epoch uint64
	// Agreed is the newest agreed membership the node knows of (its last
	// placement's members, or a newer one a peer applied), and Majority
	// whether the members that hear this node hold a majority of it
	// (Majority): how a member counts as hearing is the caller's — a round
	// trip within the lease over gossip, or a peer's confirmation of a
	// heartbeat in the simulation.
	Agreed   []string
	Majority bool
	// Lease is how long after a member of Agreed died (or was cut off) it
	// may still believe it owns: a placement without it waits this long,
	// so that it stopped first.
	Lease time.Duration
}

// StepKind is what a Follower asks its node to do.
type StepKind int

const (
	// StepWait: nothing to do now.
	StepWait StepKind = iota
	// StepFence: the node lost its majority; it stops every fragment, reader
	// and alert at once, keeping its store, and owns nothing until it
	// sees a majority again (actor.Engine.Fence).
	StepFence
	// StepPlace: apply the placement over Members at Epoch (actor.Engine.Place;
	// the first one starts the engine). Fragments gained from a live
	// owner wait for its hand-off.
	StepPlace
	// StepResume: back from a fence with no newer placement: the node takes up
	// the placement it applied before, at the same epoch, each fragment
	// from its newest local checkpoint (actor.Engine.Resume). No other
	// node can own its fragments under that epoch.
	StepResume
)

func (k StepKind) String() string {
	switch k {
	case StepWait:
		return "wait"
	case StepFence:
		return "fence"
	case StepPlace:
		return "place"
	case StepResume:
		return "resume"
	}
	return "unknown"
}

// Step is one decision of a Follower.
type Step struct {
	Kind StepKind
	// Epoch, Members and Leaving: the placement to apply (Place), or the
	// one to take up again (Resume).
	Epoch            uint64
	Members, Leaving []string
	// First: the node's first placement since it started: it joins the
	// running nodes, or starts the cluster with the others.
	First bool
}

// Follower decides when a node places its flow, fences and resumes: the
// rule every node of a cluster follows as its membership changes. It is
// pure — the node feeds it what it sees (Next) and what it carried out
// (Done) — so that the real node (cluster.Node) and the simulation
// (package sim) run the same rule.
//
// The rule:
//   - A node that sees no majority of the newest agreed membership hear it
//     fences at once (after it placed once; before, it just waits).
//   - A node places when the placement epoch moved past the one it
//     applied and the member list and epoch stood still for Settle (Start
//     before the first placement, at least Expect members then); Resume
//     longer when it is back from a fence; and the lease longer when a
//     member of the agreed membership is gone.
//   - Back from a fence, it resumes its old placement if the epoch did not
//     move meanwhile, and places the newer one otherwise.
//   - A step that failed is tried again once the view stood still for its
//     wait again.
type Follower struct {
	cfg     FollowConfig
	started bool   // a placement was applied
	epoch   uint64 // the epoch of the last placement applied
	fenced  bool
	away    bool // fenced, or back from a fence and not placed since
	resume  bool // back from a fence: it may resume its old placement
	dead    bool // declared dead while fenced: it may not
	// The member list last seen, and whether it is kept (false: the next
	// view counts as a change).
	members, leaving []string
	seenEpoch        uint64
	keyed            bool
	since            time.Time // when the view's members and epoch last changed
}

// seen keeps what v shows of the member list, and reports whether it
// differs from what the Follower saw last (or forgot it: keyed false).
func (f *Follower) seen(v View) bool {
	if f.keyed && v.Epoch == f.seenEpoch && slices.Equal(v.Members, f.members) && slices.Equal(v.Leaving, f.leaving) {
		return false
	}
	f.members, f.leaving, f.seenEpoch, f.keyed = slices.Clone(v.Members), slices.Clone(v.Leaving), v.Epoch, true
	return true
}

// NewFollower returns the Follower of a node that has placed nothing yet.
func NewFollower(cfg FollowConfig) *Follower { return &Follower{cfg: cfg} }

// Started reports whether the node applied a placement.
func (f *Follower) Started() bool { return f.started }

// Fenced reports whether the node is fenced: it lost its majority and
// owns nothing.
func (f *Follower) Fenced() bool { return f.fenced }

// Away reports whether the node owns nothing since a fence: fenced, or
// back from one and not yet placed or resumed.
func (f *Follower) Away() bool { return f.away }

// Epoch is the epoch of the last placement the node applied.
func (f *Follower) Epoch() uint64 { return f.epoch }

// Next is the step to take now, given what the node sees. A Fence takes
// effect at once (the Follower counts the node as fenced); a StepPlace or
// StepResume only once Done reports it carried out.
func (f *Follower) Next(v View) Step {
	switch {
	case !v.Majority && f.started && !f.fenced:
		f.fenced, f.away = true, true
		return Step{Kind: StepFence, Epoch: f.epoch}
	case v.Majority && f.fenced:
		// A majority again: it places, or resumes, once the view stood
		// still for Resume from now.
		f.fenced, f.resume, f.dead, f.keyed = false, !f.dead, false, false
	case f.fenced:
		return Step{}
	}
	if f.seen(v) {
		f.since = v.Now
		return Step{}
	}
	if !v.Majority || len(v.Members) == 0 {
		// Not yet placed and no majority, or every member is leaving:
		// nothing to place.
		return Step{}
	}
	wait := f.cfg.Settle
	if !f.started {
		wait = f.cfg.Start
		if len(v.Members) < f.cfg.Expect {
			return Step{}
		}
	}
	if f.resume {
		wait = max(wait, f.cfg.Resume)
	}
	if f.started && lost(v) {
		wait = max(wait, v.Lease)
	}
	if v.Now.Sub(f.since) < wait {
		return Step{}
	}
	s := Step{Epoch: v.Epoch, Members: slices.Clone(v.Members), Leaving: slices.Clone(v.Leaving), First: !f.started}
	switch {
	case !f.started || v.Epoch > f.epoch:
		s.Kind = StepPlace
	case f.resume && v.Epoch == f.epoch:
		s.Kind = StepResume
	default:
		return Step{}
	}
	return s
}

// lost reports whether a member of the agreed membership is neither alive
// nor leaving: it died or is cut off.
func lost(v View) bool {
	for _, m := range v.Agreed {
		if !slices.Contains(v.Members, m) && !slices.Contains(v.Leaving, m) {
			return true
		}
	}
	return false
}

// Done reports how the node carried out a Place or Resume step that Next
// returned: with err nil it applies from now on; otherwise the Follower
// asks for it again once the view stood still for its wait again.
func (f *Follower) Done(s Step, err error) {
	if s.Kind != StepPlace && s.Kind != StepResume {
		return
	}
	if err != nil {
		f.keyed = false
		return
	}
	f.started, f.epoch, f.resume, f.away = true, s.Epoch, false, false
}

// Dead reports that the node learned the others declared it dead while it
// ran (memberlist refuted its death): they may have placed its fragments
// elsewhere under an epoch it has not seen yet, so it does not resume its
// old placement but waits for a newer one. It returns whether the node was
// not fenced: then it ran on as a zombie and its fragments must drop what
// they hold (actor.Engine.Resumed).
func (f *Follower) Dead() bool {
	if f.fenced {
		f.dead = true
		return false
	}
	f.resume = false
	return true
}
