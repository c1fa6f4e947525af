package sim

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/shard"
)

// node is one simulated process: its failure detector and member epoch,
// the placement it applied, its fragments and readers, and its checkpoint
// store (pebble on a crashable in-memory file system, which outlives the
// process).
type node struct {
	c    *Cluster
	name string
	inc  int // incarnation: raised at every start
	up   bool
	// paused: the process is stopped (SIGSTOP): it neither ticks nor
	// handles messages, which wait in held until it resumes.
	paused bool
	held   []func()
	// pause is the node's pause clock (recovery.PauseClock), read before
	// anything acts on the fragments, as the engine reads it; pauses is
	// the count its fragments were told of.
	pause  *recovery.PauseClock
	pauses uint64
	fs     *vfs.MemFS
	st     *recovery.Store

	// Membership: what this node knows of each peer, directly or by gossip
	// (its newest heartbeat: when, its member epoch, whether it runs or
	// leaves); this node's epoch (raised past every epoch seen on every
	// change of its member list, as cluster.Membership does), and the
	// member list it last saw.
	peers   map[string]peerInfo
	epoch   uint64
	high    uint64
	alive   []string
	running bool // placed at least once
	leaving bool
	// follow decides when the node places, fences and resumes: the
	// real node's rule (shard.Follower), fed what this node sees.
	follow *shard.Follower
	fc     shard.FollowConfig // follow's timing: the real node's
	// agreed is the membership of the last placement this node applied
	// (its members, not the nodes leaving it), and agreedEpoch its placement epoch: the
	// list a majority is counted against (shard.Majority). Like the
	// epochs, it outlives a restart (a real node keeps it with its
	// store).
	agreed      []string
	agreedEpoch uint64
	// agreedBefore are the agreed memberships before agreed, newest
	// first, and agreedCut whether they stop short of the cluster's
	// first (shard.Agreement): until this node, or another of its side,
	// caught up with what was settled before agreed, the side needs a
	// majority of them too (shard.Agreement.Quorum). caught, the newest
	// placement epoch it caught up with, outlives a restart with them,
	// and its heartbeats carry it; catch, which follows the catching up
	// (shard.CatchUp, as the engine's), does not.
	agreedBefore []shard.Placed
	agreedCut    bool
	caught       uint64
	catch        shard.CatchUp
	// seeded: the node joined a cluster that had nodes already (they are
	// its seeds). Until it or a peer has applied a placement it counts as
	// having a majority only once the node that began the cluster (the
	// one not seeded) heard it, as a real node's Join fails while no seed
	// answers and cluster.Node's settle waits for a founder (wire.Meta):
	// alone, or with other new nodes only, with no agreed membership, it
	// would place over them and start every fragment anew beside the
	// lineage of nodes that are only down (seeds 6892, 6345).
	seeded bool
	// leftBy: a leaving node stops once it applies a placement (it is not
	// fenced) in which it owns nothing and every hand-off it sent was
	// taken (pending), or at this deadline, as cluster.Node.
	leftBy time.Time
	// holdUntil: a leaving node that keeps copies of fragments it does
	// not own stays until then at least.
	holdUntil time.Time
	pending   map[int]bool
	lastBeat  time.Time
	retold    time.Time // when it last told its report again (tellCaughtUpTo)
	// settled is what the node knows of every fragment's newest settled
	// checkpoint (recovery.Settled): from its own fragments, its peers
	// (tellSettled) and the answers to its gathers. A real node keeps it
	// with its store, so it outlives a restart.
	settled recovery.Settled

	placed    *placed
	frags     map[int]*frag
	readers   map[int]*reader // by source partition index
	handedOff map[int]uint64  // hand-offs that came before their placement
	// handedOffBy: their senders, to confirm to once the fragment placed
	// here settles a checkpoint (frag.confirms).
	handedOffBy map[int]sender
	// superseded are this node's own copies that a hand-off of a newer
	// lineage replaced although they held a later checkpoint: offered to
	// the fragment here if the lineage's copy proves stale.
	superseded map[int]*recovery.Checkpoint
	// sent is the largest number of a batch a fragment of this node sent
	// downstream: a fragment's next machine here numbers its sends past
	// it, so that a late acknowledgement of an earlier machine's batch
	// finds none of its own (recovery.MachineConfig.FirstSend).
	sent     uint64
	needSync bool     // standby copies written without a sync
	confirms []func() // to their owners once the standby copies are synced
	syncing  bool     // a sync of standby copies runs on a slow disk
}

