package cluster

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
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

// A node counts the members that heard it against the members of its
// last placement; a placement without a member that is neither alive nor
// leaving waits the lease.
func TestHasMajority(t *testing.T) {
	last := Placement{Members: []string{"n1", "n2", "n3"}}
	cases := []struct {
		heard []string
		want  bool
	}{
		{[]string{"n1", "n2", "n3"}, true},
		{[]string{"n2", "n3"}, true},
		{[]string{"n3"}, false},
		{[]string{"n3", "n4", "n5"}, false}, // joiners do not count
	}
	for _, c := range cases {
		if got := hasMajority(last, c.heard); got != c.want {
			t.Errorf("heard by %v: majority %v, want %v", c.heard, got, c.want)
		}
	}
	ms := func(names ...string) []Member {
		var out []Member
		for _, n := range names {
			out = append(out, Member{Name: n})
		}
		return out
	}
	if lostMember(last, ms("n1", "n2", "n3"), nil) || lostMember(last, ms("n1", "n3"), map[string]string{"n2": "addr"}) {
		t.Error("a member alive or leaving counted as lost")
	}
	if !lostMember(last, ms("n1", "n3"), nil) {
		t.Error("a member gone without leaving not counted as lost")
	}
	// The lease outlasts two rounds of probes: each peer is probed at
	// least once within it.
	for n := 1; n <= 9; n++ {
		if l := lease(n); l <= time.Duration(2*max(n, 2))*gossipProbeInterval {
			t.Errorf("lease(%d) = %v: not two rounds of probes", n, l)
		}
	}
}
