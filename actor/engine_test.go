package actor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pa "github.com/asynkron/protoactor-go/actor"
	"go.uber.org/goleak"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/shard"
	"github.com/tessera-streams/tessera/splice"
)

// TestMain runs a child node when the environment names one. The tests
// that start a protoactor remote in this process (Config.Cluster) run one
// at a time, as a process holds one remote; those that do not, and wait on
// child processes or backoffs or spend their own CPU, run in parallel
// (after the others), so that one's waits hold no core from the rest.
func TestMain(m *testing.M) {
	if spec := os.Getenv(nodeEnv); spec != "" {
		runChildNode(spec) // a node of a multi-process test; never returns
	}
	if spec := os.Getenv(stagesEnv); spec != "" {
		runStageNode(spec) // a node of the two-stage tests; never returns
	}
	if spec := os.Getenv(membersEnv); spec != "" {
		runMembers(spec) // the other members of TestReleaseWaitsForAMajorityToKnow; never returns
	}
	remoteStarting = awaitRemotesGone
	goleak.VerifyTestMain(settleRemotes{m})
}

// settleRemotes runs the tests, then waits for the last ones' remotes as
// the next test's would (awaitRemotesGone): an endpoint writer whose dial
// failed sleeps 2 s before it ends, past goleak's own retries.
type settleRemotes struct{ m *testing.M }

func (s settleRemotes) Run() int {
	code := s.m.Run()
	remotesMu.Lock()
	remotesEnded()
	remotesMu.Unlock()
	return code
}

// awaitRemotesGone waits (at most 20 s) until the remotes of the tests
// before have ended: no endpoint writer left in their actor systems and
// no goroutine in gRPC's or protoactor remote's code. A writer closes its
// gRPC connection as it stops, whenever its peer goes, and gRPC logs then
// through the logger that every remote's Start sets anew: a race the
// detector reports, in the tests' one process only. It then notes sys.
func awaitRemotesGone(sys *pa.ActorSystem) {
	remotesMu.Lock()
	defer remotesMu.Unlock()
	remotesEnded()
	remotes = append(remotes, sys)
}

// remotesEnded is awaitRemotesGone's wait, under remotesMu.
func remotesEnded() {
	buf := make([]byte, 4<<20)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		remotes = slices.DeleteFunc(remotes, func(s *pa.ActorSystem) bool { return !hasEndpointWriters(s) })
		n := runtime.Stack(buf, true)
		if len(remotes) == 0 && !bytes.Contains(buf[:n], []byte("google.golang.org/grpc")) &&
			!bytes.Contains(buf[:n], []byte("protoactor-go/remote.")) {
			break
		}
	}
}

// The actor systems whose remotes the tests started, while they may
// have endpoint writers (awaitRemotesGone).
var (
	remotesMu sync.Mutex
	remotes   []*pa.ActorSystem
)

// hasEndpointWriters says whether sys has an actor under protoactor
// remote's endpoint supervisor: a writer or a watcher.
func hasEndpointWriters(sys *pa.ActorSystem) bool {
	for _, m := range sys.ProcessRegistry.LocalPIDs.LocalPIDs {
		for _, k := range m.Keys() {
			if strings.HasPrefix(k, "EndpointSupervisor/") {
				return true
			}
		}
	}
	return false
}

func quiet() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

func word(_ int, _ int64, r *gen.Rand) string { return fmt.Sprintf("w%03d", r.Intn(500)) }

