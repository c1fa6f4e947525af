package splice

import (
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
