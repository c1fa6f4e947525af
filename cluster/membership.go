package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/protobuf/proto"

	"github.com/tessera-streams/tessera/internal/wire"
	"github.com/tessera-streams/tessera/shard"
)

// Gossip timings, tuned for a LAN (and loopback): a node probes one peer
// every 250 ms and waits 100 ms for its ack; a peer that fails a probe is
// suspected, and declared dead after SuspicionMult × max(1, log10(n)) ×
// ProbeInterval (500 ms for up to 10 nodes) unless it refutes. A crashed
// node is detected in about 1 s, against 6–7 s with memberlist's LAN
// defaults; the price is more probe traffic (one small UDP packet per node
// every 250 ms) and a higher chance of suspecting a node whose process
// stalls for half a second (a long GC pause, a saturated core): it then
// refutes, and its fragments move back.
const (
	gossipProbeInterval = 250 * time.Millisecond
	gossipProbeTimeout  = 100 * time.Millisecond
	gossipSuspicionMult = 2
	gossipInterval      = 50 * time.Millisecond
)

// failureDetection is the least time a node must be silent before the
// others may declare it dead: a probe interval and timeout, then the
// suspicion timeout (SuspicionMult × ProbeInterval for up to 10 nodes).
const failureDetection = gossipProbeInterval + gossipProbeTimeout + gossipSuspicionMult*gossipProbeInterval

// PauseLimit is how long a node's process may stand still (SIGSTOP, a
// paused VM) before the others may have placed its fragments elsewhere:
// they declare it dead after failureDetection and apply a placement
// without it once the members are stable for shard.DefaultFollow.Settle. A node
// whose own clock shows a longer gap treats its fragments as handed off
// (actor.Config.PauseLimit).
const PauseLimit = failureDetection + 300*time.Millisecond // shard.DefaultFollow.Settle

// reconnectInterval is how often a node tries to join again the members
// it saw die (not leave), for reconnectFor after each death. After a
// network partition heals, each side has declared the other dead;
// memberlist gossips only to live members (and to the dead only while
// it still has news to spread), so without these joins the two sides
// may never merge again.
const (
	reconnectInterval = time.Second
	reconnectFor      = time.Hour
)

// joinTimeout is how long Join tries seeds that do not answer, by default.
const joinTimeout = 30 * time.Second

// refusedMark is in the error of a node refused for running another flow.
const refusedMark = "this cluster runs"

// MemberConfig configures a node's membership.
type MemberConfig struct {
	Name   string   // unique node name
	Bind   string   // gossip address, host:port (port 0 picks one)
	Seeds  []string // gossip addresses of nodes to join; none to start a cluster
	Meta   *wire.Meta
	Logger *slog.Logger
	// OnChange is called, from a goroutine of the membership, after the
	// members or their metadata changed. It must not block for long.
	OnChange func()
	// OnMember, if set, is told when a node joins, leaves gracefully or
	// dies, from memberlist's callbacks: it must be safe for concurrent
	// use and must not block.
	OnMember func(MemberEvent)
	// Key, if set, encrypts and authenticates gossip (AES-GCM with a key
	// of 16, 24 or 32 bytes): a node without it cannot join, and its
	// messages are dropped.
	Key []byte
	// JoinTimeout is how long Join tries seeds that do not answer;
	// default 30s.
	JoinTimeout time.Duration
	// OnDeclaredDead is called, from a goroutine of the membership, when
	// this node learns that the others declared it dead while it ran on
	// (it was paused, or cut off): it refutes, and rejoins as a member the
	// others may have placed nothing on meanwhile. It must not block.
	OnDeclaredDead func()
}

