package splice

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"
)

// A key is a string of bytes, and a JSON string is Unicode: encoding/json
// prints every byte that is not part of valid UTF-8 as U+FFFD, so that
// keys such as binary ids or Latin-1 names print alike, a printed key
// asked for again names another (or none), and a page that goes on after
// one starts at the wrong place. So an answer that prints such a key adds
// its exact bytes, in standard base64, beside it — "key_base64",
// "next_after_base64" — and a watch lists such a key that left its
// answer in "removed_base64" (not in "removed", where its printed form
// could name another key). Requests take the bytes back: after_base64,
// prefix_base64, and GET /v1/views/{view}/keys?key_base64=. A key that is
// valid UTF-8 is printed as before, alone, and writing it allocates
// nothing.

// writeKeyField writes `"name":k` and, if k is not valid UTF-8,
// `,"name_base64":"..."`.
func writeKeyField(bw *bufio.Writer, name, k string) {
	bw.WriteByte('"')
	bw.WriteString(name)
	bw.WriteString(`":`)
	if safeString(k) {
		bw.WriteByte('"')
		bw.WriteString(k)
		bw.WriteByte('"')
		return
	}
	writeJSONString(bw, k)
	if utf8.ValidString(k) {
		return
	}
	bw.WriteString(`,"`)
	bw.WriteString(name)
	bw.WriteString(`_base64":"`)
	bw.Write(base64.StdEncoding.AppendEncode(bw.AvailableBuffer(), []byte(k)))
	bw.WriteByte('"')
}

// writeJSONString writes s as a JSON string.
func writeJSONString(bw *bufio.Writer, s string) {
	if safeString(s) {
		bw.WriteByte('"')
		bw.WriteString(s)
		bw.WriteByte('"')
		return
	}
	b, _ := json.Marshal(s) // a string always encodes
	bw.Write(b)
}

// keyBase64 is k's bytes in standard base64 if k is not valid UTF-8, else
// "" (an omitempty "key_base64" field is then left out).
func keyBase64(k string) string {
	if utf8.ValidString(k) {
		return ""
	}
	return base64.StdEncoding.EncodeToString([]byte(k))
}

// removedKeys splits the keys that left a watch's answer into those that
// are valid UTF-8, printed as they are, and the others' bytes in base64
// (nil if none).
func removedKeys(keys []string) (printed, b64 []string) {
	i := 0
	for i < len(keys) && utf8.ValidString(keys[i]) {
		i++
	}
	if i == len(keys) {
		return keys, nil
	}
	printed = keys[:i:i]
	for _, k := range keys[i:] {
		if utf8.ValidString(k) {
			printed = append(printed, k)
		} else {
			b64 = append(b64, keyBase64(k))
		}
	}
	return printed, b64
}

// keyParam reads the key a request gives as name (its text) or as
// name_base64 (its bytes in standard base64), and whether it gives one;
// both at once is a bad request.
func keyParam(v url.Values, name string) (string, bool, error) {
	b64 := name + "_base64"
	if !v.Has(b64) {
		return v.Get(name), v.Has(name), nil
	}
	if v.Has(name) {
		return "", false, fmt.Errorf("%w: %s and %s do not combine: give the key once, as text or as bytes", ErrBadRequest, name, b64)
	}
	k, err := decodeKey(b64, v.Get(b64))
	return k, err == nil, err
}

// decodeKey decodes the key parameter param gives in standard base64.
func decodeKey(param, s string) (string, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		hint := ""
		if strings.Contains(s, " ") {
			hint = " (a + in a URL's query string is a space: escape it as %2B)"
		}
		return "", fmt.Errorf("%w: %s must be a key's bytes in standard, padded base64, got %q: %v%s", ErrBadRequest, param, s, err, hint)
	}
	return string(b), nil
}
