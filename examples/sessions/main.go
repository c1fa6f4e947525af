// Command sessions cuts users' activity into sessions — runs of events no
// more than 30 minutes apart — and serves every user's sessions and the
// distribution of session lengths.
//
//	go run ./examples/sessions -events 1000000 -http 127.0.0.1:8080
//
// Views: "users" (keyed: every user's sessions, events and active time),
// "session_minutes" (aggregate: a histogram of session lengths in
// minutes), "sessions" (aggregate: the number of sessions closed).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/tessera-streams/tessera/cluster"
	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/splice"
)

// Activity is a user seen active at a time.
type Activity struct {
	User string    `json:"user"`
	At   time.Time `json:"at"`
}

// Session is a session's accumulator: its events and first and last times.
type Session struct {
	Events int64 `json:"events"`
	First  int64 `json:"first"` // unix ns
	Last   int64 `json:"last"`
}

// User is a user's sessions so far.
type User struct {
	Sessions      int64   `json:"sessions"`
	Events        int64   `json:"events"`
	ActiveMinutes float64 `json:"active_minutes"` // first to last event, summed over sessions
	LastEnd       int64   `json:"last_session_end_unix"`
}

// Buckets are the upper bounds, in minutes, of the session-length
// histogram.
var Buckets = []float64{0, 1, 5, 15, 30, 60, 120, 240}

// Flow is the sessions flow over src, with the given inactivity gap.
func Flow(src flows.Source[Activity], gap, maxDelay time.Duration, fragments int) *flows.Flow {
	f := flows.New("sessions", flows.WithFragments(fragments))
	acts := flows.From(f, "activity", src, flows.WithEventTime(func(a Activity) time.Time { return a.At }, maxDelay))
	byUser := flows.KeyBy(acts, func(a Activity) string { return a.User })
	sessions := flows.SessionAggregate(byUser, gap,
		func() Session { return Session{First: 1<<63 - 1, Last: -1 << 63} },
		func(s Session, a Activity) Session {
			t := a.At.UnixNano()
			s.Events++
			s.First, s.Last = min(s.First, t), max(s.Last, t)
			return s
		},
		func(a, b Session) Session {
			return Session{Events: a.Events + b.Events, First: min(a.First, b.First), Last: max(a.Last, b.Last)}
		})
	flows.Aggregate(sessions.ByKey(), func() User { return User{} },
		func(u User, r flows.WindowResult[string, Session]) User {
			u.Sessions++
			u.Events += r.Value.Events
			u.ActiveMinutes += Minutes(r.Value)
			u.LastEnd = r.End.Unix()
			return u
		}).View("users")
	flows.AggregateView(sessions.Results(), "session_minutes", splice.NewHistogram(Buckets...),
		func(r flows.WindowResult[string, Session]) float64 { return Minutes(r.Value) })
	flows.AggregateView(sessions.Results(), "sessions", splice.Count[flows.WindowResult[string, Session]](),
		flows.Identity[flows.WindowResult[string, Session]])
	return f
}

// Minutes is a session's length: from its first event to its last.
func Minutes(s Session) float64 { return float64(s.Last-s.First) / float64(time.Minute) }

// Epoch is where the generator's clocks start.
var Epoch = time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)

// GenParams shape the generator: every partition's clock advances Step
// per event; event time is cut into blocks of Block, and a user is active
// in a block with probability 1/3, so activity comes in bursts with
// silences longer than a block between them.
type GenParams struct {
	Users    int
	Step     time.Duration
	Block    time.Duration
	MaxDelay time.Duration // events are stamped up to MaxDelay/2 early
}

// active says whether user u is active in block b.
func active(u int, b int64) bool {
	h := uint64(u)*0x9e3779b97f4a7c15 ^ uint64(b)*0xc2b2ae3d27d4eb4f
	h ^= h >> 29
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 32
	return h%3 == 0
}

// Generate returns the generator's event function.
func Generate(g GenParams) func(int, int64, *gen.Rand) Activity {
	return func(_ int, off int64, r *gen.Rand) Activity {
		clock := Epoch.Add(time.Duration(off) * g.Step)
		b := int64(clock.Sub(Epoch) / g.Block)
		u := r.Intn(g.Users)
		for i := 0; i < 64 && !active(u, b); i++ {
			u = r.Intn(g.Users)
		}
		jitter := time.Duration(r.Uint64() % uint64(g.MaxDelay/2+1))
		return Activity{User: fmt.Sprintf("u%05d", u), At: clock.Add(-jitter)}
	}
}

func main() { cluster.Main("sessions", run) }

// Options are the example's own flags.
type Options struct {
	Events     int64
	Seed       uint64
	Rate       float64
	Partitions int
	Gap        time.Duration
	Gen        GenParams
}

func flagSet(o *Options) *flag.FlagSet {
	fs := flag.NewFlagSet("sessions", flag.ContinueOnError)
	fs.Int64Var(&o.Events, "events", 0, "generator: stop after this many events in all (0: unbounded)")
	fs.Uint64Var(&o.Seed, "seed", 1, "generator: seed")
	fs.Float64Var(&o.Rate, "rate", 0, "generator: events per second in all (0: unthrottled)")
	fs.IntVar(&o.Partitions, "partitions", 4, "generator: source partitions")
	fs.IntVar(&o.Gen.Users, "users", 2000, "generator: population")
	fs.DurationVar(&o.Gen.Step, "step", 250*time.Millisecond, "generator: event time between two events of a partition")
	fs.DurationVar(&o.Gen.Block, "block", 45*time.Minute, "generator: users are active or silent for blocks this long")
	fs.DurationVar(&o.Gen.MaxDelay, "max-delay", 20*time.Second, "events arrive out of order by up to this")
	fs.DurationVar(&o.Gap, "gap", 30*time.Minute, "a session ends after this long without activity")
	return fs
}

func (o *Options) check() error {
	switch {
	case o.Gen.Users < 1:
		return errors.New("-users must be positive")
	case o.Gen.Step <= 0 || o.Gen.Block <= 0:
		return errors.New("-step and -block must be positive")
	case o.Gen.MaxDelay < 0:
		return errors.New("-max-delay must not be negative")
	}
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
		return Flow(src, o.Gap, o.Gen.MaxDelay, node.Fragments), nil
	}, [][2]string{
		{"/", "dashboard"},
		{"/v1/views/session_minutes", "session lengths (histogram, minutes)"},
		{"/v1/views/sessions", "sessions closed"},
		{"/v1/views/users?limit=20", "users' sessions"},
		{"/v1/views/users/keys/u00001", "one user"},
		{"/v1/views/session_minutes/watch", "live updates (server-sent events)"},
		{"/v1/cluster", "fragments, watermarks, events/s"},
	})
}
