package cluster

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/connectors/gen"
)

func TestMergeSamples(t *testing.T) {
	const sec = 1000
	// n0 reads partition 0, n1 partition 1; their ticks are out of phase
	// and n1 ticked twice within one interval once.
	n0 := []Sample{
		{T: 10*sec + 40, Read: 100, Applied: 90, Rate: []float64{100, -1}, Lag: []int64{5, -1}},
		{T: 11*sec + 30, Read: 110, Applied: 95, Rate: []float64{110, -1}, Lag: []int64{6, -1}},
		{T: 12*sec + 20, Read: 120, Applied: 99, Rate: []float64{120, -1}, Lag: []int64{7, -1}},
	}
	n1 := []Sample{
		{T: 9*sec + 950, Read: 50, Applied: 60, Rate: []float64{-1, 50}, Lag: []int64{-1, 1}},
		{T: 11*sec + 10, Read: 55, Applied: 61, Rate: []float64{-1, 55}, Lag: []int64{-1, 2}},
		{T: 11*sec + 400, Read: 999, Applied: 999, Rate: []float64{-1, 999}, Lag: []int64{-1, 999}},
	}
	got := mergeSamples([][]Sample{n0, n1}, time.Second, 2)
	want := []Sample{
		{T: 10 * sec, Read: 150, Applied: 150, Rate: []float64{100, 50}, Lag: []int64{5, 1}},
		{T: 11 * sec, Read: 165, Applied: 156, Rate: []float64{110, 55}, Lag: []int64{6, 2}},
		// 12 s is left out: n1 has no sample there yet.
	}
	if len(got) != len(want) {
		t.Fatalf("merged %d samples, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.T != w.T || g.Read != w.Read || g.Applied != w.Applied || !slices.Equal(g.Rate, w.Rate) || !slices.Equal(g.Lag, w.Lag) {
			t.Errorf("sample %d: %+v, want %+v", i, g, w)
		}
	}
	if got := mergeSamples([][]Sample{n0, nil}, time.Second, 2); len(got) != 3 {
		t.Errorf("a node without samples must not hide the others: %d samples", len(got))
	}
}

func TestHistoryKeepsTheLastSamples(t *testing.T) {
	var h history
	h.init([]string{"gen/0"})
	for i := range keepSamples + 7 {
		h.add(Sample{T: int64(i)})
	}
	a := h.answer("n", time.Second, 10)
	if len(a.Samples) != keepSamples || a.Samples[0].T != 7 || a.Samples[keepSamples-1].T != keepSamples+6 {
		t.Fatalf("kept %d samples from %d to %d", len(a.Samples), a.Samples[0].T, a.Samples[len(a.Samples)-1].T)
	}
	for i := range keepEvents + 3 {
		h.event(Event{Kind: "joined", Epoch: uint64(i)})
	}
	if tl := h.tail(keepEvents + 100); len(tl) != keepEvents || tl[0].Epoch != 3 {
		t.Fatalf("timeline kept %d events from epoch %d", len(tl), tl[0].Epoch)
	}
	h.member(MemberEvent{Node: "n2", Kind: "died"}, time.Unix(5, 0))
	h.member(MemberEvent{Node: "n3", Kind: "left"}, time.Unix(6, 0))
	h.member(MemberEvent{Node: "n2", Kind: "joined"}, time.Unix(7, 0))
	if g := h.departed(); len(g) != 1 || g[0].Name != "n3" || g[0].How != "left" {
		t.Fatalf("departed: %+v", g)
	}
}

func TestMoves(t *testing.T) {
	old := Placement{Epoch: 4, Fragments: []string{"n0", "n1", "n2", "n2", "n1"}}
	next := Placement{Epoch: 5, Fragments: []string{"n0", "n1", "n0", "n1", "n1"}}
	dead := func(n string) bool { return n != "n2" }
	evs := moves(old, next, dead, time.Unix(1, 0))
	if len(evs) != 2 || evs[0].Kind != "failover" || evs[0].From != "n2" || evs[0].To != "n0" || !slices.Equal(evs[0].Fragments, []int{2}) ||
		evs[1].To != "n1" || !slices.Equal(evs[1].Fragments, []int{3}) || evs[1].Epoch != 5 {
		t.Fatalf("moves after n2 died: %+v", evs)
	}
	alive := func(string) bool { return true }
	if evs := moves(old, next, alive, time.Unix(1, 0)); len(evs) != 2 || evs[0].Kind != "handoff" {
		t.Fatalf("moves after n2 left: %+v", evs)
	}
	if evs := moves(Placement{}, next, alive, time.Unix(1, 0)); len(evs) != 0 {
		t.Fatalf("the first placement moves nothing: %+v", evs)
	}
}