type peerInfo struct {
	at               time.Time // when the peer sent it
	epoch            uint64
	running, leaving bool
	// heard is, for every node the peer has news of, when that node sent
	// the newest heartbeat the peer has of it (by that node's clock): a
	// node learns from it that the peer still hears it (quorum).
	heard map[string]time.Time
	// agreed and agreedEpoch are the peer's last agreed membership,
	// agreedBefore and agreedCut the ones before it.
	agreed       []string
	agreedEpoch  uint64
	agreedBefore []shard.Placed
	agreedCut    bool
	caught       uint64 // the newest placement epoch the peer caught up with
	founder      bool   // started with no seeds (node.seeded)
}

// placed is the placement a node applied.
type placed struct {
	epoch   uint64
	members []string
	leaving []string
	layout  shard.Layout
}

func (c *Cluster) newNode(name string) *node {
	return &node{c: c, name: name, fs: vfs.NewCrashableMem(), seeded: len(c.nodes) > 0, settled: recovery.Settled{}}
}

// Start starts nodes: new ones join the cluster (every node knows every
// other's name, as seeds), stopped ones restart from their store.
func (c *Cluster) Start(names ...string) error {
	for _, name := range names {
		n := c.nodes[name]
		if n == nil {
			n = c.newNode(name)
			c.nodes[name] = n
			c.names = append(c.names, name)
			slices.Sort(c.names)
		}
		if n.up {
			return fmt.Errorf("sim: %s is running", name)
		}
		if err := n.start(); err != nil {
			return err
		}
	}
	return nil
}

// Kill crashes a node: its memory is gone, its store keeps what was
// synced and a random part of what was not (a torn write), and its
// messages in flight to it are lost.
func (c *Cluster) Kill(name string) error {
	n, err := c.node(name)
	if err != nil {
		return err
	}
	if !n.up {
		return fmt.Errorf("sim: %s is not running", name)
	}
	return n.crash("killed")
}

// crash ends the process at once: the store keeps what was synced and a
// random half of the rest.
func (n *node) crash(why string) error {
	c := n.c
	c.counts.Crashes++
	for _, fr := range n.frags {
		if fr != nil && fr.writing != nil {
			c.counts.TornWrites++
		}
	}
	crashed := n.fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: c.crashRand()})
	err := n.stop()
	n.fs = crashed
	c.trace("%s crashed: %s", n.name, why)
	return err
}

// writable reports whether the node may write to its store. On a full
// disk it may not: pebble treats a failed write-ahead-log write as fatal
// (its Fatalf, which recovery's logger turns into a panic), so the process
// dies at its first write — the simulation crashes the node there.
func (n *node) writable() bool {
	if !n.c.full[n.name] {
		return true
	}
	n.c.counts.DiskFull++
	if err := n.crash("disk full: pebble stops the process on a failed write"); err != nil {
		n.c.errs = append(n.c.errs, err)
	}
	return false
}

// Restart kills a running node and starts it again.
func (c *Cluster) Restart(name string) error {
	n, err := c.node(name)
	if err != nil {
		return err
	}
	if n.up {
		if err := c.Kill(name); err != nil {
			return err
		}
	}
	c.counts.Restarts++
	return n.start()
}

// Leave makes a node leave gracefully: it announces it, hands its
// fragments off to their new owners and stops once they took them (or
// 5 s after the new owners' wait for them, HandoffWait), as cluster.Node
// does.
func (c *Cluster) Leave(name string) error {
	n, err := c.node(name)
	if err != nil {
		return err
	}
	if !n.up {
		return fmt.Errorf("sim: %s is not running", name)
	}
	// As cluster.Node: past the new owners' wait for the hand-offs, so
	// that one whose hand-off was lost can still fetch this node's copy
	// (seed 3950).
	n.leaving, n.leftBy = true, c.now.Add(c.cfg.HandoffWait+5*time.Second)
	// As cluster.Node (placedOverLive): with copies of others' fragments,
	// it stays until it would have noticed a member that died before it
	// announced, and until its placement is over live members only, so
	// that it hands its copies of a dead member's fragments over
	// (recovery.Gather).
	n.holdUntil = c.now.Add(c.cfg.PauseLimit)
	n.high = max(n.high, n.epoch) + 1
	n.epoch = n.high
	n.lastBeat = c.now
	n.beat() // announced at once, as memberlist's UpdateNode broadcasts
	c.trace("%s leaves", name)
	return nil
}

// Pause stops a node as SIGSTOP does: it keeps its memory and placement
// but neither ticks nor handles messages, which wait for it; the others
// stop hearing it and declare it dead.
func (c *Cluster) Pause(name string) error {
	n, err := c.node(name)
	if err != nil {
		return err
	}
	if !n.up || n.paused {
		return fmt.Errorf("sim: %s is not running", name)
	}
	n.paused = true
	c.trace("%s paused", name)
	return nil
}

