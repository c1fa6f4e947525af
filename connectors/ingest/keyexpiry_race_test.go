package ingest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// A key used again after its TTL, while retention expires the key's old
// record, is remembered: its retry is applied once, and another body with
// it is refused. Retention must not delete the new record it did not see.
func TestKeyUsedAgainWhileRetentionExpiresIt(t *testing.T) {
	const keys = 500
	clk := newClock()
	l := openLog(t, vfs.NewMem(), Options{Now: clk.now, IdempotencyTTL: time.Hour, RetentionInterval: time.Hour})
	s := newStream(t, l, Config[event]{Partitions: 1})
	ctx := context.Background()
	for round := range 20 {
		key := func(i int) string { return fmt.Sprintf("r%d-k%d", round, i) }
		for i := range keys {
			if _, err := s.Append(ctx, key(i), line(i)); err != nil {
				t.Fatal(err)
			}
		}
		clk.add(2 * time.Hour)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.Trim(); err != nil {
				t.Error(err)
			}
		}()
		for i := range keys {
			if res, err := s.Append(ctx, key(i), line(-i)); err != nil || res.Replayed {
				t.Fatalf("%s after its TTL: %+v %v, want a new append", key(i), res, err)
			}
		}
		wg.Wait()
		end := s.End(0)
		twice := 0
		for i := range keys {
			res, err := s.Append(ctx, key(i), line(-i))
			if err != nil {
				t.Fatal(err)
			}
			if !res.Replayed {
				twice++
			}
		}
		if twice > 0 {
			t.Fatalf("round %d: %d of %d keys used again after their TTL were applied twice by their retry (%d events appended again): retention deleted their new records", round, twice, keys, s.End(0)-end)
		}
	}
}
