// Command trips detects the trips of phones from their pings and counts
// them by origin, destination and hour: a pipeline of two keyed stages.
//
//	go run ./examples/trips -subscribers 2000 -events 2000000 -http 127.0.0.1:8080
//
// Stage one keys the pings by subscriber: a process function with
// event-time timers finds stays (the same zone for at least the dwell
// time) and emits a trip from one stay's zone to the next's; state that
// sees no ping for the TTL expires by the watermark. Stage two re-keys the
// trips by origin→destination and counts them in hourly event-time
// windows (a trip's time is when it was confirmed: arrival plus the
// dwell). Every trip also
// goes to an idempotent sink: DATA/trips-NODE.jsonl, one line per trip
// with its output id, delivered once a checkpoint covers it.
//
// Views: "od" (windowed keyed: trips per "ORIGIN->DEST" and hour, e.g.
// /v1/views/od?window=latest&top=10) and "trips" (aggregate: the number
// of trips).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/tessera-streams/tessera/cluster"
	"github.com/tessera-streams/tessera/connectors/gen"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/splice"
)

// Ping is a phone seen in a zone at a time. Silent pings stand for the
// time a phone was off: the flow drops them.
type Ping struct {
	Sub    string    `json:"sub"`
	Zone   string    `json:"zone"`
	At     time.Time `json:"at"`
	Silent bool      `json:"silent,omitempty"`
}

// Trip is a move from one stay to the next.
type Trip struct {
	Sub    string    `json:"sub"`
	From   string    `json:"from"`
	To     string    `json:"to"`
	Depart time.Time `json:"depart"`
	Arrive time.Time `json:"arrive"`
}

// Stay is a subscriber's trip-detection state.
type Stay struct {
	Zone      string    // the zone of the last ping
	Since     time.Time // the first ping of the current run in Zone
	Last      time.Time // the last ping
	Anchor    string    // the last zone stayed in for the dwell time
	AnchorEnd time.Time // the last ping in Anchor
}

// Params are the detection's parameters.
type Params struct {
	Dwell time.Duration // a stay lasts at least this long
	TTL   time.Duration // a subscriber's state expires after this long without pings
}

// DefaultParams are the example's.
var DefaultParams = Params{Dwell: 20 * time.Minute, TTL: 45 * time.Minute}

// OnPing is the detection's event step; OnTimer its timer step; both are
// shared by the flow and the sequential reference.
func (p Params) OnPing(s Stay, ping Ping) (next Stay, timer time.Time) {
	if ping.Zone != s.Zone {
		if s.Zone == s.Anchor && s.Zone != "" {
			s.AnchorEnd = s.Last
		}
		s.Zone, s.Since = ping.Zone, ping.At
		timer = ping.At.Add(p.Dwell)
	}
	s.Last = ping.At
	if s.Zone == s.Anchor {
		s.AnchorEnd = ping.At
	}
	return s, timer
}

// OnTimer confirms a stay when its dwell timer fires, and returns the trip
// that ends there, if any.
func (p Params) OnTimer(sub string, s Stay, at time.Time) (Stay, *Trip) {
	if !s.Since.Add(p.Dwell).Equal(at) || s.Zone == s.Anchor {
		return s, nil
	}
	var t *Trip
	if s.Anchor != "" {
		t = &Trip{Sub: sub, From: s.Anchor, To: s.Zone, Depart: s.AnchorEnd, Arrive: s.Since}
	}
	s.Anchor, s.AnchorEnd = s.Zone, s.Last
	return s, t
}

// ODPair is a trip's key in the od view: origin and destination.
func ODPair(t Trip) string { return t.From + "->" + t.To }

// ODKey is a trip's origin, destination and the hour it was confirmed in
// (its event time: arrival plus the dwell): one cell of the od view.
func (p Params) ODKey(t Trip) string {
	return fmt.Sprintf("%s->%s@%s", t.From, t.To, t.Arrive.Add(p.Dwell).Truncate(time.Hour).UTC().Format("2006-01-02T15"))
}

// Flow is the trips flow over src; trips also go to sink (nil: none).
func Flow(src flows.Source[Ping], p Params, fragments int, sink flows.Sink[Trip]) *flows.Flow {
	f := flows.New("trips", flows.WithFragments(fragments))
	pings := flows.Filter(flows.From(f, "pings", src, flows.WithEventTime(func(p Ping) time.Time { return p.At }, MaxDelay)),
		func(p Ping) bool { return !p.Silent })
	trips := flows.Process(flows.KeyBy(pings, func(p Ping) string { return p.Sub }), flows.Handler[string, Ping, Stay, Trip]{
		OnEvent: func(c *flows.Context[string, Stay, Trip], ping Ping) {
			s, _ := c.State()
			s, timer := p.OnPing(s, ping)
			if !timer.IsZero() {
				c.SetEventTimer(timer)
			}
			c.SetState(s)
		},
		OnTimer: func(c *flows.Context[string, Stay, Trip], at time.Time) {
			s, ok := c.State()
			if !ok {
				return
			}
			s, t := p.OnTimer(c.Key(), s, at)
			if t != nil {
				c.Emit(*t)
			}
			c.SetState(s)
		},
	}, flows.InEventTimeOrder(), flows.WithStateTTL(p.TTL)).Out()
	flows.WindowAggregate(flows.KeyBy(trips, ODPair), flows.Tumbling(time.Hour),
		func() int64 { return 0 }, func(n int64, _ Trip) int64 { return n + 1 }).
		KeyedView("od", ODRetain)
	flows.AggregateView(trips, "trips", splice.Count[Trip](), flows.Identity[Trip])
	if sink != nil {
		flows.To(trips, sink, flows.OnCheckpoint())
	}
	return f
}

