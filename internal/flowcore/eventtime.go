package flowcore

import (
	"encoding/binary"
	"fmt"
	"math"
	"reflect"
	"slices"
	"time"

	"github.com/tessera-streams/tessera/shard"
)

// SourceOption configures a source in From.
type SourceOption struct {
	ts       any // func(T) time.Time
	maxDelay time.Duration
	idle     time.Duration
	keyed    bool
}

// WithEventTime gives a source event time: ts extracts an event's timestamp,
// and the source's partitions emit watermarks that trail the largest
// timestamp seen by maxOutOfOrder (bounded out-of-orderness). ts must take
// the source's event type.
func WithEventTime[T any](ts func(T) time.Time, maxOutOfOrder time.Duration) SourceOption {
	return SourceOption{ts: ts, maxDelay: maxOutOfOrder}
}

// WithIdleTimeout marks a partition idle when it has had no event for d of
// processing time: an idle partition does not hold the watermark back,
// until it has events again. A partition that ended is never idle, and
// with every other partition idle the watermark is the largest of the
// idle ones' (recompute). Default: never idle.
func WithIdleTimeout(d time.Duration) SourceOption { return SourceOption{idle: d} }

// WithKeyedPartitions says the source is partitioned by the key of the
// flow's KeyBy: partition p holds the events whose key k has
// KeyPartition(k, partitions) == p. A cluster then places each partition's
// reader beside the fragments of its keys (Plan.KeyGroups), and its
// records cross no nodes. The partitions must divide the flow's
// fragments. An event in another partition is still counted where its key
// is, only not beside its reader.
func WithKeyedPartitions() SourceOption { return SourceOption{keyed: true} }

// KeyPartition is the partition of a source with partitions partitions
// that holds key under WithKeyedPartitions: its hash as KeyBy takes it,
// with the key codec KeyBy uses by default, mod partitions. It is the
// partitioner for the producers of such a source.
func KeyPartition[K comparable](key K, partitions int) (int, error) {
	if partitions < 1 {
		return 0, fmt.Errorf("key partition: %d partitions", partitions)
	}
	kc, err := DefaultKeyCodec[K]()
	if err != nil {
		return 0, fmt.Errorf("key partition: %w", err)
	}
	return shard.Fragment(keyHasher(kc)(key), partitions), nil
}

// NoWatermark is the watermark before any event: nothing is complete.
const NoWatermark = math.MinInt64

