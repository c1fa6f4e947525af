package actor

import (
	"errors"
	"unicode/utf8"

	pa "github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/tessera-streams/tessera/internal/wire"
)

// Batches to other nodes were copied in full at every layer between a
// reader's encoding and a fragment's decoding: protoactor marshals a
// wire.Batches (one copy), gRPC's codec marshals protoactor's
// MessageBatch around it (two), and the receiver joins the frames (three),
// unmarshals the MessageBatch (four, into a new allocation) and the
// wire.Batches (five, an allocation a part). The messages stay protobuf
// on the wire, byte for byte; only who copies changes:
//
//   - netCodec writes a MessageBatch itself (appendBatch), its envelopes'
//     large payloads as buffers of their own that gRPC frames from where
//     they are, not copied into one message buffer;
//   - netCodec reads a MessageBatch itself (readBatch) from one buffer
//     owned by the garbage collector, its payloads aliasing that buffer;
//     a wire.Batches payload is marked for batchesSerializer, which
//     reads it (readBatches) with its parts aliasing the buffer too.
//
// The buffer is never returned to a pool: parts go on to fragments,
// which decode them later, and keep nothing of them after decoding (keys
// are interned); the buffer lives until the last part is dropped.
// Anything a reader here does not expect (an unknown field, a field
// repeated that proto merges, a wrong wire type) goes to proto.Unmarshal,
// which decides as before.

// payloadOwnBuffer is the payload size from which appendBatch gives an
// envelope's payload a buffer of its own rather than copying it: below
// it, a copy costs less than a buffer and a frame boundary.
const payloadOwnBuffer = 4 << 10

// batchesTypeName is the protobuf name of wire.Batches, which protoactor
// sends as the envelope's type name.
var batchesTypeName = string(proto.MessageName(&wire.Batches{}))

// batchesSerializerID is batchesSerializer's index among protoactor's
// serializers in this process. It never goes on the wire: the sender
// marks payloads with protoactor's protobuf serializer (0), and the
// receiving codec remarks wire.Batches for this one.
var batchesSerializerID int32

func init() {
	// protoactor numbers serializers by registration; init runs before
	// any remote starts, so the list is not read concurrently.
	remote.RegisterSerializer(batchesSerializer{})
	batchesSerializerID = findSerializer()
}

// probeTypeName is a type name only batchesSerializer answers, with
// probeAnswer: protoactor does not say which index a serializer got.
const probeTypeName = "tessera.actor.probe"

type probeAnswerT struct{}

var probeAnswer = &probeAnswerT{}

// findSerializer is batchesSerializer's index, or -1 (payloads then go to
// protoactor's protobuf serializer, as before). It asks each index in
// turn: protoactor's protobuf serializer panics on an unknown type name,
// and an index past the list panics too.
func findSerializer() int32 {
	for id := range int32(64) {
		if probeSerializer(id) == probeAnswer {
			return id
		}
	}
	return -1
}

func probeSerializer(id int32) (v any) {
	defer func() {
		if recover() != nil {
			v = nil
		}
	}()
	v, _ = remote.Deserialize(nil, probeTypeName, id)
	return v
}

// batchesSerializer reads a wire.Batches with its parts aliasing the
// received bytes. It writes as protoactor's protobuf serializer does (it
// is never asked to: protoactor sends with serializer 0).
type batchesSerializer struct{}

var _ remote.Serializer = batchesSerializer{}

func (batchesSerializer) Serialize(msg any) ([]byte, error) {
	m, ok := msg.(proto.Message)
	if !ok {
		return nil, errors.New("batches serializer: not a protobuf message")
	}
	return proto.Marshal(m)
}

func (batchesSerializer) Deserialize(typeName string, b []byte) (any, error) {
	switch typeName {
	case batchesTypeName:
		return readBatches(b)
	case probeTypeName:
		return probeAnswer, nil
	}
	return remote.Deserialize(b, typeName, 0)
}

func (batchesSerializer) GetTypeName(msg any) (string, error) {
	m, ok := msg.(proto.Message)
	if !ok {
		return "", errors.New("batches serializer: not a protobuf message")
	}
	return string(proto.MessageName(m)), nil
}

// errFallback says a hand reader met something it leaves to proto.Unmarshal.
var errFallback = errors.New("not for the fast reader")

// readBatches decodes a wire.Batches, its records aliasing b.
func readBatches(b []byte) (*wire.Batches, error) {
	m, err := readBatchesFast(b)
	if err == nil {
		return m, nil
	}
	m = &wire.Batches{}
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, err
	}
	return m, nil
}

