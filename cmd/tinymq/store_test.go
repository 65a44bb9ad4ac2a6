package main

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// startRunHTTP runs the command with args (free MQTT and HTTP ports, no
// $SYS) until the test ends and returns the MQTT and HTTP addresses it
// logged.
func startRunHTTP(t *testing.T, args ...string) (mqtt, http string) {
	t.Helper()
	return startRunAt(t, "127.0.0.1:0", args...)
}

// pahoClient connects with the API key k3y as password.
func pahoClient(t *testing.T, addr, id string, router paho.Router) *paho.Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, Router: router, OnClientError: func(error) {}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true,
		Username: "ops", UsernameFlag: true, Password: []byte("k3y"), PasswordFlag: true}); err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}); conn.Close() })
	return c
}

// tinymq store checkpoint NAME asks the running broker (through its HTTP
// API, with the API key from TINYMQ_API_KEY) for a checkpoint under
// --checkpoint-dir; `tinymq --data-dir` on it starts with the retained
// message published just before. The same name again fails with the
// broker's 409, a wrong key with 401, and usage errors exit 2.
func TestStoreCommandCheckpoint(t *testing.T) {
	dir, ckDir := t.TempDir(), t.TempDir()
	t.Setenv("TINYMQ_API_KEY", "k3y")
	mqttAddr, httpAddr := startRunHTTP(t, "--persistence=true", "--data-dir", dir, "--checkpoint-dir", ckDir,
		"--fsync", "interval", "--fsync-interval", "10s")
	pub := pahoClient(t, mqttAddr, "pub", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "r/cli", QoS: 1, Retain: true, Payload: []byte("kept")}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	env := func(k string) string {
		if k == "TINYMQ_API_KEY" {
			return "k3y"
		}
		return ""
	}
	api := "http://" + httpAddr
	var out, errb bytes.Buffer
	if rc := storeMain([]string{"checkpoint", "--api", api, "nightly"}, env, &out, &errb); rc != 0 {
		t.Fatalf("store checkpoint: exit %d: %s", rc, errb.String())
	}
	want := filepath.Join(ckDir, "nightly")
	if !strings.HasPrefix(out.String(), "checkpoint written: "+want+" (") {
		t.Fatalf("store checkpoint printed %q; want the directory %s", out.String(), want)
	}
	out.Reset()
	errb.Reset()
	if rc := storeMain([]string{"checkpoint", "--api", api, "nightly"}, env, &out, &errb); rc != 1 || !strings.Contains(errb.String(), "409") {
		t.Fatalf("second checkpoint with the same name: exit %d, %q; want 1 and the 409", rc, errb.String())
	}
	errb.Reset()
	wrong := func(k string) string {
		if k == "TINYMQ_API_KEY" {
			return "nope"
		}
		return ""
	}
	if rc := storeMain([]string{"compact", "--api", api}, wrong, &out, &errb); rc != 1 || !strings.Contains(errb.String(), "401") {
		t.Fatalf("compact with a wrong key: exit %d, %q; want 1 and the 401", rc, errb.String())
	}
	out.Reset()
	if rc := storeMain([]string{"compact", "--api", api}, env, &out, &errb); rc != 0 || !strings.HasPrefix(out.String(), "store compacted: ") {
		t.Fatalf("compact: exit %d, %q %q", rc, out.String(), errb.String())
	}
	for _, args := range [][]string{nil, {"backup"}, {"checkpoint", "a", "b"}, {"compact", "x"}, {"checkpoint", "--nope"}} {
		if rc := storeMain(args, env, &out, &errb); rc != 2 {
			t.Fatalf("store %v: exit %d; want 2 (usage)", args, rc)
		}
	}

	// A broker on the checkpoint.
	mqtt2, _ := startRunHTTP(t, "--persistence=true", "--data-dir", want, "--checkpoint-dir", t.TempDir())
	got := make(chan string, 4)
	r := paho.NewStandardRouterWithDefault(func(p *paho.Publish) { got <- p.Topic + "=" + string(p.Payload) })
	sub := pahoClient(t, mqtt2, "sub", r)
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "r/#", QoS: 1}}}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	select {
	case m := <-got:
		if m != "r/cli=kept" {
			t.Fatalf("retained on the checkpoint: %s; want r/cli=kept", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no retained message from the broker started on the checkpoint")
	}
}