// Event times are Unix nanoseconds, which hold 1677-09-21 to 2262-04-11.
// An event's time must lie in [MinEventTime, MaxEventTime): a source's
// reader sends an event of another time to the dead letters, and Restamp
// fails on it (it goes to the dead letters as an event a user function
// failed on). They are fixed: a flow must not change them. The margins
// leave room for the windows' ends, sessions' gaps, expiries and
// lateness of a flow, each at most MaxTimeSpan (checked when the flow is
// built), to be added without overflowing, through a few windows in a
// row; before, an hour's window of an event in 2262 wrapped round to 1677
// and the event was lost.
var (
	MinEventTime = time.Date(1800, 1, 1, 0, 0, 0, 0, time.UTC)
	MaxEventTime = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

// MaxTimeSpan bounds a flow's window sizes, session gaps, allowed
// lateness, state TTLs and out-of-orderness.
const MaxTimeSpan = 10 * 365 * 24 * time.Hour

// inEventTime reports whether t is in [MinEventTime, MaxEventTime).
func inEventTime(t time.Time) bool { return !t.Before(MinEventTime) && t.Before(MaxEventTime) }

// outOfTime says why an event time t cannot be taken.
func outOfTime(t time.Time) string {
	return fmt.Sprintf("event time %s is outside %s to %s", t.UTC().Format(time.RFC3339Nano),
		MinEventTime.Format(time.RFC3339), MaxEventTime.Format(time.RFC3339))
}

// checkSpan fails the flow if d, a duration of what, is beyond
// MaxTimeSpan.
func (f *Flow) checkSpan(what string, d time.Duration) {
	if d > MaxTimeSpan {
		f.errorf("%s %v is beyond the longest span a flow's times may have, %v (ten years)", what, d, MaxTimeSpan)
	}
}

type eventTime struct {
	maxDelay int64 // ns
	idle     int64 // ns; 0: never
}

func sourceOptions[T any](f *Flow, name string, d *sourceDef, opts []SourceOption) func(T) time.Time {
	var ts func(T) time.Time
	for _, o := range opts {
		if o.ts != nil {
			fn, ok := o.ts.(func(T) time.Time)
			if !ok || fn == nil {
				f.errorf("source %q: WithEventTime needs a func(%s) time.Time, got %T", name, reflect.TypeFor[T](), o.ts)
				continue
			}
			if o.maxDelay < 0 {
				f.errorf("source %q: negative out-of-orderness %v", name, o.maxDelay)
			}
			f.checkSpan(fmt.Sprintf("source %q: out-of-orderness", name), o.maxDelay)
			ts = fn
			if d.et == nil {
				d.et = &eventTime{}
			}
			d.et.maxDelay = int64(o.maxDelay)
		}
		if o.keyed {
			d.keyed = true
		}
		if o.idle != 0 {
			if o.idle < 0 {
				f.errorf("source %q: negative idle timeout %v", name, o.idle)
			}
			if d.et == nil {
				d.et = &eventTime{}
			}
			d.et.idle = int64(o.idle)
		}
	}
	if d.et != nil && ts == nil {
		f.errorf("source %q: WithIdleTimeout without WithEventTime", name)
	}
	return ts
}

// partWM is a fragment's view of one event-time partition's watermark.
type partWM struct {
	wm   int64
	idle bool
	seen bool
}

// watermarks is a fragment's event-time state for one input channel (a
// source, or an exchange): the watermark of each of its partitions, and
// the channel's, the minimum over the active ones. The stages fed by the
// channel follow it: their timers fire and their windows close as it
// passes.
type watermarks struct {
	parts []partWM // nil: the channel has no event time
	wm    int64    // monotone
	// legacy: restored from entries of one partition each, which the
	// next checkpoint replaces.
	legacy bool
}

func newWatermarks(parts int) watermarks {
	w := watermarks{parts: make([]partWM, parts), wm: NoWatermark}
	for i := range w.parts {
		w.parts[i].wm = NoWatermark
	}
	return w
}

// observe records a partition's watermark from a batch and returns whether
// the channel's watermark advanced; replay: the batch brings nothing the
// fragment did not apply before.
//
// A batch's reader may know less of its partition than the fragment does,
// and then its word does not count:
//   - A batch without a watermark that does not say its partition is idle
//     tells nothing: its reader has read no event since it opened or
//     rewound.
//   - A replay does not make an idle partition active: its reader rewound
//     (for another fragment, which restored an older checkpoint) and reads
//     again events this fragment applied long ago, which are nothing new
//     to it; its watermark may still rise.
//
// Before, either made an idle partition active again at its old
// watermark in every fragment the reader reached (after a failover, or
// when a fragment started again from nothing), and the channel's
// watermark stood still there until the reader found the partition idle
// itself, an idle timeout after its last event at least, seconds while it
// could not poll.
func (w *watermarks) observe(part int, wm int64, idle, replay bool) bool {
	if part < 0 || part >= len(w.parts) || (wm == NoWatermark && !idle) {
		return false
	}
	p := &w.parts[part]
	if !replay || idle || !p.seen || !p.idle {
		p.idle = idle
	}
	p.seen = true
	if wm > p.wm {
		p.wm = wm
	}
	return w.recompute()
}

// recompute sets the channel's watermark from its partitions': the
// minimum over the active ones, or, when every partition is idle, the
// largest of theirs (each said it holds nothing more for now). Before,
// with none active it stayed where the last partition to go idle left
// it, which made it depend on the order partitions went idle, and a
// restore of such a channel had no watermark at all.
//
// A partition that ended (its watermark the end of time) holds nothing
// back, but says nothing of the others: with every other partition idle,
// the watermark is the largest of the idle ones', and the end of time
// only once every partition ended. Before, one ended partition beside
// idle ones took the watermark to the end of time: every window fired,
// a global one before the input ended, and every later event of the idle
// partitions was too late.
func (w *watermarks) recompute() bool {
	low, active, idle := int64(math.MaxInt64), false, false
	high := int64(NoWatermark)
	for _, p := range w.parts {
		switch {
		case p.idle:
			idle = true
			if p.seen {
				high = max(high, p.wm)
			}
		case p.seen && p.wm == math.MaxInt64:
			// Ended: it holds nothing back, and says nothing of the
			// others.
		case !p.seen:
			active, low = true, NoWatermark
		default:
			active, low = true, min(low, p.wm)
		}
	}
	if !active && idle {
		low = high
	}
	if low > w.wm {
		w.wm = low
		return true
	}
	return false
}

// Watermarks live in a reserved namespace of the checkpoint, in one entry
// (key wmKey): every event-time partition seen, of every channel — one put
// per checkpoint, not one per partition (a stage after an exchange has a
// partition per upstream fragment) — then each channel's own watermark,
// which its partitions' do not always give back (it never falls, and a
// partition that was idle may be active again behind it): the count of
// channels, then each one's number and watermark. Entries without the
// channels (before them) and older checkpoints, an entry per partition
// keyed by channel and partition, still restore.
const watermarkNamespace = math.MaxUint16

var wmKey = []byte{'w'}

func (fr *Fragment) wmDelta(d *Delta) {
	var val []byte
	n := 0
	for ch := range fr.wms {
		w := &fr.wms[ch]
		if w.legacy {
			if !slices.Contains(d.Reset, watermarkNamespace) {
				d.Reset = append(d.Reset, watermarkNamespace)
			}
			w.legacy = false
		}
		for part, p := range w.parts {
			if !p.seen {
				continue
			}
			val = binary.AppendUvarint(val, uint64(ch))
			val = binary.AppendUvarint(val, uint64(part))
			val = binary.AppendVarint(val, p.wm)
			if p.idle {
				val = append(val, 1)
			} else {
				val = append(val, 0)
			}
			n++
		}
	}
	if n == 0 {
		return
	}
	var chans []byte
	m := 0
	for ch := range fr.wms {
		if w := &fr.wms[ch]; w.parts != nil && w.wm != NoWatermark {
			chans = binary.AppendVarint(binary.AppendUvarint(chans, uint64(ch)), w.wm)
			m++
		}
	}
	out := binary.AppendUvarint(make([]byte, 0, len(val)+len(chans)+2*binary.MaxVarintLen64), uint64(n))
	out = append(out, val...)
	out = append(binary.AppendUvarint(out, uint64(m)), chans...)
	d.Puts = append(d.Puts, StateEntry{Namespace: watermarkNamespace, Key: wmKey, Value: out})
	d.Entries++
}

func (fr *Fragment) wmRestore(key, val []byte) error {
	if string(key) == string(wmKey) {
		r := &batchReader{b: val, kind: "watermarks"}
		n := r.uvarint("count")
		for i := uint64(0); i < n && r.err == nil; i++ {
			ch, part, wm := r.uvarint("channel"), r.uvarint("partition"), r.varint("watermark")
			if r.err != nil {
				break
			}
			if len(r.b) == 0 {
				r.fail("idle")
				break
			}
			idle := r.b[0] == 1
			r.b = r.b[1:]
			if err := fr.wmSet(ch, part, wm, idle); err != nil {
				return err
			}
		}
		if r.err == nil && len(r.b) != 0 {
			m := r.uvarint("channels")
			for i := uint64(0); i < m && r.err == nil; i++ {
				ch, wm := r.uvarint("channel"), r.varint("channel watermark")
				if r.err != nil {
					break
				}
				if ch >= uint64(len(fr.wms)) || fr.wms[ch].parts == nil {
					return fmt.Errorf("watermark of channel %d, which has no event time in this flow", ch)
				}
				fr.wms[ch].wm = max(fr.wms[ch].wm, wm)
			}
		}
		if r.err == nil && len(r.b) != 0 {
			r.fail("trailing bytes")
		}
		return r.err
	}
	if len(key) != 8 || len(val) != 9 {
		return fmt.Errorf("watermark entry of %d+%d bytes", len(key), len(val))
	}
	ch, part := uint64(binary.BigEndian.Uint32(key)), uint64(binary.BigEndian.Uint32(key[4:]))
	if err := fr.wmSet(ch, part, int64(binary.BigEndian.Uint64(val)), val[8] == 1); err != nil {
		return err
	}
	fr.wms[ch].legacy = true
	return nil
}

func (fr *Fragment) wmSet(ch, part uint64, wm int64, idle bool) error {
	if ch >= uint64(len(fr.wms)) || part >= uint64(len(fr.wms[ch].parts)) {
		return fmt.Errorf("watermark of %d/%d, which has no event time in this flow", ch, part)
	}
	w := &fr.wms[ch]
	w.parts[part] = partWM{wm: wm, idle: idle, seen: true}
	w.recompute()
	return nil
}
