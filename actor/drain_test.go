package actor

import (
	"context"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/splice"
)

// A bounded pipeline drains without waiting for a checkpoint interval:
// once a first-stage fragment's input ended, the checkpoint that releases
// its last outputs is taken at once. With an interval of an hour, the
// engine drains only so (without it, Drained would wait that hour), and
// the second stage has applied every update.
func TestBoundedPipelineDrainsAtTheEndOfItsInput(t *testing.T) {
	const events = 5000
	src, _ := gen.New(gen.Config{Partitions: 2, Seed: 9, Events: events}, word)
	e, err := Start(twoStages(t, src), Config{Logger: quiet(), BatchSize: 64, Store: diskStore(t), CheckpointInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	<-e.Drained()
	if err := e.Err(); err != nil {
		t.Fatal(err)
	}
	res, err := splice.Evaluate(context.Background(), e, splice.Request{View: "reached", Op: splice.OpEntries, Query: splice.Query{Limit: splice.MaxLimit}})
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, en := range res.Entries {
		sum += en.Value.(int64)
	}
	// Every event updated one count once, and every update was counted.
	if sum != events {
		t.Fatalf("the second stage counted %d updates, want %d", sum, events)
	}
}
