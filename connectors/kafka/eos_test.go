package kafka

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tessera-streams/tessera/flows"
)

// readCommitted reads every committed record of topic up to its last
// stable offsets, as a read_committed consumer sees them.
func readCommitted(t testing.TB, brokers []string, topic string) []*kgo.Record {
	t.Helper()
	return readRecords(t, brokers, topic, true)
}

// readRecords reads topic up to its end offsets (committed: its last
// stable offsets, read committed), transaction markers left out.
func readRecords(t testing.TB, brokers []string, topic string, committed bool) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	list, isolation := admin(t, brokers).ListEndOffsets, kgo.ReadUncommitted()
	if committed {
		list, isolation = admin(t, brokers).ListCommittedOffsets, kgo.ReadCommitted()
	}
	ends, err := list(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
		}
	})
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(isolation), kgo.KeepControlRecords())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("reading %s: %v (%d partitions short)", topic, err, len(want))
		}
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := want[r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			if !r.Attrs.IsControl() {
				recs = append(recs, r)
			}
			if r.Offset+1 >= end {
				delete(want, r.Partition)
			}
		})
	}
	return recs
}

// fragmentOutputs are outputs n..m-1 of one fragment.
func fragmentOutputs(frag, n, m int, tag string) []flows.Output[line] {
	var out []flows.Output[line]
	for i := n; i < m; i++ {
		out = append(out, flows.Output[line]{ID: flows.OutputID{Fragment: frag, Offset: int64(i)},
			Value: line{Text: fmt.Sprintf("%s-%d", tag, i)}})
	}
	return out
}