func countFlow(t *testing.T, src flows.Source[string], poison string) *flowcore.Plan {
	f := flows.New("count", flows.WithFragments(64))
	ks := flows.KeyBy(flows.From(f, "gen", src), flows.Identity[string])
	flows.Aggregate(ks, func() int64 { return 0 }, func(n int64, w string) int64 {
		if w == poison {
			panic("poisoned word " + w)
		}
		return n + 1
	}).View("words")
	flows.AggregateView(ks.Values(), "total", splice.Count[string](), flows.Identity[string])
	p, err := flowcore.Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func waitDrained(t *testing.T, e *Engine) {
	t.Helper()
	select {
	case <-e.Drained():
	case <-time.After(60 * time.Second):
		t.Fatal("engine did not drain in 60s")
	}
	if err := e.Err(); err != nil {
		t.Fatal(err)
	}
}

func TestEngineCountsExactly(t *testing.T) {
	t.Parallel() // no remote in this process (see TestMain)
	src, _ := gen.New(gen.Config{Partitions: 3, Seed: 7, Events: 200_000}, word)
	want := map[string]int64{}
	for p := range 3 {
		for o := range src.Limit(p) {
			want[src.Event(p, o)]++
		}
	}
	e, err := Start(countFlow(t, src, ""), Config{Logger: quiet(), BatchSize: 64, Credits: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	waitDrained(t, e)
	res, err := splice.Evaluate(context.Background(), e, splice.Request{View: "total"})
	if err != nil || res.Value != int64(200_000) {
		t.Fatalf("total = %v, %v", res.Value, err)
	}
	checkWords(t, e, want)
	for _, fr := range e.Fragments() {
		if fr.Duplicates.Load() != 0 || fr.Gaps.Load() != 0 {
			t.Fatalf("fragment %d: %d duplicates, %d gaps", fr.ID, fr.Duplicates.Load(), fr.Gaps.Load())
		}
	}
}

// poisonAt makes the word at (partition 0, offset off) "poison".
func poisonAt(off int64) func(int, int64, *gen.Rand) string {
	return func(p int, o int64, r *gen.Rand) string {
		if p == 0 && o == off {
			return "poison"
		}
		return word(p, o, r)
	}
}

func sumOthers(e *Engine, except int) int64 {
	var n int64
	for _, f := range e.Fragments() {
		if f.ID != except {
			n += f.Events.Load()
		}
	}
	return n
}

// A user function fails on one event: its fragment restores its last
// checkpoint and retries after a backoff, while every other fragment keeps
// counting; after the attempts the event is dead-lettered and every count
// is exact.
func TestFailingFragmentRestoresWhileOthersRun(t *testing.T) {
	t.Parallel() // no remote in this process (see TestMain)
	src, _ := gen.New(gen.Config{Partitions: 2, Seed: 3, Events: 60_000, Rate: 40_000}, poisonAt(5_000))
	want := map[string]int64{}
	for p := range 2 {
		for o := range src.Limit(p) {
			if w := src.Event(p, o); w != "poison" {
				want[w]++
			}
		}
	}
	poisoned := shard.Fragment(shard.String("poison"), 64)
	var mu sync.Mutex
	var dead []flows.DeadLetter
	e, err := Start(countFlow(t, src, "poison"), Config{Logger: quiet(), CheckpointInterval: 100 * time.Millisecond,
		MaxAttempts: 2, RetryBackoff: 2 * time.Second,
		OnDeadLetters: func(d []flows.DeadLetter) {
			mu.Lock()
			dead = append(dead, d...)
			mu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	pf := e.Fragments()[poisoned]
	deadline := time.Now().Add(30 * time.Second)
	for pf.Restores.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the poisoned fragment never failed")
		}
		time.Sleep(2 * time.Millisecond)
	}
	// While it waits out its backoff (long, so that a loaded machine does
	// not end it before the others are seen to move), the others count on.
	before, stuck := sumOthers(e, poisoned), pf.Events.Load()
	for sumOthers(e, poisoned) <= before {
		if time.Now().After(deadline) {
			t.Fatalf("other fragments stalled during the restore: %d events", before)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if pf.Restores.Load() != 1 || pf.Events.Load() != stuck {
		t.Fatalf("the poisoned fragment moved during its backoff: %d restores, %d -> %d events", pf.Restores.Load(), stuck, pf.Events.Load())
	}
	waitDrained(t, e)
	mu.Lock()
	defer mu.Unlock()
	if len(dead) != 1 || dead[0].Key != "poison" || dead[0].Partition != 0 || dead[0].Offset != 5_000 ||
		!strings.Contains(dead[0].Error, "after 2 attempts") {
		t.Fatalf("dead letters = %+v", dead)
	}
	if pf.Restores.Load() != 2 || pf.Dead.Load() != 1 {
		t.Fatalf("restores %d, dead %d", pf.Restores.Load(), pf.Dead.Load())
	}
	checkWords(t, e, want)
	total, _ := splice.Evaluate(context.Background(), e, splice.Request{View: "total"})
	if total.Value != int64(60_000-1) {
		t.Fatalf("total = %v", total.Value)
	}
}

// A stopped engine takes a final checkpoint; one started on the same store
// continues where it stopped, replaying nothing.
func TestRestartContinuesExactly(t *testing.T) {
	dir := t.TempDir()
	src, _ := gen.New(gen.Config{Partitions: 3, Seed: 9, Events: 300_000, Rate: 600_000}, word)
	want := map[string]int64{}
	for p := range 3 {
		for o := range src.Limit(p) {
			want[src.Event(p, o)]++
		}
	}
	open := func() *recovery.Store {
		s, err := recovery.Open(dir, nil, quiet())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	store := open()
	e, err := Start(countFlow(t, src, ""), Config{Logger: quiet(), Store: store})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond)
	e.Stop()
	var applied int64
	for _, f := range e.Fragments() {
		applied += f.Events.Load()
	}
	store.Close()
	if applied == 0 || applied == 300_000 {
		t.Fatalf("first run applied %d events: the test needs a stop mid-stream", applied)
	}

	store = open()
	defer store.Close()
	e, err = Start(countFlow(t, src, ""), Config{Logger: quiet(), Store: store})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	waitDrained(t, e)
	var read, replayed int64
	for _, r := range e.Readers() {
		read += r.Events.Load()
	}
	for _, f := range e.Fragments() {
		replayed += f.Replayed.Load()
		if f.Epoch.Load() == 0 {
			t.Fatalf("fragment %d has no checkpoint epoch", f.ID)
		}
	}
	if read != 300_000-applied || replayed != 0 {
		t.Fatalf("second run read %d events (want %d) and replayed %d", read, 300_000-applied, replayed)
	}
	res, _ := splice.Evaluate(context.Background(), e, splice.Request{View: "words", Op: splice.OpEntries, Query: splice.Query{Limit: 1000}})
	for _, en := range res.Entries {
		if en.Value != want[en.Key] {
			t.Fatalf("%s = %v, want %d", en.Key, en.Value, want[en.Key])
		}
	}
}

// A checkpoint that fails its integrity check stops the start: a node never
// serves state it cannot trust.
func TestCorruptCheckpointStopsStart(t *testing.T) {
	dir := t.TempDir()
	src, _ := gen.New(gen.Config{Partitions: 1, Seed: 1, Events: 1000}, word)
	store, _ := recovery.Open(dir, nil, quiet())
	e, err := Start(countFlow(t, src, ""), Config{Logger: quiet(), Store: store})
	if err != nil {
		t.Fatal(err)
	}
	waitDrained(t, e)
	e.Stop()
	// Claim more entries than fragment 5 stored.
	m, _, err := store.Load("count", 5, func(recovery.Entry) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	m.Entries += 7
	m.Epoch++
	if _, err := store.Write("count", 5, &recovery.Checkpoint{Manifest: m}); err != nil {
		t.Fatal(err)
	}
	_, err = Start(countFlow(t, src, ""), Config{Logger: quiet(), Store: store})
	store.Close()
	if !errors.Is(err, recovery.ErrCorrupt) || !strings.Contains(err.Error(), "restore fragment 5") {
		t.Fatalf("Start on a corrupt checkpoint: %v", err)
	}
}

func TestStopWhileRunningUnbounded(t *testing.T) {
	src, _ := gen.New(gen.Config{Partitions: 2, Seed: 1}, word)
	e, err := Start(countFlow(t, src, ""), Config{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := splice.Evaluate(context.Background(), e, splice.Request{View: "total"})
		if err != nil {
			t.Fatal(err)
		}
		if res.Value.(int64) > 10_000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no progress in 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.Stop()
	e.Stop()
}

// committingSource records the offsets the engine commits.
type committingSource struct {
	*gen.Source[string]
	mu      sync.Mutex
	commits map[int][]int64
}

func (s *committingSource) Open(p int, from int64) (flows.PartitionReader[string], error) {
	r, err := s.Source.Open(p, from)
	return &committingReader{PartitionReader: r, s: s, p: p}, err
}

type committingReader struct {
	flows.PartitionReader[string]
	s *committingSource
	p int
}

func (r *committingReader) Commit(off int64) error {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	r.s.commits[r.p] = append(r.s.commits[r.p], off)
	return nil
}

// Sources that keep a position are committed only what every fragment has
// checkpointed, in increasing order, up to the end once all is durable.
func TestCommitsFollowCheckpoints(t *testing.T) {
	g, _ := gen.New(gen.Config{Partitions: 2, Seed: 4, Events: 100_000, Rate: 200_000}, word)
	src := &committingSource{Source: g, commits: map[int][]int64{}}
	e, err := Start(countFlow(t, src, ""), Config{Logger: quiet(), CheckpointInterval: 50 * time.Millisecond, TickInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	waitDrained(t, e)
	if err := e.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		src.mu.Lock()
		last0, last1 := lastOf(src.commits[0]), lastOf(src.commits[1])
		src.mu.Unlock()
		if last0 == g.Limit(0) && last1 == g.Limit(1) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("final commits %d, %d; want %d, %d", last0, last1, g.Limit(0), g.Limit(1))
		}
		time.Sleep(10 * time.Millisecond)
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	for p, cs := range src.commits {
		if len(cs) < 3 {
			t.Errorf("partition %d: only %d commits while running", p, len(cs))
		}
		for i := 1; i < len(cs); i++ {
			if cs[i] <= cs[i-1] {
				t.Fatalf("partition %d: commits not increasing: %v", p, cs)
			}
		}
	}
}

func lastOf(xs []int64) int64 {
	if len(xs) == 0 {
		return -1
	}
	return xs[len(xs)-1]
}

// A batch sent under an older placement epoch is dropped, and records
// nothing; the next placement's batches apply.
func TestStaleEpochIsFenced(t *testing.T) {
	src, _ := gen.New(gen.Config{Partitions: 1, Seed: 1, Events: 5000}, word)
	e, err := Start(countFlow(t, src, ""), Config{Logger: quiet(), Epoch: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	waitDrained(t, e)
	sink, err := e.sys.Root.SpawnNamed(pa.PropsFromFunc(func(pa.Context) {}), "test/acks")
	if err != nil {
		t.Fatal(err)
	}
	defer e.sys.Root.Stop(sink)
	before := e.Fragments()[0].Offsets()
	e.sys.Root.Send(e.layout.Load().frags[0], &batchMsg{b: &flowcore.Batch{Epoch: 4, PrevEnd: 5000, End: 9000}, reader: sink})
	deadline := time.Now().Add(10 * time.Second)
	for e.Fragments()[0].Fenced.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("stale batch not fenced")
		}
		time.Sleep(time.Millisecond)
	}
	if after := e.Fragments()[0].Offsets(); after["gen/0"] != before["gen/0"] {
		t.Fatalf("a fenced batch moved the offsets: %v -> %v", before, after)
	}
}

// Many failures while checkpoints are constantly in flight: every restore
// must read a checkpoint consistent with what lands after it, and the
// result stays exact.
func TestFailuresDuringCheckpoints(t *testing.T) {
	t.Parallel() // no remote in this process (see TestMain)
	poison := func(p int, o int64, r *gen.Rand) string {
		if o%2500 == 1234 {
			return "poison"
		}
		return word(p, o, r)
	}
	src, _ := gen.New(gen.Config{Partitions: 2, Seed: 8, Events: 60_000, Rate: 150_000}, poison)
	want := map[string]int64{}
	bad := 0
	for p := range 2 {
		for o := range src.Limit(p) {
			if w := src.Event(p, o); w != "poison" {
				want[w]++
			} else {
				bad++
			}
		}
	}
	var mu sync.Mutex
	dead := 0
	e, err := Start(countFlow(t, src, "poison"), Config{Logger: quiet(), TickInterval: time.Millisecond,
		CheckpointInterval: time.Millisecond, RetryBackoff: time.Millisecond, MaxAttempts: 3,
		OnDeadLetters: func(d []flows.DeadLetter) { mu.Lock(); dead += len(d); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	waitDrained(t, e)
	mu.Lock()
	if dead != bad {
		t.Fatalf("%d dead letters, want %d", dead, bad)
	}
	mu.Unlock()
	checkWords(t, e, want)
	var restores int64
	for _, f := range e.Fragments() {
		restores += f.Restores.Load()
	}
	if restores != int64(3*bad) {
		t.Fatalf("%d restores, want %d", restores, 3*bad)
	}
}

type tick struct {
	Key string
	At  time.Time
}

// Event time on the engine: watermarks flow with batches, event-time timers
// fire once per one-second window, and the end of a bounded source
// completes event time.
func TestEventTimeOnEngine(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	src, _ := gen.New(gen.Config{Partitions: 2, Seed: 2, Events: 40_000}, func(p int, o int64, r *gen.Rand) tick {
		return tick{Key: fmt.Sprintf("k%d", r.Intn(20)), At: t0.Add(time.Duration(o)*10*time.Millisecond - time.Duration(r.Intn(500))*time.Millisecond)}
	})
	f := flows.New("et", flows.WithFragments(16))
	ks := flows.KeyBy(flows.From(f, "gen", flows.Source[tick](src), flows.WithEventTime(func(e tick) time.Time { return e.At }, time.Second)),
		func(e tick) string { return e.Key })
	p := flows.Process(ks, flows.Handler[string, tick, int, int]{
		OnEvent: func(c *flows.Context[string, int, int], e tick) {
			n, _ := c.State()
			c.SetState(n + 1)
			c.SetEventTimer(c.Timestamp().Truncate(time.Second).Add(time.Second))
		},
		OnTimer: func(c *flows.Context[string, int, int], _ time.Time) {
			n, _ := c.State()
			c.Emit(n)
			c.ClearState()
		},
	})
	p.View("open")
	var mu sync.Mutex
	var emitted int
	flows.To(p.Out(), flows.SinkFunc[int](func(out []flows.Output[int]) error {
		mu.Lock()
		defer mu.Unlock()
		for _, o := range out {
			emitted += o.Value
		}
		return nil
	}))
	e := runToEnd(t, f)
	mu.Lock()
	defer mu.Unlock()
	if emitted != 40_000 {
		t.Fatalf("windows emitted %d events, want 40000", emitted)
	}
	for _, fr := range e.Freshness() {
		if fr.Watermark == nil || fr.Watermark.Year() < 2200 {
			t.Fatalf("fragment %d watermark %v after the end of the input", fr.Fragment, fr.Watermark)
		}
	}
}

// Events too late for every window are counted per fragment.
func TestTooLateCounted(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	src, _ := gen.New(gen.Config{Partitions: 1, Seed: 4, Events: 20_000}, func(_ int, o int64, r *gen.Rand) tick {
		at := t0.Add(time.Duration(o) * 10 * time.Millisecond)
		if o%5000 == 4999 && o > 5000 {
			at = t0 // minutes behind the watermark
		}
		return tick{Key: fmt.Sprintf("k%d", r.Intn(8)), At: at}
	})
	f := flows.New("late", flows.WithFragments(4))
	ks := flows.KeyBy(flows.From(f, "gen", flows.Source[tick](src), flows.WithEventTime(func(e tick) time.Time { return e.At }, time.Second)),
		func(e tick) string { return e.Key })
	w := flows.WindowAggregate(ks, flows.Tumbling(10*time.Second), func() int { return 0 }, func(n int, _ tick) int { return n + 1 })
	var mu sync.Mutex
	late := 0
	flows.To(w.TooLate(), flows.SinkFunc[tick](func(out []flows.Output[tick]) error {
		mu.Lock()
		late += len(out)
		mu.Unlock()
		return nil
	}))
	e := runToEnd(t, f)
	var counted int64
	for _, fr := range e.Fragments() {
		counted += fr.TooLate.Load()
	}
	mu.Lock()
	defer mu.Unlock()
	if late != 3 || counted != 3 {
		t.Fatalf("too-late output %d, counted %d; want 3", late, counted)
	}
}

// runToEnd starts an engine on f and waits until its bounded sources are
// drained; the test's cleanup stops it.
func runToEnd(t *testing.T, f *flows.Flow) *Engine {
	t.Helper()
	plan, err := flowcore.Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	e, err := Start(plan, Config{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	waitDrained(t, e)
	return e
}

// failingSource's partitions fail at their first read, each with an error
// of another type.
type failingSource struct{}

func (failingSource) Partitions() int { return 2 }

func (failingSource) Open(p int, _ int64) (flows.PartitionReader[string], error) {
	return failingReader(p), nil
}

type failingReader int

type readError struct{ p int }

func (e readError) Error() string { return fmt.Sprintf("partition %d is gone", e.p) }

func (r failingReader) Read(context.Context, *flows.ReadBatch[string], int) error {
	if r == 0 {
		return readError{0}
	}
	return fmt.Errorf("read: %w", readError{int(r)})
}

func (failingReader) Close() error { return nil }

// countHandler counts the records logged with one message.
type countHandler struct {
	slog.Handler
	msg string
	n   *atomic.Int64
}

func (h countHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

// A source error is fatal and reported: Failed closes and Err names the
// partition; later failures, of any error type, are logged, and Err stays
// the first.
func TestSourceFailureIsReported(t *testing.T) {
	var failures atomic.Int64
	logger := slog.New(countHandler{Handler: slog.NewTextHandler(io.Discard, nil), msg: "engine failure", n: &failures})
	e, err := Start(countFlow(t, failingSource{}, ""), Config{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	select {
	case <-e.Failed():
	case <-time.After(10 * time.Second):
		t.Fatal("Failed not closed 10s after the source failed")
	}
	var re readError
	if err := e.Err(); !errors.As(err, &re) || !strings.HasPrefix(err.Error(), fmt.Sprintf("gen/%d: ", re.p)) {
		t.Fatalf("Err() = %v, want the partition's read error", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for failures.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d failures logged, want one per partition", failures.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Checkpoint and alert failures are of other error types.
	first := e.Err()
	e.fail(errors.New("checkpoint store closed"))
	if e.Err() != first || failures.Load() != 3 {
		t.Fatalf("after a third failure: Err() = %v, %d logged", e.Err(), failures.Load())
	}
}

// checkWords fails unless e's words view holds exactly the counts of want.
func checkWords(t *testing.T, e *Engine, want map[string]int64) {
	t.Helper()
	checkView(t, e, "words", want)
}

// checkView fails unless e's keyed view holds exactly the values of want.
func checkView(t *testing.T, e *Engine, view string, want map[string]int64) {
	t.Helper()
	res, err := splice.Evaluate(context.Background(), e, splice.Request{View: view, Op: splice.OpEntries, Query: splice.Query{Limit: len(want) + 1}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Entries) != len(want) {
		t.Fatalf("%s: %d keys, want %d", view, len(res.Entries), len(want))
	}
	for _, en := range res.Entries {
		if en.Value != want[en.Key] {
			t.Fatalf("%s = %v, want %d", en.Key, en.Value, want[en.Key])
		}
	}
}
