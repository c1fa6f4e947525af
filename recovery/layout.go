package recovery

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cockroachdb/pebble/v2"
)

// ErrLayout is the error of a store whose checkpoints another layout of
// the flow wrote (CheckLayout).
var ErrLayout = errors.New("the checkpoints were written by another layout of the flow")

// LayoutGrew is what a node logs when CheckLayout found that the flow
// grew.
const LayoutGrew = "the flow has stages or operators its checkpoints have not: they start empty, at the checkpoints' offsets"

// CheckLayout makes sure the store's checkpoints of flow can be read by a
// flow of this layout (flowcore.Plan.Layout: its fragment count, sources,
// keyed stages, exchanges and stateful operators, which the checkpoints
// are laid out by), and records layout for the next run. They can if they
// were written by the same layout, or by one the new layout extends: the
// same fragment count and sources, and stages and operators added after
// the old ones (grew). What is added starts empty, at the offsets the
// checkpoints hold: a count added to a flow counts what the flow reads
// from then on. The way back is open too: a layout the recorded one
// extends, as after a grown flow is rolled back; if the checkpoints hold
// state of what it lacks, restoring them fails, naming it. Any other
// change is refused (ErrLayout), with what differs: restoring the
// checkpoints would hand one operator's state to another, or decode it by
// another type. A store that has checkpoints of flow but no layout
// (written before layouts were recorded), or one in another format of
// layout (its first line), is taken as it is: there is nothing to compare
// them with.
func (s *Store) CheckLayout(flow string, layout []string) (grew bool, err error) {
	k := append([]byte{'l'}, flow...)
	k = append(k, 0)
	// Written without a sync of its own: the next checkpoint's sync makes
	// it durable (the log keeps the order of writes). Until then the
	// record of the run before may stand: the checkpoints it covers are
	// all there is, and both layouts read them.
	record := func() error {
		if err := s.db.Set(k, sealed(k, []byte(strings.Join(layout, "\n"))), pebble.NoSync); err != nil {
			return fmt.Errorf("record the layout of flow %s: %w", flow, err)
		}
		return nil
	}
	v, closer, err := s.db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, record()
	}
	if err != nil {
		return false, fmt.Errorf("layout of flow %s: %w", flow, err)
	}
	body, err := unseal(k, v)
	was := strings.Split(string(body), "\n")
	_ = closer.Close()
	if err != nil {
		return false, fmt.Errorf("layout of flow %s: %w", flow, err)
	}
	switch {
	case slices.Equal(was, layout):
		return false, nil
	case len(layout) == 0 || len(was) == 0 || was[0] != layout[0]:
		// Another format: nothing to compare.
		return false, record()
	case extends(layout, was):
		return true, record()
	case extends(was, layout):
		return false, record()
	}
	has, err := s.hasManifest(flow)
	if err != nil {
		return false, fmt.Errorf("layout of flow %s: %w", flow, err)
	}
	if !has {
		// Recorded by a run that took no checkpoint: it lays out nothing.
		return false, record()
	}
	return false, fmt.Errorf("flow %s: %w: start it on a store without them (a new data directory), or run the flow that wrote them; %s",
		flow, ErrLayout, layoutDiff(was, layout))
}

// hasManifest reports whether the store holds a checkpoint of any
// fragment of flow.
func (s *Store) hasManifest(flow string) (bool, error) {
	lo := append([]byte{'m'}, flow...)
	lo = append(lo, 0)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return false, err
	}
	has := it.First()
	return has, it.Close()
}

// extends reports whether layout now keeps everything of layout was, and
// adds stages and operators only after its own: the same format, fragment
// count and sources, was's stages the first of now's, and was's operators
// the first of now's. (A layout lists its format, its fragment count, its
// sources, its stages, then its operators, each line starting with what it
// is.)
func extends(now, was []string) bool {
	part := func(l []string, kind string) []string {
		var out []string
		for _, line := range l {
			if strings.HasPrefix(line, kind+" ") {
				out = append(out, line)
			}
		}
		return out
	}
	for _, kind := range []string{"layout", "fragments", "source"} {
		if !slices.Equal(part(now, kind), part(was, kind)) {
			return false
		}
	}
	for _, kind := range []string{"stage", "operator"} {
		n, w := part(now, kind), part(was, kind)
		if len(n) < len(w) || !slices.Equal(n[:len(w)], w) {
			return false
		}
	}
	n := 0
	for _, kind := range []string{"layout", "fragments", "source", "stage", "operator"} {
		n += len(part(was, kind))
	}
	return n == len(was)
}

// layoutDiff says where layout now first departs from was, and how
// many lines each has.
func layoutDiff(was, now []string) string {
	i := 0
	for i < len(was) && i < len(now) && was[i] == now[i] {
		i++
	}
	line := func(l []string) string {
		if i < len(l) {
			return fmt.Sprintf("%q", l[i])
		}
		return "nothing more"
	}
	diff := fmt.Sprintf("line %d of the layout was %s, is %s (%d lines before, %d now)", i+1, line(was), line(now), len(was), len(now))
	if len(was) > 1 && len(now) > 1 && was[1] != now[1] && strings.HasPrefix(was[1], "fragments ") {
		diff += "; state cannot be re-sharded"
	}
	if reordered(was, now) {
		diff += "; these are the same operators in another order: a flow must declare them in the same order in every run " +
			"(ranging over a map does not)"
	}
	return diff
}

// reordered reports whether two different layouts have the same
// operators, but for their numbers.
func reordered(was, now []string) bool {
	strip := func(l []string) []string {
		out := make([]string, len(l))
		for i, line := range l {
			if rest, ok := strings.CutPrefix(line, "operator "); ok {
				if _, after, ok := strings.Cut(rest, " "); ok {
					line = after
				}
			}
			out[i] = line
		}
		slices.Sort(out)
		return out
	}
	return !slices.Equal(was, now) && slices.Equal(strip(was), strip(now))
}
