package recovery

import "maps"

// PartitionID names a source partition of a flow.
type PartitionID struct {
	Source    int
	Partition int
}

// Verdict is what a fragment does with a batch.
type Verdict int

const (
	// Apply the batch's records whose offset is at least the returned
	// minimum; the ones below were applied before.
	Apply Verdict = iota
	// Duplicate: every record of the batch was applied before. Drop it.
	Duplicate
	// Gap: records between the recorded end and the batch were lost in
	// flight. Drop the batch and ask the reader to rewind to the recorded
	// end.
	Gap
	// Fenced: the batch was sent under an older placement epoch, by a
	// reader that has not yet learned it lost its partition. Drop it.
	Fenced
)

func (v Verdict) String() string {
	return [...]string{"apply", "duplicate", "gap", "fenced"}[v]
}

// Fence judges a batch's placement epoch against the fragment's: traffic
// from an older placement is Fenced; a newer one raises the fragment's.
func Fence(current *uint64, batch uint64) Verdict {
	if batch < *current {
		return Fenced
	}
	*current = batch
	return Apply
}

// Vector is a fragment's offset vector: per source partition, the end of the
// last batch it applied. The zero value is empty: every partition at 0.
type Vector struct{ ends map[PartitionID]int64 }

// End is the recorded end for p.
func (v *Vector) End(p PartitionID) int64 { return v.ends[p] }

// Admit judges a batch of p covering [prevEnd, end) and, for Apply, returns
// the minimum offset to apply and records end. A batch that starts at or
// before the recorded end and ends after it overlaps a replay: the records
// below the recorded end are dropped, the rest applied.
func (v *Vector) Admit(p PartitionID, prevEnd, end int64) (Verdict, int64) {
	rec := v.ends[p]
	switch {
	case prevEnd > rec:
		return Gap, rec
	case end <= rec && !(end == rec && prevEnd == rec):
		return Duplicate, rec
	}
	if v.ends == nil {
		v.ends = map[PartitionID]int64{}
	}
	v.ends[p] = end
	return Apply, rec
}

// Set records end for p, as a restore does.
func (v *Vector) Set(p PartitionID, end int64) {
	if v.ends == nil {
		v.ends = map[PartitionID]int64{}
	}
	v.ends[p] = end
}

// Snapshot copies the vector (never nil).
func (v *Vector) Snapshot() map[PartitionID]int64 {
	out := make(map[PartitionID]int64, len(v.ends))
	maps.Copy(out, v.ends)
	return out
}

// Ahead reports whether offsets cover at least what v does on every
// channel partition, and more on one. A fragment running already adopts a
// handed-off checkpoint only if it is ahead: one behind on any partition
// is not, since upstream fragments may have forgotten the outputs it would
// need again (this fragment's own checkpoints cover them).
func Ahead(offsets map[PartitionID]int64, v *Vector) bool {
	more := false
	for p, end := range v.Snapshot() {
		if offsets[p] < end {
			return false
		}
	}
	for p, end := range offsets {
		more = more || end > v.End(p)
	}
	return more
}
