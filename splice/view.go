package splice

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Kind is the kind of a view.
type Kind string

const (
	// Keyed views are the per-key state of a stateful operator. Every key
	// lives in exactly one fragment, so splicing is a disjoint union.
	Keyed Kind = "keyed"
	// Aggregate views keep one partial per fragment, spliced by an Algebra.
	Aggregate Kind = "aggregate"
	// Windowed views keep one partial per fragment and event-time window,
	// spliced by an Algebra window by window.
	Windowed Kind = "windowed"
	// WindowedKeyed views are, per event-time window, the keys of a window
	// operator with their values. A key lives in one fragment, so each
	// window is a disjoint union, as in a Keyed view.
	WindowedKeyed Kind = "windowed-keyed"
)

// Spec describes a view to the query layer. The flow that declares the view
// fills it in; splice never sees the flow's types, only these functions.
type Spec struct {
	Name    string
	Kind    Kind
	Algebra string // aggregate views: the algebra's name
	// FragmentOf maps a key, as written in a URL, to its fragment, or returns
	// an error if the key does not parse (keyed and windowed keyed views).
	FragmentOf func(key string) (int, error)
	// CheckAfter validates an after= key (keyed and windowed keyed views).
	CheckAfter func(key string) error
	// Compare orders entries by key (keyed and windowed keyed views):
	// entries carry their key in Sort, in the view's own type.
	Compare func(a, b any) int
	// Splice merges the partials of every fragment into the view's value
	// (aggregate views; windowed views, one window at a time). Partials are
	// not modified.
	Splice func(partials []any) any
}

// Op is what a request asks of a fragment.
type Op int

const (
	OpValue   Op = iota // an aggregate view's partial
	OpEntries           // a keyed view's entries matching Query
	OpKey               // one key of a keyed view
	// OpWindows asks a windowed view for its partials of the windows
	// matching Query, a windowed keyed view for those windows and their
	// numbers of keys.
	OpWindows
	// OpWindowEntries asks a windowed keyed view for the windows matching
	// Query, each with its entries matching Query.
	OpWindowEntries
	// OpWindowKey asks a windowed keyed view for the windows matching
	// Query, each with Key's entry if it holds it.
	OpWindowKey
	// OpChanges asks a keyed view for the entries that changed since the
	// fragment's mark in Request.Since (MarkOf), matching Query.Prefix,
	// with its mark now (Answer.Changes), which names the changed keys
	// the view does not show (ChangeMark.Hidden). Of an aggregate view, it
	// asks for the fragment's partial if it changed since the mark
	// (ChangeMark.Unchanged if not). Of a windowed keyed view, it asks for
	// the windows matching Query, each with its number of keys and the
	// entries changed since; of a windowed view, for the windows in range
	// that changed since, each with its partial. A watch builds its diffs
	// from them
	// (watchdelta.go, watchwindows.go).
	OpChanges
)

// Query selects entries of a keyed view.
type Query struct {
	Limit int    // at most this many entries (> 0)
	After string // only keys after this one, in key order (see Paged)
	// HasAfter makes an empty After the empty key, a key like any other:
	// the page starts after it. Without it, an empty After starts at the
	// first key.
	HasAfter bool
	Prefix   string // only keys whose printed form has this prefix
	Top      int    // if > 0: the Top entries by score instead of key order

	// Windowed and windowed keyed views: windows starting in [From, To)
	// (Unix ns; To == 0 for no bound unless Bounded, which makes a To of 0
	// the Unix epoch), and, if Latest, only the latest complete one.
	// Limit, After, Prefix and Top select the entries of each window of a
	// windowed keyed view; Limit counts the windows of a windowed view.
	From, To int64
	Bounded  bool
	Latest   bool
}

// Paged reports whether the query starts after a key (After, even the
// empty one if HasAfter), not at the first.
func (q Query) Paged() bool { return q.HasAfter || q.After != "" }

