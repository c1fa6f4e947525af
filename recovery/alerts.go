package recovery

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/cockroachdb/pebble/v2"
)

// Alert progress and records: 's' <flow> 0 <alert> → state; 'r' <flow> 0
// <seq BE> → record; 'v' <flow> 0 → the log's version (AlertLog); 'p'
// <flow> 0 → the step this node holds prepared for the log's owner
// (EncodePreparedAlert). All are sealed like checkpoint entries.

func alertKey(kind byte, flow string, rest []byte) []byte {
	b := make([]byte, 0, len(flow)+2+len(rest))
	b = append(b, kind)
	b = append(b, flow...)
	b = append(b, 0)
	return append(b, rest...)
}

// WriteAlerts stores alert records and the alerts' new states in one synced
// batch: an alert is durable exactly when the progress past its window is.
// Records are numbered from first.
func (s *Store) WriteAlerts(flow string, states map[string][]byte, first uint64, records [][]byte) error {
	return s.writeAlerts(flow, nil, states, first, records, pebble.Sync)
}

// WriteAlertLog is WriteAlerts for a node's copy of a flow's alert log
// (AlertLog): it also sets the log's version, and syncs only if sync (a
// copy that another node holds too may lose its last writes in a crash:
// it is then a shorter prefix of the log).
func (s *Store) WriteAlertLog(flow string, version uint64, states map[string][]byte, first uint64, records [][]byte, sync bool) error {
	opts := pebble.NoSync
	if sync {
		opts = pebble.Sync
	}
	v := binary.BigEndian.AppendUint64(nil, version)
	return s.writeAlerts(flow, v, states, first, records, opts)
}

func (s *Store) writeAlerts(flow string, version []byte, states map[string][]byte, first uint64, records [][]byte, opts *pebble.WriteOptions) error {
	b := s.db.NewBatch()
	defer b.Close()
	if version != nil {
		k := alertKey('v', flow, nil)
		if err := b.Set(k, sealed(k, version), nil); err != nil {
			return err
		}
	}
	for name, st := range states {
		k := alertKey('s', flow, []byte(name))
		if err := b.Set(k, sealed(k, st), nil); err != nil {
			return err
		}
	}
	for i, r := range records {
		k := alertKey('r', flow, binary.BigEndian.AppendUint64(nil, first+uint64(i)))
		if err := b.Set(k, sealed(k, r), nil); err != nil {
			return err
		}
	}
	if err := b.Commit(opts); err != nil {
		return fmt.Errorf("write alerts of %s: %w", flow, err)
	}
	return nil
}

// AlertVersion is the version of a flow's alert log: the steps written by
// WriteAlertLog (0 if none).
func (s *Store) AlertVersion(flow string) (uint64, error) {
	k := alertKey('v', flow, nil)
	v, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("alert log version of %s: %w", flow, err)
	}
	defer closer.Close()
	body, err := unseal(k, v)
	if err == nil && len(body) != 8 {
		err = fmt.Errorf("%w: alert log version of %d bytes", ErrCorrupt, len(body))
	}
	if err != nil {
		return 0, fmt.Errorf("alert log version of %s: %w", flow, err)
	}
	return binary.BigEndian.Uint64(body), nil
}

// AlertRecords reads records [from, to) of a flow's alerts.
func (s *Store) AlertRecords(flow string, from, to uint64) ([][]byte, error) {
	lo := alertKey('r', flow, binary.BigEndian.AppendUint64(nil, from))
	hi := alertKey('r', flow, binary.BigEndian.AppendUint64(nil, to))
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out [][]byte
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, err
		}
		body, err := unseal(it.Key(), v)
		if err != nil {
			return nil, fmt.Errorf("alert record %q: %w", it.Key(), err)
		}
		out = append(out, append([]byte(nil), body...))
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	if uint64(len(out)) != to-from {
		return nil, fmt.Errorf("%w: alert records [%d, %d) of %s: %d found", ErrCorrupt, from, to, flow, len(out))
	}
	return out, nil
}

// LoadAlerts reads the alerts' states and every record, in order.
func (s *Store) LoadAlerts(flow string) (states map[string][]byte, records [][]byte, err error) {
	states = map[string][]byte{}
	scan := func(kind byte, fn func(rest, body []byte)) error {
		lo := alertKey(kind, flow, nil)
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
		if err != nil {
			return err
		}
		defer it.Close()
		for it.First(); it.Valid(); it.Next() {
			v, err := it.ValueAndErr()
			if err != nil {
				return err
			}
			body, err := unseal(it.Key(), v)
			if err != nil {
				return fmt.Errorf("alert entry %q: %w", it.Key(), err)
			}
			fn(it.Key()[len(lo):], body)
		}
		return it.Error()
	}
	err = errors.Join(
		scan('s', func(rest, body []byte) { states[string(rest)] = append([]byte(nil), body...) }),
		scan('r', func(_, body []byte) { records = append(records, append([]byte(nil), body...)) }))
	if err != nil {
		return nil, nil, fmt.Errorf("load alerts of %s: %w", flow, err)
	}
	return states, records, nil
}

