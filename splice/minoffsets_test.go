package splice_test

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
)

// min_offsets naming a source partition the flow does not read (a typo)
// is a bad parameter: 400 at once, as a snapshot read answers it, not a
// 504 after waiting the whole timeout for offsets that can never come.
func TestMinOffsetsOfUnknownPartitionIsBadRequest(t *testing.T) {
	srv, _ := odServer(t)
	for _, path := range []string{
		"/v1/views/od?min_offsets=trps/0:1&timeout=300ms",
		"/v1/views/od?min_offsets=trips/7:1&timeout=300ms", // the flow reads trips/0 and trips/1
		"/v1/views/od/keys/z01-%3Ez01?min_offsets=trps/0:1&timeout=300ms",
	} {
		res, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		var e struct{ Error string }
		if res.StatusCode != http.StatusBadRequest || json.Unmarshal(body, &e) != nil || e.Error == "" {
			t.Errorf("GET %s: %d %s, want 400 with an error", path, res.StatusCode, body)
		}
	}
}
