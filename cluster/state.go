package cluster

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/tessera-streams/tessera/actor"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/splice"
)

// ClusterState is the answer of GET /v1/cluster.
type ClusterState struct {
	Node         string    `json:"node"`
	Flow         FlowInfo  `json:"flow"`
	Members      []Member  `json:"members"`
	Placement    Placement `json:"placement"`
	EventsPerSec float64   `json:"events_per_sec"`
	DeadLetters  int64     `json:"dead_letters"`
	// Complete: every fragment (of this node, with scope=local) applied
	// all its input to the end and sent everything downstream — a bounded
	// input is fully processed and the views are final.
	Complete  bool            `json:"complete"`
	Fragments []FragmentState `json:"fragments"`
	Readers   []ReaderState   `json:"readers"`
	// Network: per node, checkpoints replicated, chunks fenced, malformed
	// or unknown messages dropped, hand-offs not yet confirmed.
	Network map[string]actor.NetStats `json:"network"`
	// Error is the fatal error that is stopping this node, if any.
	Error string `json:"error,omitempty"`
	// Fenced: the node sees no majority of the members of its placement
	// (the last agreed membership) and owns nothing until it does.
	Fenced bool `json:"fenced,omitempty"`
	// Gone: the members that left or died, as the node that answers saw
	// them (and that have not come back).
	Gone []Gone `json:"gone,omitempty"`
}

// FlowInfo identifies the flow a node runs.
type FlowInfo struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	Fragments int    `json:"fragments"`
}

// Member is a node of the cluster.
type Member struct {
	Name   string `json:"name"`
	Gossip string `json:"gossip,omitempty"` // gossip address
	Remote string `json:"remote,omitempty"` // protoactor remote address
	HTTP   string `json:"http"`
	Epoch  uint64 `json:"epoch,omitempty"` // the node's placement epoch
	// Running: its engine runs (a node still starting, or one that has
	// not yet joined a placement, is not).
	Running bool   `json:"running"`
	Status  string `json:"status"`
}

// FragmentState is one fragment in GET /v1/cluster.
type FragmentState struct {
	Fragment        int              `json:"fragment"`
	Owner           string           `json:"owner"`
	Standby         string           `json:"standby,omitempty"` // keeps a copy of its checkpoints, takes over if the owner dies
	Events          int64            `json:"events"`
	Lag             int64            `json:"lag"` // source offsets read but not yet applied here, over the partitions it has seen
	EventsPerSec    float64          `json:"events_per_sec"`
	Batches         int64            `json:"batches"`
	Duplicates      int64            `json:"duplicate_batches"`
	Gaps            int64            `json:"gaps"`
	Fenced          int64            `json:"fenced"`          // batches of an older placement epoch, dropped
	Failures        int64            `json:"failures"`        // user-function failures, each followed by a restore
	DeadLetters     int64            `json:"dead_letters"`    // events skipped after their last attempt
	Restores        int64            `json:"restores"`        // restores from a checkpoint
	Replayed        int64            `json:"replayed"`        // source offsets received again after a restore or restart
	Epoch           uint64           `json:"epoch"`           // of the last durable checkpoint
	RestoredEpoch   uint64           `json:"restored_epoch"`  // the checkpoint it started from on this node (0: none)
	RestoredEvents  int64            `json:"restored_events"` // the events that checkpoint had counted
	StandbyEpoch    uint64           `json:"standby_epoch"`   // the newest checkpoint its standby confirmed since it became its standby (0: none yet); once not 0, the fragment survives its owner's loss
	CheckpointAt    *time.Time       `json:"checkpoint_at"`   // when it was taken
	CheckpointAge   float64          `json:"checkpoint_age_sec"`
	CheckpointTook  float64          `json:"checkpoint_duration_sec"` // the last one, from being taken to being durable
	CheckpointBytes int64            `json:"checkpoint_bytes"`        // written in all
	CheckpointErr   string           `json:"checkpoint_error,omitempty"`
	Watermark       *time.Time       `json:"watermark,omitempty"` // event-time watermark, for flows with event time
	TooLate         int64            `json:"too_late"`            // events later than every window's allowed lateness
	Offsets         map[string]int64 `json:"offsets"`
	Retained        int64            `json:"retained"` // outputs kept for downstream fragments' checkpoints
	Complete        bool             `json:"complete"` // every input ended and was applied, every output sent
}

// ReaderState is one source partition in GET /v1/cluster.
type ReaderState struct {
	Source       string  `json:"source"`
	Partition    int     `json:"partition"`
	Owner        string  `json:"owner"`
	Position     int64   `json:"position"`
	Events       int64   `json:"events"`
	EventsPerSec float64 `json:"events_per_sec"`
	Committed    int64   `json:"committed"` // every fragment's checkpoint covers the partition up to here
	Malformed    int64   `json:"malformed"`
	Stalls       int64   `json:"stalls"`
	Crossed      int64   `json:"crossed"` // records sent to fragments on other nodes
	Rewinds      int64   `json:"rewinds"`
	Done         bool    `json:"done"`
}

