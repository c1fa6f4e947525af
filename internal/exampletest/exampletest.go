// Package exampletest runs example binaries in tests: builds them, starts
// them as subprocesses on 127.0.0.1 or runs them in-process, waits for the
// URLs they print, and reads their JSON API.
package exampletest

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tessera-streams/tessera/cluster"
	"github.com/tessera-streams/tessera/internal/freeport"
	"github.com/tessera-streams/tessera/internal/syncbuf"
)

// built holds the examples Build compiled in this test binary: a
// package's tests share one binary per example, as linking one costs
// seconds of CPU (the example packages have up to twenty tests that start
// one). Main removes them when the tests end.
var built struct {
	sync.Mutex
	dir  string
	bins map[string]*buildOnce // by the directory built
}

type buildOnce struct {
	once sync.Once
	bin  string
	err  error
}

// Build compiles the example in the test's working directory, once per
// test binary (the package's TestMain must call Main).
func Build(t testing.TB, name string) string {
	t.Helper()
	return BuildDir(t, ".", name)
}

// BuildDir compiles the package in dir (relative to the test's working
// directory) as name, once per test binary (the package's TestMain must
// call Main).
func BuildDir(t testing.TB, dir, name string) string {
	t.Helper()
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	built.Lock()
	if built.dir == "" {
		if built.dir, err = os.MkdirTemp("", "exampletest-"); err != nil {
			built.Unlock()
			t.Fatal(err)
		}
		built.bins = map[string]*buildOnce{}
	}
	b := built.bins[abs]
	if b == nil {
		b = &buildOnce{bin: filepath.Join(built.dir, fmt.Sprintf("%s-%d", name, len(built.bins)))}
		built.bins[abs] = b
	}
	built.Unlock()
	b.once.Do(func() {
		if out, err := exec.Command("go", "build", "-ldflags=-w", "-o", b.bin, abs).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", abs, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.bin
}

// Main runs a package's tests as goleak.VerifyTestMain does (with opts),
// then removes the binaries Build made.
func Main(m *testing.M, opts ...goleak.Option) {
	goleak.VerifyTestMain(m, append(opts, goleak.Cleanup(func(code int) {
		built.Lock()
		if built.dir != "" {
			os.RemoveAll(built.dir)
		}
		built.Unlock()
		os.Exit(code)
	}))...)
}

// FreePort is a free TCP address on 127.0.0.1.
func FreePort(t testing.TB) string {
	t.Helper()
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// Proc is a running example.
type Proc struct {
	Cmd    *exec.Cmd
	Base   string        // http://127.0.0.1:port
	Exited chan struct{} // closed when the process has exited; Err is then set
	Err    error
	stderr *Buffer
	urls   chan string
}

// Wait waits for the process to exit and returns its error.
func (p *Proc) Wait() error {
	<-p.Exited
	return p.Err
}

// Stderr is what the process logged so far.
func (p *Proc) Stderr() string { return p.stderr.String() }

// urlRE matches the URL an example prints: on 127.0.0.1, or on the
// address of a network namespace a test made (see wordcount's netns test).
var urlRE = regexp.MustCompile(`(https?://(?:127\.0\.0\.1|10\.\d+\.\d+\.\d+):\d+)/`)

// Spawn starts bin with args and waits until it prints its first URL. The
// process is killed when the test ends.
func Spawn(t testing.TB, bin string, args ...string) *Proc {
	t.Helper()
	p := Start(t, bin, args...)
	p.WaitURL(t)
	return p
}

// Start starts bin with args; WaitURL waits for its URL. The process is
// killed when the test ends.
func Start(t testing.TB, bin string, args ...string) *Proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stdout, _ := cmd.StdoutPipe()
	p := &Proc{Cmd: cmd, Exited: make(chan struct{}), stderr: &Buffer{}, urls: make(chan string, 1)}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := urlRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case p.urls <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() {
		p.Err = cmd.Wait()
		close(p.Exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.Exited
	})
	return p
}

// WaitURL waits up to 60 s for the process to print its first URL, and
// sets Base.
func (p *Proc) WaitURL(t testing.TB) {
	t.Helper()
	select {
	case p.Base = <-p.urls:
	case <-p.Exited:
		t.Fatalf("example exited before serving: %v\n%s", p.Err, p.Stderr())
	case <-time.After(60 * time.Second):
		p.Cmd.Process.Kill()
		t.Fatalf("example did not print its URLs\n%s", p.Stderr())
	}
}

// ParseFlags parses args into fs, which holds an example's own flags, and
// the node flags, as the example's run does.
func ParseFlags(t testing.TB, fs *flag.FlagSet, args []string) {
	t.Helper()
	var node cluster.Flags
	if err := node.Parse(fs, args); err != nil {
		t.Fatal(err)
	}
}

// Run runs an example's run function in-process with args until the test
// ends, when it cancels it and reports its error. It returns the base URL
// (http://127.0.0.1:port) once run prints the URL of path, within 30 s.
func Run(t testing.TB, run func(ctx context.Context, args []string, stdout, stderr io.Writer) error, path string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out, errOut := &Buffer{}, &Buffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, out, errOut) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v\n%s", err, errOut.String())
		}
	})
	re := regexp.MustCompile(`(https?://127\.0\.0\.1:\d+)` + regexp.QuoteMeta(path))
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			return m[1]
		}
	}
	t.Fatalf("no URL printed:\n%s\n%s", out.String(), errOut.String())
	return ""
}

