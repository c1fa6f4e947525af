package splice_test

import (
	"bufio"
	"context"
	"encoding/base64"
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
	"unicode/utf8"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/splice"
)

// byteKeys are keys of a view in key (byte) order: "\xfe" prints as
// "\ufffd", as the key "\ufffd" does, and sorts after it.
var byteKeys = []string{"a", "b", "é", "\ufffd", "\xfe", "\xff\x01", "\xff\x02"}

// bytesServer serves a flow of the events byteKeys[i], i+1 of each, at
// 07:xx: their counts ("counts"), the counts that are odd ("odd") and
// hourly counts ("hourly"). It returns the driver, locked, to push more.
func bytesServer(t *testing.T) (*httptest.Server, *lockedDriver, *flowstest.Input[timedKey]) {
	t.Helper()
	in := flowstest.NewInput[timedKey](2)
	f := flows.New("bytes", flows.WithFragments(4))
	src := flows.From(f, "in", in, flows.WithEventTime(func(t timedKey) time.Time { return t.At }, time.Minute))
	ks := flows.KeyBy(src, func(t timedKey) string { return t.Key })
	score := flows.ScoreBy(func(n int64) float64 { return float64(n) })
	c := flows.Count(ks)
	c.View("counts", score)
	c.View("odd", score, flows.PublishIf(func(n int64) bool { return n%2 == 1 }))
	flows.WindowAggregate(ks, flows.Tumbling(time.Hour), func() int64 { return 0 }, func(n int64, _ timedKey) int64 { return n + 1 }).
		KeyedView("hourly", 24*time.Hour)
	for i, k := range byteKeys {
		for j := range i + 1 {
			in.Push(j%2, timedKey{k, hour7.Add(time.Duration(j) * time.Minute)})
		}
	}
	d, err := flowstest.New(f, time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	ld := &lockedDriver{d: d}
	mux := http.NewServeMux()
	done := make(chan struct{})
	splice.Register(mux, ld, splice.HandlerConfig{Done: done})
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { close(done); srv.Close(); http.DefaultClient.CloseIdleConnections() })
	return srv, ld, in
}

// countOf is the count bytesServer gives key.
func countOf(t *testing.T, key string) int64 {
	t.Helper()
	i := slices.Index(byteKeys, key)
	if i < 0 {
		t.Fatalf("no key %q", key)
	}
	return int64(i + 1)
}

// byteEntry is an entry as printed, with the fields it has.
type byteEntry struct {
	Key       string  `json:"key"`
	KeyBase64 *string `json:"key_base64"`
	Value     int64   `json:"value"`
}

// exact is the key e names: its key_base64's bytes if it has one. It
// fails t if e carries key_base64 for a key that is valid UTF-8, or none
// for one that is not, or if key is not how JSON prints the bytes.
func (e byteEntry) exact(t *testing.T) string {
	t.Helper()
	if e.KeyBase64 == nil {
		if !utf8.ValidString(e.Key) {
			t.Fatalf("entry %+v: a key that is not valid UTF-8 without key_base64", e)
		}
		return e.Key
	}
	b, err := base64.StdEncoding.DecodeString(*e.KeyBase64)
	if err != nil {
		t.Fatalf("entry %q: key_base64 %q: %v", e.Key, *e.KeyBase64, err)
	}
	if utf8.Valid(b) {
		t.Fatalf("entry %q: key_base64 %q for a key that is valid UTF-8", e.Key, *e.KeyBase64)
	}
	// The printed key is the bytes as JSON strings print them.
	var printed string
	if j, _ := json.Marshal(string(b)); json.Unmarshal(j, &printed) != nil || printed != e.Key {
		t.Fatalf("entry %q: the printed key of %q is %q", e.Key, b, printed)
	}
	return string(b)
}

func b64(s string) string { return url.QueryEscape(base64.StdEncoding.EncodeToString([]byte(s))) }

