// Package connectors holds sources and sinks, one subpackage each, so that
// a flow imports only the dependencies of the connectors it uses:
//
//   - gen: a deterministic, seeded, partitioned generator.
//   - file: JSON-lines files, one file per partition; an exactly-once
//     sink of JSON lines, one file per fragment.
//   - kafka: Kafka topics (franz-go), one source partition per topic
//     partition; a sink keyed by output id (at-least-once) and a
//     transactional, exactly-once one; HTTP ingest into a topic.
//   - nats: NATS JetStream (nats.go), one source partition per subject
//     filter of a stream, and a sink that JetStream deduplicates by
//     output id; HTTP ingest into a stream.
//   - ingest: events pushed over HTTP into an embedded, partitioned,
//     pebble-backed log, acknowledged once durable; the log's streams
//     are sources. For one node.
//   - push: the HTTP contract of push ingest (body kinds, decoding,
//     answers), shared by ingest and by the brokers' ingest in a
//     cluster: kafka.Ingest (transactions, and a ledger topic that applies
//     an Idempotency-Key once across nodes) and nats.Ingest (the key in
//     Nats-Msg-Id, deduplicated by the stream).
//
// Every source implements flows.Source: partitioned, ordered, replayable
// from any offset it produced.
package connectors
