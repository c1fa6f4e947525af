package cluster

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tessera-streams/tessera/actor"
)

// What the dashboard shows over the last minutes that /v1/cluster, a
// snapshot, cannot: throughput and lag as they were sampled, and the
// member and placement changes this node saw. Memory is bounded: the last
// keepSamples samples (five minutes at the default rate interval), the
// last keepEvents timeline events and keepGone departed members.
const (
	keepSamples = 300
	keepEvents  = 200
	keepGone    = 32
)

// Sample is one node's throughput and lag at one instant. Rate and Lag
// are per source partition, in the order of HistoryAnswer.Partitions; -1
// for a partition this node does not read.
type Sample struct {
	T       int64     `json:"t"`       // unix milliseconds
	Read    float64   `json:"read"`    // events/s read by this node's readers
	Applied float64   `json:"applied"` // events/s applied by this node's fragments
	Rate    []float64 `json:"rate"`    // events/s read per partition
	// Lag per partition: records read that not every fragment's durable
	// checkpoint covers yet (position − committed), what a restart would
	// read again and what the source must still keep.
	Lag []int64 `json:"lag"`
}

// Event is one entry of the timeline: a member that joined, left or died,
// or fragments that moved between nodes at a placement change.
type Event struct {
	At   time.Time `json:"at"`
	Kind string    `json:"kind"` // started, joined, left, died, failover, handoff, fenced
	Node string    `json:"node,omitempty"`
	// A move: From → To, the fragments that moved, the new epoch.
	From      string `json:"from,omitempty"`
	To        string `json:"to,omitempty"`
	Fragments []int  `json:"fragments,omitempty"`
	Epoch     uint64 `json:"epoch,omitempty"`
	// SeenBy: in a timeline merged over the members, the nodes that
	// recorded the event (At is the earliest of their times).
	SeenBy []string `json:"seen_by,omitempty"`
}

// Gone is a member that left or died, as this node saw it.
type Gone struct {
	Name string    `json:"name"`
	HTTP string    `json:"http,omitempty"`
	How  string    `json:"how"` // left or died
	At   time.Time `json:"at"`
}

// HistoryAnswer is the answer of GET /v1/cluster/history.
type HistoryAnswer struct {
	Node        string   `json:"node"`
	IntervalSec float64  `json:"interval_sec"`
	Partitions  []string `json:"partitions"` // source/partition, in plan order
	Samples     []Sample `json:"samples"`    // oldest first
	// Timeline, oldest first: scope=local, as the node that answers saw
	// it since it started; else merged over the members that answered
	// (mergeTimelines), so that a node that joined late, or restarted,
	// shows what the others saw before.
	Timeline []Event `json:"timeline"`
}

// history keeps a node's samples and timeline. Safe for concurrent use.
type history struct {
	mu       sync.Mutex
	parts    []string
	index    map[string]int
	samples  []Sample // a ring: next is where the next sample goes once full
	next     int
	timeline []Event
	gone     []Gone
}

func (h *history) init(parts []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.parts = parts
	h.index = make(map[string]int, len(parts))
	for i, p := range parts {
		h.index[p] = i
	}
}

// record samples the engine's readers and fragments, given their rates.
func (h *history) record(now time.Time, e *actor.Engine, read map[*actor.ReaderStats]float64, applied float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := Sample{T: now.UnixMilli(), Applied: applied, Rate: make([]float64, len(h.parts)), Lag: make([]int64, len(h.parts))}
	for i := range s.Rate {
		s.Rate[i], s.Lag[i] = -1, -1
	}
	for i, r := range e.Readers() {
		j, ok := h.index[fmt.Sprintf("%s/%d", r.Source, r.Partition)]
		if !ok {
			continue
		}
		rate := read[r]
		s.Read += rate
		s.Rate[j] = rate
		s.Lag[j] = lag(r.Position.Load(), e.Committed(i))
	}
	h.add(s)
}

// add keeps s, dropping the oldest sample once keepSamples are kept.
// h.mu is held.
func (h *history) add(s Sample) {
	if len(h.samples) < keepSamples {
		h.samples = append(h.samples, s)
		return
	}
	h.samples[h.next] = s
	h.next = (h.next + 1) % keepSamples
}

// lag is what a partition read up to position has not yet committed
// (committed is -1 until every fragment checkpointed once).
func lag(position, committed int64) int64 {
	return max(0, position-max(committed, 0))
}

func (h *history) event(ev Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.timeline = append(h.timeline, ev)
	if len(h.timeline) > keepEvents {
		h.timeline = slices.Delete(h.timeline, 0, len(h.timeline)-keepEvents)
	}
}

func (h *history) member(ev MemberEvent, at time.Time) {
	h.event(Event{At: at, Kind: ev.Kind, Node: ev.Node})
	h.mu.Lock()
	defer h.mu.Unlock()
	h.gone = slices.DeleteFunc(h.gone, func(g Gone) bool { return g.Name == ev.Node })
	if ev.Kind == "joined" {
		return
	}
	h.gone = append(h.gone, Gone{Name: ev.Node, HTTP: ev.HTTP, How: ev.Kind, At: at})
	if len(h.gone) > keepGone {
		h.gone = slices.Delete(h.gone, 0, len(h.gone)-keepGone)
	}
}

// departed lists the members that left or died and have not come back.
func (h *history) departed() []Gone {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.gone)
}

