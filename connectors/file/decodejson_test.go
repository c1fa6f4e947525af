package file

import (
	"encoding/json"
	"testing"
)

// DecodeJSON "rejects trailing data": it takes exactly the lines that
// json.Unmarshal takes (which rejects trailing data too), so a line with a
// stray closing bracket is a bad record for the dead letters, not an event.
func TestDecodeJSONRejectsTrailingBrackets(t *testing.T) {
	for _, s := range []string{`{"text":"a"}}`, `{"text":"a"}]`, `{"text":"a"} ]`, `{"text":"a"}` + "\t}"} {
		var want line
		if json.Unmarshal([]byte(s), &want) == nil {
			t.Fatalf("json.Unmarshal takes %q", s)
		}
		if v, err := DecodeJSON[line]([]byte(s)); err == nil {
			t.Errorf("DecodeJSON(%q) = %+v, nil; want an error (trailing data)", s, v)
		}
	}
}

// FuzzDecodeJSONAgreesWithUnmarshal: DecodeJSON takes a line if and only
// if json.Unmarshal does, and decodes it alike.
func FuzzDecodeJSONAgreesWithUnmarshal(f *testing.F) {
	for _, s := range []string{`{"text":"a"}`, `{"text":"a"}}`, `{} {}`, ` {"text":"b"} `, `null`, `[1]`, `{"text":"a"}]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var want line
		werr := json.Unmarshal(b, &want)
		got, err := DecodeJSON[line](b)
		if (err == nil) != (werr == nil) {
			t.Fatalf("DecodeJSON(%q) error %v, json.Unmarshal error %v", b, err, werr)
		}
		if err == nil && got != want {
			t.Fatalf("DecodeJSON(%q) = %+v, json.Unmarshal %+v", b, got, want)
		}
	})
}
