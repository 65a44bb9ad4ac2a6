package main

import (
	"context"
	"net"
	"regexp"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// startRun runs the command with args (a free MQTT port, no HTTP, no
// $SYS) until the test ends and returns the MQTT address it logged.
func startRun(t *testing.T, args ...string) string {
	t.Helper()
	mqtt, _ := startRunAt(t, "", args...)
	return mqtt
}

// startRunAt runs the command with args (a free MQTT port, HTTP on
// httpAddr, "" for none, no $SYS) until the test ends and returns the
// MQTT and HTTP addresses it logged.
func startRunAt(t *testing.T, httpAddr string, args ...string) (mqtt, http string) {
	t.Helper()
	var logs syncBuf
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- run(append([]string{"--mqtt-addr", "127.0.0.1:0", "--http-addr", httpAddr, "--sys-interval", "0s"}, args...), &logs, stop)
	}()
	t.Cleanup(func() {
		close(stop)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("run did not stop")
		}
	})
	reM := regexp.MustCompile(`listener=mqtt addr=(127\.0\.0\.1:[0-9]+)`)
	reH := regexp.MustCompile(`listener=http addr=(127\.0\.0\.1:[0-9]+)`)
	up := func() bool {
		return reM.MatchString(logs.String()) && (httpAddr == "" || reH.MatchString(logs.String()))
	}
	deadline := time.Now().Add(5 * time.Second)
	for !up() {
		select {
		case err := <-done:
			t.Fatalf("run ended: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no listener lines in logs:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	mqtt = reM.FindStringSubmatch(logs.String())[1]
	if httpAddr != "" {
		http = reH.FindStringSubmatch(logs.String())[1]
	}
	return mqtt, http
}

// connectV5 sends an MQTT 5 CONNECT through paho.golang and returns the
// CONNACK (and paho's error for a refusal).
func connectV5(t *testing.T, addr string, cp *paho.Connect) (*paho.Connack, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnClientError: func(error) {}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := c.Connect(ctx, cp)
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}); conn.Close() })
	return ack, err
}

// The MQTT 5 flags reach the broker: a v5 client sees them in CONNACK.
func TestRunMQTT5Flags(t *testing.T) {
	addr := startRun(t, "--max-keepalive", "30", "--receive-maximum", "20", "--max-topic-alias", "0",
		"--max-session-expiry", "60s", "--response-information", "resp/")
	expiry := uint32(3600)
	ack, err := connectV5(t, addr, &paho.Connect{ClientID: "cli5", CleanStart: true, KeepAlive: 600,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry, RequestResponseInfo: true}})
	if err != nil || ack == nil || ack.ReasonCode != 0 || ack.Properties == nil {
		t.Fatalf("connect: %v %+v", err, ack)
	}
	p := ack.Properties
	if p.ServerKeepAlive == nil || *p.ServerKeepAlive != 30 {
		t.Errorf("--max-keepalive 30: Server Keep Alive %v", p.ServerKeepAlive)
	}
	if p.ReceiveMaximum == nil || *p.ReceiveMaximum != 20 {
		t.Errorf("--receive-maximum 20: Receive Maximum %v", p.ReceiveMaximum)
	}
	if p.TopicAliasMaximum != nil && *p.TopicAliasMaximum != 0 {
		t.Errorf("--max-topic-alias 0: Topic Alias Maximum %d; want none", *p.TopicAliasMaximum)
	}
	if p.SessionExpiryInterval == nil || *p.SessionExpiryInterval != 60 {
		t.Errorf("--max-session-expiry 60s: Session Expiry Interval %v; want 60", p.SessionExpiryInterval)
	}
	if p.ResponseInfo != "resp/cli5" {
		t.Errorf("--response-information resp/: %q; want resp/cli5", p.ResponseInfo)
	}
}

// --server-reference with --server-moved refuses v5 clients with 0x9D and
// the reference; without --server-moved, 0x9C.
func TestRunServerReference(t *testing.T) {
	for _, tc := range []struct {
		args []string
		rc   byte
	}{
		{[]string{"--server-reference", "other.example:1883", "--server-moved"}, 0x9D},
		{[]string{"--server-reference", "other.example:1883"}, 0x9C},
	} {
		addr := startRun(t, tc.args...)
		ack, err := connectV5(t, addr, &paho.Connect{ClientID: "moved", CleanStart: true, KeepAlive: 30})
		if err == nil || ack == nil || ack.ReasonCode != tc.rc || ack.Properties == nil || ack.Properties.ServerReference != "other.example:1883" {
			t.Fatalf("%v: connect err %v, CONNACK %+v; want reason %#x with Server Reference other.example:1883", tc.args, err, ack, tc.rc)
		}
	}
}
