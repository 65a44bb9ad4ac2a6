package bench

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Plots are SVG files drawn with gonum/plot, so that docs/benchmarks.md
// shows the run it reports without any tool outside this repository.

var brokerColors = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, // first broker (tinymq)
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
}

// PlotCompare writes compare-throughput.svg (delivered msgs/s and msgs per
// broker CPU-second per scenario and broker) and compare-latency.svg
// (p50, p99 and p99.9 per scenario and broker) into dir, and returns their
// paths.
func PlotCompare(dir string, rows []CompareRow, order []string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	names := make([]string, len(rows))
	for i, r := range rows {
		names[i] = r.Scenario
	}
	tp := []struct {
		title, unit string
		get         func(LoadResult) float64
	}{
		{"Delivered messages per second", "msgs/s", func(r LoadResult) float64 { return r.DeliveredPerS }},
		{"Messages per broker CPU-second", "msgs per CPU-s", func(r LoadResult) float64 { return r.PerBrokerCPU }},
	}
	var plots []*plot.Plot
	for _, f := range tp {
		p, err := groupedBars(f.title, f.unit, names, order, func(b string, i int) float64 { return f.get(rows[i].Results[b]) })
		if err != nil {
			return nil, err
		}
		plots = append(plots, p)
	}
	out1 := filepath.Join(dir, "compare-throughput.svg")
	if err := saveColumn(out1, plots, 9*vg.Inch, 5*vg.Inch); err != nil {
		return nil, err
	}
	plots = plots[:0]
	for _, q := range []struct {
		name string
		get  func(LoadResult) float64
	}{
		{"p50", func(r LoadResult) float64 { return r.P50us }},
		{"p99", func(r LoadResult) float64 { return r.P99us }},
		{"p99.9", func(r LoadResult) float64 { return r.P999us }},
	} {
		p, err := groupedBars("Latency "+q.name+" (µs, lower is better)", "µs", names, order,
			func(b string, i int) float64 { return q.get(rows[i].Results[b]) })
		if err != nil {
			return nil, err
		}
		plots = append(plots, p)
	}
	out2 := filepath.Join(dir, "compare-latency.svg")
	if err := saveColumn(out2, plots, 9*vg.Inch, 4.5*vg.Inch); err != nil {
		return nil, err
	}
	return []string{out1, out2}, nil
}

// groupedBars draws one bar group per scenario, one bar per broker.
func groupedBars(title, unit string, groups, brokers []string, value func(broker string, group int) float64) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = unit
	p.Legend.Top = true
	w := vg.Points(60 / float64(max(len(brokers), 1)))
	for k, b := range brokers {
		vals := make(plotter.Values, len(groups))
		for i := range groups {
			vals[i] = value(b, i)
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return nil, err
		}
		bars.LineStyle.Width = 0
		bars.Color = brokerColors[k%len(brokerColors)]
		bars.Offset = w * vg.Length(float64(k)-float64(len(brokers)-1)/2)
		p.Add(bars)
		p.Legend.Add(b, bars)
	}
	p.NominalX(groups...)
	if len(groups) > 4 { // the device shapes' long names: slanted, so they do not overlap
		p.X.Tick.Label.Rotation = math.Pi / 6
		p.X.Tick.Label.XAlign = draw.XRight
		p.X.Tick.Label.YAlign = draw.YCenter
	}
	p.Add(plotter.NewGrid())
	return p, nil
}

// FleetRun is one broker's fleet result, for plotting.
type FleetRun struct {
	Label  string
	Result FleetResult
}

// PlotFleet writes one SVG with two panels: connected devices over time,
// and broker RSS over time (when it was sampled), one line per run.
func PlotFleet(file string, runs []FleetRun) error {
	p1 := plot.New()
	p1.Title.Text = "Fleet: connected devices"
	p1.X.Label.Text = "seconds"
	p1.Y.Label.Text = "devices"
	p1.Add(plotter.NewGrid())
	p2 := plot.New()
	p2.Title.Text = "Fleet: broker RSS"
	p2.X.Label.Text = "seconds"
	p2.Y.Label.Text = "MiB"
	p2.Add(plotter.NewGrid())
	haveRSS := false
	for k, r := range runs {
		conn := make(plotter.XYs, len(r.Result.Series))
		rss := make(plotter.XYs, 0, len(r.Result.Series))
		for i, s := range r.Result.Series {
			conn[i] = plotter.XY{X: s.Seconds, Y: float64(s.Connected)}
			if s.BrokerRSS > 0 {
				rss = append(rss, plotter.XY{X: s.Seconds, Y: float64(s.BrokerRSS) / (1 << 20)})
			}
		}
		name := r.Label
		if name == "" {
			name = "broker"
		}
		for _, x := range []struct {
			p   *plot.Plot
			xys plotter.XYs
		}{{p1, conn}, {p2, rss}} {
			if len(x.xys) == 0 {
				continue
			}
			l, err := plotter.NewLine(x.xys)
			if err != nil {
				return err
			}
			l.Color = brokerColors[k%len(brokerColors)]
			l.Width = vg.Points(1.5)
			x.p.Add(l)
			x.p.Legend.Add(name, l)
			x.p.Legend.Top = true
		}
		haveRSS = haveRSS || len(rss) > 0
	}
	plots := []*plot.Plot{p1}
	if haveRSS {
		plots = append(plots, p2)
	}
	if dir := filepath.Dir(file); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return saveColumn(file, plots, 8*vg.Inch, 3*vg.Inch)
}

// saveColumn stacks plots vertically in one SVG.
func saveColumn(file string, plots []*plot.Plot, width, each vg.Length) error {
	c := vgsvg.New(width, each*vg.Length(len(plots)))
	dc := draw.New(c)
	t := draw.Tiles{Rows: len(plots), Cols: 1, PadX: vg.Millimeter, PadY: 2 * vg.Millimeter,
		PadTop: vg.Millimeter, PadBottom: vg.Millimeter, PadLeft: vg.Millimeter, PadRight: vg.Millimeter}
	grid := make([][]*plot.Plot, len(plots))
	for i, p := range plots {
		grid[i] = []*plot.Plot{p}
	}
	canvases := plot.Align(grid, t, dc)
	for i, p := range plots {
		p.Draw(canvases[i][0])
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("cannot write %s: %w", file, err)
	}
	return f.Close()
}
