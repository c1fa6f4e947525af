package kafka

// Tests written as an outside user of the connector would write them: a
// flow unlike the repository's examples, run by actor.Start on a pebble
// store on disk, reading and writing a real Kafka (kfake), crashed as a
// process is crashed (SIGKILL of a child process that runs the engine) and
// checked against a plain Go model of what the topics must hold.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tessera-streams/tessera/actor"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/splice"
)

// oEvent is one purchase: a user and an item.
type oEvent struct {
	U    string `json:"u"`
	Item string `json:"item"`
}

type oCount = flows.KV[string, int64]

// oBucket re-keys a user's count update: the n-th purchase of any user
// goes to bucket n mod 4.
func oBucket(kv oCount) string { return fmt.Sprintf("b%d", kv.Value%4) }

// outsideFlow counts purchases per user, re-keys the count updates by
// bucket and counts them again; both stages' updates go to exactly-once
// sinks on checkpoints.
func outsideFlow(src flows.Source[oEvent], users, buckets flows.Sink[oCount]) *flowcore.Plan {
	f := flows.New("skew", flows.WithFragments(8))
	ev := flows.Filter(flows.From(f, "purchases", src), func(e oEvent) bool { return e.U != "" })
	perUser := flows.Count(flows.KeyBy(ev, func(e oEvent) string { return e.U })).View("users")
	flows.To(perUser.Updates(), users, flows.OnCheckpoint())
	perBucket := flows.Count(flows.KeyBy(perUser.Updates(), oBucket)).View("buckets")
	flows.To(perBucket.Updates(), buckets, flows.OnCheckpoint())
	plan, err := flowcore.Compile(f)
	if err != nil {
		panic(err)
	}
	return plan
}

// TestOutsideKafkaChild is the process the crash test kills: it runs the
// flow of outsideFlow on the store and brokers its environment names,
// reports on stdout, and waits to be killed. Run by itself it returns at
// once.
func TestOutsideKafkaChild(t *testing.T) {
	if os.Getenv("TESSERA_OUTSIDE_KAFKA") == "" {
		return
	}
	brokers := strings.Split(os.Getenv("TESSERA_OUTSIDE_KAFKA"), ",")
	ctx := context.Background()
	say := func(format string, args ...any) { fmt.Printf("OUTSIDE "+format+"\n", args...) }
	die := func(err error) {
		say("error %v", err)
		os.Exit(3)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := recovery.Open(os.Getenv("TESSERA_OUTSIDE_STORE"), nil, logger)
	if err != nil {
		die(err)
	}
	src, err := New(ctx, Config[oEvent]{Brokers: brokers, Topics: []string{"purchases"}, Group: "skew", Bounded: true})
	if err != nil {
		die(err)
	}
	eos := func(topic, flow string) *ExactlyOnceSink[oCount] {
		s, err := NewExactlyOnceSink(ctx, ExactlyOnceConfig[oCount]{SinkConfig: SinkConfig[oCount]{Brokers: brokers, Topic: topic},
			Flow: flow, ProgressPartitions: 2, TransactionTimeout: 5 * time.Second})
		if err != nil {
			die(err)
		}
		return s
	}
	users, buckets := eos("users", "skew-users"), eos("buckets", "skew-buckets")
	var mu sync.Mutex
	e, err := actor.Start(outsideFlow(src, users, buckets), actor.Config{Logger: logger, Store: store,
		CheckpointInterval: 40 * time.Millisecond, TickInterval: 5 * time.Millisecond, BatchSize: 64, PollSize: 100,
		OnDeadLetters: func(dls []flows.DeadLetter) {
			mu.Lock()
			defer mu.Unlock()
			for _, d := range dls {
				say("dead %d %d", d.Partition, d.Offset)
			}
		}})
	if err != nil {
		die(err)
	}
	say("started")
	select {
	case <-e.Drained():
	case <-e.Failed():
		die(e.Err())
	}
	say("drained")
	if err := e.Checkpoint(ctx); err != nil {
		die(err)
	}
	say("checkpointed")
	<-e.Failed()
	die(e.Err())
}

// child is a running TestOutsideKafkaChild and what it reported.
type child struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	seen  chan string
	done  chan struct{}
}

func startChild(t *testing.T, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestOutsideKafkaChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, seen: make(chan string, 1000), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			l, ok := strings.CutPrefix(sc.Text(), "OUTSIDE ")
			if !ok {
				continue
			}
			c.mu.Lock()
			c.lines = append(c.lines, l)
			c.mu.Unlock()
			select {
			case c.seen <- l:
			default:
			}
		}
	}()
	return c
}

