package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/connectors/file"
	"github.com/tessera-streams/tessera/examples/transport/pipeline"
	"github.com/tessera-streams/tessera/internal/exampletest"
)

func tripKey(d pipeline.Detected) string {
	return fmt.Sprintf("%d %d %d %d %d", d.Sub, d.From, d.To, d.Depart.UnixNano(), d.Arrive.UnixNano())
}

// readTrips reads the trips files of data directories, one trip per
// output id; an id written twice must carry the same trip (the sink
// writes each once, but a fragment that moved between nodes leaves its
// file behind on the node it left).
func readTrips(t *testing.T, dirs ...string) map[string]bool {
	t.Helper()
	byID := map[string]string{}
	var files []string
	for _, dir := range dirs {
		fs, _ := filepath.Glob(filepath.Join(dir, "trips", "*.jsonl"))
		files = append(files, fs...)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.SplitAfter(string(b), "\n")
		for i, line := range lines {
			var l file.Line
			var d pipeline.Detected
			err := json.Unmarshal([]byte(line), &l)
			if err == nil {
				err = json.Unmarshal(l.Value, &d)
			}
			if err != nil && i == len(lines)-1 && !strings.HasSuffix(line, "\n") {
				break // cut short by a SIGKILL: the sink drops it when it opens the file again
			}
			if err != nil {
				t.Fatalf("%s line %d: %v", name, i+1, err)
			}
			k := tripKey(d)
			if prev, ok := byID[l.ID]; ok && prev != k {
				t.Fatalf("output %s written as %s, then as %s", l.ID, prev, k)
			}
			byID[l.ID] = k
		}
	}
	out := map[string]bool{}
	for _, k := range byID {
		out[k] = true
	}
	return out
}

// The example on one node, killed with SIGKILL at random moments and
// restarted on its data directory: its hourly and daily OD views equal
// the sequential program's, every cell (k = 1), and its trips file holds
// the sequential program's trips, each once. Its accuracy file scores the
// detector against the ground truth.
func TestSIGKILLRestartsExact(t *testing.T) {
	t.Parallel()
	args, _, want := testArgs(t, 1500, 16, "-k", "1")
	bin := exampletest.Build(t, "transport")
	data := t.TempDir()
	args = append(args, "-data", data, "-rate", "60000") // the input lasts about 2 s: the kills fall in it
	t.Logf("%d trips", len(want.Trips))
	p := exampletest.KillRestarts(t, bin, args, 4, 100*time.Millisecond, 900*time.Millisecond)
	waitComplete(t, p.Base, len(want.Trips))
	checkExact(t, p.Base, want, data)
	var acc pipeline.Accuracy
	b, err := os.ReadFile(filepath.Join(data, "accuracy.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &acc); err != nil {
		t.Fatal(err)
	}
	if acc.Detected != len(want.Trips) || acc.Precision < 0.9 || acc.Recall < 0.9 {
		t.Fatalf("accuracy.json: %+v", acc)
	}
	if _, err := os.Stat(filepath.Join(data, "truth.jsonl")); err != nil {
		t.Fatal(err)
	}
}

// checkExact compares a node's OD views, every cell (k = 1), and the
// trips files of the data directories with the sequential program's.
func checkExact(t *testing.T, base string, want pipeline.Result, dirs ...string) {
	t.Helper()
	all := func(m map[pipeline.WindowKey]pipeline.Cell) map[pipeline.WindowKey]counts {
		out, _ := published(m, 1)
		return out
	}
	sameEntries(t, "od", pages(t, base, "od", "", 100000, 1), all(want.Hourly))
	sameEntries(t, "od-day", pages(t, base, "od-day", "", 100000, 1), all(want.Daily))
	// In a cluster a sink is delivered one checkpoint after its outputs'
	// (a standby's copy must be able to redeliver them): wait for it.
	got := readTrips(t, dirs...)
	for deadline := time.Now().Add(10 * time.Second); len(got) < len(want.Trips) && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		got = readTrips(t, dirs...)
	}
	if len(got) != len(want.Trips) {
		t.Fatalf("trips files: %d trips, want %d", len(got), len(want.Trips))
	}
	for _, d := range want.Trips {
		if !got[tripKey(d)] {
			t.Fatalf("trips files lack %+v", d)
		}
	}
}

// Three nodes run the example. While pings stream in, snapshot reads
// (snapshotReads) see the pipeline's stages at one cut; then one node is
// killed with SIGKILL mid-stream: both survivors' OD views, and the
// nodes' trips files together, equal the sequential program's.
func TestThreeNodesOneKilledExact(t *testing.T) {
	t.Parallel()
	// At 20,000 pings/s the input lasts about 5 s: the reads and the kill
	// fall in it.
	args, _, want := testArgs(t, 1500, 16, "-k", "1", "-rate", "20000")
	bin := exampletest.Build(t, "transport")
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	procs := exampletest.StartCluster(t, bin, args, dirs)
	snapshotReads(t, procs, min(100, len(want.Trips)/10))
	var trips struct{ Value int64 }
	exampletest.GetJSON(t, procs[0].Base+"/v1/views/trips", &trips)
	if err := procs[2].Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	procs[2].Wait()
	start := time.Now()
	if trips.Value >= int64(len(want.Trips)) {
		t.Fatalf("every trip (%d) was counted before the kill: the kill was not mid-stream", trips.Value)
	}
	waitComplete(t, procs[0].Base, len(want.Trips))
	t.Logf("%d trips (%d before the kill) exact %v after the kill", len(want.Trips), trips.Value, time.Since(start))
	checkExact(t, procs[0].Base, want, dirs...)
	waitComplete(t, procs[1].Base, len(want.Trips))
	checkExact(t, procs[1].Base, want, dirs...)
}
