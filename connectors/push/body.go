package push

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
)

// Kind is the kind of a request body, by its Content-Type.
type Kind int

// Body kinds.
const (
	NDJSON    Kind = iota // application/x-ndjson (or application/jsonl): one event a line
	JSONArray             // application/json: one array of events
)

// errContentType is a Content-Type the handler does not take (415).
var errContentType = errors.New("unsupported content type")

// KindOf reads a Content-Type header.
func KindOf(contentType string) (Kind, error) {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return 0, fmt.Errorf("%w %q: want application/x-ndjson or application/json", errContentType, contentType)
	}
	switch mt {
	case "application/x-ndjson", "application/jsonl":
		return NDJSON, nil
	case "application/json":
		return JSONArray, nil
	}
	return 0, fmt.Errorf("%w %q: want application/x-ndjson or application/json", errContentType, mt)
}

// malformed is a body that does not split into events, or an event the
// stream's decoder rejects (400): Event is its 1-based line (x-ndjson) or
// array index + 1 (json), 0 for the body as a whole.
type malformed struct {
	Event int
	Err   error
}

func (e *malformed) Error() string {
	if e.Event == 0 {
		return e.Err.Error()
	}
	return fmt.Sprintf("event %d: %v", e.Event, e.Err)
}

func (e *malformed) Unwrap() error { return e.Err }

// splitBody returns the events of a body, as sub-slices of it, and for
// each its number (line or index + 1, for errors). Blank lines of x-ndjson
// carry nothing and are skipped. A JSON array must hold nothing after it.
// It checks the JSON syntax of array elements only; lines are checked by
// the stream's decoder.
func splitBody(kind Kind, body []byte) (events [][]byte, numbers []int, err error) {
	if kind == NDJSON {
		line := 0
		for len(body) > 0 {
			line++
			ev := body
			if i := bytes.IndexByte(body, '\n'); i >= 0 {
				ev, body = body[:i], body[i+1:]
			} else {
				body = nil
			}
			ev = bytes.TrimRight(ev, "\r")
			if len(bytes.TrimSpace(ev)) == 0 {
				continue
			}
			events = append(events, ev)
			numbers = append(numbers, line)
		}
		return events, numbers, nil
	}
	d := json.NewDecoder(bytes.NewReader(body))
	tok, err := d.Token()
	if err != nil {
		return nil, nil, &malformed{Err: fmt.Errorf("want a JSON array of events: %w", err)}
	}
	if tok != json.Delim('[') {
		return nil, nil, &malformed{Err: fmt.Errorf("want a JSON array of events, got %v", tok)}
	}
	var raw json.RawMessage // reused: the event is the body's own bytes
	for d.More() {
		if err := d.Decode(&raw); err != nil {
			return nil, nil, &malformed{Event: len(events) + 1, Err: err}
		}
		end := int(d.InputOffset())
		events = append(events, body[end-len(raw):end])
		numbers = append(numbers, len(events))
	}
	if _, err := d.Token(); err != nil { // the closing ]
		return nil, nil, &malformed{Err: fmt.Errorf("unterminated JSON array: %w", err)}
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return nil, nil, &malformed{Err: errors.New("data after the JSON array")}
	}
	return events, numbers, nil
}