func readBatchesFast(b []byte) (*wire.Batches, error) {
	m := &wire.Batches{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, errFallback
		}
		b = b[n:]
		switch {
		case typ == protowire.BytesType && (num == 1 || num == 3 || num == 4 || num == 6):
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, errFallback
			}
			b = b[n:]
			switch num {
			case 1, 3, 4:
				if !utf8.Valid(v) {
					return nil, errFallback
				}
				s := string(v)
				switch num {
				case 1:
					m.Flow = s
				case 3:
					m.ReaderAddress = s
				default:
					m.ReaderId = s
				}
			default:
				m.Records = append(m.Records, v[:len(v):len(v)])
			}
		case typ == protowire.VarintType && (num == 2 || num == 5 || num == 7):
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, errFallback
			}
			b = b[n:]
			switch num {
			case 2:
				m.Epoch = v
			case 5:
				m.Fragments = append(m.Fragments, uint32(v))
			default:
				m.Seqs = append(m.Seqs, v)
			}
		case typ == protowire.BytesType && (num == 5 || num == 7):
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, errFallback
			}
			b = b[n:]
			for len(v) > 0 {
				x, n := protowire.ConsumeVarint(v)
				if n < 0 {
					return nil, errFallback
				}
				v = v[n:]
				if num == 5 {
					m.Fragments = append(m.Fragments, uint32(x))
				} else {
					m.Seqs = append(m.Seqs, x)
				}
			}
		default:
			return nil, errFallback
		}
	}
	return m, nil
}

// readBatch decodes a RemoteMessage that holds a MessageBatch, its
// envelopes' payloads aliasing b. Anything else is errFallback.
func readBatch(b []byte) (*remote.RemoteMessage, error) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 || num != 1 || typ != protowire.BytesType {
		return nil, errFallback
	}
	body, m := protowire.ConsumeBytes(b[n:])
	if m < 0 || n+m != len(b) {
		return nil, errFallback // a oneof set twice merges: proto's job
	}
	mb := &remote.MessageBatch{}
	for len(body) > 0 {
		num, typ, n := protowire.ConsumeTag(body)
		if n < 0 || typ != protowire.BytesType || num < 1 || num > 4 {
			return nil, errFallback
		}
		v, m := protowire.ConsumeBytes(body[n:])
		if m < 0 {
			return nil, errFallback
		}
		body = body[n+m:]
		switch num {
		case 1:
			if !utf8.Valid(v) {
				return nil, errFallback
			}
			mb.TypeNames = append(mb.TypeNames, string(v))
		case 2, 4:
			pid := &pa.PID{}
			if err := proto.Unmarshal(v, pid); err != nil {
				return nil, errFallback
			}
			if num == 2 {
				mb.Targets = append(mb.Targets, pid)
			} else {
				mb.Senders = append(mb.Senders, pid)
			}
		case 3:
			env, err := readEnvelope(v)
			if err != nil {
				return nil, err
			}
			mb.Envelopes = append(mb.Envelopes, env)
		}
	}
	return &remote.RemoteMessage{MessageType: &remote.RemoteMessage_MessageBatch{MessageBatch: mb}}, nil
}

func readEnvelope(b []byte) (*remote.MessageEnvelope, error) {
	env := &remote.MessageEnvelope{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, errFallback
		}
		b = b[n:]
		switch {
		case typ == protowire.BytesType && num == 2:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, errFallback
			}
			b = b[n:]
			env.MessageData = v[:len(v):len(v)]
		case typ == protowire.BytesType && num == 6:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || env.MessageHeader != nil {
				return nil, errFallback // a header set twice merges
			}
			b = b[n:]
			env.MessageHeader = &remote.MessageHeader{}
			if err := proto.Unmarshal(v, env.MessageHeader); err != nil {
				return nil, errFallback
			}
		case typ == protowire.VarintType && num != 2 && num != 6 && num >= 1 && num <= 8:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, errFallback
			}
			b = b[n:]
			switch num {
			case 1:
				env.TypeId = int32(v)
			case 3:
				env.Target = int32(v)
			case 4:
				env.Sender = int32(v)
			case 5:
				env.SerializerId = int32(v)
			case 7:
				env.TargetRequestId = uint32(v)
			case 8:
				env.SenderRequestId = uint32(v)
			}
		default:
			return nil, errFallback
		}
	}
	return env, nil
}

// markBatches gives m's wire.Batches payloads that protoactor's protobuf
// serializer would read to batchesSerializer.
func markBatches(m *remote.RemoteMessage) {
	mb := m.GetMessageBatch()
	if mb == nil || batchesSerializerID < 0 {
		return
	}
	for _, env := range mb.Envelopes {
		if env.SerializerId == 0 && env.TypeId >= 0 && int(env.TypeId) < len(mb.TypeNames) &&
			mb.TypeNames[env.TypeId] == batchesTypeName {
			env.SerializerId = batchesSerializerID
		}
	}
}

