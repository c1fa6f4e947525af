package cluster

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The agreed membership outlives a restart: kept after every placement,
// read back as it was; none before the first.
func TestAgreedMembershipKept(t *testing.T) {
	dir := t.TempDir()
	a, err := loadAgreed(dir)
	if err != nil || a.Epoch != 0 || len(a.Members) != 0 {
		t.Fatalf("before any placement: %+v, %v", a, err)
	}
	if err := saveAgreed(dir, Placement{Epoch: 7, Members: []string{"n1", "n2", "n3"}}); err != nil {
		t.Fatal(err)
	}
	if err := saveAgreed(dir, Placement{Epoch: 9, Members: []string{"n1", "n3"}}); err != nil {
		t.Fatal(err)
	}
	a, err = loadAgreed(dir)
	if err != nil || a.Epoch != 9 || !slices.Equal(a.Members, []string{"n1", "n3"}) {
		t.Fatalf("kept %+v, %v; want epoch 9, members n1 n3", a, err)
	}
	if err := os.WriteFile(filepath.Join(dir, agreedFile), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadAgreed(dir); err == nil {
		t.Fatal("a damaged membership file was read without an error")
	}
}

// A node counts the members it sees, leaving or not, against the members
// of its last placement.
func TestHasMajority(t *testing.T) {
	last := Placement{Members: []string{"n1", "n2", "n3"}}
	ms := func(names ...string) []Member {
		var out []Member
		for _, n := range names {
			out = append(out, Member{Name: n})
		}
		return out
	}
	cases := []struct {
		sees    []Member
		leaving map[string]string
		want    bool
	}{
		{ms("n1", "n2", "n3"), nil, true},
		{ms("n2", "n3"), nil, true},
		{ms("n3"), nil, false},
		{ms("n3"), map[string]string{"n2": "addr"}, true}, // a leaver still counts while alive
		{ms("n3", "n4", "n5"), nil, false},                // joiners do not
	}
	for _, c := range cases {
		if got := hasMajority(last, c.sees, c.leaving); got != c.want {
			t.Errorf("sees %v (leaving %v): majority %v, want %v", names(c.sees), c.leaving, got, c.want)
		}
	}
}