// Resume resumes a paused node: it handles the messages that waited for
// it, in order, then ticks again from where it was. Like a real node it
// reads its pause clock before anything acts on its fragments: after a
// pause longer than Config.PauseLimit (the others may have declared it
// dead and taken its fragments over) every fragment drops its state,
// restores its last checkpoint and waits for a hand-off, so that it is
// never a zombie owner; after a shorter one it goes on.
func (c *Cluster) Resume(name string) error {
	n, err := c.node(name)
	if err != nil {
		return err
	}
	if !n.up || !n.paused {
		return fmt.Errorf("sim: %s is not paused", name)
	}
	n.paused = false
	held := n.held
	n.held = nil
	c.trace("%s resumed with %d messages waiting", name, len(held))
	for _, fn := range held {
		fn()
	}
	return nil
}

// Partition cuts every link between the two sides, both ways; a side
// keeps its links within itself.
func (c *Cluster) Partition(a, b []string) error {
	for _, x := range a {
		for _, y := range b {
			if err := c.Cut(x, y); err != nil {
				return err
			}
			if err := c.Cut(y, x); err != nil {
				return err
			}
		}
	}
	return nil
}

// Cut cuts the link from one node to another, one way: what from sends
// to is lost, what to sends from arrives.
func (c *Cluster) Cut(from, to string) error {
	if _, err := c.node(from); err != nil {
		return err
	}
	if _, err := c.node(to); err != nil {
		return err
	}
	c.cut[[2]string{from, to}] = true
	return nil
}

// Heal restores every link.
func (c *Cluster) Heal() { clear(c.cut) }

// DiskFull fills a node's disk (or, full false, frees it): its next write
// to its store crashes it, as pebble stops a process whose write-ahead log
// cannot be written, and it cannot start while its disk is full.
func (c *Cluster) DiskFull(name string, full bool) error {
	n, err := c.node(name)
	if err != nil {
		return err
	}
	c.full[n.name] = full
	return nil
}

// SlowDisk makes a node's disk slow (d > 0) or fast again (d = 0): every
// sync of its store — a fragment's checkpoint, the standby copies it keeps
// — ends d later, as the engine's group-commit writer waits on a slow
// device. Fragments go on applying input meanwhile, a hand-off that comes
// during a checkpoint's write waits for it, and a crash before the sync
// ends keeps a random part of what was written. A final checkpoint (the
// fragment moves away) is written at once: the wait for the write before
// it is not simulated.
func (c *Cluster) SlowDisk(name string, d time.Duration) error {
	n, err := c.node(name)
	if err != nil {
		return err
	}
	if d < 0 {
		return fmt.Errorf("sim: negative disk delay %v", d)
	}
	if d == 0 {
		delete(c.slow, n.name)
	} else {
		c.slow[n.name] = d
	}
	return nil
}

func (c *Cluster) node(name string) (*node, error) {
	n := c.nodes[name]
	if n == nil {
		return nil, fmt.Errorf("sim: no node %s", name)
	}
	return n, nil
}

func (n *node) start() error {
	c := n.c
	if c.full[n.name] {
		return fmt.Errorf("sim: %s cannot start: its disk is full", n.name)
	}
	st, err := recovery.Open("store", n.fs, c.cfg.Logger)
	if err != nil {
		return fmt.Errorf("sim: %s: %w", n.name, err)
	}
	n.inc++
	n.up, n.st = true, st
	n.pause, n.pauses = recovery.NewPauseClock(c.cfg.PauseLimit), 0
	n.pause.Observe(c.now)
	n.peers = map[string]peerInfo{}
	n.alive, n.running, n.leaving, n.pending = []string{n.name}, false, false, map[int]bool{}
	n.placed, n.frags, n.readers, n.handedOff = nil, map[int]*frag{}, map[int]*reader{}, map[int]uint64{}
	n.handedOffBy = map[int]sender{}
	n.superseded = map[int]*recovery.Checkpoint{}
	n.catch = shard.CatchUp{}
	n.fc = shard.DefaultFollow
	n.fc.Start = c.cfg.Settle
	n.follow = shard.NewFollower(n.fc)
	n.retold = time.Time{}
	n.high = max(n.high, n.epoch) + 1
	n.epoch = n.high
	c.trace("%s started (incarnation %d)", n.name, n.inc)
	inc := n.inc
	// Nodes tick out of phase, each at its own offset.
	first := c.now.Add(time.Duration(c.rng.Int64N(int64(c.cfg.Tick))))
	var tick func()
	tick = func() {
		if !n.up || n.inc != inc {
			return
		}
		if !n.paused {
			n.tick()
		}
		if n.up && n.inc == inc {
			c.at(c.now.Add(c.cfg.Tick), tick)
		}
	}
	c.at(first, tick)
	return nil
}

