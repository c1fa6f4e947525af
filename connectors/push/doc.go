// Package push is the HTTP contract of push ingest, POST
// /v1/streams/{stream}/events, shared by the stores that take pushed
// events: the embedded log (connectors/ingest, a single node) and the
// brokers (connectors/kafka and connectors/nats, a cluster). It has no
// heavy dependency: the stores import it, never the other way round.
//
// A body is JSON lines (Content-Type application/x-ndjson or
// application/jsonl; blank lines are skipped) or one JSON array
// (application/json), sent as it is or gzip-compressed (Content-Encoding:
// gzip; the body limit holds for it decompressed). Read refuses a request
// before anything is applied: 405 for another method, 415 for another
// content type or encoding, 413 over the body limit, 400 for an
// Idempotency-Key over MaxKeyLen bytes, a gzip stream that is not one, or
// a body
// that does not split into events or an event the stream's decoder
// rejects (the error names its line or index). Every event is decoded
// before the store sees the request, so a malformed event fails the whole
// request and changes nothing.
//
// A store answers with Reply: 200 {"stream", "accepted": N, "partitions":
// [{"partition", "from", "to"}]} once the events are durable, with the
// header Idempotent-Replayed: true when the key had been applied before;
// errors are JSON {"error": "..."}: ErrKeyReused 422, ErrBusy 429 and
// ErrUnavailable 503, both with Retry-After. A request whose client went
// away is not answered: a retry with its key finds what happened.
package push
