package cluster

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/internal/wire"
	"github.com/tessera-streams/tessera/shard"
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
// last placement, or of a newer one a live peer gossips (a node that
// missed placements); a placement without a member that is neither alive
// nor leaving waits the lease.
func TestHasMajority(t *testing.T) {
	last := Placement{Epoch: 4, Members: []string{"n1", "n2", "n3"}}
	m := &Membership{cfg: MemberConfig{Name: "n3"}, peers: map[string]peer{
		"n3": {meta: &wire.Meta{AgreedEpoch: 9, Agreed: []string{"n9"}}}, // itself: its own placement counts
		"n1": {meta: &wire.Meta{AgreedEpoch: 3, Agreed: []string{"n1", "n3"}}},
		"n2": {meta: &wire.Meta{}},
	}}
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
		if got := shard.Majority(newestAgreed(last, m), c.heard); got != c.want {
			t.Errorf("heard by %v: majority %v, want %v", c.heard, got, c.want)
		}
	}
	// The cluster grew to five while n3 was stopped; n1 applied it. n3 is
	// heard by n2 only: a majority of its own three, not of the five.
	m.peers["n1"] = peer{meta: &wire.Meta{AgreedEpoch: 6, Agreed: []string{"n1", "n2", "n3", "n4", "n5"}}}
	if shard.Majority(newestAgreed(last, m), []string{"n2", "n3"}) {
		t.Error("a node that missed a placement counted against its own older one")
	}
	if !shard.Majority(newestAgreed(last, m), []string{"n2", "n3", "n4"}) {
		t.Error("three of the newest five is no majority")
	}
	// The lease outlasts two rounds of probes: each peer is probed at
	// least once within it.
	for n := 1; n <= 9; n++ {
		if l := lease(n); l <= time.Duration(2*max(n, 2))*gossipProbeInterval {
			t.Errorf("lease(%d) = %v: not two rounds of probes", n, l)
		}
	}
}
