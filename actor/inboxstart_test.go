package actor

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	pa "github.com/asynkron/protoactor-go/actor"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/internal/wire"
)

// Batches from another node that reach a node's inbox before its fragments
// run (its remote listens first, and the other nodes send as soon as it
// answers) are applied once the fragments run. Handed to fragments not
// spawned yet, they were dead letters: their reader, its credits spent on
// them, read nothing more of its partition until recovery.CreditTimeout
// took them back, and a node that joined meanwhile found the partition
// committed nowhere and read it from 0 (examples/wordcount's
// TestJoinAndLeaveExact, one run in a few on a loaded machine).
func TestInboxHoldsBatchesUntilFragmentsRun(t *testing.T) {
	src, _ := gen.New(gen.Config{Partitions: 1, Seed: 5, Events: 2000}, word)
	plan := countFlow(t, src, "")
	r, err := plan.OpenReader(0, 0, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Poll(context.Background(), 1<<20); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	var frags []uint32
	var records [][]byte
	var events int64
	for f := range plan.Fragments() {
		b := r.Take(f)
		if b.Count == 0 {
			continue
		}
		b.Epoch = 1
		events += int64(b.Count)
		enc, err := plan.EncodeBatch(nil, b)
		if err != nil {
			t.Fatal(err)
		}
		frags, records = append(frags, uint32(f)), append(records, enc)
	}
	r.Close()
	if events != 2000 {
		t.Fatalf("the batches hold %d events, want 2000", events)
	}

	acks := make(chan *wire.Acks, 256)
	inboxStarted = func(e *Engine) {
		// A reader on another node: an actor here that takes the
		// acknowledgements.
		reader, err := e.sys.Root.SpawnNamed(pa.PropsFromFunc(func(c pa.Context) {
			if m, ok := c.Message().(*wire.Acks); ok {
				acks <- m
			}
		}), "other-reader")
		if err != nil {
			t.Error(err)
			return
		}
		e.sys.Root.Send(e.inbox, &wire.Batches{Flow: plan.Name(), Epoch: 1, ReaderAddress: reader.Address,
			ReaderId: reader.Id, Fragments: frags, Records: records})
		// An acknowledgement through the inbox comes back once the inbox
		// has taken the batches, before any fragment runs.
		const marker = 1 << 30
		e.sys.Root.Send(e.inbox, netAckMsg{sender: reader, fragment: marker})
		if m := <-acks; !slices.Equal(m.Fragments, []uint32{marker}) {
			t.Errorf("the inbox's first acknowledgement is for %v, want the marker alone", m.Fragments)
		}
	}
	defer func() { inboxStarted = nil }()
	// The partition's reader is on node b, which shares a's address:
	// nothing here reads it, and nothing is sent to another process.
	addr := freeAddr(t)
	e, err := Start(plan, Config{Logger: quiet(),
		Cluster: &ClusterConfig{Self: "a", Remote: addr, Epoch: 1, Fragments: slices.Repeat([]string{"a"}, plan.Fragments()),
			Readers: []string{"b"}, Remotes: map[string]string{"a": addr, "b": addr}}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	due := map[uint32]bool{}
	for _, f := range frags {
		due[f] = true
	}
	timeout := time.After(30 * time.Second)
	for len(due) > 0 {
		select {
		case m := <-acks:
			for _, f := range m.Fragments {
				delete(due, f)
			}
		case <-timeout:
			t.Fatalf("%d of %d fragments never acknowledged the batch that reached the inbox before they ran", len(due), len(frags))
		}
	}
	var applied int64
	for _, fr := range e.Fragments() {
		applied += fr.Events.Load()
	}
	if applied != events {
		t.Fatalf("the fragments applied %d events, want %d", applied, events)
	}
}
