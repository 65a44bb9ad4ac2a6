package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tinymq/tinymq/engine"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseDefaults(t *testing.T) {
	cfg, err := parse(nil, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	d := engine.DefaultOptions()
	if cfg.opts.MQTTAddr != ":1883" || cfg.opts.MaxPacketSize != d.MaxPacketSize || cfg.opts.Auth != nil {
		t.Fatalf("defaults: %+v", cfg.opts)
	}
}

// Precedence: flag > environment > config file > default.
func TestParsePrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "tinymq.conf")
	conf := "# comment\nmax-connections = 10\nmax-inflight 7\nsys-interval = 30s\nmqtt-addr = :1999\n"
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := parse([]string{"--config", file, "--max-connections", "5"},
		env(map[string]string{"TINYMQ_MAX_INFLIGHT": "9", "TINYMQ_API_KEY": "k"}))
	if err != nil {
		t.Fatal(err)
	}
	o := cfg.opts
	if o.MaxConnections != 5 || o.MaxInflight != 9 || o.SysInterval != 30*time.Second || o.MQTTAddr != ":1999" {
		t.Fatalf("got conns=%d inflight=%d sys=%v addr=%s; want 5, 9, 30s, :1999", o.MaxConnections, o.MaxInflight, o.SysInterval, o.MQTTAddr)
	}
	if o.APIKey != "k" {
		t.Fatalf("TINYMQ_API_KEY not applied: %q", o.APIKey)
	}
}

func TestParseGatewayPort(t *testing.T) {
	cfg, err := parse(nil, env(map[string]string{"TINYMQ_MQTT_PORT": "2883"}))
	if err != nil || cfg.opts.MQTTAddr != ":2883" {
		t.Fatalf("TINYMQ_MQTT_PORT: %q %v", cfg.opts.MQTTAddr, err)
	}
	cfg, _ = parse([]string{"--mqtt-addr", "127.0.0.1:1"}, env(map[string]string{"TINYMQ_MQTT_PORT": "2883"}))
	if cfg.opts.MQTTAddr != "127.0.0.1:1" {
		t.Fatalf("flag must win over TINYMQ_MQTT_PORT: %q", cfg.opts.MQTTAddr)
	}
}

