// Command alarms is a test program: a flow over a skewed source, run as a
// real cluster by its tests. Meters send readings; a per-device process
// function counts them, emits every tenth reading, and arms an event-time
// timer on a high reading that emits the burst's summary when it fires;
// device state expires by a TTL. The alarms are keyed again by site into
// sliding one-hour windows.
//
// The source is skewed on purpose: partition 0 holds most readings and half
// of them are of one hot device, partition 1 holds the rest, partition 2
// has a few early readings and then nothing (idle) until it ends, and
// partition 3 is empty.
//
// Every reading is also counted per device as it arrives ("counts", a
// keyed view), and every count update goes to DATA/counts: which reading
// is a device's n-th depends on how the partitions interleave, so each
// update's value is fixed only by the one history the sink must see.
//
// Two optional parts show how outputs are named: -reminders adds a
// stage whose follow-up timer every reading of a run asks for again, at a
// time already passed once the run is older (DATA/reminders), and
// -count-alarms sends every hundredth reading of a device to the alarms'
// sink too, so that one reading can make outputs of two operators there.
//
// Views: "devices" (keyed: every device's state, until it expires; none
// once a bounded input ended), "sites" (windowed keyed: per site and
// window, the alarms, bursts and the largest burst sum) and "alarms"
// (aggregate: the number of alarms). Sinks: DATA/alarms and DATA/windows (connectors/file, one file
// per fragment, delivered on checkpoints).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/tessera-streams/tessera/cluster"
	"github.com/tessera-streams/tessera/connectors/file"
	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/splice"
)

// Reading is a meter's value at a time.
type Reading struct {
	Dev   string
	At    time.Time
	Value int64
}

// Alarm is what the per-device stage emits: a tenth reading ("tenth") or
// the summary of a burst when its timer fires ("burst").
type Alarm struct {
	Dev  string
	Site string
	Kind string
	At   time.Time
	N    int64 // tenth: readings seen since the state began; burst: readings in the burst
	Sum  int64
	Max  int64
}

// Device is a device's state.
type Device struct {
	Seen  int64 // readings since the state began (a TTL expiry starts it again)
	N     int64 // readings since the last burst fired
	Sum   int64
	Max   int64
	Armed bool
}

// SiteAgg is a site's window: its alarms, its bursts and the largest sum
// of a burst.
type SiteAgg struct {
	Alarms int64
	Bursts int64
	MaxSum int64
}

const (
	// High is the reading value that arms a burst timer.
	High = 90
	// BurstAfter is how long after the arming reading a burst fires (half
	// a second off whole seconds: readings are at whole seconds, and a
	// timer never ties with one).
	BurstAfter = 5*time.Minute + 500*time.Millisecond
	// TTL expires a device's state; a quarter second off whole seconds.
	TTL = 20*time.Minute + 250*time.Millisecond
	// MaxDelay bounds how far readings of a partition come out of order.
	MaxDelay = 2 * time.Minute
	// WindowSize and WindowSlide are the sites' sliding windows.
	WindowSize  = time.Hour
	WindowSlide = 20 * time.Minute
	// Retain keeps every window of the run in the sites view.
	Retain = 30 * 24 * time.Hour
)

// SiteOf is a device's site.
func SiteOf(dev string) string {
	var h uint64 = 1469598103934665603
	for i := 0; i < len(dev); i++ {
		h = (h ^ uint64(dev[i])) * 1099511628211
	}
	return fmt.Sprintf("site%d", h%6)
}

// OnReading is the per-device event step, shared by the flow and the
// sequential reference: it returns the next state, an alarm to emit (or
// nil) and a timer to set (or the zero time).
func OnReading(s Device, r Reading) (Device, *Alarm, time.Time) {
	s.Seen++
	s.N++
	s.Sum += r.Value
	s.Max = max(s.Max, r.Value)
	var out *Alarm
	if s.Seen%10 == 0 {
		out = &Alarm{Dev: r.Dev, Site: SiteOf(r.Dev), Kind: "tenth", At: r.At, N: s.Seen, Sum: s.Sum, Max: s.Max}
	}
	var timer time.Time
	if r.Value >= High && !s.Armed {
		s.Armed = true
		timer = r.At.Add(BurstAfter)
	}
	return s, out, timer
}

