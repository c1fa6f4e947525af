package recovery

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

var layoutV1 = []string{
	`layout 1`,
	`fragments 8`,
	`source 0: "words"`,
	`stage 0: KeyBy string of string from source 0`,
	`operator 0 of stage 0: table of int64 by string, view "words"`,
}

// openDisk opens a store in dir on disk.
func openDisk(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir, nil, quiet())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCheckLayout(t *testing.T) {
	dir := t.TempDir()
	s := openDisk(t, dir)
	defer func() { _ = s.Close() }() // the store open at the end
	check := func(layout []string) (bool, error) { t.Helper(); return s.CheckLayout("flow", layout) }
	changed := slices.Clone(layoutV1)
	changed[4] = `operator 0 of stage 0: table of main.Acc by string, view "words"`

	// No checkpoint yet: any layout is recorded, the last one wins.
	if grew, err := check(changed); grew || err != nil {
		t.Fatalf("empty store: grew=%v err=%v", grew, err)
	}
	if grew, err := check(layoutV1); grew || err != nil {
		t.Fatalf("a store with no checkpoint refused another layout: grew=%v err=%v", grew, err)
	}
	cp := &Checkpoint{Manifest: Manifest{Epoch: 1, Fragments: 8, Entries: 1}, Puts: []Entry{put(0, "a", "1")}}
	if _, err := s.Write("flow", 3, cp); err != nil {
		t.Fatal(err)
	}
	if grew, err := check(layoutV1); grew || err != nil {
		t.Fatalf("the same layout: grew=%v err=%v", grew, err)
	}
	// Checkpoints of the flow: another layout is refused, saying where it
	// departs, and the recorded one stays (the same store reopened).
	_, err := check(changed)
	if !errors.Is(err, ErrLayout) || !strings.Contains(err.Error(), "line 5 of the layout") || !strings.Contains(err.Error(), "main.Acc") {
		t.Fatalf("a changed state type: %v", err)
	}
	t.Logf("refused: %v", err)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openDisk(t, dir)
	if _, err := check(changed); !errors.Is(err, ErrLayout) {
		t.Fatalf("reopened: a changed state type: %v", err)
	}
	// The same operators declared in another order: the error says so.
	two := append(slices.Clone(layoutV1), `operator 1 of stage 0: sink on checkpoints of string`)
	swapped := append(slices.Clone(layoutV1[:4]), `operator 0 of stage 0: sink on checkpoints of string`,
		`operator 1 of stage 0: table of int64 by string, view "words"`)
	if _, err := s.CheckLayout("two", two); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write("two", 0, cp); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CheckLayout("two", swapped); !errors.Is(err, ErrLayout) || !strings.Contains(err.Error(), "in another order") {
		t.Fatalf("operators in another order: %v", err)
	}
	if _, err := check(changed); err == nil || strings.Contains(err.Error(), "in another order") {
		t.Fatalf("a changed operator said to be in another order: %v", err)
	}
	// Another fragment count.
	refrag := slices.Clone(layoutV1)
	refrag[1] = `fragments 16`
	if _, err := check(refrag); !errors.Is(err, ErrLayout) || !strings.Contains(err.Error(), "cannot be re-sharded") {
		t.Fatalf("another fragment count: %v", err)
	}
	// Another flow's layout is its own.
	if grew, err := s.CheckLayout("other", changed); grew || err != nil {
		t.Fatalf("another flow: grew=%v err=%v", grew, err)
	}
	// A layout that adds a stage and an operator after the old ones grows
	// from it, and is then the one recorded; the way back is open (the
	// restore tells whether the checkpoints hold state of what it lacks),
	// also after the store was closed; a change beside the growth is not.
	grown := append(slices.Insert(slices.Clone(layoutV1), 4, `stage 1: KeyBy string of string from source 0`),
		`operator 1 of stage 1: table of int64 by string, view "other"`)
	if grew, err := check(grown); !grew || err != nil {
		t.Fatalf("an added stage: grew=%v err=%v", grew, err)
	}
	if grew, err := check(grown); grew || err != nil {
		t.Fatalf("the grown layout again: grew=%v err=%v", grew, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openDisk(t, dir)
	if grew, err := check(layoutV1); grew || err != nil {
		t.Fatalf("back to the layout before it grew: grew=%v err=%v", grew, err)
	}
	if _, err := check(append(slices.Clone(changed), grown[5:]...)); !errors.Is(err, ErrLayout) {
		t.Fatalf("grown, with an old operator changed: %v", err)
	}
	// Dropping the flow's checkpoints drops its layout too.
	if err := s.Drop("flow"); err != nil {
		t.Fatal(err)
	}
	if grew, err := check(changed); grew || err != nil {
		t.Fatalf("after Drop: grew=%v err=%v", grew, err)
	}
}

// A store whose checkpoints were written before layouts were recorded
// takes the first layout it is given; a layout of another format is
// taken as such a store's.
func TestCheckLayoutOfAnOlderStore(t *testing.T) {
	s := openDisk(t, t.TempDir())
	defer s.Close()
	cp := &Checkpoint{Manifest: Manifest{Epoch: 1, Fragments: 8, Entries: 1}, Puts: []Entry{put(0, "a", "1")}}
	if _, err := s.Write("flow", 0, cp); err != nil {
		t.Fatal(err)
	}
	if grew, err := s.CheckLayout("flow", layoutV1); grew || err != nil {
		t.Fatalf("grew=%v err=%v", grew, err)
	}
	changed := slices.Clone(layoutV1)
	changed[4] = `operator 0 of stage 0: table of string by string, view "words"`
	if _, err := s.CheckLayout("flow", changed); !errors.Is(err, ErrLayout) {
		t.Fatalf("a changed operator: %v", err)
	}
	// A layout of another format: nothing to compare with.
	if grew, err := s.CheckLayout("flow", append([]string{"layout 2"}, changed[1:]...)); grew || err != nil {
		t.Fatalf("another format: grew=%v err=%v", grew, err)
	}
}

// The rule of extends: a layout extends another exactly when it keeps its
// fragment count and sources, and its stages and operators are the other's followed by new
// ones. Every other edit of a line, insertion before an old line, removal
// or new source is refused.
func TestLayoutExtendsProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		// Lines numbered from `from` on, as a layout numbers its sources,
		// stages and operators.
		gen := func(kind string, from, n int, label string) []string {
			out := make([]string, n)
			for i := range out {
				out[i] = fmt.Sprintf("%s %d: %s", kind, from+i, rapid.SampledFrom([]string{"a", "b", "c"}).Draw(t, label))
			}
			return out
		}
		src, stg, ops := gen("source", 0, rapid.IntRange(1, 3).Draw(t, "sources"), "src"),
			gen("stage", 0, rapid.IntRange(1, 3).Draw(t, "stages"), "stage"), gen("operator", 0, rapid.IntRange(0, 4).Draw(t, "ops"), "op")
		src = append([]string{fmt.Sprintf("fragments %d", rapid.IntRange(1, 4).Draw(t, "fragments"))}, src...)
		was := slices.Concat(src, stg, ops)
		if !extends(was, was) {
			t.Fatalf("%q does not extend itself", was)
		}
		moreStages := gen("stage", len(stg), rapid.IntRange(0, 2).Draw(t, "new stages"), "new stage")
		moreOps := gen("operator", len(ops), rapid.IntRange(0, 2).Draw(t, "new ops"), "new op")
		now := slices.Concat(src, stg, moreStages, ops, moreOps)
		if !extends(now, was) {
			t.Fatalf("%q with stages and operators added after does not extend %q", now, was)
		}
		// Any line of was changed, or removed, breaks it.
		i := rapid.IntRange(0, len(was)-1).Draw(t, "line")
		edited := slices.Clone(now)
		at := slices.Index(edited, was[i])
		edited[at] += " (changed)"
		if extends(edited, was) {
			t.Fatalf("line %d changed: %q extends %q", at, edited, was)
		}
		if removed := slices.Delete(slices.Clone(now), at, at+1); extends(removed, was) {
			t.Fatalf("line %d removed: %q extends %q", at, removed, was)
		}
		// A new source, or a new line before an old stage or operator.
		if extends(slices.Concat([]string{"fragments 9"}, src[1:], stg, ops), was) {
			t.Fatal("another fragment count extends")
		}
		if extends(slices.Concat(src, []string{"source 9: new"}, stg, ops), was) {
			t.Fatal("a new source extends")
		}
		if len(ops) > 0 && extends(slices.Concat(src, stg, []string{"operator 9: new"}, ops), was) {
			t.Fatal("a new operator before the old ones extends")
		}
		if extends(slices.Concat(src, []string{"stage 9: new"}, stg, ops), was) {
			t.Fatal("a new stage before the old ones extends")
		}
	})
}

// The rules that read a recorded layout take any text without a panic,
// and a layout always extends itself.
func FuzzLayoutRules(f *testing.F) {
	f.Add(strings.Join(layoutV1, "\n"), strings.Join(layoutV1[:3], "\n"))
	f.Add("layout 1\nfragments 8\noperator 0 x", "operator\n\noperator 0")
	f.Fuzz(func(t *testing.T, a, b string) {
		was, now := strings.Split(a, "\n"), strings.Split(b, "\n")
		_ = extends(now, was)
		_ = extends(was, now)
		_ = layoutDiff(was, now)
		_ = reordered(was, now)
		if !extends(was, was) && len(was) == partsOf(was) {
			t.Fatalf("%q does not extend itself", was)
		}
	})
}

// partsOf is how many lines of l the rules know (extends ignores no line:
// a layout with another line extends nothing).
func partsOf(l []string) int {
	n := 0
	for _, line := range l {
		for _, kind := range []string{"layout ", "fragments ", "source ", "stage ", "operator "} {
			if strings.HasPrefix(line, kind) {
				n++
				break
			}
		}
	}
	return n
}