// stop ends the process: memory is gone, the store closed (a Kill takes
// its crash image first).
func (n *node) stop() error {
	if !n.up {
		return nil
	}
	n.up, n.paused, n.held, n.confirms, n.needSync, n.syncing = false, false, nil, nil, false, false
	for _, r := range n.readers {
		_ = r.r.Close()
	}
	n.frags, n.readers, n.placed = nil, nil, nil
	err := n.st.Close()
	n.st = nil
	if err != nil {
		return fmt.Errorf("sim: close %s: %w", n.name, err)
	}
	return nil
}

// tick is one turn of a node: heartbeats, the failure detector, what its
// Follower decides (a fence, a new placement, a resumed one), then the
// readers and fragments.
func (n *node) tick() {
	c := n.c
	n.readClock()
	if !n.up {
		return
	}
	// A leaver also stays until it applied a placement without it and
	// the live members caught up with that one: its report may be the
	// one they need (shard.CatchUp), as cluster.Node's.
	if n.leaving && (c.now.After(n.leftBy) || len(n.alive) == 1 ||
		(n.owns() && len(n.frags) == 0 && len(n.readers) == 0 && len(n.pending) == 0 && n.othersCaughtUp() &&
			(!n.keepsCopies() || (!c.now.Before(n.holdUntil) && n.placedOverLive())))) {
		c.trace("%s left", n.name)
		_ = n.stop()
		return
	}
	if c.now.Sub(n.lastBeat) >= c.cfg.Heartbeat {
		n.lastBeat = c.now
		n.beat()
	}
	// A report may be lost: the members that say they have not caught
	// up are told again, as often as cluster.Node has its engine do.
	if c.now.Sub(n.retold) >= n.fc.Retell {
		n.retold = c.now
		if b := n.behind(); len(b) > 0 {
			n.tellCaughtUpTo(b)
		}
	}
	n.detect()
	if err := n.follows(); err != nil {
		n.fail(err)
		return
	}
	if !n.up {
		return
	}
	if n.owns() {
		n.tickFragments()
		n.tickReaders()
	}
	n.sync()
}

// placedOverLive reports whether every member of the placement the node
// applied is alive in its view, as cluster.Node's.
func (n *node) placedOverLive() bool {
	for _, m := range n.placed.members {
		if !slices.Contains(n.alive, m) {
			return false
		}
	}
	return true
}

// keepsCopies reports whether the node's store holds a checkpoint of a
// fragment it does not own, as actor.Engine.KeepsCopies.
func (n *node) keepsCopies() bool {
	for f := range n.c.plan.Fragments() {
		if n.frags[f] != nil {
			continue
		}
		if _, ok, err := n.st.Manifest(n.c.plan.Name(), f); err == nil && ok {
			return true
		}
	}
	return false
}

// owns reports whether the node applies a placement: placed, and not
// fenced or back from a fence waiting to resume or place.
func (n *node) owns() bool { return n.placed != nil && !n.follow.Away() }

// readClock reads the node's pause clock, as the engine's ticker and
// every fragment actor do before they act; after a pause it has not told
// its fragments of, every fragment drops its state (the engine's rule:
// recovery.PauseClock, recovery.Machine.FollowPauses).
func (n *node) readClock() {
	c := n.c
	count, gap := n.pause.Observe(c.now)
	if gap > 0 {
		c.trace("%s was paused for %v (limit %v): its fragments restore and wait for a hand-off", n.name, gap, n.pause.Limit())
	}
	if count == n.pauses {
		return
	}
	n.pauses = count
	for _, f := range sortedKeys(n.frags) {
		fr := n.frags[f]
		if fr == nil {
			continue
		}
		fr.m.SetNow(c.now)
		if fr.m.FollowPauses(count, &fr.pauses) {
			c.counts.Resumed++
			n.carry(f)
		}
		if !n.up {
			return
		}
	}
}

// fragment is fragment f, if the node owns it, for a message it is about
// to handle: as a fragment actor, it reads the pause clock first. A node
// that lost its majority fences before the message is handled, as its
// next tick would: it handles nothing its majority no longer backs.
func (n *node) fragment(f int) *frag {
	n.readClock()
	if !n.up {
		return nil
	}
	if !n.quorum() {
		_ = n.follows() // with no majority a step can only fence
	}
	if !n.owns() {
		return nil
	}
	return n.frags[f]
}

// beat tells every other node this one is alive, with its epoch, and
// passes on the newest heartbeat it knows of every other node: a node is
// declared dead only when no path brings its heartbeats (as memberlist's
// indirect probes and gossip do), so a link cut one way between two nodes
// that others still connect declares nobody dead.
func (n *node) beat() {
	heard := make(map[string]time.Time, len(n.peers))
	for p, info := range n.peers {
		heard[p] = info.at
	}
	news := map[string]peerInfo{n.name: {at: n.c.now, epoch: n.epoch, running: n.running, leaving: n.leaving,
		heard: heard, agreed: n.agreed, agreedEpoch: n.agreedEpoch, agreedBefore: n.agreedBefore,
		agreedCut: n.agreedCut, caught: n.caught, founder: !n.seeded}}
	for p, info := range n.peers {
		news[p] = info
	}
	from := n.name
	for _, to := range n.c.names {
		if to == from {
			continue
		}
		n.c.send(from, to, func(d *node) { d.heartbeat(news) })
	}
}

