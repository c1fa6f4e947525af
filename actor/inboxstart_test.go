package actor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	pa "github.com/asynkron/protoactor-go/actor"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/internal/flowcore"
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
	plan, frags, records, events := otherNodeBatches(t, 1)

	acks := make(chan *wire.Acks, 256)
	inboxStarted = func(e *Engine) {
		// A reader on another node: an actor here that takes the
		// acknowledgements.
		// Before any fragment runs.
		if err := sendFromOtherReader(e, plan, 1, frags, records, acks); err != nil {
			t.Error(err)
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
	awaitApplied(t, e, acks, frags, events, "the batch that reached the inbox before they ran", nil)
}

// sendFromOtherReader sends e's inbox the batches (records, for frags, of
// placement epoch) as a reader on another node does, from an actor here
// that passes the acknowledgements it gets to acks, and returns once the
// inbox has taken them: an acknowledgement through the inbox sent after
// them, a marker, comes back first. The actor has the name of the
// partition's reader, and sends a fragment's batch again when the
// fragment asks it to (a fragment that waited for the copies of the live
// members drops what came meanwhile and asks for it again).
func sendFromOtherReader(e *Engine, plan *flowcore.Plan, epoch uint64, frags []uint32, records [][]byte, acks chan *wire.Acks) error {
	reader, err := e.sys.Root.SpawnNamed(pa.PropsFromFunc(func(c pa.Context) {
		switch m := c.Message().(type) {
		case *wire.Acks:
			acks <- m
		case rewindMsg:
			if i := slices.Index(frags, uint32(m.fragment)); i >= 0 {
				c.Send(e.inbox, &wire.Batches{Flow: plan.Name(), Epoch: epoch, ReaderAddress: c.Self().Address,
					ReaderId: c.Self().Id, Fragments: frags[i : i+1], Records: records[i : i+1]})
			}
			e.drainCount(-1) // the rewind is handled
		}
	}), e.readerName(0))
	if err != nil {
		return err
	}
	e.sys.Root.Send(e.inbox, &wire.Batches{Flow: plan.Name(), Epoch: epoch, ReaderAddress: reader.Address,
		ReaderId: reader.Id, Fragments: frags, Records: records})
	const marker = 1 << 30
	e.sys.Root.Send(e.inbox, netAckMsg{sender: reader, fragment: marker})
	if m := <-acks; !slices.Equal(m.Fragments, []uint32{marker}) {
		return fmt.Errorf("the inbox's first acknowledgement is for %v, want the marker alone", m.Fragments)
	}
	return nil
}

// awaitApplied waits for every fragment of frags to acknowledge its batch
// (what), calls then (if not nil), and waits for the engine's fragments
// to have applied events.
func awaitApplied(t *testing.T, e *Engine, acks <-chan *wire.Acks, frags []uint32, events int64, what string, then func()) {
	t.Helper()
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
			t.Fatalf("%d of %d fragments never acknowledged %s", len(due), len(frags), what)
		}
	}
	if then != nil {
		then()
	}
	// A batch acknowledged while its fragment still waited is applied
	// once sent again (sendFromOtherReader): the count reaches events, and
	// never passes it.
	for {
		var applied int64
		for _, fr := range e.Fragments() {
			applied += fr.Events.Load()
		}
		if applied > events {
			t.Fatalf("the fragments applied %d events, more than the %d sent", applied, events)
		}
		if applied == events {
			return
		}
		select {
		case <-timeout:
			t.Fatalf("the fragments applied %d events, want %d", applied, events)
		case <-acks:
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// otherNodeBatches reads 2000 events of a count flow as another node's
// reader would, and encodes each fragment's batch, of placement epoch.
func otherNodeBatches(t *testing.T, epoch uint64) (plan *flowcore.Plan, frags []uint32, records [][]byte, events int64) {
	t.Helper()
	src, _ := gen.New(gen.Config{Partitions: 1, Seed: 5, Events: 2000}, word)
	plan = countFlow(t, src, "")
	r, err := plan.OpenReader(0, 0, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Poll(context.Background(), 1<<20); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	for f := range plan.Fragments() {
		b := r.Take(f)
		if b.Count == 0 {
			continue
		}
		b.Epoch = epoch
		events += int64(b.Count)
		enc, err := plan.EncodeBatch(nil, b)
		if err != nil {
			t.Fatal(err)
		}
		frags, records = append(frags, uint32(f)), append(records, enc)
	}
	if events != 2000 {
		t.Fatalf("the batches hold %d events, want 2000", events)
	}
	return plan, frags, records, events
}

// A node gains fragments in a placement change, and a reader on another
// node that applied the placement first sends them batches before this
// node has spawned them. The inbox holds those batches until the engine
// applies the placement. Handed on at once, they were dead letters, and
// their reader read nothing more of its partition until
// recovery.CreditTimeout took its credits back.
func TestInboxHoldsBatchesForFragmentsAboutToBeGained(t *testing.T) {
	plan, frags, records, events := otherNodeBatches(t, 2)
	// Epoch 1: node c owns the fragments the batches go to, a the others.
	// c is gone by epoch 2, which gives a everything: a gains them from a
	// dead owner, asks the live members for their copies (recovery.Gather)
	// and, since b answers it has none, starts them from its empty store.
	// Every name shares a's address: nothing is sent to another process,
	// and b's answers are sent here as b would send them.
	addr := freeAddr(t)
	owners := slices.Repeat([]string{"a"}, plan.Fragments())
	for _, f := range frags {
		owners[f] = "c"
	}
	e, err := Start(plan, Config{Logger: quiet(),
		Cluster: &ClusterConfig{Self: "a", Remote: addr, Epoch: 1, Fragments: owners,
			Readers: []string{"b"}, Remotes: map[string]string{"a": addr, "b": addr, "c": addr}}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	acks := make(chan *wire.Acks, 256)
	// Before the placement that gives a their fragments.
	if err := sendFromOtherReader(e, plan, 2, frags, records, acks); err != nil {
		t.Fatal(err)
	}
	if err := e.Place(&ClusterConfig{Epoch: 2, Fragments: slices.Repeat([]string{"a"}, plan.Fragments()),
		Readers: []string{"b"}, Remotes: map[string]string{"a": addr, "b": addr}}); err != nil {
		t.Fatal(err)
	}
	// b answers once every held batch reached its fragment: the
	// acknowledgements come from the fragments, not from replays, which
	// they ask for only when their wait ends.
	awaitApplied(t, e, acks, frags, events, "the batch that came before the placement that gave them to the node", func() {
		for _, f := range frags {
			e.sys.Root.Send(pa.NewPID(addr, plan.Name()+"/replica"), &wire.NoHandoff{Fragment: f, From: "b"})
		}
	})
}
