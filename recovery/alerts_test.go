package recovery

import (
	"errors"
	"fmt"
	"reflect"
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

// The step a member holds prepared is stored in place of the one before,
// read back whole, and dropped with the flow.
func TestPreparedAlertStore(t *testing.T) {
	s, err := Open("db", vfs.NewMem(), quiet())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, _, ok, err := s.PreparedAlert("f"); ok || err != nil {
		t.Fatalf("empty store: ok %v, %v", ok, err)
	}
	first := AlertStep{Version: 3, First: 5, Records: [][]byte{[]byte(`{"n":5}`)}, States: map[string][]byte{"a": {1}}, Lost: 2}
	second := AlertStep{Version: 3, First: 5, Records: [][]byte{[]byte(`{"n":5}`), []byte(`{"n":6}`)},
		States: map[string][]byte{"a": {2}, "b": {}}, Lost: -1}
	for _, w := range []struct {
		at uint64
		st AlertStep
	}{{4, first}, {7, second}} {
		if err := s.WritePreparedAlert("f", w.at, w.st); err != nil {
			t.Fatal(err)
		}
		st, at, ok, err := s.PreparedAlert("f")
		if !ok || err != nil || at != w.at || !reflect.DeepEqual(st, w.st) {
			t.Fatalf("read back %+v at %d (ok %v, %v), want %+v at %d", st, at, ok, err, w.st, w.at)
		}
	}
	if err := s.Drop("f"); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, err := s.PreparedAlert("f"); ok || err != nil {
		t.Fatalf("after Drop: ok %v, %v", ok, err)
	}
}

func FuzzDecodePreparedAlert(f *testing.F) {
	f.Add(EncodePreparedAlert(9, AlertStep{Version: 3, First: 5, Records: [][]byte{[]byte("r")}, States: map[string][]byte{"a": {1}, "b": nil}, Lost: -4}))
	f.Add(EncodePreparedAlert(0, AlertStep{}))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 1, 0x61, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		st, at, err := DecodePreparedAlert(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not marked corrupt: %v", err)
			}
			return
		}
		again, againAt, err := DecodePreparedAlert(EncodePreparedAlert(at, st))
		if err != nil || againAt != at || !reflect.DeepEqual(again, st) {
			t.Fatalf("re-decode: %+v at %d, %v; want %+v at %d", again, againAt, err, st, at)
		}
	})
}