func (n *node) heartbeat(news map[string]peerInfo) {
	for p, info := range news {
		if p == n.name {
			continue
		}
		if had, ok := n.peers[p]; !ok || info.at.After(had.at) {
			n.peers[p] = info
			n.high = max(n.high, info.epoch)
		}
	}
}

// detect updates the member list: this node and every peer heard within
// Detect. A change raises this node's epoch past every epoch it has seen.
func (n *node) detect() {
	alive := []string{n.name}
	for p, info := range n.peers {
		if n.c.now.Sub(info.at) < n.c.cfg.Detect {
			alive = append(alive, p)
		}
	}
	slices.Sort(alive)
	if slices.Equal(alive, n.alive) {
		return
	}
	n.c.trace("%s sees %v", n.name, alive)
	n.alive = alive
	top := max(n.epoch, n.high)
	for _, p := range alive {
		top = max(top, n.peers[p].epoch)
	}
	n.epoch, n.high = top+1, top+1
}

// lease is how long a heartbeat of this node that a peer confirmed
// having counts as the peer hearing it: Detect − Heartbeat, the least
// silence after which the others may declare the node dead (its
// newest heartbeat a peer confirmed is at most as new as the newest the
// peer has, and the peer declares it dead Detect after that one). A node
// therefore learns that it lost its majority before a majority can place
// its fragments elsewhere, with a heartbeat's margin for its ticks.
func (n *node) lease() time.Duration { return n.c.cfg.Detect - n.c.cfg.Heartbeat }

// quorum reports whether this node is on a side that may own fragments:
// the members of the newest agreed membership it knows of (its own or a
// peer's, by placement epoch) that still hear it — they confirmed one of
// its heartbeats within the lease — hold a majority of it
// (shard.Majority, the rule cluster.Node applies too). A node counts
// the peers that hear it, not the peers it hears: one cut off one way,
// whose heartbeats no longer reach the others while theirs reach it,
// sees everyone alive but is declared dead by them; it must stop before
// they place its fragments elsewhere.
func (n *node) quorum() bool {
	ok, _ := n.majority()
	return ok
}

// majority is quorum's answer and the agreed membership it counted
// against.
func (n *node) majority() (bool, []string) {
	a := n.counted()
	side := []string{n.name}
	caught := map[string]uint64{n.name: n.caught}
	for p, info := range n.peers {
		if s, ok := info.heard[n.name]; ok && n.c.now.Sub(s) < n.lease() {
			side = append(side, p)
			caught[p] = info.caught
		}
	}
	if n.seeded && a.Epoch == 0 && !slices.ContainsFunc(side, func(p string) bool { return p != n.name && n.peers[p].founder }) {
		// No seed answered yet, or only nodes as new as this one: none
		// has applied a placement, and none began the cluster. Those
		// that did may all be down, with settled checkpoints a history
		// begun anew would deliver other values for (seed 6345).
		return false, a.Members
	}
	return a.Quorum(side, caught), a.Members
}

// agreement is the node's own agreed membership, with the ones before it.
func (n *node) agreement() shard.Agreement {
	return shard.Agreement{Placed: shard.Placed{Epoch: n.agreedEpoch, Members: n.agreed}, Before: n.agreedBefore, Cut: n.agreedCut}
}

// counted is the newest agreed membership the node knows of: its own,
// or a newer one a peer applied.
func (n *node) counted() shard.Agreement {
	a := n.agreement()
	for _, p := range slices.Sorted(maps.Keys(n.peers)) {
		if info := n.peers[p]; info.agreedEpoch > a.Epoch {
			a = shard.Agreement{Placed: shard.Placed{Epoch: info.agreedEpoch, Members: info.agreed}, Before: info.agreedBefore, Cut: info.agreedCut}
		}
	}
	return a
}

// catchUp is what a node tells every other node once it applied a
// placement (tellCaughtUp), as the engine's wire.Settled with placement:
// all it knows of settled checkpoints, the placement's epoch, and the
// newest placement epoch it caught up with.
type catchUp struct {
	from          string
	epoch, caught uint64
	settled       recovery.Settled
}

