package actor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	pa "github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"

	"github.com/tessera-streams/tessera/internal/wire"
	"github.com/tessera-streams/tessera/splice"
)

func (c *ClusterConfig) fragments() []string {
	if c == nil {
		return nil
	}
	return c.Fragments
}

func (c *ClusterConfig) readers() []string {
	if c == nil {
		return nil
	}
	return c.Readers
}

// remoteBatchSize bounds the messages protoactor's endpoint writer packs
// into one gRPC frame: batches are up to a few hundred kilobytes and gRPC
// refuses frames over 4 MB (the connection drops, messages vanish).
const remoteBatchSize = 8

// startRemote serves protoactor remote on addr. The port is checked first:
// protoactor panics when it is taken.
func startRemote(sys *pa.ActorSystem, addr string) (r *remote.Remote, err error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("remote address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("remote address %q: bad port", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("remote address %s: %w", addr, err)
	}
	ln.Close()
	defer func() {
		if v := recover(); v != nil {
			r, err = nil, fmt.Errorf("remote on %s: %v", addr, v)
		}
	}()
	r = remote.NewRemote(sys, remote.Configure(host, port, remote.WithEndpointWriterBatchSize(remoteBatchSize)))
	r.Start()
	return r, nil
}

// remoteWait bounds how long a placement waits for the other nodes'
// remotes to listen.
const remoteWait = 10 * time.Second

