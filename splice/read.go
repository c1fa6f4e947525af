package splice

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Consistency is what a read promises about the fragments it splices.
type Consistency string

const (
	// Latest answers at once from what each fragment holds: every
	// fragment's answer is its own, at its own offsets (the default, and
	// the fastest).
	Latest Consistency = "latest"
	// Snapshot answers from one cut: every fragment as of the same source
	// offsets (see Cutter).
	Snapshot Consistency = "snapshot"
)

// Cut says which input an answer reflects.
type Cut struct {
	Consistency Consistency `json:"consistency"`
	// Offsets, per source partition ("source/partition"): for a snapshot,
	// every fragment applied exactly the events below them and none
	// beyond; for a latest read, every fragment applied at least the
	// events below them (some applied more).
	Offsets map[string]int64 `json:"offsets"`
	// Exchanges (a snapshot of a flow that keys again): per exchange, by
	// name, per upstream fragment, how many outputs it had made on it at
	// the cut. Every one of them, and nothing beyond, is applied by the
	// fragments downstream: every stage is as of Offsets.
	Exchanges map[string][]int64 `json:"exchanges,omitempty"`
}

// Hold is the cut a Cutter holds its input at.
type Hold struct {
	// Offsets, per source partition ("source/partition"): every fragment
	// applied exactly the events below them and none beyond.
	Offsets map[string]int64
	// Exchanges, per exchange (a stage after a second KeyBy), per upstream
	// fragment: the number of outputs it made on it from the input up to
	// Offsets (Cut.Exchanges).
	Exchanges map[string][]int64
	// Applied, per fragment: the ends it must report on the exchanges'
	// partitions ("exchange/upstream"), which are what each upstream
	// fragment sent it of those outputs. Nil for a flow without exchanges.
	Applied map[int]map[string]int64
}

// Cutter is a Gatherer that can hold its input still at one cut.
type Cutter interface {
	Gatherer
	// Pause stops reading every source partition at a batch boundary once
	// every fragment applied what was read before it — and, in a flow that
	// keys again, every stage applied what the stage before made from it —
	// and returns the cut. Until release is called (once), no fragment
	// applies anything beyond it. An error that is ErrUnavailable may pass
	// if asked again.
	Pause(ctx context.Context) (cut Hold, release func(), err error)
}

// ReadOptions are a read's consistency and read-your-writes bound.
type ReadOptions struct {
	Consistency Consistency // "" is Latest
	// MinOffsets: answer only once the answer covers these source
	// offsets ("source/partition" → offset): every event below them is
	// in it (read-your-writes). Nil for no bound.
	MinOffsets map[string]int64
	// Timeout bounds the wait for MinOffsets and for a cut.
	Timeout time.Duration
}

// Read limits.
const (
	DefaultReadTimeout = 5 * time.Second
	MaxReadTimeout     = time.Minute
	// readRetry is how long a read that waits (for MinOffsets, or for a
	// cut after a fragment moved) waits between tries: about a reader's
	// batch delay.
	readRetry = 5 * time.Millisecond
	maxRetry  = 100 * time.Millisecond
)

// CutTimeoutError says that a read did not reach its MinOffsets, or could
// not have one cut, within its timeout. The HTTP layer answers 504.
type CutTimeoutError struct {
	Timeout time.Duration
	Reason  string
}

func (e *CutTimeoutError) Error() string {
	return fmt.Sprintf("no answer within the read's timeout of %v: %s", e.Timeout, e.Reason)
}

