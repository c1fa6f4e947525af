package main

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/internal/exampletest"
	"github.com/tessera-streams/tessera/shard"
)

// A snapshot read of one key is one cut too: its cut never goes back on a
// node, and so a word's count never goes down from one snapshot read to
// the next — also when the word's fragment was restored from an older
// checkpoint after its owner died, and the dead node's readers start
// again behind what the other fragments applied. (Only the key's
// fragment answers a key lookup, and it is at such a cut; the fragments
// ahead of it are not.)
func TestSnapshotKeyReadCutNeverGoesBack(t *testing.T) {
	t.Parallel()
	const frags = 16
	bin := exampletest.Build(t, "wordcount")
	procs, _ := startCluster(t, bin, 3, "-seed", "73", "-fragments", fmt.Sprint(frags), "-rate", "100000", "-checkpoint-interval", "1s")
	countedAtLeast(t, procs[0].Base, 100_000)
	victim := readerNode(t, procs)
	// The most frequent word of every fragment.
	keys := make([]string, frags)
	for _, w := range Vocabulary {
		if f := shard.Fragment(shard.String(w), frags); keys[f] == "" {
			keys[f] = w
		}
	}
	probes := newReadProbes(t)
	var stay []int
	for i, p := range procs {
		if i != victim {
			stay = append(stay, i)
			// A read every 50 ms per node, each of the next key, whether
			// the ones before answered or not: some are asked in the
			// moment the readers replay behind the fragments ahead.
			probes.wg.Add(1)
			go func() {
				defer probes.wg.Done()
				tick := time.NewTicker(50 * time.Millisecond)
				defer tick.Stop()
				for j := 0; ; j++ {
					select {
					case <-probes.ctx.Done():
						return
					case <-tick.C:
					}
					probes.wg.Add(1)
					go func() {
						defer probes.wg.Done()
						probes.keep(probes.get(i, p.Base, "/v1/views/words/keys/"+keys[j%frags]+"?consistency=snapshot&timeout=8s", nil))
					}()
				}
			}()
		}
	}
	until(t, 30*time.Second, "reads before the kill", func() bool { return probes.count() >= frags*len(stay) })
	if err := procs[victim].Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	procs[victim].Wait()
	killed := time.Now()
	waitFresh(t, procs[stay[0]].Base, killed)
	time.Sleep(2 * time.Second)
	answers := probes.stop()
	type seen struct {
		a   readAnswer
		cut map[string]int64
	}
	prior := map[int][]seen{}
	bad := 0
	report := func(format string, args ...any) {
		if bad++; bad <= 6 {
			t.Errorf(format, args...)
		}
	}
	for _, a := range answers {
		if a.err != nil || a.status != http.StatusOK || a.reply.Cut == nil {
			continue
		}
		u, _ := url.Parse(a.path)
		key := strings.TrimPrefix(u.Path, "/v1/views/words/keys/")
		for _, b := range prior[a.node] {
			if b.a.end.After(a.start) {
				continue
			}
			back := ""
			for p, off := range b.cut {
				if a.reply.Cut.Offsets[p] < off {
					back = fmt.Sprintf("%s at %d, after %d", p, a.reply.Cut.Offsets[p], off)
				}
			}
			bkey := strings.TrimPrefix(strings.SplitN(b.a.path, "?", 2)[0], "/v1/views/words/keys/")
			switch {
			case bkey == key && a.reply.Value < b.a.reply.Value:
				report("node %d: %s counts %d in a snapshot read asked %v after the kill, after %d in one before it (%s):\n  %s\n  %s",
					a.node, key, a.reply.Value, a.start.Sub(killed).Round(time.Millisecond), b.a.reply.Value, back, a, b.a)
			case back != "":
				report("node %d: a snapshot read of %s asked %v after the kill has an older cut than one before it (%s):\n  %s\n  %s",
					a.node, key, a.start.Sub(killed).Round(time.Millisecond), back, a, b.a)
			default:
				continue
			}
			break
		}
		prior[a.node] = append(prior[a.node], seen{a, a.reply.Cut.Offsets})
	}
	statuses := map[int]int{}
	var slowest time.Duration
	for _, a := range answers {
		statuses[a.status]++
		slowest = max(slowest, a.end.Sub(a.start))
	}
	t.Logf("%d snapshot key reads (%v; the slowest took %v), %d went back", len(answers), statuses, slowest.Round(time.Millisecond), bad)
}
