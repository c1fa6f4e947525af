package main

import (
	"fmt"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

func plotSweep(pts []sweepPoint, path string) error {
	p := plot.New()
	p.Title.Text = "keyed count: throughput by fragment count"
	p.X.Label.Text = "fragments"
	p.Y.Label.Text = "million events/s"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	xys := make(plotter.XYs, len(pts))
	for i, pt := range pts {
		xys[i].X, xys[i].Y = float64(pt.fragments), pt.perSec/1e6
	}
	line, points, err := plotter.NewLinePoints(xys)
	if err != nil {
		return err
	}
	p.Add(line, points, plotter.NewGrid())
	p.Y.Min = 0
	return p.Save(6*vg.Inch, 4*vg.Inch, path)
}

func plotLatency(ms []float64, path string) error {
	if len(ms) == 0 {
		return fmt.Errorf("no latency samples")
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("keyed count: end-to-end latency (%d samples)", len(ms))
	p.X.Label.Text = "ms (source read to state updated)"
	p.Y.Label.Text = "samples"
	h, err := plotter.NewHist(plotter.Values(ms), 40)
	if err != nil {
		return err
	}
	p.Add(h)
	return p.Save(6*vg.Inch, 4*vg.Inch, path)
}
