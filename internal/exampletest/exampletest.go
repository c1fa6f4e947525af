// Package exampletest runs example binaries in tests: builds them, starts
// them as subprocesses on 127.0.0.1 or runs them in-process, waits for the
// URLs they print, and reads their JSON API.
package exampletest

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tessera-streams/tessera/cluster"
	"github.com/tessera-streams/tessera/internal/freeport"
	"github.com/tessera-streams/tessera/internal/syncbuf"
)

// built holds the binaries Build compiled in this test binary: a
// package's tests share one binary per example, as linking one costs
// seconds of CPU (the example packages have up to twenty tests that start
// one).
//
// They are built into a directory that stays from one run of the
// package's tests to the next (under the system's temporary directory,
// one per package directory): go build leaves a binary that is up to date
// as it is, so a second run of the tests links nothing.
var built struct {
	sync.Mutex
	dir  string
	bins map[string]*buildOnce // by the directory or import path built
}

type buildOnce struct {
	once sync.Once
	bin  string
	err  error
}

// Build compiles the example in the test's working directory, once per
// test binary.
func Build(t testing.TB, name string) string {
	t.Helper()
	return BuildDir(t, ".", name)
}

// BuildDir compiles the package in dir (relative to the test's working
// directory) as name, once per test binary.
func BuildDir(t testing.TB, dir, name string) string {
	t.Helper()
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return build(t, abs, name)
}

// BuildPackage compiles the main package of the module's build list at
// importPath (a dependency's command, such as nats-server) as name, once
// per test binary. Tests run a broker this way, outside the test process,
// where the race detector would multiply its CPU without looking at our
// code.
func BuildPackage(t testing.TB, importPath, name string) string {
	t.Helper()
	return build(t, importPath, name)
}

// build compiles pkg (a directory or an import path) as name, once per
// test binary, into the directory kept between runs: go build compares
// the build ID of the binary already there with what it would link, and
// links nothing when they agree.
func build(t testing.TB, pkg, name string) string {
	t.Helper()
	built.Lock()
	if built.dir == "" {
		dir, err := buildDir()
		if err != nil {
			built.Unlock()
			t.Fatal(err)
		}
		built.dir, built.bins = dir, map[string]*buildOnce{}
	}
	b := built.bins[pkg]
	if b == nil {
		b = &buildOnce{bin: filepath.Join(built.dir, name+"-"+shortHash(pkg))}
		built.bins[pkg] = b
	}
	built.Unlock()
	b.once.Do(func() {
		if out, err := exec.Command("go", "build", "-ldflags=-w", "-o", b.bin, pkg).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.bin
}

// buildDir is the directory of the binaries that the tests of the
// package in the working directory build: the same in every run of them,
// and another for every package (and every checkout), so that two test
// binaries never build into one file at once.
func buildDir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("tessera-exampletest-%d", os.Getuid()), shortHash(wd))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("example binaries: %w", err)
	}
	return dir, nil
}

// shortHash names s in a path.
func shortHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:8])
}

// Main runs a package's tests as goleak.VerifyTestMain does (with opts).
// The binaries Build made stay for the next run (see built).
func Main(m *testing.M, opts ...goleak.Option) {
	goleak.VerifyTestMain(m, opts...)
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

// NATSServer starts the module's nats-server (built once, see
// BuildPackage) with JetStream on 127.0.0.1, storing in a directory of the
// test, and returns its URL once it is ready. It runs in a process of its
// own, so it outlives the examples a test kills, and the test binary's
// race detector does not multiply the CPU of every message it stores.
// It is killed when the test ends, after the processes started later.
func NATSServer(t testing.TB) string {
	t.Helper()
	bin := BuildPackage(t, "github.com/nats-io/nats-server/v2", "nats-server")
	addr := FreePort(t)
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p := Start(t, bin, "-a", host, "-p", port, "-js", "-sd", t.TempDir())
	p.waitStderr(t, "nats-server", "Server is ready")
	return "nats://" + addr
}

// KafkaBroker starts a Kafka broker (kfake, in the process of the command
// kafkabroker, built once) on 127.0.0.1 with the topics given as
// NAME:PARTITIONS, and returns its address once it serves. A process of
// its own outlives the examples a test kills and costs no race-detector
// CPU, as NATSServer's. It is killed when the test ends, after the
// processes started later.
func KafkaBroker(t testing.TB, topics ...string) []string {
	t.Helper()
	bin := BuildPackage(t, "github.com/tessera-streams/tessera/internal/exampletest/kafkabroker", "kafkabroker")
	addr := FreePort(t)
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-port", port}
	for _, topic := range topics {
		args = append(args, "-topic", topic)
	}
	p := Start(t, bin, args...)
	p.waitStderr(t, "kafkabroker", "kafkabroker ready on "+addr)
	return []string{addr}
}

// waitStderr waits up to 30 s for the process (what) to log ready.
func (p *Proc) waitStderr(t testing.TB, what, ready string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(p.Stderr(), ready); time.Sleep(10 * time.Millisecond) {
		select {
		case <-p.Exited:
			t.Fatalf("%s exited: %v\n%s", what, p.Err, p.Stderr())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready in 30s\n%s", what, p.Stderr())
		}
	}
}

// DiffMap lists (the first ten of) the keys where got and want differ.
func DiffMap[V comparable](got, want map[string]V) string {
	var d []string
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			d = append(d, fmt.Sprintf("%s got %+v (present %v) want %+v", k, g, ok, w))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			d = append(d, fmt.Sprintf("%s got %+v, want none", k, g))
		}
	}
	slices.Sort(d)
	if len(d) > 10 {
		d = append(d[:10], fmt.Sprintf("... %d in all", len(d)))
	}
	return strings.Join(d, "; ")
}
