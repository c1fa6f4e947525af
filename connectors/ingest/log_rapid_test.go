package ingest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"pgregory.net/rapid"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/shard"
)

// logModel is what the log must hold: every partition's events by offset,
// and every idempotency key's first body and result.
type logModel struct {
	parts     [][]event
	keys      map[string]modelKey
	committed []int64
}

type modelKey struct {
	body string
	at   time.Time
	res  Result
}

// Any sequence of appends (with and without keys, retried, reused with
// other bodies), reads by readers that stay open, rewinds, commits,
// retention passes, clock moves and restarts: every reader reads exactly
// the events appended, in offset order; a retry within the TTL gets the
// first result and appends nothing; retention never deletes what is not
// committed; and what it keeps reads back unchanged.
func TestLogAgainstModel(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		const parts = 3
		fs := vfs.NewMem()
		clk := newClock()
		opts := Options{FS: fs, Logger: quiet(), Now: clk.now, IdempotencyTTL: time.Hour, MaxAge: 30 * time.Minute,
			MaxBytes: int64(rapid.IntRange(200, 5000).Draw(rt, "maxBytes")), RetentionInterval: time.Hour}
		keyed := rapid.Bool().Draw(rt, "keyed")
		cfg := Config[event]{Name: "events", Partitions: parts, MaxUnread: 1 << 30}
		if keyed {
			cfg.Key = func(e event) string { return fmt.Sprint(e.N % 7) }
		}
		open := func() (*Log, *Stream[event]) {
			l, err := Open("log", opts)
			if err != nil {
				rt.Fatal(err)
			}
			s, err := NewStream(l, cfg)
			if err != nil {
				l.Close()
				rt.Fatal(err)
			}
			return l, s
		}
		l, s := open()
		defer func() { l.Close() }()
		m := &logModel{parts: make([][]event, parts), keys: map[string]modelKey{}, committed: make([]int64, parts)}
		readers := make([][]*modelReader, parts)
		defer func() {
			for _, rs := range readers {
				for _, r := range rs {
					r.r.Close()
				}
			}
		}()
		openReader := func(p int, from int64) {
			r, err := s.Open(p, from)
			if err != nil {
				rt.Fatalf("open %d at %d (start %d, end %d): %v", p, from, s.Start(p), s.End(p), err)
			}
			readers[p] = append(readers[p], &modelReader{r: r, pos: from})
		}
		for p := range parts {
			openReader(p, 0)
		}
		ctx := context.Background()
		next := 0
		rt.Repeat(map[string]func(*rapid.T){
			"append": func(rt *rapid.T) {
				key := ""
				if rapid.Bool().Draw(rt, "withKey") {
					key = fmt.Sprintf("k%d", rapid.IntRange(0, 5).Draw(rt, "key"))
					// A key used again after its TTL is TestKeyUsedAgainWhileRetentionExpiresIt's
					// (retention runs in the background too): here each use of a name
					// after its TTL is a new key.
					for mk, ok := m.keys[key]; ok && clk.now().Sub(mk.at) > time.Hour; mk, ok = m.keys[key] {
						key += "'"
					}
				}
				var evs [][]byte
				var body []string
				if key != "" && rapid.Bool().Draw(rt, "retry") {
					if mk, ok := m.keys[key]; ok {
						body = strings.Split(mk.body, "\n")
						if mk.body == "" {
							body = nil
						}
					}
				}
				if body == nil {
					for range rapid.IntRange(0, 4).Draw(rt, "events") {
						body = append(body, string(line(next)))
						next++
					}
				}
				for _, b := range body {
					evs = append(evs, []byte(b))
				}
				res, err := s.Append(ctx, key, evs...)
				mk, had := m.keys[key]
				if had && clk.now().Sub(mk.at) > time.Hour {
					had = false
				}
				switch {
				case errors.Is(err, ErrFull):
					return // refused: nothing appended (checked by the reads)
				case key != "" && had && mk.body != strings.Join(body, "\n"):
					if !errors.Is(err, ErrKeyReused) {
						rt.Fatalf("key %s reused with another body: %+v %v", key, res, err)
					}
					return
				case key != "" && had:
					if err != nil || !res.Replayed || fmt.Sprint(res.Partitions) != fmt.Sprint(mk.res.Partitions) || res.Accepted != mk.res.Accepted {
						rt.Fatalf("retry of %s: %+v %v, first %+v", key, res, err, mk.res)
					}
					return
				case err != nil:
					rt.Fatalf("append: %v", err)
				}
				if res.Replayed {
					rt.Fatalf("a new append of %q answered as replayed: %+v", key, res)
				}
				if res.Accepted != len(evs) {
					rt.Fatalf("append of %d events answered %+v", len(evs), res)
				}
				// Place the events in the model as Config.Key or the
				// answer says, in request order within each partition.
				byPart := map[int][]event{}
				for _, b := range evs {
					d, _ := DecodeJSON[event](b)
					p := 0
					if cfg.Key != nil {
						p = shard.Fragment(shard.String(cfg.Key(d)), parts)
					} else {
						p = res.Partitions[0].Partition
					}
					byPart[p] = append(byPart[p], d)
				}
				n := 0
				for _, a := range res.Partitions {
					if a.From != int64(len(m.parts[a.Partition])) || int64(len(byPart[a.Partition])) != a.To-a.From {
						rt.Fatalf("answer %+v: the model's ends %d/%d/%d, placement %v", res, len(m.parts[0]), len(m.parts[1]), len(m.parts[2]), byPart)
					}
					m.parts[a.Partition] = append(m.parts[a.Partition], byPart[a.Partition]...)
					n += len(byPart[a.Partition])
				}
				if n != len(evs) {
					rt.Fatalf("answer %+v places %d of %d events", res, n, len(evs))
				}
				if key != "" {
					m.keys[key] = modelKey{body: strings.Join(body, "\n"), at: clk.now(), res: res}
				}
			},
			"read": func(rt *rapid.T) {
				p := rapid.IntRange(0, parts-1).Draw(rt, "p")
				if len(readers[p]) == 0 {
					return
				}
				r := readers[p][rapid.IntRange(0, len(readers[p])-1).Draw(rt, "reader")]
				var b flows.ReadBatch[event]
				if err := r.r.Read(ctx, &b, rapid.IntRange(1, 6).Draw(rt, "max")); err != nil {
					rt.Fatalf("read %d at %d: %v", p, r.pos, err)
				}
				for i, e := range b.Events {
					if b.Offsets[i] != r.pos {
						rt.Fatalf("partition %d: offset %d, want %d", p, b.Offsets[i], r.pos)
					}
					if e != m.parts[p][r.pos] {
						rt.Fatalf("partition %d offset %d: %+v, want %+v", p, r.pos, e, m.parts[p][r.pos])
					}
					r.pos++
				}
				if b.End != r.pos || len(b.Bad) > 0 {
					rt.Fatalf("partition %d: end %d, position %d, bad %v", p, b.End, r.pos, b.Bad)
				}
			},
			"rewind": func(rt *rapid.T) {
				p := rapid.IntRange(0, parts-1).Draw(rt, "p")
				from := rapid.Int64Range(s.Start(p), s.End(p)).Draw(rt, "from")
				if from < m.committed[p] {
					from = m.committed[p]
				}
				if len(readers[p]) > 0 && rapid.Bool().Draw(rt, "closeOld") {
					readers[p][0].r.Close()
					readers[p] = readers[p][1:]
				}
				openReader(p, from)
			},
			"commit": func(rt *rapid.T) {
				p := rapid.IntRange(0, parts-1).Draw(rt, "p")
				if len(readers[p]) == 0 {
					return
				}
				// The engine commits what every reader has passed.
				low := readers[p][0].pos
				for _, r := range readers[p] {
					low = min(low, r.pos)
				}
				off := rapid.Int64Range(0, low).Draw(rt, "offset")
				readers[p][0].r.(flows.Committer).Commit(off)
				m.committed[p] = max(m.committed[p], off)
			},
			"tick": func(rt *rapid.T) {
				clk.add(time.Duration(rapid.IntRange(1, 40).Draw(rt, "minutes")) * time.Minute)
			},
			"trim": func(rt *rapid.T) {
				if err := l.Trim(); err != nil {
					rt.Fatal(err)
				}
				for p := range parts {
					if s.Start(p) > m.committed[p] {
						rt.Fatalf("partition %d starts at %d, committed only %d", p, s.Start(p), m.committed[p])
					}
				}
			},
			"restart": func(rt *rapid.T) {
				for p, rs := range readers {
					for _, r := range rs {
						r.r.Close()
					}
					readers[p] = nil
				}
				if err := l.Close(); err != nil {
					rt.Fatal(err)
				}
				l, s = open()
				for p := range parts {
					if s.End(p) != int64(len(m.parts[p])) {
						rt.Fatalf("after a restart partition %d ends at %d, want %d", p, s.End(p), len(m.parts[p]))
					}
					if s.Start(p) > m.committed[p] {
						rt.Fatalf("after a restart partition %d starts at %d, committed only %d", p, s.Start(p), m.committed[p])
					}
					// The flow restores its commit: readers start there.
					openReader(p, max(m.committed[p], s.Start(p)))
					readers[p][0].r.(flows.Committer).Commit(m.committed[p])
				}
			},
			"": func(rt *rapid.T) {
				for p := range parts {
					if s.End(p) != int64(len(m.parts[p])) {
						rt.Fatalf("partition %d ends at %d, want %d", p, s.End(p), len(m.parts[p]))
					}
				}
			},
		})
		// Everything still held reads back as appended (retention, which
		// a commit wakes in the background, stopped meanwhile).
		l.trimMu.Lock()
		defer l.trimMu.Unlock()
		for p := range parts {
			r, err := s.Open(p, s.Start(p))
			if err != nil {
				rt.Fatal(err)
			}
			for off := s.Start(p); off < s.End(p); {
				var b flows.ReadBatch[event]
				if err := r.Read(ctx, &b, 5); err != nil {
					rt.Fatal(err)
				}
				for i, e := range b.Events {
					if b.Offsets[i] != off || e != m.parts[p][off] {
						rt.Fatalf("partition %d offset %d: %+v at %d, want %+v", p, off, e, b.Offsets[i], m.parts[p][off])
					}
					off++
				}
			}
			r.Close()
		}
	})
}

type modelReader struct {
	r   flows.PartitionReader[event]
	pos int64
}