// WritePreparedAlert stores, synced, the step st that the owner of a
// flow's alert log prepared with this node under placement at, in place
// of the one stored before: a member that acknowledged a prepare holds
// the step through a restart (AlertLog.RestorePrepared).
func (s *Store) WritePreparedAlert(flow string, at uint64, st AlertStep) error {
	k := alertKey('p', flow, nil)
	if err := s.db.Set(k, sealed(k, EncodePreparedAlert(at, st)), pebble.Sync); err != nil {
		return fmt.Errorf("write the prepared alert step of %s: %w", flow, err)
	}
	return nil
}

// PreparedAlert is the step WritePreparedAlert stored last for flow, and
// the placement it was prepared under (ok false: none).
func (s *Store) PreparedAlert(flow string) (st AlertStep, at uint64, ok bool, err error) {
	k := alertKey('p', flow, nil)
	v, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return AlertStep{}, 0, false, nil
	}
	if err != nil {
		return AlertStep{}, 0, false, fmt.Errorf("prepared alert step of %s: %w", flow, err)
	}
	defer closer.Close()
	body, err := unseal(k, v)
	if err == nil {
		st, at, err = DecodePreparedAlert(body)
	}
	if err != nil {
		return AlertStep{}, 0, false, fmt.Errorf("prepared alert step of %s: %w", flow, err)
	}
	return st, at, true, nil
}

// EncodePreparedAlert encodes a prepared alert step and the placement it
// was prepared under: a version byte (1), then uvarints at, Version,
// First, a zigzag varint Lost, the records (a count, then each with its
// length) and the states (a count, then name and value with their lengths,
// by name).
func EncodePreparedAlert(at uint64, st AlertStep) []byte {
	b := []byte{1}
	b = binary.AppendUvarint(b, at)
	b = binary.AppendUvarint(b, st.Version)
	b = binary.AppendUvarint(b, st.First)
	b = binary.AppendVarint(b, st.Lost)
	chunk := func(b, v []byte) []byte {
		b = binary.AppendUvarint(b, uint64(len(v)))
		return append(b, v...)
	}
	b = binary.AppendUvarint(b, uint64(len(st.Records)))
	for _, r := range st.Records {
		b = chunk(b, r)
	}
	b = binary.AppendUvarint(b, uint64(len(st.States)))
	for _, name := range slices.Sorted(maps.Keys(st.States)) {
		b = chunk(b, []byte(name))
		b = chunk(b, st.States[name])
	}
	return b
}

// DecodePreparedAlert decodes what EncodePreparedAlert encoded; malformed
// input is an error wrapping ErrCorrupt.
func DecodePreparedAlert(b []byte) (st AlertStep, at uint64, err error) {
	bad := func(what string) (AlertStep, uint64, error) {
		return AlertStep{}, 0, fmt.Errorf("%w: prepared alert step: %s", ErrCorrupt, what)
	}
	if len(b) == 0 || b[0] != 1 {
		return bad("unknown version")
	}
	b = b[1:]
	uvarint := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	chunk := func() ([]byte, bool) {
		n, ok := uvarint()
		if !ok || n > uint64(len(b)) {
			return nil, false
		}
		v := append([]byte{}, b[:n]...)
		b = b[n:]
		return v, true
	}
	var ok bool
	if at, ok = uvarint(); !ok {
		return bad("placement")
	}
	if st.Version, ok = uvarint(); !ok {
		return bad("version")
	}
	if st.First, ok = uvarint(); !ok {
		return bad("first record")
	}
	lost, n := binary.Varint(b)
	if n <= 0 {
		return bad("lost windows")
	}
	st.Lost, b = lost, b[n:]
	records, ok := uvarint()
	if !ok || records > uint64(len(b)) { // every record takes a byte at least
		return bad("record count")
	}
	for range records {
		r, ok := chunk()
		if !ok {
			return bad("record")
		}
		st.Records = append(st.Records, r)
	}
	states, ok := uvarint()
	if !ok || states > uint64(len(b)) {
		return bad("state count")
	}
	st.States = make(map[string][]byte, states)
	for range states {
		name, ok := chunk()
		if !ok {
			return bad("state name")
		}
		v, ok := chunk()
		if !ok {
			return bad("state")
		}
		if _, dup := st.States[string(name)]; dup {
			return bad("a state named twice")
		}
		st.States[string(name)] = v
	}
	if len(b) != 0 {
		return bad("trailing bytes")
	}
	return st, at, nil
}
