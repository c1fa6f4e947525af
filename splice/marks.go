package splice

import (
	"strconv"
	"strings"
)

// FormatMarks writes per-fragment marks (index: fragment) as
// Request.Since carries them: "instance.gen" per fragment, comma-separated.
func FormatMarks(marks []ChangeMark) string {
	var b strings.Builder
	b.Grow(len(marks) * 12)
	for i, m := range marks {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(m.Instance, 36))
		b.WriteByte('.')
		b.WriteString(strconv.FormatUint(m.Gen, 36))
	}
	return b.String()
}

// MarkOf is fragment f's mark in since (FormatMarks); ok is false if it
// has none or it is malformed (a peer's input: no panic).
func MarkOf(since string, f int) (m ChangeMark, ok bool) {
	if f < 0 {
		return m, false
	}
	for range f {
		i := strings.IndexByte(since, ',')
		if i < 0 {
			return m, false
		}
		since = since[i+1:]
	}
	if i := strings.IndexByte(since, ','); i >= 0 {
		since = since[:i]
	}
	a, b, found := strings.Cut(since, ".")
	if !found {
		return m, false
	}
	inst, err1 := strconv.ParseUint(a, 36, 64)
	gen, err2 := strconv.ParseUint(b, 36, 64)
	if err1 != nil || err2 != nil {
		return m, false
	}
	return ChangeMark{Instance: inst, Gen: gen}, true
}