// Membership is a node's view of the gossip cluster (hashicorp/memberlist):
// who is alive, where to reach them, and the placement epoch.
//
// The placement epoch is the largest epoch in any member's metadata. A node
// that sees a member join or leave sets its own to that largest one plus
// one, and gossips it: every node ends at the same epoch, which only grows,
// once the member list settled. Traffic from an older epoch is fenced.
type Membership struct {
	ml   *memberlist.Memberlist
	cfg  MemberConfig
	mu   sync.Mutex
	self *wire.Meta
	// peers are the live nodes, copied in memberlist's event callbacks:
	// the nodes memberlist.Members returns change under the caller.
	peers  map[string]peer
	failed map[string]failure // members seen dying, not leaving: joined again until they come back
	// contact is, per peer, the last round trip with it: its join, an
	// ack of this node's probe (memberlist's PingDelegate), or the echo
	// of a heartbeat, as of when the heartbeat went (roundtrip.go). A peer
	// that acked or echoed had this node's message, so it heard this node
	// then (Heard, the lease of the majority rule).
	contact map[string]time.Time
	beats   roundTrips   // the heartbeats sent (roundtrip.go)
	echoes  chan beatMsg // echoes of peers' heartbeats, to send
	echoed  uint64       // echoes received of this node's heartbeats
	high    uint64       // the largest epoch ever seen, so that a bump after a death still grows
	bump    chan struct{}
	update  chan struct{} // the metadata changed: gossip it (SetAgreed)
	stop    chan struct{}
	done    sync.WaitGroup
	logger  *slog.Logger
}

