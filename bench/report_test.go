package bench

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/tinymq/tinymq/engine"
)

// TestRecordSchema pins the JSON line every scenario prints with --json.
func TestRecordSchema(t *testing.T) {
	var b bytes.Buffer
	id := NewRunID()
	err := WriteRecord(&b, Record{Run: id, Scenario: "fanin", Broker: "tinymq", BrokerVersion: "tinymq dev",
		Params: LoadConfig{Scenario: "fanin", Publishers: 3, QoS: 1}, Result: LoadResult{Delivered: 7, P99us: 12}})
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(b.Bytes(), []byte("\n")) != 1 {
		t.Fatalf("not one line: %q", b.String())
	}
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"run", "time", "scenario", "broker", "broker_version", "machine", "params", "result"} {
		if _, ok := m[k]; !ok {
			t.Errorf("missing %q in %s", k, b.String())
		}
	}
	mach := m["machine"].(map[string]any)
	if mach["cores"].(float64) < 1 || mach["kernel"] == "" || mach["go"] == "" {
		t.Errorf("machine %v", mach)
	}
	params := m["params"].(map[string]any)
	if params["Publishers"].(float64) != 3 || params["QoS"].(float64) != 1 {
		t.Errorf("params %v", params)
	}
	res := m["result"].(map[string]any)
	if res["delivered"].(float64) != 7 || res["latency_p99_us"].(float64) != 12 {
		t.Errorf("result %v", res)
	}
	if m["run"] != id || len(id) < 20 {
		t.Errorf("run id %v", m["run"])
	}
}

func TestBrokerVersionFromSys(t *testing.T) {
	b := startTinyMQ(t, func(o *engine.Options) { o.SysInterval = time.Hour; o.Version = "tinymq test-1" })
	if v := BrokerVersion(b.MQTTAddr(), 3*time.Second); v != "tinymq test-1" {
		t.Fatalf("version %q", v)
	}
	quiet := startTinyMQ(t, nil) // $SYS off: no answer, bounded wait
	start := time.Now()
	if v := BrokerVersion(quiet.MQTTAddr(), 300*time.Millisecond); v != "unknown" || time.Since(start) > 2*time.Second {
		t.Fatalf("version %q after %v", v, time.Since(start))
	}
}
