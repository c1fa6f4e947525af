package recovery

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// A checkpoint crosses nodes (to a fragment's standby) in this encoding:
//
//	version byte (1); manifest (uvarint length + EncodeManifest); full byte
//	resets uvarint, each a uint16 namespace
//	puts uvarint, each: namespace uint16, key and value (uvarint length + bytes)
//	deletes uvarint, each: namespace uint16, key (uvarint length + bytes)

// EncodeCheckpoint encodes cp.
func EncodeCheckpoint(cp *Checkpoint) []byte {
	m := EncodeManifest(cp.Manifest)
	b := []byte{1}
	b = binary.AppendUvarint(b, uint64(len(m)))
	b = append(b, m...)
	if cp.Full {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(cp.Reset)))
	for _, ns := range cp.Reset {
		b = binary.BigEndian.AppendUint16(b, ns)
	}
	entry := func(b []byte, e Entry, withValue bool) []byte {
		b = binary.BigEndian.AppendUint16(b, e.Namespace)
		b = binary.AppendUvarint(b, uint64(len(e.Key)))
		b = append(b, e.Key...)
		if withValue {
			b = binary.AppendUvarint(b, uint64(len(e.Value)))
			b = append(b, e.Value...)
		}
		return b
	}
	b = binary.AppendUvarint(b, uint64(len(cp.Puts)))
	for _, e := range cp.Puts {
		b = entry(b, e, true)
	}
	b = binary.AppendUvarint(b, uint64(len(cp.Deletes)))
	for _, e := range cp.Deletes {
		b = entry(b, e, false)
	}
	return b
}

// DecodeCheckpoint decodes what EncodeCheckpoint encoded.
func DecodeCheckpoint(b []byte) (*Checkpoint, error) {
	bad := func(what string) (*Checkpoint, error) {
		return nil, fmt.Errorf("malformed checkpoint: %s", what)
	}
	if len(b) == 0 || b[0] != 1 {
		return bad("unknown version")
	}
	b = b[1:]
	n, l := binary.Uvarint(b)
	if l <= 0 || n > uint64(len(b)-l) {
		return bad("manifest")
	}
	m, err := DecodeManifest(b[l : l+int(n)])
	if err != nil {
		return nil, fmt.Errorf("malformed checkpoint: %w", err)
	}
	b = b[l+int(n):]
	cp := &Checkpoint{Manifest: m}
	if len(b) == 0 || b[0] > 1 {
		return bad("full flag")
	}
	cp.Full, b = b[0] == 1, b[1:]
	count := func() (int, bool) {
		n, l := binary.Uvarint(b)
		if l <= 0 || n > uint64(len(b)) {
			return 0, false
		}
		b = b[l:]
		return int(n), true
	}
	bytes := func() ([]byte, bool) {
		n, l := binary.Uvarint(b)
		if l <= 0 || n > uint64(len(b)-l) {
			return nil, false
		}
		v := b[l : l+int(n) : l+int(n)]
		b = b[l+int(n):]
		return v, true
	}
	ns := func() (uint16, bool) {
		if len(b) < 2 {
			return 0, false
		}
		v := binary.BigEndian.Uint16(b)
		b = b[2:]
		return v, true
	}
	k, ok := count()
	if !ok {
		return bad("resets")
	}
	for range k {
		v, ok := ns()
		if !ok {
			return bad("reset")
		}
		cp.Reset = append(cp.Reset, v)
	}
	for _, withValue := range []bool{true, false} {
		k, ok := count()
		if !ok {
			return bad("entries")
		}
		// Sized once: an entry takes at least 3 bytes (namespace and key
		// length), so a count the data cannot hold is refused before it
		// sizes anything.
		if k > len(b)/3 {
			return bad("entry count")
		}
		if withValue && k > 0 {
			cp.Puts = make([]Entry, 0, k)
		} else if k > 0 {
			cp.Deletes = make([]Entry, 0, k)
		}
		for range k {
			var e Entry
			var ok1, ok2, ok3 = true, true, true
			e.Namespace, ok1 = ns()
			e.Key, ok2 = bytes()
			if withValue {
				e.Value, ok3 = bytes()
			}
			if !ok1 || !ok2 || !ok3 {
				return bad("entry")
			}
			if withValue {
				cp.Puts = append(cp.Puts, e)
			} else {
				cp.Deletes = append(cp.Deletes, e)
			}
		}
	}
	if len(b) != 0 {
		return bad("trailing bytes")
	}
	return cp, nil
}

// Manifest reads a fragment's last manifest; ok is false if it has none.
func (s *Store) Manifest(flow string, frag int) (m Manifest, ok bool, err error) {
	mk := fragPrefix('m', flow, frag)
	v, closer, err := s.db.Get(mk)
	if errors.Is(err, pebble.ErrNotFound) {
		return m, false, nil
	}
	if err != nil {
		return m, false, err
	}
	defer closer.Close()
	body, err := unseal(mk, v)
	if err != nil {
		return m, false, err
	}
	m, err = DecodeManifest(body)
	return m, err == nil, err
}

// Full reads a fragment's whole last checkpoint as one that replaces any
// other copy (to bring a standby up to date); ok is false if it has none.
func (s *Store) Full(flow string, frag int) (cp *Checkpoint, ok bool, err error) {
	cp = &Checkpoint{Full: true}
	m, ok, err := s.Load(flow, frag, func(e Entry) error {
		cp.Puts = append(cp.Puts, Entry{Namespace: e.Namespace, Key: append([]byte(nil), e.Key...), Value: append([]byte(nil), e.Value...)})
		return nil
	})
	cp.Manifest = m
	return cp, ok, err
}

// FollowsCopy reports whether an incremental copy of a checkpoint that
// follows epoch prev applies to the copy a standby holds (have, if ok): it
// applies on the copy of epoch prev, and a fragment's first checkpoint
// (prev 0), which holds its whole state, applies on none. Otherwise the
// standby asks for a full copy.
func FollowsCopy(have Manifest, ok bool, prev uint64) bool {
	if !ok {
		return prev == 0
	}
	return have.Epoch == prev
}

// Empty is the checkpoint of a fragment of a flow of fragments fragments
// that never took one: what its owner hands off, so that the new owner
// starts empty at once. (A zero Checkpoint does not decode: a manifest
// names its flow's fragment count.)
func Empty(fragments int) *Checkpoint {
	return &Checkpoint{Full: true, Manifest: Manifest{Fragments: fragments}}
}
