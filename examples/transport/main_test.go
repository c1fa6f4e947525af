package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/examples/transport/pipeline"
	"github.com/tessera-streams/tessera/examples/transport/sim"
	"github.com/tessera-streams/tessera/internal/exampletest"
)

func TestMain(m *testing.M) { exampletest.Main(m) }

// testArgs are the example's flags for a small country; want is what
// the sequential program computes from the same simulation.
func testArgs(t *testing.T, subs, zones int, extra ...string) ([]string, *sim.Sim, pipeline.Result) {
	t.Helper()
	args := append([]string{"-subscribers", fmt.Sprint(subs), "-zones", fmt.Sprint(zones), "-progress", "0", "-log-level", "warn",
		"-fragments", "16", "-checkpoint-interval", "100ms"}, extra...)
	o := &Options{}
	exampletest.ParseFlags(t, flagSet(o), args)
	if err := o.check(); err != nil {
		t.Fatal(err)
	}
	s, err := sim.Simulate(o.Sim)
	if err != nil {
		t.Fatal(err)
	}
	return args, s, pipeline.Sequential(s.Parts, pipeline.NetworkOf(s), o.Flow)
}

// counts is an entry's published value: an OD cell's or a zone's.
type counts struct {
	Trips       int64 `json:"trips"`
	Subscribers int64 `json:"subscribers"`
	People      int64 `json:"people"`
}

func (c counts) subjects() int64 { return max(c.Subscribers, c.People) }

type entry struct {
	Key   string `json:"key"`
	Value counts `json:"value"`
}

type window struct {
	Start   time.Time `json:"start"`
	Keys    int64     `json:"keys"`
	Entries []entry   `json:"entries"`
}

type windowsAnswer struct {
	Windows   []window `json:"windows"`
	Window    *window  `json:"window"`
	Entries   []entry  `json:"entries"` // keyed views
	More      bool     `json:"more"`
	NextAfter string   `json:"next_after"`
	Complete  bool     `json:"complete"`
}

// published is the entries of a sequential result that a view with k
// publishes, and how many it holds back.
func published[V interface{ Subscribers() int64 }](all map[pipeline.WindowKey]V, k int64) (map[pipeline.WindowKey]counts, int) {
	out, held := map[pipeline.WindowKey]counts{}, 0
	for key, v := range all {
		n := v.Subscribers()
		if n < k {
			held++
			continue
		}
		c := counts{Subscribers: n}
		switch x := any(v).(type) {
		case pipeline.Cell:
			c.Trips = x.Trips
		case crowd:
			c = counts{People: n}
		}
		out[key] = c
	}
	return out, held
}

type crowd struct{ pipeline.Crowd }

func (c crowd) Subscribers() int64 { return c.People() }

// pages reads a windowed keyed view page by page (q, plus limit and
// after), checking every entry against k and the pages' order.
func pages(t *testing.T, base, view, q string, limit int, k int64) map[pipeline.WindowKey]counts {
	t.Helper()
	got := map[pipeline.WindowKey]counts{}
	after := ""
	for {
		var a windowsAnswer
		exampletest.GetJSON(t, fmt.Sprintf("%s/v1/views/%s?limit=%d%s%s", base, view, limit, afterParam(after), q), &a)
		for _, w := range a.Windows {
			if len(w.Entries) > limit {
				t.Fatalf("%s: a page of %d entries, limit %d", view, len(w.Entries), limit)
			}
			for _, e := range w.Entries {
				checkK(t, view, e, k)
				if e.Key <= after {
					t.Fatalf("%s: %s on the page after %s", view, e.Key, after)
				}
				got[pipeline.WindowKey{Start: w.Start, Key: e.Key}] = e.Value
			}
		}
		if !a.More {
			return got
		}
		after = a.NextAfter
	}
}

func afterParam(after string) string {
	if after == "" {
		return ""
	}
	return "&after=" + url.QueryEscape(after)
}

func checkK(t *testing.T, what string, e entry, k int64) {
	t.Helper()
	if e.Value.subjects() < k {
		t.Fatalf("%s: %s answered with %d subscribers, k = %d", what, e.Key, e.Value.subjects(), k)
	}
}

func sameEntries(t *testing.T, what string, got, want map[pipeline.WindowKey]counts) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d entries, want %d", what, len(got), len(want))
	}
	for k, w := range want {
		if got[k] != w {
			t.Fatalf("%s %v: %+v, want %+v", what, k, got[k], w)
		}
	}
}

