package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A tiny run: the engine's counts must equal the baselines' (run checks),
// and the results file has the fields tools read.
func TestSmallRun(t *testing.T) {
	out := filepath.Join(t.TempDir(), "latest.json")
	p := params{events: 50_000, keys: 500, fragments: 8, partitions: 2, rounds: 1, batch: 64}
	if err := run(p, out, io.Discard); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rs []Result
	if err := json.Unmarshal(b, &rs); err != nil {
		t.Fatal(err)
	}
	if len(rs) != 3 || rs[0].Name != "keyed-count" || rs[0].Status != "ok" || rs[0].EventsPerSec <= 0 || rs[0].Ratio <= 0 {
		t.Fatalf("results = %+v", rs)
	}
	if rs[1].Name != "checkpoint-overhead" || rs[1].Ratio <= 0 || rs[2].Name != "recovery" || rs[2].Keys != 500 || rs[2].RestoreMs <= 0 {
		t.Fatalf("results = %+v", rs[1:])
	}
}