// await waits for the child to report what, failing on an error it
// reports or after 30 s.
func (c *child) await(t *testing.T, what string) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case l := <-c.seen:
			if strings.HasPrefix(l, "error") {
				c.kill()
				t.Fatalf("the engine: %s", l)
			}
			if l == what {
				return
			}
		case <-c.done:
			t.Fatalf("the child exited before %q", what)
		case <-deadline:
			c.kill()
			t.Fatalf("30 s without %q from the child", what)
		}
	}
}

func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	<-c.done
	_ = c.cmd.Wait()
}

func (c *child) report() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lines...)
}

// A skewed topic (one hot partition, one empty, one small, one with
// malformed records) feeds a count per user, re-keyed by bucket and
// counted again, both stages written by exactly-once sinks on checkpoints.
// The process is killed in the middle of the input, again right after a
// checkpoint at the end of the input, and started a third time at the end:
// read_committed, each topic holds every count update of the model once
// (user u's updates are 1..n(u); bucket b's are 1..the number of user
// updates in b), every malformed record was dead-lettered with its offset,
// and the group's offsets reach the end only through durable checkpoints.
func TestOutsideKafkaSkewedPipelineCrashes(t *testing.T) {
	if os.Getenv("TESSERA_OUTSIDE_KAFKA") != "" {
		return
	}
	_, brokers := cluster(t, map[string]int32{"purchases": 4, "users": 3, "buckets": 2})
	rng := rand.New(rand.NewPCG(21, 22))
	perUser := map[string]int64{}
	wantDead := map[string]bool{}
	ends := map[int32]int64{}
	// write produces n records to partition p: users of the partition, one
	// of them hot, some records malformed (bad ones: "1/17").
	write := func(p int32, n int, badEvery int) {
		var vs []string
		for i := range n {
			off := ends[p] + int64(i)
			switch {
			case badEvery > 0 && i%badEvery == badEvery-1:
				vs = append(vs, fmt.Sprintf(`{"u": "p%d-broken-%d"`, p, i)) // torn JSON
				wantDead[fmt.Sprintf("%d/%d", p, off)] = true
				continue
			case badEvery > 0 && i%badEvery == badEvery/2:
				vs = append(vs, `{"u": 17}`) // the wrong type
				wantDead[fmt.Sprintf("%d/%d", p, off)] = true
				continue
			}
			u := fmt.Sprintf("p%d-u%d", p, rng.IntN(30))
			if rng.IntN(3) > 0 {
				u = fmt.Sprintf("p%d-hot", p)
			}
			b, _ := json.Marshal(oEvent{U: u, Item: fmt.Sprint(rng.IntN(100))})
			vs = append(vs, string(b))
			perUser[u]++
		}
		if len(vs) > 0 {
			produce(t, brokers, "purchases", p, vs...)
		}
		ends[p] += int64(n)
	}
	// Partition 1 stays empty.
	write(0, 2000, 0)
	write(2, 20, 0)
	write(3, 200, 23)

	dir := t.TempDir()
	env := []string{"TESSERA_OUTSIDE_KAFKA=" + strings.Join(brokers, ","), "TESSERA_OUTSIDE_STORE=" + dir}
	var reports []string
	adm := admin(t, brokers)
	ctx := context.Background()

	// Run 1: killed once a first transaction of user counts committed.
	c := startChild(t, env...)
	c.await(t, "started")
	deadline := time.Now().Add(30 * time.Second)
	for {
		offs, err := adm.ListCommittedOffsets(ctx, "users")
		if err != nil {
			t.Fatal(err)
		}
		n := int64(0)
		offs.Each(func(o kadm.ListedOffset) { n += o.Offset })
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			c.kill()
			t.Fatal("30 s without a committed transaction")
		}
		time.Sleep(2 * time.Millisecond)
	}
	c.kill()
	reports = append(reports, c.report()...)
	checkGroupBelow(t, adm, ends)

	// More input, then run 2: killed right after a checkpoint that covers
	// the end of the input.
	write(0, 1500, 0)
	write(3, 200, 23)
	c = startChild(t, env...)
	c.await(t, "checkpointed")
	c.kill()
	reports = append(reports, c.report()...)
	checkGroupBelow(t, adm, ends)

	// Run 3 starts at the end of the input.
	c = startChild(t, env...)
	c.await(t, "checkpointed")
	wantUsers, wantBuckets := map[string]bool{}, map[string]bool{}
	perBucket := map[string]int64{}
	for u, n := range perUser {
		for i := int64(1); i <= n; i++ {
			wantUsers[fmt.Sprintf("%s=%d", u, i)] = true
			perBucket[oBucket(oCount{Value: i})]++
		}
	}
	for b, n := range perBucket {
		for i := int64(1); i <= n; i++ {
			wantBuckets[fmt.Sprintf("%s=%d", b, i)] = true
		}
	}
	// The last transactions commit after the checkpoint: poll for them.
	check := func(topic string, want map[string]bool) error {
		recs := readCommitted(t, brokers, topic)
		ids := map[string]int{}
		got := map[string]int{}
		for _, r := range recs {
			ids[string(r.Key)]++
			var kv oCount
			if err := json.Unmarshal(r.Value, &kv); err != nil {
				return fmt.Errorf("%s: record %s: %v", topic, r.Key, err)
			}
			got[fmt.Sprintf("%s=%d", kv.Key, kv.Value)]++
		}
		for id, n := range ids {
			if n > 1 {
				return fmt.Errorf("%s: output %s committed %d times", topic, id, n)
			}
		}
		for v, n := range got {
			if n > 1 || !want[v] {
				return fmt.Errorf("%s: update %s committed %d times (in the model: %v)", topic, v, n, want[v])
			}
		}
		if len(got) != len(want) {
			var missing []string
			for v := range want {
				if got[v] == 0 {
					missing = append(missing, v)
				}
			}
			sort.Strings(missing)
			return fmt.Errorf("%s: %d updates committed, want %d; missing e.g. %v", topic, len(got), len(want), missing[:min(5, len(missing))])
		}
		return nil
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		err := errors.Join(check("users", wantUsers), check("buckets", wantBuckets))
		if err == nil {
			break
		}
		if strings.Contains(err.Error(), "times") || time.Now().After(deadline) {
			c.kill()
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitGroupAt(t, adm, ends)
	c.kill()
	reports = append(reports, c.report()...)

	// Dead letters: every malformed record, with its partition and offset;
	// a run reports a record at most once (a run that reads it again after
	// a crash may report it again).
	gotDead := map[string]bool{}
	run := 0
	perRun := map[string]bool{}
	for _, l := range reports {
		if l == "started" {
			run++
			continue
		}
		var p, off int64
		if _, err := fmt.Sscanf(l, "dead %d %d", &p, &off); err != nil {
			continue
		}
		k := fmt.Sprintf("%d/%d", p, off)
		if !wantDead[k] {
			t.Fatalf("dead letter %s is not a malformed record", k)
		}
		if perRun[fmt.Sprint(run, k)] {
			t.Fatalf("dead letter %s reported twice in run %d", k, run)
		}
		perRun[fmt.Sprint(run, k)] = true
		gotDead[k] = true
	}
	if len(gotDead) != len(wantDead) {
		t.Fatalf("%d malformed records dead-lettered, want %d", len(gotDead), len(wantDead))
	}
	t.Logf("%d user updates, %d bucket updates, %d dead letters", len(wantUsers), len(wantBuckets), len(gotDead))
}

// checkGroupBelow fails if the group committed past the input's end (a
// commit can only cover what was read).
func checkGroupBelow(t *testing.T, adm *kadm.Client, ends map[int32]int64) {
	t.Helper()
	offs, err := adm.FetchOffsets(context.Background(), "skew")
	if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
		t.Fatal(err)
	}
	offs.Each(func(o kadm.OffsetResponse) {
		if o.At > ends[o.Partition] {
			t.Fatalf("group committed %s/%d at %d, past the end %d", o.Topic, o.Partition, o.At, ends[o.Partition])
		}
	})
}