func newEOS(t testing.TB, brokers []string) *ExactlyOnceSink[line] {
	t.Helper()
	s, err := NewExactlyOnceSink(context.Background(), ExactlyOnceConfig[line]{
		SinkConfig: SinkConfig[line]{Brokers: brokers, Topic: "out"}, Flow: "wc", ProgressPartitions: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// countKeys counts the records of each key and fails on a duplicate.
func countKeys(t testing.TB, recs []*kgo.Record) map[string]string {
	t.Helper()
	got := map[string]string{}
	for _, r := range recs {
		if _, dup := got[string(r.Key)]; dup {
			t.Fatalf("output %s is in the topic twice", r.Key)
		}
		got[string(r.Key)] = string(r.Value)
	}
	return got
}

// A Write delivered again after a restart (the process died before a
// checkpoint recorded that it succeeded) commits only what the first one
// did not; other fragments are untouched by a fragment's marker.
func TestExactlyOnceSinkSkipsCommittedPrefix(t *testing.T) {
	_, brokers := cluster(t, map[string]int32{"out": 2})
	s := newEOS(t, brokers)
	for frag := range 3 {
		if err := s.Write(fragmentOutputs(frag, 0, 10, "a")); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	// The restarted process: fragment 1 redelivers its 10 outputs with 10
	// more, fragment 2 only new ones.
	s2 := newEOS(t, brokers)
	if err := s2.Write(fragmentOutputs(1, 0, 20, "a")); err != nil {
		t.Fatal(err)
	}
	if err := s2.Write(fragmentOutputs(2, 10, 15, "a")); err != nil {
		t.Fatal(err)
	}
	// Later Writes of an initialised producer are never skipped.
	if err := s2.Write(fragmentOutputs(1, 20, 25, "a")); err != nil {
		t.Fatal(err)
	}
	got := countKeys(t, readCommitted(t, brokers, "out"))
	want := append(append(fragmentOutputs(0, 0, 10, "a"), fragmentOutputs(1, 0, 25, "a")...),
		fragmentOutputs(2, 0, 15, "a")...)
	if len(got) != len(want) {
		t.Fatalf("%d outputs in the topic, want %d", len(got), len(want))
	}
	for _, o := range want {
		if v := fmt.Sprintf(`{"text":%q}`, o.Value.Text); got[outputKey(o.ID)] != v {
			t.Fatalf("%s = %q, want %s", outputKey(o.ID), got[outputKey(o.ID)], v)
		}
	}
	markers := map[string]string{}
	for _, r := range readCommitted(t, brokers, "out.tessera-progress") {
		if int32(r.Partition) != progressPartition(string(r.Key), 3) {
			t.Fatalf("marker of %s in partition %d", r.Key, r.Partition)
		}
		markers[string(r.Key)] = string(r.Value)
	}
	if m := markers[s2.TransactionalID(1)]; m != outputKey(fragmentOutputs(1, 24, 25, "")[0].ID) {
		t.Fatalf("fragment 1's marker is %q", m)
	}
}

// A fragment that moved away from a node and back (its owner there was
// paused, or left and rejoined) restores a checkpoint whose pending
// outputs begin with outputs this node's live producer committed before
// it moved (the interim owner could not deliver them: its own producer
// was fenced). They are skipped although the producer did not initialise
// again: the topic holds each output once.
func TestExactlyOnceSinkSkipsOwnCommittedPrefix(t *testing.T) {
	_, brokers := cluster(t, map[string]int32{"out": 2})
	s := newEOS(t, brokers)
	if err := s.Write(fragmentOutputs(0, 0, 10, "a")); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(fragmentOutputs(0, 5, 15, "a")); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(fragmentOutputs(0, 15, 20, "a")); err != nil {
		t.Fatal(err)
	}
	got := countKeys(t, readCommitted(t, brokers, "out"))
	if len(got) != 20 {
		t.Fatalf("%d outputs in the topic, want 20", len(got))
	}
}

// A fragment taken over by another node and handed back: the interim
// owner commits what it delivers again and more; back on the first node,
// the fragment restores the interim owner's checkpoint (Restored), and its
// next Write starts a new producer session, which fences the interim
// owner and skips what it committed.
func TestExactlyOnceSinkRestoredSkipsInterimCommits(t *testing.T) {
	_, brokers := cluster(t, map[string]int32{"out": 2})
	first, interim := newEOS(t, brokers), newEOS(t, brokers)
	if err := first.Write(fragmentOutputs(0, 0, 10, "a")); err != nil {
		t.Fatal(err)
	}
	interim.Restored(0)
	if err := interim.Write(fragmentOutputs(0, 5, 15, "a")); err != nil {
		t.Fatal(err)
	}
	first.Restored(0)
	if err := first.Write(fragmentOutputs(0, 10, 20, "a")); err != nil {
		t.Fatalf("the first owner, handed the fragment back: %v", err)
	}
	if err := interim.Write(fragmentOutputs(0, 20, 21, "a")); !errors.Is(err, ErrFenced) {
		t.Fatalf("the interim owner wrote after the fragment moved back: %v", err)
	}
	got := countKeys(t, readCommitted(t, brokers, "out"))
	if len(got) != 20 {
		t.Fatalf("%d outputs in the topic, want 20", len(got))
	}
}

// A second owner of a fragment fences the first: the first's open
// transaction is aborted, its next Write fails with ErrFenced, and nothing
// it wrote after the second initialised is visible to read_committed.
func TestExactlyOnceSinkFencesZombie(t *testing.T) {
	_, brokers := cluster(t, map[string]int32{"out": 2})
	old := newEOS(t, brokers)
	if err := old.Write(fragmentOutputs(0, 0, 5, "old")); err != nil {
		t.Fatal(err)
	}
	// A zombie with a transaction open (as if it died between produce and
	// commit, then woke): a raw producer with the fragment's id.
	zombie, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.TransactionalID(old.TransactionalID(7)),
		kgo.DefaultProduceTopic("out"))
	if err != nil {
		t.Fatal(err)
	}
	defer zombie.Close()
	if err := zombie.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := zombie.ProduceSync(context.Background(), &kgo.Record{Key: []byte("zombie"), Value: []byte("{}")}).FirstErr(); err != nil {
		t.Fatal(err)
	}

	owner := newEOS(t, brokers)
	if err := owner.Write(fragmentOutputs(0, 0, 8, "new")); err != nil { // 0..4 skipped: old committed them
		t.Fatal(err)
	}
	if err := owner.Write(fragmentOutputs(7, 0, 3, "new")); err != nil { // aborts the zombie's transaction
		t.Fatal(err)
	}
	err = old.Write(fragmentOutputs(0, 8, 12, "old"))
	if !errors.Is(err, ErrFenced) {
		t.Fatalf("the old owner's Write after fencing = %v, want ErrFenced", err)
	}
	// Until FenceBackoff has passed, the old owner does not take the
	// fragment back (which would fence the new owner): the owner goes on.
	if err := old.Write(fragmentOutputs(0, 8, 12, "old")); !errors.Is(err, ErrFenced) {
		t.Fatalf("the old owner's second Write = %v, want ErrFenced", err)
	}
	if err := owner.Write(fragmentOutputs(0, 8, 10, "new")); err != nil {
		t.Fatalf("the owner's Write after the old owner's retry: %v", err)
	}
	if err := zombie.EndTransaction(context.Background(), kgo.TryCommit); err == nil {
		t.Fatal("the zombie committed after a new owner initialised")
	}
	got := countKeys(t, readCommitted(t, brokers, "out"))
	if _, ok := got["zombie"]; ok {
		t.Fatal("the zombie's aborted record is visible")
	}
	for _, o := range fragmentOutputs(0, 10, 12, "") {
		if _, ok := got[outputKey(o.ID)]; ok {
			t.Fatalf("output %s written by the fenced owner is visible", outputKey(o.ID))
		}
	}
	want := map[string]string{}
	for _, o := range append(append(fragmentOutputs(0, 0, 5, "old"), fragmentOutputs(0, 5, 10, "new")...), fragmentOutputs(7, 0, 3, "new")...) {
		want[outputKey(o.ID)] = fmt.Sprintf(`{"text":%q}`, o.Value.Text)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("topic holds\n%v\nwant\n%v", got, want)
	}
}

func TestExactlyOnceSinkConfig(t *testing.T) {
	_, brokers := cluster(t, map[string]int32{"out": 1})
	ctx := context.Background()
	for _, tc := range []struct {
		cfg  ExactlyOnceConfig[line]
		want string
	}{
		{ExactlyOnceConfig[line]{SinkConfig: SinkConfig[line]{Brokers: brokers, Topic: "out"}}, "no flow name"},
		{ExactlyOnceConfig[line]{SinkConfig: SinkConfig[line]{Brokers: brokers, Topic: "nope"}, Flow: "f"}, `topic "nope" does not exist`},
	} {
		if _, err := NewExactlyOnceSink(ctx, tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewExactlyOnceSink = %v, want %q", err, tc.want)
		}
	}
	s := newEOS(t, brokers)
	mixed := append(fragmentOutputs(0, 0, 1, "x"), fragmentOutputs(1, 0, 1, "x")...)
	if err := s.Write(mixed); err == nil {
		t.Fatal("a Write mixing fragments: no error")
	}
}

// Nodes that start at once all create the progress topic: one wins, the
// others wait until it is served, and all see its partitions.
func TestExactlyOnceSinksCreateProgressTopicAtOnce(t *testing.T) {
	_, brokers := cluster(t, map[string]int32{"out": 1})
	errs := make(chan error, 4)
	sinks := make(chan *ExactlyOnceSink[line], 4)
	for range 4 {
		go func() {
			s, err := NewExactlyOnceSink(context.Background(), ExactlyOnceConfig[line]{
				SinkConfig: SinkConfig[line]{Brokers: brokers, Topic: "out"}, Flow: "wc", ProgressPartitions: 5})
			errs <- err
			sinks <- s
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
		if s := <-sinks; s != nil {
			if s.parts != 5 {
				t.Errorf("a sink sees %d progress partitions, want 5", s.parts)
			}
			s.Close()
		}
	}
}

// Another fragment's transaction left open on the progress partition (a
// dead owner's) holds read_committed below this fragment's last marker:
// initialising waits until it ends rather than read an older marker.
func TestExactlyOnceSinkWaitsForOpenMarkers(t *testing.T) {
	_, brokers := cluster(t, map[string]int32{"out": 1})
	s := newEOS(t, brokers)
	if err := s.Write(fragmentOutputs(0, 0, 5, "a")); err != nil {
		t.Fatal(err)
	}
	dead, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.TransactionalID(s.TransactionalID(1)),
		kgo.RecordPartitioner(progressPartitioner{topic: "out.tessera-progress", parts: 3}))
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	if err := dead.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	// The dead owner's marker goes to the partition of fragment 0's.
	key := s.TransactionalID(0)
	if err := dead.ProduceSync(context.Background(), &kgo.Record{Topic: "out.tessera-progress", Key: []byte(key), Value: []byte("not a marker")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(fragmentOutputs(0, 5, 10, "a")); err != nil { // its marker is after the open transaction
		t.Fatal(err)
	}
	s.Close()

	restarted := newEOS(t, brokers)
	done := make(chan error, 1)
	go func() { done <- restarted.Write(fragmentOutputs(0, 5, 12, "a")) }() // 5..9 were committed
	select {
	case err := <-done:
		t.Fatalf("the Write did not wait for the open transaction: %v", err)
	case <-time.After(100 * time.Millisecond): // a wait that should not end: nothing to poll
	}
	if err := dead.EndTransaction(context.Background(), kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := countKeys(t, readCommitted(t, brokers, "out"))
	if len(got) != 12 {
		t.Fatalf("%d outputs in the topic, want 12", len(got))
	}
}

// After FenceBackoff, a fenced sink takes its fragment back (an owner the
// fragment moved back to): it fences the other and skips what it
// committed.
func TestExactlyOnceSinkTakesFragmentBackAfterBackoff(t *testing.T) {
	_, brokers := cluster(t, map[string]int32{"out": 1})
	cfg := ExactlyOnceConfig[line]{SinkConfig: SinkConfig[line]{Brokers: brokers, Topic: "out"}, Flow: "wc", FenceBackoff: -1}
	a, err := NewExactlyOnceSink(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b := newEOS(t, brokers)
	if err := a.Write(fragmentOutputs(0, 0, 3, "a")); err != nil {
		t.Fatal(err)
	}
	if err := b.Write(fragmentOutputs(0, 0, 6, "b")); err != nil { // 0..2 skipped
		t.Fatal(err)
	}
	if err := a.Write(fragmentOutputs(0, 3, 4, "a")); !errors.Is(err, ErrFenced) {
		t.Fatalf("Write = %v, want ErrFenced", err)
	}
	if err := a.Write(fragmentOutputs(0, 3, 8, "a")); err != nil { // 3..5 skipped: b committed them
		t.Fatal(err)
	}
	if err := b.Write(fragmentOutputs(0, 6, 7, "b")); !errors.Is(err, ErrFenced) {
		t.Fatalf("the fragment was taken back, but Write = %v, want ErrFenced", err)
	}
	if got := countKeys(t, readCommitted(t, brokers, "out")); len(got) != 8 {
		t.Fatalf("%d outputs, want 8", len(got))
	}
}

// stopAtInit is a clock that jumps by stop the first time a producer
// sends InitProducerID once armed: the process stopped just as a Write
// initialised its producer.
type stopAtInit struct {
	ns    atomic.Int64
	armed atomic.Bool
	stop  time.Duration
}

func (c *stopAtInit) now() time.Time { return time.Unix(0, c.ns.Load()) }

func (c *stopAtInit) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, _ error) {
	if key == 22 && c.armed.CompareAndSwap(true, false) { // InitProducerID
		c.ns.Add(int64(c.stop))
	}
}

// pausedZombie is a sink on a virtual clock (a zombie-to-be) whose
// fragment 0 a new owner has restored (outputs 0-9 pending) and committed
// with more (0-14); clock.stop is the pause to come.
func pausedZombie(t *testing.T) (*ExactlyOnceSink[line], *stopAtInit, []string) {
	t.Helper()
	_, brokers := cluster(t, map[string]int32{"out": 2})
	clock := &stopAtInit{stop: 2 * time.Second}
	clock.ns.Store(time.Now().UnixNano())
	zombie, err := NewExactlyOnceSink(context.Background(), ExactlyOnceConfig[line]{
		SinkConfig: SinkConfig[line]{Brokers: brokers, Topic: "out", Options: []kgo.Opt{kgo.WithHooks(clock)}},
		Flow:       "wc", ProgressPartitions: 3, Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { zombie.Close() })
	owner := newEOS(t, brokers)
	if err := owner.Write(fragmentOutputs(0, 0, 15, "a")); err != nil {
		t.Fatal(err)
	}
	return zombie, clock, brokers
}

// A node stopped inside a Write, before the Write initialised its
// producer, while another node took the fragment over and committed more:
// resumed, the Write initialises (fencing the new owner), but it finds the
// pause and commits nothing — its outputs are the new owner's, already
// committed. Without the pause watch it commits them again.
func TestExactlyOnceSinkPausedDuringInit(t *testing.T) {
	zombie, clock, brokers := pausedZombie(t)
	clock.armed.Store(true)
	if err := zombie.Write(fragmentOutputs(0, 0, 10, "a")); !errors.Is(err, ErrPaused) {
		t.Fatalf("a Write across a pause: %v, want ErrPaused", err)
	}
	if got := countKeys(t, readCommitted(t, brokers, "out")); len(got) != 15 {
		t.Fatalf("%d outputs in the topic, want the new owner's 15", len(got))
	}
}

// A node stopped after its fragment's last pause check but before the
// sink's Write began (the pause already counted when the Write starts)
// commits nothing either.
func TestExactlyOnceSinkPausedBeforeWrite(t *testing.T) {
	zombie, clock, brokers := pausedZombie(t)
	clock.ns.Add(int64(clock.stop))
	zombie.watch.observe() // the watch reads the clock first
	if err := zombie.Write(fragmentOutputs(0, 0, 10, "a")); !errors.Is(err, ErrPaused) {
		t.Fatalf("a Write after a pause: %v, want ErrPaused", err)
	}
	if got := countKeys(t, readCommitted(t, brokers, "out")); len(got) != 15 {
		t.Fatalf("%d outputs in the topic, want the new owner's 15", len(got))
	}
	// The engine restores the fragment (Restored); its next Write goes
	// ahead and skips what the marker says was committed.
	zombie.Restored(0)
	if err := zombie.Write(fragmentOutputs(0, 0, 20, "a")); err != nil {
		t.Fatal(err)
	}
	if got := countKeys(t, readCommitted(t, brokers, "out")); len(got) != 20 {
		t.Fatalf("%d outputs in the topic, want 20", len(got))
	}
}
