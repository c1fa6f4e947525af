package recovery

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// Alert progress and records: 's' <flow> 0 <alert> → state; 'r' <flow> 0
// <seq BE> → record; 'v' <flow> 0 → the log's version (AlertLog). All are
// sealed like checkpoint entries.

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
