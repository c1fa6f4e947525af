package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/internal/exampletest"
	"github.com/tessera-streams/tessera/shard"
	"github.com/tessera-streams/tessera/splice"
)

// Reads while fragments move: every answer of the HTTP read path, on the
// nodes that stay, is checked against the generator's input, which the
// test knows exactly (the event at a partition and offset is a pure
// function of the seed). A fragment's answer states its offsets, so a
// latest answer must count exactly what the input holds below them, and a
// snapshot answer exactly what lies below its cut.

// inputOracle counts the generator's words below any offsets.
type inputOracle struct {
	n        int64
	parts    int
	byFrag   [][][]int64          // per partition, per fragment: the offsets of its words, in order
	byWord   map[string][][]int64 // per word asked for, per partition: its offsets, in order
	fragOf   map[string]int
	limits   []int64
	partName []string
}

func newInputOracle(n int64, partitions int, seed uint64, frags int, words ...string) *inputOracle {
	src, _ := gen.New(gen.Config{Partitions: partitions, Seed: seed, Events: n}, GenWord)
	o := &inputOracle{n: n, parts: partitions, byWord: map[string][][]int64{}, fragOf: map[string]int{}}
	for _, w := range Vocabulary {
		o.fragOf[w] = shard.Fragment(shard.String(w), frags)
	}
	for _, w := range words {
		o.byWord[w] = make([][]int64, partitions)
	}
	for p := range partitions {
		o.partName = append(o.partName, fmt.Sprintf("lines/%d", p))
		o.limits = append(o.limits, src.Limit(p))
		byFrag := make([][]int64, frags)
		for off := range src.Limit(p) {
			w := src.Event(p, off).Text
			f := o.fragOf[w]
			byFrag[f] = append(byFrag[f], off)
			if ws, ok := o.byWord[w]; ok {
				ws[p] = append(ws[p], off)
			}
		}
		o.byFrag = append(o.byFrag, byFrag)
	}
	return o
}

func countBelow(offs []int64, end int64) int64 {
	return int64(sort.Search(len(offs), func(i int) bool { return offs[i] >= end }))
}

// fragment is the number of words fragment f holds once it applied every
// partition up to offs.
func (o *inputOracle) fragment(f int, offs map[string]int64) int64 {
	var n int64
	for p := range o.parts {
		n += countBelow(o.byFrag[p][f], offs[o.partName[p]])
	}
	return n
}

// word is the count of w below offs.
func (o *inputOracle) word(w string, offs map[string]int64) int64 {
	var n int64
	for p, list := range o.byWord[w] {
		n += countBelow(list, offs[o.partName[p]])
	}
	return n
}

// final is offsets at the end of the input.
func (o *inputOracle) final() map[string]int64 {
	m := map[string]int64{}
	for p, l := range o.limits {
		m[o.partName[p]] = l
	}
	return m
}

// readAnswer is one answer to a read, kept for the checks after the run.
type readAnswer struct {
	node        int
	path        string
	start, end  time.Time
	status      int
	contentType string
	retryAfter  string
	body        []byte
	err         error
	// ryw: the min_offsets token the read carried (read-your-writes).
	ryw map[string]int64
	// reply is the body decoded (as the probe gets it: the decoding,
	// slow with the race detector, overlaps the run), or why not.
	reply     snapAnswer
	decodeErr error
}

func (a readAnswer) String() string {
	b := a.body
	if len(b) > 600 {
		b = append(slices.Clip(b[:600]), "..."...)
	}
	return fmt.Sprintf("node %d GET %s at %s (took %v): %d %s", a.node, a.path, a.start.Format("15:04:05.000"),
		a.end.Sub(a.start).Round(time.Millisecond), a.status, b)
}

// readProbes asks reads of nodes in loops until stopped and keeps every
// answer.
type readProbes struct {
	mu      sync.Mutex
	answers []readAnswer
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	client  *http.Client
}

func newReadProbes(t *testing.T) *readProbes {
	ctx, cancel := context.WithCancel(context.Background())
	p := &readProbes{ctx: ctx, cancel: cancel, client: &http.Client{Timeout: 30 * time.Second}}
	t.Cleanup(func() { p.stop() })
	return p
}

