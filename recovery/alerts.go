package recovery

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// Alert progress and records: 's' <flow> 0 <alert> → state; 'r' <flow> 0
// <seq BE> → record. Both are sealed like checkpoint entries.

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
	b := s.db.NewBatch()
	defer b.Close()
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
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("write alerts of %s: %w", flow, err)
	}
	return nil
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
