package main

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/internal/exampletest"
)

// waitFinished waits until every reader is done and the total is n. A
// query that fails meanwhile (a 504 while the restarted node replays on a
// loaded machine) is asked again, as waitExact does.
func waitFinished(t *testing.T, base string, n int64) exampletest.ClusterState {
	t.Helper()
	return exampletest.WaitDone(t, base, func(exampletest.ClusterState) bool {
		var total struct{ Value int64 }
		if !exampletest.TryJSON(base+"/v1/views/total", &total) {
			return false
		}
		if total.Value > n {
			t.Fatalf("total %d exceeds %d: counted twice", total.Value, n)
		}
		return total.Value == n
	})
}

// sequentialCounts is the count of every word of the generator's first n
// events, counted in order. Callers must not change the map: it is
// computed once per input (millions of events cost seconds under the race
// detector, and some tests compare several nodes with the same input).
func sequentialCounts(n int64, partitions int, seed uint64) map[string]int64 {
	in := genInput{n, partitions, seed}
	sequential.Lock()
	c := sequential.counts[in]
	if c == nil {
		c = &counted{}
		sequential.counts[in] = c
	}
	sequential.Unlock()
	c.once.Do(func() { c.words = countSequentially(n, partitions, seed) })
	return c.words
}

// countSequentially counts the words of the generator's first n events in
// order. The generator draws each line from a small vocabulary, so it
// counts the lines first and splits each distinct one into words once: a
// sequential count is then one map update per event, which matters under
// the race detector (the tests count about twenty million events).
func countSequentially(n int64, partitions int, seed uint64) map[string]int64 {
	src, _ := gen.New(gen.Config{Partitions: partitions, Seed: seed, Events: n}, GenWord)
	lines := map[string]int64{}
	for p := range partitions {
		for o := range src.Limit(p) {
			lines[src.Event(p, o).Text]++
		}
	}
	words := map[string]int64{}
	for text, k := range lines {
		Words(text, func(w string) { words[w] += k })
	}
	return words
}

// sequential holds the counts sequentialCounts computed.
var sequential = struct {
	sync.Mutex
	counts map[genInput]*counted
}{counts: map[genInput]*counted{}}

type genInput struct {
	n          int64
	partitions int
	seed       uint64
}

type counted struct {
	once  sync.Once
	words map[string]int64
}

// The example is killed with SIGKILL at random points and restarted on the
// same data directory each time; the final view equals a run without
// crashes, exactly.
func TestSIGKILLRestartsAreExact(t *testing.T) {
	t.Parallel()
	const n = 4_000_000
	bin := exampletest.Build(t, "wordcount")
	data := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("kill points seeded with %d", seed)
	args := []string{"-events", fmt.Sprint(n), "-seed", "7", "-data", data, "-progress", "0", "-log-level", "warn",
		"-checkpoint-interval", "100ms"}
	kills := 0
	for kills < 5 {
		p := exampletest.Spawn(t, bin, append(args, "-http", exampletest.FreePort(t))...)
		// The kill points count from when the run counts events, not from
		// its start: on a loaded machine a start can take longer than
		// every kill point, and no checkpoint would ever survive.
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			var total struct{ Value int64 }
			if exampletest.TryJSON(p.Base+"/v1/views/total", &total) && total.Value > 0 {
				break
			}
		}
		time.Sleep(time.Duration(50+rng.IntN(500)) * time.Millisecond)
		if err := p.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		p.Wait()
		kills++
	}
	p := exampletest.Spawn(t, bin, append(args, "-http", exampletest.FreePort(t))...)
	st := waitFinished(t, p.Base, n)
	var read, epochs int64
	for _, r := range st.Readers {
		read += r.Events
	}
	for _, f := range st.Fragments {
		epochs += int64(f.Epoch)
	}
	t.Logf("after %d kills the last run read %d of %d events; %d checkpoint epochs in all", kills, read, n, epochs)
	if read >= n {
		t.Fatalf("the last run read everything (%d events): no checkpoint survived the kills", read)
	}
	got := allWords(t, p.Base)
	want := sequentialCounts(n, 4, 7)
	if len(got) != len(want) {
		t.Fatalf("%d words after %d kills, want %d", len(got), kills, len(want))
	}
	for w, c := range want {
		if got[w] != c {
			t.Fatalf("after %d kills: %s = %d, want %d", kills, w, got[w], c)
		}
	}
}

// SIGTERM takes a final checkpoint and exits 0; the next start replays
// nothing and finishes exactly.
func TestSIGTERMThenRestartReplaysNothing(t *testing.T) {
	t.Parallel()
	const n = 3_000_000
	bin := exampletest.Build(t, "wordcount")
	data := t.TempDir()
	args := []string{"-events", fmt.Sprint(n), "-seed", "11", "-data", data, "-progress", "0", "-log-level", "warn"}
	p := exampletest.Spawn(t, bin, append(args, "-http", exampletest.FreePort(t))...)
	time.Sleep(200 * time.Millisecond)
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited:
		if p.Err != nil {
			t.Fatalf("exit after SIGTERM: %v", p.Err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit 30s after SIGTERM")
	}
	p = exampletest.Spawn(t, bin, append(args, "-http", exampletest.FreePort(t))...)
	st := waitFinished(t, p.Base, n)
	// Replayed counts every source offset a fragment received that it had
	// applied before: a reader that started below any fragment's checkpoint
	// would show here.
	var read, replayed, dups int64
	for _, r := range st.Readers {
		read += r.Events
	}
	for _, f := range st.Fragments {
		replayed += f.Replayed
		dups += f.Duplicates
		if f.Epoch == 0 {
			t.Fatal("a fragment has no checkpoint")
		}
	}
	if read == n || read == 0 {
		t.Fatalf("the second run read %d of %d events: the stop was not mid-stream", read, n)
	}
	if replayed != 0 || dups != 0 {
		t.Fatalf("after a clean stop the restart replayed %d offsets in %d duplicate batches", replayed, dups)
	}
	got := allWords(t, p.Base)
	for w, c := range sequentialCounts(n, 4, 11) {
		if got[w] != c {
			t.Fatalf("%s = %d, want %d", w, got[w], c)
		}
	}
}
