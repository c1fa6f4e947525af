package main

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/tessera-streams/tessera/flows"
)

// expected is what a run over the whole input must end with.
type expected struct {
	alarms  map[string]int // alarmText → how many (each is unique in practice)
	nAlarms int
	sites   map[string]SiteAgg // siteCell → the window's value
	devices map[string]Device  // at a cut: the devices' states not expired
	counts  map[string]int64   // readings per device
}

// alarmText names an alarm by all its fields.
func alarmText(a Alarm) string {
	return fmt.Sprintf("%s|%s|%s|%d|%d|%d|%d", a.Dev, a.Site, a.Kind, a.At.UnixNano(), a.N, a.Sum, a.Max)
}

// siteCell names a site's window.
func siteCell(site string, start time.Time) string {
	return fmt.Sprintf("%s@%d", site, start.UnixNano())
}

// reference runs the flow sequentially: every device's readings in
// event-time order (ties by partition and offset), its burst timer firing
// before a later reading, its state gone once a reading comes more than
// the TTL after the last one, the timers left firing at the end; then the
// alarms into the sliding windows of their sites.
func reference(sp SourceParams) expected {
	var ends [Partitions]int64
	for p := range Partitions {
		ends[p] = sp.Limit(p)
	}
	// Every reading read, and a watermark past every time: every timer
	// fired, and no state left to hold.
	want := referenceAt(byDevice(sp), ends, time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC))
	want.devices = nil
	return want
}

// windowStarts are the starts of the sliding windows that hold t: the
// multiples of the slide since the Unix epoch in (t-size, t].
func windowStarts(t time.Time) []time.Time {
	slide, size := int64(WindowSlide), int64(WindowSize)
	last := t.UnixNano() / slide * slide
	var starts []time.Time
	for s := last; s > t.UnixNano()-size; s -= slide {
		starts = append(starts, time.Unix(0, s).UTC())
	}
	return starts
}

// byDevice is the input of sp per device, in the order the reference
// applies it: event time, then partition and offset.
type devEvent struct {
	r   Reading
	p   int
	off int64
}

func byDevice(sp SourceParams) map[string][]devEvent {
	m := map[string][]devEvent{}
	for p := range Partitions {
		for off := range sp.Limit(p) {
			r := sp.Event(p, off)
			m[r.Dev] = append(m[r.Dev], devEvent{r, p, off})
		}
	}
	for _, evs := range m {
		slices.SortFunc(evs, func(a, b devEvent) int {
			return cmp.Or(a.r.At.Compare(b.r.At), cmp.Compare(a.p, b.p), cmp.Compare(a.off, b.off))
		})
	}
	return m
}

// referenceAt is what the flow holds at a cut: the readings below ends
// read, those at or before the watermark wm applied (the others wait for
// it), and the timers at or before wm fired.
func referenceAt(devs map[string][]devEvent, ends [Partitions]int64, wm time.Time) expected {
	var alarms []Alarm
	devices, counts := map[string]Device{}, map[string]int64{}
	for dev, evs := range devs {
		var (
			s     Device
			has   bool
			last  time.Time
			timer time.Time
		)
		fire := func() {
			if has {
				var a Alarm
				s, a = OnBurst(dev, s, timer)
				alarms = append(alarms, a)
			}
			timer = time.Time{}
		}
		for _, e := range evs {
			if e.off < ends[e.p] {
				counts[dev]++
			}
			if e.off >= ends[e.p] || e.r.At.After(wm) {
				continue
			}
			if !timer.IsZero() && timer.Before(e.r.At) {
				fire()
			}
			if has && timer.IsZero() && last.Add(TTL).Before(e.r.At) {
				s, has = Device{}, false
			}
			var out *Alarm
			var t time.Time
			s, out, t = OnReading(s, e.r)
			has, last = true, e.r.At
			if out != nil {
				alarms = append(alarms, *out)
			}
			if !t.IsZero() {
				timer = t
			}
		}
		if !timer.IsZero() && !timer.After(wm) {
			fire()
		}
		if has && last.Add(TTL).After(wm) {
			devices[dev] = s
		}
	}
	want := expected{alarms: map[string]int{}, nAlarms: len(alarms), sites: map[string]SiteAgg{}, devices: devices, counts: counts}
	for _, a := range alarms {
		want.alarms[alarmText(a)]++
		for _, start := range windowStarts(a.At) {
			c := siteCell(a.Site, start)
			want.sites[c] = AddAlarm(want.sites[c], a)
		}
	}
	return want
}