// Is makes errors.Is(err, context.DeadlineExceeded) hold.
func (e *CutTimeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

// ParseReadOptions reads consistency (latest or snapshot), min_offsets
// (comma-separated source/partition:offset, as an ingest answer's
// min_offsets gives them) and timeout (a duration, at most a minute) from
// v, and deletes them from it.
func ParseReadOptions(v url.Values) (ReadOptions, error) {
	o := ReadOptions{Consistency: Latest, Timeout: DefaultReadTimeout}
	for _, k := range []string{"consistency", "min_offsets", "timeout"} {
		if len(v[k]) > 1 {
			return o, fmt.Errorf("%w: parameter %q given %d times", ErrBadRequest, k, len(v[k]))
		}
	}
	if v.Has("consistency") {
		switch c := Consistency(v.Get("consistency")); c {
		case Latest, Snapshot:
			o.Consistency = c
		default:
			return o, fmt.Errorf("%w: consistency must be latest or snapshot, got %q", ErrBadRequest, c)
		}
	}
	if v.Has("min_offsets") {
		m, err := ParseOffsets(v.Get("min_offsets"))
		if err != nil {
			return o, err
		}
		o.MinOffsets = m
	}
	if v.Has("timeout") {
		d, err := time.ParseDuration(v.Get("timeout"))
		if err != nil || d <= 0 || d > MaxReadTimeout {
			return o, fmt.Errorf("%w: timeout must be a duration in (0, %v], got %q", ErrBadRequest, MaxReadTimeout, v.Get("timeout"))
		}
		o.Timeout = d
	}
	v.Del("consistency")
	v.Del("min_offsets")
	v.Del("timeout")
	return o, nil
}

// ParseOffsets reads source/partition:offset pairs, comma-separated.
func ParseOffsets(s string) (map[string]int64, error) {
	m := map[string]int64{}
	for _, p := range strings.Split(s, ",") {
		name, off, ok := strings.Cut(p, ":")
		src, part, ok2 := strings.Cut(name, "/")
		n, err := strconv.ParseInt(off, 10, 64)
		if _, perr := strconv.Atoi(part); !ok || !ok2 || src == "" || perr != nil || err != nil || n < 0 {
			return nil, fmt.Errorf("%w: min_offsets must be source/partition:offset pairs, comma-separated, got %q", ErrBadRequest, p)
		}
		if _, dup := m[name]; dup {
			return nil, fmt.Errorf("%w: min_offsets names %s twice", ErrBadRequest, name)
		}
		m[name] = n
	}
	return m, nil
}

// FormatOffsets writes offsets as ParseOffsets reads them, in name order.
func FormatOffsets(m map[string]int64) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s:%d", k, m[k])
	}
	return b.String()
}

// Staged is a Gatherer that may say its flow keys again: the stages after
// an exchange apply their input later than the fragments' source offsets
// show (actor/cut.go), so only a cut tells that they applied given input.
type Staged interface {
	KeysAgain() bool
}

// Partitioned is a Gatherer that names the source partitions its flow
// reads: a read whose MinOffsets names another is a bad request at once
// (it would wait for its whole timeout).
type Partitioned interface {
	SourcePartitions() []string
}

// EvaluateRead answers req as o asks: Evaluate, once the answer covers
// o.MinOffsets, from one cut for a Snapshot. A latest read with
// MinOffsets of a flow that keys again (Staged) is answered from a cut:
// that every stage covers the offsets shows in no fragment's offsets
// alone. It waits (between tries, for at most o.Timeout), so, like the
// HTTP handlers, it reads the clock.
func EvaluateRead(ctx context.Context, g Gatherer, req Request, o ReadOptions) (Result, error) {
	if o.Timeout <= 0 {
		o.Timeout = DefaultReadTimeout
	}
	if pg, ok := g.(Partitioned); ok && len(o.MinOffsets) > 0 {
		if err := readsAll(pg.SourcePartitions(), o.MinOffsets); err != nil {
			return Result{}, err
		}
	}
	if s, ok := g.(Staged); ok && o.MinOffsets != nil && s.KeysAgain() {
		o.Consistency = Snapshot
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	var why string
	for try := 0; ; try++ {
		var res Result
		var err error
		if o.Consistency == Snapshot {
			var w string
			res, w, err = snapshotOnce(ctx, g, req, o.MinOffsets)
			if w != "" || err == nil {
				why = w
			}
		} else {
			res, err = Evaluate(ctx, g, req)
			if err == nil || errors.Is(err, ErrNotFound) {
				// A key not found may be one the writes to wait for add.
				res.Cut = Cut{Consistency: Latest, Offsets: LowerCut(res.Freshness)}
				if why = uncovered(res.Freshness, o.MinOffsets); why != "" {
					err = nil
				}
			}
		}
		if err != nil && !(errors.Is(err, ErrUnavailable) && o.Consistency == Snapshot) {
			// The engine may see the deadline pass before ctx says so.
			if (ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded)) && !errors.Is(err, ErrBadRequest) {
				if why == "" {
					why = err.Error()
				}
				return res, &CutTimeoutError{Timeout: o.Timeout, Reason: why}
			}
			return res, err
		}
		if err == nil && why == "" {
			return res, nil
		}
		if err != nil {
			why = err.Error()
		}
		t := time.NewTimer(min(maxRetry, readRetry<<min(try, 5)))
		select {
		case <-ctx.Done():
			t.Stop()
			return res, &CutTimeoutError{Timeout: o.Timeout, Reason: why}
		case <-t.C:
		}
	}
}