func (p *readProbes) get(node int, base, path string, ryw map[string]int64) readAnswer {
	a := readAnswer{node: node, path: path, start: time.Now(), ryw: ryw}
	req, _ := http.NewRequestWithContext(p.ctx, http.MethodGet, base+path, nil)
	resp, err := p.client.Do(req)
	if err == nil {
		a.body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		a.status, a.contentType, a.retryAfter = resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Retry-After")
	}
	a.end, a.err = time.Now(), err
	if err == nil {
		a.decodeErr = json.Unmarshal(a.body, &a.reply)
	}
	return a
}

func (p *readProbes) keep(a readAnswer) {
	if p.ctx.Err() != nil {
		return // stopped mid-request
	}
	p.mu.Lock()
	p.answers = append(p.answers, a)
	p.mu.Unlock()
}

// loop asks path of the node at base again and again: a whole keyed
// view every 300 ms (its answers cost the checks most), the others every
// 30 ms.
func (p *readProbes) loop(node int, base, path string) {
	every := 30 * time.Millisecond
	if strings.HasPrefix(path, "/v1/views/words?") {
		every = 300 * time.Millisecond
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for p.ctx.Err() == nil {
			p.keep(p.get(node, base, path, nil))
			select {
			case <-p.ctx.Done():
			case <-time.After(every):
			}
		}
	}()
}

// every asks path of the node at base every interval, each read on its
// own, whether the ones before it answered or not.
func (p *readProbes) every(node int, base, path string, interval time.Duration) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-p.ctx.Done():
				return
			case <-tick.C:
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.keep(p.get(node, base, path, nil))
			}()
		}
	}()
}

// readYourWrites takes the cut of a snapshot answer on one node (any,
// the one about to die too) and asks the others for a snapshot and a
// latest read at least as new.
func (p *readProbes) readYourWrites(bases []string, from, to []int) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for i := 0; p.ctx.Err() == nil; i++ {
			src := from[i%len(from)]
			a := p.get(src, bases[src], "/v1/views/total?consistency=snapshot&timeout=8s", nil)
			var ans snapAnswer
			if a.err != nil || a.status != http.StatusOK || json.Unmarshal(a.body, &ans) != nil || ans.Cut == nil {
				time.Sleep(30 * time.Millisecond)
				continue // the token's node may be the one that died
			}
			token := ans.Cut.Offsets
			dst := to[i%len(to)]
			if dst == src {
				dst = to[(i+1)%len(to)]
			}
			q := url.QueryEscape(splice.FormatOffsets(token))
			p.keep(p.get(dst, bases[dst], "/v1/views/total?consistency=snapshot&timeout=8s&min_offsets="+q, token))
			p.keep(p.get(dst, bases[dst], "/v1/views/words/keys/w0000?timeout=8s&min_offsets="+q, token))
		}
	}()
}

func (p *readProbes) stop() []readAnswer {
	p.cancel()
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.answers)
}

func (p *readProbes) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.answers)
}

// oracleWords are the words whose counts the checks know: those of
// readPaths, and the top ones.
var oracleWords = []string{"w0000", "w0001", "w0002", "w0003", "w0004", "w0005", "w0006", "w0007", "w0008", "w0009", "w0010", "w0011", "w0777"}

// readPaths are the reads each node is asked in a loop.
var readPaths = []string{
	"/v1/views/total",
	"/v1/views/words?limit=100000",
	"/v1/views/words?top=5",
	"/v1/views/words?top=5&consistency=snapshot&timeout=8s",
	"/v1/views/words/keys/w0000",
	"/v1/views/words/keys/w0777",
	"/v1/views/total?consistency=snapshot&timeout=8s",
	"/v1/views/words?consistency=snapshot&limit=100000&timeout=8s",
	"/v1/views/words/keys/w0777?consistency=snapshot&timeout=8s",
}

// readLimit bounds how long any read may take, however loaded the
// machine: a correctness bound (a read never hangs), not a speed test.
const readLimit = 10 * time.Second