// A keyed view whose keys are not all valid UTF-8 names each by its exact
// bytes: entries, top sets, pages and key lookups carry key_base64 beside
// the printed key (which may be another key's), and take them back.
func TestKeyedViewKeysNotUTF8(t *testing.T) {
	srv, _, _ := bytesServer(t)

	// Every key, in order, each with its count.
	var all struct {
		Entries []byteEntry `json:"entries"`
		More    bool        `json:"more"`
	}
	get(t, srv, "/v1/views/counts", http.StatusOK, &all)
	var got []string
	for _, e := range all.Entries {
		k := e.exact(t)
		if e.Value != countOf(t, k) {
			t.Fatalf("%q=%d, want %d", k, e.Value, countOf(t, k))
		}
		got = append(got, k)
	}
	if !slices.Equal(got, byteKeys) || all.More {
		t.Fatalf("keys %q (more %v), want %q", got, all.More, byteKeys)
	}

	// Pages of one: each goes on after the last one's exact key.
	got = got[:0]
	next := ""
	for page := 0; ; page++ {
		var a struct {
			Entries         []byteEntry `json:"entries"`
			More            bool        `json:"more"`
			NextAfter       *string     `json:"next_after"`
			NextAfterBase64 *string     `json:"next_after_base64"`
		}
		get(t, srv, "/v1/views/counts?limit=1"+next, http.StatusOK, &a)
		if len(a.Entries) != 1 || page > len(byteKeys) {
			t.Fatalf("page %d: %+v", page, a)
		}
		k := a.Entries[0].exact(t)
		got = append(got, k)
		if !a.More {
			if a.NextAfter != nil || a.NextAfterBase64 != nil {
				t.Fatalf("page %d, the last: next_after %v, next_after_base64 %v", page, a.NextAfter, a.NextAfterBase64)
			}
			break
		}
		if a.NextAfter == nil {
			t.Fatalf("page %d: more, and no next_after", page)
		}
		switch {
		case utf8.ValidString(k) && a.NextAfterBase64 == nil:
			next = "&after=" + url.QueryEscape(*a.NextAfter)
		case !utf8.ValidString(k) && a.NextAfterBase64 != nil:
			next = "&after_base64=" + url.QueryEscape(*a.NextAfterBase64)
		default:
			t.Fatalf("page %d after key %q: next_after_base64 %v", page, k, a.NextAfterBase64)
		}
	}
	if !slices.Equal(got, byteKeys) {
		t.Fatalf("pages of one: %q, want %q", got, byteKeys)
	}

	// A prefix of bytes.
	get(t, srv, "/v1/views/counts?prefix_base64="+b64("\xff"), http.StatusOK, &all)
	got = got[:0]
	for _, e := range all.Entries {
		got = append(got, e.exact(t))
	}
	if !slices.Equal(got, []string{"\xff\x01", "\xff\x02"}) {
		t.Fatalf("prefix \\xff: %q", got)
	}

	// The top 3 are the keys that are not valid UTF-8 (the largest counts).
	get(t, srv, "/v1/views/counts?top=3", http.StatusOK, &all)
	got = got[:0]
	for _, e := range all.Entries {
		got = append(got, e.exact(t))
	}
	if !slices.Equal(got, []string{"\xff\x02", "\xff\x01", "\xfe"}) {
		t.Fatalf("top 3: %q", got)
	}

	// One key: by its bytes in base64, and by its bytes %-escaped in the
	// path.
	for _, k := range byteKeys {
		for _, path := range []string{"/v1/views/counts/keys?key_base64=" + b64(k), "/v1/views/counts/keys/" + url.PathEscape(k)} {
			var a byteEntry
			get(t, srv, path, http.StatusOK, &a)
			if a.exact(t) != k || a.Value != countOf(t, k) {
				t.Fatalf("GET %s: %+v, want %q=%d", path, a, k, countOf(t, k))
			}
		}
	}
	var nf struct {
		Error     string `json:"error"`
		KeyBase64 string `json:"key_base64"`
	}
	get(t, srv, "/v1/views/counts/keys?key_base64="+b64("\xff\x03"), http.StatusNotFound, &nf)
	if nf.Error == "" || nf.KeyBase64 != base64.StdEncoding.EncodeToString([]byte("\xff\x03")) {
		t.Fatalf("an absent key: %+v", nf)
	}

	for path, code := range map[string]int{
		"/v1/views/counts?after=a&after_base64=" + b64("a"):               http.StatusBadRequest,
		"/v1/views/counts?prefix=a&prefix_base64=" + b64("a"):             http.StatusBadRequest,
		"/v1/views/counts?top=2&after_base64=" + b64("a"):                 http.StatusBadRequest,
		"/v1/views/counts?after_base64=not*base64":                        http.StatusBadRequest,
		"/v1/views/counts?after_base64=/w+=":                              http.StatusBadRequest, // + is a space in a query
		"/v1/views/counts?prefix_base64=%3D%3D":                           http.StatusBadRequest,
		"/v1/views/counts/keys?key_base64=not*base64":                     http.StatusBadRequest,
		"/v1/views/counts/keys?key_base64=" + b64("a") + "&limit=3":       http.StatusBadRequest,
		"/v1/views/counts/keys?key_base64=" + b64("a") + "&key_base64=Yg": http.StatusBadRequest,
		"/v1/views/counts/keys/a?key_base64=" + b64("a"):                  http.StatusBadRequest,
		"/v1/views/counts/keys":                                           http.StatusNotFound, // no key: no route, as before
		"/v1/views/counts/keys?limit=3":                                   http.StatusNotFound,
		"/v1/views/nope/keys?key_base64=" + b64("a"):                      http.StatusNotFound,
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

// A windowed keyed view's entries, pages and key lookups name keys by
// their bytes as a keyed view's do.
func TestWindowedKeyedViewKeysNotUTF8(t *testing.T) {
	srv, _, _ := bytesServer(t)
	type window struct {
		Start   time.Time   `json:"start"`
		Entries []byteEntry `json:"entries"`
	}
	var got []string
	next := ""
	for page := 0; ; page++ {
		var a struct {
			Windows         []window `json:"windows"`
			More            bool     `json:"more"`
			NextAfter       *string  `json:"next_after"`
			NextAfterBase64 *string  `json:"next_after_base64"`
		}
		get(t, srv, "/v1/views/hourly?limit=2"+next, http.StatusOK, &a)
		if len(a.Windows) != 1 || !a.Windows[0].Start.Equal(hour7) || page > len(byteKeys) {
			t.Fatalf("page %d: %+v", page, a)
		}
		var last string
		for _, e := range a.Windows[0].Entries {
			last = e.exact(t)
			if e.Value != countOf(t, last) {
				t.Fatalf("page %d: %q=%d", page, last, e.Value)
			}
			got = append(got, last)
		}
		if !a.More {
			break
		}
		if a.NextAfter == nil || (a.NextAfterBase64 != nil) == utf8.ValidString(last) {
			t.Fatalf("page %d after key %q: next_after %v, next_after_base64 %v", page, last, a.NextAfter, a.NextAfterBase64)
		}
		next = "&after=" + url.QueryEscape(*a.NextAfter)
		if a.NextAfterBase64 != nil {
			next = "&after_base64=" + url.QueryEscape(*a.NextAfterBase64)
		}
	}
	if !slices.Equal(got, byteKeys) {
		t.Fatalf("pages of two: %q, want %q", got, byteKeys)
	}

	for _, k := range []string{"\xfe", "\xff\x02", "é"} {
		for _, path := range []string{"/v1/views/hourly/keys?key_base64=" + b64(k), "/v1/views/hourly/keys/" + url.PathEscape(k)} {
			var a struct {
				Key       string  `json:"key"`
				KeyBase64 *string `json:"key_base64"`
				Windows   []struct {
					Value int64 `json:"value"`
				} `json:"windows"`
			}
			get(t, srv, path, http.StatusOK, &a)
			if e := (byteEntry{Key: a.Key, KeyBase64: a.KeyBase64}); e.exact(t) != k || len(a.Windows) != 1 || a.Windows[0].Value != countOf(t, k) {
				t.Fatalf("GET %s: %+v", path, a)
			}
		}
	}
	var e struct {
		Error string `json:"error"`
	}
	get(t, srv, "/v1/views/hourly?after=a&after_base64="+b64("a"), http.StatusBadRequest, &e)
	get(t, srv, "/v1/views/hourly/keys?key_base64=**", http.StatusBadRequest, &e)
	get(t, srv, "/v1/views/hourly/keys?key_base64="+b64("\xff\x03"), http.StatusNotFound, &e)
}

// sseEvents reads a watch stream's events into ch until ctx ends.
func sseEvents(t *testing.T, ctx context.Context, url string) <-chan [2]string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("GET %s: %s %s", url, resp.Status, b)
	}
	ch := make(chan [2]string, 16)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		var event string
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
				event = v
			} else if v, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				select {
				case ch <- [2]string{event, v}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return ch
}

