package splice_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/splice"
)

type odTrip struct {
	From, To string
	At       time.Time
}

type tripStats struct{ Trips int64 }

var hour7 = time.Date(2026, 11, 2, 7, 0, 0, 0, time.UTC)

// odServer serves a flow of trips counted per origin→destination pair and
// hour ("od"), and the same with a struct value and no score ("od-stats"),
// over four fragments: a trip a minute from 06:00 to 09:29, the watermark
// at 09:23.
func odServer(t *testing.T) (*httptest.Server, map[int64]map[string]int64) {
	t.Helper()
	in := flowstest.NewInput[odTrip](2)
	f := flows.New("od", flows.WithFragments(4))
	src := flows.From(f, "trips", in, flows.WithEventTime(func(t odTrip) time.Time { return t.At }, 5*time.Minute))
	od := flows.KeyBy(src, func(t odTrip) string { return t.From + "->" + t.To })
	flows.WindowAggregate(od, flows.Tumbling(time.Hour), func() int64 { return 0 }, func(n int64, _ odTrip) int64 { return n + 1 }).
		KeyedView("od", 24*time.Hour)
	flows.WindowAggregate(od, flows.Tumbling(time.Hour), func() tripStats { return tripStats{} },
		func(s tripStats, _ odTrip) tripStats { return tripStats{s.Trips + 1} }).
		KeyedView("od-stats", 24*time.Hour)
	want := map[int64]map[string]int64{}
	for i := range 210 {
		tr := odTrip{From: fmt.Sprintf("z%02d", i%5), To: fmt.Sprintf("z%02d", (i*i)%11), At: hour7.Add(-time.Hour + time.Duration(i)*time.Minute)}
		in.Push(i%2, tr)
		s := tr.At.Truncate(time.Hour).UnixNano()
		if want[s] == nil {
			want[s] = map[string]int64{}
		}
		want[s][tr.From+"->"+tr.To]++
	}
	d, err := flowstest.New(f, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	done := make(chan struct{})
	splice.Register(mux, d, splice.HandlerConfig{Done: done})
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { close(done); srv.Close() })
	return srv, want
}

type entryJSON struct {
	Key   string `json:"key"`
	Value int64  `json:"value"`
}

type windowJSON struct {
	Start    time.Time   `json:"start"`
	End      time.Time   `json:"end"`
	Complete bool        `json:"complete"`
	Keys     int64       `json:"keys"`
	Entries  []entryJSON `json:"entries"`
	More     bool        `json:"more"`
}

type answerJSON struct {
	View      string             `json:"view"`
	Kind      string             `json:"kind"`
	Window    *windowJSON        `json:"window"`
	Windows   []windowJSON       `json:"windows"`
	More      bool               `json:"more"`
	NextAfter string             `json:"next_after"`
	Freshness []splice.Freshness `json:"freshness"`
}

func get(t *testing.T, srv *httptest.Server, path string, want int, into any) {
	t.Helper()
	res, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != want || res.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET %s: %d %s %s, want %d", path, res.StatusCode, res.Header.Get("Content-Type"), body, want)
	}
	if err := json.Unmarshal(body, into); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, body)
	}
}