// agree makes next the node's agreed membership, with the memberships
// before it (shard.Agreement.Next), as cluster.Node does: the node has
// caught up with next once what the members told it after they applied
// next (catchUpNews) knows of everything settled before
// (shard.CatchUp).
func (n *node) agree(next *placed) {
	a := n.counted().Extend(n.agreement()).Next(shard.Placed{Epoch: next.epoch, Members: next.members}, n.caught)
	n.agreed, n.agreedEpoch = a.Members, a.Epoch // a leaver is not counted: its leave was announced
	n.agreedBefore, n.agreedCut = a.Before, a.Cut
	n.catch.Agree(a, n.name, n.caught)
	n.caughtUpNow()
}

// tellCaughtUp tells every other node what this one knows of settled
// checkpoints, once it applied its agreed membership.
func (n *node) tellCaughtUp() { n.tellCaughtUpTo(n.c.names) }

// tellCaughtUpTo sends the node's report to the nodes named.
func (n *node) tellCaughtUpTo(names []string) {
	epoch, caught, tell := n.catch.Report()
	if epoch != n.agreedEpoch || (!tell && len(n.settled) == 0) {
		return // a cluster's first placement: nothing to catch up with
	}
	r := catchUp{from: n.name, epoch: epoch, caught: caught, settled: maps.Clone(n.settled)}
	for _, to := range names {
		if to != n.name {
			n.c.send(n.name, to, func(d *node) { d.catchUpNews(r) })
		}
	}
}

// behind are the live members that applied the node's agreed
// membership and, by their heartbeats, have not caught up with it.
func (n *node) behind() []string {
	var out []string
	for _, p := range n.alive {
		if info := n.peers[p]; p != n.name && info.agreedEpoch == n.agreedEpoch && info.caught < n.agreedEpoch {
			out = append(out, p)
		}
	}
	return out
}

// othersCaughtUp reports whether the node applied a placement without
// it, and every live member of it caught up with it by its heartbeats.
func (n *node) othersCaughtUp() bool {
	if slices.Contains(n.placed.members, n.name) {
		return false
	}
	for _, p := range n.placed.members {
		if slices.Contains(n.alive, p) && n.peers[p].caught < n.agreedEpoch {
			return false
		}
	}
	return true
}

// catchUpNews takes another node's catchUp.
func (n *node) catchUpNews(r catchUp) {
	n.settled.Merge(r.settled)
	n.catch.Hear(r.epoch, r.from, r.caught)
	n.caughtUpNow()
}

// caughtUpNow notes whether the node caught up with its agreed
// membership.
func (n *node) caughtUpNow() {
	if c := n.catch.Caught(); c > n.caught {
		n.caught = c
		n.c.trace("%s caught up with epoch %d (the ones before: %v)", n.name, c, n.agreedBefore)
	}
}

// follows feeds what the node sees to its Follower and carries out what it
// decides: a fence, a placement, or the old placement resumed after a
// fence.
func (n *node) follows() error {
	c := n.c
	var members, leaving []string
	for _, m := range n.alive {
		if (m == n.name && n.leaving) || (m != n.name && n.peers[m].leaving) {
			leaving = append(leaving, m)
			continue
		}
		members = append(members, m)
	}
	majority, agreed := n.majority()
	wasFenced := n.follow.Fenced()
	s := n.follow.Next(shard.View{Now: c.now, Members: members, Leaving: leaving, Epoch: n.placementEpoch(),
		Agreed: agreed, Majority: majority, Lease: n.lease()})
	if wasFenced && !n.follow.Fenced() {
		c.trace("%s sees a majority again: it resumes or places", n.name)
	}
	switch s.Kind {
	case shard.StepFence:
		n.fence()
	case shard.StepPlace, shard.StepResume:
		next := &placed{epoch: s.Epoch, members: s.Members, leaving: s.Leaving,
			layout: c.plan.LayoutSpec().LayOut(s.Members)}
		err := n.place(next, s)
		n.follow.Done(s, err)
		return err
	}
	return nil
}

// fence stops every fragment and reader of a node that lost its
// majority, as a crash would but keeping its store: nothing they hold is
// released, no checkpoint is taken, no source read, and what they held
// is gone (the majority may go on with it meanwhile, from the copies it
// has). As actor.Engine.Fence, the node then takes the others to own
// everything under its last placement's epoch: when it sees a majority
// again, it resumes that placement from its own checkpoints if the epoch
// did not move (nobody else can own its fragments under it), or applies
// the newer one, waiting for the hand-offs of what it gains. Standby
// copies it keeps stay (they are the copies of owners that hold a
// majority, or did before the fence). A checkpoint being written on a
// slow disk is synced first, as Fence's settleWrites commits what the
// fragments queued: left unsynced, it stayed in the store, a later
// placement restored the fragment from it and ran on, and a crash then
// lost it while fragments downstream had applied its outputs (sim visits
// seed 36115 waited for good for a copy newer than any a live member
// kept).
func (n *node) fence() {
	c := n.c
	c.counts.Fences++
	c.trace("%s lost its majority (agreed %v): it stops its fragments and readers", n.name, n.agreed)
	for _, i := range sortedKeys(n.readers) {
		_ = n.readers[i].r.Close()
	}
	for _, f := range sortedKeys(n.frags) {
		fr := n.frags[f]
		if fr.writing == nil {
			continue
		}
		if !n.writable() {
			return // a full disk: the node crashed, as a failed sync stops it
		}
		fr.writing = nil
		if err := n.st.Sync(); err != nil {
			n.fail(fmt.Errorf("fragment %d: a checkpoint's sync at the fence: %w", f, err))
			return
		}
	}
	n.frags, n.readers, n.pending = map[int]*frag{}, map[int]*reader{}, map[int]bool{}
	others := slices.DeleteFunc(slices.Clone(n.placed.members), func(m string) bool { return m == n.name })
	n.placed = &placed{epoch: n.placed.epoch, members: others,
		layout: c.plan.LayoutSpec().LayOut(others)}
}

