package pipeline

import (
	"cmp"
	"math"
	"slices"
	"time"

	"github.com/tessera-streams/tessera/examples/transport/sim"
)

// Accuracy is how well detected trips match the ground truth.
type Accuracy struct {
	// Precision: the share of detected trips that are true trips (same
	// subscriber, origin and destination, departing within Tolerance).
	Precision float64 `json:"precision"`
	// Recall: the share of true trips detected.
	Recall float64 `json:"recall"`
	// ODTVD: the total variation distance between the detected and the
	// true OD matrix of each hour (trips by departure, each matrix
	// normalised to a distribution over OD pairs), averaged over the hours
	// weighted by their true trips.
	ODTVD    float64 `json:"od_tvd"`
	Detected int     `json:"detected"`
	True     int     `json:"true"`
	Matched  int     `json:"matched"`
	// DepartError: the median error of the matched trips' departures.
	DepartErrorMinutes float64 `json:"depart_error_minutes"`
	// DepartBias: the matched trips' mean departure error (detected − true).
	DepartBiasMinutes float64   `json:"depart_bias_minutes"`
	Hours             []HourTVD `json:"hours"`
}

// HourTVD is one hour's OD error.
type HourTVD struct {
	Start    time.Time `json:"start"`
	True     int       `json:"true"`
	Detected int       `json:"detected"`
	TVD      float64   `json:"tvd"`
}

// Tolerance is how far a detected departure may be from the true one for
// the two to match.
const Tolerance = 90 * time.Minute

// Score compares detected trips with the true ones.
func Score(detected []Detected, truth []sim.Trip) Accuracy {
	a := Accuracy{Detected: len(detected), True: len(truth)}
	det := map[uint64][]Detected{}
	for _, d := range detected {
		det[d.Sub] = append(det[d.Sub], d)
	}
	for _, ds := range det {
		slices.SortFunc(ds, func(a, b Detected) int { return a.Depart.Compare(b.Depart) })
	}
	used := map[*Detected]bool{}
	var errs []float64
	for _, t := range truth {
		ds := det[t.Sub]
		for i := range ds {
			d := &ds[i]
			if used[d] || d.From != t.From || d.To != t.To {
				continue
			}
			diff := d.Depart.Sub(t.Depart)
			if diff.Abs() > Tolerance {
				continue
			}
			used[d] = true
			a.Matched++
			errs = append(errs, diff.Abs().Minutes())
			a.DepartBiasMinutes += diff.Minutes()
			break
		}
	}
	if a.Detected > 0 {
		a.Precision = float64(a.Matched) / float64(a.Detected)
	}
	if a.True > 0 {
		a.Recall = float64(a.Matched) / float64(a.True)
	}
	if len(errs) > 0 {
		slices.Sort(errs)
		a.DepartErrorMinutes = errs[len(errs)/2]
		a.DepartBiasMinutes /= float64(len(errs))
	}
	type hourOD struct {
		hour     int64
		from, to int32
	}
	tc, dc := map[hourOD]int{}, map[hourOD]int{}
	tn, dn := map[int64]int{}, map[int64]int{}
	for _, t := range truth {
		h := t.Depart.Truncate(time.Hour).Unix()
		tc[hourOD{h, t.From, t.To}]++
		tn[h]++
	}
	for _, d := range detected {
		h := d.Depart.Truncate(time.Hour).Unix()
		dc[hourOD{h, d.From, d.To}]++
		dn[h]++
	}
	diff := map[int64]float64{}
	for k, n := range tc {
		diff[k.hour] += math.Abs(float64(n)/float64(tn[k.hour]) - frac(dc[k], dn[k.hour]))
	}
	for k, n := range dc {
		if tc[k] == 0 {
			diff[k.hour] += float64(n) / float64(dn[k.hour])
		}
	}
	weighted := 0.0
	for h, n := range tn {
		tvd := diff[h] / 2
		weighted += tvd * float64(n)
		a.Hours = append(a.Hours, HourTVD{Start: time.Unix(h, 0).UTC(), True: n, Detected: dn[h], TVD: tvd})
	}
	for h, n := range dn {
		if tn[h] == 0 {
			a.Hours = append(a.Hours, HourTVD{Start: time.Unix(h, 0).UTC(), Detected: n, TVD: 1})
		}
	}
	slices.SortFunc(a.Hours, func(x, y HourTVD) int { return cmp.Compare(x.Start.Unix(), y.Start.Unix()) })
	if a.True > 0 {
		a.ODTVD = weighted / float64(a.True)
	}
	return a
}

func frac(n, total int) float64 {
	if total == 0 {
		return 0
	}
	return float64(n) / float64(total)
}