// Before reports whether a window starting at s starts before the
// query's To, if it has one.
func (q Query) Before(s int64) bool { return s < q.To || q.To == 0 && !q.Bounded }

// Request is one question asked of every fragment (or of one, for OpKey).
type Request struct {
	View  string
	Op    Op
	Query Query
	Key   string
	// Since (OpChanges): every fragment's mark, as FormatMarks writes
	// them; a string, so that a Request stays comparable.
	Since string
}

// Entry is one key of a keyed view.
type Entry struct {
	Key   string  // printed key
	Value any     // the state, as JSON will show it
	Score float64 // for Top queries
	Sort  any     // the key in its own type, for Spec.Compare
}

// Freshness says how current a fragment's answer is.
type Freshness struct {
	Fragment  int              `json:"fragment"`
	Epoch     uint64           `json:"epoch"`               // the fragment's last durable checkpoint (0: none yet)
	Offsets   map[string]int64 `json:"offsets"`             // per source partition ("source/partition"): end of the last applied batch
	Watermark *time.Time       `json:"watermark,omitempty"` // event time complete up to here (flows with event time): in a view's answer, that of the stage the view reads
	// Complete: the fragment applied every input to its end (bounded
	// sources read out, upstream fragments complete) and sent everything
	// downstream: its state is final.
	Complete bool `json:"complete"`
	// Stale: the fragment's owner could not be reached, and the answer
	// comes from a standby's copy of its last replicated checkpoint, as
	// of Epoch and Offsets.
	Stale bool `json:"stale,omitempty"`
}

// Answer is one fragment's answer to a Request.
type Answer struct {
	Freshness Freshness
	Partial   any             // OpValue
	Entries   []Entry         // OpEntries, OpKey (at most one)
	Windows   []WindowPartial // OpWindows, in start order
	// Horizon (OpWindows): windows ending before it may have been dropped
	// by this fragment (Unix ns; 0 for none dropped yet).
	Horizon int64
	// Changes (OpChanges): where the fragment's changes stand now.
	Changes *ChangeMark
}

// ChangeMark is where a fragment's changes of a view stand (OpChanges).
type ChangeMark struct {
	Instance uint64 `json:"instance"` // the fragment's state object: a restore makes another
	Gen      uint64 `json:"gen"`      // its publish generation
	// Reset: the fragment cannot tell what changed since the mark asked
	// about — it was restored or moved since, its view forgets keys (a
	// state TTL) or keeps no changes, or too many keys changed — and
	// Entries are empty: evaluate the whole view.
	Reset bool `json:"reset,omitempty"`
	// Hidden: keys that changed and that the view does not show (a
	// PublishIf that does not hold).
	Hidden []string `json:"hidden,omitempty"`
	// Unchanged (an aggregate view): the fragment's partial is the one it
	// had at the mark asked about, and Answer.Partial is nil. Otherwise an
	// aggregate view's answer carries its partial, even for no valid mark.
	Unchanged bool `json:"unchanged,omitempty"`
}

// WindowPartial is one fragment's partial of one window, or, for a
// windowed keyed view, the number of keys it holds of the window and the
// entries the request selected among them.
type WindowPartial struct {
	Start, End int64 // Unix ns
	Partial    any
	Keys       int64
	Entries    []Entry
}

// Window is a spliced window of a windowed view.
type Window struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	Value any       `json:"value"`
	// Complete: every fragment's watermark passed the window's end, so
	// only late data within the allowed lateness can still refine it.
	Complete bool `json:"complete"`
}

// Gatherer asks fragments. It is implemented by whatever runs them (a node,
// a cluster, a test harness); splice does not know how.
type Gatherer interface {
	// Views lists the views, in declaration order.
	Views() []Spec
	// Gather sends req to every fragment, or only to fragment only if
	// only >= 0, and returns their answers.
	Gather(ctx context.Context, req Request, only int) ([]Answer, error)
	// Freshness reports every fragment's freshness without asking it.
	Freshness() []Freshness
}

