// Package nats reads NATS JetStream streams as a Tessera source, writes
// outputs to JetStream, and takes events pushed over HTTP into a stream, on
// nats.go's jetstream package.
//
// # Source
//
// A source reads one stream. Each subject filter of Config.Subjects (by
// default the stream's own subjects, in its configuration's order) is one
// Tessera source partition, in that order; filters must not overlap, or a
// message would be read by two partitions.
//
// The offset of a message is its stream sequence number. Open(p, from)
// starts an ordered consumer (an ephemeral, flow-controlled consumer that
// the library recreates after a gap) filtered to partition p's subject,
// delivering from stream sequence from (0: the first message). ReadBatch.End
// is the sequence of the last message consumed plus one, the sequence to
// resume at. A partition's offsets increase but have gaps: the sequences in
// between belong to other subjects.
//
// The connection and its consumers are JetStream's own: there is no
// durable consumer and no group, since Tessera's placement decides which
// node reads a partition and checkpoints say where to resume. One
// connection per Source carries every reader's consumer.
//
// Config.Decode sees the whole jetstream.Msg: subject, headers, data and
// metadata (the time the stream stored it, for event time). A message it
// rejects goes to ReadBatch.Bad with its sequence.
//
// A stream that is deleted, or deleted and created again, under a reader
// is an error returned by Read (the reader checks the stream when the
// consumer reports trouble and every CheckInterval while idle). JetStream
// does not tell a consumer that messages it has not read yet were removed
// by the stream's limits or a purge: keep those limits above what a
// checkpoint may still need.
//
// JetStream has no consumer-group offset to commit. With TrimCommitted,
// Commit (which the engine calls once every fragment's durable checkpoint
// covers a partition up to an offset) purges the partition's messages
// below that offset instead, in the background: for a stream that exists
// only to feed this flow.
//
// # Sink
//
// Sink publishes each flows.Output to one subject with the header
// Nats-Msg-Id set to the output's id (flows.OutputID.String, e.g.
// "3/e/0/1/42/0/0"), and returns
// once JetStream has acknowledged every message. Within the stream's
// duplicate window (StreamConfig.Duplicates, 2 minutes by default) a
// replayed output is acknowledged as a duplicate and not stored again, so
// the sink is exactly-once for replays shorter than the window; make the
// window longer than a recovery may take. Messages whose acknowledgement
// does not come are published again, which the same window makes safe.
//
// With flows.OnCheckpoint, a redelivery after a crash carries the ids the
// first delivery had (they are stored in the checkpoint), whatever the
// order the fragment's inputs arrive in on replay: the stream holds each
// output once if the node is back within the window
// (examples/wordcount's TestNATSSinkSIGKILLExact kills and restarts a node
// five times). Without it, that holds only for outputs that do not
// depend on how the fragment's inputs interleave (see flows.OnCheckpoint).
//
// # HTTP ingest
//
// Ingest is a cluster.Stream: it answers POST /v1/streams/{stream}/events
// (the contract of connectors/push) by publishing each event to its
// partition's subject of a stream, and answers 200 only once JetStream has
// acknowledged every event (PubAck: stored, replicated as the stream is).
// A flow reads the stream with a Source over the same subjects. Each
// event's Nats-Msg-Id is "<Idempotency-Key>/<index in the request>", so a
// retry of the request, on any node, is dropped by the stream's duplicate
// window event by event, and an event whose acknowledgement did not come is
// simply published again; the answer's sequences are those JetStream
// acknowledges, the first attempt's for duplicates. A keyed request goes
// whole to the partition its key hashes to, so that its retries land on
// the subject its first attempt did. A key is applied once only within the
// window (StreamConfig.Duplicates, 2 minutes by default): make it longer
// than clients retry for. Every event of a keyed request carries the hash
// of the request's body (header Tessera-Body-Hash), and its first event is
// published alone: when JetStream answers that it is a duplicate of a
// message with another hash, the key was reused with another body, nothing
// more is published and the answer is 422 (two such requests at the same
// moment may both pass: JetStream cannot look a key up). A request without
// a key gets a random id, for its own republishing only.
//
// Tests run against an embedded nats-server.
package nats