// snapshotOnce tries to answer req from one cut; why says what kept it
// from an answer that may come if asked again.
func snapshotOnce(ctx context.Context, g Gatherer, req Request, minOffsets map[string]int64) (Result, string, error) {
	c, ok := g.(Cutter)
	if !ok {
		return Result{}, "", fmt.Errorf("%w: this server cannot answer snapshot reads", ErrBadRequest)
	}
	hold, release, err := c.Pause(ctx)
	if err != nil {
		return Result{}, "", err
	}
	cut := hold.Offsets
	if err := readsAll(slices.Collect(maps.Keys(cut)), minOffsets); err != nil {
		release()
		return Result{}, "", err
	}
	if why := below(cut, minOffsets); why != "" {
		release()
		return Result{}, "the input read so far is " + why, nil
	}
	res, err := Evaluate(ctx, g, req)
	// A key lookup asks only the key's fragment, which may be at the cut
	// when the others are not: after a fragment restored an older
	// checkpoint, the readers replay from its offsets and stand still
	// behind the fragments that did not (they drop what they applied
	// before). That is no cut, and older than the cuts read before it:
	// every fragment must be at it, as for a read of the whole view. (A
	// key of a windowed keyed view was asked of every fragment already.)
	at := res.Freshness
	if req.Op == OpKey && res.Spec.Kind == Keyed && (err == nil || errors.Is(err, ErrNotFound)) {
		ans, gerr := g.Gather(ctx, req, -1)
		if gerr != nil {
			release()
			return Result{}, "", gerr
		}
		at = make([]Freshness, len(ans))
		for i, a := range ans {
			at[i] = a.Freshness
		}
	}
	release()
	if errors.Is(err, ErrNotFound) {
		// Absent at the cut, if every fragment was at it.
		if why := notAt(at, hold); why != "" {
			return Result{}, why, nil
		}
		res.Cut = Cut{Consistency: Snapshot, Offsets: cut, Exchanges: hold.Exchanges}
	}
	if err != nil {
		return res, "", err
	}
	if why := notAt(at, hold); why != "" {
		return Result{}, why, nil
	}
	res.Cut = Cut{Consistency: Snapshot, Offsets: cut, Exchanges: hold.Exchanges}
	return res, "", nil
}

// readsAll refuses minOffsets if it names a partition not in reads.
func readsAll(reads []string, minOffsets map[string]int64) error {
	for _, p := range slices.Sorted(maps.Keys(minOffsets)) {
		if !slices.Contains(reads, p) {
			return fmt.Errorf("%w: min_offsets names %s, which the flow does not read (it reads %s)", ErrBadRequest, p,
				strings.Join(slices.Sorted(slices.Values(reads)), ", "))
		}
	}
	return nil
}

// LowerCut is, per source partition, the least offset among the
// fragments that answered (0 for one that has not read it): every event
// below it is in the answer.
func LowerCut(fs []Freshness) map[string]int64 {
	out := map[string]int64{}
	for _, f := range fs {
		for p := range f.Offsets {
			out[p] = 0
		}
	}
	for p := range out {
		low := int64(-1)
		for _, f := range fs {
			if off := f.Offsets[p]; low < 0 || off < low {
				low = off
			}
		}
		out[p] = low
	}
	return out
}

// uncovered says which fragment has not applied min yet ("" if all have).
func uncovered(fs []Freshness, minOffsets map[string]int64) string {
	if len(minOffsets) == 0 {
		return ""
	}
	if len(fs) == 0 {
		return "no fragment answered"
	}
	for _, f := range fs {
		for _, p := range slices.Sorted(maps.Keys(minOffsets)) {
			if off := f.Offsets[p]; off < minOffsets[p] {
				return fmt.Sprintf("fragment %d applied %s up to %d, not yet to %d", f.Fragment, p, off, minOffsets[p])
			}
		}
	}
	return ""
}

// below says how cut falls short of minOffsets ("" if it does not).
func below(cut, minOffsets map[string]int64) string {
	for _, p := range slices.Sorted(maps.Keys(minOffsets)) {
		if off := cut[p]; off < minOffsets[p] {
			return fmt.Sprintf("%s up to %d, not yet %d", p, cut[p], minOffsets[p])
		}
	}
	return ""
}

// notAt says which fragment's answer is not exactly at the cut ("" if
// all are): it restored, moved, or answered from a standby's copy
// meanwhile, or (downstream of an exchange) has not applied what its
// upstream fragments made up to the cut.
func notAt(fs []Freshness, hold Hold) string {
	for _, f := range fs {
		if f.Stale {
			return fmt.Sprintf("fragment %d answered from a standby's copy", f.Fragment)
		}
		for p, off := range hold.Offsets {
			if f.Offsets[p] != off {
				return fmt.Sprintf("fragment %d is at %s %d, not at the cut's %d", f.Fragment, p, f.Offsets[p], off)
			}
		}
		for p, off := range hold.Applied[f.Fragment] {
			if f.Offsets[p] != off {
				return fmt.Sprintf("fragment %d applied %s up to %d, not the cut's %d", f.Fragment, p, f.Offsets[p], off)
			}
		}
	}
	return ""
}
