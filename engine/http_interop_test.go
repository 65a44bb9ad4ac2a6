package engine

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The README's HTTP example: curl publishes with the API key, mosquitto_sub
// receives over MQTT.
func TestInteropCurlPublishToMosquittoSub(t *testing.T) {
	curl := requireInterop(t, "curl")
	sub := requireInterop(t, "mosquitto_sub")
	b := startHTTPBroker(t, func(o *Options) { o.APIKey = "k" })
	host, port := hostPort(t, b.MQTTAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	wait := startCmd(t, ctx, sub, "-h", host, "-p", port, "-u", "any", "-P", "k", "-t", "sensor/#", "-C", "1", "-v")
	waitFor(t, 5*time.Second, "mosquitto_sub subscribed", func() bool { return b.Stats().Subscriptions == 1 })
	out := run(t, ctx, curl, "-sS", "-X", "POST", "http://"+b.HTTPAddr()+"/publish/sensor/temp",
		"-H", "Authorization: Bearer k", "-d", "24.5")
	if !strings.Contains(out, `"status":"accepted"`) {
		t.Fatalf("curl: %s", out)
	}
	got, err := wait()
	if err != nil || strings.TrimSpace(got) != "sensor/temp 24.5" {
		t.Fatalf("mosquitto_sub: %q %v", got, err)
	}
}

// curl -N streams events published by mosquitto_pub.
func TestInteropCurlStream(t *testing.T) {
	curl := requireInterop(t, "curl")
	pub := requireInterop(t, "mosquitto_pub")
	b := startHTTPBroker(t, nil)
	host, port := hostPort(t, b.MQTTAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	wait := startCmd(t, ctx, curl, "-sSN", "--max-time", "4", "http://"+b.HTTPAddr()+"/stream/sensor/%23")
	waitFor(t, 5*time.Second, "curl streaming", func() bool { return b.Snapshot().Streams == 1 })
	run(t, ctx, pub, "-h", host, "-p", port, "-t", "sensor/temp", "-m", "24.5")
	out, _ := wait() // curl exits 28 at --max-time
	if !strings.Contains(out, "event: message") || !strings.Contains(out, `"topic":"sensor/temp","payload":"24.5"`) {
		t.Fatalf("curl stream output:\n%s", out)
	}
}

// nodeMQTT finds node and the npm "mqtt" package (make interop-deps puts it
// in ~/.cache/tinymq-node; TINYMQ_NODE_PATH overrides).
func nodeMQTT(t *testing.T) (node, modules string) {
	t.Helper()
	node = requireInterop(t, "node")
	modules = os.Getenv("TINYMQ_NODE_PATH")
	if modules == "" {
		home, _ := os.UserHomeDir()
		modules = filepath.Join(home, ".cache", "tinymq-node", "node_modules")
	}
	if _, err := os.Stat(filepath.Join(modules, "mqtt")); err != nil {
		requireInterop(t, "npm package mqtt in "+modules+" (run make interop-deps)")
	}
	return node, modules
}

// MQTT.js (npm mqtt) over WebSocket talks to a TCP client.
func TestInteropNodeMQTTOverWebSocket(t *testing.T) {
	node, modules := nodeMQTT(t)
	b := startHTTPBroker(t, nil)
	mqttJSRoundTrip(t, node, modules, b.MQTTAddr(), "ws://"+b.HTTPAddr()+"/mqtt", "")
}

// mqttJSRoundTrip runs MQTT.js against url (ws:// or wss://, trusting the
// CA file caFile when given): it subscribes to js/in and publishes to
// js/out at QoS 1; a paho client on the TCP listener tcpAddr receives
// that and answers on js/in, which MQTT.js must receive.
func mqttJSRoundTrip(t *testing.T, node, modules, tcpAddr, url, caFile string) {
	t.Helper()
	tcp := pahoClient(t, tcpAddr, "tcp", true)
	fromWS := pahoSubscribe(t, tcp, "js/out", 1)
	script := `
const fs = require('fs');
const mqtt = require('mqtt');
const opts = {clientId: 'mqttjs', protocolVersion: 4, reconnectPeriod: 0};
if (process.argv[3]) { opts.ca = fs.readFileSync(process.argv[3]); opts.rejectUnauthorized = true; }
const c = mqtt.connect(process.argv[2], opts);
c.on('connect', () => {
  c.subscribe('js/in', {qos: 1}, (err) => {
    if (err) { console.log('suberr', err.message); process.exit(1); }
    c.publish('js/out', 'hello from mqtt.js', {qos: 1});
  });
});
let done = false;
c.on('message', (t, p) => { console.log('got ' + t + ' ' + p.toString()); done = true; c.end(false, {}, () => process.exit(0)); });
c.on('error', (e) => { console.log('error ' + e.message); process.exit(done ? 0 : 1); });
setTimeout(() => { console.log('timeout'); process.exit(2); }, 10000);
`
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	js := filepath.Join(t.TempDir(), "mqttjs.js")
	if err := os.WriteFile(js, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, node, js, url, caFile)
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-fromWS:
		if m.payload != "hello from mqtt.js" || m.qos != 1 {
			t.Fatalf("tcp got %+v", m)
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("nothing from mqtt.js at %s:\n%s", url, out.String())
	}
	tcp.Publish("js/in", 1, false, "hello from tcp").WaitTimeout(5 * time.Second)
	if err := cmd.Wait(); err != nil || !strings.Contains(out.String(), "got js/in hello from tcp") {
		t.Fatalf("mqtt.js: %v\n%s", err, out.String())
	}
}

// Python paho-mqtt with transport="websockets" talks to a TCP client.
func TestInteropPythonPahoOverWebSocket(t *testing.T) {
	py := requirePython(t)
	b := startHTTPBroker(t, nil)
	host, port := hostPort(t, b.HTTPAddr())
	tcp := pahoClient(t, b.MQTTAddr(), "tcp", true)
	fromWS := pahoSubscribe(t, tcp, "py/out", 1)
	script := `
import sys, time
import paho.mqtt.client as mqtt
got = []
c = mqtt.Client(client_id="pyws", transport="websockets")
c.ws_set_options(path="/mqtt")
def on_connect(c, u, f, rc):
    c.subscribe("py/in", 1)
def on_subscribe(c, u, mid, q):
    c.publish("py/out", "hello from python", 1)
c.on_connect = on_connect
c.on_subscribe = on_subscribe
c.on_message = lambda c, u, m: got.append(m.topic + " " + m.payload.decode())
c.connect(sys.argv[1], int(sys.argv[2]), 30)
c.loop_start()
t = time.time()
while not got and time.time() - t < 10:
    time.sleep(0.02)
c.loop_stop()
print("\n".join(got) if got else "timeout")
`
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	wait := startCmd(t, ctx, py, "-c", script, host, port)
	if m := next(t, fromWS); m.payload != "hello from python" {
		t.Fatalf("tcp got %+v", m)
	}
	tcp.Publish("py/in", 1, false, "hello from tcp").WaitTimeout(5 * time.Second)
	out, err := wait()
	if err != nil || !strings.Contains(out, "py/in hello from tcp") {
		t.Fatalf("python paho over websocket: %v\n%s", err, out)
	}
}
