package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
)

// mqttLogin connects to addr with a 3.1.1 CONNECT and returns the CONNACK
// return code.
func mqttLogin(t *testing.T, addr, user, pass string) uint8 {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := codec.Connect{ProtocolName: []byte("MQTT"), Version: codec.V311, CleanStart: true, ClientID: []byte("r"),
		UsernameFlag: true, Username: []byte(user), PasswordFlag: true, Password: []byte(pass)}
	if _, err := c.Write(p.AppendTo(nil)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4)
	if _, err := c.Read(buf); err != nil || buf[0] != 0x20 {
		t.Fatalf("no CONNACK: % x %v", buf, err)
	}
	return buf[3]
}

// TestSIGHUPReloads runs the real binary (this test binary re-executed as
// main) with a password file and ACL file, edits them, and sends SIGHUP: a
// new user gets in; a broken ACL file is logged with its file and line and
// the broker keeps running.
func TestSIGHUPReloads(t *testing.T) {
	if os.Getenv("TINYMQ_TEST_MAIN") == "1" {
		if err := run(nil, os.Stderr, nil); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	dir := t.TempDir()
	pw, acl := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
	var out bytes.Buffer
	if code := passwdMain([]string{"-c", "-b", pw, "alice", "alice-pw"}, nil, &out, &out); code != 0 {
		t.Fatalf("tinymq passwd: %d %s", code, out.String())
	}
	if err := os.WriteFile(acl, []byte("user alice\ntopic readwrite #\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSIGHUPReloads$")
	cmd.Env = append(os.Environ(), "TINYMQ_TEST_MAIN=1", "TINYMQ_MQTT_ADDR=127.0.0.1:0", "TINYMQ_HTTP_ADDR=",
		"TINYMQ_SYS_INTERVAL=0s", "TINYMQ_PASSWORD_FILE="+pw, "TINYMQ_ACL_FILE="+acl)
	var logs syncBuf
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	waitLog := func(re *regexp.Regexp) []string {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if m := re.FindStringSubmatch(logs.String()); m != nil {
				return m
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %q in logs:\n%s", re, logs.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	addr := waitLog(regexp.MustCompile(`listener=mqtt addr=(127\.0\.0\.1:[0-9]+)`))[1]
	if rc := mqttLogin(t, addr, "alice", "alice-pw"); rc != 0 {
		t.Fatalf("alice: CONNACK %d", rc)
	}
	if rc := mqttLogin(t, addr, "bob", "bob-pw"); rc != codec.ConnRefusedNotAuthorized {
		t.Fatalf("bob before reload: CONNACK %d; want 5", rc)
	}
	if code := passwdMain([]string{"-b", pw, "bob", "bob-pw"}, nil, &out, &out); code != 0 {
		t.Fatalf("tinymq passwd: %d %s", code, out.String())
	}
	_ = cmd.Process.Signal(syscall.SIGHUP)
	waitLog(regexp.MustCompile(`password file reloaded.*users=2`))
	if rc := mqttLogin(t, addr, "bob", "bob-pw"); rc != 0 {
		t.Fatalf("bob after reload: CONNACK %d", rc)
	}

	if err := os.WriteFile(acl, []byte("user alice\ntopic readwrite #\nbogus line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Process.Signal(syscall.SIGHUP)
	waitLog(regexp.MustCompile(`reload failed; the previous settings stay in force.*` + regexp.QuoteMeta(acl) + `:3`))
	if rc := mqttLogin(t, addr, "alice", "alice-pw"); rc != 0 {
		t.Fatalf("alice after a failed reload: CONNACK %d", rc)
	}
	if strings.Contains(logs.String(), "shutting down") {
		t.Fatalf("the broker stopped on SIGHUP:\n%s", logs.String())
	}
}
