package push

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"

	"github.com/tessera-streams/tessera/splice"
)

// MaxKeyLen is the longest Idempotency-Key accepted.
const MaxKeyLen = 255

// RetryAfter is the Retry-After of 429 and 503 answers, in seconds.
const RetryAfter = 1

// Errors a store returns, which Fail answers with their status (wrap
// them).
var (
	// ErrKeyReused: an idempotency key came back with another body (422).
	ErrKeyReused = errors.New("idempotency key reused with another body")
	// ErrBusy: too much is waiting; the client should retry later (429).
	ErrBusy = errors.New("busy")
	// ErrUnavailable: the store cannot take events now (closing, broker
	// down, a transaction in doubt); the client should retry later (503).
	ErrUnavailable = errors.New("unavailable")
)

// Result is what an append did: the events' offsets, by partition.
type Result struct {
	Accepted   int        `json:"accepted"`
	Partitions []Appended `json:"partitions"`
	// Replayed is true when the idempotency key was applied before: this is
	// that append's result and nothing was appended now.
	Replayed bool `json:"-"`
}

// Appended is one partition's part of an append: its events are at
// offsets in [From, To). In the embedded log they are exactly the offsets
// From to To-1; in a broker's log other producers' records may lie in
// between.
type Appended struct {
	Partition int   `json:"partition"`
	From      int64 `json:"from"`
	To        int64 `json:"to"`
}

// Answer is the body of a 200 answer.
type Answer struct {
	Stream string `json:"stream"`
	Result
	// MinOffsets is a read-your-writes token: a view query with
	// ?min_offsets= this answers only once it covers these events (when
	// the flow reads the stream as a source of the same name). Only the
	// embedded log gives one: its offsets are the source's.
	MinOffsets string `json:"min_offsets,omitempty"`
}

// Request is a decoded push: every event decoded, nothing applied yet.
type Request[T any] struct {
	Key    string   // the Idempotency-Key, or ""
	Hash   uint64   // of the body, when there is a key
	Events [][]byte // each event's bytes (sub-slices of the body)
	Values []T      // each event decoded
	Size   int      // bytes of the events
}

// Decode splits a body of the given kind into events and decodes each:
// an event decode rejects fails the whole request (the error says which).
func Decode[T any](kind Kind, body []byte, key string, decode func([]byte) (T, error)) (*Request[T], error) {
	events, numbers, err := splitBody(kind, body)
	if err != nil {
		return nil, err
	}
	req := &Request[T]{Key: key, Events: events, Values: make([]T, len(events))}
	if key != "" {
		req.Hash = xxhash.Sum64(body)
	}
	for i, ev := range events {
		v, err := decode(ev)
		if err != nil {
			return nil, &malformed{Event: numbers[i], Err: err}
		}
		req.Values[i] = v
		req.Size += len(ev)
	}
	return req, nil
}

// Events is the request a POST of events (one JSON value each) as JSON
// lines with idempotency key key ("" for none) would make: what a
// stream's Append takes.
func Events[T any](key string, events [][]byte, decode func([]byte) (T, error)) (*Request[T], error) {
	var body []byte
	for _, ev := range events {
		body = append(append(body, ev...), '\n')
	}
	return Decode(NDJSON, body, key, decode)
}

// Serve answers POST /v1/streams/{stream}/events for a stream that keeps
// its events elsewhere (a broker): read, append, reply. A key reused with
// another body is named in the 422.
func Serve[T any](w http.ResponseWriter, r *http.Request, stream string, maxBody int64, decode func([]byte) (T, error),
	appendReq func(context.Context, *Request[T]) (Result, error)) {
	pr := Read(w, r, maxBody, decode)
	if pr == nil {
		return
	}
	res, err := appendReq(r.Context(), pr)
	if errors.Is(err, ErrKeyReused) {
		err = fmt.Errorf("Idempotency-Key %q: %w", pr.Key, err)
	}
	Reply(w, stream, res, err)
}

