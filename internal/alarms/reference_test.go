package main

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// expected is what a run over the whole input must end with.
type expected struct {
	alarms  map[string]int // alarmText → how many (each is unique in practice)
	nAlarms int
	sites   map[string]SiteAgg // siteCell → the window's value
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
	type ev struct {
		r   Reading
		p   int
		off int64
	}
	byDev := map[string][]ev{}
	for p := range Partitions {
		for off := range sp.Limit(p) {
			r := sp.Event(p, off)
			byDev[r.Dev] = append(byDev[r.Dev], ev{r, p, off})
		}
	}
	var alarms []Alarm
	for dev, evs := range byDev {
		slices.SortFunc(evs, func(a, b ev) int {
			return cmp.Or(a.r.At.Compare(b.r.At), cmp.Compare(a.p, b.p), cmp.Compare(a.off, b.off))
		})
		var (
			s     Device
			has   bool
			last  time.Time
			timer time.Time
		)
		fire := func() {
			if !timer.IsZero() && has {
				var a Alarm
				s, a = OnBurst(dev, s, timer)
				alarms = append(alarms, a)
			}
			timer = time.Time{}
		}
		for _, e := range evs {
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
		fire()
	}
	want := expected{alarms: map[string]int{}, nAlarms: len(alarms), sites: map[string]SiteAgg{}}
	for _, a := range alarms {
		want.alarms[alarmText(a)]++
		for _, start := range windowStarts(a.At) {
			c := siteCell(a.Site, start)
			want.sites[c] = AddAlarm(want.sites[c], a)
		}
	}
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
