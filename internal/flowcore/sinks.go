package flowcore

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// SinkOption configures To.
type SinkOption struct{ committed bool }

// OnCheckpoint delivers a sink's outputs once a durable checkpoint of
// their fragment covers them, instead of as they are made: the sink sees
// each output of one history of the fragment, exactly once, whatever
// crashes and replays happen — one checkpoint interval late. Outputs
// covered by a checkpoint but not yet delivered are in the checkpoint
// and delivered again after a restore, in the same order, with the same
// ids: an idempotent sink (or one that drops ids it has) sees each once.
// In a cluster, where a standby may restore the checkpoint before the
// owner's newest durable one, the engine delivers them once the standby
// confirmed its copy of the checkpoint (recovery's strong rule), so that
// whatever a restore brings back holds, as a prefix, everything delivered
// since it was taken. (Fragment.LagReleases, one checkpoint later, is the
// fallback for a driver without confirmations.)
//
// Without it, outputs leave as they are made, with ids fixed by their
// cause. That is exactly-once for an idempotent sink when the outputs do
// not depend on how the fragment's input partitions interleave (a
// stateless stream, one input partition per key, or a Process with
// InEventTimeOrder); otherwise a replay may give an id a different value.
// It needs a stream after KeyBy.
//
// A Write that fails loses nothing either way. With OnCheckpoint the
// outputs stay, and are given again on the next checkpoint. Without it
// (after KeyBy), the fragment keeps them and gives them again after a
// backoff, for as long as the sink refuses, applying no input and taking
// no checkpoint meanwhile (a crash meanwhile makes them again, with the
// same ids, from the last checkpoint). A sink before KeyBy, called by the
// readers, that fails stops the engine with its error.
func OnCheckpoint() SinkOption { return SinkOption{committed: true} }

// committedSink is a sink's outputs in a fragment, delivered on durable
// checkpoints. It is a stateful operator: its pending outputs are part of
// the fragment's checkpoint (one entry, rewritten when it changes).
type committedSink[T any] struct {
	sink   Sink[T]
	vc     Codec[T]
	out    []Output[T]
	marked int  // out[:marked] are covered by the checkpoint being written
	ready  int  // out[:ready] are covered by a durable checkpoint
	behind int  // with a release lag: out[:behind] are covered by the checkpoint before the newest durable one
	dirty  bool // out[:marked] changed since the last checkpoint
}

// flush and discard follow a batch: outputs wait for the checkpoint.
func (s *committedSink[T]) flush() error { return nil }

func (s *committedSink[T]) discard() {
	clear(s.out[s.marked:])
	s.out = s.out[:s.marked]
}

// release delivers the outputs a durable checkpoint covers: the one just
// made durable, or with lag the one before it.
func (s *committedSink[T]) release(lag bool) error {
	covered := s.marked
	if lag {
		covered, s.behind = s.behind, s.marked
	}
	s.ready = max(s.ready, covered)
	if s.ready == 0 {
		return nil
	}
	if err := s.sink.Write(s.out[:s.ready]); err != nil {
		return err // kept, and delivered again on the next checkpoint
	}
	n := copy(s.out, s.out[s.ready:])
	clear(s.out[n:])
	s.out = s.out[:n]
	s.marked -= s.ready
	s.behind = max(0, s.behind-s.ready)
	s.ready = 0
	s.dirty = true
	return nil
}

func (s *committedSink[T]) delta(ns uint16, d *Delta) error {
	if s.dirty || len(s.out) > s.marked {
		s.marked = len(s.out)
		s.dirty = false
		if s.marked == 0 {
			d.Deletes = append(d.Deletes, StateEntry{Namespace: ns, Key: []byte{}})
			return nil
		}
		val := binary.AppendUvarint(nil, uint64(s.marked))
		var err error
		for _, o := range s.out[:s.marked] {
			val = appendOutputID(val, o.ID)
			mark := len(val)
			val = append(val, 0, 0, 0, 0, 0)
			if val, err = s.vc.Append(val, o.Value); err != nil {
				return fmt.Errorf("encode a sink's output: %w", err)
			}
			val = putLength(val, mark)
		}
		d.Puts = append(d.Puts, StateEntry{Namespace: ns, Key: []byte{}, Value: val})
	}
	if s.marked > 0 {
		d.Entries++
	}
	return nil
}

func (s *committedSink[T]) restore(_ uint16, _, val []byte) error {
	r := &batchReader{b: val, kind: "sink entry"}
	n := r.uvarint("outputs")
	if r.err != nil || n > maxBatchRecords {
		return errors.New("malformed sink entry")
	}
	for range n {
		id := readOutputID(r)
		vb := r.bytes("output")
		if r.err != nil {
			return r.err
		}
		v, err := s.vc.Decode(vb)
		if err != nil {
			return fmt.Errorf("decode a sink's output: %w", err)
		}
		s.out = append(s.out, Output[T]{ID: id, Value: v})
	}
	if len(r.b) != 0 {
		return errors.New("malformed sink entry: trailing bytes")
	}
	s.marked = len(s.out) // durable: delivered again at the next release
	s.behind = s.marked   // even with a lag: this is the checkpoint restored
	if rs, ok := s.sink.(RestoredSink); ok && len(s.out) > 0 {
		rs.Restored(s.out[0].ID.Fragment)
	}
	return nil
}

func toCommitted[T any](s Stream[T], sink Sink[T]) {
	f := s.f
	if s.side != fragmentSide {
		f.errorf("To(OnCheckpoint) after %s: the stream must come after KeyBy (readers have no checkpoints)", s.what)
		return
	}
	vc := stateCodec[T](f, "To(OnCheckpoint)", nil)
	op := f.addOp(s.stage, fmt.Sprintf("sink on checkpoints of %s", typeName[T]()))
	f.fragW = append(f.fragW, func(fr *Fragment) {
		cs := &committedSink[T]{sink: sink, vc: vc}
		fr.ops[op] = cs
		fr.sinks = append(fr.sinks, cs)
		fr.committed = append(fr.committed, cs)
		s.attach(&fr.core, func(v T) {
			cs.out = append(cs.out, Output[T]{ID: fr.outputID(), Value: v})
		})
	})
}

func appendOutputID(b []byte, id OutputID) []byte {
	b = binary.AppendVarint(b, int64(id.Fragment))
	b = append(b, byte(id.Cause))
	b = binary.AppendVarint(b, int64(id.Source))
	b = binary.AppendVarint(b, int64(id.Partition))
	b = binary.AppendVarint(b, id.Offset)
	b = binary.AppendVarint(b, int64(id.Record))
	b = binary.AppendVarint(b, int64(id.Op))
	b = binary.AppendUvarint(b, uint64(len(id.Key)))
	b = append(b, id.Key...)
	b = binary.AppendVarint(b, id.At)
	return binary.AppendVarint(b, int64(id.Index))
}

func readOutputID(r *batchReader) OutputID {
	var id OutputID
	id.Fragment = int(r.varint("fragment"))
	if r.err == nil && len(r.b) > 0 {
		id.Cause = Cause(r.b[0])
		r.b = r.b[1:]
	} else {
		r.fail("cause")
	}
	id.Source = int(r.varint("source"))
	id.Partition = int(r.varint("partition"))
	id.Offset = r.varint("offset")
	id.Record = int(r.varint("record"))
	id.Op = int(r.varint("op"))
	id.Key = string(r.bytes("key"))
	id.At = r.varint("at")
	id.Index = int(r.varint("index"))
	return id
}
