package actor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	pa "github.com/asynkron/protoactor-go/actor"

	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/internal/wire"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/splice"
)

// How a query treats a node that does not answer.
//
// A query asks every fragment it needs at once: the local ones through
// their mailboxes (queries jump ahead of batches), the others through their
// nodes' query actors, one message per node. A node that has not answered
// after probeAfter is checked every probeEvery: if the membership no longer
// lists it (Config.Live) or its remote refuses a TCP connection within
// probeDial, it is unreachable and the query stops waiting for it. Its
// fragments are then asked of their standbys, for at most standbyWait: a
// standby answers from the live fragment if it has taken the fragment over
// already, else from its copy of the fragment's last replicated checkpoint,
// marked stale (as of that checkpoint's offsets). Fragments that neither
// answers make the query fail with a splice.UnavailableError naming them
// (503 with Retry-After). A node found unreachable is remembered for
// downRemember, so that the queries of a failover do not wait for it
// again; a node that is reachable but slow is waited for up to
// QueryTimeout.
//
// So a query answers within about probeAfter + probeDial + standbyWait of
// a node's death, well before the membership has placed its fragments
// elsewhere. A node that stops without closing its sockets (a frozen
// process, a cable pulled) is noticed when the membership declares it dead
// (about a second; see cluster's gossip timings).
const (
	probeAfter   = 150 * time.Millisecond
	probeEvery   = 200 * time.Millisecond
	probeDial    = 200 * time.Millisecond
	downRemember = time.Second
	standbyWait  = 400 * time.Millisecond
	// movingRetry is the Retry-After of fragments that are moving: a
	// placement change takes about a second once a death is detected.
	movingRetry = time.Second
)

// Gather implements splice.Gatherer. A fragment whose owner cannot be
// reached may answer from a standby's copy, marked stale.
func (e *Engine) Gather(ctx context.Context, req splice.Request, only int) ([]splice.Answer, error) {
	return e.gather(ctx, req, only, true)
}

// liveGatherer answers only from the fragments' owners, never from a
// standby's copy: alerts must not judge a window by an older state.
type liveGatherer struct{ *Engine }

func (g liveGatherer) Gather(ctx context.Context, req splice.Request, only int) ([]splice.Answer, error) {
	return g.gather(ctx, req, only, false)
}

// missing collects the fragments a query could not get answers from, and
// why, in words for the user.
type missing struct {
	frags   []int
	reasons []string
}

func (m *missing) add(reason string, frags ...int) {
	m.frags = append(m.frags, frags...)
	if !slices.Contains(m.reasons, reason) {
		m.reasons = append(m.reasons, reason)
	}
}

func (m *missing) err() error {
	if len(m.frags) == 0 {
		return nil
	}
	slices.Sort(m.frags)
	return &splice.UnavailableError{Fragments: m.frags, Reason: strings.Join(m.reasons, "; "), RetryAfter: movingRetry}
}

