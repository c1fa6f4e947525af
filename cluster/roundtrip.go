package cluster

import (
	"encoding/binary"
	"time"

	"github.com/hashicorp/memberlist"
)

// Round trips for the majority rule (Membership.Heard). memberlist counts
// an ack of its direct probe only within ProbeTimeout (100 ms): on a
// loaded machine acks come later, the probe goes indirect (which proves
// nothing about this node being heard: another node pinged the peer), and
// a node that every peer heard lost its majority and fenced itself. So
// each node also sends every live peer a heartbeat every
// gossipProbeInterval, over the gossip transport (encrypted like the rest
// of it), and the peer echoes it at once. An echo counts as a round trip
// at the time its heartbeat was sent, however late it comes back: the
// lease then bounds the whole round trip, not a probe timeout. A one-way
// cut stops the echoes as it stops the acks.

// Kinds of the gossip user messages.
const (
	msgHeartbeat byte = 1 // from → to: [kind][seq uvarint][from's name]
	msgEcho      byte = 2 // to → from: [kind][seq uvarint][to's name]
)

// heartbeats is how many heartbeats are remembered: an echo of an older one
// is ignored (64 × 250 ms, far over any lease).
const heartbeats = 64

// roundTrips is the bookkeeping of heartbeats, without I/O or a clock:
// when each recent one was sent, and the newest round trip with each peer
// it completed.
type roundTrips struct {
	seq  uint64 // heartbeats sent; the next one's number
	sent [heartbeats]time.Time
}

// next numbers a heartbeat sent at now.
func (r *roundTrips) next(now time.Time) uint64 {
	s := r.seq
	r.sent[s%heartbeats] = now
	r.seq++
	return s
}

// echoed is when the heartbeat seq was sent, if it is recent enough to be
// remembered.
func (r *roundTrips) echoed(seq uint64) (time.Time, bool) {
	if seq >= r.seq || r.seq-seq > heartbeats {
		return time.Time{}, false
	}
	return r.sent[seq%heartbeats], true
}

// encodeBeat is a heartbeat or an echo of seq, signed with name.
func encodeBeat(kind byte, seq uint64, name string) []byte {
	b := append(make([]byte, 0, 1+binary.MaxVarintLen64+len(name)), kind)
	b = binary.AppendUvarint(b, seq)
	return append(b, name...)
}

// decodeBeat reads a heartbeat or an echo; ok is false for anything else.
func decodeBeat(b []byte) (kind byte, seq uint64, name string, ok bool) {
	if len(b) < 2 || (b[0] != msgHeartbeat && b[0] != msgEcho) {
		return 0, 0, "", false
	}
	seq, n := binary.Uvarint(b[1:])
	if n <= 0 || len(b) == 1+n {
		return 0, 0, "", false
	}
	return b[0], seq, string(b[1+n:]), true
}

// beatMsg is a heartbeat or echo to send.
type beatMsg struct {
	to  memberlist.Address
	msg []byte
}

// heartbeat sends every live peer a heartbeat every gossipProbeInterval
// and sends the echoes NotifyMsg queued.
func (m *Membership) heartbeat() {
	defer m.done.Done()
	tick := time.NewTicker(gossipProbeInterval)
	defer tick.Stop()
	for {
		select {
		case <-m.stop:
			return
		case e := <-m.echoes:
			m.sendBeat(e)
		case <-tick.C:
			m.mu.Lock()
			msg := encodeBeat(msgHeartbeat, m.beats.next(time.Now()), m.cfg.Name)
			to := make([]memberlist.Address, 0, len(m.peers))
			for name, p := range m.peers {
				to = append(to, memberlist.Address{Addr: p.gossip, Name: name})
			}
			m.mu.Unlock()
			for _, a := range to {
				m.sendBeat(beatMsg{to: a, msg: msg})
			}
		}
	}
}

func (m *Membership) sendBeat(b beatMsg) {
	if err := m.ml.SendToAddress(b.to, b.msg); err != nil {
		m.logger.Debug("heartbeat", "node", b.to.Name, "err", err)
	}
}

// onBeat handles a heartbeat (queues its echo) or an echo (a round trip).
// It runs on memberlist's packet handler and must not block.
func (m *Membership) onBeat(b []byte) {
	kind, seq, name, ok := decodeBeat(b)
	if !ok || name == m.cfg.Name {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	p, live := m.peers[name]
	if !live {
		return
	}
	switch kind {
	case msgHeartbeat:
		select {
		case m.echoes <- beatMsg{to: memberlist.Address{Addr: p.gossip, Name: name}, msg: encodeBeat(msgEcho, seq, m.cfg.Name)}:
		default: // echoes back up: the heartbeat is lost, as on the wire
		}
	case msgEcho:
		at, ok := m.beats.echoed(seq)
		if !ok {
			return
		}
		m.echoed++
		if at.After(m.contact[name]) {
			m.contact[name] = at
		}
	}
}
