package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
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

// readTrips reads the trips files of a data directory, one trip per output
// id; an id written twice must carry the same trip.
func readTrips(t *testing.T, dir string) map[string]bool {
	t.Helper()
	byID := map[string]string{}
	files, _ := filepath.Glob(filepath.Join(dir, "trips*.jsonl"))
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var l file.Line[pipeline.Detected]
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				f.Close()
				t.Fatalf("%s: %v", name, err)
			}
			k := tripKey(l.Value)
			if prev, ok := byID[l.ID]; ok && prev != k {
				f.Close()
				t.Fatalf("output %s written as %s, then as %s", l.ID, prev, k)
			}
			byID[l.ID] = k
		}
		f.Close()
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
	args, _, want := testArgs(t, 1500, 16, "-k", "1")
	bin := exampletest.Build(t, "transport")
	data := t.TempDir()
	args = append(args, "-data", data, "-rate", "60000") // the input lasts about 2 s: the kills fall in it
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("%d trips; kill points seeded with %d", len(want.Trips), seed)
	for range 4 {
		p := exampletest.Spawn(t, bin, append(args, "-http", exampletest.FreePort(t))...)
		time.Sleep(time.Duration(100+rng.IntN(900)) * time.Millisecond)
		if err := p.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		p.Wait()
	}
	p := exampletest.Start(t, bin, append(args, "-http", exampletest.FreePort(t))...)
	p.WaitURL(t)
	waitComplete(t, p.Base, len(want.Trips))
	all := func(m map[pipeline.WindowKey]pipeline.Cell) map[pipeline.WindowKey]counts {
		out, _ := published(m, 1)
		return out
	}
	sameEntries(t, "od", pages(t, p.Base, "od", "", 100000, 1), all(want.Hourly))
	sameEntries(t, "od-day", pages(t, p.Base, "od-day", "", 100000, 1), all(want.Daily))
	got := readTrips(t, data)
	if len(got) != len(want.Trips) {
		t.Fatalf("trips file: %d trips, want %d", len(got), len(want.Trips))
	}
	for _, d := range want.Trips {
		if !got[tripKey(d)] {
			t.Fatalf("trips file lacks %+v", d)
		}
	}
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
