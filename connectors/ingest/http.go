package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/cespare/xxhash/v2"

	"github.com/tessera-streams/tessera/shard"
	"github.com/tessera-streams/tessera/splice"
)

// MaxKeyLen is the longest Idempotency-Key accepted.
const MaxKeyLen = 255

// retryAfter is the Retry-After of 429 and 503 answers, in seconds.
const retryAfter = 1

// Answer is the body of a 200 answer.
type Answer struct {
	Stream string `json:"stream"`
	Result
	// MinOffsets is a read-your-writes token: a view query with
	// ?min_offsets= this answers only once it covers these events (when
	// the flow reads the stream as a source of the same name).
	MinOffsets string `json:"min_offsets,omitempty"`
}

// minOffsets is the token of res: stream/partition:to, per partition.
func minOffsets(stream string, res Result) string {
	m := make(map[string]int64, len(res.Partitions))
	for _, p := range res.Partitions {
		m[fmt.Sprintf("%s/%d", stream, p.Partition)] = p.To
	}
	if len(m) == 0 {
		return ""
	}
	return splice.FormatOffsets(m)
}

// ServeHTTP appends the events of a POST (see the package doc) and
// answers once they are durable.
func (s *Stream[T]) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		splice.WriteError(w, http.StatusMethodNotAllowed, "only POST appends events")
		return
	}
	kind, err := kindOf(r.Header.Get("Content-Type"))
	if err != nil {
		splice.WriteError(w, http.StatusUnsupportedMediaType, err.Error())
		return
	}
	key := r.Header.Get("Idempotency-Key")
	if len(key) > MaxKeyLen {
		splice.WriteError(w, http.StatusBadRequest, fmt.Sprintf("Idempotency-Key longer than %d bytes", MaxKeyLen))
		return
	}
	if r.ContentLength > s.cfg.MaxBody {
		splice.WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", s.cfg.MaxBody))
		return
	}
	if s.busy(w, 0) {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			splice.WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", s.cfg.MaxBody))
			return
		}
		splice.WriteError(w, http.StatusBadRequest, fmt.Sprintf("read the body: %v", err))
		return
	}
	req, err := s.request(kind, body, key)
	if err != nil {
		splice.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.size > 0 && s.busy(w, req.size) {
		return
	}
	res, err := s.append(r.Context(), req)
	switch {
	case err == nil:
	case errors.Is(err, ErrKeyReused):
		splice.WriteError(w, http.StatusUnprocessableEntity, "Idempotency-Key "+strconv.Quote(key)+" was used with another body")
		return
	case errors.Is(err, ErrClosed), errors.Is(err, ErrBroken):
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
		splice.WriteError(w, http.StatusServiceUnavailable, err.Error())
		return
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return // the client is gone; a retry with its key finds what happened
	default:
		splice.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if res.Replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	splice.WriteJSON(w, http.StatusOK, Answer{Stream: s.cfg.Name, Result: res, MinOffsets: minOffsets(s.cfg.Name, res)})
}

// busy answers 429 or 503 with Retry-After, and reports true, when an
// append of size bytes must wait: the flow is behind, or the log is full
// of events the flow has not committed, or broken.
func (s *Stream[T]) busy(w http.ResponseWriter, size int) bool {
	code, msg := 0, ""
	switch {
	case s.l.Err() != nil:
		code, msg = http.StatusServiceUnavailable, s.l.Err().Error()
	case s.Unread() > s.cfg.MaxUnread:
		code, msg = http.StatusTooManyRequests, fmt.Sprintf("stream %s: the flow has more than %d bytes left to read", s.cfg.Name, s.cfg.MaxUnread)
	case s.l.full(size):
		s.l.nudge()
		code, msg = http.StatusServiceUnavailable, fmt.Sprintf("the log holds %d bytes the flow has not committed (limit %d)", s.l.Bytes(), s.l.opts.MaxBytes)
	default:
		return false
	}
	w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
	splice.WriteError(w, code, msg)
	return true
}

// request splits and decodes a body into an append: every event is
// decoded, so a malformed one fails the whole request before anything is
// written.
func (s *Stream[T]) request(kind bodyKind, body []byte, key string) (*appendReq, error) {
	events, numbers, err := splitBody(kind, body)
	if err != nil {
		return nil, err
	}
	req := &appendReq{s: s.s, key: key}
	if key != "" {
		req.hash = xxhash.Sum64(body)
	}
	n := len(s.s.parts)
	var byPart [][][]byte
	if s.cfg.Key != nil {
		byPart = make([][][]byte, n)
	}
	for i, ev := range events {
		v, err := s.cfg.Decode(ev)
		if err != nil {
			return nil, &malformed{Event: numbers[i], Err: err}
		}
		req.size += len(ev)
		if byPart != nil {
			p := shard.Fragment(shard.String(s.cfg.Key(v)), n)
			byPart[p] = append(byPart[p], ev)
		}
	}
	switch {
	case len(events) == 0:
	case byPart == nil:
		req.parts = []partEvents{{p: int((s.rr.Add(1) - 1) % uint64(n)), events: events}}
	default:
		for p, evs := range byPart {
			if len(evs) > 0 {
				req.parts = append(req.parts, partEvents{p: p, events: evs})
			}
		}
	}
	return req, nil
}

// Append appends events (each one JSON line or value, which Decode must
// take) to the stream, placed as a request's would be, and returns once
// they are durable. key is an idempotency key, or "".
func (s *Stream[T]) Append(ctx context.Context, key string, events ...[]byte) (Result, error) {
	var body []byte
	for _, ev := range events {
		body = append(append(body, ev...), '\n')
	}
	req, err := s.request(ndjson, body, key)
	if err != nil {
		return Result{}, err
	}
	return s.append(ctx, req)
}

func (s *Stream[T]) append(ctx context.Context, req *appendReq) (Result, error) {
	if len(req.parts) == 0 && req.key == "" {
		return Result{Partitions: []Appended{}}, nil
	}
	res, err := s.l.append(ctx, req)
	if res.Partitions == nil {
		res.Partitions = []Appended{}
	}
	return res, err
}
