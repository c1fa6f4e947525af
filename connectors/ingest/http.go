package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/tessera-streams/tessera/connectors/push"
	"github.com/tessera-streams/tessera/shard"
	"github.com/tessera-streams/tessera/splice"
)

// MaxKeyLen is the longest Idempotency-Key accepted.
const MaxKeyLen = push.MaxKeyLen

// Answer is the body of a 200 answer.
type Answer = push.Answer

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
	pr := push.Read(w, r, s.cfg.MaxBody, s.cfg.Decode)
	if pr == nil {
		return
	}
	req := s.place(pr)
	if s.busy(w, req.size) {
		return
	}
	res, err := s.append(r.Context(), req)
	switch {
	case errors.Is(err, ErrKeyReused):
		splice.WriteError(w, http.StatusUnprocessableEntity, "Idempotency-Key "+strconv.Quote(pr.Key)+" was used with another body")
		return
	case errors.Is(err, ErrClosed), errors.Is(err, ErrBroken), errors.Is(err, ErrFull):
		err = fmt.Errorf("%w: %w", push.ErrUnavailable, err)
	}
	push.ReplyWithToken(w, s.cfg.Name, res, err, func(res Result) string { return minOffsets(s.cfg.Name, res) })
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
	push.Retry(w, code, msg)
	return true
}

// place makes an append of a decoded request: by Config.Key, or the
// whole request to the next partition round-robin.
func (s *Stream[T]) place(pr *push.Request[T]) *appendReq {
	req := &appendReq{s: s.s, key: pr.Key, hash: pr.Hash, size: pr.Size}
	n := len(s.s.parts)
	switch {
	case len(pr.Events) == 0:
	case s.cfg.Key == nil:
		req.parts = []partEvents{{p: int((s.rr.Add(1) - 1) % uint64(n)), events: pr.Events, vals: pr.Values}}
	default:
		byPart := make([][][]byte, n)
		vals := make([][]T, n)
		for i, v := range pr.Values {
			p := shard.Fragment(shard.String(s.cfg.Key(v)), n)
			byPart[p] = append(byPart[p], pr.Events[i])
			vals[p] = append(vals[p], v)
		}
		for p, evs := range byPart {
			if len(evs) > 0 {
				req.parts = append(req.parts, partEvents{p: p, events: evs, vals: vals[p]})
			}
		}
	}
	return req
}

// Append appends events (each one JSON line or value, which Decode must
// take) to the stream, placed as a request's would be, and returns once
// they are durable. key is an idempotency key, or "".
func (s *Stream[T]) Append(ctx context.Context, key string, events ...[]byte) (Result, error) {
	pr, err := push.Events(key, events, s.cfg.Decode)
	if err != nil {
		return Result{}, err
	}
	return s.append(ctx, s.place(pr))
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
