package splice

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"testing"
	"unicode/utf8"
)

// writeEntry prints a key that is valid UTF-8 as it did before keys
// carried their bytes, and nothing more; one that is not, as before, with
// its bytes in key_base64 beside it.
func TestWriteEntryKeys(t *testing.T) {
	for _, k := range []string{"", "w0001", "a/b", `q"uote\`, "tab\there", "<&>", "é", "\ufffd", "日本", "\u2028",
		"\xff", "\xfe\xff", "a\xffb", "\xc3", "\xed\xa0\x80", "é\x80"} {
		var b bytes.Buffer
		bw := bufio.NewWriter(&b)
		writeEntry(bw, Entry{Key: k, Value: int64(7)})
		bw.Flush()
		// As it was printed before keys carried their bytes: as it is
		// when it needs no escaping, else as encoding/json prints it.
		printed, _ := json.Marshal(k)
		if safeString(k) {
			printed = []byte(`"` + k + `"`)
		}
		want := `{"key":` + string(printed)
		if !utf8.ValidString(k) {
			want += `,"key_base64":"` + base64.StdEncoding.EncodeToString([]byte(k)) + `"`
		}
		want += `,"value":7}`
		if b.String() != want {
			t.Errorf("key %q: %s, want %s", k, b.String(), want)
		}
		var e struct {
			Key       string `json:"key"`
			KeyBase64 []byte `json:"key_base64"` // encoding/json decodes standard base64 into []byte
		}
		if err := json.Unmarshal(b.Bytes(), &e); err != nil {
			t.Fatalf("key %q: %s: %v", k, b.String(), err)
		}
		if !utf8.ValidString(k) && string(e.KeyBase64) != k {
			t.Errorf("key %q: key_base64 holds %q", k, e.KeyBase64)
		}
	}
}

// Writing an entry whose key is valid UTF-8 and needs no escaping (the
// keys of most views) allocates nothing.
func TestWriteEntryAllocs(t *testing.T) {
	bw := bufio.NewWriterSize(io.Discard, 64<<10)
	e := Entry{Key: "z03->z09", Value: int64(1) << 40} // boxed once, here
	if n := testing.AllocsPerRun(1000, func() { writeEntry(bw, e) }); n != 0 {
		t.Fatalf("writeEntry of key %q: %v allocations", e.Key, n)
	}
}

func TestRemovedKeys(t *testing.T) {
	valid := []string{"a", "é", "\ufffd"}
	if p, b := removedKeys(valid); &p[0] != &valid[0] || b != nil {
		t.Fatalf("all valid: %q, %q", p, b)
	}
	p, b := removedKeys([]string{"a", "\xfe", "é", "\xff\x01"})
	if len(p) != 2 || p[0] != "a" || p[1] != "é" || len(b) != 2 || b[0] != "/g==" || b[1] != "/wE=" {
		t.Fatalf("mixed: %q, %q", p, b)
	}
}

// BenchmarkWriteEntry writes entries of a matrix's keys (valid UTF-8, no
// escaping: the common case) and of keys that are not valid UTF-8.
func BenchmarkWriteEntry(b *testing.B) {
	for _, c := range []struct{ name, key string }{{"ascii", "z003->z117"}, {"invalid", "z003->\xff\x01"}} {
		b.Run(c.name, func(b *testing.B) {
			bw := bufio.NewWriterSize(io.Discard, 64<<10)
			e := Entry{Key: c.key, Value: int64(1) << 40}
			b.ReportAllocs()
			for b.Loop() {
				writeEntry(bw, e)
			}
		})
	}
}
