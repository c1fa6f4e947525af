package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tessera-streams/tessera/examples/transport/pipeline"
	"github.com/tessera-streams/tessera/internal/exampletest"
)

// -produce writes the simulation into a topic of kfake (in a process
// of its own), and -source kafka then computes from the topic exactly what
// the sequential program computes from the simulation — what the
// embedded source gives too (TestKAnonymityInEveryQueryForm) — while a
// malformed record in the topic is dead-lettered, not applied.
func TestKafkaSourceSameAsSimulation(t *testing.T) {
	addrs := exampletest.KafkaBroker(t) // stopped after the example (cleanups run last first)
	brokers := strings.Join(addrs, ",")
	const k = 2
	args, s, want := testArgs(t, 800, 16, "-k", fmt.Sprint(k), "-brokers", brokers, "-topic", "pings")

	var out, errOut strings.Builder
	if err := run(context.Background(), append(args, "-produce"), &out, &errOut); err != nil {
		t.Fatalf("-produce: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), fmt.Sprintf("produced %d pings", s.Pings())) {
		t.Fatalf("-produce printed %q, want %d pings", out.String(), s.Pings())
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic("pings"),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	bad := []*kgo.Record{{Partition: 1, Value: []byte("not a ping")}, {Partition: 2, Value: AppendPing(nil, s.Parts[0][0])[:20]}}
	bad = append(bad, &kgo.Record{Partition: 3, Value: AppendPing(nil, s.Parts[0][0])})
	bad[2].Value[8] = 0x7f // cell 2^31-ish: no such cell
	if err := cl.ProduceSync(context.Background(), bad...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	// A topic of another number of partitions is refused.
	if err := run(context.Background(), append(args, "-partitions", "3", "-produce"), &out, &errOut); err == nil ||
		!strings.Contains(err.Error(), "pings has 4 partitions, the simulation 3") {
		t.Fatalf("-produce into a topic of 4 partitions with -partitions 3: %v", err)
	}
	if err := run(context.Background(), append(args, "-partitions", "3", "-source", "kafka"), &out, &errOut); err == nil ||
		!strings.Contains(err.Error(), "pings has 4 partitions, the simulation 3") {
		t.Fatalf("-source kafka from a topic of 4 partitions with -partitions 3: %v", err)
	}

	base := exampletest.Run(t, run, "/v1/cluster", append(args, "-source", "kafka", "-bounded", "-http", exampletest.FreePort(t))...)
	waitComplete(t, base, len(want.Trips))
	wantOD, heldOD := published(want.Hourly, k)
	wantDay, _ := published(want.Daily, k)
	moving := map[pipeline.WindowKey]crowd{}
	for key, c := range want.Moving {
		moving[key] = crowd{c}
	}
	wantMoving, _ := published(moving, k)
	if len(wantOD) == 0 || heldOD == 0 || len(wantMoving) == 0 {
		t.Fatalf("%d OD cells published, %d held back, %d crowds: the input tests nothing", len(wantOD), heldOD, len(wantMoving))
	}
	sameEntries(t, "od", pages(t, base, "od", "", 50, k), wantOD)
	sameEntries(t, "od-day", pages(t, base, "od-day", "", 50, k), wantDay)
	sameEntries(t, "moving", pages(t, base, "moving", "", 50, k), wantMoving)
	var dl struct{ Total int64 }
	exampletest.GetJSON(t, base+"/v1/deadletters", &dl)
	if dl.Total != 3 {
		t.Fatalf("%d dead letters, want the 3 malformed records", dl.Total)
	}
}

// Flags that cannot work are clear errors before anything starts.
func TestSourceFlagErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-source", "files"}, "-source must be sim or kafka"},
		{[]string{"-source", "kafka"}, "need -brokers and -topic"},
		{[]string{"-produce"}, "need -brokers and -topic"},
		{[]string{"-source", "kafka", "-brokers", "127.0.0.1:1", "-topic", ""}, "need -brokers and -topic"},
	} {
		var out, errOut strings.Builder
		err := run(context.Background(), append([]string{"-subscribers", "10", "-zones", "4"}, c.args...), &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error with %q", c.args, err, c.want)
		}
	}
}
