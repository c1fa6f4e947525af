// Package kafka reads Kafka topics as a Tessera source and writes outputs
// to a Kafka topic, on franz-go (github.com/twmb/franz-go).
//
// # Source
//
// Every partition of every configured topic is one Tessera source
// partition. They are numbered in the order of Config.Topics, and within a
// topic by Kafka partition number: with Topics {"a", "b"} and 3 and 2
// partitions, source partitions 0–2 are a/0–a/2 and 3–4 are b/0–b/1
// (Source.TopicPartition tells). The numbering is fixed by asking the
// brokers when the source is created; partitions added to a topic later are
// not read, and adding partitions to any topic but the last renumbers the
// ones after it, which is a change of the flow (give it a new name).
//
// Offsets are Kafka offsets. Open(p, from) starts a consumer of exactly
// that topic partition at offset from (0: the start of the log), by direct
// assignment: there is no consumer-group membership and no rebalancing,
// since Tessera's placement decides which node reads which partition, and
// checkpoints, not the group, say where to resume. ReadBatch.End is the
// offset after the last record consumed, control records (transaction
// markers) included, so it is the offset to resume at. Transactional data
// is read committed. An offset that is no longer in the log (retention or
// deletion trimmed what a checkpoint still needs) is an error, never a
// silent jump.
//
// Each reader is its own franz-go client with its own connections to the
// partition's leader: simple, and rewinds are a fresh consumer, at the cost
// of one client per partition a node reads.
//
// A record is turned into an event by Config.Decode, which sees the whole
// kgo.Record (key, value, headers, timestamp). A record it rejects goes to
// ReadBatch.Bad with its offset, and from there to the dead-letter output.
// For event time, copy Record.Timestamp into the event and give the
// source flows.WithEventTime on that field.
//
// A topic that is deleted (or deleted and created again) under a reader is
// an error returned by Read: the reader checks the topic's metadata when
// Kafka says it does not know it and every CheckInterval while idle.
//
// The engine commits a partition once every fragment's durable checkpoint
// covers it; a source with a Config.Group then commits that offset for the
// group (a "simple" commit, without joining), so kafka-consumer-groups.sh
// and other lag tools show the flow's true lag. Commits are sent by one
// goroutine of the Source, in the background: Commit never waits for the
// network.
//
// # Sink
//
// Sink produces each flows.Output to one topic, the record key being the
// output's id printed with its field names
// ("{Fragment:3 Source:0 Partition:1 Offset:42 Index:0}") and the value the
// user's encoding. Write returns
// once every record is acknowledged by all in-sync replicas (acks=all, with
// franz-go's idempotent producer). Outputs are at-least-once: a replay
// writes them again, with the same keys, so a compacted topic keeps each
// output once, and a consumer can drop duplicates by key. An exactly-once
// (transactional) sink would need the engine to tell it when a fragment's
// checkpoint is taken and when it is durable; it has no such hooks yet.
//
// Tests run against kfake, franz-go's in-process implementation of the
// Kafka protocol.
package kafka