// checkReads checks every answer: one that is not right is reported with
// the answer itself.
//
// Nodes in gone stop during the run: a read of one may find no server.
func checkReads(t *testing.T, o *inputOracle, frags int, answers []readAnswer, gone ...int) {
	t.Helper()
	bad := 0
	fail := func(a readAnswer, format string, args ...any) {
		bad++
		if bad <= 15 {
			t.Errorf("%s\n  %s", fmt.Sprintf(format, args...), a)
		}
	}
	stats := map[string]int{}
	// A key read may find no key before the input brought it; once a node
	// answered it, a 404 for it is wrong.
	seen := map[string]time.Time{}
	for _, a := range answers {
		k := fmt.Sprint(a.node, a.path)
		if a.status == http.StatusOK && (seen[k].IsZero() || a.end.Before(seen[k])) {
			seen[k] = a.end
		}
	}
	type cutAt struct {
		a   readAnswer
		cut map[string]int64
	}
	cuts := map[int][]cutAt{} // per node, its snapshot answers' cuts
	for _, a := range answers {
		if a.err != nil && slices.Contains(gone, a.node) {
			stats["gone"]++
			continue
		}
		if a.err != nil {
			fail(a, "no answer: %v", a.err)
			continue
		}
		if took := a.end.Sub(a.start); took > readLimit {
			fail(a, "took %v, more than %v", took, readLimit)
		}
		if mt, _, _ := mime.ParseMediaType(a.contentType); mt != "application/json" {
			fail(a, "content type %q, not JSON", a.contentType)
			continue
		}
		r := a.reply
		if a.decodeErr != nil {
			fail(a, "not JSON: %v", a.decodeErr)
			continue
		}
		u, _ := url.Parse(a.path)
		q := u.Query()
		snapshot := q.Get("consistency") == "snapshot"
		waits := snapshot || q.Has("min_offsets")
		key, isKey := strings.CutPrefix(u.Path, "/v1/views/words/keys/")
		switch a.status {
		case http.StatusOK:
		case http.StatusServiceUnavailable:
			stats["503"]++
			if r.Error == "" || a.retryAfter == "" {
				fail(a, "a 503 without an error and Retry-After")
			}
			continue
		case http.StatusNotFound:
			stats["404"]++
			if first := seen[fmt.Sprint(a.node, a.path)]; !isKey || r.Error == "" || !first.IsZero() && first.Before(a.start) {
				fail(a, "not found, after the node answered it at %s", first.Format("15:04:05.000"))
			}
			continue
		case http.StatusGatewayTimeout:
			stats["504"]++
			if stats["504"] <= 3 {
				t.Logf("a 504: %s", a)
			}
			if !waits || r.Error == "" {
				fail(a, "a 504 to a read that waits for nothing, or without an error")
			}
			continue
		default:
			fail(a, "status %d", a.status)
			continue
		}
		stats["200"]++
		if r.Stale {
			stats["stale"]++
		}
		stale := slices.ContainsFunc(r.Freshness, func(f splice.Freshness) bool { return f.Stale })
		if stale != r.Stale {
			fail(a, "stale %v, but a fragment's freshness says stale %v", r.Stale, stale)
		}
		if r.Cut == nil {
			fail(a, "no cut")
			continue
		}
		// What the answer counts, and what the input holds below the
		// offsets it states: per fragment for a latest read, below the
		// cut for a snapshot.
		got := r.Value
		if q.Has("top") {
			// The top words' counts, each as of its fragment's offsets
			// (a latest read's, from what the fragment last published).
			if len(r.Entries) != 5 || len(r.Freshness) != frags {
				fail(a, "%d top entries from %d fragments", len(r.Entries), len(r.Freshness))
				continue
			}
			for _, e := range r.Entries {
				if _, ok := o.byWord[e.Key]; !ok {
					fail(a, "%s is among the top words", e.Key)
					continue
				}
				fr := r.Freshness[o.fragOf[e.Key]]
				if want := o.word(e.Key, fr.Offsets); fr.Fragment != o.fragOf[e.Key] || e.Value != want {
					fail(a, "%s counts %d; the input below the offsets of its fragment %d holds %d", e.Key, e.Value, fr.Fragment, want)
				}
			}
			got = -1 // not the whole view
		}
		if strings.HasPrefix(u.Path, "/v1/views/words") && !isKey && !q.Has("top") {
			if r.More {
				fail(a, "more than 100000 words")
			}
			got = 0
			for _, e := range r.Entries {
				got += e.Value
			}
		}
		if isKey && len(r.Freshness) != 1 || !isKey && len(r.Freshness) != frags {
			fail(a, "%d fragments answered", len(r.Freshness))
			continue
		}
		var want int64
		for _, f := range r.Freshness {
			if isKey {
				want += o.word(key, f.Offsets)
			} else {
				want += o.fragment(f.Fragment, f.Offsets)
			}
		}
		if got != want && got != -1 {
			fail(a, "counts %d; the input below the offsets its fragments state holds %d", got, want)
		}
		if snapshot {
			if r.Cut.Consistency != splice.Snapshot || len(r.Cut.Offsets) != o.parts {
				fail(a, "cut %+v is not a snapshot of the %d partitions", r.Cut, o.parts)
				continue
			}
			if r.Stale {
				fail(a, "a snapshot answered from a standby's copy")
			}
			for _, f := range r.Freshness {
				if !maps.Equal(f.Offsets, r.Cut.Offsets) {
					fail(a, "fragment %d at %v, the cut is %v", f.Fragment, f.Offsets, r.Cut.Offsets)
					break
				}
			}
			cutWant := cutSum(r.Cut)
			if isKey {
				cutWant = o.word(key, r.Cut.Offsets)
			}
			if got != cutWant && got != -1 {
				fail(a, "a snapshot counts %d, the input below its cut holds %d", got, cutWant)
			}
			// Cuts never go back on a node: no answer that began after
			// another one of the node ended has an older cut.
			for _, b := range cuts[a.node] {
				if b.a.end.After(a.start) {
					continue
				}
				for p, off := range b.cut {
					if r.Cut.Offsets[p] < off {
						fail(a, "the cut went back on node %d: %s at %d, after %d in an earlier answer:\n  %s", a.node, p, r.Cut.Offsets[p], off, b.a)
					}
				}
			}
			cuts[a.node] = append(cuts[a.node], cutAt{a, r.Cut.Offsets})
		} else {
			if r.Cut.Consistency != splice.Latest || !maps.Equal(r.Cut.Offsets, splice.LowerCut(r.Freshness)) {
				fail(a, "a latest answer's cut %+v is not the least of its fragments' offsets", r.Cut)
			}
		}
		for p, off := range a.ryw {
			if r.Cut.Offsets[p] < off {
				fail(a, "read-your-writes: the cut has %s at %d, the token asked for %d", p, r.Cut.Offsets[p], off)
			}
		}
		if r.Complete {
			stats["complete"]++
			fin := o.n
			if isKey {
				fin = o.word(key, o.final())
			}
			if got != fin && got != -1 {
				fail(a, "complete, with %d; the whole input holds %d", got, fin)
			}
		}
	}
	if bad > 15 {
		t.Errorf("... %d wrong answers in all", bad)
	}
	t.Logf("%d answers: %v", len(answers), stats)
}

