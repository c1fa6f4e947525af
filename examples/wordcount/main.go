// Command wordcount counts words from the deterministic generator, JSON-lines
// files, Kafka topics or a NATS JetStream stream, and serves the counts over
// HTTP.
//
//	go run ./examples/wordcount -events 1000000 -seed 7 -http 127.0.0.1:8080
//	go run ./examples/wordcount -source kafka -brokers localhost:9092 -topics lines
//	go run ./examples/wordcount -source nats -nats nats://localhost:4222 -stream LINES
//	go run ./examples/wordcount -source http -data /tmp/wc  # POST /v1/streams/lines/events
//	go run ./examples/wordcount -source http -ingest kafka -brokers localhost:9092 -topics lines  # in a cluster
//	go run ./examples/wordcount -source http -ingest nats -nats nats://localhost:4222 -stream LINES  # in a cluster
//	go run ./examples/wordcount -source kafka -brokers localhost:9092 -topics lines -sink kafka -sink-topic counts
//
// Kafka records, JetStream messages and pushed lines are {"text": "..."} in
// JSON. With -source http the node serves POST /v1/streams/lines/events
// (ingest.go): into its embedded log on one node, into Kafka or JetStream
// (-ingest kafka|nats) in a cluster.
//
// Views: "words" (keyed: the count of every word) and "total" (aggregate:
// the number of words counted). With -sink (sinks.go), every count update
// {"word": ..., "count": ...} also goes, exactly once, to JSON-lines files,
// a Kafka topic (transactions) or a JetStream subject.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/tessera-streams/tessera/cluster"
	"github.com/tessera-streams/tessera/connectors/file"
	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/connectors/kafka"
	"github.com/tessera-streams/tessera/connectors/nats"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/splice"
)

// Line is one input record: {"text": "..."}.
type Line struct {
	Text string `json:"text"`
}

// Flow counts the words of lines; the sinks receive every count update.
func Flow(src flows.Source[Line], fragments int, sinks ...flows.Sink[WordCount]) *flows.Flow {
	f := flows.New("wordcount", flows.WithFragments(fragments))
	lines := flows.From(f, "lines", src)
	words := flows.FlatMap(lines, func(l Line, emit func(string)) { Words(l.Text, emit) })
	byWord := flows.KeyBy(words, flows.Identity[string])
	toSinks(flows.Count(byWord).View("words"), sinks)
	flows.AggregateView(byWord.Values(), "total", splice.Count[string](), flows.Identity[string])
	return f
}

// Words emits the lower-cased words of text: runs of letters, digits,
// apostrophes and hyphens. It allocates only for words with upper case.
func Words(text string, emit func(string)) {
	start := -1
	for i := 0; i <= len(text); i++ {
		in := i < len(text) && wordByte(text[i])
		switch {
		case in && start < 0:
			start = i
		case !in && start >= 0:
			emit(lower(text[start:i]))
			start = -1
		}
	}
}

func wordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '\'' || c == '-' || c >= 0x80
}

func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' || c >= 0x80 {
			return strings.ToLower(s)
		}
	}
	return s
}

// Vocabulary is the generator's words; word i is drawn with weight
// 1/(i+1), a Zipf distribution like natural text.
var Vocabulary = func() []string {
	v := make([]string, 10_000)
	for i := range v {
		v[i] = fmt.Sprintf("w%04d", i)
	}
	return v
}()

var cumulative = func() []float64 {
	c := make([]float64, len(Vocabulary))
	sum := 0.0
	for i := range c {
		sum += 1 / float64(i+1)
		c[i] = sum
	}
	for i := range c {
		c[i] /= sum
	}
	return c
}()

// GenWord is the generator's event function: one word per event.
func GenWord(_ int, _ int64, r *gen.Rand) Line {
	return Line{Text: Vocabulary[sort.SearchFloat64s(cumulative, r.Float64())]}
}

