package cluster_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/recovery"
)

// A cluster stopped whole and started again with its flow grown by a
// stage at the end (README, "Changing a flow"): the three nodes are
// stopped at once mid-input, as an operator stops a cluster to deploy,
// and started on the same data with a flow that also counts each
// subscriber's pings. Every old view and the sink equal the model over
// the whole input, as if nothing had changed; the new count holds each
// subscriber's pings from where its fragment's newest checkpoint left
// its partition on: what the flow read after it grew.
func TestOutsideClusterGrownFlowExact(t *testing.T) {
	t.Parallel()
	const fragments = 16 // ocStart's
	sp := ocSpec{Limits: []int64{1500, 1500, 1500, 1500}, Subs: []int{12, 12, 12, 12}, Rate: 300, Seed: 11}
	m := sp.model()
	c := ocStart(t, sp, 3)
	c.waitRead(c.nodes[0], ocTotal(sp)/3, 30*time.Second)
	c.stopAll()
	from := c.newestOffsets(fragments)
	sp.Grown = true
	c.respec(sp)
	for _, nd := range c.nodes {
		c.launch(nd, len(c.nodes))
	}
	for _, nd := range c.nodes {
		nd.p.WaitURL(t)
	}
	c.waitReadOut(c.nodes[0], 60*time.Second)
	c.checkViews(m, 40*time.Second)
	since, read := map[string]int64{}, int64(0)
	for p, lim := range sp.Limits {
		for off := range lim {
			sub := sp.event(p, off).Sub
			fr, err := flows.KeyPartition(sub, fragments)
			if err != nil {
				t.Fatal(err)
			}
			if off >= from[fr][p] {
				since[sub]++
				read++
			}
		}
	}
	t.Logf("%d of %d pings after the flow grew", read, ocTotal(sp))
	if read == 0 || read == ocTotal(sp) {
		t.Fatalf("the cluster stopped with %d pings still to read: no test of what grew", read)
	}
	ocUntilWhy(t, 40*time.Second, "every node's new count to equal the model", func() string {
		for _, rot := range c.rotations() {
			if why := ocKeyedEqual(t, rot, map[string]map[string]int64{"since": since}, 5, 1000); why != "" {
				return why
			}
		}
		return ""
	})
	c.checkSink(m)
}

// stopAll stops every live node at once, gracefully (SIGTERM), and waits
// for each to exit cleanly.
func (c *ocCluster) stopAll() {
	c.t.Helper()
	live := c.live()
	for _, nd := range live {
		if err := nd.p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
			c.t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, len(live))
	for i, nd := range live {
		wg.Go(func() { errs[i] = nd.p.Wait() })
	}
	wg.Wait()
	for i, nd := range live {
		nd.p.Base = ""
		if errs[i] != nil {
			c.t.Fatalf("%s exited with %v: %s", nd.name, errs[i], nd.p.Stderr())
		}
	}
}

// respec gives the nodes started from now on the input and flow of sp.
func (c *ocCluster) respec(sp ocSpec) {
	spec, err := json.Marshal(sp)
	if err != nil {
		c.t.Fatal(err)
	}
	i := slices.Index(c.common, "-spec")
	c.common[i+1] = string(spec)
}

// newestOffsets reads, with every node down, each fragment's newest
// checkpoint among the nodes' stores (its own and the standby copies):
// the offset of each of its source's partitions it restarts from.
func (c *ocCluster) newestOffsets(fragments int) [][]int64 {
	c.t.Helper()
	out := make([][]int64, fragments)
	epochs := make([]uint64, fragments)
	for _, nd := range c.nodes {
		s, err := recovery.Open(filepath.Join(nd.dir, "checkpoints"), nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			c.t.Fatal(err)
		}
		for fr := range fragments {
			man, ok, err := s.Manifest("outside", fr)
			if err != nil {
				c.t.Fatal(err)
			}
			if !ok || man.Epoch <= epochs[fr] {
				continue
			}
			epochs[fr], out[fr] = man.Epoch, make([]int64, 4)
			for p := range out[fr] {
				out[fr][p] = man.Offsets[recovery.PartitionID{Source: 0, Partition: p}]
			}
		}
		if err := s.Close(); err != nil {
			c.t.Fatal(err)
		}
	}
	for fr, offs := range out {
		if offs == nil {
			c.t.Fatalf("no checkpoint of fragment %d on any node", fr)
		}
	}
	c.t.Logf("newest checkpoints' epochs %v, offsets %v", epochs, fmt.Sprint(out))
	return out
}
