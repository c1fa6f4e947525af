package splice

import (
	"encoding/base64"
	"errors"
	"net/url"
	"testing"
)

func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"limit=10", "top=3&prefix=a", "after=k&limit=2", "limit=-1", "x=1", "limit=1&limit=2", "%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := ParseQuery(v)
		if err != nil {
			return
		}
		if q.Limit < 1 || q.Limit > MaxLimit || q.Top < 0 || q.Top > MaxTop || (q.Top > 0 && q.After != "") {
			t.Fatalf("accepted %q as %+v", raw, q)
		}
	})
}

func FuzzParseWindowQuery(f *testing.F) {
	for _, s := range []string{"window=latest", "from=2026-11-02T06:00:00Z&to=2026-11-02T07:00:00Z", "limit=5",
		"window=first", "from=yesterday", "to=2026-01-01T00:00:00Z&from=2026-02-01T00:00:00Z", "top=3", "limit=0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := ParseWindowQuery(v)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("%q: error %v is not a bad request", raw, err)
			}
			return
		}
		if q.Limit < 1 || q.Limit > MaxLimit || (q.To != 0 && q.To <= q.From) || (q.Latest != v.Has("window")) {
			t.Fatalf("accepted %q as %+v", raw, q)
		}
	})
}

func FuzzParseWindowedKeyedQuery(f *testing.F) {
	for _, s := range []string{"window=latest&top=10", "from=2026-11-02T06:00:00Z&to=2026-11-02T07:00:00Z&limit=50&after=z03-%3Ez11",
		"prefix=z03-%3E", "window=latest&after=a&top=1", "window=all", "limit=0", "to=2026-01-01T00:00:00Z&from=2026-02-01T00:00:00Z",
		"x=1", "after=", "top=1&top=2", "", "after_base64=%2Fw%3D%3D&prefix_base64=%2Fw%3D%3D", "after=a&after_base64=YQ%3D%3D",
		"after_base64=*", "after_base64=/w+=", "top=2&after_base64=YQ%3D%3D", "prefix=a&prefix_base64=YQ%3D%3D"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := ParseWindowedKeyedQuery(v)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("%q: error %v is not a bad request", raw, err)
			}
			return
		}
		// A key comes as text or as its bytes in base64, not both.
		key := func(name string) (string, bool) {
			b64 := name + "_base64"
			if !v.Has(b64) {
				return v.Get(name), v.Has(name)
			}
			b, err := base64.StdEncoding.DecodeString(v.Get(b64))
			if err != nil || v.Has(name) {
				t.Fatalf("accepted %q as %+v", raw, q)
			}
			return string(b), true
		}
		after, hasAfter := key("after")
		prefix, _ := key("prefix")
		if q.Limit < 1 || q.Limit > MaxLimit || q.Top < 0 || q.Top > MaxTop || (q.Top > 0 && q.Paged()) ||
			q.HasAfter != hasAfter || q.After != after || q.Prefix != prefix || (q.To != 0 && q.To <= q.From) || q.Latest != v.Has("window") {
			t.Fatalf("accepted %q as %+v", raw, q)
		}
	})
}
