package recovery

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// A node's copy of the alert log: steps append records and set the states
// and the version together; ranged reads serve other nodes what they lack;
// Drop forgets all of it.
func TestAlertLogStore(t *testing.T) {
	s, err := Open("db", vfs.NewMem(), quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, err := s.AlertVersion("f"); v != 0 || err != nil {
		t.Fatalf("empty store: version %d, %v", v, err)
	}
	rec := func(i int) []byte { return []byte(fmt.Sprintf(`{"n":%d}`, i)) }
	if err := s.WriteAlertLog("f", 1, map[string][]byte{"a": {1}}, 0, [][]byte{rec(0), rec(1)}, false); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAlertLog("f", 2, map[string][]byte{"a": {2}, "b": {7}}, 2, [][]byte{rec(2)}, true); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteAlertLog("g", 9, nil, 0, [][]byte{[]byte("other flow")}, true); err != nil {
		t.Fatal(err)
	}
	if v, err := s.AlertVersion("f"); v != 2 || err != nil {
		t.Fatalf("version %d, %v", v, err)
	}
	states, recs, err := s.LoadAlerts("f")
	if err != nil || len(recs) != 3 || states["a"][0] != 2 || states["b"][0] != 7 {
		t.Fatalf("load: %q %q %v", states, recs, err)
	}
	got, err := s.AlertRecords("f", 1, 3)
	if err != nil || len(got) != 2 || string(got[0]) != string(rec(1)) || string(got[1]) != string(rec(2)) {
		t.Fatalf("records [1, 3): %q %v", got, err)
	}
	if _, err := s.AlertRecords("f", 2, 5); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("records [2, 5) of 3: %v, want ErrCorrupt", err)
	}
	if err := s.Drop("f"); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.AlertVersion("f"); v != 0 {
		t.Fatalf("version %d after Drop", v)
	}
	if v, _ := s.AlertVersion("g"); v != 9 {
		t.Fatalf("the other flow's version %d after Drop", v)
	}
}
