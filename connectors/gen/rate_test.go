package gen

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
)

// A rate that is not a finite number (what -rate NaN or -rate Inf parse
// to), or one so large that its offsets overflow, is bad configuration:
// New must refuse it, like a negative one. Taken,
// the schedule converts a non-finite float to int64 (reader.Read via
// schedule.due), which Go leaves to the platform: here +Inf makes a
// partition that silently never yields an event.
func TestNonFiniteRateIsRefused(t *testing.T) {
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	for _, rate := range []float64{math.NaN(), math.Inf(1), 1e300, 2e9} {
		s, err := New(Config{Partitions: 1, Events: 100, Rate: rate, Now: clock}, word)
		if err != nil {
			continue
		}
		pr, err := s.Open(0, 0)
		if err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Second)
		var b flows.ReadBatch[int]
		rerr := pr.Read(context.Background(), &b, 10)
		t.Errorf("rate %v: New took it; a second later Read gave %d events (%v)", rate, len(b.Events), rerr)
	}
}
