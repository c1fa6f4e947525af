// Command transport derives transport metrics from cellular network data:
// trips detected from the pings of simulated phones, hourly and daily
// origin–destination (OD) matrices, travel times per OD pair, people on
// the move per zone, and an alert when a zone gets crowded with them.
//
//	go run ./examples/transport -events 2000000 -seed 1 -data /tmp/transport -http 127.0.0.1:8080
//
// The input is a simulated country (package sim): zones with names and
// population weights, cells with neighbours, subscribers with daily
// activity chains, and the pings the network records of them with
// realistic noise. -events sizes it (about that many pings; -subscribers
// instead, when 0), -seed makes another one. The flow (package pipeline):
//
//	pings ─KeyBy subscriber─▶ detector ─▶ trips ─KeyBy OD─▶ od (hourly), od-day, traveltime
//	                                   └▶ moves ─KeyBy zone─▶ moving, crowds ▶ alert crowded
//
// Every published OD or zone entry is {"trips": N, "subscribers": M} (or
// {"people": M}), and none backed by fewer than -k distinct subscribers
// is ever answered, in any query form. With -data, the node writes the
// simulation's ground truth (DATA/truth.jsonl: every true trip), the
// detector's accuracy against it (DATA/accuracy.json: precision, recall,
// od_tvd), and the detected trips (DATA/trips/, a JSON-lines file per
// fragment, exactly once: file.Sink with flows.OnCheckpoint). The accuracy is
// the detector's own steps run over the same pings, which the example's
// tests hold equal to the flow's results.
//
// The pings can come from Kafka instead, a partition per network element,
// each record a ping in 21 bytes (AppendPing): -produce fills the topic
// with the simulation's pings and exits, and -source kafka reads it (with
// -bounded, up to the ends the partitions had at start, as a batch run):
//
//	go run ./examples/transport -events 2000000 -produce -brokers localhost:9092 -topic pings
//	go run ./examples/transport -events 2000000 -source kafka -brokers localhost:9092 -topic pings -http 127.0.0.1:8080
//
// The node still simulates, with the same flags, for what the pings do not
// carry: the cell plan (zones and names) and the ground truth its accuracy
// is scored on. A record that is not a ping of a known cell is
// dead-lettered.
//
// Every node serves the page /transport (embedded, no external assets):
// the zones as a grid shaded by people on the move, the strongest flows
// of an hour drawn between them, the hour's OD matrix as a heatmap with
// an hour slider, and a pair's travel times, kept live by a watch of the
// od view; and the accuracy.
package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/tessera-streams/tessera/cluster"
	"github.com/tessera-streams/tessera/connectors/file"
	"github.com/tessera-streams/tessera/examples/transport/pipeline"
	"github.com/tessera-streams/tessera/examples/transport/sim"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/splice"
)

func main() { cluster.Main("transport", run) }

// Options are the example's own flags.
type Options struct {
	Events int64
	Rate   float64
	Noise  string
	Sim    sim.Config
	Flow   pipeline.Options
	Kafka  KafkaOptions
}

func flagSet(o *Options) *flag.FlagSet {
	o.Sim, o.Flow = sim.DefaultConfig(), pipeline.DefaultOptions()
	fs := flag.NewFlagSet("transport", flag.ContinueOnError)
	fs.Int64Var(&o.Events, "events", 0, "simulate about this many pings (0: as many as -subscribers make)")
	fs.Uint64Var(&o.Sim.Seed, "seed", o.Sim.Seed, "simulation seed")
	fs.IntVar(&o.Sim.Subscribers, "subscribers", o.Sim.Subscribers, "subscribers (when -events is 0)")
	fs.IntVar(&o.Sim.Zones, "zones", o.Sim.Zones, "zones")
	fs.IntVar(&o.Sim.Days, "days", o.Sim.Days, "simulated days")
	fs.IntVar(&o.Sim.Partitions, "partitions", o.Sim.Partitions, "source partitions (network elements)")
	fs.StringVar(&o.Noise, "noise", "default", "noise: default (ping-pong, gaps, duplicates, late delivery, a lagging partition) or none")
	fs.Float64Var(&o.Rate, "rate", 0, "pings per second in all (0: unthrottled)")
	fs.Int64Var(&o.Flow.K, "k", o.Flow.K, "publish only OD and zone entries backed by at least this many distinct subscribers")
	fs.Int64Var(&o.Flow.Crowd, "crowd", o.Flow.Crowd, "alert when more people than this are on the move in a zone")
	o.Kafka.register(fs)
	return fs
}