func main() { cluster.Main("wordcount", run) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("wordcount", flag.ContinueOnError)
	var (
		events     = fs.Int64("events", 0, "generator: stop after this many events in all (0: unbounded)")
		seed       = fs.Uint64("seed", 1, "generator: seed")
		rate       = fs.Float64("rate", 0, "generator: events per second in all (0: unthrottled)")
		partitions = fs.Int("partitions", 4, "generator and http: source partitions")
		source     = fs.String("source", "gen", "source: gen, file, kafka, nats or http")
		files      = fs.String("files", "", "file source: glob of JSON-lines files, one per partition")
		brokers    = fs.String("brokers", "", "kafka source: comma-separated seed brokers")
		topics     = fs.String("topics", "", "kafka source: comma-separated topics; every partition of each is a source partition")
		group      = fs.String("group", "", "kafka source: consumer group whose offsets follow the checkpoints (empty: none)")
		natsURL    = fs.String("nats", "", "nats source: server URL")
		stream     = fs.String("stream", "", "nats source: JetStream stream")
		subjects   = fs.String("subjects", "", "nats source: comma-separated subject filters, one per partition (empty: the stream's subjects)")
		ingestTo   = fs.String("ingest", "log", "http source: where pushed lines are kept: log (the embedded log in -data; one node), kafka (the topic of -topics at -brokers) or nats (the stream of -stream at -nats); kafka and nats for a cluster")
	)
	sinkFlags := addSinkFlags(fs)
	var closers []func() error // sources and sinks to close once the node stops
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	return cluster.Run(ctx, fs, args, stdout, stderr, func(node *cluster.Flags) (*flows.Flow, error) {
		var src flows.Source[Line]
		switch *source {
		case "gen":
			g, err := gen.New(gen.Config{Partitions: *partitions, Seed: *seed, Events: *events, Rate: *rate}, GenWord)
			if err != nil {
				return nil, err
			}
			src = g
		case "file":
			if *files == "" {
				return nil, errors.New("-source file needs -files")
			}
			s, err := file.New[Line](*files, nil)
			if err != nil {
				return nil, err
			}
			src = s
		case "kafka":
			if *brokers == "" || *topics == "" {
				return nil, errors.New("-source kafka needs -brokers and -topics")
			}
			dctx, cancel := context.WithTimeout(ctx, 30*time.Second) // to describe the topics
			defer cancel()
			s, err := kafka.New(dctx, kafka.Config[Line]{Brokers: list(*brokers), Topics: list(*topics), Group: *group})
			if err != nil {
				return nil, err
			}
			closers = append(closers, func() error { s.Close(); return nil })
			src = s
		case "nats":
			if *natsURL == "" || *stream == "" {
				return nil, errors.New("-source nats needs -nats and -stream")
			}
			dctx, cancel := context.WithTimeout(ctx, 30*time.Second) // to describe the stream
			defer cancel()
			s, err := nats.New(dctx, nats.Config[Line]{URL: *natsURL, Stream: *stream, Subjects: list(*subjects)})
			if err != nil {
				return nil, err
			}
			closers = append(closers, func() error { s.Close(); return nil })
			src = s
		case "http":
			s, closeIngest, err := httpSource(ctx, node, ingestFlags{kind: *ingestTo, brokers: *brokers, topics: *topics, group: *group,
				natsURL: *natsURL, stream: *stream, subjects: *subjects, partitions: *partitions})
			if err != nil {
				return nil, err
			}
			closers = append(closers, closeIngest)
			src = s
		default:
			return nil, fmt.Errorf("-source must be gen, file, kafka, nats or http, got %q", *source)
		}
		sinks, err := sinkFlags.open(ctx, "wordcount", *brokers, *natsURL, &closers)
		if err != nil {
			return nil, err
		}
		return Flow(src, node.Fragments, sinks...), nil
	}, [][2]string{
		{"/", "dashboard"},
		{"/v1/views/total", "words counted"},
		{"/v1/views/words?top=10", "the ten most frequent words"},
		{"/v1/views/words/keys/w0001", "one word's count"},
		{"/v1/views/total/watch", "live updates (server-sent events)"},
		{"/v1/cluster", "fragments, offsets, events/s"},
		{"/metrics", "Prometheus metrics"},
	})
}

// list splits a comma-separated flag, dropping empty items.
func list(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}
