package actor

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pa "github.com/asynkron/protoactor-go/actor"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/internal/wire"
	"github.com/tessera-streams/tessera/splice"
)

// A fragment's owner a and its standby b are two of five members. A
// checkpoint b confirmed must not be released — its outputs sent, its
// source committed — until a majority of the five knows of it
// (recovery.Known): the others are asked, and one answer (c's) releases
// it. Without it, a partition that cut a and b off together let them
// settle checkpoints no other member heard of, and the majority side
// started the fragment from an older copy under the same output ids (sim
// visits seed 8311). A placement over a, b and c releases a checkpoint
// that waits, with no answer; where a and b are two of three, nothing is
// asked.
//
// The other members are a process of their own (membersEnv) that plays
// b's replica (it confirms every copy, as a synced standby does) and c's,
// d's and e's (it reports the news and answers as the test says).
func TestReleaseWaitsForAMajorityToKnow(t *testing.T) {
	t.Run("an answer releases it", func(t *testing.T) {
		k := startKnown(t, "c", "d", "e")
		news := k.asked(t)
		k.unreleased(t, "only the owner and its standby know")
		k.order("answer c " + news)
		k.released(t, "c answered")
	})
	t.Run("a placement over three releases it", func(t *testing.T) {
		k := startKnown(t, "c", "d", "e")
		k.asked(t)
		k.unreleased(t, "only the owner and its standby know")
		cl := *k.e.cfg.Cluster
		cl.Epoch++
		cl.Remotes = map[string]string{"a": cl.Remote, "b": k.addr, "c": k.addr}
		if err := k.e.Place(&cl); err != nil {
			t.Fatal(err)
		}
		k.released(t, "the placement dropped d and e")
	})
	t.Run("two of three release it at once", func(t *testing.T) {
		k := startKnown(t, "c")
		k.released(t, "the owner and its standby are a majority")
		k.order("asked?")
		if got := k.line(t); got != "asked 0" {
			t.Fatalf("the members were asked: %q", got)
		}
	})
}

// knownRig is an engine on member a, owning the one fragment of a count,
// and the process that plays the other members.
type knownRig struct {
	e     *Engine
	addr  string // the other members' remote address
	child child
}

// membersEnv names the other members' process of
// TestReleaseWaitsForAMajorityToKnow (runMembers).
const membersEnv = "TESSERA_ACTOR_TEST_MEMBERS"

func startKnown(t *testing.T, others ...string) *knownRig {
	t.Helper()
	k := &knownRig{addr: freeAddr(t)}
	k.startMembers(t)
	addr := freeAddr(t)
	remotes := map[string]string{"a": addr, "b": k.addr}
	for _, o := range others {
		remotes[o] = k.addr
	}
	var err error
	k.e, err = Start(knownPlan(t), Config{Store: diskStore(t), Logger: quiet(), CheckpointInterval: 20 * time.Millisecond,
		Cluster: &ClusterConfig{Self: "a", Remote: addr, Epoch: 3, Fragments: []string{"a"}, Standbys: []string{"b"},
			Readers: []string{"a"}, Remotes: remotes}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.e.Stop) // before the members' process stops
	return k
}

// knownPlan is the flow of the known rig: a total count, one fragment.
func knownPlan(t *testing.T) *flowcore.Plan {
	t.Helper()
	f := flows.New("known", flows.WithFragments(1))
	src, _ := gen.New(gen.Config{Partitions: 1, Seed: 5, Events: 300}, word)
	flows.AggregateView(flows.KeyBy(flows.From(f, "gen", src), flows.Identity[string]).Values(),
		"total", splice.Count[string](), flows.Identity[string])
	plan, err := flowcore.Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	return plan
}

// startMembers starts the process that plays the other members, on
// k.addr, and waits until its remote listens.
func (k *knownRig) startMembers(t *testing.T) {
	t.Helper()
	cmd, stdin, stdout := execNode(t, membersEnv, k.addr)
	k.child = child{stdin, stdout}
	t.Cleanup(func() {
		stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("the members' process: %v", err)
		}
	})
	if got := k.line(t); got != "ready" {
		t.Fatalf("the members' process says %q", got)
	}
}

func (k *knownRig) order(o string) { fmt.Fprintln(k.child.stdin, o) }

// line is the members' process's next line.
func (k *knownRig) line(t *testing.T) string {
	t.Helper()
	s, err := k.child.out.ReadString('\n')
	if err != nil {
		t.Fatalf("the members' process: %v", err)
	}
	return strings.TrimSpace(s)
}

