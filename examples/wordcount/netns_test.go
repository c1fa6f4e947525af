//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tessera-streams/tessera/internal/exampletest"
)

// A real network partition: three nodes, each in a network namespace of
// its own, joined by veth pairs to a bridge in a fourth namespace. One
// node's link is cut (its veth set down on the bridge side) mid-stream:
// both sides declare the other dead, the two survivors (a majority of
// three) take over its fragments and partitions, while the cut node, with
// no majority, stops owning (fenced: cluster's doc, "Quorum"). Healed,
// the cut node rejoins, takes fragments back by hand-off, and every node
// answers the exact count.
//
// It needs root and iproute2's ip (TestNetnsOneWayCutExact iptables too);
// without them it skips, except with CI set as root, where it fails. The
// namespaces' addresses (10.213.0.0/24) exist only inside them; the test
// reaches the nodes from the bridge's namespace.
func TestNetnsPartitionHealExact(t *testing.T) {
	t.Parallel() // its namespaces and addresses are its own
	const n = 2_000_000
	const seed = 37
	nw, procs := startNetnsCluster(t, n, seed)
	c := nw.client(t)

	type fragment struct {
		Fragment int
		Owner    string
	}
	type state struct {
		Members   []struct{ Name string }
		Fragments []fragment
	}
	// Mid-stream: the cluster has counted some but not all.
	until(t, 20*time.Second, "the stream to be under way", func() bool {
		var total struct{ Value int64 }
		return c.get(procs[0].Base+"/v1/views/total", &total) && total.Value >= n/10
	})
	var owned state
	c.mustGet(t, procs[2].Base+"/v1/cluster?scope=local", &owned)
	if len(owned.Fragments) == 0 {
		t.Fatal("n2 owned no fragment before the cut")
	}

	nw.cut(t, 2)
	cutAt := time.Now()
	until(t, 20*time.Second, "n0 and n1 to take over n2's fragments", func() bool {
		var st state
		if !c.get(procs[0].Base+"/v1/cluster", &st) || len(st.Members) != 2 || len(st.Fragments) != 32 {
			return false
		}
		for _, f := range st.Fragments {
			if f.Owner != "n0" && f.Owner != "n1" {
				return false
			}
		}
		return true
	})
	// The fragments n0 and n1 took over gather the copies of the live
	// members before they serve (a round trip): the view says so (503,
	// retry_after_sec) until then.
	var during struct{ Value int64 }
	until(t, 20*time.Second, "n0 to serve the total with n2 cut off", func() bool {
		return c.get(procs[0].Base+"/v1/views/total", &during)
	})
	t.Logf("n2 cut off with %d fragments; %v later the others own all 32, at total %d of %d",
		len(owned.Fragments), time.Since(cutAt).Round(time.Millisecond), during.Value, n)

	nw.heal(t, 2)
	healAt := time.Now()
	for i, p := range procs {
		until(t, 30*time.Second, fmt.Sprintf("n%d to see three members after the heal", i), func() bool {
			var st state
			return c.get(p.Base+"/v1/cluster?scope=local", &st) && len(st.Members) == 3
		})
	}
	c.allExact(t, procs, n, seed, healAt)
	// The cut node, and only it, stopped owning for want of a majority.
	for i, p := range procs {
		if fenced := c.fenced(t, p); fenced != (i == 2) {
			t.Errorf("n%d fenced: %v, want %v\n%s", i, fenced, i == 2, p.Stderr())
		}
	}
}

// fenced reports whether a node's history records that it stopped owning
// for want of a majority (cluster's doc, "Quorum").
func (c nsClient) fenced(t *testing.T, p *exampletest.Proc) bool {
	t.Helper()
	var h struct{ Timeline []struct{ Kind string } }
	c.mustGet(t, p.Base+"/v1/cluster/history?scope=local", &h)
	return slices.ContainsFunc(h.Timeline, func(ev struct{ Kind string }) bool { return ev.Kind == "fenced" })
}

