package actor

import (
	"bytes"
	"reflect"
	"testing"

	pa "github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/tessera-streams/tessera/internal/wire"
	"github.com/tessera-streams/tessera/splice"
)

// sampleBatch is a RemoteMessage as protoactor's endpoint writer builds
// it: a wire.Batches with parts of part and 2*part bytes, and a small
// other message.
func sampleBatch(t testing.TB, part int) *remote.RemoteMessage {
	batches := &wire.Batches{Flow: "f", Epoch: 3, ReaderAddress: "127.0.0.1:1", ReaderId: "f/r0",
		Fragments: []uint32{1, 7, 300}, Records: [][]byte{bytes.Repeat([]byte{1}, part), {}, bytes.Repeat([]byte{2}, 2*part)},
		Seqs: []uint64{0, 1 << 40, 5}}
	data, err := proto.Marshal(batches)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := proto.Marshal(&wire.Acks{Fragments: []uint32{2}})
	if err != nil {
		t.Fatal(err)
	}
	return &remote.RemoteMessage{MessageType: &remote.RemoteMessage_MessageBatch{MessageBatch: &remote.MessageBatch{
		TypeNames: []string{batchesTypeName, string(proto.MessageName(&wire.Acks{}))},
		Targets:   []*pa.PID{{Address: "127.0.0.1:2", Id: "f/inbox"}, {Address: "127.0.0.1:2", Id: "f/r1"}},
		Senders:   []*pa.PID{{Address: "127.0.0.1:1", Id: "f/r0"}},
		Envelopes: []*remote.MessageEnvelope{
			{TypeId: 0, MessageData: data, Target: 0, Sender: 1, TargetRequestId: 9},
			{TypeId: 1, MessageData: ack, Target: 1, MessageHeader: &remote.MessageHeader{HeaderData: map[string]string{"k": "v"}}},
			{TypeId: 0, MessageData: data, Target: 0, SerializerId: -1, SenderRequestId: 4},
		},
	}}}
}

func TestNetCodecBatch(t *testing.T) {
	m := sampleBatch(t, 5000)
	out, err := netCodec{}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 3 {
		t.Fatalf("a batch with large payloads in %d buffers, want them not copied", len(out))
	}
	// The pieces are protobuf: proto reads them as the message sent.
	whole := out.Materialize()
	back := &remote.RemoteMessage{}
	if err := proto.Unmarshal(whole, back); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(m, back) {
		t.Fatalf("proto reads back %v, sent %v", back, m)
	}
	if want, _ := proto.Marshal(m); len(want) != len(whole) {
		t.Fatalf("encoded %d bytes, proto %d", len(whole), len(want))
	}
	// The codec reads it back, marking the batches for batchesSerializer.
	got := &remote.RemoteMessage{}
	if err := (netCodec{}).Unmarshal(out, got); err != nil {
		t.Fatal(err)
	}
	envs := got.GetMessageBatch().GetEnvelopes()
	if len(envs) != 3 || envs[0].SerializerId != batchesSerializerID || batchesSerializerID <= 0 ||
		envs[1].SerializerId != 0 || envs[2].SerializerId != -1 {
		t.Fatalf("envelopes %v, batches serializer %d", envs, batchesSerializerID)
	}
	envs[0].SerializerId = 0
	if !proto.Equal(m, got) {
		t.Fatalf("codec reads back %v, sent %v", got, m)
	}
	v, err := remote.Deserialize(envs[0].MessageData, batchesTypeName, batchesSerializerID)
	if err != nil {
		t.Fatal(err)
	}
	want := &wire.Batches{}
	if err := proto.Unmarshal(envs[0].MessageData, want); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(v.(*wire.Batches), want) {
		t.Fatalf("batches serializer reads %v, proto %v", v, want)
	}
	// Its parts alias the received bytes.
	rec, data := v.(*wire.Batches).Records[2], envs[0].MessageData
	if i := bytes.Index(data, rec); i < 0 || &rec[0] != &data[i] {
		t.Error("a part was copied")
	}
}

// A small message takes gRPC's ordinary path.
func TestNetCodecSmall(t *testing.T) {
	m := &remote.RemoteMessage{MessageType: &remote.RemoteMessage_ConnectRequest{}}
	out, err := netCodec{}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	got := &remote.RemoteMessage{}
	if err := (netCodec{}).Unmarshal(out, got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(m, got) {
		t.Fatalf("read back %v, sent %v", got, m)
	}
}

// FuzzReadBatch checks the hand readers against proto.Unmarshal: the same
// message, or an error where proto has one.
func FuzzReadBatch(f *testing.F) {
	m := sampleBatch(f, 3) // large inputs stall the fuzzer
	whole, err := proto.Marshal(m)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(whole)
	f.Add(m.GetMessageBatch().Envelopes[0].MessageData)
	packed, _ := proto.Marshal(&wire.Batches{Fragments: []uint32{1, 2}, Seqs: []uint64{3}})
	f.Add(packed)
	f.Fuzz(func(t *testing.T, data []byte) {
		want := &remote.RemoteMessage{}
		werr := proto.Unmarshal(data, want)
		got := &remote.RemoteMessage{}
		gerr := unmarshalRemote(mem.BufferSlice{mem.SliceBuffer(data)}, got)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("codec error %v, proto %v", gerr, werr)
		}
		if werr == nil {
			for _, env := range got.GetMessageBatch().GetEnvelopes() {
				if env.SerializerId == batchesSerializerID {
					env.SerializerId = 0
				}
			}
			if !proto.Equal(want, got) {
				t.Fatalf("codec reads %v, proto %v", got, want)
			}
		}
		wb := &wire.Batches{}
		werr = proto.Unmarshal(data, wb)
		gb, gerr := readBatches(data)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("batches error %v, proto %v", gerr, werr)
		}
		if werr == nil && !proto.Equal(wb, gb) {
			t.Fatalf("batches %v, proto %v", gb, wb)
		}
	})
}

// A query for keys that are not valid UTF-8 crosses nodes with their
// bytes. Its fields were protobuf strings, which refuse such bytes: a
// lookup of such a key on another node, or a page after it, was never
// sent (protoactor logs the error and drops the message) and timed out.
func TestQueryMsgKeysNotUTF8(t *testing.T) {
	req := splice.Request{View: "v", Op: splice.OpKey, Key: "\xff\x01", Query: splice.Query{Limit: 5, After: "a\xfe", HasAfter: true, Prefix: "\xc3"}}
	data, err := proto.Marshal(queryMsg(req, []int{3, 9}, true))
	if err != nil {
		t.Fatal(err)
	}
	var m wire.Query
	if err := proto.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	got, frags := requestOf(&m)
	if !reflect.DeepEqual(got, req) || !reflect.DeepEqual(frags, []int{3, 9}) || !m.Standby {
		t.Fatalf("decoded %+v, fragments %v, standby %v; want %+v, [3 9], true", got, frags, m.Standby, req)
	}
}
