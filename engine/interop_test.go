package engine

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func hostPort(t *testing.T, addr string) (string, string) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return h, p
}

// startCmd starts an external client bounded by ctx; wait returns its
// combined output.
func startCmd(t *testing.T, ctx context.Context, name string, args ...string) func() (string, error) {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	return func() (string, error) { err := cmd.Wait(); return out.String(), err }
}

func run(t *testing.T, ctx context.Context, name string, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// The README's seed example: mosquitto_sub receives mosquitto_pub.
func TestInteropMosquittoPubSub(t *testing.T) {
	sub := requireInterop(t, "mosquitto_sub")
	pub := requireInterop(t, "mosquitto_pub")
	b := startBroker(t, nil)
	host, port := hostPort(t, b.MQTTAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	wait := startCmd(t, ctx, sub, "-h", host, "-p", port, "-t", "sensor/#", "-C", "1", "-v")
	waitFor(t, 5*time.Second, "mosquitto_sub subscribed", func() bool { return b.Stats().Subscriptions == 1 })
	run(t, ctx, pub, "-h", host, "-p", port, "-t", "sensor/temp", "-m", "24.5")
	out, err := wait()
	if err != nil || strings.TrimSpace(out) != "sensor/temp 24.5" {
		t.Fatalf("mosquitto_sub: %q %v", out, err)
	}
	// -q 1 -r retains: a later subscriber gets it.
	run(t, ctx, pub, "-h", host, "-p", port, "-t", "sensor/status", "-m", "online", "-q", "1", "-r")
	out = run(t, ctx, sub, "-h", host, "-p", port, "-t", "sensor/status", "-C", "1", "-v", "-W", "5")
	if strings.TrimSpace(out) != "sensor/status online" {
		t.Fatalf("retained: %q", out)
	}
	// QoS 2 end to end, and MQTT 3.1.
	waitFor(t, 5*time.Second, "earlier subscribers gone", func() bool { return b.Stats().Subscriptions == 0 })
	wait = startCmd(t, ctx, sub, "-h", host, "-p", port, "-t", "q/#", "-q", "2", "-C", "1", "-V", "mqttv31")
	waitFor(t, 5*time.Second, "second subscriber", func() bool { return b.Stats().Subscriptions == 1 })
	run(t, ctx, pub, "-h", host, "-p", port, "-t", "q/2", "-m", "exactly-once", "-q", "2")
	if out, err := wait(); err != nil || strings.TrimSpace(out) != "exactly-once" {
		t.Fatalf("QoS 2 / 3.1: %q %v", out, err)
	}
}

const pySubscriber = `
import sys, paho.mqtt.client as mqtt
port = int(sys.argv[1])
def on_connect(c, u, f, rc):
    c.subscribe("sensor/#")
def on_subscribe(c, u, mid, granted):
    print("subscribed", flush=True)
def on_message(c, u, msg):
    print(msg.topic, msg.payload.decode(), flush=True)
    c.disconnect()
c = mqtt.Client()
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect("127.0.0.1", port, 60)
c.loop_forever()
`

// The Python paho example from the README, against mosquitto_pub.
func TestInteropPythonPaho(t *testing.T) {
	py := requirePython(t)
	pub := requireInterop(t, "mosquitto_pub")
	b := startBroker(t, nil)
	host, port := hostPort(t, b.MQTTAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	wait := startCmd(t, ctx, py, "-c", pySubscriber, port)
	waitFor(t, 10*time.Second, "python subscribed", func() bool { return b.Stats().Subscriptions == 1 })
	run(t, ctx, pub, "-h", host, "-p", port, "-t", "sensor/temp", "-m", "24.5")
	out, err := wait()
	if err != nil || !strings.Contains(out, "sensor/temp 24.5") {
		t.Fatalf("python subscriber: %q %v", out, err)
	}
}

const pyTickTock = `
import sys, paho.mqtt.client as mqtt
port, me, other, first = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "1"
count = 0
def on_connect(c, u, f, rc):
    c.subscribe(me, qos=1)
def on_subscribe(c, u, mid, granted):
    if first:
        c.publish(other, "0", qos=1)
def on_message(c, u, msg):
    global count
    n = int(msg.payload)
    count += 1
    if n >= 10:
        print("done", n, flush=True)
        c.disconnect()
        return
    c.publish(other, str(n + 1), qos=1)
    if n + 1 >= 10:
        print("done", n + 1, flush=True)
        c.loop_write()
        c.disconnect()
c = mqtt.Client(client_id=me)
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect("127.0.0.1", port, 60)
c.loop_forever()
`

// Tick/tock: two Python clients bounce a counter through the broker.
func TestInteropPythonTickTock(t *testing.T) {
	py := requirePython(t)
	b := startBroker(t, nil)
	_, port := hostPort(t, b.MQTTAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tock := startCmd(t, ctx, py, "-c", pyTickTock, port, "tock", "tick", "0")
	waitFor(t, 10*time.Second, "tock subscribed", func() bool { return b.Stats().Subscriptions == 1 })
	tick := startCmd(t, ctx, py, "-c", pyTickTock, port, "tick", "tock", "1")
	for name, wait := range map[string]func() (string, error){"tick": tick, "tock": tock} {
		out, err := wait()
		if err != nil || !strings.Contains(out, "done 10") {
			t.Fatalf("%s: %q %v", name, out, err)
		}
	}
}

// requirePython returns Debian's python3 when it can import paho.
func requirePython(t *testing.T) string {
	t.Helper()
	const py = "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import paho.mqtt.client").Run(); err != nil {
		requireInterop(t, "python3-paho-mqtt (import paho.mqtt.client in /usr/bin/python3)")
	}
	return py
}
