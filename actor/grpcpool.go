package actor

import (
	"bytes"
	"fmt"
	"math/bits"
	"sync"

	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
)

// gRPC's default buffer pool clears every buffer it hands out, over its
// whole capacity, and rounds a message up to its next tier: a received
// wire.Batches of a few hundred kilobytes is read into a cleared 1 MiB
// buffer. Clearing was about a twentieth of a three-node cluster's CPU,
// for nothing: gRPC hands out a buffer to be filled (a message read from
// the connection, a message marshalled) and gives only what it filled
// onward. dirtyPool keeps buffers in power-of-two classes and hands them
// out as they are.

const (
	poolMinShift = 8  // 256 B: the smallest class
	poolMaxShift = 23 // 8 MiB: above gRPC's frame limit; larger buffers are not pooled
)

// dirtyPool is a mem.BufferPool of power-of-two classes whose buffers are
// not cleared: a buffer comes back holding whatever its last user wrote.
// It is safe for concurrent use.
type dirtyPool struct {
	classes [poolMaxShift - poolMinShift + 1]sync.Pool
}

var _ mem.BufferPool = (*dirtyPool)(nil)

// netPool is the one pool of this process's remote: its buffers go to
// whichever connection needs one next.
var netPool = &dirtyPool{}

// poolClass is the index of the smallest class holding n bytes, or -1 when n
// is outside the pooled range.
func poolClass(n int) int {
	if n <= 0 || n > 1<<poolMaxShift {
		return -1
	}
	shift := max(bits.Len(uint(n-1)), poolMinShift)
	return shift - poolMinShift
}

// Get returns a buffer of length n, holding arbitrary bytes.
func (p *dirtyPool) Get(n int) *[]byte {
	c := poolClass(n)
	if c < 0 {
		b := make([]byte, n)
		return &b
	}
	if v, ok := p.classes[c].Get().(*[]byte); ok {
		*v = (*v)[:n]
		return v
	}
	b := make([]byte, n, 1<<(c+poolMinShift))
	return &b
}

// Put takes a buffer back if its capacity is one of the classes (gRPC
// returns a prefix of what Get gave, with its capacity); others are left
// to the garbage collector.
func (p *dirtyPool) Put(b *[]byte) {
	n := cap(*b)
	c := poolClass(n)
	if c < 0 || n != 1<<(c+poolMinShift) {
		return
	}
	p.classes[c].Put(b)
}

// netCodec is gRPC's protobuf codec with its buffers from netPool: gRPC's
// own codec takes them from the process's default pool, whatever pool its
// connection was given.
type netCodec struct{}

var _ encoding.CodecV2 = netCodec{}

// Marshal encodes v into a buffer of netPool (a small message into its
// own slice, as gRPC's codec does).
func (netCodec) Marshal(v any) (mem.BufferSlice, error) {
	if rm, ok := v.(*remote.RemoteMessage); ok {
		if out, ok := appendBatch(rm); ok {
			return out, nil
		}
	}
	m := protoMessage(v)
	if m == nil {
		return nil, fmt.Errorf("marshal: %T is not a protobuf message", v)
	}
	size := proto.Size(m)
	// UseCachedSize reuses what Size just computed; the message is not
	// changed in between (a sent message belongs to the transport).
	opts := proto.MarshalOptions{UseCachedSize: true}
	if mem.IsBelowBufferPoolingThreshold(size) {
		b, err := opts.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	buf := netPool.Get(size)
	b, err := opts.MarshalAppend((*buf)[:0], m)
	if err != nil {
		netPool.Put(buf)
		return nil, err
	}
	*buf = b
	return mem.BufferSlice{mem.NewBuffer(buf, netPool)}, nil
}

// Unmarshal decodes data into v; a message that arrived in pieces is
// joined in a buffer of netPool first. A MessageBatch is joined in a
// buffer of its own that its payloads alias (see readBatch).
func (netCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if rm, ok := v.(*remote.RemoteMessage); ok {
		return unmarshalRemote(data, rm)
	}
	m := protoMessage(v)
	if m == nil {
		return fmt.Errorf("unmarshal: %T is not a protobuf message", v)
	}
	buf := data.MaterializeToBuffer(netPool)
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// protoMessage is v as a protobuf message of the current API, or nil.
func protoMessage(v any) proto.Message {
	switch v := v.(type) {
	case protoadapt.MessageV2:
		return v
	case protoadapt.MessageV1:
		return protoadapt.MessageV2Of(v)
	}
	return nil
}

// Name is the content subtype gRPC's own protobuf codec registers: the
// other side reads the messages with either.
func (netCodec) Name() string { return "proto" }

// unmarshalRemote decodes a protoactor RemoteMessage into rm.
func unmarshalRemote(data mem.BufferSlice, rm *remote.RemoteMessage) error {
	if data.Len() >= payloadOwnBuffer {
		// The garbage collector owns b: the fragments decode the parts
		// aliasing it after this returns. bytes.Join allocates it
		// without clearing it first (Materialize clears, then copies).
		pieces := make([][]byte, len(data))
		for i, d := range data {
			pieces[i] = d.ReadOnlyData()
		}
		b := bytes.Join(pieces, nil)
		if m, err := readBatch(b); err == nil {
			rm.MessageType = m.MessageType
			markBatches(rm)
			return nil
		}
		if err := proto.Unmarshal(b, rm); err != nil {
			return err
		}
		markBatches(rm)
		return nil
	}
	buf := data.MaterializeToBuffer(netPool)
	defer buf.Free()
	if err := proto.Unmarshal(buf.ReadOnlyData(), rm); err != nil {
		return err
	}
	markBatches(rm)
	return nil
}
