// Package connectors holds sources and sinks, one subpackage each, so that
// a flow imports only the dependencies of the connectors it uses:
//
//   - gen: a deterministic, seeded, partitioned generator.
//   - file: JSON-lines files, one file per partition; an exactly-once
//     sink of JSON lines, one file per fragment.
//   - kafka: Kafka topics (franz-go), one source partition per topic
//     partition; a sink keyed by output id (at-least-once) and a
//     transactional, exactly-once one.
//   - nats: NATS JetStream (nats.go), one source partition per subject
//     filter of a stream, and a sink that JetStream deduplicates by
//     output id.
//   - ingest: events pushed over HTTP into an embedded, partitioned,
//     pebble-backed log, acknowledged once durable; the log's streams
//     are sources.
//
// Every source implements flows.Source: partitioned, ordered, replayable
// from any offset it produced.
package connectors
