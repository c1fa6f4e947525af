package main

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/connectors/gen"
)

// buildExample compiles the example once per test binary.
func buildExample(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "wordcount")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type proc struct {
	cmd    *exec.Cmd
	base   string
	exited chan struct{} // closed when the process has exited; err is then set
	err    error
}

// wait waits for the process to exit and returns its error.
func (p *proc) wait() error {
	<-p.exited
	return p.err
}

// spawn starts the example as a subprocess and waits for its URLs.
func spawn(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, exited: make(chan struct{})}
	urls := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`(http://127\.0\.0\.1:\d+)/v1/views/total`)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case urls <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	select {
	case p.base = <-urls:
	case <-p.exited:
		t.Fatalf("example exited before serving: %v\n%s", p.err, stderr.String())
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("example did not print its URLs\n%s", stderr.String())
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.exited
	})
	return p
}

type clusterState struct {
	Readers []struct {
		Events    int64
		Position  int64
		Committed int64
		Done      bool
	}
	Fragments []struct {
		Events     int64
		Replayed   int64
		Duplicates int64 `json:"duplicate_batches"`
		Epoch      uint64
	}
}

func waitFinished(t *testing.T, base string, n int64) clusterState {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		var st clusterState
		getJSON(t, base+"/v1/cluster", &st)
		done := true
		for _, r := range st.Readers {
			done = done && r.Done
		}
		var total struct{ Value int64 }
		getJSON(t, base+"/v1/views/total", &total)
		if done && total.Value == n {
			return st
		}
		if total.Value > n {
			t.Fatalf("total %d exceeds %d: counted twice", total.Value, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("not finished in 90s")
	return clusterState{}
}

func sequentialCounts(n int64, partitions int, seed uint64) map[string]int64 {
	src, _ := gen.New(gen.Config{Partitions: partitions, Seed: seed, Events: n}, GenWord)
	want := map[string]int64{}
	for p := range partitions {
		for o := range src.Limit(p) {
			Words(src.Event(p, o).Text, func(w string) { want[w]++ })
		}
	}
	return want
}

// The example is killed with SIGKILL at random points and restarted on the
// same data directory each time; the final view equals a run without
// crashes, exactly.
func TestSIGKILLRestartsAreExact(t *testing.T) {
	const n = 4_000_000
	bin := buildExample(t)
	data := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("kill points seeded with %d", seed)
	args := []string{"-events", fmt.Sprint(n), "-seed", "7", "-data", data, "-progress", "0", "-log-level", "warn",
		"-checkpoint-interval", "100ms"}
	kills := 0
	for kills < 5 {
		p := spawn(t, bin, append(args, "-http", freePort(t))...)
		time.Sleep(time.Duration(50+rng.IntN(500)) * time.Millisecond)
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		p.wait()
		kills++
	}
	p := spawn(t, bin, append(args, "-http", freePort(t))...)
	st := waitFinished(t, p.base, n)
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
	got := allWords(t, p.base)
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
	const n = 3_000_000
	bin := buildExample(t)
	data := t.TempDir()
	args := []string{"-events", fmt.Sprint(n), "-seed", "11", "-data", data, "-progress", "0", "-log-level", "warn"}
	p := spawn(t, bin, append(args, "-http", freePort(t))...)
	time.Sleep(200 * time.Millisecond)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
		if p.err != nil {
			t.Fatalf("exit after SIGTERM: %v", p.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit 30s after SIGTERM")
	}
	p = spawn(t, bin, append(args, "-http", freePort(t))...)
	st := waitFinished(t, p.base, n)
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
	got := allWords(t, p.base)
	for w, c := range sequentialCounts(n, 4, 11) {
		if got[w] != c {
			t.Fatalf("%s = %d, want %d", w, got[w], c)
		}
	}
}
