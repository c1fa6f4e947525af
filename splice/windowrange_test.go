package splice_test

import (
	"net/http"
	"net/url"
	"testing"
	"time"
)

// A from or to beyond what Unix nanoseconds hold (after 2262 or before
// 1678) is a valid RFC 3339 time, so it must select windows by what it
// says, or be refused as a bad request; so must a to at the Unix epoch.
// Every window of odServer starts in 2026: from=2300 holds none of them,
// to=2300 all of them, from=1600&to=1700 none, and a range ending at
// 1970-01-01T00:00:00Z none.
func TestWindowRangeBeyondUnixNanosOrAtEpoch(t *testing.T) {
	srv, want := odServer(t)
	at := func(s string) string { return url.QueryEscape(s) }
	for _, c := range []struct {
		query   string
		windows int
	}{
		{"from=" + at("2300-01-01T00:00:00Z"), 0},
		{"to=" + at("2300-01-01T00:00:00Z"), len(want)},
		{"from=" + at("1600-01-01T00:00:00Z") + "&to=" + at("1700-01-01T00:00:00Z"), 0},
		// to at the Unix epoch is 0 ns, which Query reads as "no bound".
		{"from=" + at("1969-12-31T00:00:00Z") + "&to=" + at("1970-01-01T00:00:00Z"), 0},
	} {
		res, err := http.Get(srv.URL + "/v1/views/od?" + c.query)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode == http.StatusBadRequest {
			continue // refusing a time it cannot represent is an answer too
		}
		var a answerJSON
		get(t, srv, "/v1/views/od?"+c.query, http.StatusOK, &a)
		if len(a.Windows) != c.windows {
			var starts []time.Time
			for _, w := range a.Windows {
				starts = append(starts, w.Start)
			}
			t.Errorf("GET /v1/views/od?%s: %d windows %v, want %d", c.query, len(a.Windows), starts, c.windows)
		}
	}
}