// viewWatch follows a view's watch stream as a client does: it applies
// every event it receives to its copy of the view. It reads the stream as
// fast as it comes and applies the events later (converges): a node ends
// the stream of a client that does not read an event in time, and this
// test process, with the race detector, decodes JSON slowly.
type viewWatch struct {
	mu     sync.Mutex
	raw    []watchEvent // received, not yet applied
	ended  string       // how the stream ended: "" while it runs
	cancel context.CancelFunc
	done   chan struct{}

	// The client's copy of the view, from the events applied so far.
	total   int64
	words   map[string]int64
	events  map[string]int
	failed  string // an "error" event, or one the client does not know
	history []string
	// check, if set, says how the copy after an event differs from the
	// view as of the offsets the event states ("" if it does not).
	check   func(total int64, words map[string]int64, fresh []splice.Freshness) string
	wrong   []string
	checked int
}

type watchEvent struct {
	at   time.Time
	name string
	data []byte
}

func watchView(t *testing.T, base, path string) *viewWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &viewWatch{words: map[string]int64{}, events: map[string]int{}, cancel: cancel, done: make(chan struct{})}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	t.Cleanup(w.stop)
	go func() {
		defer close(w.done)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 16<<20)
		ev := ""
		for sc.Scan() {
			line := sc.Text()
			if e, ok := strings.CutPrefix(line, "event: "); ok {
				ev = e
				continue
			}
			if data, ok := strings.CutPrefix(line, "data: "); ok {
				w.mu.Lock()
				w.raw = append(w.raw, watchEvent{time.Now(), ev, []byte(data)})
				w.mu.Unlock()
			}
		}
		w.mu.Lock()
		if w.ended == "" {
			w.ended = fmt.Sprintf("stream closed at %s (%v)", time.Now().Format("15:04:05.000"), sc.Err())
		}
		w.mu.Unlock()
	}()
	return w
}

