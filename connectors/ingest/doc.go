// Package ingest is push ingest over HTTP into an embedded, partitioned,
// durable log, and a Tessera source over that log.
//
// # The log
//
// A Log is one pebble database (github.com/cockroachdb/pebble/v2, the
// package's heavy dependency, kept here). It holds named streams, each with
// a fixed number of partitions; an event's offset is its position in its
// partition (0, 1, 2, …, dense). Appends are acknowledged only once they
// are synced to disk. One goroutine of the Log writes: appends queued while
// it syncs go into the next pebble batch together, so concurrent requests
// share one fsync (group commit), and offsets are assigned in that one
// place. Readers see an event only once it is durable, so a reader never
// reads what a crash could take back. A commit that fails — a WAL write or
// sync included — fails its appends and every later one (ErrBroken, HTTP
// 503 with Retry-After): the disk can no longer be trusted, and a restart
// recovers what was synced; nothing of the failed batch was acknowledged.
// (Pebble holds a failed WAL write fatal when the commit waits for its
// sync, so the writer applies each batch without waiting and then waits for
// the sync, which returns the error. Pebble still stops the process if a
// batch is applied after the WAL has failed — the writer applies none, and
// retention stops committing, but the two may race — or if it cannot
// create a new WAL file when a memtable fills.)
//
// Retention: a partition's events are deleted once the flow has committed
// them (every fragment's durable checkpoint covers them, see
// flows.Committer) and they are older than Options.MaxAge, or the log is
// over Options.MaxBytes. Events the flow has not committed are never
// deleted: a log over MaxBytes refuses appends (ErrFull, HTTP 503) until
// the flow catches up. Replay from any offset still in the log; an offset
// retention deleted is an error of Open, never a silent jump.
//
// # Idempotency
//
// An append may carry an idempotency key (the HTTP Idempotency-Key
// header). The key, a hash of the request body and the append's result are
// written in the same pebble batch as the events, so a retry after any
// crash finds either nothing (the append was lost with the crash and is
// applied now) or the result (returned again, nothing appended). The
// check runs in the writer goroutine, so two concurrent requests with one
// key are applied once too. A key is kept for Options.IdempotencyTTL; a
// retry with the same key and another body is refused (ErrKeyReused, 422).
//
// # HTTP
//
// Stream.ServeHTTP answers POST /v1/streams/{stream}/events (cluster.Node
// mounts it, see cluster.Config.Streams): a body of JSON lines
// (application/x-ndjson) or one JSON array (application/json). Every event
// is decoded with the stream's decoder before anything is appended, so a
// malformed event fails the whole request (400) and changes nothing. The
// answer, 200 {"accepted": N, "partitions": [{"partition", "from", "to"}],
// "min_offsets": "stream/0:to,..."}, comes once the events are durable;
// [from, to) are their offsets, and min_offsets, given to a view query
// (?min_offsets=), makes it answer only once it covers them:
// read-your-writes, when the flow reads the stream as a source of the same
// name. Errors
// are JSON {"error": "..."}: 413 over the body limit, 415 for another
// content type, 422 for a reused idempotency key, 429 with Retry-After
// while the flow has more than MaxUnread bytes of the stream left to read,
// 503 with Retry-After while the log is full or closing.
//
// An event is decoded once: the values the check made are kept with the
// append, in memory, for the partition's open reader (up to 8 MiB of
// events a partition), which takes them instead of decoding the stored
// bytes again; a reader further behind, or reading again after a rewind,
// decodes from the log.
//
// The request contract (body kinds, decoding, answers) is connectors/push,
// which the brokers' ingest shares.
//
// The log lives on one node's disk: a node of a cluster must not
// acknowledge events its death could lose, so cluster.Node refuses a
// stream of this package when it runs as a member of a cluster
// (Stream.NodeLocal). In a cluster, push into Kafka or JetStream instead
// (kafka.Ingest, nats.Ingest): the node answers once the broker has the
// events, and the flow reads the topic or stream as its source.
//
// The package never sleeps on the event path and owns its goroutines: the
// writer and the retention loop stop in Close, which waits for them.
package ingest