// Errors that the HTTP layer maps to status codes.
var (
	ErrUnknownView = errors.New("unknown view")
	ErrNotFound    = errors.New("not found")
	ErrBadRequest  = errors.New("bad request")
	ErrUnavailable = errors.New("unavailable")
)

// UnavailableError says which fragments could not answer, and why: their
// owner cannot be reached (and no standby copy could answer for it), or
// they are being restored or handed over. It is ErrUnavailable, and the
// HTTP layer answers 503 with Retry-After.
type UnavailableError struct {
	Fragments  []int         // in order
	Reason     string        // why, in words a user can act on
	RetryAfter time.Duration // when asking again is likely to succeed
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("%s %v unavailable: %s", plural(len(e.Fragments), "fragment", "fragments"), e.Fragments, e.Reason)
}

// Is makes errors.Is(err, ErrUnavailable) hold.
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// Result is a spliced answer.
type Result struct {
	Spec    Spec
	Value   any      // aggregate views
	Entries []Entry  // keyed views
	Windows []Window // windowed views, in start order
	// KeyedWindows: windowed keyed views, in start order.
	KeyedWindows []KeyedWindow
	More         bool   // keyed: more entries follow the last one (page on with after=); windowed: earlier windows were left out; windowed keyed: a window has more entries
	NextAfter    string // windowed keyed, if More: the After (with HasAfter) of the next page
	Horizon      int64  // windowed and windowed keyed: windows ending before it may have been dropped
	Latest       bool   // windowed and windowed keyed: the answer to Query.Latest
	Freshness    []Freshness
	Cut          Cut // set by EvaluateRead
}

// Complete reports whether every fragment that answered is complete: the
// answer is final (a bounded input fully processed).
func (r Result) Complete() bool {
	if len(r.Freshness) == 0 {
		return false
	}
	for _, f := range r.Freshness {
		if !f.Complete {
			return false
		}
	}
	return true
}

// Stale reports whether a fragment answered from a standby's copy (its
// owner could not be reached).
func (r Result) Stale() bool {
	for _, f := range r.Freshness {
		if f.Stale {
			return true
		}
	}
	return false
}

// FindSpec returns the spec of the named view.
func FindSpec(g Gatherer, name string) (Spec, error) {
	for _, s := range g.Views() {
		if s.Name == name {
			return s, nil
		}
	}
	return Spec{}, ErrUnknownView
}

// Evaluate answers a request by asking the fragments and splicing.
func Evaluate(ctx context.Context, g Gatherer, req Request) (Result, error) {
	spec, err := FindSpec(g, req.View)
	if err != nil {
		return Result{}, err
	}
	res := Result{Spec: spec}
	switch {
	case spec.Kind == Aggregate:
		req.Op = OpValue
		ans, err := g.Gather(ctx, req, -1)
		if err != nil {
			return res, err
		}
		parts := make([]any, len(ans))
		for i, a := range ans {
			parts[i] = a.Partial
			res.Freshness = append(res.Freshness, a.Freshness)
		}
		res.Value = spec.Splice(parts)
		return res, nil
	case spec.Kind == Windowed:
		return evaluateWindows(ctx, g, spec, req)
	case spec.Kind == WindowedKeyed:
		return evaluateKeyedWindows(ctx, g, spec, req)
	case req.Op == OpKey:
		f, err := spec.FragmentOf(req.Key)
		if err != nil {
			return res, errors.Join(ErrBadRequest, err)
		}
		ans, err := g.Gather(ctx, req, f)
		if err != nil {
			return res, err
		}
		for _, a := range ans {
			res.Freshness = append(res.Freshness, a.Freshness)
			res.Entries = append(res.Entries, a.Entries...)
		}
		if len(res.Entries) == 0 {
			return res, ErrNotFound
		}
		return res, nil
	}
	req.Op = OpEntries
	if req.Query.Paged() {
		if err := spec.CheckAfter(req.Query.After); err != nil {
			return res, errors.Join(ErrBadRequest, err)
		}
	}
	ans, err := g.Gather(ctx, req, -1)
	if err != nil {
		return res, err
	}
	lists := make([][]Entry, len(ans))
	for i, a := range ans {
		lists[i] = a.Entries
		res.Freshness = append(res.Freshness, a.Freshness)
	}
	if req.Query.Top > 0 {
		res.Entries = MergeTop(lists, req.Query.Top, spec.Compare)
		return res, nil
	}
	res.Entries, res.More = MergeOrdered(lists, req.Query.Limit, spec.Compare)
	return res, nil
}

