package cluster

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/splice"
)

type alertsAnswer struct {
	Alerts  []flowcore.AlertInfo `json:"alerts"`
	Total   uint64               `json:"total"` // alerts raised since the flow's state began
	Lost    int64                `json:"lost_windows"`
	Records []json.RawMessage    `json:"records"`         // the latest ones, oldest first
	Owner   string               `json:"owner,omitempty"` // in a cluster, the node that evaluates the alerts
}

// In a cluster one node evaluates the flow's alerts and every node holds a
// copy of the alert log it keeps (see actor/doc.go): any node answers
// /v1/alerts and /v1/alerts/watch for the whole cluster, with every alert
// once, numbered alike on every node, so that a watcher reconnecting to
// another node with ?since=N misses and repeats nothing. A node's copy may
// lag the owner's by a message.

// alertList answers GET /v1/alerts[?limit=N]: the declared alerts and the
// latest records (default 100).
func (n *Node) alertList(w http.ResponseWriter, r *http.Request) {
	limit := 100
	params, err := splice.Params(r)
	if err != nil {
		splice.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	for k := range params {
		if k != "limit" {
			splice.WriteError(w, http.StatusBadRequest, fmt.Sprintf("unknown parameter %q (only limit)", k))
			return
		}
	}
	if params.Has("limit") {
		s := params.Get("limit")
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > 10_000 {
			splice.WriteError(w, http.StatusBadRequest, fmt.Sprintf("limit must be an integer in [1, 10000], got %q", s))
			return
		}
		limit = v
	}
	recs, total, lost, _ := n.eng.Alerts()
	recs = recs[max(0, len(recs)-limit):]
	if recs == nil {
		recs = []json.RawMessage{}
	}
	infos := n.eng.Plan().Alerts()
	if infos == nil {
		infos = []flowcore.AlertInfo{}
	}
	splice.WriteJSON(w, http.StatusOK, alertsAnswer{Alerts: infos, Total: total, Lost: lost, Records: recs, Owner: n.eng.AlertOwner()})
}

// alertWatch streams alerts as server-sent events: "alert" events, one per
// record, as they are raised (after the latest ones at connect time, unless
// ?since=N asks for every record after the N-th).
func (n *Node) alertWatch(w http.ResponseWriter, r *http.Request, stopping <-chan struct{}) {
	recs, total, _, changed := n.eng.Alerts()
	sent := total
	params, err := splice.Params(r)
	if err != nil {
		splice.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	for k := range params {
		if k != "since" {
			splice.WriteError(w, http.StatusBadRequest, fmt.Sprintf("unknown parameter %q (only since)", k))
			return
		}
	}
	if params.Has("since") {
		s := params.Get("since")
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil || v > total {
			splice.WriteError(w, http.StatusBadRequest, fmt.Sprintf("since must be an integer in [0, %d], got %q", total, s))
			return
		}
		sent = v
	}
	fl, ok := splice.StartEvents(w, r)
	if !ok {
		return
	}
	bw := bufio.NewWriter(w)
	for {
		// recs holds the latest records; the first of them is record number
		// total-len(recs).
		first := total - uint64(len(recs))
		for i := max(sent, first); i < total; i++ {
			fmt.Fprintf(bw, "id: %d\nevent: alert\ndata: %s\n\n", i+1, recs[i-first])
		}
		sent = total
		if err := bw.Flush(); err != nil {
			return
		}
		fl.Flush()
		select {
		case <-r.Context().Done():
			return
		case <-stopping:
			return
		case <-changed:
		}
		recs, total, _, changed = n.eng.Alerts()
	}
}