func sortedKeys(m map[string]int64) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func TestKeyedWindowViewHTTP(t *testing.T) {
	srv, want := odServer(t)
	at := func(t time.Time) string { return url.QueryEscape(t.Format(time.RFC3339)) }
	h := func(n int) int64 { return hour7.Add(time.Duration(n) * time.Hour).UnixNano() }

	var list struct {
		Views []struct{ Name, Kind string } `json:"views"`
	}
	get(t, srv, "/v1/views", http.StatusOK, &list)
	if len(list.Views) != 2 || list.Views[0].Kind != "windowed-keyed" {
		t.Fatalf("views: %+v", list.Views)
	}

	// The latest complete window is 08:00–09:00 (the watermark is 09:25),
	// its top 3 by count.
	var a answerJSON
	get(t, srv, "/v1/views/od?window=latest&top=3", http.StatusOK, &a)
	w := a.Window
	if a.Kind != "windowed-keyed" || w == nil || a.Windows != nil || !w.Start.Equal(hour7.Add(time.Hour)) || !w.Complete ||
		w.Keys != int64(len(want[h(1)])) || len(w.Entries) != 3 || len(a.Freshness) != 4 {
		t.Fatalf("latest top 3: %+v", a)
	}
	var counts []int64
	for _, n := range want[h(1)] {
		counts = append(counts, n)
	}
	slices.Sort(counts)
	slices.Reverse(counts)
	for i, e := range w.Entries {
		if e.Value != want[h(1)][e.Key] || e.Value != counts[i] {
			t.Fatalf("latest top 3: %+v, want the counts %v", w.Entries, counts[:3])
		}
	}
	if counts[0] == counts[len(counts)-1] {
		t.Fatalf("every pair has %d trips: top says nothing", counts[0])
	}

	// Pages of 4 over 07:00–09:30: both windows go on from next_after
	// with neither gaps nor repeats; the open 09:00 window is not complete.
	got := map[int64][]string{}
	path := "/v1/views/od?from=" + at(hour7) + "&to=" + at(hour7.Add(3*time.Hour)) + "&limit=4"
	for after, page := "", 0; ; page++ {
		var a answerJSON
		p := path
		if after != "" {
			p += "&after=" + url.QueryEscape(after)
		}
		get(t, srv, p, http.StatusOK, &a)
		if len(a.Windows) != 3 || a.Windows[2].Complete || !a.Windows[1].Complete {
			t.Fatalf("page %d: %+v", page, a)
		}
		for _, w := range a.Windows {
			if len(w.Entries) > 4 {
				t.Fatalf("page %d: %d entries", page, len(w.Entries))
			}
			for _, e := range w.Entries {
				if e.Value != want[w.Start.UnixNano()][e.Key] {
					t.Fatalf("page %d: %s=%d in %v", page, e.Key, e.Value, w.Start)
				}
				got[w.Start.UnixNano()] = append(got[w.Start.UnixNano()], e.Key)
			}
		}
		if !a.More {
			break
		}
		if a.NextAfter == "" || a.NextAfter <= after || page > 50 {
			t.Fatalf("page %d: next_after %q after %q", page, a.NextAfter, after)
		}
		after = a.NextAfter
	}
	for i := range 3 {
		if !slices.Equal(got[h(i)], sortedKeys(want[h(i)])) {
			t.Fatalf("pages of window %d: %v, want %v", i, got[h(i)], sortedKeys(want[h(i)]))
		}
	}

	// A prefix, in every window held (06:00 to 09:00).
	get(t, srv, "/v1/views/od?prefix="+url.QueryEscape("z03->"), http.StatusOK, &a)
	if len(a.Windows) != 4 {
		t.Fatalf("prefix: %+v", a)
	}
	for _, w := range a.Windows {
		var keys []string
		for _, e := range w.Entries {
			keys = append(keys, e.Key)
		}
		wantKeys := slices.DeleteFunc(sortedKeys(want[w.Start.UnixNano()]), func(k string) bool { return !strings.HasPrefix(k, "z03->") })
		if len(keys) == 0 || !slices.Equal(keys, wantKeys) {
			t.Fatalf("prefix in %v: %v, want %v", w.Start, keys, wantKeys)
		}
	}

	// One key: in the latest complete window, and in a range.
	key := "z03->z09"
	var k struct {
		Key     string `json:"key"`
		Window  *struct{ Value int64 }
		Windows []struct {
			Start    time.Time
			Complete bool
			Value    int64
		}
	}
	get(t, srv, "/v1/views/od/keys/"+url.PathEscape(key)+"?window=latest", http.StatusOK, &k)
	if k.Key != key || k.Window == nil || k.Window.Value != want[h(1)][key] || k.Window.Value == 0 {
		t.Fatalf("key %s, latest: %+v (want %d)", key, k, want[h(1)][key])
	}
	k.Window = nil
	get(t, srv, "/v1/views/od/keys/"+url.PathEscape(key)+"?from="+at(hour7), http.StatusOK, &k)
	if len(k.Windows) == 0 {
		t.Fatalf("key %s from 07:00: %+v", key, k)
	}
	for _, w := range k.Windows {
		if w.Value != want[w.Start.UnixNano()][key] || w.Start.Before(hour7) || w.Complete != w.Start.Before(hour7.Add(2*time.Hour)) {
			t.Fatalf("key %s from 07:00: %+v", key, k.Windows)
		}
	}

	// The latest complete window in a range.
	get(t, srv, "/v1/views/od?window=latest&to="+at(hour7), http.StatusOK, &a)
	if a.Window == nil || !a.Window.Start.Equal(hour7.Add(-time.Hour)) || !a.Window.Complete {
		t.Fatalf("latest before 07:00: %+v", a)
	}

	for path, code := range map[string]int{
		"/v1/views/od?window=first":                                             http.StatusBadRequest,
		"/v1/views/od?from=yesterday":                                           http.StatusBadRequest,
		"/v1/views/od?from=" + at(hour7) + "&to=" + at(hour7):                   http.StatusBadRequest,
		"/v1/views/od?limit=0":                                                  http.StatusBadRequest,
		"/v1/views/od?top=3&after=z01":                                          http.StatusBadRequest,
		"/v1/views/od?top=-1":                                                   http.StatusBadRequest,
		"/v1/views/od?x=1":                                                      http.StatusBadRequest,
		"/v1/views/od?limit=1&limit=2":                                          http.StatusBadRequest,
		"/v1/views/od-stats?top=3":                                              http.StatusBadRequest, // a struct value without a score
		"/v1/views/od/keys/z01-%3Ez02?limit=3":                                  http.StatusBadRequest,
		"/v1/views/od/keys/z01-%3Ez02?window=all":                               http.StatusBadRequest,
		"/v1/views/od/keys/z01-%3Ez02?from=" + at(hour7) + "&from=" + at(hour7): http.StatusBadRequest,
		"/v1/views/od/keys/nowhere":                                             http.StatusNotFound,
		"/v1/views/od/keys/nowhere?window=latest":                               http.StatusNotFound,
		"/v1/views/od?window=latest&from=" + at(hour7.Add(2*time.Hour)):         http.StatusNotFound, // only the open 09:00 window
		"/v1/views/nope?window=latest":                                          http.StatusNotFound,
	} {
		var e struct {
			Error string `json:"error"`
		}
		get(t, srv, path, code, &e)
		if e.Error == "" {
			t.Fatalf("GET %s: no error message", path)
		}
	}
}

// A watch of a keyed window view sends the answer, as the view's route
// writes it.
func TestKeyedWindowViewWatch(t *testing.T) {
	srv, _ := odServer(t)
	var direct answerJSON
	get(t, srv, "/v1/views/od?window=latest&top=2", http.StatusOK, &direct)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/views/od/watch?window=latest&top=2&interval=250ms", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	var event, data string
	for data == "" && sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
			event = v
		}
		if v, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			data = v
		}
	}
	var a answerJSON
	if err := json.Unmarshal([]byte(data), &a); err != nil || event != "snapshot" || a.Window == nil || len(a.Window.Entries) != 2 {
		t.Fatalf("event %q: %s (%v)", event, data, err)
	}
	if fmt.Sprint(direct.Window) != fmt.Sprint(a.Window) {
		t.Fatalf("watch: %+v, view: %+v", a.Window, direct.Window)
	}
}