// Join starts the membership and joins the seeds. A node whose flow
// differs (name, fragment count or version) is refused, with an error
// from Join on its side and a log line on the others'.
func Join(cfg MemberConfig) (*Membership, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	host, portStr, err := net.SplitHostPort(cfg.Bind)
	if err != nil {
		return nil, fmt.Errorf("gossip address %q: %w", cfg.Bind, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("gossip address %q: bad port", cfg.Bind)
	}
	m := &Membership{cfg: cfg, self: proto.Clone(cfg.Meta).(*wire.Meta), bump: make(chan struct{}, 1), update: make(chan struct{}, 1), peers: map[string]peer{},
		failed: map[string]failure{}, contact: map[string]time.Time{}, echoes: make(chan beatMsg, 256), stop: make(chan struct{}), logger: cfg.Logger.With("part", "gossip")}
	c := memberlist.DefaultLANConfig()
	c.Name = cfg.Name
	c.BindAddr, c.BindPort = host, port
	c.AdvertiseAddr, c.AdvertisePort = host, port
	c.ProbeInterval, c.ProbeTimeout = gossipProbeInterval, gossipProbeTimeout
	c.SuspicionMult = gossipSuspicionMult
	c.GossipInterval = gossipInterval
	c.PushPullInterval = 5 * time.Second
	c.TCPTimeout = 2 * time.Second
	c.Delegate = (*mlDelegate)(m)
	c.Events = (*mlEvents)(m)
	c.Merge = (*mlMerge)(m)
	c.Alive = (*mlAlive)(m)
	c.Ping = (*mlPing)(m)
	c.Logger = log.New(slogWriter{l: m.logger, dead: m.declaredDead}, "", 0)
	if cfg.Key != nil {
		kr, err := memberlist.NewKeyring(nil, cfg.Key)
		if err != nil {
			return nil, fmt.Errorf("gossip key: %w", err)
		}
		c.Keyring = kr
		c.GossipVerifyIncoming, c.GossipVerifyOutgoing = true, true
	}
	ml, err := memberlist.Create(c)
	if err != nil {
		return nil, fmt.Errorf("gossip on %s: %w", cfg.Bind, err)
	}
	m.ml = ml
	if port == 0 {
		// The port picked is in the local node's address.
		m.cfg.Bind = net.JoinHostPort(host, strconv.Itoa(int(ml.LocalNode().Port)))
	}
	m.done.Add(3)
	go m.loop()
	go m.reconnect()
	go m.heartbeat()
	if len(cfg.Seeds) > 0 {
		// Seeds may still be starting: retry for a while, but not a refusal.
		wait := cfg.JoinTimeout
		if wait <= 0 {
			wait = joinTimeout
		}
		deadline := time.Now().Add(wait)
		for {
			_, err := ml.Join(cfg.Seeds)
			if err == nil {
				break
			}
			if strings.Contains(err.Error(), refusedMark) || time.Now().After(deadline) {
				m.Shutdown()
				return nil, fmt.Errorf("join %v: %w", cfg.Seeds, err)
			}
			m.logger.Info("waiting for a seed to answer", "seeds", cfg.Seeds, "err", err)
			time.Sleep(200 * time.Millisecond)
		}
	}
	return m, nil
}

// Addr is the gossip address the node listens on.
func (m *Membership) Addr() string { return m.cfg.Bind }

type peer struct {
	gossip string
	meta   *wire.Meta
}

// failure is a member seen dying: its gossip address, and when.
type failure struct {
	gossip string
	at     time.Time
}

// Members lists the live members, sorted by name; members that are
// leaving are not listed.
func (m *Membership) Members() []Member {
	m.mu.Lock()
	out := make([]Member, 0, len(m.peers))
	for name, p := range m.peers {
		if name == m.cfg.Name {
			p.meta = m.self // memberlist may not have seen our last update yet
		}
		if p.meta.Leaving {
			continue
		}
		out = append(out, Member{Name: name, Gossip: p.gossip, Remote: p.meta.Remote, HTTP: p.meta.Http, Epoch: p.meta.Epoch,
			Running: p.meta.Running, Status: "alive"})
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Alive reports whether the named node is a live member (leaving or not):
// memberlist has not declared it dead. Safe for concurrent use.
func (m *Membership) Alive(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.peers[name]
	return ok
}

// Leaving are the nodes that announced they are leaving and are still
// alive (name → remote address): they hand off what they owned.
func (m *Membership) Leaving() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]string{}
	for name, p := range m.peers {
		meta := p.meta
		if name == m.cfg.Name {
			meta = m.self
		}
		if meta.Leaving {
			out[name] = meta.Remote
		}
	}
	return out
}

// track records a node's state from a memberlist callback.
// It reports whether the node started leaving (a change of placement).
func (m *Membership) track(n *memberlist.Node, alive bool) (leaving bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !alive {
		if p, ok := m.peers[n.Name]; ok && !p.meta.Leaving && n.Name != m.cfg.Name {
			m.failed[n.Name] = failure{gossip: n.Address(), at: time.Now()}
		}
		delete(m.peers, n.Name)
		return false
	}
	delete(m.failed, n.Name)
	if _, ok := m.peers[n.Name]; !ok {
		m.contact[n.Name] = time.Now() // a join is a round trip
	}
	meta, err := decodeMeta(n.Meta)
	if err != nil {
		m.logger.Warn("ignored a node with bad metadata", "node", n.Name, "err", err)
		return false
	}
	old, had := m.peers[n.Name]
	m.peers[n.Name] = peer{gossip: n.Address(), meta: meta}
	m.high = max(m.high, meta.Epoch, meta.AgreedEpoch)
	return meta.Leaving && (!had || !old.meta.Leaving)
}

// Heard lists the live members (leaving or not) with which this node had
// a round trip within window — a join, an ack of its probe, or an echo of
// a heartbeat it sent within window — and this
// node itself: the members that heard it lately. Safe for concurrent use.
func (m *Membership) Heard(window time.Duration) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []string{m.cfg.Name}
	now := time.Now()
	for name := range m.peers {
		if at, ok := m.contact[name]; ok && name != m.cfg.Name && now.Sub(at) < window {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// Touch counts a round trip with every live member now: a node that
// starts following the placement gives each the time to answer a probe.
func (m *Membership) Touch() {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	for name := range m.peers {
		m.contact[name] = now
	}
}

// Epoch is the placement epoch: the largest epoch of a live member.
func (m *Membership) Epoch() uint64 {
	var e uint64
	for _, mb := range m.Members() {
		e = max(e, mb.Epoch)
	}
	m.mu.Lock()
	e = max(e, m.self.Epoch)
	m.mu.Unlock()
	return e
}

// SetRunning marks the node's engine as running in its metadata: a node
// that joins later waits for this one to hand off the fragments it takes.
func (m *Membership) SetRunning() error {
	m.mu.Lock()
	m.self.Running = true
	m.mu.Unlock()
	return m.ml.UpdateNode(time.Second)
}

// SetAgreed gossips the last placement this node applied (its epoch and
// members, and the agreed memberships before it) and the newest epoch
// the node caught up with: a node that missed placements (cut off,
// stopped) counts its majority against the newest one it hears of
// (Agreed), and what its side caught up with (Caught).
// It does not wait for the gossip: the membership's loop sends it.
func (m *Membership) SetAgreed(a agreed) {
	m.mu.Lock()
	m.self.AgreedEpoch, m.self.Agreed = a.Epoch, slices.Clone(a.Members)
	m.self.AgreedBefore, m.self.AgreedCut, m.self.Caught = nil, a.Cut, a.Caught
	for _, p := range a.Before {
		m.self.AgreedBefore = append(m.self.AgreedBefore, &wire.Placed{Epoch: p.Epoch, Members: slices.Clone(p.Members)})
	}
	m.mu.Unlock()
	select {
	case m.update <- struct{}{}:
	default: // an update is pending: it carries this one
	}
}

// Agreed is the newest agreed membership a live peer gossips (SetAgreed),
// by placement epoch: zero if none does. Its Caught is zero: what the
// peers caught up with is Caught's.
func (m *Membership) Agreed() agreed {
	m.mu.Lock()
	defer m.mu.Unlock()
	var a agreed
	for name, p := range m.peers {
		if name != m.cfg.Name && p.meta.AgreedEpoch > a.Epoch && len(p.meta.Agreed) > 0 {
			a = agreed{Epoch: p.meta.AgreedEpoch, Members: slices.Clone(p.meta.Agreed), Cut: p.meta.AgreedCut}
			for _, b := range p.meta.AgreedBefore {
				a.Before = append(a.Before, shard.Placed{Epoch: b.Epoch, Members: slices.Clone(b.Members)})
			}
		}
	}
	return a
}

// Behind lists the live peers that gossip they applied the placement of
// epoch and have not caught up with it (SetAgreed; shard.CatchUp).
func (m *Membership) Behind(epoch uint64) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for name, p := range m.peers {
		if name != m.cfg.Name && p.meta.AgreedEpoch == epoch && p.meta.Caught < epoch {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// Caught is the newest placement epoch each live peer says it caught up
// with (SetAgreed; shard.CatchUp).
func (m *Membership) Caught() map[string]uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := make(map[string]uint64, len(m.peers))
	for name, p := range m.peers {
		if name != m.cfg.Name {
			c[name] = p.meta.Caught
		}
	}
	return c
}

// Founded reports whether a live member other than this node began the
// cluster (wire.Meta.founder).
func (m *Membership) Founded() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, p := range m.peers {
		if name != m.cfg.Name && p.meta.Founder {
			return true
		}
	}
	return false
}

// SetLeaving marks the node as leaving in its metadata: the others place
// its fragments elsewhere while it still runs (a graceful hand-off).
func (m *Membership) SetLeaving() error {
	m.mu.Lock()
	m.self.Leaving = true
	m.high = max(m.high, m.self.Epoch) + 1
	m.self.Epoch = m.high
	m.mu.Unlock()
	return m.ml.UpdateNode(time.Second)
}

// Leave announces the node's departure and stops gossiping.
func (m *Membership) Leave(timeout time.Duration) error {
	err := m.ml.Leave(timeout)
	return errors.Join(err, m.Shutdown())
}

// Shutdown stops gossiping without a word (as a crash would).
func (m *Membership) Shutdown() error {
	select {
	case <-m.stop:
	default:
		close(m.stop)
	}
	err := m.ml.Shutdown()
	m.done.Wait()
	return err
}

// loop raises the node's epoch after joins and leaves and gossips it, and
// tells the owner about every change.
func (m *Membership) loop() {
	defer m.done.Done()
	for {
		select {
		case <-m.stop:
			return
		case <-m.update:
			if err := m.ml.UpdateNode(time.Second); err != nil {
				m.logger.Debug("gossip the node's metadata", "err", err)
			}
			continue
		case <-m.bump:
		}
		// Past every placement a member applied (AgreedEpoch), not only
		// past the epochs the members announce: a placement's epoch is
		// the largest a member announced then, and the member may have
		// restarted since with a smaller one. A node bumping past the
		// announced ones alone placed below the placement the others
		// applied, which they never apply again: every batch between
		// them was fenced for good (internal/alarms TestRollingKillsExact,
		// a node restarted several times in a row).
		m.mu.Lock()
		top := max(m.self.Epoch, m.high, m.self.AgreedEpoch)
		for _, p := range m.peers {
			top = max(top, p.meta.Epoch, p.meta.AgreedEpoch)
		}
		m.self.Epoch, m.high = top+1, top+1
		m.mu.Unlock()
		m.logger.Debug("epoch bumped", "epoch", top+1)
		if err := m.ml.UpdateNode(time.Second); err != nil {
			m.logger.Debug("gossip epoch update", "err", err)
		}
		if m.cfg.OnChange != nil {
			m.cfg.OnChange()
		}
	}
}

// reconnect joins again, every reconnectInterval, the members seen dying
// in the last reconnectFor (see reconnectInterval). A push-pull with one
// tells it of its death, which it refutes, and this node of its own,
// which it refutes in turn: both sides then see each other alive.
func (m *Membership) reconnect() {
	defer m.done.Done()
	tick := time.NewTicker(reconnectInterval)
	defer tick.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-tick.C:
		}
		m.mu.Lock()
		addrs := map[string]string{}
		for name, f := range m.failed {
			if time.Since(f.at) > reconnectFor {
				delete(m.failed, name)
				continue
			}
			addrs[name] = f.gossip
		}
		m.mu.Unlock()
		for name, addr := range addrs {
			select {
			case <-m.stop:
				return
			default:
			}
			if _, err := m.ml.Join([]string{addr}); err != nil {
				m.logger.Debug("rejoin a member seen dying", "node", name, "gossip", addr, "err", err)
			} else {
				m.logger.Info("rejoined a member seen dying", "node", name, "gossip", addr)
			}
		}
	}
}

func (m *Membership) changed(bump bool) {
	if bump {
		select {
		case m.bump <- struct{}{}:
		default:
		}
		return
	}
	if m.cfg.OnChange != nil {
		go m.cfg.OnChange()
	}
}

func decodeMeta(b []byte) (*wire.Meta, error) {
	meta := &wire.Meta{}
	if err := proto.Unmarshal(b, meta); err != nil {
		return nil, fmt.Errorf("node metadata: %w", err)
	}
	return meta, nil
}

// compatible reports why a peer cannot join this node's cluster, or nil.
func (m *Membership) compatible(n *memberlist.Node) error {
	meta, err := decodeMeta(n.Meta)
	if err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	self := m.cfg.Meta
	if meta.Flow != self.Flow || meta.Fragments != self.Fragments || meta.Version != self.Version {
		return fmt.Errorf("node %s runs flow %q (%d fragments, version %q); %s %q (%d fragments, version %q)",
			n.Name, meta.Flow, meta.Fragments, meta.Version, refusedMark, self.Flow, self.Fragments, self.Version)
	}
	if meta.Layout != 0 && self.Layout != 0 && meta.Layout != self.Layout {
		return fmt.Errorf("node %s runs flow %q with other stages, stateful operators or source partitions (layout %016x); %s %q of layout %016x",
			n.Name, meta.Flow, meta.Layout, refusedMark, self.Flow, self.Layout)
	}
	return nil
}

type (
	mlDelegate Membership
	mlEvents   Membership
	mlMerge    Membership
	mlAlive    Membership
	mlPing     Membership
)

func (*mlPing) AckPayload() []byte { return nil }

// NotifyPingComplete records a round trip with other: it acked this
// node's probe.
func (p *mlPing) NotifyPingComplete(other *memberlist.Node, _ time.Duration, _ []byte) {
	m := (*Membership)(p)
	m.mu.Lock()
	m.contact[other.Name] = time.Now()
	m.mu.Unlock()
}

func (d *mlDelegate) NodeMeta(limit int) []byte {
	m := (*Membership)(d)
	m.mu.Lock()
	b, err := proto.Marshal(m.self)
	if err == nil && len(b) > limit && len(m.self.AgreedBefore) > 0 {
		// The memberships before the agreed one first, oldest first: a
		// shorter list, cut, only asks more of a side (shard.Agreement).
		meta := proto.Clone(m.self).(*wire.Meta)
		for err == nil && len(b) > limit && len(meta.AgreedBefore) > 0 {
			meta.AgreedBefore, meta.AgreedCut = meta.AgreedBefore[:len(meta.AgreedBefore)-1], true
			b, err = proto.Marshal(meta)
		}
	}
	if err == nil && len(b) > limit && len(m.self.Agreed) > 0 {
		// Too many members to gossip the agreed membership: the others
		// count against their own (as before the field existed).
		meta := proto.Clone(m.self).(*wire.Meta)
		meta.AgreedEpoch, meta.Agreed, meta.AgreedBefore, meta.AgreedCut = 0, nil, nil, false
		b, err = proto.Marshal(meta)
	}
	m.mu.Unlock()
	if err != nil || len(b) > limit {
		m.logger.Error("node metadata does not fit", "bytes", len(b), "limit", limit, "err", err)
		return nil
	}
	return b
}
func (d *mlDelegate) NotifyMsg(b []byte)                       { (*Membership)(d).onBeat(b) }
func (*mlDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (*mlDelegate) LocalState(join bool) []byte                { return nil }
func (*mlDelegate) MergeRemoteState(buf []byte, join bool)     {}

// MemberEvent is a change of the member list, as one node saw it.
type MemberEvent struct {
	Node string
	HTTP string // the node's HTTP address, if its metadata was known
	Kind string // "joined", "left" (gracefully, after handing off) or "died"
}

func (m *Membership) tell(ev MemberEvent) {
	if m.cfg.OnMember != nil {
		m.cfg.OnMember(ev)
	}
}

func (e *mlEvents) NotifyJoin(n *memberlist.Node) {
	m := (*Membership)(e)
	m.track(n, true)
	ev := MemberEvent{Node: n.Name, Kind: "joined"}
	m.mu.Lock()
	if p, ok := m.peers[n.Name]; ok {
		ev.HTTP = p.meta.Http
	}
	m.mu.Unlock()
	m.tell(ev)
	(*Membership)(e).changed(true)
}

func (e *mlEvents) NotifyLeave(n *memberlist.Node) {
	m := (*Membership)(e)
	// A node that stops gracefully announces it is leaving first (its
	// metadata): memberlist's Node.State cannot tell, it is not updated
	// before this call.
	m.mu.Lock()
	p, ok := m.peers[n.Name]
	m.mu.Unlock()
	ev := MemberEvent{Node: n.Name, Kind: "died"}
	if ok {
		ev.HTTP = p.meta.Http
	}
	if ok && p.meta.Leaving {
		ev.Kind = "left"
		m.logger.Info("member left", "node", n.Name, "gossip", n.Address())
	} else {
		// Its fragments fail over to their standbys: an operator wants
		// to know, even with Info off.
		m.logger.Warn("member died", "node", n.Name, "gossip", n.Address())
	}
	m.track(n, false)
	m.tell(ev)
	(*Membership)(e).changed(true)
}

func (e *mlEvents) NotifyUpdate(n *memberlist.Node) {
	leaving := (*Membership)(e).track(n, true)
	(*Membership)(e).changed(leaving)
}

func (d *mlMerge) NotifyMerge(peers []*memberlist.Node) error {
	m := (*Membership)(d)
	for _, p := range peers {
		if err := m.compatible(p); err != nil {
			m.logger.Error("refused a node", "err", err)
			return err
		}
	}
	return nil
}

func (d *mlAlive) NotifyAlive(p *memberlist.Node) error {
	m := (*Membership)(d)
	if err := m.compatible(p); err != nil {
		m.logger.Warn("ignored a node", "err", err)
		return err
	}
	return nil
}

// refutedDead is in the line memberlist (v0.5.1, state.go deadNode) logs
// when this node receives the news of its own death and refutes it: it
// offers no other hook for it.
const refutedDead = "memberlist: Refuting a dead message"

// declaredDead is called when memberlist refuted this node's death.
func (m *Membership) declaredDead() {
	m.logger.Warn("the others declared this node dead: refuted; it rejoins")
	if m.cfg.OnDeclaredDead != nil {
		m.cfg.OnDeclaredDead()
	}
}

// slogWriter passes memberlist's log lines to slog at Debug (its warnings
// about suspected nodes are expected during failover), and tells dead
// when memberlist refutes this node's death.
type slogWriter struct {
	l    *slog.Logger
	dead func()
}

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug(string(bytes.TrimSpace(p)))
	if w.dead != nil && bytes.Contains(p, []byte(refutedDead)) {
		w.dead()
	}
	return len(p), nil
}

var _ io.Writer = slogWriter{}