func (o *Options) check() error {
	switch o.Noise {
	case "default":
	case "none":
		o.Sim.Noise = sim.Noise{LagPartition: -1}
	default:
		return fmt.Errorf("-noise must be default or none, got %q", o.Noise)
	}
	if o.Events < 0 || o.Rate < 0 || o.Flow.K < 1 {
		return errors.New("-events and -rate must not be negative, -k must be positive")
	}
	if err := o.Kafka.check(); err != nil {
		return err
	}
	if o.Events > 0 {
		o.Sim.Subscribers = max(1, int(o.Events/int64(sim.PingsPerSubscriberDay*max(o.Sim.Days, 1))))
	}
	o.Flow.Params.MaxDelay = o.Sim.MaxDelay()
	return nil
}

// errProduced ends a -produce run before a node starts.
var errProduced = errors.New("produced")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := &Options{}
	var closers []func() error // the sink and the source, once the node stops
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	err := cluster.Run(ctx, flagSet(o), args, stdout, stderr, func(node *cluster.Flags) (*flows.Flow, error) {
		if err := o.check(); err != nil {
			return nil, err
		}
		s, err := sim.Simulate(o.Sim)
		if err != nil {
			return nil, err
		}
		if o.Kafka.Produce {
			n, err := o.Kafka.produce(ctx, s)
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(stdout, "produced %d pings of %d subscribers into %s (%d partitions)\n", n, o.Sim.Subscribers, o.Kafka.Topic, len(s.Parts))
			return nil, errProduced
		}
		net := pipeline.NetworkOf(s)
		acc := pipeline.Score(pipeline.Sequential(s.Parts, net, o.Flow).Trips, s.Truth)
		node.Pages = sitePages(s, acc)
		if node.Data != "" {
			if err := os.MkdirAll(node.Data, 0o755); err != nil {
				return nil, err
			}
			if err := writeTruth(filepath.Join(node.Data, "truth.jsonl"), s); err != nil {
				return nil, err
			}
			if err := writeJSON(filepath.Join(node.Data, "accuracy.json"), acc); err != nil {
				return nil, err
			}
			sink, err := file.NewSink[pipeline.Detected](filepath.Join(node.Data, "trips"), nil)
			if err != nil {
				return nil, err
			}
			closers = append(closers, sink.Close)
			o.Flow.Sink = sink
		}
		o.Flow.Fragments = node.Fragments
		var src flows.Source[sim.Ping] = s.Source(o.Rate, nil)
		if o.Kafka.Source == "kafka" {
			ks, err := o.Kafka.kafkaSource(ctx, s)
			if err != nil {
				return nil, err
			}
			closers = append(closers, ks.Close)
			src = ks
		}
		return pipeline.Flow(src, net, o.Flow), nil
	}, [][2]string{
		{"/transport", "the transport page: zones, flows, hourly OD heatmap, travel times (live)"},
		{"/", "dashboard"},
		{"/v1/views/od?window=latest&top=10", "the ten strongest flows of the latest complete hour"},
		{"/v1/views/od-day?top=10", "the ten strongest flows of each day"},
		{"/v1/views/traveltime?top=10", "travel times of the busiest OD pairs"},
		{"/v1/views/moving?window=latest&top=10", "the zones with most people on the move"},
		{"/v1/alerts", "crowded zones"},
		{"/v1/cluster", "fragments, watermarks, events/s"},
	})
	if errors.Is(err, errProduced) {
		return nil
	}
	return err
}

//go:embed page.html
var page []byte

// sitePages are the example's page and the data it draws beside the views:
// the zones, and the detector's accuracy.
func sitePages(s *sim.Sim, acc pipeline.Accuracy) map[string]http.Handler {
	type zone struct {
		Name   string  `json:"name"`
		Weight float64 `json:"weight"`
	}
	zs := make([]zone, len(s.Zones))
	for i, z := range s.Zones {
		zs[i] = zone{z.Name, z.Weight}
	}
	side := 1
	for side*side < len(zs) {
		side++
	}
	return map[string]http.Handler{
		"/transport": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Write(page)
		}),
		"/transport/zones": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			splice.WriteJSON(w, http.StatusOK, map[string]any{"zones": zs, "side": side})
		}),
		"/transport/accuracy": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			splice.WriteJSON(w, http.StatusOK, acc)
		}),
	}
}

// truthLine is a line of truth.jsonl.
type truthLine struct {
	Sub    uint64    `json:"sub"`
	From   string    `json:"from"`
	To     string    `json:"to"`
	Depart time.Time `json:"depart"`
	Arrive time.Time `json:"arrive"`
	Mode   sim.Mode  `json:"mode"`
}

func writeTruth(name string, s *sim.Sim) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	for _, t := range s.Truth {
		if err := enc.Encode(truthLine{t.Sub, s.Zones[t.From].Name, s.Zones[t.To].Name, t.Depart, t.Arrive, t.Mode}); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

func writeJSON(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(name, append(b, '\n'), 0o644)
}