// cutWatermarks are the watermarks a cut at ends may have: each
// partition's is its latest reading's time less MaxDelay (none before
// one, the end of time once it ended), and the smallest counts but of
// partitions idle at the cut — which only the processing time of the
// run knows, so every choice of them is a candidate.
func cutWatermarks(sp SourceParams, ends [Partitions]int64, latest [Partitions][]time.Time) []time.Time {
	end := time.Unix(0, math.MaxInt64)
	var per [Partitions]time.Time
	var seen [Partitions]bool
	for p := range Partitions {
		switch {
		case ends[p] >= sp.Limit(p) && p != 2:
			per[p], seen[p] = end, true
		case ends[p] == 0:
		default:
			per[p], seen[p] = latest[p][ends[p]-1].Add(-MaxDelay), true
		}
	}
	var out []time.Time
	add := func(wm time.Time) {
		if !slices.ContainsFunc(out, wm.Equal) {
			out = append(out, wm)
		}
	}
	options := [][Partitions]time.Time{per}
	if ends[2] >= sp.Limit(2) { // partition 2 may have ended, or not yet
		ended := per
		ended[2] = end
		options = append(options, ended)
	}
	for _, per := range options {
		for idle := range 1 << Partitions {
			add(cutWatermark(per, seen, idle))
		}
	}
	return out
}

// latestReadings are, per partition and offset, the latest event time of
// the readings up to it.
func latestReadings(sp SourceParams) (latest [Partitions][]time.Time) {
	for p := range Partitions {
		var l time.Time
		for off := range sp.Limit(p) {
			if at := sp.Event(p, off).At; at.After(l) {
				l = at
			}
			latest[p] = append(latest[p], l)
		}
	}
	return latest
}

// cutWatermark is the watermark of partitions at per (seen or not) but
// the idle ones: the smallest of the others, or the largest if all are
// idle.
func cutWatermark(per [Partitions]time.Time, seen [Partitions]bool, idle int) time.Time {
	end := time.Unix(0, math.MaxInt64)
	{
		low, any, high := end, false, time.Time{}
		none := false
		for p := range Partitions {
			if seen[p] && per[p].After(high) {
				high = per[p]
			}
			if idle&(1<<p) != 0 {
				continue
			}
			any = true
			if !seen[p] {
				none = true
				break
			}
			if per[p].Before(low) {
				low = per[p]
			}
		}
		switch {
		case none:
			return time.Time{} // no watermark yet: nothing applied
		case !any:
			return high
		}
		return low
	}
}

// referenceReminders runs the reminders stage sequentially: a device's
// follow-up timer fires before its next reading that comes after it (and
// at the end), and fires again when a reading asks for it again, even at
// a time already passed.
func referenceReminders(sp SourceParams) map[string]int {
	out := map[string]int{}
	for dev, evs := range byDevice(sp) {
		var (
			s     Run
			has   bool
			last  time.Time
			timer time.Time
		)
		fire := func() {
			out[fmt.Sprintf("%s|%d|%d", dev, timer.UnixNano(), s.Readings)]++
			timer = time.Time{}
		}
		for _, e := range evs {
			if !timer.IsZero() && timer.Before(e.r.At) {
				fire()
			}
			if has && timer.IsZero() && last.Add(TTL).Before(e.r.At) {
				s, has = Run{}, false
			}
			s, timer = OnRunReading(s, e.r)
			has, last = true, e.r.At
		}
		if !timer.IsZero() {
			fire()
		}
	}
	return out
}

// byFragment splits the input per device (byDevice) by the fragment of
// each device among n: the per-device stage of fragment f holds the
// devices of byFragment(devs, n)[f].
func byFragment(devs map[string][]devEvent, n int) []map[string][]devEvent {
	out := make([]map[string][]devEvent, n)
	for i := range out {
		out[i] = map[string][]devEvent{}
	}
	for dev, evs := range devs {
		f, err := flows.KeyPartition(dev, n)
		if err != nil {
			panic(err)
		}
		out[f][dev] = evs
	}
	return out
}

// merge adds b, what other devices hold at a cut, to a.
func (a *expected) merge(b expected) {
	if a.alarms == nil {
		*a = expected{alarms: map[string]int{}, sites: map[string]SiteAgg{}, devices: map[string]Device{}, counts: map[string]int64{}}
	}
	a.nAlarms += b.nAlarms
	for k, n := range b.alarms {
		a.alarms[k] += n
	}
	for c, w := range b.sites {
		if v, ok := a.sites[c]; ok {
			w = MergeSites(v, w)
		}
		a.sites[c] = w
	}
	maps.Copy(a.devices, b.devices)
	maps.Copy(a.counts, b.counts)
}

// atFragments is what the flow holds at a cut at ends with fragment f of
// the per-device stage at watermark wms[f] (the zero time: none yet):
// each fragment's event time is its own, and after a fragment restarts
// from an older copy its watermark may stand behind the others' for a
// while (its input partitions look active to it again, until their
// readers find them idle).
func atFragments(frags []map[string][]devEvent, ends [Partitions]int64, wms []time.Time) expected {
	var want expected
	for f, devs := range frags {
		want.merge(referenceAt(devs, ends, wms[f]))
	}
	return want
}