// OnBurst is the per-device timer step: the burst's summary, and the
// state with the burst cleared.
func OnBurst(dev string, s Device, at time.Time) (Device, Alarm) {
	a := Alarm{Dev: dev, Site: SiteOf(dev), Kind: "burst", At: at, N: s.N, Sum: s.Sum, Max: s.Max}
	s.N, s.Sum, s.Max, s.Armed = 0, 0, 0, false
	return s, a
}

// AddAlarm folds an alarm into a site's window.
func AddAlarm(w SiteAgg, a Alarm) SiteAgg {
	w.Alarms++
	if a.Kind == "burst" {
		w.Bursts++
		w.MaxSum = max(w.MaxSum, a.Sum)
	}
	return w
}

// MergeSites merges two windows' partials.
func MergeSites(a, b SiteAgg) SiteAgg {
	return SiteAgg{Alarms: a.Alarms + b.Alarms, Bursts: a.Bursts + b.Bursts, MaxSum: max(a.MaxSum, b.MaxSum)}
}

// Reminder is what the reminders stage emits: a device's readings so far
// in its current run, FollowUp after the run's first reading.
type Reminder struct {
	Dev      string
	At       time.Time
	Readings int64
}

// Run is a device's state in the reminders stage: the first reading of
// its current run (a TTL expiry starts a new run) and its readings since.
type Run struct {
	First    time.Time
	Readings int64
}

// FollowUp is how long after a run's first reading a reminder fires (a
// quarter and an eighth of a second off whole seconds, as the other
// timers).
const FollowUp = 3*time.Minute + 125*time.Millisecond

// OnRunReading is the reminders stage's event step: it counts the reading
// and returns the run's follow-up time, which every reading of the run
// asks for again — a time already passed once the run is older than
// FollowUp.
func OnRunReading(s Run, r Reading) (Run, time.Time) {
	if s.First.IsZero() {
		s.First = r.At
	}
	s.Readings++
	return s, s.First.Add(FollowUp)
}

// Reminders adds the reminders stage to the flow over the readings keyed
// by device: a follow-up timer that every reading of a run sets again, and
// its reminders to sink.
func Reminders(byDev flows.KeyedStream[string, Reading], sink flows.Sink[Reminder]) {
	rem := flows.Process(byDev, flows.Handler[string, Reading, Run, Reminder]{
		OnEvent: func(c *flows.Context[string, Run, Reminder], r Reading) {
			s, _ := c.State()
			s, at := OnRunReading(s, r)
			c.SetEventTimer(at)
			c.SetState(s)
		},
		OnTimer: func(c *flows.Context[string, Run, Reminder], at time.Time) {
			s, _ := c.State()
			c.Emit(Reminder{Dev: c.Key(), At: at, Readings: s.Readings})
		},
	}, flows.InEventTimeOrder(), flows.WithStateTTL(TTL)).Out()
	flows.To(rem, sink, flows.OnCheckpoint())
}

