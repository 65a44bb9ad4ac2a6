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
		Jitter: 0.2, QoS: 1, Duration: 3 * time.Second, IDPrefix: "esp", Executable: exe}
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
	if res.Telemetry < 20*8 || res.Pubacks < res.Telemetry || res.Commands != 20 {
		t.Fatalf("telemetry %d pubacks %d commands %d", res.Telemetry, res.Pubacks, res.Commands)
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
