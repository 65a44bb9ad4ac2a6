package bench

import (
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// validSVG checks that file is well-formed XML with an <svg> root and holds
// each of the given texts.
func validSVG(t *testing.T, file string, texts ...string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(strings.NewReader(string(b)))
	root := ""
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s is not well-formed: %v", file, err)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		t.Fatalf("%s: root element %q; want svg", file, root)
	}
	for _, s := range texts {
		if !strings.Contains(string(b), s) {
			t.Errorf("%s lacks %q", file, s)
		}
	}
}

func TestPlotCompare(t *testing.T) {
	rows := []CompareRow{
		{Scenario: "fanin", Results: map[string]LoadResult{"tinymq": {DeliveredPerS: 3e6, PerBrokerCPU: 3e6, P50us: 900, P99us: 5000, P999us: 9000}, "mosquitto": {DeliveredPerS: 7e4, PerBrokerCPU: 7e4, P50us: 3e5, P99us: 3.5e5, P999us: 3.7e5}}},
		{Scenario: "pairs", Results: map[string]LoadResult{"tinymq": {DeliveredPerS: 6e5}, "mosquitto": {DeliveredPerS: 2e4}}},
	}
	files, err := PlotCompare(t.TempDir(), rows, []string{"tinymq", "mosquitto"})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 {
		t.Fatalf("files %v", files)
	}
	validSVG(t, files[0], "Delivered messages per second", "mosquitto", "fanin", "pairs")
	validSVG(t, files[1], "Latency p99")
}

func TestPlotFleet(t *testing.T) {
	res := FleetResult{Series: []FleetSample{{Seconds: 1, Connected: 10, BrokerRSS: 10 << 20}, {Seconds: 2, Connected: 20, BrokerRSS: 12 << 20}}}
	f := filepath.Join(t.TempDir(), "img", "fleet.svg")
	if err := PlotFleet(f, []FleetRun{{"tinymq", res}, {"mosquitto", res}}); err != nil {
		t.Fatal(err)
	}
	validSVG(t, f, "connected devices", "broker RSS", "tinymq", "mosquitto")
}