// Flow is the alarms flow over src; alarms and window results also go to
// the sinks (nil: none).
func Flow(src flows.Source[Reading], fragments int, idle time.Duration, alarmSink flows.Sink[Alarm],
	windowSink flows.Sink[flows.WindowResult[string, SiteAgg]], countSink flows.Sink[flows.KV[string, int64]],
	reminderSink flows.Sink[Reminder], countAlarms bool) *flows.Flow {
	f := flows.New("alarms", flows.WithFragments(fragments))
	opts := []flows.SourceOption{flows.WithEventTime(func(r Reading) time.Time { return r.At }, MaxDelay)}
	if idle > 0 {
		opts = append(opts, flows.WithIdleTimeout(idle))
	}
	readings := flows.From(f, "readings", src, opts...)
	byDev := flows.KeyBy(readings, func(r Reading) string { return r.Dev })
	counts := flows.Count(byDev).View("counts")
	if reminderSink != nil {
		Reminders(byDev, reminderSink)
	}
	if alarmSink != nil && countAlarms {
		// Every hundredth reading of a device is an alarm too, in the
		// alarms' sink: one reading can make outputs of two operators there.
		flows.To(flows.FlatMap(counts.Updates(), func(kv flows.KV[string, int64], emit func(Alarm)) {
			if kv.Value%100 == 0 {
				emit(Alarm{Dev: kv.Key, Site: SiteOf(kv.Key), Kind: "hundredth", N: kv.Value})
			}
		}), alarmSink, flows.OnCheckpoint())
	}
	if countSink != nil {
		flows.To(counts.Updates(), countSink, flows.OnCheckpoint())
	}
	alarms := flows.Process(byDev, flows.Handler[string, Reading, Device, Alarm]{
		OnEvent: func(c *flows.Context[string, Device, Alarm], r Reading) {
			s, _ := c.State()
			s, out, timer := OnReading(s, r)
			if out != nil {
				c.Emit(*out)
			}
			if !timer.IsZero() {
				c.SetEventTimer(timer)
			}
			c.SetState(s)
		},
		OnTimer: func(c *flows.Context[string, Device, Alarm], at time.Time) {
			s, ok := c.State()
			if !ok {
				return
			}
			s, a := OnBurst(c.Key(), s, at)
			c.Emit(a)
			c.SetState(s)
		},
	}, flows.InEventTimeOrder(), flows.WithStateTTL(TTL)).View("devices").Out()
	sites := flows.WindowAggregateMerge(flows.KeyBy(alarms, func(a Alarm) string { return a.Site }),
		flows.Sliding(WindowSize, WindowSlide), func() SiteAgg { return SiteAgg{} }, AddAlarm, MergeSites).
		KeyedView("sites", Retain)
	flows.AggregateView(alarms, "alarms", splice.Count[Alarm](), flows.Identity[Alarm])
	if alarmSink != nil {
		flows.To(alarms, alarmSink, flows.OnCheckpoint())
	}
	if windowSink != nil {
		flows.To(sites.Results(), windowSink, flows.OnCheckpoint())
	}
	return f
}

func main() { cluster.Main("alarms", run) }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("alarms", flag.ContinueOnError)
	var sp SourceParams
	fs.Int64Var(&sp.Hot, "hot", 30_000, "readings of partition 0 (half of them of the hot device)")
	fs.Int64Var(&sp.Warm, "warm", 6_000, "readings of partition 1")
	fs.Int64Var(&sp.Early, "early", 25, "early readings of partition 2, which then idles until -idle-end")
	fs.Float64Var(&sp.Rate, "rate", 0, "readings per second of partitions 0 and 1 together (0: unthrottled)")
	fs.DurationVar(&sp.IdleEnd, "idle-end", 2*time.Second, "partition 2 ends this long after the source is made")
	idle := fs.Duration("idle-timeout", 300*time.Millisecond, "a partition without readings this long is idle (0: never)")
	reminders := fs.Bool("reminders", false, "add the reminders stage, its reminders to DATA/reminders")
	countAlarms := fs.Bool("count-alarms", false, "every hundredth reading of a device is an alarm too (\"hundredth\", in DATA/alarms)")
	var closers []func() error
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	return cluster.Run(ctx, fs, args, stdout, stderr, func(node *cluster.Flags) (*flows.Flow, error) {
		if node.Data == "" {
			return nil, errors.New("alarms needs -data: its sinks write there")
		}
		src, err := NewSource(sp)
		if err != nil {
			return nil, err
		}
		as, err := file.NewSink[Alarm](filepath.Join(node.Data, "alarms"), nil)
		if err != nil {
			return nil, err
		}
		closers = append(closers, as.Close)
		ws, err := file.NewSink[flows.WindowResult[string, SiteAgg]](filepath.Join(node.Data, "windows"), nil)
		if err != nil {
			return nil, err
		}
		closers = append(closers, ws.Close)
		cs, err := file.NewSink[flows.KV[string, int64]](filepath.Join(node.Data, "counts"), nil)
		if err != nil {
			return nil, err
		}
		closers = append(closers, cs.Close)
		var rs flows.Sink[Reminder]
		if *reminders {
			s, err := file.NewSink[Reminder](filepath.Join(node.Data, "reminders"), nil)
			if err != nil {
				return nil, err
			}
			closers = append(closers, s.Close)
			rs = s
		}
		return Flow(src, node.Fragments, *idle, as, ws, cs, rs, *countAlarms), nil
	}, [][2]string{
		{"/v1/views/sites?limit=20", "sites' windows"},
		{"/v1/views/alarms", "alarms"},
		{"/v1/cluster", "fragments, watermarks, events/s"},
	})
}