// State reports the node's view of the cluster.
func (n *Node) State() ClusterState {
	plan := n.eng.Plan()
	total := n.rates.all()
	st := ClusterState{
		Node:         n.cfg.Name,
		Flow:         FlowInfo{Name: plan.Name(), Version: plan.Version(), Fragments: plan.Fragments()},
		Members:      []Member{{Name: n.cfg.Name, HTTP: n.addr, Status: "alive"}},
		Placement:    n.placement(),
		EventsPerSec: total,
		DeadLetters:  n.dl.count(),
		Network:      map[string]actor.NetStats{n.cfg.Name: n.eng.NetStats()},
		Fenced:       n.fenced.Load(),
	}
	if err := n.eng.Err(); err != nil {
		st.Error = err.Error()
	}
	if n.mem != nil {
		st.Members = n.mem.Members()
		st.Gone = n.hist.departed()
	}
	now := time.Now()
	for _, f := range n.eng.Fragments() {
		fs := FragmentState{Fragment: f.ID, Owner: n.cfg.Name, Events: f.Events.Load(), Batches: f.Batches.Load(),
			Duplicates: f.Duplicates.Load(), Gaps: f.Gaps.Load(), Fenced: f.Fenced.Load(), Failures: f.Failures.Load(), DeadLetters: f.Dead.Load(),
			Restores: f.Restores.Load(), Replayed: f.Replayed.Load(), TooLate: f.TooLate.Load(), Epoch: f.Epoch.Load(),
			CheckpointBytes: f.CkptBytes.Load(), Offsets: f.Offsets(), RestoredEpoch: f.RestoredEpoch.Load(), RestoredEvents: f.RestoredEvents.Load(),
			StandbyEpoch: f.StandbyEpoch.Load(), Retained: f.Retained.Load(), Complete: f.Complete.Load()}
		if f.ID < len(st.Placement.Standbys) {
			fs.Standby = st.Placement.Standbys[f.ID]
		}
		if ns := f.CkptTime.Load(); ns != 0 {
			at := time.Unix(0, ns).UTC()
			fs.CheckpointAt, fs.CheckpointAge = &at, now.Sub(at).Seconds()
			fs.CheckpointTook = time.Duration(f.CkptTook.Load()).Seconds()
		}
		if err := f.CheckpointError(); err != nil {
			fs.CheckpointErr = err.Error()
		}
		if wm := f.Watermark.Load(); wm != flowcore.NoWatermark {
			t := time.Unix(0, wm).UTC()
			fs.Watermark = &t
		}
		fs.EventsPerSec = n.rates.fragment(f)
		st.Fragments = append(st.Fragments, fs)
	}
	for i, r := range n.eng.Readers() {
		rs := ReaderState{Source: r.Source, Partition: r.Partition, Owner: n.cfg.Name, Position: r.Position.Load(),
			Events: r.Events.Load(), Committed: n.eng.Committed(i), Malformed: r.Bad.Load(), Stalls: r.Stalls.Load(),
			Crossed: r.Crossed.Load(), Rewinds: r.Rewinds.Load(), Done: r.Done.Load()}
		rs.EventsPerSec = n.rates.reader(r)
		st.Readers = append(st.Readers, rs)
	}
	st.lag()
	return st
}

// lag sets each fragment's lag from the positions of the readers st has.
func (st *ClusterState) lag() {
	pos := map[string]int64{}
	for _, r := range st.Readers {
		pos[fmt.Sprintf("%s/%d", r.Source, r.Partition)] = r.Position
	}
	for i := range st.Fragments {
		f := &st.Fragments[i]
		f.Lag = 0
		for p, off := range f.Offsets {
			if at, ok := pos[p]; ok && at > off {
				f.Lag += at - off
			}
		}
	}
}

// cluster answers GET /v1/cluster: this node's state and, in a cluster,
// every other member's fragments and readers (asked over HTTP), so any node
// shows the whole cluster. ?scope=local: this node's only.
func (n *Node) cluster(w http.ResponseWriter, r *http.Request) {
	local, err := scopeParam(r)
	if err != nil {
		splice.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	splice.WriteJSON(w, http.StatusOK, n.merged(r.Context(), local))
}

// mergePeers adds the other members' fragments and readers to st; a member
// that does not answer within two seconds is marked unreachable.
func (n *Node) mergePeers(ctx context.Context, st *ClusterState) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	type answer struct {
		i  int
		st ClusterState
		ok bool
	}
	ch := make(chan answer, len(st.Members))
	asked := 0
	for i, m := range st.Members {
		if m.Name == n.cfg.Name || m.HTTP == "" {
			continue
		}
		asked++
		go func() {
			other, err := n.peerState(ctx, m.HTTP)
			ch <- answer{i: i, st: other, ok: err == nil}
		}()
	}
	for range asked {
		a := <-ch
		if !a.ok {
			st.Members[a.i].Status = "unreachable"
			continue
		}
		st.EventsPerSec += a.st.EventsPerSec
		st.DeadLetters += a.st.DeadLetters
		st.Fragments = append(st.Fragments, a.st.Fragments...)
		st.Readers = append(st.Readers, a.st.Readers...)
		for k, v := range a.st.Network {
			st.Network[k] = v
		}
	}
	slices.SortFunc(st.Fragments, func(a, b FragmentState) int { return a.Fragment - b.Fragment })
	st.lag()
}

// peerState reads another node's own fragments and readers.
func (n *Node) peerState(ctx context.Context, httpAddr string) (ClusterState, error) {
	var st ClusterState
	err := n.peerGet(ctx, httpAddr, "/v1/cluster?scope=local", &st)
	return st, err
}
