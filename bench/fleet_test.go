package bench

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/tinymq/tinymq/engine"
)

// TestFleetSmoke runs a small fleet against an in-process TinyMQ in worker
// processes: devices connect, publish telemetry and their retained status,
// receive commands, and leave "offline" behind when the run ends.
func TestFleetSmoke(t *testing.T) {
	b := startTinyMQ(t, nil)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	o := mqtt.NewClientOptions().AddBroker("tcp://" + b.MQTTAddr()).SetClientID("observer").SetAutoReconnect(false)
	obs := mqtt.NewClient(o)
	if tok := obs.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer obs.Disconnect(0)
	var mu sync.Mutex
	telemetry := map[string]int{}
	status := map[string]string{}
	obs.Subscribe("devices/#", 1, func(_ mqtt.Client, m mqtt.Message) {
		mu.Lock()
		defer mu.Unlock()
		parts := strings.Split(m.Topic(), "/")
		switch parts[2] {
		case "telemetry":
			telemetry[parts[1]]++
		case "status":
			status[parts[1]] = string(m.Payload())
		}
	}).WaitTimeout(5 * time.Second)

	cfg := FleetConfig{Addr: b.MQTTAddr(), Devices: 20, PerWorker: 10, Sources: 2, Telemetry: 200 * time.Millisecond,
		Jitter: 0.2, QoS: 1, Duration: 3 * time.Second, IDPrefix: "esp", Executable: exe, Consumers: 2, Commands: 20}
	// Send each device a command while the fleet runs.
	go func() {
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) {
			if b.Stats().Subscriptions >= 21 {
				for w := range 2 {
					for i := range 10 {
						obs.Publish("devices/esp-"+strconv.Itoa(w)+"-"+strconv.Itoa(i)+"/cmd", 1, false, "reboot")
					}
				}
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	res, err := RunFleet(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Workers != 2 || res.PeakConnected != 20 || res.Connects != 20 || res.Failures != 0 || res.Drops != 0 {
		t.Fatalf("result %+v; want 20 devices connected once by 2 workers", res.FleetCounters)
	}
	// Commands: 20 from the observer, about 20/s from 0.75 s to 2.25 s
	// from the backend; all devices are online then, so every one arrives.
	if res.Telemetry < 20*8 || res.Pubacks < res.Telemetry || res.Commands != 20+res.CommandsSent {
		t.Fatalf("telemetry %d pubacks %d commands %d (backend sent %d)", res.Telemetry, res.Pubacks, res.Commands, res.CommandsSent)
	}
	if res.CommandsSent < 20 || res.CommandsSent > 40 || res.CommandsAcked != res.CommandsSent || res.CommandsLost != 0 {
		t.Fatalf("backend commands: sent %d acked %d lost %d; want ~30, all acked, none lost", res.CommandsSent, res.CommandsAcked, res.CommandsLost)
	}
	if res.CommandP99us <= 0 || res.CommandMaxUs < res.CommandP50us {
		t.Fatalf("command latency p50 %v p99 %v max %v", res.CommandP50us, res.CommandP99us, res.CommandMaxUs)
	}
	// Telemetry: QoS 1 with no drops reaches the backend whole; each of the
	// two consumers gets every message.
	if res.TelemetryUnique != res.Telemetry || res.TelemetryLost != 0 || res.TelemetryDelivered < 2*res.Telemetry {
		t.Fatalf("backend telemetry: unique %d lost %d delivered %d; sent %d", res.TelemetryUnique, res.TelemetryLost, res.TelemetryDelivered, res.Telemetry)
	}
	if res.TelemetryP50us <= 0 || res.TelemetryP99us < res.TelemetryP50us || res.TelemetryPerS <= 0 {
		t.Fatalf("telemetry latency p50 %v p99 %v rate %v", res.TelemetryP50us, res.TelemetryP99us, res.TelemetryPerS)
	}
	if len(res.Series) < 2 {
		t.Fatalf("series has %d samples", len(res.Series))
	}
	if c := children(t); len(c) != 0 {
		t.Fatalf("worker processes left running: %v", c)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n, off := len(telemetry), 0
		for _, s := range status {
			if s == "offline" {
				off++
			}
		}
		mu.Unlock()
		if n == 20 && off == 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("observer saw telemetry from %d devices and %d offline statuses; want 20 and 20", n, off)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if b.Stats().Retained != 20 {
		t.Fatalf("retained statuses %d; want 20", b.Stats().Retained)
	}
}

// TestFleetReconnectsAfterDrop: devices whose connections are cut reconnect
// after the back-off, and the broker publishes their retained will.
func TestFleetReconnectsAfterDrop(t *testing.T) {
	b := startTinyMQ(t, func(o *engine.Options) { o.HTTPAddr = "127.0.0.1:0" })
	exe, _ := os.Executable()
	cfg := FleetConfig{Addr: b.MQTTAddr(), Devices: 5, Telemetry: 100 * time.Millisecond, Backoff: 300 * time.Millisecond,
		Duration: 3 * time.Second, IDPrefix: "drop", Executable: exe}
	go func() {
		// Stats().Connected counts sockets before their CONNECT is
		// handled: cut each device once its session holds the connection.
		left := map[int]bool{0: true, 1: true, 2: true, 3: true, 4: true}
		deadline := time.Now().Add(2 * time.Second)
		for len(left) > 0 && time.Now().Before(deadline) {
			for i := range left {
				if b.Disconnect("drop-0-"+strconv.Itoa(i), "test") {
					delete(left, i)
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	res, err := RunFleet(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Drops != 5 || res.Reconnects != 5 || res.Connects != 10 {
		t.Fatalf("drops %d reconnects %d connects %d; want 5, 5, 10", res.Drops, res.Reconnects, res.Connects)
	}
}

// TestFleetStorm: the storm cuts the chosen fraction of the fleet at once;
// those devices reconnect together after the back-off, the broker publishes
// their wills, and QoS 0 telemetry keeps flowing to the backend.
func TestFleetStorm(t *testing.T) {
	b := startTinyMQ(t, nil)
	exe, _ := os.Executable()
	cfg := FleetConfig{Addr: b.MQTTAddr(), Devices: 10, Telemetry: 100 * time.Millisecond, Backoff: 300 * time.Millisecond,
		Duration: 3 * time.Second, Storm: 0.4, StormAt: time.Second, IDPrefix: "storm", Executable: exe, Consumers: 1}
	res, err := RunFleet(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StormDrops != 4 || res.Drops != 4 || res.Reconnects != 4 || res.Connects != 14 || res.Failures != 0 {
		t.Fatalf("storm drops %d drops %d reconnects %d connects %d failures %d; want 4, 4, 4, 14, 0",
			res.StormDrops, res.Drops, res.Reconnects, res.Connects, res.Failures)
	}
	if res.FirstError != "" {
		t.Fatalf("a storm drop is not an error: %s", res.FirstError)
	}
	// Devices offline for 0.3 s send nothing then; a QoS 0 message in flight
	// at the cut may be lost, no more than one per dropped device.
	if res.TelemetryUnique < res.Telemetry-4 || res.TelemetryDuplicates != 0 {
		t.Fatalf("backend telemetry: unique %d of %d sent, %d duplicates", res.TelemetryUnique, res.Telemetry, res.TelemetryDuplicates)
	}
}

// TestFleetPubSubClientProfile: PubSubClient's defaults (keep-alive 15 s,
// QoS 0 only, 5 s back-off) and its QoS 0 will and status.
func TestFleetPubSubClientProfile(t *testing.T) {
	cfg := FleetConfig{Devices: 1, Profile: "pubsubclient"}
	if err := cfg.Normalize(); err != nil {
		t.Fatal(err)
	}
	if cfg.KeepAlive != 15 || cfg.Backoff != 5*time.Second || cfg.QoS != 0 {
		t.Fatalf("pubsubclient defaults: keep-alive %d back-off %v qos %d", cfg.KeepAlive, cfg.Backoff, cfg.QoS)
	}
	bad := FleetConfig{Devices: 1, Profile: "pubsubclient", QoS: 1}
	if err := bad.Normalize(); err == nil {
		t.Fatal("pubsubclient at QoS 1 accepted")
	}
	esp := FleetConfig{Devices: 1}
	if err := esp.Normalize(); err != nil || esp.KeepAlive != 120 || esp.Backoff != 10*time.Second || esp.Profile != "esp-mqtt" {
		t.Fatalf("esp-mqtt defaults: %+v %v", esp, err)
	}

	b := startTinyMQ(t, nil)
	exe, _ := os.Executable()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + b.MQTTAddr()).SetClientID("observer").SetAutoReconnect(false)
	obs := mqtt.NewClient(o)
	if tok := obs.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer obs.Disconnect(0)
	qos := make(chan byte, 100)
	obs.Subscribe("devices/+/status", 2, func(_ mqtt.Client, m mqtt.Message) { qos <- m.Qos() }).WaitTimeout(5 * time.Second)
	run := FleetConfig{Addr: b.MQTTAddr(), Devices: 3, Profile: "pubsubclient", Telemetry: 100 * time.Millisecond,
		Duration: time.Second, IDPrefix: "psc", Executable: exe, Consumers: 1}
	res, err := RunFleet(context.Background(), run, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Connects != 3 || res.Pubacks != 0 || res.Telemetry == 0 || res.TelemetryUnique != res.Telemetry {
		t.Fatalf("pubsubclient fleet: %+v unique %d", res.FleetCounters, res.TelemetryUnique)
	}
	for range 6 { // online and offline of each device, all at QoS 0
		select {
		case q := <-qos:
			if q != 0 {
				t.Fatalf("status published at QoS %d; PubSubClient publishes at QoS 0", q)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("status messages missing")
		}
	}
}
