package engine

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/engine/store"
)

// mosquitto_sub -c (clean session 0) keeps its session across a broker
// restart: what was published while it was away, before and after the
// restart, arrives in order when it comes back; a retained message set
// before the restart is there for mosquitto_sub -r afterwards.
func TestPersistInteropMosquittoSubRestart(t *testing.T) {
	sub := requireInterop(t, "mosquitto_sub")
	pub := requireInterop(t, "mosquitto_pub")
	dir := t.TempDir()
	b := persistentBroker(t, dir, store.FsyncAlways, nil)
	host, port := hostPort(t, b.MQTTAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// First visit: the session and its subscription; leaves after one message.
	wait := startCmd(t, ctx, sub, "-h", host, "-p", port, "-c", "-i", "msub", "-q", "1", "-t", "ms/#", "-C", "1", "-v")
	waitFor(t, 5*time.Second, "mosquitto_sub subscribed", func() bool { return b.Stats().Subscriptions == 1 })
	run(t, ctx, pub, "-h", host, "-p", port, "-t", "ms/0", "-m", "hello", "-q", "1")
	if out, err := wait(); err != nil || strings.TrimSpace(out) != "ms/0 hello" {
		t.Fatalf("first visit: %q %v", out, err)
	}
	waitFor(t, 5*time.Second, "mosquitto_sub gone", func() bool { return b.Stats().Connected == 0 })
	for i := 1; i <= 3; i++ {
		run(t, ctx, pub, "-h", host, "-p", port, "-t", fmt.Sprintf("ms/%d", i), "-m", fmt.Sprintf("away-%d", i), "-q", "1")
	}
	run(t, ctx, pub, "-h", host, "-p", port, "-t", "mr/status", "-m", "kept", "-q", "1", "-r")
	stopBroker(t, b)

	b = persistentBroker(t, dir, store.FsyncAlways, nil)
	host, port = hostPort(t, b.MQTTAddr())
	pc := connected(t, b.MQTTAddr(), "pub", true)
	pc.publish("ms/4", "after-restart", 1, false, 1)
	pc.expect(codec.TypePuback, 5*time.Second)
	out := run(t, ctx, sub, "-h", host, "-p", port, "-c", "-i", "msub", "-q", "1", "-t", "ms/#", "-C", "4", "-v", "-W", "10")
	want := "ms/1 away-1\nms/2 away-2\nms/3 away-3\nms/4 after-restart"
	if strings.TrimSpace(out) != want {
		t.Fatalf("mosquitto_sub -c after the restart:\n%s\nwant:\n%s", out, want)
	}
	out = run(t, ctx, sub, "-h", host, "-p", port, "-t", "mr/#", "-C", "1", "-v", "-W", "5")
	if strings.TrimSpace(out) != "mr/status kept" {
		t.Fatalf("retained after the restart: %q", out)
	}
}

// paho.mqtt.golang (3.1.1, clean session false) finds its session and the
// messages queued for it after a restart.
func TestPersistPahoRestart(t *testing.T) {
	dir := t.TempDir()
	b := persistentBroker(t, dir, store.FsyncInterval, nil)
	c := pahoClient(t, b.MQTTAddr(), "paho-p", false)
	pahoSubscribe(t, c, "pp/#", 1)
	c.Disconnect(100)
	waitFor(t, 5*time.Second, "offline", func() bool { return b.Stats().Connected == 0 })
	p := pahoClient(t, b.MQTTAddr(), "paho-pub", true)
	for i := range 10 {
		if tok := p.Publish("pp/x", 1, false, fmt.Sprint(i)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	p.Disconnect(100)
	stopBroker(t, b)

	b = persistentBroker(t, dir, store.FsyncInterval, nil)
	got := make(chan received, 100)
	o := mqtt.NewClientOptions().AddBroker("tcp://" + b.MQTTAddr()).SetClientID("paho-p").SetCleanSession(false).
		SetAutoReconnect(false).SetConnectRetry(false).SetProtocolVersion(4).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			got <- received{m.Topic(), string(m.Payload()), m.Qos(), m.Retained()}
		})
	c = mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("paho reconnect: %v", tok.Error())
	}
	defer c.Disconnect(0)
	for i := range 10 {
		select {
		case m := <-got:
			if m.payload != fmt.Sprint(i) || m.qos != 1 {
				t.Fatalf("message %d after the restart: %+v", i, m)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("message %d never came after the restart", i)
		}
	}
}