// applyReceived applies the events received so far; w.mu is held.
func (w *viewWatch) applyReceived() {
	for _, e := range w.raw {
		var m struct {
			Value   int64
			Entries []struct {
				Key   string
				Value int64
			}
			Removed   []string
			Stale     bool
			Freshness []splice.Freshness
		}
		json.Unmarshal(e.data, &m)
		w.events[e.name]++
		switch e.name {
		case "snapshot":
			w.total = m.Value
			clear(w.words)
			for _, x := range m.Entries {
				w.words[x.Key] = x.Value
			}
		case "value":
			w.total = m.Value
		case "changes":
			for _, x := range m.Entries {
				w.words[x.Key] = x.Value
			}
			for _, k := range m.Removed {
				delete(w.words, k)
			}
		case "unavailable":
		default:
			w.failed = fmt.Sprintf("event %q: %s", e.name, e.data)
		}
		w.history = append(w.history, fmt.Sprintf("%s %s total=%d stale=%v words=%d", e.at.Format("15:04:05.000"), e.name, w.total, m.Stale, len(w.words)))
		if w.check != nil && e.name != "unavailable" && w.failed == "" {
			w.checked++
			if why := w.check(w.total, w.words, m.Freshness); why != "" && len(w.wrong) < 5 {
				w.wrong = append(w.wrong, fmt.Sprintf("after the %s event of %s: %s", e.name, e.at.Format("15:04:05.000"), why))
			}
		}
	}
	w.raw = nil
}

func (w *viewWatch) stop() {
	w.cancel()
	<-w.done
}

