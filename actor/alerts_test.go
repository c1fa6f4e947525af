package actor

import (
	"bytes"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/internal/wire"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/splice"
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

// A member stores the step the alerts' owner prepared with it, synced,
// before it acknowledges it, and takes it back when it starts again: the
// owner may have committed the step counting this member, and a new
// owner's catch-up must find it here after a restart too (the alert log
// simulation, which keeps what a node's store holds prepared through its
// restarts, raised a crossing twice on seed 773 when a restarted node
// forgot it).
func TestPreparedAlertStepOutlivesARestart(t *testing.T) {
	src, _ := gen.New(gen.Config{Partitions: 1, Seed: 5, Events: 10}, word)
	f := flows.New("alerting", flows.WithFragments(2))
	in := flows.From(f, "gen", src, flows.WithEventTime(func(string) time.Time { return time.Unix(0, 0) }, 0))
	w := flows.WindowAggregate(flows.KeyBy(in, flows.Identity[string]), flows.Tumbling(time.Minute),
		func() int64 { return 0 }, func(n int64, _ string) int64 { return n + 1 })
	v := flows.WindowView(w, "words", splice.Count[struct{}](), func(string, int64) struct{} { return struct{}{} }, time.Hour)
	flows.Alert(v, "busy", func(prev, cur int64) bool { return prev <= 3 && cur > 3 })
	plan, err := flowcore.Compile(f)
	if err != nil {
		t.Fatal(err)
	}

	// The store holds the step prepared under placement 3, before this
	// process.
	store := diskStore(t)
	before := recovery.AlertStep{Version: 1, First: 0, Records: [][]byte{[]byte(`{"alert":"busy"}`)}, States: map[string][]byte{"busy": {1}}}
	if err := store.WritePreparedAlert(plan.Name(), 3, before); err != nil {
		t.Fatal(err)
	}
	// b is the standby of a's alerts under placement 5 (a shares b's
	// address: nothing goes to another process).
	addr := freeAddr(t)
	e, err := Start(plan, Config{Store: store, Logger: quiet(), Cluster: &ClusterConfig{Self: "b", Remote: addr, Epoch: 5,
		Fragments: slices.Repeat([]string{"b"}, plan.Fragments()), Readers: []string{"b"},
		Remotes: map[string]string{"a": addr, "b": addr}, Alerts: []string{"a", "b"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	prepared := func() (*recovery.AlertStep, uint64) {
		e.alerts.mu.Lock()
		defer e.alerts.mu.Unlock()
		return e.alerts.m.Prepared()
	}
	if st, at := prepared(); st == nil || at != 3 || !reflect.DeepEqual(*st, before) {
		t.Fatalf("after the start: holds %+v prepared under %d, want the stored step under 3", st, at)
	}

	// a prepares the next step with b under placement 5.
	next := recovery.AlertStep{Version: 1, First: 0, Records: [][]byte{[]byte(`{"alert":"busy","n":2}`)}, States: map[string][]byte{"busy": {2}}}
	parts := alertParts(recovery.AlertMsg{Kind: recovery.AlertPrepare, From: "a", To: "b", Placement: 5, AlertStep: next, Total: 1},
		plan.Name(), "a", addr)
	for _, p := range parts {
		e.receiveAlert(p)
	}
	if st, at := prepared(); st == nil || at != 5 || !reflect.DeepEqual(*st, next) {
		t.Fatalf("after the prepare: holds %+v prepared under %d, want a's step under 5", st, at)
	}
	st, at, ok, err := store.PreparedAlert(plan.Name())
	if err != nil || !ok || at != 5 || !reflect.DeepEqual(st, next) {
		t.Fatalf("the store holds %+v prepared under %d (ok %v, %v), want a's step under 5", st, at, ok, err)
	}
}