// awaitRemotes waits until every other node's remote in cl accepts
// connections (at most remoteWait). protoactor's endpoint writer gives up a
// connection that is refused and tries again two seconds later, holding
// every message to that node meanwhile: nodes start at about the same
// time, so each waits a moment for the others rather than two seconds.
func (e *Engine) awaitRemotes(cl *ClusterConfig) {
	deadline := time.Now().Add(remoteWait)
	for name, addr := range cl.Remotes {
		if name == cl.Self {
			continue
		}
		for {
			c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				e.cfg.Logger.Warn("a node's remote does not answer", "node", name, "remote", addr, "err", err)
				break
			}
			select {
			case <-e.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

// unknown counts and drops a message an actor does not handle: from
// another node, of a type this version does not know here. Lifecycle
// messages are not counted.
func (e *Engine) unknown(msg any) {
	switch msg.(type) {
	case *pa.Started, *pa.Stopping, *pa.Stopped, *pa.Restarting, *pa.ReceiveTimeout:
		return
	}
	e.malformed.Add(1)
	e.cfg.Logger.Debug("unknown message dropped", "type", fmt.Sprintf("%T", msg))
}

// NetStats are an engine's counters of node-to-node traffic.
type NetStats struct {
	Replicated      int64 `json:"checkpoints_replicated"`   // checkpoints sent to standbys
	FencedChunks    int64 `json:"checkpoint_chunks_fenced"` // refused from a stale owner
	Malformed       int64 `json:"messages_malformed"`       // undecodable, unknown or for another flow
	HandoffsPending int64 `json:"handoffs_pending"`         // sent, not yet confirmed by the new owner
}

// NetStats reads the engine's node-to-node counters.
func (e *Engine) NetStats() NetStats {
	return NetStats{Replicated: e.replicated.Load(), FencedChunks: e.fencedChunks.Load(),
		Malformed: e.malformed.Load(), HandoffsPending: e.handoffs.Load()}
}

// isLocal reports whether pid lives in this engine's actor system.
func (e *Engine) isLocal(pid *pa.PID) bool { return pid.Address == e.sys.Address() }

// queryActor answers other nodes' view queries from the local fragments.
type queryActor struct{ e *Engine }

func (q *queryActor) Receive(c pa.Context) {
	m, ok := c.Message().(*wire.Query)
	if !ok {
		q.e.unknown(c.Message())
		return
	}
	sender := c.Sender()
	if sender == nil {
		return
	}
	e := q.e
	req := splice.Request{View: m.View, Op: splice.Op(m.Op), Key: m.Key, Query: splice.Query{
		Limit: int(m.Limit), After: m.After, Prefix: m.Prefix, Top: int(m.Top), From: m.From, To: m.To, Latest: m.Latest}}
	frags := make([]int, len(m.Fragments))
	for i, f := range m.Fragments {
		frags[i] = int(f)
	}
	// Answer off the actor: the local fragments answer through their own
	// mailboxes.
	e.bg.Add(1)
	go func() {
		defer e.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), e.cfg.QueryTimeout)
		defer cancel()
		reply := &wire.QueryReply{Id: m.Id}
		ans, err := e.gatherLocal(ctx, req, frags)
		for _, a := range ans {
			b, eerr := e.plan.EncodeAnswer(req.View, a)
			if eerr != nil {
				err = eerr
				break
			}
			reply.Answers = append(reply.Answers, b)
		}
		if err != nil {
			reply.Answers, reply.Error = nil, err.Error()
			if errors.Is(err, splice.ErrUnavailable) {
				reply.Error = "unavailable: " + reply.Error
			}
		}
		e.sys.Root.Send(sender, reply)
	}()
}

// Gather implements splice.Gatherer: local fragments answer through their
// actors (queries jump ahead of batches in their mailboxes); the other
// nodes' fragments through those nodes' query actors.
func (e *Engine) Gather(ctx context.Context, req splice.Request, only int) ([]splice.Answer, error) {
	timeout := e.cfg.QueryTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	var local []int
	remote := map[string][]uint32{}
	l := e.layout.Load()
	for f := range l.route {
		if only >= 0 && f != only {
			continue
		}
		if l.local[f] >= 0 {
			local = append(local, f)
		} else {
			addr := l.route[f].Address
			remote[addr] = append(remote[addr], uint32(f))
		}
	}
	var futs []*pa.Future
	for addr, frags := range remote {
		q := &wire.Query{View: req.View, Op: uint32(req.Op), Limit: int32(req.Query.Limit), After: req.Query.After,
			Prefix: req.Query.Prefix, Top: int32(req.Query.Top), Key: req.Key, From: req.Query.From, To: req.Query.To,
			Latest: req.Query.Latest, Fragments: frags}
		futs = append(futs, e.sys.Root.RequestFuture(pa.NewPID(addr, e.plan.Name()+"/query"), q, timeout))
	}
	out, err := e.gatherLocal(ctx, req, local)
	if err != nil {
		return nil, err
	}
	for _, f := range futs {
		res, err := f.Result()
		if err != nil {
			return nil, fmt.Errorf("%w: query %s: a node did not answer: %v", splice.ErrUnavailable, req.View, err)
		}
		r, ok := res.(*wire.QueryReply)
		if !ok {
			return nil, fmt.Errorf("query %s: unexpected reply %T", req.View, res)
		}
		if r.Error != "" {
			return nil, fmt.Errorf("%w: query %s on another node: %s", splice.ErrUnavailable, req.View, r.Error)
		}
		for _, b := range r.Answers {
			a, err := e.plan.DecodeAnswer(req.View, b)
			if err != nil {
				return nil, err
			}
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b splice.Answer) int { return a.Freshness.Fragment - b.Freshness.Fragment })
	return out, nil
}

// gatherLocal asks the local fragments frags.
func (e *Engine) gatherLocal(ctx context.Context, req splice.Request, frags []int) ([]splice.Answer, error) {
	timeout := e.cfg.QueryTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	replies := make(chan queryReply, len(frags))
	n := 0
	l := e.layout.Load()
	for _, f := range frags {
		if f < 0 || f >= len(l.local) || l.local[f] < 0 {
			return nil, fmt.Errorf("%w: fragment %d is not on this node", splice.ErrUnavailable, f)
		}
		e.sys.Root.Send(l.frags[l.local[f]], &queryMsg{req: req, reply: replies})
		n++
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	out := make([]splice.Answer, 0, n)
	for range n {
		select {
		case r := <-replies:
			if r.err != nil {
				return nil, r.err
			}
			out = append(out, r.ans)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
			return nil, fmt.Errorf("query %s: no answer from %d fragments in %v: %w", req.View, n-len(out), timeout, context.DeadlineExceeded)
		}
	}
	return out, nil
}