// converges waits up to limit for the watch's copy of the view to be
// want (a total, or words), and fails unless it gets there or the
// stream said it ended.
func (w *viewWatch) converges(t *testing.T, limit time.Duration, what string, total int64, words map[string]int64) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		w.mu.Lock()
		w.applyReceived()
		ok := words == nil && w.total == total || words != nil && maps.Equal(w.words, words)
		ended := w.ended
		if w.failed != "" {
			ended = w.failed
		}
		diff := []string{}
		if !ok && words != nil {
			for k, v := range words {
				if w.words[k] != v && len(diff) < 10 {
					diff = append(diff, fmt.Sprintf("%s: %d, want %d", k, w.words[k], v))
				}
			}
		}
		got := w.total
		for _, why := range w.wrong {
			t.Errorf("%s watch: %s", what, why)
		}
		w.wrong = nil
		events := maps.Clone(w.events)
		hist := strings.Join(w.history[max(0, len(w.history)-30):], "\n  ")
		w.mu.Unlock()
		if ok {
			t.Logf("%s watch: %v, %d states checked", what, events, w.checked)
			return
		}
		if ended != "" {
			t.Logf("%s watch ended: %s (%v)", what, ended, events)
			return
		}
		if time.Now().After(deadline) {
			if words == nil {
				t.Errorf("%s watch holds %d after the input ended, the view is %d; events %v; last:\n  %s", what, got, total, events, hist)
			} else {
				t.Errorf("%s watch holds words that differ from the view's after the input ended: %v; events %v; last:\n  %s", what, diff, events, hist)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// watchChecks has the watches check, after every event, that the copy
// counts exactly the input below the offsets the event states, fragment
// by fragment.
func watchChecks(o *inputOracle, frags int, words, total *viewWatch) {
	fragments := func(fresh []splice.Freshness) ([]int64, string) {
		if len(fresh) != frags {
			return nil, fmt.Sprintf("%d fragments' freshness", len(fresh))
		}
		want := make([]int64, frags)
		for _, f := range fresh {
			want[f.Fragment] = o.fragment(f.Fragment, f.Offsets)
		}
		return want, ""
	}
	words.mu.Lock()
	words.check = func(_ int64, ws map[string]int64, fresh []splice.Freshness) string {
		want, why := fragments(fresh)
		if why != "" {
			return why
		}
		got := make([]int64, frags)
		for w, c := range ws {
			got[o.fragOf[w]] += c
		}
		for f := range got {
			if got[f] != want[f] {
				return fmt.Sprintf("fragment %d's words count %d, the input below its offsets %v holds %d", f, got[f], fresh[f].Offsets, want[f])
			}
		}
		return ""
	}
	words.mu.Unlock()
	total.mu.Lock()
	total.check = func(v int64, _ map[string]int64, fresh []splice.Freshness) string {
		want, why := fragments(fresh)
		if why != "" {
			return why
		}
		var sum int64
		for _, n := range want {
			sum += n
		}
		if v != sum {
			return fmt.Sprintf("the total is %d, the input below the fragments' offsets holds %d", v, sum)
		}
		return ""
	}
	total.mu.Unlock()
}

// followWatches follows three watches — every word on wordsBase, the
// total and the top five on totalBase — whose copies must, after every
// event, count exactly the input below the offsets the event states; the
// function it returns waits until they end at the view's final value, of
// the input of n events of seed.
func followWatches(t *testing.T, o *inputOracle, frags int, wordsBase, totalBase string) func(n int64, seed uint64) {
	t.Helper()
	words := watchView(t, wordsBase, "/v1/views/words/watch?limit=100000&interval=250ms")
	total := watchView(t, totalBase, "/v1/views/total/watch?interval=250ms")
	watchChecks(o, frags, words, total)
	top := watchView(t, totalBase, "/v1/views/words/watch?top=5&interval=250ms")
	top.check = func(_ int64, ws map[string]int64, fresh []splice.Freshness) string {
		if len(fresh) != frags {
			return fmt.Sprintf("%d fragments' freshness", len(fresh))
		}
		for w, c := range ws {
			if _, ok := o.byWord[w]; !ok {
				return fmt.Sprintf("%s among the top words", w)
			}
			if want := o.word(w, fresh[o.fragOf[w]].Offsets); c != want {
				return fmt.Sprintf("%s counts %d, the input below its fragment's offsets holds %d", w, c, want)
			}
		}
		if len(ws) != 5 {
			return fmt.Sprintf("%d top words", len(ws))
		}
		return ""
	}
	return func(n int64, seed uint64) {
		t.Helper()
		total.converges(t, 10*time.Second, "total", n, nil)
		all := sequentialCounts(n, 4, seed)
		words.converges(t, 10*time.Second, "words", 0, all)
		best := slices.SortedFunc(maps.Keys(all), func(a, b string) int {
			if all[a] != all[b] {
				return int(all[b] - all[a])
			}
			return strings.Compare(a, b)
		})[:5]
		top5 := map[string]int64{}
		for _, w := range best {
			top5[w] = all[w]
		}
		top.converges(t, 10*time.Second, "top words", 0, top5)
	}
}

// readsAcrossMove runs a bounded input on three nodes, asks the nodes in
// stay (and in leaving, until they are gone) every read of readPaths in
// loops, with read-your-writes tokens from every node, and follows three
// watches (the total, every word, the top five) while move moves
// fragments; then checks every answer, and that the watches end at the
// view's final value.
//
// move may have a node it starts asked the same reads (probe), as soon
// as it serves.
func readsAcrossMove(t *testing.T, seed uint64, stay, leaving []int, move func(bin string, procs []*exampletest.Proc, gossip []string, probe func(base string))) {
	const n, frags = 1_200_000, 16
	bin := exampletest.Build(t, "wordcount")
	o := newInputOracle(n, 4, seed, frags, oracleWords...)
	procs, gossip := startCluster(t, bin, 3, "-events", fmt.Sprint(n), "-seed", fmt.Sprint(seed), "-fragments", fmt.Sprint(frags),
		"-rate", "120000", "-checkpoint-interval", "200ms")
	bases := make([]string, len(procs))
	for i, p := range procs {
		bases[i] = p.Base
	}
	countedAtLeast(t, bases[stay[0]], 100_000)
	converged := followWatches(t, o, frags, bases[stay[0]], bases[stay[len(stay)-1]])
	probes := newReadProbes(t)
	for _, node := range append(slices.Clone(stay), leaving...) {
		for _, path := range readPaths {
			probes.loop(node, bases[node], path)
		}
	}
	probes.readYourWrites(bases, []int{0, 1, 2}, stay)
	until(t, 30*time.Second, "answers before the move", func() bool { return probes.count() >= 50 })
	moved := time.Now()
	move(bin, procs, gossip, func(base string) {
		for _, path := range readPaths {
			probes.loop(len(procs), base, path)
		}
	})
	t.Logf("moved in %v", time.Since(moved).Round(time.Millisecond))
	waitFinished(t, bases[stay[0]], n)
	checkReads(t, o, frags, probes.stop(), leaving...)
	converged(n, seed)
}

// Reads on the two nodes that stay while the third, an owner of
// fragments and a reader of partitions, is killed with SIGKILL.
func TestReadsWhileOwnerKilled(t *testing.T) {
	t.Parallel()
	readsAcrossMove(t, 41, []int{0, 1}, nil, func(_ string, procs []*exampletest.Proc, _ []string, _ func(string)) {
		if err := procs[2].Cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		procs[2].Wait()
	})
}

// Reads on the three nodes, and on the fourth from the moment it serves,
// while the fourth joins and takes fragments over by hand-off.
func TestReadsWhileNodeJoins(t *testing.T) {
	t.Parallel()
	readsAcrossMove(t, 43, []int{0, 1, 2}, nil, func(bin string, procs []*exampletest.Proc, gossip []string, probe func(string)) {
		p := startNode(t, bin, "n3", exampletest.FreePort(t), gossip[0], 1, "-events", "1200000", "-seed", "43",
			"-fragments", "16", "-rate", "120000", "-checkpoint-interval", "200ms")
		p.WaitURL(t)
		probe(p.Base) // the new node answers for the cluster from the start
		waitRunsFragments(t, p.Base, "the new node")
	})
}

// Reads on the three nodes while one leaves (SIGTERM) and hands its
// fragments off: the leaving one answers right until it is gone.
func TestReadsWhileNodeLeaves(t *testing.T) {
	t.Parallel()
	readsAcrossMove(t, 47, []int{0, 2}, []int{1}, func(_ string, procs []*exampletest.Proc, _ []string, _ func(string)) {
		if err := procs[1].Cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := procs[1].Wait(); err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, procs[1].Stderr())
		}
	})
}