func nextEvent(t *testing.T, ch <-chan [2]string, want string, into any) {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok || ev[0] != want {
			t.Fatalf("event %q (stream open %v), want %q: %s", ev[0], ok, want, ev[1])
		}
		if err := json.Unmarshal([]byte(ev[1]), into); err != nil {
			t.Fatalf("%s: %v", ev[1], err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no %q event within 5s", want)
	}
}

// A watch names keys by their bytes: its snapshot's and changes' entries
// carry key_base64, and a key that is not valid UTF-8 and leaves the
// answer is in removed_base64, not in removed as another key's name.
func TestWatchKeysNotUTF8(t *testing.T) {
	srv, ld, in := bytesServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	type changes struct {
		Entries       []byteEntry `json:"entries"`
		Removed       []string    `json:"removed"`
		RemovedBase64 []string    `json:"removed_base64"`
	}
	ch := sseEvents(t, ctx, srv.URL+"/v1/views/odd/watch?interval=250ms")
	var snap changes
	nextEvent(t, ch, "snapshot", &snap)
	var got []string
	for _, e := range snap.Entries {
		got = append(got, e.exact(t))
	}
	// The odd counts: byteKeys[i] counts i+1.
	if want := []string{"a", "é", "\xfe", "\xff\x02"}; !slices.Equal(got, want) {
		t.Fatalf("snapshot: %q, want %q", got, want)
	}

	// "\xfe" leaves (4), "\xff\x01" comes (7) and "\ufffd" too (5).
	ld.mu.Lock()
	in.Push(0, timedKey{"\xfe", hour7})
	in.Push(0, timedKey{"\xff\x01", hour7})
	in.Push(1, timedKey{"\ufffd", hour7})
	err := ld.d.Drain()
	ld.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	var c changes
	nextEvent(t, ch, "changes", &c)
	got = got[:0]
	for _, e := range c.Entries {
		got = append(got, fmt.Sprintf("%q=%d", e.exact(t), e.Value))
	}
	if want := []string{fmt.Sprintf("%q=5", "\ufffd"), fmt.Sprintf("%q=7", "\xff\x01")}; !slices.Equal(got, want) {
		t.Fatalf("changes: %s, want %s", got, want)
	}
	if len(c.Removed) != 0 || !slices.Equal(c.RemovedBase64, []string{base64.StdEncoding.EncodeToString([]byte("\xfe"))}) {
		t.Fatalf("removed %q, removed_base64 %q: want \\xfe's bytes alone", c.Removed, c.RemovedBase64)
	}

	// A windowed keyed view's watch: its windows' entries as the view's
	// route writes them.
	wch := sseEvents(t, ctx, srv.URL+"/v1/views/hourly/watch?interval=250ms&prefix_base64="+b64("\xff"))
	var ws struct {
		Windows []struct {
			Entries []byteEntry `json:"entries"`
		} `json:"windows"`
	}
	nextEvent(t, wch, "snapshot", &ws)
	got = got[:0]
	for _, w := range ws.Windows {
		for _, e := range w.Entries {
			got = append(got, e.exact(t))
		}
	}
	if want := []string{"\xff\x01", "\xff\x02"}; !slices.Equal(got, want) {
		t.Fatalf("windowed watch snapshot: %q, want %q", got, want)
	}
}