// TestNetnsOneWayCutExact cuts one direction of one link with iptables:
// nothing from n0 reaches n2 (dropped on n2's way in), while n2 still
// reaches n0 and n1 reaches both. Gossip's indirect probes through n1 may
// keep all three members alive, but no TCP connection between n0 and n2
// completes (a SYN or its answer is lost), so batches, acknowledgements
// and checkpoint copies between them stall or go round by failover. Held
// for longer than failure detection, then lifted: every node answers the
// exact count.
func TestNetnsOneWayCutExact(t *testing.T) {
	t.Parallel()
	const n = 2_000_000
	const seed = 41
	nw, procs := startNetnsCluster(t, n, seed, "iptables")
	c := nw.client(t)
	until(t, 20*time.Second, "the stream to be under way", func() bool {
		var total struct{ Value int64 }
		return c.get(procs[0].Base+"/v1/views/total", &total) && total.Value >= n/10
	})
	rule := []string{"INPUT", "-s", nw.addr(0), "-j", "DROP"}
	nw.iptables(t, 2, append([]string{"-A"}, rule...)...)
	cutAt := time.Now()
	var at struct{ Value int64 }
	c.mustGet(t, procs[1].Base+"/v1/views/total", &at)
	// Longer than the nodes' failure detection and rewind timeouts, so
	// that whatever they decide about the cut happens while it holds.
	time.Sleep(8 * time.Second)
	type member struct{ Name string }
	var seen []string
	for i, p := range procs {
		var st struct{ Members []member }
		if c.get(p.Base+"/v1/cluster?scope=local", &st) {
			seen = append(seen, fmt.Sprintf("n%d sees %d members", i, len(st.Members)))
		}
	}
	nw.iptables(t, 2, append([]string{"-D"}, rule...)...)
	healAt := time.Now()
	t.Logf("n0 -> n2 cut at total %d for %v; %s", at.Value, healAt.Sub(cutAt).Round(time.Millisecond), strings.Join(seen, ", "))
	for i, p := range procs {
		until(t, 30*time.Second, fmt.Sprintf("n%d to see three members after the heal", i), func() bool {
			var st struct{ Members []member }
			return c.get(p.Base+"/v1/cluster?scope=local", &st) && len(st.Members) == 3
		})
	}
	c.allExact(t, procs, n, seed, healAt)
	var fenced []string
	for i, p := range procs {
		if c.fenced(t, p) {
			fenced = append(fenced, fmt.Sprintf("n%d", i))
		}
	}
	t.Logf("stopped owning for want of a majority during the cut: %v", fenced)
}

// startNetnsCluster starts three wordcount nodes, one in each node
// namespace of a new netnsNet, counting the generator's first n events of
// seed at 300,000 a second, and waits for their HTTP servers. tools are
// commands the test needs beside ip.
func startNetnsCluster(t *testing.T, n int64, seed uint64, tools ...string) (*netnsNet, []*exampletest.Proc) {
	t.Helper()
	nw := newNetnsNet(t, 3, tools...)
	bin := exampletest.Build(t, "wordcount")
	procs := make([]*exampletest.Proc, 3)
	for i := range procs {
		addr := nw.addr(i)
		args := []string{"netns", "exec", nw.nodes[i], bin,
			"-node", fmt.Sprintf("n%d", i), "-http", addr + ":8080", "-gossip", addr + ":7946", "-remote", addr + ":8090",
			"-expect", "3", "-data", t.TempDir(), "-progress", "0", "-log-level", "warn",
			"-events", fmt.Sprint(n), "-seed", fmt.Sprint(seed), "-fragments", "32", "-rate", "300000", "-checkpoint-interval", "200ms"}
		if i > 0 {
			args = append(args, "-join", nw.addr(0)+":7946")
		}
		procs[i] = exampletest.Start(t, "ip", args...)
	}
	for _, p := range procs {
		p.WaitURL(t)
	}
	return nw, procs
}

// allExact waits until every node answers the exact count, and checks
// that none exited on the way.
func (c nsClient) allExact(t *testing.T, procs []*exampletest.Proc, n int64, seed uint64, healAt time.Time) {
	t.Helper()
	for i, p := range procs {
		c.waitExact(t, p.Base, n, seed)
		t.Logf("n%d exact %v after the heal", i, time.Since(healAt).Round(time.Millisecond))
	}
	for i, p := range procs {
		select {
		case <-p.Exited:
			t.Fatalf("n%d exited: %v\n%s", i, p.Err, p.Stderr())
		default:
		}
	}
}

// netnsNet is a bridge namespace and one namespace per node, each node's
// namespace joined to the bridge by a veth pair: eth0 inside the node's,
// bI on the bridge br0. All are removed when the test ends.
type netnsNet struct {
	bridge string   // namespace of the bridge, 10.213.0.254
	nodes  []string // namespace of node i, 10.213.0.(i+1)
}

const netnsPrefix = "tessera-test-"

func (nw *netnsNet) addr(i int) string { return fmt.Sprintf("10.213.0.%d", i+1) }