// Reads on the two nodes that stay, and on the third from the moment it
// serves again, while the third is killed and, once the others took its
// fragments over, restarted on its data: it comes back with the
// checkpoints of the fragments it owned and takes some back by hand-off.
func TestReadsWhileKilledNodeRejoins(t *testing.T) {
	t.Parallel()
	readsAcrossMove(t, 71, []int{0, 1}, nil, func(bin string, procs []*exampletest.Proc, _ []string, probe func(string)) {
		args := slices.Clone(procs[2].Cmd.Args[1:])
		if err := procs[2].Cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		procs[2].Wait()
		waitFresh(t, procs[0].Base, time.Now())
		p := exampletest.Start(t, bin, args...)
		p.WaitURL(t)
		probe(p.Base)
		waitRunsFragments(t, p.Base, "the restarted node")
	})
}

// waitRunsFragments waits until the node at base runs fragments, each
// past the epoch it restored.
func waitRunsFragments(t *testing.T, base, node string) {
	t.Helper()
	until(t, 30*time.Second, node+" to run fragments", func() bool {
		var st struct {
			Fragments []struct {
				Epoch         uint64
				RestoredEpoch uint64 `json:"restored_epoch"`
			}
		}
		if !exampletest.TryJSON(base+"/v1/cluster?scope=local", &st) || len(st.Fragments) == 0 {
			return false
		}
		for _, f := range st.Fragments {
			if f.Epoch <= f.RestoredEpoch {
				return false
			}
		}
		return true
	})
}
