package flowcore_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/splice"
)

// An event that holds its key crosses nodes without the key's bytes, and
// batches of the versions before (every event whole; the key spliced out
// at its position) still decode to the same state.
func TestBatchSendsKeyOnce(t *testing.T) {
	in := flowstest.NewInput[stamped](1)
	for i := range 500 {
		in.Push(0, stamped{Text: fmt.Sprintf("word-%03d", i%37), At: t0.Add(time.Duration(i) * time.Second)})
	}
	in.Close()
	plan, err := flowcore.Compile(stampedFlow(in, 1))
	if err != nil {
		t.Fatal(err)
	}
	direct := plan.NewFragment(0)
	versions := []struct {
		name   string
		encode func([]byte, *flowcore.Batch) ([]byte, error)
		fr     *flowcore.Fragment
		bytes  int
	}{{"version 1", plan.EncodeBatchV1, plan.NewFragment(0), 0}, {"version 2", plan.EncodeBatchV2, plan.NewFragment(0), 0},
		{"version 3", plan.EncodeBatch, plan.NewFragment(0), 0}}
	var records int
	for _, b := range batches(t, plan, 64) {
		records += b.Count
		for i := range versions {
			v := &versions[i]
			enc, err := v.encode(nil, b)
			if err != nil {
				t.Fatal(err)
			}
			v.bytes += len(enc)
			d, err := plan.DecodeBatch(enc)
			if err != nil {
				t.Fatalf("%s: decode: %v", v.name, err)
			}
			if err := v.fr.Apply(d, d.PrevEnd); err != nil {
				t.Fatal(err)
			}
		}
		if err := direct.Apply(b, b.PrevEnd); err != nil {
			t.Fatal(err)
		}
	}
	// Each record's 8-byte key is left out of its event, for a byte of its
	// position (version 2), or with its length for nothing (version 3: the
	// key is the event's first field).
	if n1, n2, n3 := versions[0].bytes, versions[1].bytes, versions[2].bytes; n1-n2 < 7*records || n2-n3 < 2*records-records/10 {
		t.Fatalf("%d records: %d bytes in version 1, %d in version 2, %d in version 3", records, n1, n2, n3)
	}
	req := splice.Request{View: "counts", Op: splice.OpEntries, Query: splice.Query{Limit: 1000}}
	want, err := direct.Query(req)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range versions {
		got, err := v.fr.Query(req)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got.Entries) != fmt.Sprint(want.Entries) || len(want.Entries) != 37 {
			t.Fatalf("%s: %v, want %v", v.name, got.Entries, want.Entries)
		}
	}
}

// Keys that share their first bytes are front-coded, long ones too (their
// lengths take more than a byte), and decode to the same state as whole
// keys and as version 2's batches.
func TestBatchFrontCodedKeys(t *testing.T) {
	prefix := strings.Repeat("p", 150)
	in := flowstest.NewInput[stamped](1)
	for i := range 600 {
		in.Push(0, stamped{Text: fmt.Sprintf("%s-%03d", prefix, i%41), At: t0.Add(time.Duration(i) * time.Second)})
	}
	in.Close()
	plan, err := flowcore.Compile(stampedFlow(in, 1))
	if err != nil {
		t.Fatal(err)
	}
	direct, v2, v3 := plan.NewFragment(0), plan.NewFragment(0), plan.NewFragment(0)
	var n2, n3, records int
	for _, b := range batches(t, plan, 64) {
		e2, err := plan.EncodeBatchV2(nil, b)
		if err != nil {
			t.Fatal(err)
		}
		e3, err := plan.EncodeBatch(nil, b)
		if err != nil {
			t.Fatal(err)
		}
		n2, n3, records = n2+len(e2), n3+len(e3), records+b.Count
		for _, c := range []struct {
			fr  *flowcore.Fragment
			enc []byte
		}{{v2, e2}, {v3, e3}} {
			d, err := plan.DecodeBatchInterned(c.enc, c.fr.Interner())
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if err := c.fr.Apply(d, d.PrevEnd); err != nil {
				t.Fatal(err)
			}
		}
		if err := direct.Apply(b, b.PrevEnd); err != nil {
			t.Fatal(err)
		}
	}
	// Most keys share at least the 150 bytes of the prefix.
	if n2-n3 < 100*records {
		t.Fatalf("%d records: %d bytes in version 2, %d front-coded", records, n2, n3)
	}
	req := splice.Request{View: "counts", Op: splice.OpEntries, Query: splice.Query{Limit: 1000}}
	want, err := direct.Query(req)
	if err != nil {
		t.Fatal(err)
	}
	for name, fr := range map[string]*flowcore.Fragment{"version 2": v2, "version 3": v3} {
		got, err := fr.Query(req)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got.Entries) != fmt.Sprint(want.Entries) || len(want.Entries) != 41 {
			t.Fatalf("%s: %d entries, want %d", name, len(got.Entries), len(want.Entries))
		}
	}
}