// waitGroupAt waits until the group's offsets are the input's ends (an
// empty partition: 0 or none).
func waitGroupAt(t *testing.T, adm *kadm.Client, ends map[int32]int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		offs, err := adm.FetchOffsets(context.Background(), "skew")
		if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
			t.Fatal(err)
		}
		ok := true
		for p := range int32(4) {
			o, found := offs.Lookup("purchases", p)
			if ends[p] > 0 && (!found || o.At != ends[p]) || found && o.At != ends[p] {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("group offsets %v, want %v", offs, ends)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A keyed count whose updates go to a Kafka sink, whose topic is deleted
// while the flow runs and created again a moment later. Sinks see
// at-least-once output: the updates made while the topic was gone reach
// it once it is back (the fragment restores and makes them again), and
// the engine goes on. Exactly-once sink on checkpoints: the topic holds
// each update once.
func TestOutsideKafkaSinkTopicDeletedAndRecreated(t *testing.T) {
	if os.Getenv("TESSERA_OUTSIDE_KAFKA") != "" {
		return
	}
	for _, exactly := range []bool{false, true} {
		t.Run(fmt.Sprintf("exactlyOnce=%v", exactly), func(t *testing.T) {
			_, brokers := cluster(t, map[string]int32{"out": 2})
			ctx := context.Background()
			logger := slog.New(slog.NewTextHandler(io.Discard, nil))
			in := flowstestInput(3)
			var sink flows.Sink[oCount]
			failed := &oFailedRecords{}
			var opts []flows.SinkOption
			if exactly {
				s, err := NewExactlyOnceSink(ctx, ExactlyOnceConfig[oCount]{SinkConfig: SinkConfig[oCount]{Brokers: brokers, Topic: "out"},
					Flow: "gone", ProgressTopic: "gone-progress"})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				sink, opts = s, []flows.SinkOption{flows.OnCheckpoint()}
			} else {
				s, err := NewSink(ctx, SinkConfig[oCount]{Brokers: brokers, Topic: "out", Options: []kgo.Opt{kgo.WithHooks(failed)}})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				sink = s
			}
			f := flows.New("gone", flows.WithFragments(4))
			counts := flows.Count(flows.KeyBy(flows.From(f, "words", flows.Source[string](in)), flows.Identity[string])).View("words")
			flows.To(counts.Updates(), sink, opts...)
			plan, err := flowcore.Compile(f)
			if err != nil {
				t.Fatal(err)
			}
			store, err := recovery.Open(t.TempDir(), nil, logger)
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			e, err := actor.Start(plan, actor.Config{Logger: logger, Store: store, CheckpointInterval: 30 * time.Millisecond, TickInterval: 5 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Stop()
			want := map[string]int64{}
			push := func(n int) {
				for i := range n {
					w := fmt.Sprintf("w%d", i%13)
					in.Push(i%3, w)
					want[w]++
				}
			}
			// updates reads the topic: the updates it holds, and how often.
			updates := func() map[string]int {
				got := map[string]int{}
				var recs = readRecords(t, brokers, "out", exactly)
				for _, r := range recs {
					var kv oCount
					if err := json.Unmarshal(r.Value, &kv); err != nil {
						t.Fatal(err)
					}
					got[fmt.Sprintf("%s=%d", kv.Key, kv.Value)]++
				}
				return got
			}
			complete := func(got map[string]int) bool {
				for w, n := range want {
					if got[fmt.Sprintf("%s=%d", w, n)] == 0 {
						return false
					}
				}
				return true
			}
			waitFor := func(what string, cond func() bool) {
				t.Helper()
				deadline := time.Now().Add(20 * time.Second)
				for !cond() {
					if time.Now().After(deadline) {
						t.Fatalf("20 s without %s", what)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			push(130)
			waitFor("the first updates in the topic", func() bool { return complete(updates()) })

			adm := admin(t, brokers)
			if _, err := adm.DeleteTopics(ctx, "out"); err != nil {
				t.Fatal(err)
			}
			push(130) // its updates meet the missing topic
			waitFor("the updates read", func() bool {
				n := int64(0)
				for _, r := range e.Readers() {
					n += r.Events.Load()
				}
				return n == 260
			})
			// Let the sink meet the missing topic: until a record failed,
			// or for a second.
			for end := time.Now().Add(time.Second); failed.n.Load() == 0 && time.Now().Before(end); {
				time.Sleep(5 * time.Millisecond)
			}
			if _, err := adm.CreateTopic(ctx, 2, 1, nil, "out"); err != nil {
				t.Fatal(err)
			}
			push(130)
			deadline := time.Now().Add(10 * time.Second)
			for {
				select {
				case <-e.Failed():
					t.Fatalf("the engine stopped with the sink's error: %v", e.Err())
				default:
				}
				got := updates()
				if complete(got) {
					// Every update from 1 to the last of each word.
					for w, n := range want {
						for i := int64(1); i <= n; i++ {
							k := fmt.Sprintf("%s=%d", w, i)
							if got[k] == 0 && i > n-20 { // the first third was in the old topic
								t.Fatalf("update %s is in no topic: the engine went on without it (err %v)", k, e.Err())
							}
							if exactly && got[k] > 1 {
								t.Fatalf("update %s is in the topic %d times", k, got[k])
							}
						}
					}
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("10 s without the last updates in the recreated topic (err %v; %d records failed, the last with %v; topic holds %d updates; view sum %d)", e.Err(), failed.n.Load(), failed.last.Load(), len(got), oViewSum(t, e, "words"))
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

func flowstestInput(parts int) *flowstest.Input[string] { return flowstest.NewInput[string](parts) }

// oViewSum is the sum of a keyed view's values, or -1.
func oViewSum(t *testing.T, e *actor.Engine, view string) int64 {
	res, err := splice.Evaluate(context.Background(), e, splice.Request{View: view, Op: splice.OpEntries, Query: splice.Query{Limit: 10000}})
	if err != nil {
		return -1
	}
	var n int64
	for _, en := range res.Entries {
		v, _ := en.Value.(int64)
		n += v
	}
	return n
}

// oFailedRecords counts the records a producer gave up on.
type oFailedRecords struct {
	n    atomic.Int64
	last atomic.Value // string: the last failure
}

func (h *oFailedRecords) OnProduceRecordUnbuffered(_ *kgo.Record, err error) {
	if err != nil {
		h.n.Add(1)
		h.last.Store(err.Error())
	}
}
