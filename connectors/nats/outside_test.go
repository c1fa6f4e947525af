package nats

// Tests written as an outside user of the NATS connector would write
// them: an embedded nats-server with JetStream on 127.0.0.1 that is shut
// down and started again on the same port and store while a flow runs,
// the engine started by actor.Start on a pebble store on disk, and a
// plain Go model of what the output stream must hold.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tessera-streams/tessera/actor"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/recovery"
)

type oEvent struct {
	U string `json:"u"`
}

type oCount = flows.KV[string, int64]

func oBucket(kv oCount) string { return fmt.Sprintf("b%d", kv.Value%4) }

// oServer starts a JetStream server on port (-1: any) storing in dir.
func oServer(t *testing.T, dir string, port int) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready in 10 s")
	}
	return ns
}

func oStop(ns *server.Server) {
	ns.Shutdown()
	ns.WaitForShutdown()
}

// A count per user over a stream of three subjects (one hot, one empty),
// re-keyed by bucket and counted again, written by the sink (at once, and
// on checkpoints) to another stream, while the NATS server is shut down
// in the middle of the input and started again on the same port and
// store. The source and the sink reconnect; the output stream holds every
// count update of the model once — or the engine stops with an error,
// never goes on without some of them.
func TestOutsideNATSServerRestartMidFlow(t *testing.T) {
	for _, onCheckpoint := range []bool{false, true} {
		t.Run(fmt.Sprintf("onCheckpoint=%v", onCheckpoint), func(t *testing.T) {
			dir := t.TempDir()
			ns := oServer(t, dir, -1)
			port := ns.Addr().(interface{ String() string }).String()
			url := ns.ClientURL()
			defer func() { oStop(ns) }()
			fast := []natsgo.Option{natsgo.ReconnectWait(20 * time.Millisecond), natsgo.MaxReconnects(-1),
				natsgo.ErrorHandler(func(*natsgo.Conn, *natsgo.Subscription, error) {})}
			nc, err := natsgo.Connect(url, fast...)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			createStream(t, js, jetstream.StreamConfig{Name: "IN", Subjects: []string{"in.*"}, Storage: jetstream.FileStorage})
			createStream(t, js, jetstream.StreamConfig{Name: "OUT", Subjects: []string{"out"}, Storage: jetstream.FileStorage})
			rng := rand.New(rand.NewPCG(7, 8))
			perUser := map[string]int64{}
			pub := func(n int) {
				for range n {
					p := 0 // hot
					if rng.IntN(5) == 0 {
						p = 2 // in.1 stays empty
					}
					u := fmt.Sprintf("u%d", rng.IntN(25))
					b, _ := json.Marshal(oEvent{U: u})
					if _, err := js.Publish(ctx, fmt.Sprintf("in.%d", p), b); err != nil {
						t.Fatal(err)
					}
					perUser[u]++
				}
			}
			logger := slog.New(slog.NewTextHandler(io.Discard, nil))
			src, err := New(ctx, Config[oEvent]{URL: url, Stream: "IN", Subjects: []string{"in.0", "in.1", "in.2"}, Options: fast})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			sink, err := NewSink(ctx, SinkConfig[oCount]{URL: url, Subject: "out", AckWait: 200 * time.Millisecond, Options: fast})
			if err != nil {
				t.Fatal(err)
			}
			defer sink.Close()
			f := flows.New("restarts", flows.WithFragments(6))
			perU := flows.Count(flows.KeyBy(flows.From(f, "in", flows.Source[oEvent](src)), func(e oEvent) string { return e.U }))
			perB := flows.Count(flows.KeyBy(perU.Updates(), oBucket)).View("buckets")
			var opts []flows.SinkOption
			if onCheckpoint {
				opts = append(opts, flows.OnCheckpoint())
			}
			flows.To(perB.Updates(), flows.Sink[oCount](sink), opts...)
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
			want := func() map[string]bool {
				perBucket := map[string]int64{}
				for _, n := range perUser {
					for i := int64(1); i <= n; i++ {
						perBucket[oBucket(oCount{Value: i})]++
					}
				}
				w := map[string]bool{}
				for b, n := range perBucket {
					for i := int64(1); i <= n; i++ {
						w[fmt.Sprintf("%s=%d", b, i)] = true
					}
				}
				return w
			}
			// check compares the output stream with the model: an error
			// for an update twice or not the model's; done once it holds all.
			check := func(js jetstream.JetStream) (done bool, err error) {
				w := want()
				got := map[string]int{}
				for _, m := range readStream(t, js, "OUT") {
					var kv oCount
					if err := json.Unmarshal(m.Data(), &kv); err != nil {
						return false, err
					}
					k := fmt.Sprintf("%s=%d", kv.Key, kv.Value)
					got[k]++
					if got[k] > 1 || !w[k] {
						return false, fmt.Errorf("update %s stored %d times (in the model: %v)", k, got[k], w[k])
					}
				}
				return len(got) == len(w), nil
			}
			await := func(js jetstream.JetStream, what string) {
				t.Helper()
				deadline := time.Now().Add(15 * time.Second)
				for {
					select {
					case <-e.Failed():
						t.Logf("the engine stopped with an error: %v", e.Err())
						return
					default:
					}
					done, err := check(js)
					if err != nil {
						t.Fatal(err)
					}
					if done {
						return
					}
					if time.Now().After(deadline) {
						w := want()
						t.Fatalf("15 s without %s: the stream holds fewer than the %d updates of the model (engine error %v)", what, len(w), e.Err())
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			pub(300)
			await(js, "the first updates")

			pub(1500)
			// Shut down while the flow works on the input.
			info, err := js.Stream(ctx, "OUT")
			if err != nil {
				t.Fatal(err)
			}
			stored := info.CachedInfo().State.Msgs
			if si, err := info.Info(ctx); err == nil {
				stored = si.State.Msgs
			}
			oStop(ns)
			nc.Close()
			ns = oServer(t, dir, portOf(t, port))
			nc, err = natsgo.Connect(url, fast...)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if js, err = jetstream.New(nc); err != nil {
				t.Fatal(err)
			}
			pub(300)
			await(js, "every update after the restart")
			t.Logf("the server stopped with %d of the %d updates stored", stored, len(want()))
		})
	}
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	var host string
	var port int
	if _, err := fmt.Sscanf(addr, "127.0.0.1:%d", &port); err != nil {
		t.Fatalf("address %q (%s): %v", addr, host, err)
	}
	return port
}