// The dashboard's page, assets and API on one node: everything the page
// loads is served by the node (no CDN), the history fills, the watch
// streams the cluster state, and the metrics the Grafana dashboard reads
// are exported.
func TestDashboardAPI(t *testing.T) {
	src, _ := gen.New(gen.Config{Partitions: 2, Seed: 5, Rate: 20_000}, word)
	r := start(t, Config{Flow: testFlow(src), Name: "n1"})

	resp, err := http.Get(r.base + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	refs := regexp.MustCompile(`(?:src|href)="([^"#]+)"`).FindAllStringSubmatch(string(page), -1)
	if len(refs) < 4 {
		t.Fatalf("the page references %d assets", len(refs))
	}
	for _, m := range refs {
		u := m[1]
		if strings.HasPrefix(u, "data:") {
			continue
		}
		if !strings.HasPrefix(u, "/") {
			t.Errorf("the page loads %q from elsewhere: it must work offline", u)
			continue
		}
		if code := get(t, r.base+u, nil); code != 200 {
			t.Errorf("GET %s: %d", u, code)
		}
	}
	if code := get(t, r.base+"/dashboard/nope.js", nil); code != 404 {
		t.Errorf("an unknown asset: %d", code)
	}

	var h HistoryAnswer
	for deadline := time.Now().Add(20 * time.Second); len(h.Samples) < 3; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("history: %+v", h)
		}
		get(t, r.base+"/v1/cluster/history", &h)
	}
	if !slices.Equal(h.Partitions, []string{"gen/0", "gen/1"}) || len(h.Timeline) == 0 || h.Timeline[0].Kind != "started" {
		t.Fatalf("history: partitions %v, timeline %+v", h.Partitions, h.Timeline)
	}
	for _, s := range h.Samples {
		if len(s.Rate) != 2 || len(s.Lag) != 2 || s.Lag[0] < 0 || s.Lag[1] < 0 {
			t.Fatalf("a sample of a node that reads both partitions: %+v", s)
		}
	}
	if code := get(t, r.base+"/v1/cluster/history?scope=all", nil); code != 400 {
		t.Errorf("a bad scope: %d", code)
	}
	if code := get(t, r.base+"/v1/cluster/history?timeline=some", nil); code != 400 {
		t.Errorf("a bad timeline parameter: %d", code)
	}
	var tl HistoryAnswer
	if code := get(t, r.base+"/v1/cluster/history?scope=local&timeline=only", &tl); code != 200 || len(tl.Samples) != 0 || len(tl.Timeline) == 0 {
		t.Errorf("timeline=only: %d, %d samples, timeline %+v", code, len(tl.Samples), tl.Timeline)
	}

	// The watch: two state events, each the whole cluster.
	for _, bad := range []string{"?interval=10ms", "?interval=x", "?every=1s", "?interval=%ZZ"} {
		if code := get(t, r.base+"/v1/cluster/watch"+bad, nil); code != 400 {
			t.Errorf("watch%s: %d, want 400", bad, code)
		}
	}
	resp, err = http.Get(r.base + "/v1/cluster/watch?interval=500ms")
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("watch content type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	var states []clusterWatchEvent
	for event := ""; len(states) < 2 && sc.Scan(); {
		line := sc.Text()
		if e, ok := strings.CutPrefix(line, "event: "); ok {
			event = e
		} else if d, ok := strings.CutPrefix(line, "data: "); ok && event == "state" {
			var ev clusterWatchEvent
			if err := json.Unmarshal([]byte(d), &ev); err != nil {
				t.Fatal(err)
			}
			states = append(states, ev)
		}
	}
	resp.Body.Close()
	if len(states) != 2 || states[1].Cluster.Node != "n1" || len(states[1].Cluster.Fragments) != 8 || len(states[1].Timeline) == 0 {
		t.Fatalf("watch: %d states: %+v", len(states), states)
	}

	// Dead letters: this node's, or every member's (one here).
	var local, all DeadLetterAnswer
	for deadline := time.Now().Add(20 * time.Second); local.Total == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no dead letter")
		}
		get(t, r.base+"/v1/deadletters", &local)
	}
	get(t, r.base+"/v1/deadletters?scope=cluster", &all)
	if all.Total < local.Total || all.Nodes["n1"] != all.Total || len(all.Nodes) != 1 || len(all.Last) == 0 || all.Last[0].Key != "bad" {
		t.Fatalf("dead letters of the cluster: %+v, of the node: %+v", all, local)
	}
	if code := get(t, r.base+"/v1/deadletters?scope=everywhere", nil); code != 400 {
		t.Errorf("a bad scope: %d", code)
	}

	// A view query, timed by route.
	get(t, r.base+"/v1/views/counts?top=3", nil)
	resp, err = http.Get(r.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	metrics := string(body)
	for _, want := range []string{
		`tessera_source_lag_records{partition="1",source="gen"}`,
		`tessera_fragment_checkpoint_age_seconds{fragment="7"}`,
		`tessera_fragment_checkpoint_last_duration_seconds{fragment="0"}`,
		`tessera_checkpoint_duration_seconds_count`,
		`tessera_cluster_members 1`,
		`tessera_placement_epoch 1`,
		`tessera_fragments_owned 8`,
		`tessera_fragment_moves_total{kind="failover"} 0`,
		`tessera_http_request_duration_seconds_count{code="200",route="GET /v1/views/{view}"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(metrics, `route="GET /v1/cluster/watch"`) {
		t.Error("watch streams are timed: their duration is their client's")
	}

	// Every metric the Grafana dashboard queries is exported.
	dash, err := os.ReadFile("../docs/grafana/tessera.json")
	if err != nil {
		t.Fatal(err)
	}
	var grafana map[string]any
	if err := json.Unmarshal(dash, &grafana); err != nil {
		t.Fatalf("docs/grafana/tessera.json: %v", err)
	}
	used := regexp.MustCompile(`tessera_[a-z_]+`).FindAllString(string(dash), -1)
	if len(used) < 10 {
		t.Fatalf("the Grafana dashboard queries %d metrics", len(used))
	}
	for _, name := range used {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_count"), "_sum")
		if !strings.Contains(metrics, "# TYPE "+base+" ") {
			t.Errorf("the Grafana dashboard queries %s, which no node exports", name)
		}
	}
}

// Timelines merge over the members: what several nodes recorded shows
// once with the nodes that saw it, at the earliest time; what one node
// recorded twice shows twice; the result is in time order and bounded.
func TestMergeTimelines(t *testing.T) {
	at := func(ms int) time.Time { return time.Unix(100, 0).Add(time.Duration(ms) * time.Millisecond) }
	move := Event{Kind: "failover", From: "n2", To: "n1", Fragments: []int{1, 4}, Epoch: 7}
	moveAt := func(ms int) Event { m := move; m.At = at(ms); return m }
	byNode := map[string][]Event{
		"n1": {
			{At: at(0), Kind: "started", Node: "n1", Epoch: 1},
			{At: at(3000), Kind: "died", Node: "n2"},
			moveAt(3100),
			{At: at(20000), Kind: "joined", Node: "n2"},
			{At: at(40000), Kind: "died", Node: "n2"}, // n2 died again: a second event
		},
		"n3": {
			{At: at(500), Kind: "started", Node: "n3", Epoch: 2},
			{At: at(2900), Kind: "died", Node: "n2"}, // n3 noticed first
			moveAt(3300),
			{At: at(20100), Kind: "joined", Node: "n2"},
		},
		// n2 restarted after its death: it knows only what came since.
		"n2": {{At: at(19000), Kind: "started", Node: "n2", Epoch: 8}},
	}
	got := mergeTimelines(byNode, 100)
	type line struct {
		ms   int
		kind string
		seen string
	}
	want := []line{
		{0, "started", "n1"}, {500, "started", "n3"}, {2900, "died", "n1,n3"}, {3100, "failover", "n1,n3"},
		{19000, "started", "n2"}, {20000, "joined", "n1,n3"}, {40000, "died", "n1"},
	}
	if len(got) != len(want) {
		t.Fatalf("merged %d events, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if !g.At.Equal(at(w.ms)) || g.Kind != w.kind || strings.Join(g.SeenBy, ",") != w.seen {
			t.Errorf("event %d: %v %s seen by %v, want %+v", i, g.At.Sub(at(0)), g.Kind, g.SeenBy, w)
		}
	}
	if !slices.Equal(got[3].Fragments, []int{1, 4}) || got[3].From != "n2" || got[3].Epoch != 7 {
		t.Errorf("the failover lost its detail: %+v", got[3])
	}
	// Moves of different epochs, or of other fragments, are not one.
	other := moveAt(3100)
	other.Epoch = 8
	if n := len(mergeTimelines(map[string][]Event{"n1": {moveAt(3100)}, "n3": {other}}, 100)); n != 2 {
		t.Errorf("moves of two epochs merged: %d events", n)
	}
	if last := mergeTimelines(byNode, 2); len(last) != 2 || last[1].Kind != "died" || !last[1].At.Equal(at(40000)) {
		t.Errorf("bounded to the latest 2: %+v", last)
	}
}
