// Package kafka reads Kafka topics as a Tessera source, writes outputs to
// a Kafka topic, and takes events pushed over HTTP into a topic, on
// franz-go (github.com/twmb/franz-go).
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
// # Sinks
//
// Sink (at-least-once) produces each flows.Output to one topic, the record
// key being the output's id (flows.OutputID.String, e.g. "3/e/0/1/42/0/0")
// and the value the user's encoding. Write returns once every record is
// acknowledged by all in-sync replicas (acks=all, with franz-go's
// idempotent producer). A replay writes outputs again, with the same keys,
// so a compacted topic keeps each output once, and a consumer can drop
// duplicates by key.
//
// ExactlyOnceSink is for flows.To(stream, sink, flows.OnCheckpoint()),
// which delivers a fragment's outputs only once a durable checkpoint of the
// fragment covers them, and delivers again, in the same order and with the
// same ids, what a checkpoint covers but a later checkpoint does not record
// as delivered. Each fragment has its own transactional producer, made on
// its first Write, with the transactional id "<Flow>-<fragment>": when a
// fragment moves, its new owner's producer initialises with the same id,
// which makes Kafka fence the old owner (its commits fail with
// ProducerFenced or InvalidProducerEpoch, reported as ErrFenced) and abort
// a transaction it left open. One Write is one transaction, holding the
// outputs and a progress marker: a record keyed by the transactional id,
// whose value is the id of the Write's last output, in ProgressTopic
// ("<Topic>.tessera-progress" by default, created compacted if missing).
// When a producer is initialised (its first Write, or the first after a
// failed or fenced transaction, which drops the producer and returns the
// error so that the engine delivers the outputs again), it reads the
// fragment's last committed marker with read_committed, and its next Write
// skips its outputs up to and including that id: they were committed by a
// transaction whose success the checkpoint did not record (the process
// died between the commit and the next checkpoint, or a commit's outcome
// was unknown). A consumer reading with read_committed sees each output
// once.
//
// This is two-phase commit in this sense: outputs are pre-committed into
// the fragment's checkpoint (phase one) and committed to Kafka after the
// checkpoint is durable (phase two); the marker makes phase two idempotent.
// Flink's sink instead opens the transaction before the checkpoint and,
// after a crash, resumes and commits the dead producer's transaction by
// its producer id and epoch; franz-go has no API to resume another
// producer's transaction, so a transaction here never spans a checkpoint.
// The cost is latency: an output reaches Kafka one checkpoint interval
// (plus the checkpoint's write) after it was made, and a Write's records
// are produced only then, in a burst.
//
// Skipping needs the redelivered outputs to hold, as a prefix, every
// output committed since the restored checkpoint was taken. On one node a
// restore loads the newest durable checkpoint, which holds them. In a
// cluster a standby may restore the checkpoint before the owner's newest
// (its copy of the newest had not arrived), so there OnCheckpoint sinks are
// delivered only once the standby confirmed its synced copy of the
// checkpoint (recovery.MachineConfig.Confirm): a standby round trip of
// latency, and no output is committed that the standby's copy does not
// hold.
//
// Markers of several fragments share a partition of the progress topic,
// and read_committed stops at the first transaction still open there: an
// initialising producer waits until every transaction open on its marker's
// partition has ended (a dead owner's is aborted when its fragment's next
// owner initialises, or after TransactionTimeout), so that it never reads
// a marker older than its fragment's last. More ProgressPartitions make
// that wait rarer.
//
// A zombie (an old owner that has not yet learned the fragment moved, say
// one that was SIGSTOPped) fails its next Write with ErrFenced, and nothing
// it produced in that transaction becomes visible. It must not simply
// re-initialise: that would fence the new owner in turn, and its pending
// outputs, which do not hold the new owner's marker, would be committed
// again. So after ErrFenced a fragment's Writes fail at once for
// FenceBackoff (10 s), time for the engine's placement fencing to stop the
// zombie's fragment; after that the sink takes the fragment back, as an
// owner the fragment has moved back to must (which therefore delivers
// one FenceBackoff late, once). The engine makes a zombie aware: a node
// that finds it was paused long enough for the others to take its
// fragments over drops their state and restores the checkpoint the
// interim owner hands back (actor/doc.go, "A paused node"). What the
// engine cannot catch is a Write already running when the process was
// stopped; Kafka refuses its produce and commit once the new owner has
// initialised, unless the Write initialises its producer only after the
// stop: then it fences the new owner and would commit outputs the new
// owner committed already. So the sink watches for pauses itself (a
// goroutine reads the clock every PauseLimit/4; a gap over PauseLimit, 1 s
// by default, is a stop), and a Write during which one happened commits
// nothing and fails with ErrPaused: it checks after initialising its
// producer and again before it commits.
//
// A fragment that restores a checkpoint holding outputs to deliver again
// (a restart, a failover, a hand-off, a pause) calls Restored
// (flows.RestoredSink): the sink ends the fragment's producer session, and
// the next Write initialises a new one, which fences any other owner and
// skips what the last marker says was committed — also outputs this
// node's producer committed before the fragment moved away and back. A
// producer also skips, in any Write, the outputs up to the last one it
// committed itself.
//
// The marker of a fragment is looked for in one partition of the progress
// topic, chosen by the partition count when the sink is made: never add
// partitions to it.
//
// # HTTP ingest
//
// Ingest is a cluster.Stream: it answers POST /v1/streams/{stream}/events
// (the contract of connectors/push: JSON lines or a JSON array, every event
// decoded before anything is produced, 400/413/415, 429 and 503 with
// Retry-After) by producing the events into Config.Topic, and answers 200
// only once a Kafka transaction holding them has committed (acks=all). A
// flow reads the topic with a Source, read committed, placed by Tessera
// like any Kafka source. Each node has one transactional producer
// (IngestConfig.TransactionalID, stable across the node's restarts), and
// one writer goroutine puts the requests queued while a transaction runs
// into the next one (group commit).
//
// A retried request with the same Idempotency-Key is applied once across
// nodes. Franz-go's idempotent producer dedupes only the retries of one
// producer session, so the keys are kept in Kafka: a ledger topic
// ("<Topic>.tessera-ingest", one partition) holds one record per
// transaction, written in the transaction, listing its keys with their body
// hashes and results. Every node reads the ledger, uncommitted records and
// transaction markers included, and so knows every key's attempts and their
// fates. The rule: an attempt of a key wins if it commits and no attempt of
// the key earlier in the ledger committed. A transaction, after producing
// its events and its ledger record at offset o, waits until the node has
// read the ledger up to o and every earlier attempt of its keys has ended
// (committed or aborted); if one of them committed, it aborts and those
// requests are answered with the earlier result (Idempotent-Replayed) or
// 422 for another body; the others go again. An attempt waits only for
// earlier ones, so no two wait for each other; and one that committed was
// never preceded by a committed attempt of its keys, so a key's events are
// committed at most once, and, since a client retries until it has a 200,
// exactly once. A retry of a key the node has already read committed is
// answered from memory, without a transaction.
//
// The cost of the design: an attempt left open by a node that died holds
// back the retries of its keys (only those: other requests go on) until
// Kafka aborts it, after IngestConfig.TransactionTimeout (10 s), or the
// node restarts with its transactional id; meanwhile the retries are
// answered 503 after AckTimeout. Every node reads the whole ledger at start
// and keeps its keys for IdempotencyTTL (24 h): memory and start-up time
// grow with the requests in a TTL; the ledger topic is created with a
// retention of twice the TTL. Two nodes with the same transactional id
// fence each other at every transaction (correct, and slow). Whether a key
// is within its TTL is judged by each node's clock against the ledger
// record's timestamp.
//
// Tests run against kfake, franz-go's in-process implementation of the
// Kafka protocol.
package kafka