// KillRestarts runs bin with args (and a fresh -http address) kills
// times, each killed with SIGKILL once it has served for a random time
// in [min, min+spread) (seeded, and the seed logged), then starts it once
// more and returns it serving.
func KillRestarts(t testing.TB, bin string, args []string, kills int, min, spread time.Duration) *Proc {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("kill points seeded with %d", seed)
	for range kills {
		p := Spawn(t, bin, append(slices.Clone(args), "-http", FreePort(t))...)
		time.Sleep(min + time.Duration(rng.Int64N(int64(spread))))
		if err := p.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		p.Wait()
	}
	return Spawn(t, bin, append(slices.Clone(args), "-http", FreePort(t))...)
}

// StartCluster starts len(dirs) nodes of bin with args, each with its
// own name (n0, n1, ...), HTTP, gossip and remote addresses and data
// directory, joined to the first and expecting them all, and waits until
// each serves.
func StartCluster(t testing.TB, bin string, args []string, dirs []string) []*Proc {
	t.Helper()
	gossip := make([]string, len(dirs))
	for i := range gossip {
		gossip[i] = FreePort(t)
	}
	procs := make([]*Proc, len(dirs))
	for i := range procs {
		a := append(slices.Clone(args), "-node", fmt.Sprintf("n%d", i), "-http", FreePort(t), "-gossip", gossip[i],
			"-remote", FreePort(t), "-expect", fmt.Sprint(len(dirs)), "-data", dirs[i])
		if i > 0 {
			a = append(a, "-join", gossip[0])
		}
		procs[i] = Start(t, bin, a...)
	}
	for _, p := range procs {
		p.WaitURL(t)
	}
	return procs
}

// TryJSON decodes the JSON answer of GET url into v, and says whether it
// could: false unless it answered 200 (a node restarting or being failed
// over answers otherwise, or not at all).
func TryJSON(url string, v any) bool {
	resp, err := http.Get(url)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(v) == nil
}

// GetJSON decodes the JSON answer of GET url, which must be 200.
//
// A 503 is asked again, as a client does that honours its Retry-After (a
// fragment restoring, or a node that is still starting, answers nothing
// for a moment), for up to 20 s.
func GetJSON(t testing.TB, url string, into any) {
	t.Helper()
	var body []byte
	for deadline := time.Now().Add(20 * time.Second); ; {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
		}
		break
	}
	if err := json.Unmarshal(body, into); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// Buffer is an io.Writer safe for concurrent writers and readers.
type Buffer = syncbuf.Buffer

// ClusterState is the part of GET /v1/cluster the tests read.
type ClusterState struct {
	Readers []struct {
		Partition int
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
		Watermark  *time.Time
	}
}

// WaitDone polls /v1/cluster until every reader is done and done(state)
// holds, for up to 90 s.
func WaitDone(t testing.TB, base string, done func(ClusterState) bool) ClusterState {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		var st ClusterState
		GetJSON(t, base+"/v1/cluster", &st)
		all := true
		for _, r := range st.Readers {
			all = all && r.Done
		}
		if all && (done == nil || done(st)) {
			return st
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("not finished in 90s")
	return ClusterState{}
}