func (e *Engine) gather(ctx context.Context, req splice.Request, only int, stale bool) ([]splice.Answer, error) {
	deadline := time.Now().Add(e.cfg.QueryTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	l := e.layout.Load()
	var local []int
	remote := map[string][]int{} // node address → its fragments
	for f := range l.route {
		if only >= 0 && f != only {
			continue
		}
		if l.local[f] >= 0 {
			local = append(local, f)
		} else {
			addr := l.route[f].Address
			remote[addr] = append(remote[addr], f)
		}
	}
	var lost missing    // fragments a standby may answer for
	var unavail missing // fragments nobody answers for now
	down := map[string]bool{}
	var calls []*call
	defer func() {
		for _, c := range calls {
			e.abandon(c)
		}
	}()
	for addr, frags := range remote {
		if e.isDown(addr) {
			down[addr] = true
			lost.add(l.unreachable(addr), frags...)
			continue
		}
		calls = append(calls, e.ask(l, addr, req, frags, false, deadline))
	}
	out, err := e.gatherLocal(ctx, req, local, deadline, &unavail)
	if err != nil {
		return nil, err
	}
	for _, c := range calls {
		ans, err := e.collect(ctx, c, deadline, &lost)
		if err != nil {
			return nil, err
		}
		if c.down {
			down[c.addr] = true
		}
		out = append(out, ans...)
	}
	if len(lost.frags) > 0 && stale && l.cl != nil {
		ans, err := e.fromStandbys(ctx, l, req, lost, down, deadline, &unavail)
		if err != nil {
			return nil, err
		}
		out = append(out, ans...)
	} else {
		unavail.frags = append(unavail.frags, lost.frags...)
		unavail.reasons = append(unavail.reasons, lost.reasons...)
	}
	if err := unavail.err(); err != nil {
		return nil, fmt.Errorf("query %s: %w", req.View, err)
	}
	slices.SortFunc(out, func(a, b splice.Answer) int { return a.Freshness.Fragment - b.Freshness.Fragment })
	return out, nil
}

// fromStandbys asks the standbys of the fragments in lost, whose owners
// could not answer (nodes in down are not asked).
func (e *Engine) fromStandbys(ctx context.Context, l *layout, req splice.Request, lost missing, down map[string]bool,
	deadline time.Time, unavail *missing) ([]splice.Answer, error) {
	if d := time.Now().Add(standbyWait); d.Before(deadline) {
		deadline = d
	}
	var here []int
	there := map[string][]int{}
	for _, f := range lost.frags {
		sb := ""
		if f < len(l.cl.Standbys) {
			sb = l.cl.Standbys[f]
		}
		addr := l.cl.Remotes[sb]
		switch {
		case sb == l.cl.Self:
			here = append(here, f)
		case sb == "" || addr == "" || down[addr] || e.isDown(addr):
			unavail.add(strings.Join(lost.reasons, "; ")+", and no standby copy can answer", f)
		default:
			there[addr] = append(there[addr], f)
		}
	}
	var calls []*call
	defer func() {
		for _, c := range calls {
			e.abandon(c)
		}
	}()
	for addr, frags := range there {
		calls = append(calls, e.ask(l, addr, req, frags, true, deadline))
	}
	out, err := e.standbyLocal(ctx, req, here, deadline, unavail)
	if err != nil {
		return nil, err
	}
	for _, c := range calls {
		var none missing
		ans, err := e.collect(ctx, c, deadline, &none)
		if err != nil {
			return nil, err
		}
		if len(none.frags) > 0 {
			unavail.add(strings.Join(lost.reasons, "; ")+", and "+strings.Join(none.reasons, "; "), none.frags...)
		}
		out = append(out, ans...)
	}
	return out, nil
}

// call is a query sent to another node's query actor.
type call struct {
	node, addr string
	view       string
	frags      []int
	reply      *pa.PID // the call's replyActor
	sent       time.Time
	done       chan callResult
	stopped    bool // its reply actor was stopped
	down       bool // the node was found unreachable
}

type callResult struct {
	res any
	err error
}

// replyActor takes the answer of one call: the other node's reply, or
// the dead letter its endpoint returns when it cannot deliver the query.
// Its mailbox orders that answer and the stop of a call the query stopped
// waiting for; a protoactor future does not, and a reply racing a second
// completion of the same future (a timeout, an abandon) raced on its
// result.
type replyActor struct{ done chan callResult }

func (r *replyActor) Receive(c pa.Context) {
	var res callResult
	switch m := c.Message().(type) {
	case *pa.Started, *pa.Stopping, *pa.Stopped, *pa.Restarting:
		return
	case *pa.DeadLetterResponse:
		res.err = pa.ErrDeadLetter
	default:
		res.res = m
	}
	select {
	case r.done <- res:
	default: // the call has its answer
	}
}

// queryMsg is the message that asks another node's fragments frags for
// req. Keys, after and prefix go as bytes: they need not be valid UTF-8.
func queryMsg(req splice.Request, frags []int, standby bool) *wire.Query {
	q := &wire.Query{View: req.View, Op: uint32(req.Op), Limit: int32(req.Query.Limit), After: []byte(req.Query.After), HasAfter: req.Query.HasAfter,
		Prefix: []byte(req.Query.Prefix), Top: int32(req.Query.Top), Key: []byte(req.Key), From: req.Query.From, To: req.Query.To,
		Bounded: req.Query.Bounded, Latest: req.Query.Latest, Standby: standby, Since: req.Since}
	for _, f := range frags {
		q.Fragments = append(q.Fragments, uint32(f))
	}
	return q
}

// requestOf is the request and the fragments a queryMsg asks for.
func requestOf(m *wire.Query) (splice.Request, []int) {
	req := splice.Request{View: m.View, Op: splice.Op(m.Op), Key: string(m.Key), Since: m.Since, Query: splice.Query{
		Limit: int(m.Limit), After: string(m.After), HasAfter: m.HasAfter, Prefix: string(m.Prefix), Top: int(m.Top), From: m.From, To: m.To, Bounded: m.Bounded, Latest: m.Latest}}
	frags := make([]int, len(m.Fragments))
	for i, f := range m.Fragments {
		frags[i] = int(f)
	}
	return req, frags
}

func (e *Engine) ask(l *layout, addr string, req splice.Request, frags []int, standby bool, deadline time.Time) *call {
	q := queryMsg(req, frags, standby)
	c := &call{node: l.nodeAt(addr), addr: addr, view: req.View, frags: frags, sent: time.Now(), done: make(chan callResult, 1)}
	c.reply = e.sys.Root.Spawn(pa.PropsFromProducer(func() pa.Actor { return &replyActor{done: c.done} }))
	e.sys.Root.RequestWithCustomSender(pa.NewPID(addr, e.plan.Name()+"/query"), q, c.reply)
	return c
}

// abandon ends a call, answered or not: its reply actor stops, and a reply
// that comes later goes to dead letters.
func (e *Engine) abandon(c *call) {
	if !c.stopped {
		c.stopped = true
		e.sys.Root.Stop(c.reply)
	}
}

// collect waits for c's answers. Fragments that did not answer go to lost,
// with the reason; an error is one the user made or that no retry mends.
func (e *Engine) collect(ctx context.Context, c *call, deadline time.Time, lost *missing) ([]splice.Answer, error) {
	probe := time.NewTimer(max(0, time.Until(c.sent.Add(probeAfter))))
	defer probe.Stop()
	end := time.NewTimer(max(0, time.Until(deadline)))
	defer end.Stop()
	for {
		select {
		case r := <-c.done:
			if r.err != nil {
				// The node's endpoint is gone (dead letter), or its query
				// actor is not there (the node is starting or stopping).
				c.down = true
				lost.add(fmt.Sprintf("node %s does not answer", c.node), c.frags...)
				return nil, nil
			}
			return e.decodeReply(c, r.res, lost)
		case <-probe.C:
			if !e.reachable(c.node, c.addr) {
				e.abandon(c)
				c.down = true
				lost.add(fmt.Sprintf("node %s is unreachable", c.node), c.frags...)
				return nil, nil
			}
			probe.Reset(probeEvery)
		case <-end.C:
			e.abandon(c)
			lost.add(fmt.Sprintf("node %s did not answer in time", c.node), c.frags...)
			return nil, nil
		case <-ctx.Done():
			e.abandon(c)
			return nil, ctx.Err()
		}
	}
}

func (e *Engine) decodeReply(c *call, res any, lost *missing) ([]splice.Answer, error) {
	r, ok := res.(*wire.QueryReply)
	if !ok {
		lost.add(fmt.Sprintf("node %s answered with a %T", c.node, res), c.frags...)
		return nil, nil
	}
	if r.Error != "" && len(r.Unavailable) == 0 {
		return nil, fmt.Errorf("%w: query on node %s: %s", splice.ErrUnavailable, c.node, r.Error)
	}
	if len(r.Unavailable) > 0 {
		frags := make([]int, len(r.Unavailable))
		for i, f := range r.Unavailable {
			frags[i] = int(f)
		}
		lost.add(fmt.Sprintf("on node %s: %s", c.node, r.Error), frags...)
	}
	out := make([]splice.Answer, 0, len(r.Answers))
	for _, b := range r.Answers {
		a, err := e.plan.DecodeAnswer(c.view, b)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// gatherLocal asks the local fragments frags, on this goroutine (see
// fragmentActor.query). A fragment that is not here or not serving
// (restoring, waiting for its hand-off) goes to unavail.
func (e *Engine) gatherLocal(ctx context.Context, req splice.Request, frags []int, deadline time.Time, unavail *missing) ([]splice.Answer, error) {
	l := e.layout.Load()
	out := make([]splice.Answer, 0, len(frags))
	for _, f := range frags {
		if f < 0 || f >= len(l.local) || l.local[f] < 0 {
			unavail.add(fmt.Sprintf("fragment %d is not on node %s: the placement is changing", f, e.nodeName()), f)
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("query %s: local fragments did not answer in %v: %w", req.View, e.cfg.QueryTimeout, context.DeadlineExceeded)
		}
		ans, err := l.fstats[l.local[f]].fa.query(req)
		var ue *splice.UnavailableError
		if errors.As(err, &ue) {
			unavail.add(ue.Reason, ue.Fragments...)
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, ans)
	}
	return out, nil
}

// standbyLocal answers for fragments whose owner could not be reached:
// from the live fragment if it runs here now, else from this node's copy
// of its last checkpoint, marked stale.
func (e *Engine) standbyLocal(ctx context.Context, req splice.Request, frags []int, deadline time.Time, unavail *missing) ([]splice.Answer, error) {
	l := e.layout.Load()
	var live, copies []int
	for _, f := range frags {
		if f >= 0 && f < len(l.local) && l.local[f] >= 0 {
			live = append(live, f)
		} else {
			copies = append(copies, f)
		}
	}
	out, err := e.gatherLocal(ctx, req, live, deadline, unavail)
	if err != nil {
		return nil, err
	}
	for _, f := range copies {
		a, ok, err := e.fromCopy(req, f)
		if err != nil {
			return nil, err
		}
		if !ok {
			unavail.add(fmt.Sprintf("node %s has no copy of fragment %d", e.nodeName(), f), f)
			continue
		}
		out = append(out, a)
	}
	return out, nil
}

// fromCopy answers req for fragment f from this node's copy of its last
// checkpoint, marked stale; ok is false if there is no copy.
func (e *Engine) fromCopy(req splice.Request, f int) (a splice.Answer, ok bool, err error) {
	if f < 0 || f >= e.plan.Fragments() {
		return a, false, nil
	}
	// A copy may be written while it is read (the manifest first, then
	// the entries): read it again if its manifest changed meanwhile.
	for range 3 {
		r, err := recovery.Restore(e.store, e.plan, f)
		if err != nil || !r.Found {
			if err != nil {
				e.cfg.Logger.Debug("read a standby copy", "fragment", f, "err", err)
				continue
			}
			return a, false, nil
		}
		if m, ok, err := e.store.Manifest(e.plan.Name(), f); err != nil || !ok || m.Epoch != r.Manifest.Epoch {
			continue
		}
		a, err := r.Fragment.Query(req)
		if err != nil {
			return a, false, err
		}
		a.Freshness = splice.Freshness{Fragment: f, Epoch: r.Manifest.Epoch, Offsets: map[string]int64{}, Stale: true}
		for p, end := range r.Manifest.Offsets {
			a.Freshness.Offsets[e.plan.PartitionName(p.Source, p.Partition)] = end
		}
		if wm := r.Fragment.ChannelWatermark(e.plan.ViewChannel(req.View)); wm != flowcore.NoWatermark {
			t := time.Unix(0, wm).UTC()
			a.Freshness.Watermark = &t
		}
		return a, true, nil
	}
	return a, false, nil
}

// reachable reports whether the node at addr can be reached: the
// membership lists it and its remote accepts a connection. A node found
// unreachable is remembered for downRemember.
func (e *Engine) reachable(node, addr string) bool {
	if e.isDown(addr) {
		return false
	}
	ok := e.cfg.Live == nil || e.cfg.Live(node)
	if ok {
		c, err := net.DialTimeout("tcp", addr, probeDial)
		if ok = err == nil; ok {
			c.Close()
		}
	}
	if !ok {
		e.down.Store(addr, time.Now())
	}
	return ok
}

func (e *Engine) isDown(addr string) bool {
	at, ok := e.down.Load(addr)
	if ok && time.Since(at.(time.Time)) < downRemember {
		return true
	}
	if ok {
		e.down.CompareAndDelete(addr, at)
	}
	return false
}

func (e *Engine) nodeName() string {
	if e.self == "" {
		return "(this node)"
	}
	return e.self
}

// nodeAt is the name of the node whose remote is addr, or addr.
func (l *layout) nodeAt(addr string) string {
	if l.cl != nil {
		for name, a := range l.cl.Remotes {
			if a == addr {
				return name
			}
		}
		for name, a := range l.cl.Leaving {
			if a == addr {
				return name
			}
		}
	}
	return addr
}

func (l *layout) unreachable(addr string) string {
	return fmt.Sprintf("node %s is unreachable", l.nodeAt(addr))
}

// queryActor answers other nodes' view queries from the local fragments,
// or, for a query marked standby, from this node's standby copies.
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
	req, frags := requestOf(m)
	// Answer off the actor: the local fragments answer through their own
	// mailboxes.
	e.bg.Add(1)
	go func() {
		defer e.bg.Done()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-e.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		deadline := time.Now().Add(e.cfg.QueryTimeout)
		reply := &wire.QueryReply{Id: m.Id}
		var un missing
		var ans []splice.Answer
		var err error
		if m.Standby {
			ans, err = e.standbyLocal(ctx, req, frags, deadline, &un)
		} else {
			ans, err = e.gatherLocal(ctx, req, frags, deadline, &un)
		}
		for _, a := range ans {
			b, eerr := e.plan.EncodeAnswer(req.View, a)
			if eerr != nil {
				err = eerr
				break
			}
			reply.Answers = append(reply.Answers, b)
		}
		switch {
		case err != nil:
			reply.Answers, reply.Error = nil, err.Error()
		case len(un.frags) > 0:
			reply.Error = strings.Join(un.reasons, "; ")
			for _, f := range un.frags {
				reply.Unavailable = append(reply.Unavailable, uint32(f))
			}
		}
		e.sys.Root.Send(sender, reply)
	}()
}
