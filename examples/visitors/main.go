// Command visitors counts the distinct visitors of the last 30 minutes,
// every minute, from cellular location pings, and raises an alert each
// time the count rises above a threshold.
//
//	go run ./examples/visitors -events 2000000 -threshold 1500 -http 127.0.0.1:8080
//
// Every fragment counts the users it owns in each sliding window; the
// "visitors" view splices the fragments' counts window by window into the
// global count, and the "crowded" alert watches it: once per crossing
// (rising edge), written durably with its progress, so a crash and restart
// neither repeats nor loses an alert. Alerts are logged and served at
// /v1/alerts and /v1/alerts/watch.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/tessera-streams/tessera/cluster"
	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/splice"
)

// Ping is a phone seen by a cell at a time.
type Ping struct {
	User string    `json:"user"`
	Cell string    `json:"cell"`
	At   time.Time `json:"at"`
}

// Config is the flow's parameters.
type Config struct {
	Window    time.Duration // window size
	Slide     time.Duration // one window starts every slide
	Threshold int64         // alert when the visitors rise above it
	MaxDelay  time.Duration // pings arrive out of order by up to this
	Retain    time.Duration // windows stay queryable this long after their end
	Fragments int
}

// Flow is the visitors flow over src.
func Flow(src flows.Source[Ping], c Config) *flows.Flow {
	f := flows.New("visitors", flows.WithFragments(c.Fragments))
	pings := flows.From(f, "pings", src, flows.WithEventTime(func(p Ping) time.Time { return p.At }, c.MaxDelay))
	byUser := flows.KeyBy(pings, func(p Ping) string { return p.User })
	w := flows.WindowAggregate(byUser, flows.Sliding(c.Window, c.Slide),
		func() int64 { return 0 }, func(n int64, _ Ping) int64 { return n + 1 })
	visitors := flows.WindowView(w, "visitors", splice.Count[struct{}](),
		func(string, int64) struct{} { return struct{}{} }, c.Retain)
	flows.WindowView(w, "pings", splice.Sum[int64](), func(_ string, n int64) int64 { return n }, c.Retain)
	flows.Alert(visitors, "crowded", func(prev, cur int64) bool { return prev <= c.Threshold && cur > c.Threshold })
	return f
}

// Generator: every partition's clock starts at Epoch and advances Step per
// ping; a ping is stamped up to MaxDelay/2 earlier than its clock. The
// active population swings over a Cycle, so the distinct count rises and
// falls.
var Epoch = time.Date(2026, 11, 2, 6, 0, 0, 0, time.UTC)

// GenParams shape the generator.
type GenParams struct {
	Users    int           // population
	Step     time.Duration // event time per ping and partition
	Cycle    time.Duration // period of the population's swing
	MaxDelay time.Duration
	Cells    int
}

// Generate returns the generator's event function.
func Generate(g GenParams) func(int, int64, *gen.Rand) Ping {
	return func(_ int, off int64, r *gen.Rand) Ping {
		clock := Epoch.Add(time.Duration(off) * g.Step)
		phase := 2 * math.Pi * float64(clock.Sub(Epoch)%g.Cycle) / float64(g.Cycle)
		active := max(1, int(float64(g.Users)*(0.55-0.45*math.Cos(phase))))
		u := r.Intn(active)
		jitter := time.Duration(r.Uint64() % uint64(g.MaxDelay/2+1))
		return Ping{User: fmt.Sprintf("u%06d", u), Cell: fmt.Sprintf("c%04d", (u*7+r.Intn(3))%g.Cells), At: clock.Add(-jitter)}
	}
}

func main() { cluster.Main("visitors", run) }

// Options are the example's own flags.
type Options struct {
	Events     int64
	Seed       uint64
	Rate       float64
	Partitions int
	Gen        GenParams
	Flow       Config
}

// flagSet registers the example's flags on a new flag set.
func flagSet(o *Options) *flag.FlagSet {
	fs := flag.NewFlagSet("visitors", flag.ContinueOnError)
	fs.Int64Var(&o.Events, "events", 0, "generator: stop after this many pings in all (0: unbounded)")
	fs.Uint64Var(&o.Seed, "seed", 1, "generator: seed")
	fs.Float64Var(&o.Rate, "rate", 0, "generator: pings per second in all (0: unthrottled)")
	fs.IntVar(&o.Partitions, "partitions", 4, "generator: source partitions")
	fs.IntVar(&o.Gen.Users, "users", 5000, "generator: population")
	fs.DurationVar(&o.Gen.Step, "step", 100*time.Millisecond, "generator: event time between two pings of a partition")
	fs.DurationVar(&o.Gen.Cycle, "cycle", 2*time.Hour, "generator: period of the population's swing")
	fs.IntVar(&o.Gen.Cells, "cells", 500, "generator: cells")
	fs.DurationVar(&o.Flow.Window, "window", 30*time.Minute, "window size")
	fs.DurationVar(&o.Flow.Slide, "slide", time.Minute, "a window starts every slide")
	fs.Int64Var(&o.Flow.Threshold, "threshold", 3000, "alert when the visitors of a window rise above this")
	fs.DurationVar(&o.Flow.MaxDelay, "max-delay", 20*time.Second, "pings arrive out of order by up to this")
	fs.DurationVar(&o.Flow.Retain, "retain", 24*time.Hour, "windows stay queryable this long (event time) after their end")
	return fs
}

func (o *Options) check() error {
	switch {
	case o.Gen.Users < 1 || o.Gen.Cells < 1:
		return errors.New("-users and -cells must be positive")
	case o.Gen.Step <= 0 || o.Gen.Cycle <= 0:
		return errors.New("-step and -cycle must be positive")
	case o.Flow.MaxDelay < 0:
		return errors.New("-max-delay must not be negative")
	}
	o.Gen.MaxDelay = o.Flow.MaxDelay
	return nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := &Options{}
	return cluster.Run(ctx, flagSet(o), args, stdout, stderr, func(node *cluster.Flags) (*flows.Flow, error) {
		if err := o.check(); err != nil {
			return nil, err
		}
		src, err := gen.New(gen.Config{Partitions: o.Partitions, Seed: o.Seed, Events: o.Events, Rate: o.Rate}, Generate(o.Gen))
		if err != nil {
			return nil, err
		}
		o.Flow.Fragments = node.Fragments
		return Flow(src, o.Flow), nil
	}, [][2]string{
		{"/", "dashboard"},
		{"/v1/views/visitors?window=latest", "visitors in the latest complete window"},
		{"/v1/views/visitors?limit=60", "the last 60 windows"},
		{"/v1/views/visitors/watch?window=latest", "live updates (server-sent events)"},
		{"/v1/alerts", "alerts raised"},
		{"/v1/alerts/watch", "alerts as they are raised (server-sent events)"},
		{"/v1/cluster", "fragments, watermarks, events/s"},
	})
}
