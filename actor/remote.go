package actor

import (
	"crypto/tls"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	pa "github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
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

// remoteQueueSize is the room an endpoint writer's queue starts with; it
// doubles when full. protoactor's default, a million slots of 16 bytes,
// put 16 MB of pointers per connected node in every node's heap, which
// each garbage collection scanned through: in three nodes, most of a
// cycle's marking, and a cost one node never has.
const remoteQueueSize = 1024

// remoteStarting, if set (by the tests), runs before the remote of sys
// starts.
var remoteStarting func(sys *pa.ActorSystem)

// startRemote serves protoactor remote on addr. The port is checked first:
// protoactor panics when it is taken. With tlsCfg (mutual TLS: a
// certificate, the CA for both sides, client certificates required), the
// gRPC server and every connection to another node use it.
func startRemote(sys *pa.ActorSystem, addr string, tlsCfg *tls.Config) (r *remote.Remote, err error) {
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
	server, dial := transportOptions()
	// protoactor's dial options replace its default, grpc.WithInsecure.
	creds := insecure.NewCredentials()
	if tlsCfg != nil {
		server = append(server, grpc.Creds(credentials.NewTLS(tlsCfg.Clone())))
		creds = credentials.NewTLS(tlsCfg.Clone())
	}
	dial = append(dial, grpc.WithTransportCredentials(creds))
	opts := []remote.ConfigOption{remote.WithEndpointWriterBatchSize(remoteBatchSize),
		remote.WithEndpointWriterQueueSize(remoteQueueSize),
		remote.WithServerOptions(server...), remote.WithDialOptions(dial...)}
	r = remote.NewRemote(sys, remote.Configure(host, port, opts...))
	if remoteStarting != nil {
		remoteStarting(sys)
	}
	r.Start()
	return r, nil
}

// The HTTP/2 windows and socket buffers of node-to-node connections.
// Batches travel in messages of up to maxBatchesBytes, packed by
// remoteBatchSize into one gRPC message: with gRPC's defaults (a 64 KiB
// window grown by ping-measured estimates, 32 KiB buffers) such a message
// took a window update every 64 KiB and a write and a read system call
// every 32 KiB. A window of a few such messages lets a sender go on
// while the receiver works through the last one; the memory it may hold
// per connection is bounded by it.
const (
	netWindow = 4 << 20
	netBuffer = 256 << 10
)

// transportOptions are the gRPC options of the remote's server and of its
// connections to other nodes: larger windows and buffers, and buffers
// that are not cleared before use (dirtyPool, also for the messages'
// encoding: netCodec).
func transportOptions() ([]grpc.ServerOption, []grpc.DialOption) {
	server := []grpc.ServerOption{experimental.BufferPool(netPool), grpc.ForceServerCodecV2(netCodec{}),
		grpc.InitialWindowSize(netWindow), grpc.InitialConnWindowSize(netWindow),
		grpc.WriteBufferSize(netBuffer), grpc.ReadBufferSize(netBuffer),
		// Stop returns once the handlers (protoactor's endpoint readers)
		// have: gRPC logs as they end, through the logger every remote's
		// Start sets anew.
		grpc.WaitForHandlers(true)}
	dial := []grpc.DialOption{experimental.WithBufferPool(netPool), grpc.WithDefaultCallOptions(grpc.ForceCodecV2(netCodec{})),
		grpc.WithInitialWindowSize(netWindow), grpc.WithInitialConnWindowSize(netWindow),
		grpc.WithWriteBufferSize(netBuffer), grpc.WithReadBufferSize(netBuffer)}
	return server, dial
}

// defaultRemoteWait is Config.RemoteWait's default: how long a placement
// waits for the other nodes' remotes to listen.
const defaultRemoteWait = 10 * time.Second

// awaitRemotes waits until every other node's remote in cl accepts
// connections (at most Config.RemoteWait). protoactor's endpoint writer gives up a
// connection that is refused and tries again two seconds later, holding
// every message to that node meanwhile: nodes start at about the same
// time, so each waits a moment for the others rather than two seconds.
// The ones that never answered are silent (layout.silent) until a probe
// finds them (probeSilent).
func (e *Engine) awaitRemotes(cl *ClusterConfig) *silence {
	deadline := time.Now().Add(e.cfg.RemoteWait)
	silent := &silence{names: map[string]bool{}}
	for name, addr := range cl.Remotes {
		if name == cl.Self {
			continue
		}
		for {
			err := dialRemote(addr)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				e.cfg.Logger.Warn("a node's remote does not answer", "node", name, "remote", addr, "err", err)
				silent.names[name] = true
				break
			}
			select {
			case <-e.stop:
				return silent
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return silent
}

// dialRemote reports whether a node's remote at addr accepts a TCP
// connection within 200 ms (nil), closing it at once.
func dialRemote(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err == nil {
		c.Close()
	}
	return err
}

// silence is the members of a placement whose remote did not answer when
// it was applied: they are sent no news of settled checkpoints, since
// protoactor's endpoint writer keeps every gRPC connection it failed to
// set up (remote/endpoint_writer.go, initializeInternal), until a probe
// finds their remote answering.
type silence struct {
	mu      sync.Mutex
	names   map[string]bool
	probing bool // a probeSilent runs
}

// has reports whether member is silent (nil: nobody is).
func (s *silence) has(member string) bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.names[member]
}

// probeSilent dials, once, the remote of every silent member of l's
// placement, without waiting: a member whose remote answers is silent no
// more, and is sent all this node knows, as the placement would have sent
// it (report). Without it, a member whose remote came up after the
// placement was applied heard no news, and no report to catch up from,
// until the next placement, which the membership may never make.
func (e *Engine) probeSilent(l *layout) {
	s := l.silent
	if s == nil || l.cl == nil {
		return
	}
	s.mu.Lock()
	names := slices.Sorted(maps.Keys(s.names))
	if len(names) == 0 || s.probing {
		s.mu.Unlock()
		return
	}
	s.probing = true
	s.mu.Unlock()
	// Stop closes e.stop under stopMu before it waits for e.bg.
	e.stopMu.Lock()
	select {
	case <-e.stop:
		e.stopMu.Unlock()
		return
	default:
	}
	e.bg.Add(1)
	e.stopMu.Unlock()
	go func() {
		defer e.bg.Done()
		var heard []string
		for _, name := range names {
			if dialRemote(l.cl.Remotes[name]) == nil {
				heard = append(heard, name)
			}
		}
		s.mu.Lock()
		for _, name := range heard {
			delete(s.names, name)
		}
		s.probing = false
		s.mu.Unlock()
		if len(heard) > 0 && e.layout.Load() == l {
			e.cfg.Logger.Info("silent members' remotes answer: they are told what this node knows", "members", heard)
			e.report(l, heard)
		}
	}()
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
