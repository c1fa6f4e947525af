package splice

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"
)

// ParseWindowedKeyedQuery reads a windowed keyed query from URL
// parameters: the windows (window=latest: the latest complete window; from
// and to, RFC 3339: windows starting in [from, to); neither: every window
// the view holds) and, within each window, the entries (limit, after or
// after_base64, prefix or prefix_base64, and top, as ParseQuery reads
// them). Unknown parameters are errors.
func ParseWindowedKeyedQuery(v url.Values) (Query, error) {
	keyed := url.Values{}
	for k, vals := range v {
		switch k {
		case "window", "from", "to":
		case "limit", "after", "after_base64", "prefix", "prefix_base64", "top":
			keyed[k] = vals
		default:
			return Query{}, fmt.Errorf("%w: unknown parameter %q (a windowed keyed view takes window, from, to, limit, after, after_base64, prefix, prefix_base64, top)", ErrBadRequest, k)
		}
		if len(vals) != 1 {
			return Query{}, fmt.Errorf("%w: parameter %q given %d times", ErrBadRequest, k, len(vals))
		}
	}
	q, err := ParseQuery(keyed)
	if err != nil {
		return q, err
	}
	if err := parseWindowRange(v, &q); err != nil {
		return q, err
	}
	return q, nil
}

// parseWindowKeyQuery reads the parameters of a key lookup in a windowed
// keyed view: window, from and to only.
func parseWindowKeyQuery(v url.Values) (Query, error) {
	var q Query
	for k, vals := range v {
		switch k {
		case "window", "from", "to":
		default:
			return q, fmt.Errorf("%w: unknown parameter %q (a key of a windowed keyed view takes window, from, to)", ErrBadRequest, k)
		}
		if len(vals) != 1 {
			return q, fmt.Errorf("%w: parameter %q given %d times", ErrBadRequest, k, len(vals))
		}
	}
	err := parseWindowRange(v, &q)
	return q, err
}

// windowValue is one key's value in one window.
type windowValue struct {
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	Complete bool      `json:"complete"`
	Value    any       `json:"value"`
}

type windowKeyAnswer struct {
	View      string        `json:"view"`
	Key       string        `json:"key"`
	KeyBase64 string        `json:"key_base64,omitempty"` // the key's bytes, if it is not valid UTF-8
	Window    *windowValue  `json:"window,omitempty"`     // ?window=latest
	Windows   []windowValue `json:"windows,omitempty"`    // otherwise: the windows in range that hold the key
	Horizon   *time.Time    `json:"horizon,omitempty"`
	Freshness []Freshness   `json:"freshness"`
	Complete  bool          `json:"complete"` // the key's fragment applied its whole input: the values are final
	Stale     bool          `json:"stale,omitempty"`
	Cut       *Cut          `json:"cut,omitempty"`
}

// windowKey answers the lookup of key in a windowed keyed view, with
// params the request's parameters (but key_base64).
func (h *handler) windowKey(w http.ResponseWriter, r *http.Request, view, key string, params url.Values) {
	o, err := ParseReadOptions(params)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	q, err := parseWindowKeyQuery(params)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := EvaluateRead(r.Context(), h.g, Request{View: view, Op: OpKey, Key: key, Query: q}, o)
	switch {
	case err != ErrNotFound: // the key's absence is the plain sentinel; other errors say what they are
	case q.Latest:
		err = fmt.Errorf("%w: key %q in the latest complete window of view %q", ErrNotFound, key, view)
	default:
		err = fmt.Errorf("%w: key %q in view %q", ErrNotFound, key, view)
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	a := windowKeyAnswer{View: view, Key: key, KeyBase64: keyBase64(key), Horizon: horizon(res), Freshness: res.Freshness, Complete: res.Complete(), Stale: res.Stale(), Cut: cutOf(res)}
	vs := make([]windowValue, len(res.KeyedWindows))
	for i, kw := range res.KeyedWindows {
		vs[i] = windowValue{Start: kw.Start, End: kw.End, Complete: kw.Complete, Value: kw.Entries[0].Value}
	}
	if q.Latest {
		a.Window = &vs[0]
	} else {
		a.Windows = vs
	}
	WriteJSON(w, http.StatusOK, a)
}

func horizon(res Result) *time.Time {
	if res.Horizon <= 0 {
		return nil
	}
	t := time.Unix(0, res.Horizon).UTC()
	return &t
}

// writeKeyedWindows streams a windowed keyed answer: windows may hold
// millions of entries.
func writeKeyedWindows(w http.ResponseWriter, res Result) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 64<<10)
	appendKeyedWindows(bw, res)
	bw.WriteByte('\n')
	bw.Flush()
}

