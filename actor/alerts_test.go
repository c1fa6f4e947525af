package actor

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/tessera-streams/tessera/internal/wire"
	"github.com/tessera-streams/tessera/recovery"
)

// A message of the alert log whose records exceed a frame goes in parts;
// the receiver joins them into the message sent. A part lost on the way
// never makes a message with a hole in its records.
func TestAlertPartsJoin(t *testing.T) {
	var recs [][]byte
	for i := range 3000 {
		recs = append(recs, bytes.Repeat([]byte{byte('a' + i%26)}, 200+i%100)) // about 750 KB in all
	}
	held := &recovery.AlertStep{Version: 9, First: 3010, Records: [][]byte{[]byte("held")}, States: map[string][]byte{"x": {9}}}
	m := recovery.AlertMsg{Kind: recovery.AlertAnswer, From: "a", To: "b", Placement: 4, Total: 3010, PreparedAt: 4, Held: held,
		AlertStep: recovery.AlertStep{Version: 8, First: 10, Records: recs, States: map[string][]byte{"x": {8}, "y": {1}}, Lost: 2}}
	parts := alertParts(m, "flow", "a", "127.0.0.1:1")
	if len(parts) < 3 {
		t.Fatalf("%d parts for %d records", len(parts), len(recs))
	}
	for i, p := range parts {
		size := 0
		for _, r := range p.Records {
			size += len(r)
		}
		if size > alertChunk || p.More != (i < len(parts)-1) || (p.Held != nil) != (i == len(parts)-1) {
			t.Fatalf("part %d: %d bytes, more %v, held %v", i, size, p.More, p.Held != nil)
		}
	}
	join := func(parts []*wire.AlertLog) *wire.AlertLog {
		a := &alertLog{parts: map[string]*wire.AlertLog{}}
		var out *wire.AlertLog
		for _, p := range parts {
			if w := a.assemble(p); w != nil {
				if out != nil {
					t.Fatal("two messages out of one")
				}
				out = w
			}
		}
		return out
	}
	w := join(parts)
	if w == nil {
		t.Fatal("the parts were not joined")
	}
	st, err := decodeAlertStep(w)
	if err != nil {
		t.Fatal(err)
	}
	h, err := decodeAlertStep(w.Held)
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != 8 || st.First != 10 || st.Lost != 2 || len(st.Records) != len(recs) || fmt.Sprint(st.States) != fmt.Sprint(m.States) ||
		w.Total != 3010 || w.PreparedAt != 4 || h.Version != 9 || string(h.Records[0]) != "held" {
		t.Fatalf("joined: version %d first %d lost %d records %d states %v total %d held %+v", st.Version, st.First, st.Lost,
			len(st.Records), st.States, w.Total, h)
	}
	for i := range recs {
		if !bytes.Equal(st.Records[i], recs[i]) {
			t.Fatalf("record %d differs", i)
		}
	}
	// Without its second part, the last arrives alone: a message of the
	// log's last records, from where they start (the log takes it only if
	// it reaches the receiver's copy).
	parts = alertParts(m, "flow", "a", "127.0.0.1:1") // join took the first over
	w = join(append([]*wire.AlertLog{parts[0]}, parts[2:]...))
	if w == nil {
		t.Fatal("the last part was not delivered")
	}
	st, err = decodeAlertStep(w)
	if err != nil || st.First != parts[2].First || st.Total() != 3010 || !bytes.Equal(st.Records[0], recs[st.First-10]) {
		t.Fatalf("the last part alone: records [%d, %d), %v", st.First, st.Total(), err)
	}
}
