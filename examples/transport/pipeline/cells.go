package pipeline

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"slices"
)

// subjects is a sorted set of subscribers. Its array is never written
// after it is made: adding a new subscriber makes a new one, so a value
// handed to a query stays as it was.
type subjects []uint64

func (s subjects) add(sub uint64) subjects {
	i, ok := slices.BinarySearch(s, sub)
	if ok {
		return s
	}
	out := make(subjects, len(s)+1)
	copy(out, s[:i])
	out[i] = sub
	copy(out[i+1:], s[i:])
	return out
}

func (s subjects) append(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	prev := uint64(0)
	for _, x := range s {
		b = binary.AppendUvarint(b, x-prev)
		prev = x
	}
	return b
}

var errCorrupt = errors.New("corrupt cell")

func readSubjects(b []byte) (subjects, []byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return nil, nil, errCorrupt
	}
	b = b[k:]
	s := make(subjects, n)
	prev := uint64(0)
	for i := range s {
		d, k := binary.Uvarint(b)
		if k <= 0 {
			return nil, nil, errCorrupt
		}
		b = b[k:]
		prev += d
		s[i] = prev
	}
	return s, b, nil
}

// Cell is an OD matrix cell: the trips counted and the distinct
// subscribers who made them. Only its counts are published (MarshalJSON):
// the subscribers stay inside the node.
type Cell struct {
	Trips int64
	subs  subjects
}

// Subscribers is the number of distinct subscribers.
func (c Cell) Subscribers() int64 { return int64(len(c.subs)) }

// AddTrip counts a trip.
func AddTrip(c Cell, t Detected) Cell {
	return Cell{Trips: c.Trips + 1, subs: c.subs.add(t.Sub)}
}

// MarshalJSON publishes the counts.
func (c Cell) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Trips       int64 `json:"trips"`
		Subscribers int64 `json:"subscribers"`
	}{c.Trips, c.Subscribers()})
}

// MarshalBinary encodes the cell, subscribers included, for checkpoints
// and answers between nodes.
func (c Cell) MarshalBinary() ([]byte, error) {
	return c.subs.append(binary.AppendVarint(nil, c.Trips)), nil
}

// UnmarshalBinary decodes MarshalBinary's output.
func (c *Cell) UnmarshalBinary(b []byte) error {
	n, k := binary.Varint(b)
	if k <= 0 {
		return errCorrupt
	}
	subs, rest, err := readSubjects(b[k:])
	if err != nil || len(rest) != 0 {
		return errCorrupt
	}
	*c = Cell{Trips: n, subs: subs}
	return nil
}

// TravelBounds are the upper bounds, in minutes, of the travel-time
// histogram's buckets; a last bucket takes longer trips.
var TravelBounds = []float64{5, 10, 15, 20, 30, 45, 60, 90, 120, 180}

// TravelTimes is an OD pair's travel-time distribution: a histogram of
// its trips' minutes, and its distinct subscribers.
type TravelTimes struct {
	Cell
	Counts []int64 // per bucket of TravelBounds; never written after made
}

// AddTravel counts a trip's travel time.
func AddTravel(tt TravelTimes, t Detected) TravelTimes {
	counts := make([]int64, len(TravelBounds)+1)
	copy(counts, tt.Counts)
	i, _ := slices.BinarySearch(TravelBounds, t.Minutes())
	counts[i]++
	return TravelTimes{Cell: AddTrip(tt.Cell, t), Counts: counts}
}

// MarshalJSON publishes the counts and the histogram.
func (tt TravelTimes) MarshalJSON() ([]byte, error) {
	counts := tt.Counts
	if counts == nil {
		counts = make([]int64, len(TravelBounds)+1)
	}
	return json.Marshal(struct {
		Trips       int64     `json:"trips"`
		Subscribers int64     `json:"subscribers"`
		Bounds      []float64 `json:"bounds_minutes"`
		Counts      []int64   `json:"counts"`
	}{tt.Trips, tt.Subscribers(), TravelBounds, counts})
}

// MarshalBinary encodes the histogram and its cell.
func (tt TravelTimes) MarshalBinary() ([]byte, error) {
	b, _ := tt.Cell.MarshalBinary()
	b = binary.AppendUvarint(b, uint64(len(tt.Counts)))
	for _, n := range tt.Counts {
		b = binary.AppendVarint(b, n)
	}
	return b, nil
}

// UnmarshalBinary decodes MarshalBinary's output.
func (tt *TravelTimes) UnmarshalBinary(b []byte) error {
	n, k := binary.Varint(b)
	if k <= 0 {
		return errCorrupt
	}
	subs, rest, err := readSubjects(b[k:])
	if err != nil {
		return err
	}
	m, k := binary.Uvarint(rest)
	if k <= 0 || m > uint64(len(rest)) {
		return errCorrupt
	}
	rest = rest[k:]
	var counts []int64
	if m > 0 {
		counts = make([]int64, m)
	}
	for i := range counts {
		c, k := binary.Varint(rest)
		if k <= 0 {
			return errCorrupt
		}
		counts[i], rest = c, rest[k:]
	}
	if len(rest) != 0 {
		return errCorrupt
	}
	*tt = TravelTimes{Cell: Cell{Trips: n, subs: subs}, Counts: counts}
	return nil
}

// Crowd is the people on the move in a zone in a window: the distinct
// subscribers seen moving there.
type Crowd struct{ subs subjects }

// People is how many.
func (c Crowd) People() int64 { return int64(len(c.subs)) }

// AddMove counts a subscriber seen moving.
func AddMove(c Crowd, m Detected) Crowd { return Crowd{subs: c.subs.add(m.Sub)} }

// MarshalJSON publishes the count.
func (c Crowd) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		People int64 `json:"people"`
	}{c.People()})
}

// MarshalBinary encodes the subscribers.
func (c Crowd) MarshalBinary() ([]byte, error) { return c.subs.append(nil), nil }

// UnmarshalBinary decodes MarshalBinary's output.
func (c *Crowd) UnmarshalBinary(b []byte) error {
	subs, rest, err := readSubjects(b)
	if err != nil || len(rest) != 0 {
		return errCorrupt
	}
	c.subs = subs
	return nil
}
