package cluster

import (
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
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
	if err := saveAgreed(dir, agreed{Epoch: 7, Members: []string{"n1", "n2", "n3"}}); err != nil {
		t.Fatal(err)
	}
	want := agreed{Epoch: 9, Members: []string{"n1", "n3"}, Before: []shard.Placed{{Epoch: 7, Members: []string{"n1", "n2", "n3"}}}, Cut: true, Caught: 7}
	if err := saveAgreed(dir, want); err != nil {
		t.Fatal(err)
	}
	a, err = loadAgreed(dir)
	if err != nil || !reflect.DeepEqual(a, want) {
		t.Fatalf("kept %+v, %v; want %+v", a, err, want)
	}
	// A file kept before the membership before it was: none, and the
	// rule is a majority of the members alone.
	if err := os.WriteFile(filepath.Join(dir, agreedFile), []byte(`{"epoch":4,"members":["n1","n2"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if a, err = loadAgreed(dir); err != nil || a.Epoch != 4 || len(a.Before) != 0 || a.Cut || !a.agreement().Quorum([]string{"n1"}, nil) {
		t.Fatalf("an older file: %+v, %v", a, err)
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
	last := agreed{Epoch: 4, Members: []string{"n1", "n2", "n3"}}
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
		if got := newestAgreed(last, m).agreement().Quorum(c.heard, nil); got != c.want {
			t.Errorf("heard by %v: majority %v, want %v", c.heard, got, c.want)
		}
	}
	// The cluster grew to five while n3 was stopped; n1 applied it. n3 is
	// heard by n2 only: a majority of its own three, not of the five.
	m.peers["n1"] = peer{meta: &wire.Meta{AgreedEpoch: 6, Agreed: []string{"n1", "n2", "n3", "n4", "n5"}}}
	if newestAgreed(last, m).agreement().Quorum([]string{"n2", "n3"}, nil) {
		t.Error("a node that missed a placement counted against its own older one")
	}
	if !newestAgreed(last, m).agreement().Quorum([]string{"n2", "n3", "n4"}, nil) {
		t.Error("three of the newest five is no majority")
	}
	// A peer's newer placement was made by a majority of [n1 n2], and no
	// member caught up with it yet: a side needs a majority of that one
	// too, and a member caught up with what was settled before it.
	m.peers["n1"] = peer{meta: &wire.Meta{AgreedEpoch: 6, Agreed: []string{"n1", "n2", "n3"},
		AgreedBefore: []*wire.Placed{{Epoch: 5, Members: []string{"n1", "n2"}}}, AgreedCut: true, Caught: 5}}
	m.peers["n2"] = peer{meta: &wire.Meta{Caught: 4}}
	a := newestAgreed(last, m)
	if a.Epoch != 6 || len(a.Before) != 1 || a.Before[0].Epoch != 5 || !a.Cut {
		t.Errorf("a peer's newer placement: counted %+v", a)
	}
	own := agreed{Caught: 4}
	if quorum(a, own, []string{"n2", "n3"}, m, "n3") {
		t.Error("n2 and n3 hold no majority of [n1 n2]")
	}
	if !quorum(a, own, []string{"n1", "n3"}, m, "n3") {
		t.Error("n1, caught up with 5, and n3 hold a majority of both")
	}
	m.peers["n1"].meta.Caught = 4
	if quorum(a, own, []string{"n1", "n3"}, m, "n3") {
		t.Error("no member caught up with what was settled before 5, and the list before it is cut")
	}
	if !quorum(a, agreed{Caught: 6}, []string{"n2", "n3"}, m, "n3") {
		t.Error("n3 caught up with 6: a majority of it is enough")
	}
	// The lease outlasts two rounds of probes: each peer is probed at
	// least once within it.
	for n := 1; n <= 9; n++ {
		if l := lease(n); l <= time.Duration(2*max(n, 2))*gossipProbeInterval {
			t.Errorf("lease(%d) = %v: not two rounds of probes", n, l)
		}
	}
}

// A node's metadata fits memberlist's limit: the memberships before the
// agreed one go first, oldest first, and the list says it is cut; the
// agreed membership and the caught-up epoch stay.
func TestMetaDropsTheOldestMembershipsFirst(t *testing.T) {
	members := []string{"node-with-a-long-name-1", "node-with-a-long-name-2", "node-with-a-long-name-3"}
	self := &wire.Meta{Remote: "127.0.0.1:9000", Flow: "f", AgreedEpoch: 20, Agreed: members, Caught: 12}
	for e := uint64(19); e > 11; e-- {
		self.AgreedBefore = append(self.AgreedBefore, &wire.Placed{Epoch: e, Members: members})
	}
	m := &Membership{self: self, logger: slog.New(slog.DiscardHandler)}
	const limit = 300
	b := (*mlDelegate)(m).NodeMeta(limit)
	meta, err := decodeMeta(b)
	if err != nil || len(b) > limit || len(b) == 0 {
		t.Fatalf("%d bytes of metadata (limit %d): %v", len(b), limit, err)
	}
	if meta.AgreedEpoch != 20 || len(meta.Agreed) != 3 || meta.Caught != 12 || !meta.AgreedCut ||
		len(meta.AgreedBefore) == 0 || len(meta.AgreedBefore) >= 8 || meta.AgreedBefore[0].Epoch != 19 {
		t.Fatalf("the metadata kept agreed %d %v, caught %d, cut %v, %d before (first %v)",
			meta.AgreedEpoch, meta.Agreed, meta.Caught, meta.AgreedCut, len(meta.AgreedBefore), meta.AgreedBefore[0])
	}
	if len(self.AgreedBefore) != 8 {
		t.Fatal("the node's own metadata lost its list")
	}
}
