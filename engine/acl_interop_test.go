package engine

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/engine/auth"
	"github.com/tinymq/tinymq/internal/acltest"
	"github.com/tinymq/tinymq/internal/mosquittotest"
)

// writeAuthFiles writes the acltest fixture's password file (hashed with
// auth.HashPassword, the format mosquitto_passwd writes) and ACL file into
// dir, readable by Mosquitto's unprivileged user.
func writeAuthFiles(t *testing.T, dir string) (pwPath, aclPath string) {
	t.Helper()
	users := make([]string, 0, len(acltest.FixtureUsers))
	for u := range acltest.FixtureUsers {
		users = append(users, u)
	}
	sort.Strings(users)
	var pw strings.Builder
	for _, u := range users {
		h, err := auth.HashPassword([]byte(acltest.FixtureUsers[u]))
		if err != nil {
			t.Fatal(err)
		}
		pw.WriteString(u + ":" + h + "\n")
	}
	pwPath, aclPath = filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
	if err := os.WriteFile(pwPath, []byte(pw.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(aclPath, []byte(acltest.FixtureACL), 0o644); err != nil {
		t.Fatal(err)
	}
	return pwPath, aclPath
}

// TestInteropACLDecisionsMatchMosquitto runs the same password file, ACL
// file and probes (publish and receive as anonymous clients and users,
// patterns with %c and %u, denies, $SYS) through the real Mosquitto 2.0
// and through TinyMQ, and compares every decision, then the CONNACK codes
// for a wrong password, an unknown user and a good login.
func TestInteropACLDecisionsMatchMosquitto(t *testing.T) {
	mosquittotest.Require(t, "mosquitto")
	dir := t.TempDir()
	mosquittotest.Readable(t, dir)
	pwPath, aclPath := writeAuthFiles(t, dir)
	mosq := mosquittotest.Start(t, dir, "allow_anonymous true\npersistence false\npassword_file "+pwPath+"\nacl_file "+aclPath+"\n")
	yes := true
	b := startBroker(t, func(o *Options) {
		o.PasswordFile, o.ACLFile, o.AllowAnonymous = pwPath, aclPath, &yes
		o.SysInterval = 200 * time.Millisecond // $SYS probes need something to read
	})

	probes := make([]acltest.Probe, len(acltest.FixtureCases))
	for i, c := range acltest.FixtureCases {
		probes[i] = c.Probe
	}
	theirs := acltest.Run(t, mosq, acltest.PrivUser, acltest.PrivPass, probes)
	ours := acltest.Run(t, b.MQTTAddr(), acltest.PrivUser, acltest.PrivPass, probes)
	for i, c := range acltest.FixtureCases {
		if theirs[i] != ours[i] {
			t.Errorf("%v: mosquitto %v, tinymq %v (%s)", c.Probe, theirs[i], ours[i], c.Why)
		}
	}

	for _, c := range []struct {
		name, user, pass string
	}{
		{"wrong password", "alice", "nope"},
		{"unknown user", "mallory", "x"},
		{"good login", "alice", acltest.FixtureUsers["alice"]},
	} {
		var codes [2]uint8
		for i, addr := range []string{mosq, b.MQTTAddr()} {
			rc := dialRaw(t, addr)
			codes[i] = rc.connect(connectPacket("cmp-"+c.user, c.user, c.pass)).ReturnCode
		}
		if codes[0] != codes[1] {
			t.Errorf("%s: mosquitto CONNACK %d, tinymq %d", c.name, codes[0], codes[1])
		}
	}
}

// TestReloadAuthFiles: Reload swaps in new password and ACL files (a new
// user gets in, a removed one does not; an online subscriber's deliveries
// follow the new rules at once), and a broken file keeps the old one in
// force with its file, line and reason in the error.
func TestReloadAuthFiles(t *testing.T) {
	dir := t.TempDir()
	pwPath, aclPath := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
	writePw := func(users ...string) {
		t.Helper()
		var sb strings.Builder
		for _, u := range users {
			h, err := auth.HashPassword([]byte(u + "-pw"))
			if err != nil {
				t.Fatal(err)
			}
			sb.WriteString(u + ":" + h + "\n")
		}
		if err := os.WriteFile(pwPath, []byte(sb.String()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeACL := func(s string) {
		t.Helper()
		if err := os.WriteFile(aclPath, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writePw("alice", "bob")
	writeACL("user alice\ntopic readwrite x/#\nuser bob\ntopic write x/#\n")
	b := startBroker(t, func(o *Options) { o.PasswordFile, o.ACLFile = pwPath, aclPath })
	login := func(id, user string) (*rawClient, uint8) {
		rc := dialRaw(t, b.MQTTAddr())
		return rc, rc.connect(connectPacket(id, user, user+"-pw")).ReturnCode
	}
	sub, code := login("a1", "alice")
	if code != 0 {
		t.Fatalf("alice CONNACK %d", code)
	}
	sub.subscribe(1, codec.Subscription{Filter: []byte("x/#")})
	pub, code := login("b1", "bob")
	if code != 0 {
		t.Fatalf("bob CONNACK %d", code)
	}
	pub.publish("x/1", "before", 0, false, 0)
	if p := sub.expectPublish(5 * time.Second); string(p.Payload) != "before" {
		t.Fatalf("got %q", p.Payload)
	}

	// alice may no longer read x/secret; carol replaces bob.
	writeACL("user alice\ntopic readwrite x/#\ntopic deny x/secret\nuser bob\ntopic write x/#\nuser carol\ntopic write x/#\n")
	writePw("alice", "carol")
	if err := b.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	pub.publish("x/secret", "hidden", 0, false, 0)
	pub.publish("x/2", "after", 0, false, 0)
	if p := sub.expectPublish(5 * time.Second); string(p.Payload) != "after" {
		t.Fatalf("after reload alice got %q on %s; want only x/2", p.Payload, p.Topic)
	}
	if _, code := login("c1", "carol"); code != 0 {
		t.Fatalf("new user carol: CONNACK %d", code)
	}
	if _, code := login("b2", "bob"); code != codec.ConnRefusedNotAuthorized {
		t.Fatalf("removed user bob: CONNACK %d; want 5", code)
	}

	// A broken ACL file: the error says where; the old rules stay.
	writeACL("user alice\ntopik read x/#\n")
	err := b.Reload()
	if err == nil || !strings.Contains(err.Error(), aclPath+":2") {
		t.Fatalf("Reload of a broken file: %v; want an error naming %s:2", err, aclPath)
	}
	pub.publish("x/secret", "still hidden", 0, false, 0)
	pub.publish("x/3", "kept", 0, false, 0)
	if p := sub.expectPublish(5 * time.Second); string(p.Payload) != "kept" {
		t.Fatalf("after a failed reload alice got %q; the previous rules must stay in force", p.Payload)
	}
}

// A Mosquitto user keeps their files and clients: a password file made by
// the real mosquitto_passwd and an ACL file, used by mosquitto_pub and
// mosquitto_sub (username and password) and by Python paho-mqtt, through
// TinyMQ; a wrong password is refused with "not authorised".
func TestInteropMosquittoPasswdClients(t *testing.T) {
	passwd := requireInterop(t, "mosquitto_passwd")
	sub := requireInterop(t, "mosquitto_sub")
	pub := requireInterop(t, "mosquitto_pub")
	dir := t.TempDir()
	pw, acl := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run(t, ctx, passwd, "-c", "-b", pw, "sensor", "s3nsor")
	run(t, ctx, passwd, "-b", pw, "reader", "r3ader")
	if err := os.WriteFile(acl, []byte("user sensor\ntopic write sensor/#\nuser reader\ntopic read sensor/#\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := startBroker(t, func(o *Options) { o.PasswordFile, o.ACLFile = pw, acl })
	host, port := hostPort(t, b.MQTTAddr())
	wait := startCmd(t, ctx, sub, "-h", host, "-p", port, "-u", "reader", "-P", "r3ader", "-t", "sensor/#", "-C", "1", "-v", "-q", "1")
	waitFor(t, 5*time.Second, "mosquitto_sub subscribed", func() bool { return b.Stats().Subscriptions == 1 })
	// The reader may not publish (dropped, acknowledged); the sensor may.
	run(t, ctx, pub, "-h", host, "-p", port, "-u", "reader", "-P", "r3ader", "-t", "sensor/forged", "-m", "x", "-q", "1")
	run(t, ctx, pub, "-h", host, "-p", port, "-u", "sensor", "-P", "s3nsor", "-t", "sensor/temp", "-m", "24.5", "-q", "1")
	if out, err := wait(); err != nil || strings.TrimSpace(out) != "sensor/temp 24.5" {
		t.Fatalf("mosquitto_sub: %q %v", out, err)
	}
	out, err := exec.CommandContext(ctx, pub, "-h", host, "-p", port, "-u", "sensor", "-P", "wrong", "-t", "sensor/temp", "-m", "x").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not authorised") {
		t.Fatalf("wrong password: %v %q; want a refusal saying not authorised", err, out)
	}

	py := requireInterop(t, "/usr/bin/python3")
	script := `
import sys, paho.mqtt.client as mqtt
host, port = sys.argv[1], int(sys.argv[2])
got = []
def on_connect(c, u, f, rc):
    if rc != 0:
        print("connect rc", rc); sys.exit(2)
    c.subscribe("sensor/#", 1)
def on_subscribe(c, u, mid, granted):
    p = mqtt.Client("py-pub"); p.username_pw_set("sensor", "s3nsor"); p.connect(host, port)
    p.loop_start(); p.publish("sensor/py", "from-python", qos=1).wait_for_publish(); p.disconnect(); p.loop_stop()
def on_message(c, u, m):
    print(m.topic, m.payload.decode()); c.disconnect()
c = mqtt.Client("py-sub"); c.username_pw_set("reader", "r3ader")
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect(host, port); c.loop_forever()
`
	if out := run(t, ctx, py, "-c", script, host, port); strings.TrimSpace(out) != "sensor/py from-python" {
		t.Fatalf("paho-mqtt: %q", out)
	}
}

// mTLS identity feeds the ACL: with --tls-cert-as-username the verified
// certificate's CN is the username (the CONNECT's credentials are not
// checked, as Mosquitto's use_identity_as_username), so a device may
// publish on its own topic and not on another's, whatever username it
// claims; a plain-TCP client without credentials is refused when a
// password file is configured.
func TestTLSCertIdentityACL(t *testing.T) {
	ca := newTestCA(t, "fleet-ca")
	dir := t.TempDir()
	pw, acl := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
	h, err := auth.HashPassword([]byte("ops-pw"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pw, []byte("ops:"+h+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(acl, []byte("user ops\ntopic read devices/#\npattern write devices/%u/telemetry\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := startTLSBroker(t, ca, func(o *Options) {
		o.TLSClientCA, o.TLSRequireCert, o.TLSCertAsUsername = ca.File, true, true
		o.PasswordFile, o.ACLFile = pw, acl
	})
	ops := dialRaw(t, b.MQTTAddr())
	if ack := ops.connect(connectPacket("ops-1", "ops", "ops-pw")); ack.ReturnCode != 0 {
		t.Fatalf("ops CONNACK %d", ack.ReturnCode)
	}
	ops.subscribe(1, codec.Subscription{Filter: []byte("devices/#")})
	if ack := dialRaw(t, b.MQTTAddr()).connect(connectPacket("anon", "", "")); ack.ReturnCode != codec.ConnRefusedNotAuthorized {
		t.Fatalf("anonymous plain client: CONNACK %d; want 5", ack.ReturnCode)
	}

	dev := dialTLSRaw(t, b.TLSAddr(), clientTLS(ca, ca.issue("dev7", false).Pair))
	// It claims to be ops with no password: the certificate decides.
	if ack := dev.connect(connectPacket("dev7", "ops", "")); ack.ReturnCode != 0 {
		t.Fatalf("device CONNACK %d", ack.ReturnCode)
	}
	dev.publish("devices/dev8/telemetry", "forged", 1, false, 1)
	dev.expect(codec.TypePuback, 5*time.Second)
	dev.publish("devices/dev7/telemetry", "21.5", 1, false, 2)
	dev.expect(codec.TypePuback, 5*time.Second)
	if p := ops.expectPublish(5 * time.Second); string(p.Topic) != "devices/dev7/telemetry" {
		t.Fatalf("ops got %q; want only dev7's own topic", p.Topic)
	}
	found := false
	for _, c := range b.Clients() {
		if c.ClientID == "dev7" {
			found = c.Username == "dev7"
		}
	}
	if !found {
		t.Fatalf("dev7's username is not its certificate CN: %+v", b.Clients())
	}
}