// appendKeyedWindows writes a windowed keyed answer:
//
//	{"view": ..., "kind": "windowed-keyed",
//	 "window": W (window=latest) or "windows": [W, ...],
//	 "more": bool, "next_after": key (if more: the after= of the next page;
//	 with "next_after_base64", its bytes, if it is not valid UTF-8),
//	 "horizon": time (if windows may have been dropped), "freshness": [...],
//	 "complete": bool (every fragment applied its whole input)}
//
// with each W {"start", "end", "complete", "keys" (how many the window
// holds), "entries": [{"key", "value"}, ...] (and "key_base64", see
// writeEntry), "more"}. A page is one range
// of keys in every window (see Result.NextAfter).
func appendKeyedWindows(bw *bufio.Writer, res Result) {
	bw.WriteString(`{"view":`)
	writeJSONValue(bw, res.Spec.Name)
	bw.WriteString(`,"kind":"windowed-keyed",`)
	if res.Latest && len(res.KeyedWindows) == 1 {
		bw.WriteString(`"window":`)
		appendKeyedWindow(bw, res.KeyedWindows[0])
	} else {
		bw.WriteString(`"windows":[`)
		for i, kw := range res.KeyedWindows {
			if i > 0 {
				bw.WriteByte(',')
			}
			appendKeyedWindow(bw, kw)
		}
		bw.WriteByte(']')
	}
	bw.WriteString(`,"more":`)
	bw.WriteString(strconv.FormatBool(res.More))
	if res.More {
		bw.WriteByte(',')
		writeKeyField(bw, "next_after", res.NextAfter)
	}
	if h := horizon(res); h != nil {
		bw.WriteString(`,"horizon":`)
		writeJSONValue(bw, h)
	}
	bw.WriteString(`,"freshness":`)
	writeJSONValue(bw, res.Freshness)
	bw.WriteString(`,"complete":`)
	bw.WriteString(strconv.FormatBool(res.Complete()))
	writeStale(bw, res)
	writeCut(bw, res)
	bw.WriteByte('}')
}

func appendKeyedWindow(bw *bufio.Writer, kw KeyedWindow) {
	bw.WriteString(`{"start":`)
	writeJSONValue(bw, kw.Start)
	bw.WriteString(`,"end":`)
	writeJSONValue(bw, kw.End)
	bw.WriteString(`,"complete":`)
	bw.WriteString(strconv.FormatBool(kw.Complete))
	bw.WriteString(`,"keys":`)
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), kw.Keys, 10))
	bw.WriteString(`,"entries":[`)
	for i, e := range kw.Entries {
		if i > 0 {
			bw.WriteByte(',')
		}
		writeEntry(bw, e)
	}
	bw.WriteString(`],"more":`)
	bw.WriteString(strconv.FormatBool(kw.More))
	bw.WriteByte('}')
}

// keyedWindowsJSON is the answer as appendKeyedWindows writes it (watch
// snapshots).
func keyedWindowsJSON(res Result) json.RawMessage {
	var b bytes.Buffer
	bw := bufio.NewWriter(&b)
	appendKeyedWindows(bw, res)
	bw.Flush()
	return b.Bytes()
}

// keyedWindowJSON is one window as appendKeyedWindow writes it.
func keyedWindowJSON(kw KeyedWindow) json.RawMessage {
	var b bytes.Buffer
	bw := bufio.NewWriter(&b)
	appendKeyedWindow(bw, kw)
	bw.Flush()
	return b.Bytes()
}

// diffKeyedWindows is diff for windowed keyed answers: windows are keyed
// by start, and a window that changed is sent whole.
func diffKeyedWindows(old, cur map[string][]byte, windows []KeyedWindow) (changed []json.RawMessage, removed []string) {
	changed, removed = []json.RawMessage{}, []string{}
	for _, kw := range windows {
		k := kw.Start.Format(time.RFC3339Nano)
		if o, ok := old[k]; !ok || !bytes.Equal(o, cur[k]) {
			changed = append(changed, cur[k])
		}
	}
	for k := range old {
		if _, ok := cur[k]; !ok {
			removed = append(removed, k)
		}
	}
	slices.Sort(removed)
	return changed, removed
}
