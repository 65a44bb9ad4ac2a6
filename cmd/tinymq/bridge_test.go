package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tinymq/tinymq/bridge"
	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/engine"
)

// A bridge section copied from a mosquitto.conf works unchanged among
// "name = value" settings; '#' in a topic line is a wildcard, not a
// comment; settings after the section are still TinyMQ's.
func TestConfigBridgeSection(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tinymq.conf")
	conf := `# TinyMQ settings
max-connections = 10

# copied from mosquitto.conf
connection cloud
address 10.0.0.1:1883 10.0.0.2:1883
topic sensors/# out 1 edge/ site7/
topic cmd/# in 2
remote_clientid edge-7
cleansession true
bridge_protocol_version mqttv50

max-inflight = 7
`
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := parse([]string{"--config", file}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.opts.MaxConnections != 10 || cfg.opts.MaxInflight != 7 {
		t.Fatalf("settings around the section: %d %d", cfg.opts.MaxConnections, cfg.opts.MaxInflight)
	}
	if len(cfg.bridges) != 1 {
		t.Fatalf("%d bridges", len(cfg.bridges))
	}
	c := cfg.bridges[0]
	if c.Name != "cloud" || len(c.Addresses) != 2 || len(c.Topics) != 2 || c.Topics[0].LocalFilter() != "edge/sensors/#" ||
		c.Topics[1].Dir != bridge.In || c.RemoteClientID != "edge-7" || !c.CleanSession || c.ProtocolVersion != codec.V5 {
		t.Fatalf("bridge %+v", c)
	}
}

// Unknown or invalid keys fail the start with the file, line and reason.
func TestConfigBridgeErrors(t *testing.T) {
	for _, tc := range []struct{ conf, want string }{
		{"connection a\naddress h:1\ntopic x\nbridge_frobnicate true\n", `:4: unknown setting "bridge_frobnicate"`},
		{"connection a\naddress h:1\ntopic x out 7\n", `:3: topic: QoS "7"`},
		{"topic x\n", ":1: topic: bridge setting before any"},
		{"connection a\naddress h:1\n", "connection a: no topic"},
	} {
		file := filepath.Join(t.TempDir(), "tinymq.conf")
		if err := os.WriteFile(file, []byte(tc.conf), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := parse([]string{"--config", file}, env(nil))
		if err == nil || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v; want %s%s", tc.conf, err, file, tc.want)
		}
	}
}

// TestRunBridge: `tinymq --config` with a bridge section to another broker
// starts the bridge, and GET /api/v1/bridges shows it connected.
func TestRunBridge(t *testing.T) {
	o := engine.DefaultOptions()
	o.MQTTAddr, o.HTTPAddr, o.Loops, o.SysInterval = "127.0.0.1:0", "", 1, -1
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	remote, err := engine.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = remote.Stop(ctx)
	}()
	file := filepath.Join(t.TempDir(), "tinymq.conf")
	conf := "connection up\naddress " + remote.MQTTAddr() + "\ntopic # both 1\nrestart_timeout 0.1 0.5\n"
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs syncBuf
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- run([]string{"--config", file, "--mqtt-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--sys-interval", "0s"}, &logs, stop)
	}()
	defer func() {
		close(stop)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("run did not stop")
		}
	}()
	re := regexp.MustCompile(`listener=http addr=(127\.0\.0\.1:[0-9]+)`)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m := re.FindStringSubmatch(logs.String()); m != nil {
			var list struct{ Bridges []engine.BridgeInfo }
			if resp, err := http.Get("http://" + m[1] + "/api/v1/bridges"); err == nil {
				_ = json.NewDecoder(resp.Body).Decode(&list)
				resp.Body.Close()
			}
			if len(list.Bridges) == 1 && list.Bridges[0].State == "connected" && list.Bridges[0].Remote == remote.MQTTAddr() {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("bridge not connected; logs:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