// newNetnsNet makes the namespaces and links, or skips (fails with CI set
// and root) where it cannot: not root, or without ip or one of tools.
func newNetnsNet(t *testing.T, nodes int, tools ...string) *netnsNet {
	t.Helper()
	cannot := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if os.Getenv("CI") != "" && os.Geteuid() == 0 {
			t.Fatalf("CI as root must run the network-namespace test: %s", msg)
		}
		t.Skipf("network-namespace test not run: %s (it needs root, iproute2's ip and, for the one-way cut, iptables; CI runs it as root)", msg)
	}
	if os.Geteuid() != 0 {
		cannot("not root")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			cannot("no %s command: %v", tool, err)
		}
	}
	removeStaleNetns(t)
	// Unique per run: the test's pid and a random suffix.
	id := fmt.Sprintf("%s%d-%x-", netnsPrefix, os.Getpid(), rand.Uint32())
	nw := &netnsNet{bridge: id + "br"}
	add := func(ns string) error {
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			return fmt.Errorf("ip netns add %s: %v: %s", ns, err, strings.TrimSpace(string(out)))
		}
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", ns, err, out)
			}
		})
		return nil
	}
	if err := add(nw.bridge); err != nil {
		// Root without the right to make namespaces (a container without
		// CAP_SYS_ADMIN) is the machine's limit, not a failure of the test.
		t.Skipf("network-namespace test not run: this machine refuses namespaces: %v", err)
	}
	ip(t, "-n", nw.bridge, "link", "set", "lo", "up")
	ip(t, "-n", nw.bridge, "link", "add", "br0", "type", "bridge")
	ip(t, "-n", nw.bridge, "addr", "add", "10.213.0.254/24", "dev", "br0")
	ip(t, "-n", nw.bridge, "link", "set", "br0", "up")
	for i := range nodes {
		ns := fmt.Sprintf("%sn%d", id, i)
		if err := add(ns); err != nil {
			t.Fatal(err)
		}
		nw.nodes = append(nw.nodes, ns)
		// Links live inside the namespaces: deleting those removes them,
		// and their names clash with nothing outside.
		veth := fmt.Sprintf("b%d", i)
		ip(t, "-n", nw.bridge, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
		ip(t, "-n", nw.bridge, "link", "set", veth, "master", "br0")
		ip(t, "-n", nw.bridge, "link", "set", veth, "up")
		ip(t, "-n", ns, "link", "set", "lo", "up")
		ip(t, "-n", ns, "addr", "add", nw.addr(i)+"/24", "dev", "eth0")
		ip(t, "-n", ns, "link", "set", "eth0", "up")
	}
	return nw
}

// removeStaleNetns deletes the namespaces an earlier run of this test
// left behind when it could not clean up (killed, or timed out): those
// whose pid no longer runs.
func removeStaleNetns(t *testing.T) {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), netnsPrefix)
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(strings.SplitN(rest, "-", 2)[0])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); err == nil {
			continue // another run, still going
		}
		if out, err := exec.Command("ip", "netns", "del", e.Name()).CombinedOutput(); err != nil {
			t.Logf("remove stale namespace %s: %v: %s", e.Name(), err, out)
		}
	}
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// cut sets node i's veth down on the bridge: nothing passes either way.
func (nw *netnsNet) cut(t *testing.T, i int) {
	t.Helper()
	ip(t, "-n", nw.bridge, "link", "set", fmt.Sprintf("b%d", i), "down")
}

// heal sets node i's veth up again.
func (nw *netnsNet) heal(t *testing.T, i int) {
	t.Helper()
	ip(t, "-n", nw.bridge, "link", "set", fmt.Sprintf("b%d", i), "up")
}

// iptables runs iptables with args in node i's namespace, or fails the
// test.
func (nw *netnsNet) iptables(t *testing.T, i int, args ...string) {
	t.Helper()
	full := append([]string{"netns", "exec", nw.nodes[i], "iptables", "-w"}, args...)
	if out, err := exec.Command("ip", full...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(full, " "), err, out)
	}
}

// nsClient is an HTTP client whose connections are made inside the
// bridge's namespace.
type nsClient struct{ *http.Client }

func (nw *netnsNet) client(t *testing.T) nsClient {
	path := filepath.Join("/run/netns", nw.bridge)
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		res := make(chan result, 1)
		go func() {
			// The thread moves to the namespace and is never unlocked:
			// it ends with this goroutine, and no other goroutine runs
			// in the namespace.
			runtime.LockOSThread()
			f, err := os.Open(path)
			if err != nil {
				res <- result{nil, err}
				return
			}
			defer f.Close()
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				res <- result{nil, fmt.Errorf("setns %s: %w", path, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr) // the socket is made on this thread
			res <- result{c, err}
		}()
		r := <-res
		return r.c, r.err
	}
	tr := &http.Transport{DialContext: dial, DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return nsClient{&http.Client{Transport: tr, Timeout: 5 * time.Second}}
}

// get decodes the JSON answer of GET url into v, and says whether it
// could (an answer 200).
func (c nsClient) get(url string, v any) bool {
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(v) == nil
}

func (c nsClient) mustGet(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// waitExact is the cluster tests' waitExact over c: base's global total
// reaches n, never more, and every word equals a sequential count.
func (c nsClient) waitExact(t *testing.T, base string, n int64, seed uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var total struct{ Value int64 }
		c.get(base+"/v1/views/total", &total)
		if total.Value == n {
			break
		}
		if total.Value > n {
			t.Fatalf("%s: total %d exceeds %d: counted twice", base, total.Value, n)
		}
		if time.Now().After(deadline) {
			var st json.RawMessage
			c.get(base+"/v1/cluster", &st)
			t.Fatalf("%s: total %d after 30s, want %d; cluster state: %s", base, total.Value, n, st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var es entries
	c.mustGet(t, base+"/v1/views/words?limit=10000000", &es)
	if es.More {
		t.Fatalf("%s: words view has more than one page", base)
	}
	got := map[string]int64{}
	for _, e := range es.Entries {
		got[e.Key] = e.Value
	}
	want := sequentialCounts(n, 4, seed)
	if len(got) != len(want) {
		t.Fatalf("%s: %d words, want %d", base, len(got), len(want))
	}
	for w, cnt := range want {
		if got[w] != cnt {
			t.Fatalf("%s: %s = %d, want %d", base, w, got[w], cnt)
		}
	}
}
