package cluster

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/splice"
)

// deadLetters keeps the last dead letters and appends all of them to a
// JSON-lines file.
type deadLetters struct {
	mu    sync.Mutex
	path  string
	f     *os.File
	total int64
	last  []flows.DeadLetter
	err   bool
}

const keepDeadLetters = 100

func (d *deadLetters) add(dls []flows.DeadLetter) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.total += int64(len(dls))
	d.last = append(d.last, dls...)
	if len(d.last) > keepDeadLetters {
		d.last = append([]flows.DeadLetter(nil), d.last[len(d.last)-keepDeadLetters:]...)
	}
	if d.path == "" || d.err {
		return
	}
	if d.f == nil {
		f, err := os.OpenFile(d.path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			d.err = true
			slog.Error("dead-letter file", "err", err)
			return
		}
		d.f = f
	}
	var buf []byte
	for _, dl := range dls {
		b, _ := json.Marshal(dl)
		buf = append(append(buf, b...), '\n')
	}
	if _, err := d.f.Write(buf); err != nil {
		d.err = true
		slog.Error("dead-letter file", "err", err)
	}
}

func (d *deadLetters) count() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.total
}

// DeadLetterAnswer is the answer of GET /v1/deadletters.
type DeadLetterAnswer struct {
	Total int64              `json:"total"`
	Last  []flows.DeadLetter `json:"last"`           // the latest, oldest first
	File  string             `json:"file,omitempty"` // scope=local: where this node appends them all
	// Nodes: scope=cluster, each answering member's total.
	Nodes map[string]int64 `json:"nodes,omitempty"`
}

func (d *deadLetters) snapshot() DeadLetterAnswer {
	d.mu.Lock()
	defer d.mu.Unlock()
	return DeadLetterAnswer{Total: d.total, Last: append([]flows.DeadLetter{}, d.last...), File: d.path}
}

// deadLetters answers GET /v1/deadletters: this node's latest dead
// letters and total, or with scope=cluster every member's, the latest
// keepDeadLetters of them all (a member that does not answer within two
// seconds is left out, and missing from Nodes).
func (n *Node) deadLetters(w http.ResponseWriter, r *http.Request) {
	q, err := splice.Params(r)
	if err != nil {
		splice.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	cluster := false
	for k := range q {
		if k != "scope" || (q.Get("scope") != "local" && q.Get("scope") != "cluster") {
			splice.WriteError(w, http.StatusBadRequest, "/v1/deadletters takes only scope=local (the default) or scope=cluster")
			return
		}
		cluster = q.Get("scope") == "cluster"
	}
	a := n.dl.snapshot()
	if !cluster {
		splice.WriteJSON(w, http.StatusOK, a)
		return
	}
	a.File, a.Nodes = "", map[string]int64{n.cfg.Name: a.Total}
	if n.mem != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, m := range n.mem.Members() {
			if m.Name == n.cfg.Name || m.HTTP == "" {
				continue
			}
			wg.Go(func() {
				var other DeadLetterAnswer
				if err := n.peerGet(ctx, m.HTTP, "/v1/deadletters?scope=local", &other); err != nil {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				a.Total += other.Total
				a.Last = append(a.Last, other.Last...)
				a.Nodes[m.Name] = other.Total
			})
		}
		wg.Wait()
	}
	slices.SortStableFunc(a.Last, func(x, y flows.DeadLetter) int { return x.Time.Compare(y.Time) })
	a.Last = a.Last[max(0, len(a.Last)-keepDeadLetters):]
	splice.WriteJSON(w, http.StatusOK, a)
}

func (d *deadLetters) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f != nil {
		d.f.Close()
		d.f = nil
	}
}