func TestParseErrors(t *testing.T) {
	for _, args := range [][]string{{"--max-connections", "x"}, {"stray"}, {"--nope"}} {
		if _, err := parse(args, env(nil)); err == nil {
			t.Fatalf("parse(%v) accepted", args)
		}
	}
	if _, err := parse(nil, env(map[string]string{"TINYMQ_MAX_INFLIGHT": "many"})); err == nil {
		t.Fatal("bad environment value accepted")
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// `--mqtt-addr 127.0.0.1:0` picks a free port and logs the real address.
func TestRunLogsListenerAddress(t *testing.T) {
	var logs syncBuf
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- run([]string{"--mqtt-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--sys-interval", "0s"}, &logs, stop)
	}()
	re := regexp.MustCompile(`listener=mqtt addr=127\.0\.0\.1:([0-9]+)`)
	deadline := time.Now().Add(5 * time.Second)
	for !re.MatchString(logs.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("no listener line in logs:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if m := re.FindStringSubmatch(logs.String()); m[1] == "0" {
		t.Fatal("logged port 0")
	}
	close(stop)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not stop")
	}
	if !strings.Contains(logs.String(), "stopped") {
		t.Fatalf("no stop line:\n%s", logs.String())
	}
}

// TestSignalShutdown runs the real binary (this test binary re-executed as
// main) and stops it with SIGTERM.
func TestSignalShutdown(t *testing.T) {
	if os.Getenv("TINYMQ_TEST_MAIN") == "1" {
		if err := run(nil, os.Stderr, nil); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSignalShutdown$")
	cmd.Env = append(os.Environ(), "TINYMQ_TEST_MAIN=1", "TINYMQ_MQTT_ADDR=127.0.0.1:0", "TINYMQ_HTTP_ADDR=127.0.0.1:0", "TINYMQ_SYS_INTERVAL=0s")
	var logs syncBuf
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "listener=mqtt") {
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("no listener line:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, logs.String())
		}
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("no exit after SIGTERM")
	}
	if !strings.Contains(logs.String(), "signal=terminated") || !strings.Contains(logs.String(), "stopped") {
		t.Fatalf("logs:\n%s", logs.String())
	}
}

// TestProfiles: --cpu-profile and --heap-profile leave pprof files (gzip
// data) behind after a run.
func TestProfiles(t *testing.T) {
	dir := t.TempDir()
	cpu, heap := filepath.Join(dir, "cpu.prof"), filepath.Join(dir, "heap.prof")
	var logs syncBuf
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- run([]string{"--mqtt-addr", "127.0.0.1:0", "--http-addr", "", "--sys-interval", "0s",
			"--cpu-profile", cpu, "--heap-profile", heap}, &logs, stop)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "tinymq started") {
		if time.Now().After(deadline) {
			t.Fatalf("not started:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	for _, f := range []string{cpu, heap} {
		b, err := os.ReadFile(f)
		if err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
			t.Fatalf("%s: %d bytes, %v; want a gzipped pprof profile", f, len(b), err)
		}
	}
}

func TestParseTLS(t *testing.T) {
	cfg, err := parse([]string{"--tls-cert", "c.pem", "--tls-key", "k.pem", "--proxy-protocol", "mqtt, tls"}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	o := cfg.opts
	if o.TLSAddr != ":8883" || o.TLSCert != "c.pem" || o.TLSKey != "k.pem" {
		t.Fatalf("--tls-cert without --tls-addr: addr %q cert %q key %q; want :8883", o.TLSAddr, o.TLSCert, o.TLSKey)
	}
	if len(o.ProxyProtocol) != 2 || o.ProxyProtocol[0] != "mqtt" || o.ProxyProtocol[1] != "tls" {
		t.Fatalf("--proxy-protocol: %q", o.ProxyProtocol)
	}
	cfg, err = parse([]string{"--tls-cert", "c.pem"}, env(map[string]string{"TINYMQ_TLS_ADDR": "127.0.0.1:0", "TINYMQ_TLS_REQUIRE_CERT": "true", "TINYMQ_TLS_HANDSHAKE_WORKERS": "3"}))
	if err != nil {
		t.Fatal(err)
	}
	if o := cfg.opts; o.TLSAddr != "127.0.0.1:0" || !o.TLSRequireCert || o.TLSHandshakeWorkers != 3 {
		t.Fatalf("env: addr %q require %v workers %d", o.TLSAddr, o.TLSRequireCert, o.TLSHandshakeWorkers)
	}
	cfg, _ = parse(nil, env(nil))
	if cfg.opts.TLSAddr != "" || cfg.opts.HTTPSAddr != "" {
		t.Fatalf("TLS listeners on by default: %q %q", cfg.opts.TLSAddr, cfg.opts.HTTPSAddr)
	}
}

// The MQTT 5 settings: flags, environment, config file (with Mosquitto's
// names), the command line's "0: none" for topic aliases, and clear errors.
func TestParseMQTT5(t *testing.T) {
	cfg, err := parse(nil, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	d := engine.DefaultOptions()
	if o := cfg.opts; o.MaxKeepAlive != d.MaxKeepAlive || o.ReceiveMaximum != d.ReceiveMaximum || o.MaxTopicAlias != d.MaxTopicAlias ||
		o.MaxTopicAliasOut != d.MaxTopicAliasOut || o.MaxSessionExpiry != 0 || o.ServerReference != "" || o.ServerMoved || o.ResponseInformation != "" {
		t.Fatalf("v5 defaults: %+v", o)
	}
	cfg, err = parse([]string{"--max-session-expiry", "1h", "--max-keepalive", "120", "--receive-maximum", "20",
		"--max-topic-alias", "0", "--max-topic-alias-out", "0", "--server-reference", "other:1883", "--server-moved",
		"--response-information", "resp/"}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	o := cfg.opts
	if o.MaxSessionExpiry != time.Hour || o.MaxKeepAlive != 120 || o.ReceiveMaximum != 20 || o.ServerReference != "other:1883" ||
		!o.ServerMoved || o.ResponseInformation != "resp/" {
		t.Fatalf("flags: %+v", o)
	}
	if o.MaxTopicAlias != -1 || o.MaxTopicAliasOut != -1 {
		t.Fatalf("--max-topic-alias 0 / --max-topic-alias-out 0: got %d, %d; want -1, -1 (none)", o.MaxTopicAlias, o.MaxTopicAliasOut)
	}
	cfg, err = parse(nil, env(map[string]string{"TINYMQ_RECEIVE_MAXIMUM": "7", "TINYMQ_MAX_TOPIC_ALIAS_OUT": "3", "TINYMQ_MAX_SESSION_EXPIRY": "90s"}))
	if err != nil {
		t.Fatal(err)
	}
	if o := cfg.opts; o.ReceiveMaximum != 7 || o.MaxTopicAliasOut != 3 || o.MaxSessionExpiry != 90*time.Second {
		t.Fatalf("env: receive %d alias-out %d expiry %v", o.ReceiveMaximum, o.MaxTopicAliasOut, o.MaxSessionExpiry)
	}

	// A config file mixing our names and Mosquitto's.
	file := filepath.Join(t.TempDir(), "tinymq.conf")
	conf := "max_keepalive 60\nmax_topic_alias 5\npersistent_client_expiration 2d\nallow_anonymous false\nreceive-maximum = 100\n"
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err = parse([]string{"--config", file}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	o = cfg.opts
	if o.MaxKeepAlive != 60 || o.MaxTopicAlias != 5 || o.SessionExpiry != 48*time.Hour || o.ReceiveMaximum != 100 ||
		o.AllowAnonymous == nil || *o.AllowAnonymous {
		t.Fatalf("config file: keepalive %d alias %d expiry %v receive %d anonymous %v", o.MaxKeepAlive, o.MaxTopicAlias, o.SessionExpiry, o.ReceiveMaximum, o.AllowAnonymous)
	}

	for _, tc := range []struct {
		args []string
		env  map[string]string
		conf string
		want string
	}{
		{args: []string{"--receive-maximum", "0"}, want: "0 out of range 1 to 65535"},
		{args: []string{"--receive-maximum", "65536"}, want: "65536 out of range 1 to 65535"},
		{args: []string{"--max-keepalive", "0"}, want: "max-keepalive: 0 out of range 1 to 65535"},
		{args: []string{"--max-topic-alias", "-1"}, want: "-1 out of range 0 to 65535"},
		{args: []string{"--max-topic-alias-out", "x"}, want: "not an integer"},
		{args: []string{"--max-session-expiry", "1.5s"}, want: "want whole seconds"},
		{args: []string{"--max-session-expiry", "-1s"}, want: "want whole seconds"},
		{args: []string{"--max-session-expiry", "5000000000s"}, want: "want whole seconds"},
		{args: []string{"--server-moved"}, want: "--server-moved needs --server-reference"},
		{env: map[string]string{"TINYMQ_MAX_KEEPALIVE": "70000"}, want: "TINYMQ_MAX_KEEPALIVE: max-keepalive: 70000 out of range"},
		{conf: "max_topic_alias 70000\n", want: ":1: max-topic-alias: 70000 out of range"},
		{conf: "persistent_client_expiration 3s\n", want: ":1: session-expiry: \"3s\": want a count and h, d, w, m or y"},
		{conf: "persistent_client_expiration -2d\n", want: "want a positive count"},
	} {
		args := tc.args
		if tc.conf != "" {
			if err := os.WriteFile(file, []byte(tc.conf), 0o600); err != nil {
				t.Fatal(err)
			}
			args = []string{"--config", file}
		}
		_, err := parse(args, env(tc.env))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parse(%v, env %v, conf %q): %v; want an error containing %q", tc.args, tc.env, tc.conf, err, tc.want)
		}
	}
}

// Mosquitto's expiration units, each once.
func TestMosquittoExpiration(t *testing.T) {
	for in, want := range map[string]time.Duration{"1h": time.Hour, "3d": 72 * time.Hour, "2w": 14 * 24 * time.Hour,
		"1m": 30 * 24 * time.Hour, "1y": 365 * 24 * time.Hour} {
		got, err := mosquittoExpiration(in)
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if d, _ := time.ParseDuration(got); d != want {
			t.Errorf("%s: got %s; want %v", in, got, want)
		}
	}
}

// TestParseWriteFlags: --write-coalesce is microseconds within 0..100000
// (flag or TINYMQ_WRITE_COALESCE), --write-each-read a switch; neither is
// on by default.
func TestParseWriteFlags(t *testing.T) {
	cfg, err := parse(nil, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.opts.WriteCoalesce != 0 || cfg.opts.WriteEachRead {
		t.Fatalf("defaults: coalesce %v, each read %v; want 0, false", cfg.opts.WriteCoalesce, cfg.opts.WriteEachRead)
	}
	cfg, err = parse([]string{"--write-coalesce", "250", "--write-each-read"}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.opts.WriteCoalesce != 250*time.Microsecond || !cfg.opts.WriteEachRead {
		t.Fatalf("coalesce %v, each read %v; want 250µs, true", cfg.opts.WriteCoalesce, cfg.opts.WriteEachRead)
	}
	cfg, err = parse(nil, env(map[string]string{"TINYMQ_WRITE_COALESCE": "1000"}))
	if err != nil || cfg.opts.WriteCoalesce != time.Millisecond {
		t.Fatalf("from the environment: %v, %v; want 1ms", cfg.opts.WriteCoalesce, err)
	}
	for _, v := range []string{"-1", "100001"} {
		if _, err := parse([]string{"--write-coalesce", v}, env(nil)); err == nil {
			t.Fatalf("--write-coalesce %s accepted", v)
		}
	}
}
