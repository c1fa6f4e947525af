package push

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// FuzzSplitBody: any body splits without panicking; every event of an
// x-ndjson body is one non-blank line of it, every event of a JSON array
// is a valid JSON value that re-encodes to the array's element; and a
// request whose body does not split is an error that says so.
func FuzzSplitBody(f *testing.F) {
	for _, s := range []string{
		"", "\n", `{"text":"a"}`, `{"text":"a"}` + "\n" + `{"text":"b"}` + "\r\n", `[]`, ` [ {"a":1} , 2, "x", [3] ] `,
		`[`, `[1,]`, `[1] [2]`, `{"text":`, "[\"\\u00e9\", null, true]", "\xff\xfe", "null",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		evs, nums, err := splitBody(NDJSON, body)
		if err != nil {
			t.Fatalf("x-ndjson: %v", err)
		}
		if len(nums) != len(evs) {
			t.Fatalf("%d numbers for %d events", len(nums), len(evs))
		}
		lines := bytes.Split(body, []byte("\n"))
		for i, ev := range evs {
			if bytes.IndexByte(ev, '\n') >= 0 || len(bytes.TrimSpace(ev)) == 0 {
				t.Fatalf("event %q", ev)
			}
			if want := bytes.TrimRight(lines[nums[i]-1], "\r"); !bytes.Equal(ev, want) {
				t.Fatalf("event %d = %q, line %d = %q", i, ev, nums[i], want)
			}
		}
		evs, _, err = splitBody(JSONArray, body)
		var arr []json.RawMessage
		jerr := json.Unmarshal(body, &arr)
		if err != nil {
			if _, ok := errors.AsType[*malformed](err); !ok {
				t.Fatalf("error %v is not a malformed body", err)
			}
			if jerr == nil && arr != nil { // Unmarshal takes null as an empty slice
				t.Fatalf("json.Unmarshal takes %q as an array; splitBody says %v", body, err)
			}
			return
		}
		if jerr != nil {
			t.Fatalf("splitBody takes %q; json.Unmarshal says %v", body, jerr)
		}
		if len(evs) != len(arr) {
			t.Fatalf("%d events, json.Unmarshal finds %d", len(evs), len(arr))
		}
		for i, ev := range evs {
			if !json.Valid(ev) || !bytes.Equal(ev, arr[i]) {
				t.Fatalf("event %d = %q, element %q", i, ev, arr[i])
			}
		}
	})
}