// Read reads and decodes the request of POST /v1/streams/{stream}/events.
// A request it refuses it answers itself, with a JSON error (405, 415,
// 400, 413), and returns nil.
func Read[T any](w http.ResponseWriter, r *http.Request, maxBody int64, decode func([]byte) (T, error)) *Request[T] {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		splice.WriteError(w, http.StatusMethodNotAllowed, "only POST appends events")
		return nil
	}
	kind, err := KindOf(r.Header.Get("Content-Type"))
	if err != nil {
		splice.WriteError(w, http.StatusUnsupportedMediaType, err.Error())
		return nil
	}
	key := r.Header.Get("Idempotency-Key")
	if len(key) > MaxKeyLen {
		splice.WriteError(w, http.StatusBadRequest, fmt.Sprintf("Idempotency-Key longer than %d bytes", MaxKeyLen))
		return nil
	}
	if r.ContentLength > maxBody {
		splice.WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", maxBody))
		return nil
	}
	body, err := readBody(w, r, maxBody)
	if err != nil {
		switch _, tooLarge := errors.AsType[*http.MaxBytesError](err); {
		case tooLarge:
			splice.WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", maxBody))
		case errors.Is(err, errEncoding):
			splice.WriteError(w, http.StatusUnsupportedMediaType, err.Error())
		default:
			splice.WriteError(w, http.StatusBadRequest, fmt.Sprintf("read the body: %v", err))
		}
		return nil
	}
	req, err := Decode(kind, body, key, decode)
	if err != nil {
		splice.WriteError(w, http.StatusBadRequest, err.Error())
		return nil
	}
	return req
}

// errEncoding is a Content-Encoding the handler does not take (415).
var errEncoding = errors.New("Content-Encoding")

// readBody reads r's body, gzip-compressed or not (Content-Encoding), of
// at most maxBody bytes once decompressed (and as sent): a few kilobytes
// of gzip can hold gigabytes.
func readBody(w http.ResponseWriter, r *http.Request, maxBody int64) ([]byte, error) {
	in := http.MaxBytesReader(w, r.Body, maxBody)
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
		return io.ReadAll(in)
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(in)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close()
		body, err := io.ReadAll(io.LimitReader(zr, maxBody+1))
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		if int64(len(body)) > maxBody {
			return nil, &http.MaxBytesError{Limit: maxBody}
		}
		return body, nil
	default:
		return nil, fmt.Errorf("%w %q: a body goes as it is or gzip-compressed (Content-Encoding: gzip)", errEncoding, enc)
	}
}

// Retry answers code (429 or 503) with Retry-After and the message.
func Retry(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Retry-After", strconv.Itoa(RetryAfter))
	splice.WriteError(w, code, msg)
}

// Reply answers an append: 200 with the Answer, or the error's status
// (ErrKeyReused 422, ErrBusy 429, ErrUnavailable 503 with Retry-After,
// anything else 500). A cancelled or timed-out ctx error is not
// answered: the client is gone, and a retry with its key finds what
// happened.
func Reply(w http.ResponseWriter, stream string, res Result, err error) {
	ReplyWithToken(w, stream, res, err, nil)
}

// ReplyWithToken is Reply, with the answer's read-your-writes token made
// by token (nil: none).
func ReplyWithToken(w http.ResponseWriter, stream string, res Result, err error, token func(Result) string) {
	switch {
	case err == nil:
	case errors.Is(err, ErrKeyReused):
		splice.WriteError(w, http.StatusUnprocessableEntity, err.Error())
		return
	case errors.Is(err, ErrBusy):
		Retry(w, http.StatusTooManyRequests, err.Error())
		return
	case errors.Is(err, ErrUnavailable):
		Retry(w, http.StatusServiceUnavailable, err.Error())
		return
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return
	default:
		splice.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if res.Partitions == nil {
		res.Partitions = []Appended{}
	}
	if res.Replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	a := Answer{Stream: stream, Result: res}
	if token != nil {
		a.MinOffsets = token(res)
	}
	splice.WriteJSON(w, http.StatusOK, a)
}