// ODRetain is how long the od view keeps an hour after the watermark
// passed it.
const ODRetain = 7 * 24 * time.Hour

// The generator: subscriber s pings every Step, its k-th ping a little
// after t0 + k·Step; it stays in a zone for a run of pings of its own
// length, and now and then is silent for a run.
const (
	Step     = 5 * time.Minute
	MaxDelay = Step
)

// Start is the generator's first ping time.
var Start = time.Date(2026, 3, 2, 5, 0, 0, 0, time.UTC)

// Generator makes pings of subs subscribers over zones zones: partition p
// has the subscribers s with s mod partitions = p, in turn.
func Generator(subs, zones, partitions int) func(p int, off int64, r *gen.Rand) Ping {
	return func(p int, off int64, _ *gen.Rand) Ping {
		n := int64((subs - p + partitions - 1) / partitions) // subscribers of partition p
		s := int(off%n)*partitions + p
		k := off / n
		run := 3 + mix(uint64(s), 0)%8 // pings per stay
		seg := uint64(k) / run
		at := Start.Add(time.Duration(k)*Step + time.Duration(mix(uint64(s), uint64(k)+1)%uint64(Step/2)))
		return Ping{Sub: fmt.Sprintf("s%05d", s), Zone: fmt.Sprintf("z%02d", mix(uint64(s), seg<<20|7)%uint64(zones)),
			At: at, Silent: mix(uint64(s), seg<<20|9)%12 == 0}
	}
}

func mix(a, b uint64) uint64 {
	z := a*0x9e3779b97f4a7c15 + b*0xbf58476d1ce4e5b9 + 0x94d049bb133111eb
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// fileSink appends trips as JSON lines with their output ids, synced per
// write: a restore delivers a checkpoint's outputs again, and a reader
// keeps one line per id.
type fileSink struct {
	mu sync.Mutex
	f  *os.File
}

// Line is a line of the trips file.
type Line struct {
	ID   string `json:"id"`
	Trip Trip   `json:"trip"`
}

func (s *fileSink) Write(out []flows.Output[Trip]) error {
	var buf []byte
	for _, o := range out {
		b, err := json.Marshal(Line{ID: o.ID.String(), Trip: o.Value})
		if err != nil {
			return err
		}
		buf = append(append(buf, b...), '\n')
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.f.Write(buf); err != nil {
		return err
	}
	return s.f.Sync()
}

// openLines opens a JSON-lines file to append to. A line cut short by a
// crash in the middle of a write is dropped first: the write had not
// returned, so the trips it held come again when the fragment replays.
func openLines(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	end, err := completeLines(f)
	if err == nil {
		err = f.Truncate(end)
	}
	if err == nil {
		_, err = f.Seek(end, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("trips file: %w", err)
	}
	return f, nil
}

// completeLines is the length of f up to its last newline, read from the
// end.
func completeLines(f *os.File) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 64<<10)
	for end := st.Size(); end > 0; {
		start := max(0, end-int64(len(buf)))
		n, err := f.ReadAt(buf[:end-start], start)
		if err != nil && err != io.EOF {
			return 0, err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			return start + int64(i) + 1, nil
		}
		end = start
	}
	return 0, nil
}

func main() { cluster.Main("trips", run) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("trips", flag.ContinueOnError)
	var (
		events     = fs.Int64("events", 0, "generator: stop after this many pings in all (0: unbounded)")
		subs       = fs.Int("subscribers", 2000, "generator: subscribers")
		zones      = fs.Int("zones", 12, "generator: zones")
		rate       = fs.Float64("rate", 0, "generator: pings per second in all (0: unthrottled)")
		partitions = fs.Int("partitions", 4, "generator: source partitions")
	)
	var sink *fileSink
	defer func() {
		if sink != nil {
			sink.f.Close()
		}
	}()
	return cluster.Run(ctx, fs, args, stdout, stderr, func(node *cluster.Flags) (*flows.Flow, error) {
		if *subs < *partitions || *zones < 2 {
			return nil, fmt.Errorf("need at least as many subscribers as partitions and two zones")
		}
		g, err := gen.New(gen.Config{Partitions: *partitions, Events: *events, Rate: *rate}, Generator(*subs, *zones, *partitions))
		if err != nil {
			return nil, err
		}
		var s flows.Sink[Trip]
		if node.Data != "" {
			if err := os.MkdirAll(node.Data, 0o755); err != nil {
				return nil, err
			}
			name := "trips.jsonl"
			if node.Node != "" {
				name = "trips-" + node.Node + ".jsonl"
			}
			fh, err := openLines(filepath.Join(node.Data, name))
			if err != nil {
				return nil, err
			}
			sink = &fileSink{f: fh}
			s = sink
		}
		return Flow(g, DefaultParams, node.Fragments, s), nil
	}, [][2]string{
		{"/v1/views/trips", "trips detected"},
		{"/v1/views/od?window=latest&top=10", "the ten busiest origin→destination pairs of the latest complete hour"},
		{"/v1/cluster", "fragments, offsets, events/s"},
	})
}