func (h *history) answer(node string, interval time.Duration, lastEvents int) HistoryAnswer {
	h.mu.Lock()
	defer h.mu.Unlock()
	a := HistoryAnswer{Node: node, IntervalSec: interval.Seconds(), Partitions: slices.Clone(h.parts),
		Samples: make([]Sample, 0, len(h.samples))}
	a.Samples = append(a.Samples, h.samples[h.next:]...)
	a.Samples = append(a.Samples, h.samples[:h.next]...)
	a.Timeline = slices.Clone(h.timeline[max(0, len(h.timeline)-lastEvents):])
	if a.Partitions == nil {
		a.Partitions = []string{}
	}
	return a
}

// tail is the latest k events of the timeline.
func (h *history) tail(k int) []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.timeline[max(0, len(h.timeline)-k):])
}

// mergeSamples merges the samples of several nodes into one series: the
// samples of one interval (by their time, rounded) add up their read and
// applied rates, and each partition takes the value of the node that read
// it. Intervals after the end of any node's samples are left out, so the
// newest point never lacks a node.
func mergeSamples(nodes [][]Sample, interval time.Duration, parts int) []Sample {
	step := max(1, interval.Milliseconds())
	buckets := map[int64]*Sample{}
	end := int64(math.MaxInt64)
	for _, ss := range nodes {
		if len(ss) == 0 {
			continue
		}
		end = min(end, (ss[len(ss)-1].T+step/2)/step)
		seen := map[int64]bool{}
		for _, s := range ss {
			b := (s.T + step/2) / step
			if seen[b] {
				continue // two samples of one node in one interval (a late tick): keep the first
			}
			seen[b] = true
			m := buckets[b]
			if m == nil {
				m = &Sample{T: b * step, Rate: make([]float64, parts), Lag: make([]int64, parts)}
				for i := range parts {
					m.Rate[i], m.Lag[i] = -1, -1
				}
				buckets[b] = m
			}
			m.Read += s.Read
			m.Applied += s.Applied
			for i := range min(parts, len(s.Rate), len(s.Lag)) {
				if s.Lag[i] >= 0 {
					m.Rate[i] = max(m.Rate[i], 0) + s.Rate[i]
					m.Lag[i] = max(m.Lag[i], s.Lag[i])
				}
			}
		}
	}
	out := make([]Sample, 0, len(buckets))
	for b, s := range buckets {
		if b <= end {
			out = append(out, *s)
		}
	}
	slices.SortFunc(out, func(a, b Sample) int { return int(a.T - b.T) })
	return out
}

// moves are the fragments whose owner changes from old to next, grouped
// by old and new owner: a failover when the old owner is no longer alive,
// a hand-off when it is (it is leaving, or a joiner takes the fragment).
func moves(old, next Placement, alive func(string) bool, at time.Time) []Event {
	type pair struct{ from, to string }
	groups := map[pair][]int{}
	var order []pair
	for f, to := range next.Fragments {
		if f >= len(old.Fragments) || old.Fragments[f] == "" || old.Fragments[f] == to {
			continue
		}
		p := pair{old.Fragments[f], to}
		if _, ok := groups[p]; !ok {
			order = append(order, p)
		}
		groups[p] = append(groups[p], f)
	}
	var evs []Event
	for _, p := range order {
		kind := "handoff"
		if !alive(p.from) {
			kind = "failover"
		}
		evs = append(evs, Event{At: at, Kind: kind, From: p.from, To: p.to, Fragments: groups[p], Epoch: next.Epoch})
	}
	return evs
}

// sameEventWithin is how far apart two nodes may record one member event
// (a death each detected, a join each learned of by gossip) and still be
// taken for one: more than gossip's spread and the clocks' skew, less than
// a member takes to die, restart and join again.
const sameEventWithin = 10 * time.Second

// sameEvent reports whether a and b, recorded by different nodes, are one
// event. Every node computes a placement change from the same member list,
// so a move is one if its epoch, owners and fragments are.
func sameEvent(a, b Event) bool {
	if a.Kind != b.Kind || a.Node != b.Node || a.From != b.From || a.To != b.To || a.Epoch != b.Epoch ||
		!slices.Equal(a.Fragments, b.Fragments) {
		return false
	}
	if a.Kind == "failover" || a.Kind == "handoff" {
		return true
	}
	d := a.At.Sub(b.At)
	return d < sameEventWithin && d > -sameEventWithin
}

// mergeTimelines merges the timelines of several nodes (by node name) into
// one, oldest first, keeping the latest keep events. An event several
// nodes recorded appears once, with SeenBy naming them and the earliest
// time; one node's own events are never merged with each other (a member
// that died twice died twice).
func mergeTimelines(byNode map[string][]Event, keep int) []Event {
	type rec struct {
		ev   Event
		node string
	}
	var all []rec
	for node, evs := range byNode {
		for _, ev := range evs {
			all = append(all, rec{ev, node})
		}
	}
	slices.SortStableFunc(all, func(a, b rec) int {
		if c := a.ev.At.Compare(b.ev.At); c != 0 {
			return c
		}
		return strings.Compare(a.node, b.node)
	})
	var out []Event // a few hundred events a node: a scan per event is cheap
	for _, r := range all {
		merged := false
		for i := len(out) - 1; i >= 0 && !merged; i-- {
			m := &out[i]
			if !slices.Contains(m.SeenBy, r.node) && sameEvent(*m, r.ev) {
				m.SeenBy = append(m.SeenBy, r.node)
				slices.Sort(m.SeenBy)
				merged = true
			}
		}
		if !merged {
			ev := r.ev
			ev.SeenBy = []string{r.node}
			out = append(out, ev)
		}
	}
	return out[max(0, len(out)-keep):]
}