func byScore(a, b Entry, compare func(a, b any) int) int {
	if c := cmp.Compare(b.Score, a.Score); c != 0 {
		return c
	}
	return compare(a.Sort, b.Sort)
}

// MergeOrdered merges lists each sorted by key into the first limit entries
// in key order, and says whether any entry was left out.
func MergeOrdered(lists [][]Entry, limit int, compare func(a, b any) int) ([]Entry, bool) {
	total := 0
	for _, l := range lists {
		total += len(l)
	}
	out := make([]Entry, 0, min(total, limit))
	for _, l := range lists {
		out = append(out, l...)
	}
	// Fragments' keys are disjoint; a sort of the concatenation is simple and,
	// for the sizes queries return, as fast as a k-way merge.
	slices.SortFunc(out, func(a, b Entry) int { return compare(a.Sort, b.Sort) })
	if len(out) > limit {
		return out[:limit], true
	}
	return out, false
}

// MergeTop merges per-fragment top lists into the n best by score, ties
// broken by key.
func MergeTop(lists [][]Entry, n int, compare func(a, b any) int) []Entry {
	var out []Entry
	for _, l := range lists {
		out = append(out, l...)
	}
	slices.SortFunc(out, func(a, b Entry) int { return byScore(a, b, compare) })
	return out[:min(len(out), n)]
}

// evaluateWindows splices a windowed view window by window. A window is
// complete when every fragment's watermark passed its end. Of the windows
// in range, the latest Query.Limit are returned (or the latest complete
// one, for Query.Latest).
func evaluateWindows(ctx context.Context, g Gatherer, spec Spec, req Request) (Result, error) {
	res := Result{Spec: spec, Latest: req.Query.Latest}
	req.Op = OpWindows
	ans, err := g.Gather(ctx, req, -1)
	if err != nil {
		return res, err
	}
	wm := completeUpTo(ans)
	parts := map[int64][]any{}
	ends := map[int64]int64{}
	for _, a := range ans {
		res.Freshness = append(res.Freshness, a.Freshness)
		res.Horizon = max(res.Horizon, a.Horizon)
		for _, w := range a.Windows {
			parts[w.Start] = append(parts[w.Start], w.Partial)
			ends[w.Start] = w.End
		}
	}
	starts := make([]int64, 0, len(parts))
	for s := range parts {
		starts = append(starts, s)
	}
	slices.Sort(starts)
	if req.Query.Latest {
		for i := len(starts) - 1; i >= 0; i-- {
			if s := starts[i]; ends[s] <= wm {
				starts = starts[i : i+1]
				break
			}
			if i == 0 {
				starts = nil
			}
		}
		if len(starts) == 0 {
			return res, fmt.Errorf("%w: no complete window of view %q yet", ErrNotFound, spec.Name)
		}
	}
	if lim := req.Query.Limit; lim > 0 && len(starts) > lim {
		starts, res.More = starts[len(starts)-lim:], true
	}
	res.Windows = make([]Window, len(starts))
	for i, s := range starts {
		res.Windows[i] = Window{Start: time.Unix(0, s).UTC(), End: time.Unix(0, ends[s]).UTC(),
			Value: spec.Splice(parts[s]), Complete: ends[s] <= wm}
	}
	return res, nil
}
