package browsertest

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/internal/exampletest"
)

// The /transport page of examples/transport after a small run, in
// Chromium: the zone grid with the flows drawn over it, the hourly OD
// heatmap with its hour slider, a pair's travel times, and the accuracy
// figures the example computed against the ground truth.
func TestTransportPage(t *testing.T) {
	t.Parallel()
	chromium(t)
	bin := build(t, "transport")
	proc := exampletest.Spawn(t, bin, "-subscribers", "1500", "-zones", "16", "-k", "3", "-fragments", "16",
		"-checkpoint-interval", "100ms", "-progress", "0", "-log-level", "warn", "-http", exampletest.FreePort(t), "-data", t.TempDir())
	var acc struct {
		Precision float64 `json:"precision"`
		Recall    float64 `json:"recall"`
		ODTVD     float64 `json:"od_tvd"`
	}
	exampletest.GetJSON(t, proc.Base+"/transport/accuracy", &acc)
	p := open(t, proc.Base+"/transport")

	// The accuracy figures, as the example computed them.
	shown := wait[[]float64](p, 30*time.Second, "the accuracy figures", `(() => {
		const b = [...document.querySelectorAll('#acc b')].map(x => +x.textContent);
		return b.length === 3 && b;
	})()`)
	for i, want := range []float64{acc.Precision, acc.Recall, acc.ODTVD} {
		if math.Abs(shown[i]-want) > 0.0006 {
			t.Errorf("accuracy figure %d: the page shows %v, the example computed %v", i, shown[i], want)
		}
	}

	// The hour slider spans the run's hours; the heatmap of the busiest
	// hour has cells with trip counts (a night hour may publish none: k).
	hours := wait[int](p, 60*time.Second, "the hour slider spans the hours", `(() => {
		const n = +document.getElementById('hour').max + 1;
		return n >= 3 && n;
	})()`)
	const cellsJS = `[...document.querySelectorAll('#heat td')].filter(td => /^\d+$/.test(td.textContent)).length`
	const setHourJS = `((i) => { const h = document.getElementById('hour'); h.value = i; h.dispatchEvent(new Event('input'));
		return [document.getElementById('hourLabel').textContent, ` + cellsJS + `]; })`
	busiest := eval[[]int](p, `(() => {
		let best = 0, most = -1;
		for (let i = 0; i <= +document.getElementById('hour').max; i++) {
			const [, n] = `+setHourJS+`(i);
			if (n > most) { best = i; most = n; }
		}
		return [best, most];
	})()`)
	if busiest[1] < 3 {
		t.Fatalf("the busiest of %d hours shows %d heatmap cells with trips", hours, busiest[1])
	}
	other := 0
	if busiest[0] == 0 {
		other = 1
	}
	there := eval[[]any](p, fmt.Sprintf(`%s(%d)`, setHourJS, other))
	back := eval[[]any](p, fmt.Sprintf(`%s(%d)`, setHourJS, busiest[0]))
	if there[0] == back[0] || back[0] == "–" || back[1] != float64(busiest[1]) {
		t.Fatalf("the slider: hour %d shows %v, hour %d %v", other, there, busiest[0], back)
	}

	// The zone grid and the flows of the hour, drawn on the map.
	drawn := wait[painted](p, 10*time.Second, "the zone grid and flows are drawn", paintedJS+`('#map').blue > 0 && `+paintedJS+`('#map')`)
	t.Logf("accuracy %v; %d hours, the busiest (%v) with %d heatmap cells with trips; map: %d pixels painted, %d of flows",
		shown, hours, back[0], busiest[1], drawn.All, drawn.Blue)
	p.shot("transport-busiest-hour")

	// A cell's travel times: click the busiest published cell.
	pair := eval[string](p, `(() => {
		const tds = [...document.querySelectorAll('#heat td')].filter(td => /^\d+$/.test(td.textContent));
		tds.sort((a, b) => +b.textContent - +a.textContent);
		tds[0].click();
		return tds[0].dataset.od;
	})()`)
	trips := wait[string](p, 10*time.Second, "the travel-time histogram of "+pair, `(() => {
		const m = document.getElementById('hist').textContent.match(/(\d+) trips, (\d+) subscribers/);
		const bars = [...document.querySelectorAll('#hist .bars div')], labels = document.querySelectorAll('#hist .labels span');
		// One bar per bucket, side by side under their labels, the tallest 80 px high.
		const aligned = bars.length > 1 && bars.length === labels.length &&
			bars.every((b, i) => Math.abs(b.getBoundingClientRect().left - labels[i].getBoundingClientRect().left) < 2);
		const tallest = Math.max(...bars.map(b => b.getBoundingClientRect().height));
		return aligned && Math.abs(tallest - 80) < 1 && m && m[0];
	})()`)
	t.Logf("travel times of %s: %s", pair, trips)
	p.shot("transport-travel-times")

	// The dashboard's explorer of a windowed keyed view: the od view's
	// windows charted, the latest window's top cells in the table.
	p.load(proc.Base + "/")
	wait[bool](p, 30*time.Second, "the od view listed", `(() => { const b = document.querySelector('#views tr[data-view="od"] button'); return b ? (b.click(), true) : false; })()`)
	top := wait[string](p, 30*time.Second, "the od view in the dashboard's explorer", `(() => {
		const rows = [...document.querySelectorAll('#ex-table tbody tr')].filter(r => r.cells.length === 2);
		const status = document.getElementById('ex-status').textContent;
		return document.getElementById('explorer').dataset.view === 'od' && rows.length > 0 && /^\d+ windows/.test(status) &&
			`+paintedJS+`('#ex-chart canvas').all > 200 && rows[0].cells[0].textContent + ' ' + rows[0].cells[1].textContent;
	})()`)
	t.Logf("dashboard explorer, od: %s", top)
	p.shot("dashboard-od-view")
}
