package ingest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// retain is the retention goroutine: every RetentionInterval, and when a
// commit or a full log asks, it deletes committed events past MaxAge or
// over MaxBytes, and expired idempotency keys.
func (l *Log) retain() {
	defer l.wg.Done()
	t := time.NewTicker(l.opts.RetentionInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		case <-l.wake:
		}
		if err := l.Trim(); err != nil {
			l.opts.Logger.Warn("ingest log: retention", "err", err)
		}
	}
}

// nudge asks the retention goroutine for a pass.
func (l *Log) nudge() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Trim runs retention once: see the package doc. The retention goroutine
// calls it; tests call it to trim now.
func (l *Log) Trim() error {
	l.trimMu.Lock()
	defer l.trimMu.Unlock()
	now := l.opts.Now()
	l.mu.Lock()
	streams := make([]*stream, 0, len(l.streams))
	for _, s := range l.streams {
		streams = append(streams, s)
	}
	l.mu.Unlock()
	oldest := now.Add(-l.opts.MaxAge).UnixNano()
	b := l.db.NewBatch()
	defer b.Close()
	trim := map[*partition]*trimmed{}
	over := l.bytes.Load() - l.opts.MaxBytes
	// Age and size at once: the oldest committed append of any partition
	// goes first, while it is past MaxAge or the log over MaxBytes.
	for {
		var best *trimmed
		var bestAt int64
		for _, s := range streams {
			for p, part := range s.parts {
				t := trim[part]
				skip := 0
				if t != nil {
					skip = t.n
				}
				part.mu.Lock()
				if skip < len(part.batches) {
					bm := part.batches[skip]
					if bm.to <= part.committed.Load() && (bm.at < oldest || over > 0) && (best == nil || bm.at < bestAt) {
						if t == nil {
							t = &trimmed{s: s, p: p, part: part}
						}
						best, bestAt = t, bm.at
					}
				}
				part.mu.Unlock()
			}
		}
		if best == nil {
			break
		}
		trim[best.part] = best
		best.part.mu.Lock()
		bm := best.part.batches[best.n]
		best.part.mu.Unlock()
		b.DeleteRange(offsetKey(kindBlock, best.s.name, best.p, bm.from), offsetKey(kindBlock, best.s.name, best.p, bm.to), nil)
		b.Delete(offsetKey(kindHeader, best.s.name, best.p, bm.from), nil)
		best.n++
		best.bytes += bm.bytes
		over -= bm.bytes
	}
	if err := l.expireKeys(now); err != nil {
		return err
	}
	if len(trim) == 0 {
		return nil
	}
	if err := l.Err(); err != nil {
		return nil // the WAL failed: a commit now would be fatal (see commitSynced)
	}
	// Not synced: a trim lost in a crash is done again after it.
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("trim: %w", err)
	}
	for _, d := range trim {
		d.part.mu.Lock()
		d.part.batches = append(d.part.batches[:0], d.part.batches[d.n:]...)
		if len(d.part.batches) > 0 {
			d.part.start = d.part.batches[0].from
		} else {
			d.part.start = d.part.end.Load()
		}
		d.part.mu.Unlock()
		l.bytes.Add(-d.bytes)
	}
	return nil
}

// expireKeys deletes the idempotency keys older than IdempotencyTTL, up
// to maxExpiredKeys a pass, in chunks of keyChunk.
func (l *Log) expireKeys(now time.Time) error {
	for n := 0; n < maxExpiredKeys; {
		k, err := l.expireKeyChunk(now)
		if err != nil || k < keyChunk {
			return err
		}
		n += k
	}
	return nil
}

// How many keys retention expires a pass, and how many at a time: each
// chunk holds keyMu, which the writer's commits wait for, while it reads
// its keys' records and commits their deletes.
const (
	maxExpiredKeys = 100_000
	keyChunk       = 1000
)

// expireKeyChunk deletes up to keyChunk expired keys in a batch of its
// own, apart from the writer's commits (keyMu): a key's record read,
// judged expired and deleted here is not one the writer wrote anew in
// between. It returns how many expiry entries it read.
func (l *Log) expireKeyChunk(now time.Time) (int, error) {
	l.keyMu.Lock()
	defer l.keyMu.Unlock()
	lo := []byte{kindExpiry}
	hi := binary.BigEndian.AppendUint64([]byte{kindExpiry}, uint64(now.Add(-l.opts.IdempotencyTTL).UnixNano()))
	it, err := l.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return 0, err
	}
	b := l.db.NewBatch()
	defer b.Close()
	n := 0
	for it.First(); it.Valid() && n < keyChunk; it.Next() {
		k := it.Key()
		n++
		b.Delete(k, nil)
		if len(k) < 9 {
			continue
		}
		// The key may have been used again since (a retry after it
		// expired): its record is then newer than this index entry.
		key := append([]byte{kindKey}, k[9:]...)
		v, closer, err := l.db.Get(key)
		if err != nil {
			continue // gone already
		}
		newer := len(v) >= 8 && binary.BigEndian.Uint64(v) != binary.BigEndian.Uint64(k[1:9])
		closer.Close()
		if !newer {
			b.Delete(key, nil)
		}
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return 0, err
	}
	if n == 0 || l.Err() != nil {
		return 0, nil // nothing, or the WAL failed: a commit now would be fatal
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return 0, fmt.Errorf("trim keys: %w", err)
	}
	return n, nil
}

// trimmed is what one pass of Trim deletes from one partition: its first n
// appends.
type trimmed struct {
	s     *stream
	p     int
	part  *partition
	n     int
	bytes int64
}
