package flows

import (
	"encoding/binary"
	"fmt"
	"math"
	"reflect"
	"time"
)

// SourceOption configures a source in From.
type SourceOption struct {
	ts       any // func(T) time.Time
	maxDelay time.Duration
	idle     time.Duration
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
// until it has events again. Default: never idle.
func WithIdleTimeout(d time.Duration) SourceOption { return SourceOption{idle: d} }

// NoWatermark is the watermark before any event: nothing is complete.
const NoWatermark = math.MinInt64

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
			ts = fn
			if d.et == nil {
				d.et = &eventTime{}
			}
			d.et.maxDelay = int64(o.maxDelay)
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
}

func newWatermarks(parts int) watermarks {
	w := watermarks{parts: make([]partWM, parts), wm: NoWatermark}
	for i := range w.parts {
		w.parts[i].wm = NoWatermark
	}
	return w
}

// observe records a partition's watermark from a batch and returns whether
// the channel's watermark advanced.
func (w *watermarks) observe(part int, wm int64, idle bool) bool {
	if part < 0 || part >= len(w.parts) {
		return false
	}
	p := &w.parts[part]
	p.seen, p.idle = true, idle
	if wm > p.wm {
		p.wm = wm
	}
	return w.recompute()
}

func (w *watermarks) recompute() bool {
	low, any := int64(math.MaxInt64), false
	for _, p := range w.parts {
		if p.idle {
			continue
		}
		any = true
		if !p.seen {
			low = NoWatermark
			break
		}
		low = min(low, p.wm)
	}
	if any && low > w.wm {
		w.wm = low
		return true
	}
	return false
}

// Watermarks live in a reserved namespace of the checkpoint: one entry per
// event-time partition of every channel, keyed by channel and partition.
const watermarkNamespace = math.MaxUint16

func (fr *Fragment) wmDelta(d *Delta) {
	reset := false
	for ch := range fr.wms {
		w := &fr.wms[ch]
		for part, p := range w.parts {
			if !reset {
				d.Reset = append(d.Reset, watermarkNamespace)
				reset = true
			}
			if !p.seen {
				continue
			}
			key := binary.BigEndian.AppendUint32(nil, uint32(ch))
			key = binary.BigEndian.AppendUint32(key, uint32(part))
			val := binary.BigEndian.AppendUint64(nil, uint64(p.wm))
			if p.idle {
				val = append(val, 1)
			} else {
				val = append(val, 0)
			}
			d.Puts = append(d.Puts, StateEntry{Namespace: watermarkNamespace, Key: key, Value: val})
			d.Entries++
		}
	}
}

func (fr *Fragment) wmRestore(key, val []byte) error {
	if len(key) != 8 || len(val) != 9 {
		return fmt.Errorf("watermark entry of %d+%d bytes", len(key), len(val))
	}
	ch, part := int(binary.BigEndian.Uint32(key)), int(binary.BigEndian.Uint32(key[4:]))
	if ch >= len(fr.wms) || part >= len(fr.wms[ch].parts) {
		return fmt.Errorf("watermark of %d/%d, which has no event time in this flow", ch, part)
	}
	w := &fr.wms[ch]
	w.parts[part] = partWM{wm: int64(binary.BigEndian.Uint64(val)), idle: val[8] == 1, seen: true}
	w.recompute()
	return nil
}