// placementEpoch is the largest epoch of a live member, as
// cluster.Membership.Epoch.
func (n *node) placementEpoch() uint64 {
	e := n.epoch
	for _, p := range n.alive {
		if p != n.name {
			e = max(e, n.peers[p].epoch)
		}
	}
	return e
}

// place carries out a new placement as the engine's Place does (or, for
// a StepResume, its Resume), from the plan shard.Changes computes: kept
// fragments learn the epoch; lost ones take a final checkpoint, stop and
// are handed to their new owner; gained ones restore their newest local
// checkpoint and start (after a hand-off from a live owner, unless the
// node resumes); readers move the same way.
func (n *node) place(next *placed, s shard.Step) error {
	c := n.c
	c.counts.Placements++
	first, resume := s.First, s.Kind == shard.StepResume
	if resume {
		c.counts.Resumes++
	}
	var oldOwners []string
	var oldStandbys []string // of a placement this node applied, to tell a kept fragment's new standby
	if !first && n.placed != nil {
		oldStandbys = n.placed.layout.Standbys
	}
	cold := false // a first placement after a restart that finds no member running
	if first {
		// As a node that joins a running cluster: the running nodes own
		// what the placement over them alone gives them.
		var running []string
		for _, m := range next.members {
			if m != n.name && n.peers[m].running {
				running = append(running, m)
			}
		}
		if len(running) > 0 {
			oldOwners = c.plan.LayoutSpec().LayOut(running).Fragments
		}
		// A restart (it placed before), or a cluster that placed before
		// whose members all restart: a new node that joined it then
		// started every fragment from nothing beside the copies of the
		// members that ran them (seed 53505 delivered count updates
		// again with other values).
		cold = len(running) == 0 && (n.agreedEpoch > 0 || n.counted().Epoch > 0)
	} else {
		oldOwners = n.placed.layout.Fragments
	}
	live := func(m string) bool {
		return slices.Contains(next.members, m) || slices.Contains(next.leaving, m)
	}
	changes := shard.Changes(n.name, oldOwners, next.layout.Fragments, live)
	c.trace("%s %ss epoch %d over %v (leaving %v)", n.name, s.Kind, next.epoch, next.members, next.leaving)
	others := n.othersIn(next) // whose copies a fragment gained from a dead owner gathers
	var started, kept []int
	for _, ch := range changes {
		f := ch.Fragment
		switch ch.Kind {
		case shard.Keep:
			n.frags[f].m.Placement(next.epoch)
			kept = append(kept, f)
		case shard.Lose:
			n.lose(f, ch.To, next.epoch)
			if !n.up {
				return nil // it crashed (a full disk)
			}
		case shard.Gain:
			// A first placement after a restart that finds no member
			// running cannot tell who owned the fragment while this node
			// was away: the live members may keep a newer lineage than
			// its own copy, whose outputs were released (seed 10488). It
			// gathers their copies, as cluster.Node's cold start
			// (joinRunning). A cluster's first start has nothing to
			// gather, and gathering there slows it (under message loss)
			// for nothing.
			gather := !resume && (ch.Orphaned || cold) && len(others) > 0
			wait := gather || (!resume && ch.Handoff && n.handedOff[f] < next.epoch)
			// A fragment that would start now from its own copy (alone,
			// back from a fence, or from a hand-off that came before the
			// placement) must not start behind the newest settled
			// checkpoint known of it: it gathers the live members'
			// copies, or waits for a member that keeps one
			// (recovery.Settled).
			lacking := !wait && recovery.Short(n.own(f), n.settled[f])
			if lacking {
				wait, gather = true, len(others) > 0
				lacking = !gather
			}
			delete(n.handedOff, f)
			by, took := n.handedOffBy[f]
			delete(n.handedOffBy, f)
			if err := n.gain(f, next.epoch, wait); err != nil {
				return err
			}
			if took {
				n.confirmLater(n.frags[f], by)
			}
			if gather {
				n.gatherCopies(f, others)
			} else if lacking {
				n.lack(f, n.frags[f], false)
			} else if wait {
				n.askHandoff(f, ch.From)
			}
			started = append(started, f)
		case shard.Elsewhere:
			if _, ok := n.handedOff[f]; ok && ch.To != "" {
				delete(n.handedOff, f)
				delete(n.handedOffBy, f)
				n.forward(f, ch.To, next.epoch, false)
			} else if n.leaving && ch.Orphaned && ch.To != "" {
				// The new owner gathers the live members' copies, and
				// this node may be gone before it asks: it hands its
				// copy off unasked, and stays until that is confirmed.
				n.forward(f, ch.To, next.epoch, true)
			}
		}
	}
	n.placed = next
	if next.epoch != n.agreedEpoch {
		n.agree(next)
	}
	n.tellCaughtUp()
	n.running = true
	var moved []int
	for f, o := range next.layout.Fragments {
		if f >= len(oldOwners) || oldOwners[f] != o {
			moved = append(moved, f)
		}
	}
	for i, owner := range next.layout.Readers {
		r := n.readers[i]
		switch {
		case r != nil && owner != n.name:
			r.stop()
			delete(n.readers, i)
		case r == nil && owner == n.name:
			if err := n.startReader(i); err != nil {
				return err
			}
		case r != nil:
			for _, f := range moved {
				r.rewind(r.cr.Moved(f, c.now, r.r.Position()), f)
			}
		}
	}
	// A kept fragment's gather ends, or begins again, once the placement
	// is applied, as the engine's epochMsg comes after its layout: the
	// replay of a gather that ends asks the readers of this placement.
	for _, f := range kept {
		fr := n.frags[f]
		if fr.gather != nil && fr.m.Waiting() && !fr.m.Stale() {
			fr.gather.Left(live)
			if fr.gather.Done() {
				n.endGather(f, fr)
			}
		} else if fr.lacking != 0 && len(others) > 0 {
			// A member that keeps the copy it lacks may be back.
			n.gatherCopies(f, others)
		}
		if !n.up {
			return nil
		}
		if f < len(oldStandbys) && n.standbyOf(oldStandbys[f]) != n.standbyOf(next.layout.Standbys[f]) && !fr.m.Waiting() && !fr.m.Down() {
			n.toNewStandby(f, fr)
		}
	}
	for _, f := range started {
		fr := n.frags[f]
		fr.m.SetNow(c.now)
		// As the engine: a fragment gained by a placement change asks every
		// reader to replay from its offsets; at the first placement only
		// one restored from a checkpoint (Engine.Start).
		if !fr.m.Waiting() && (!first || fr.found) {
			fr.m.Replay()
		}
		fr.m.Start()
		if !first && !fr.m.Waiting() {
			n.toNewStandby(f, fr)
		}
		n.carry(f)
	}
	for _, f := range sortedKeys(n.frags) {
		// A checkpoint that waited for more members to know of it may
		// be known to a majority of the new placement's.
		if fr := n.frags[f]; n.up && fr != nil && n.release(f, fr) {
			n.carry(f)
		}
	}
	return nil
}