// appendBatch encodes m, a MessageBatch, as proto.Marshal would (fields in
// order, empty scalars left out), with each envelope payload of at least
// payloadOwnBuffer bytes in a buffer of its own, not copied. ok is false
// when m is not a MessageBatch with such a payload.
func appendBatch(m *remote.RemoteMessage) (out mem.BufferSlice, ok bool) {
	mb := m.GetMessageBatch()
	if mb == nil {
		return nil, false
	}
	big := false
	for _, env := range mb.Envelopes {
		if len(env.MessageData) >= payloadOwnBuffer {
			big = true
			break
		}
	}
	if !big {
		return nil, false
	}
	// Sizes first: a length goes before what it measures.
	envSizes := make([]int, len(mb.Envelopes))
	headSizes := make([]int, len(mb.Envelopes))
	size := 0
	for _, s := range mb.TypeNames {
		size += 1 + protowire.SizeBytes(len(s))
	}
	for _, p := range mb.Targets {
		size += 1 + protowire.SizeBytes(proto.Size(p))
	}
	for i, env := range mb.Envelopes {
		if env.MessageHeader != nil {
			headSizes[i] = proto.Size(env.MessageHeader)
		}
		envSizes[i] = envelopeSize(env, headSizes[i])
		size += 1 + protowire.SizeBytes(envSizes[i])
	}
	for _, p := range mb.Senders {
		size += 1 + protowire.SizeBytes(proto.Size(p))
	}
	opts := proto.MarshalOptions{UseCachedSize: true}
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	for _, s := range mb.TypeNames {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	var err error
	for _, p := range mb.Targets {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(proto.Size(p)))
		if b, err = opts.MarshalAppend(b, p); err != nil {
			return nil, false
		}
	}
	for i, env := range mb.Envelopes {
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(envSizes[i]))
		b = appendVarintField(b, 1, uint64(int64(env.TypeId)))
		if len(env.MessageData) > 0 {
			b = protowire.AppendTag(b, 2, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(len(env.MessageData)))
			if len(env.MessageData) >= payloadOwnBuffer {
				// The payload is protoactor's fresh encoding, which
				// nothing writes to again: gRPC frames it from there.
				out = append(out, mem.SliceBuffer(b), mem.SliceBuffer(env.MessageData))
				b = nil
			} else {
				b = append(b, env.MessageData...)
			}
		}
		b = appendVarintField(b, 3, uint64(int64(env.Target)))
		b = appendVarintField(b, 4, uint64(int64(env.Sender)))
		b = appendVarintField(b, 5, uint64(int64(env.SerializerId)))
		if env.MessageHeader != nil {
			b = protowire.AppendTag(b, 6, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(headSizes[i]))
			if b, err = opts.MarshalAppend(b, env.MessageHeader); err != nil {
				return nil, false
			}
		}
		b = appendVarintField(b, 7, uint64(env.TargetRequestId))
		b = appendVarintField(b, 8, uint64(env.SenderRequestId))
	}
	for _, p := range mb.Senders {
		b = protowire.AppendTag(b, 4, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(proto.Size(p)))
		if b, err = opts.MarshalAppend(b, p); err != nil {
			return nil, false
		}
	}
	if len(b) > 0 {
		out = append(out, mem.SliceBuffer(b))
	}
	return out, true
}

// envelopeSize is the encoded size of env, with a header of headSize.
func envelopeSize(env *remote.MessageEnvelope, headSize int) int {
	n := varintFieldSize(uint64(int64(env.TypeId))) + varintFieldSize(uint64(int64(env.Target))) +
		varintFieldSize(uint64(int64(env.Sender))) + varintFieldSize(uint64(int64(env.SerializerId))) +
		varintFieldSize(uint64(env.TargetRequestId)) + varintFieldSize(uint64(env.SenderRequestId))
	if len(env.MessageData) > 0 {
		n += 1 + protowire.SizeBytes(len(env.MessageData))
	}
	if env.MessageHeader != nil {
		n += 1 + protowire.SizeBytes(headSize)
	}
	return n
}

// varintFieldSize is the size of a varint field numbered below 16 (a
// one-byte tag), 0 for a zero value, which proto3 leaves out.
func varintFieldSize(v uint64) int {
	if v == 0 {
		return 0
	}
	return 1 + protowire.SizeVarint(v)
}

func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}