// waitComplete polls the trips view until the input is processed through
// both stages, and checks it then holds n trips.
func waitComplete(t *testing.T, base string, n int) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		var a struct {
			Value    int64
			Complete bool
		}
		var cl struct{ Complete bool }
		if exampletest.TryJSON(base+"/v1/views/trips", &a) && exampletest.TryJSON(base+"/v1/cluster", &cl) && a.Complete && cl.Complete {
			if a.Value != int64(n) {
				t.Fatalf("complete with %d trips, want %d", a.Value, n)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not complete after 90 s (%d trips)", a.Value)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func status(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// snapshot reads the first event of a watch stream.
func snapshot(t *testing.T, url string, into any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			if err := json.Unmarshal([]byte(data), into); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("watch %s: no event (%v)", url, sc.Err())
}

// No query form answers an OD cell, an OD pair's travel times or a
// zone's crowd backed by fewer than k subscribers, while the fragments
// hold such entries: pages (limit and after), top, prefix, the latest
// window, a range of windows, key lookups and watch streams — and what is
// answered is exactly what the sequential program finds with k or more.
func TestKAnonymityInEveryQueryForm(t *testing.T) {
	const k = 3
	args, s, want := testArgs(t, 1500, 16, "-k", fmt.Sprint(k))
	wantOD, heldOD := published(want.Hourly, k)
	wantDay, heldDay := published(want.Daily, k)
	travel := map[pipeline.WindowKey]pipeline.TravelTimes{}
	for od, tt := range want.Travel {
		travel[pipeline.WindowKey{Key: od}] = tt
	}
	wantTravel, heldTravel := published(travel, k)
	moving := map[pipeline.WindowKey]crowd{}
	for key, c := range want.Moving {
		moving[key] = crowd{c}
	}
	wantMoving, heldMoving := published(moving, k)
	if heldOD == 0 || len(wantOD) == 0 || heldDay == 0 || heldTravel == 0 || heldMoving == 0 || len(wantMoving) == 0 {
		t.Fatalf("held back %d/%d/%d/%d, published %d OD cells and %d crowds: the input tests nothing",
			heldOD, heldDay, heldTravel, heldMoving, len(wantOD), len(wantMoving))
	}
	t.Logf("%d pings; od: %d cells published, %d held back", s.Pings(), len(wantOD), heldOD)
	base := exampletest.Run(t, run, "/v1/cluster", append(args, "-http", exampletest.FreePort(t))...)
	waitComplete(t, base, len(want.Trips))

	sameEntries(t, "od pages", pages(t, base, "od", "", 7, k), wantOD)
	sameEntries(t, "od-day pages", pages(t, base, "od-day", "", 5, k), wantDay)
	sameEntries(t, "moving pages", pages(t, base, "moving", "", 4, k), wantMoving)

	// Top: per window, the best published cells by trips.
	var top windowsAnswer
	exampletest.GetJSON(t, base+"/v1/views/od?top=3", &top)
	for _, w := range top.Windows {
		var best []entry
		for key, c := range wantOD {
			if key.Start.Equal(w.Start) {
				best = append(best, entry{key.Key, c})
			}
		}
		slices.SortFunc(best, func(a, b entry) int {
			return cmp.Or(cmp.Compare(b.Value.Trips, a.Value.Trips), strings.Compare(a.Key, b.Key))
		})
		if !slices.Equal(w.Entries, best[:min(3, len(best))]) {
			t.Fatalf("od top 3 of %v: %v, want %v", w.Start, w.Entries, best[:min(3, len(best))])
		}
		if w.Keys != int64(len(best)) {
			t.Fatalf("od window %v counts %d keys, publishes %d", w.Start, w.Keys, len(best))
		}
	}
	// Prefix, a range of windows, the latest window.
	origin := s.Zones[0].Name + "->"
	for key := range wantOD {
		origin = key.Key[:strings.Index(key.Key, "->")+2]
		break
	}
	from, to := s.Config.Start.Add(7*time.Hour), s.Config.Start.Add(10*time.Hour)
	for q, keep := range map[string]func(pipeline.WindowKey) bool{
		"&prefix=" + url.QueryEscape(origin): func(k pipeline.WindowKey) bool { return strings.HasPrefix(k.Key, origin) },
		"&from=" + from.Format(time.RFC3339) + "&to=" + to.Format(time.RFC3339): func(k pipeline.WindowKey) bool {
			return !k.Start.Before(from) && k.Start.Before(to)
		},
	} {
		w := map[pipeline.WindowKey]counts{}
		for key, c := range wantOD {
			if keep(key) {
				w[key] = c
			}
		}
		if len(w) == 0 {
			t.Fatalf("no published cell for %s", q)
		}
		sameEntries(t, "od"+q, pages(t, base, "od", q, 6, k), w)
	}
	var latest windowsAnswer
	exampletest.GetJSON(t, base+"/v1/views/od?window=latest&limit=100000", &latest)
	if latest.Window == nil {
		t.Fatal("no latest window")
	}
	for _, e := range latest.Window.Entries {
		checkK(t, "od latest", e, k)
	}
	// Key lookups: a held-back cell is not found in its window, a
	// published one is, and a pair published in no window is not found.
	for key, c := range want.Hourly {
		u := fmt.Sprintf("%s/v1/views/od/keys/%s?from=%s&to=%s", base, url.PathEscape(key.Key),
			key.Start.Format(time.RFC3339), key.Start.Add(time.Hour).Format(time.RFC3339))
		code := status(t, u)
		if (c.Subscribers() >= k) != (code == http.StatusOK) {
			t.Fatalf("GET %s (%d subscribers): %d", u, c.Subscribers(), code)
		}
	}
	for od, tt := range want.Travel {
		var a struct{ Value counts }
		u := base + "/v1/views/traveltime/keys/" + url.PathEscape(od)
		if tt.Subscribers() < k {
			if code := status(t, u); code != http.StatusNotFound {
				t.Fatalf("GET %s (%d subscribers): %d", u, tt.Subscribers(), code)
			}
			continue
		}
		exampletest.GetJSON(t, u, &a)
		checkK(t, "traveltime "+od, entry{od, a.Value}, k)
	}
	// A keyed view's pages and top.
	got := map[pipeline.WindowKey]counts{}
	for after := ""; ; {
		var a windowsAnswer
		exampletest.GetJSON(t, fmt.Sprintf("%s/v1/views/traveltime?limit=9%s", base, afterParam(after)), &a)
		for _, e := range a.Entries {
			checkK(t, "traveltime", e, k)
			got[pipeline.WindowKey{Key: e.Key}] = counts{Subscribers: e.Value.Subscribers}
		}
		if !a.More {
			break
		}
		after = a.NextAfter
	}
	sameEntries(t, "traveltime pages", got, wantTravel)
	var tt windowsAnswer
	exampletest.GetJSON(t, base+"/v1/views/traveltime?top=5", &tt)
	for _, e := range tt.Entries {
		checkK(t, "traveltime top", e, k)
	}
	// Watch streams start with a snapshot.
	var w windowsAnswer
	snapshot(t, base+"/v1/views/od/watch?limit=100000", &w)
	n := 0
	for _, win := range w.Windows {
		for _, e := range win.Entries {
			checkK(t, "od watch", e, k)
			n++
		}
	}
	if n != len(wantOD) {
		t.Fatalf("od watch snapshot: %d entries, want %d", n, len(wantOD))
	}
	var m windowsAnswer
	snapshot(t, base+"/v1/views/traveltime/watch?limit=100000", &m)
	if len(m.Entries) != len(wantTravel) {
		t.Fatalf("traveltime watch snapshot: %d entries, want %d", len(m.Entries), len(wantTravel))
	}
	for _, e := range m.Entries {
		checkK(t, "traveltime watch", e, k)
	}
	http.DefaultClient.CloseIdleConnections()
}

// The page is served by the node with everything it draws: no external
// asset, the zones of the simulation and the detector's accuracy.
func TestPageServed(t *testing.T) {
	args, s, _ := testArgs(t, 200, 16)
	base := exampletest.Run(t, run, "/transport", append(args, "-http", exampletest.FreePort(t))...)
	resp, err := http.Get(base + "/transport")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	_, err = bufio.NewReader(resp.Body).WriteTo(&b)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(b.String(), "<canvas") {
		t.Fatalf("GET /transport: %d %v", resp.StatusCode, err)
	}
	if strings.Contains(b.String(), "http://") || strings.Contains(b.String(), "https://") {
		t.Fatal("the page loads something from elsewhere")
	}
	var zones struct {
		Zones []struct{ Name string }
		Side  int
	}
	exampletest.GetJSON(t, base+"/transport/zones", &zones)
	if len(zones.Zones) != len(s.Zones) || zones.Side*zones.Side < len(s.Zones) || zones.Zones[3].Name != s.Zones[3].Name {
		t.Fatalf("zones: %d on a side of %d", len(zones.Zones), zones.Side)
	}
	var acc pipeline.Accuracy
	exampletest.GetJSON(t, base+"/transport/accuracy", &acc)
	if acc.True != len(s.Truth) || acc.Precision <= 0 {
		t.Fatalf("accuracy: %+v", acc)
	}
	http.DefaultClient.CloseIdleConnections()
}
