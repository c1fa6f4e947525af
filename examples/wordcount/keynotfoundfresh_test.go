package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/internal/exampletest"
	"github.com/tessera-streams/tessera/shard"
	"github.com/tessera-streams/tessera/splice"
)

// A key lookup whose fragment's owner just died is answered from a
// standby's copy of the fragment's last checkpoint, or by the fragment
// restored from it before it replayed what followed: as of older offsets
// than the answers before. Every answer says how fresh it is, a key not
// found too: its 404 states the fragment's offsets (and stale, from a
// copy), below which the key is indeed absent — else the client is told
// that a word the node counted a moment ago does not exist, with nothing
// to tell that answer from a true one. (Checkpoints every 10 s: the
// copies hold almost nothing when the owner dies.)
func TestKeyNotFoundAfterOwnerKilledSaysHowFresh(t *testing.T) {
	t.Parallel()
	const n, frags, seed = 1_200_000, 16, 61 // 60 s of input: the test ends long before
	bin := exampletest.Build(t, "wordcount")
	procs, _ := startCluster(t, bin, 3, "-events", fmt.Sprint(n), "-seed", fmt.Sprint(seed), "-fragments", fmt.Sprint(frags),
		"-rate", "20000", "-checkpoint-interval", "10s")
	countedAtLeast(t, procs[0].Base, 30_000)
	var victim struct{ Fragments []struct{ Fragment int } }
	exampletest.GetJSON(t, procs[2].Base+"/v1/cluster?scope=local", &victim)
	var owned []int
	for _, f := range victim.Fragments {
		owned = append(owned, f.Fragment)
	}
	// Words the killed node's fragments hold, as node 0 answers them now.
	var keys []string
	for w := range allWords(t, procs[0].Base) {
		if slices.Contains(owned, shard.Fragment(shard.String(w), frags)) && len(keys) < 200 {
			keys = append(keys, w)
		}
	}
	if len(keys) == 0 {
		t.Fatalf("the node to kill holds no word (fragments %v)", owned)
	}
	o := newInputOracle(n, 4, seed, frags, keys...)
	type lookup struct {
		key    string
		at     time.Time
		status int
		stale  bool
		body   string
	}
	var mu sync.Mutex
	var lookups []lookup
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := keys[i%len(keys)]
				status, body := getStatus(t, procs[0].Base+"/v1/views/words/keys/"+key, nil)
				var a struct{ Stale bool }
				json.Unmarshal([]byte(body), &a)
				mu.Lock()
				lookups = append(lookups, lookup{key, time.Now(), status, a.Stale, body})
				mu.Unlock()
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	if err := procs[2].Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	procs[2].Wait()
	killed := time.Now()
	waitFresh(t, procs[0].Base, killed)
	close(stop)
	wg.Wait()
	var stale, notFound, unavailable, bad int
	for _, l := range lookups {
		switch {
		case l.status == http.StatusOK && l.stale:
			stale++
		case l.status == http.StatusNotFound:
			notFound++
			var a struct {
				Error     string
				Freshness []splice.Freshness
			}
			json.Unmarshal([]byte(l.body), &a)
			why := ""
			switch {
			case len(a.Freshness) != 1:
				why = "does not say how fresh it is"
			case o.word(l.key, a.Freshness[0].Offsets) != 0:
				why = fmt.Sprintf("the input holds it %d times below the offsets it states", o.word(l.key, a.Freshness[0].Offsets))
			}
			if why != "" {
				if bad++; bad <= 5 {
					t.Errorf("word %s, counted before, looked up %v after the kill: not found, and the answer %s: %s",
						l.key, l.at.Sub(killed).Round(time.Millisecond), why, l.body)
				}
			}
		case l.status == http.StatusServiceUnavailable:
			unavailable++
		}
	}
	t.Logf("%d lookups of %d words: %d stale, %d not found, %d unavailable", len(lookups), len(keys), stale, notFound, unavailable)
}