// keepCodec decodes an event as the very bytes it is given, as a user's
// codec may.
type keepCodec struct{}

func (keepCodec) Append(dst []byte, v []byte) ([]byte, error) { return append(dst, v...), nil }
func (keepCodec) Decode(b []byte) ([]byte, error)             { return b, nil }

// An event put back together with its key is its own bytes: a codec that
// keeps them is not handed a buffer that the next event overwrites.
func TestBatchSharedKeyKeptBytes(t *testing.T) {
	in := flowstest.NewInput[[]byte](1)
	var want [][]byte
	for i := range 50 {
		ev := []byte(fmt.Sprintf("k%02d|payload %d", i%5, i))
		want = append(want, ev)
		in.Push(0, ev)
	}
	in.Close()
	f := flows.New("kept", flows.WithFragments(1))
	ks := flows.KeyBy(flows.From(f, "lines", in), func(b []byte) string { return string(b[:3]) }, flows.WithEventCodec[[]byte](keepCodec{}))
	flows.Count(ks).View("counts")
	plan, err := flowcore.Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	fr := plan.NewFragment(0)
	var decoded []*flowcore.Batch
	for _, b := range batches(t, plan, 64) {
		enc, err := plan.EncodeBatch(nil, b)
		if err != nil {
			t.Fatal(err)
		}
		d, err := plan.DecodeBatch(enc)
		if err != nil {
			t.Fatal(err)
		}
		decoded = append(decoded, d)
	}
	var got []string
	for _, d := range decoded {
		got = append(got, flowcore.BatchEvents(fr, d)...)
	}
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != fmt.Sprintf("%+v", want[i]) {
			t.Fatalf("event %d is %s, want %v", i, got[i], want[i])
		}
	}
}

// Front-coded keys of 1 to 20 bytes (around the 8 and 16 bytes between
// which lookups compare a key as two words) decode, and are found in the
// tables, to the same state as the events applied directly: every length
// of shared prefix and of suffix. (TestSameString guards the comparison
// itself: a lookup compares only keys whose hash tags match.)
func TestBatchFrontCodedShortKeys(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	keys := make([]string, 300)
	for i := range keys {
		b := make([]byte, 1+rng.IntN(20))
		for j := range b {
			b[j] = "xy"[rng.IntN(2)]
		}
		keys[i] = string(b)
	}
	in := flowstest.NewInput[stamped](1)
	for i := range 3000 {
		in.Push(0, stamped{Text: keys[rng.IntN(len(keys))], At: t0.Add(time.Duration(i) * time.Second)})
	}
	in.Close()
	plan, err := flowcore.Compile(stampedFlow(in, 1))
	if err != nil {
		t.Fatal(err)
	}
	direct, wire := plan.NewFragment(0), plan.NewFragment(0)
	for _, b := range batches(t, plan, 64) {
		enc, err := plan.EncodeBatch(nil, b)
		if err != nil {
			t.Fatal(err)
		}
		d, err := plan.DecodeBatchInterned(enc, wire.Interner())
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if err := wire.Apply(d, d.PrevEnd); err != nil {
			t.Fatal(err)
		}
		if err := direct.Apply(b, b.PrevEnd); err != nil {
			t.Fatal(err)
		}
	}
	req := splice.Request{View: "counts", Op: splice.OpEntries, Query: splice.Query{Limit: 1000}}
	want, err := direct.Query(req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := wire.Query(req)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got.Entries) != fmt.Sprint(want.Entries) || len(want.Entries) < 200 {
		t.Fatalf("decoded %d entries %v, want %d %v", len(got.Entries), got.Entries, len(want.Entries), want.Entries)
	}
}