// asked waits for the fragment to ask the members that do not know of its
// confirmed checkpoint, and returns the news: epoch and the owner's
// address.
func (k *knownRig) asked(t *testing.T) string {
	t.Helper()
	k.order("wait asked")
	got := k.line(t)
	news, ok := strings.CutPrefix(got, "asked 0 ")
	if !ok {
		t.Fatalf("the members' process says %q, want news of fragment 0", got)
	}
	return news
}

// unreleased checks that nothing of the fragment was released: the
// reader committed nothing of its partition.
func (k *knownRig) unreleased(t *testing.T, why string) {
	t.Helper()
	if got := k.e.layout.Load().rstats[0].Committed.Load(); got != -1 {
		t.Fatalf("%s: the partition is committed to %d, want nothing released", why, got)
	}
}

// released waits for the fragment's checkpoint to be released: the
// reader commits its partition.
func (k *knownRig) released(t *testing.T, why string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); k.e.layout.Load().rstats[0].Committed.Load() < 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%s: nothing released in 30s", why)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runMembers plays the members of a TestReleaseWaitsForAMajorityToKnow
// cluster but a, on the remote address spec names: b's replica confirms
// every copy, and news that asks for an answer is kept, as are reports of
// a placement (TestSilentMemberIsToldOnceItAnswers). Orders on stdin:
// "wait asked" prints the first news kept ("asked <fragment> <epoch>
// <owner's address>"), waiting for it at most 30 s; "wait report" prints
// the first report ("report <placement> <from> <caught>"), waiting as
// long; "asked?" prints "asked N", the number kept; "answer <member>
// <epoch> <address>" says that member knows of the fragment's checkpoint.
// It stops when stdin closes.
func runMembers(spec string) {
	var addr string
	if err := json.Unmarshal([]byte(spec), &addr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	sys := pa.NewActorSystem()
	r, err := startRemote(sys, addr, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var (
		mu             sync.Mutex
		asked, reports []*wire.Settled
		more           = make(chan struct{}, 1)
	)
	_, err = sys.Root.SpawnNamed(pa.PropsFromFunc(func(c pa.Context) {
		switch m := c.Message().(type) {
		case *wire.CheckpointChunk:
			if m.Last && m.ReplyTo != "" {
				c.Send(pa.NewPID(m.ReplyTo, "known/kg-000"), &wire.Copied{Fragment: m.Fragment, Epoch: m.Epoch, From: "b"})
			}
		case *wire.Settled:
			mu.Lock()
			if m.ReplyTo != "" {
				asked = append(asked, m)
			}
			if m.Placement != 0 {
				reports = append(reports, m)
			}
			mu.Unlock()
			select {
			case more <- struct{}{}:
			default:
			}
		}
	}), "known/replica")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// first is the first message of *kept, waiting for one at most 30 s
	// (nil if none came).
	first := func(kept *[]*wire.Settled) *wire.Settled {
		deadline := time.After(30 * time.Second)
		for {
			mu.Lock()
			if len(*kept) > 0 {
				m := (*kept)[0]
				mu.Unlock()
				return m
			}
			mu.Unlock()
			select {
			case <-more:
			case <-deadline:
				return nil
			}
		}
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		o := strings.Fields(in.Text())
		switch {
		case len(o) == 2 && o[0] == "wait" && o[1] == "asked":
			if m := first(&asked); m == nil {
				fmt.Println("asked nothing in 30s")
			} else {
				fmt.Println("asked", m.Fragments[0], m.Epochs[0], m.ReplyTo)
			}
		case len(o) == 2 && o[0] == "wait" && o[1] == "report":
			if m := first(&reports); m == nil {
				fmt.Println("no report in 30s")
			} else {
				fmt.Println("report", m.Placement, m.From, m.Caught)
			}
		case len(o) == 1 && o[0] == "asked?":
			mu.Lock()
			fmt.Println("asked", len(asked))
			mu.Unlock()
		case len(o) == 4 && o[0] == "answer":
			epoch, err := strconv.ParseUint(o[2], 10, 64)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			sys.Root.Send(pa.NewPID(o[3], "known/kg-000"), &wire.Known{Fragment: 0, Epoch: epoch, Member: o[1]})
		}
	}
	r.Shutdown(false)
	sys.Shutdown()
	os.Exit(0)
}
