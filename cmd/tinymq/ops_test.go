package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.conf")
	if err := os.WriteFile(good, []byte("mqtt-addr = 127.0.0.1:0\nhttp-addr =\nconnection central\naddress 127.0.0.1:1\ntopic sensors/# out 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run([]string{"--check-config", "--config", good}, &out, nil); err != nil {
		t.Fatalf("good config: %v", err)
	}
	if !strings.Contains(out.String(), "configuration OK") || !strings.Contains(out.String(), "1 bridge(s)") {
		t.Fatalf("summary %q", out.String())
	}
	bad := filepath.Join(dir, "bad.conf")
	if err := os.WriteFile(bad, []byte("mqtt-addr = 127.0.0.1:0\n\nmax_inflight_bogus 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := run([]string{"--check-config", "--config", bad}, &out, nil)
	if err == nil || !strings.Contains(err.Error(), bad+":3") {
		t.Fatalf("bad config: %v; want the file and line", err)
	}
	err = run([]string{"--check-config", "--mqtt-addr", "127.0.0.1:0", "--password-file", filepath.Join(dir, "missing")}, &out, nil)
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing password file: %v", err)
	}
	pw := filepath.Join(dir, "passwd")
	if err := os.WriteFile(pw, []byte("alice:not-a-hash\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = run([]string{"--check-config", "--mqtt-addr", "127.0.0.1:0", "--password-file", pw}, &out, nil)
	if err == nil || !strings.Contains(err.Error(), pw) {
		t.Fatalf("bad password file: %v; want its name", err)
	}
}

func TestLogFormatJSON(t *testing.T) {
	var out bytes.Buffer
	l, err := newLogger(&out, "info", "json")
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hello", "client", "x")
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil || m["msg"] != "hello" || m["client"] != "x" {
		t.Fatalf("json log line %q: %v", out.String(), err)
	}
	if _, err := newLogger(&out, "info", "xml"); err == nil {
		t.Fatal("--log-format xml accepted")
	}
}
