package sim

import (
	"context"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tessera-streams/tessera/flows"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func small() Config {
	c := DefaultConfig()
	c.Zones, c.Subscribers = 49, 300
	return c
}

// The same config gives the same pings and trips; another seed others.
func TestDeterministic(t *testing.T) {
	a, err := Simulate(small())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Simulate(small())
	if !reflect.DeepEqual(a.Parts, b.Parts) || !reflect.DeepEqual(a.Truth, b.Truth) || !reflect.DeepEqual(a.Zones, b.Zones) {
		t.Fatal("two runs of one config differ")
	}
	c := small()
	c.Seed = 2
	d, _ := Simulate(c)
	if reflect.DeepEqual(a.Truth, d.Truth) {
		t.Fatal("another seed gave the same trips")
	}
}

// The simulation looks like a day of a country: plausible numbers of
// pings and trips, trips of every mode with travel times that fit, zone
// names unique, and no record delivered later than MaxDelay.
func TestPlausible(t *testing.T) {
	c := small()
	s, err := Simulate(c)
	if err != nil {
		t.Fatal(err)
	}
	perSub := float64(s.Pings()) / float64(c.Subscribers)
	if perSub < PingsPerSubscriberDay*0.7 || perSub > PingsPerSubscriberDay*1.3 {
		t.Errorf("%.1f pings per subscriber and day, want about %d", perSub, PingsPerSubscriberDay)
	}
	tripsPerSub := float64(len(s.Truth)) / float64(c.Subscribers)
	if tripsPerSub < 1 || tripsPerSub > 4 {
		t.Errorf("%.2f zone-to-zone trips per subscriber and day", tripsPerSub)
	}
	modes := map[Mode]int{}
	for _, tr := range s.Truth {
		modes[tr.Mode]++
		if d := tr.Arrive.Sub(tr.Depart); d <= 0 || d > 3*time.Hour {
			t.Errorf("trip %+v takes %v", tr, d)
		}
		if tr.From == tr.To {
			t.Errorf("trip %+v within a zone", tr)
		}
	}
	if len(modes) != 3 {
		t.Errorf("modes %v, want all three", modes)
	}
	names := map[string]bool{}
	for _, z := range s.Zones {
		if names[z.Name] {
			t.Errorf("zone name %q twice", z.Name)
		}
		names[z.Name] = true
	}
	maxDelay := c.MaxDelay()
	for p, pings := range s.Parts {
		var high time.Time
		for _, pg := range pings {
			if high.Sub(pg.At) > maxDelay {
				t.Fatalf("partition %d: ping at %v delivered after one at %v", p, pg.At, high)
			}
			high = maxTime(high, pg.At)
		}
	}
	lag := s.Parts[c.Noise.LagPartition]
	ooo := 0
	for i := 1; i < len(lag); i++ {
		if lag[i].At.Before(lag[i-1].At) {
			ooo++
		}
	}
	if ooo < len(lag)/10 {
		t.Errorf("lagging partition: %d of %d pings out of order", ooo, len(lag))
	}
}

// The source replays a partition from any offset, and ends each with EOF.
func TestSourceReplays(t *testing.T) {
	s, err := Simulate(small())
	if err != nil {
		t.Fatal(err)
	}
	src := s.Source(0, nil)
	for p := range src.Partitions() {
		from := int64(len(s.Parts[p]) / 3)
		r, err := src.Open(p, from)
		if err != nil {
			t.Fatal(err)
		}
		var got []flows.ReadBatch[Ping]
		for {
			var b flows.ReadBatch[Ping]
			err := r.Read(context.Background(), &b, 1000)
			got = append(got, b)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		off := from
		for _, b := range got {
			for i, e := range b.Events {
				if b.Offsets[i] != off || e != s.Parts[p][off] {
					t.Fatalf("partition %d offset %d: %+v", p, off, e)
				}
				off++
			}
		}
		if off != int64(len(s.Parts[p])) {
			t.Fatalf("partition %d read to %d of %d", p, off, len(s.Parts[p]))
		}
	}
	if _, err := src.Open(0, -1); err == nil {
		t.Fatal("opened at a negative offset")
	}
}

func TestValidate(t *testing.T) {
	c := small()
	c.Zones, c.Noise.Gap = 1, 2
	if _, err := Simulate(c); err == nil {
		t.Fatal("no error for one zone and a gap chance of 2")
	}
}