// fail stops a node after an error it cannot go on from (a checkpoint
// that failed: the engine stops, and so does cluster.Node).
func (n *node) fail(err error) {
	n.c.errs = append(n.c.errs, fmt.Errorf("%s: %w", n.name, err))
	n.c.trace("%s fails: %v", n.name, err)
	_ = n.stop()
}

// Owns reports whether a node applies a placement: it runs, placed, and
// holds a majority of its last agreed membership (it is not fenced).
func (c *Cluster) Owns(name string) bool {
	n := c.nodes[name]
	return n != nil && n.up && !n.paused && n.owns()
}

// Members is the member list a node sees (nil if it is down).
func (c *Cluster) Members(name string) []string {
	n := c.nodes[name]
	if n == nil || !n.up {
		return nil
	}
	return slices.Clone(n.alive)
}

// Pauses is how many pauses a running node noticed since it started
// (its recovery.PauseClock's count), 0 if it is down.
func (c *Cluster) Pauses(name string) uint64 {
	n := c.nodes[name]
	if n == nil || !n.up {
		return 0
	}
	return n.pause.Count()
}

// Up lists the running nodes, sorted.
func (c *Cluster) Up() []string {
	var out []string
	for _, name := range c.names {
		if c.nodes[name].up {
			out = append(out, name)
		}
	}
	return out
}

// Nodes lists every node ever started, sorted.
func (c *Cluster) Nodes() []string { return slices.Clone(c.names) }

// peersSorted returns the keys of a map in order (deterministic
// iteration).
func sortedKeys[V any](m map[int]V) []int { return slices.Sorted(maps.Keys(m)) }
