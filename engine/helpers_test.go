package engine

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
)

// startBroker runs a broker on a random loopback port and stops it when the
// test ends. edit may change the options first.
func startBroker(t testing.TB, edit func(*Options)) *Broker {
	t.Helper()
	o := DefaultOptions()
	o.MQTTAddr = "127.0.0.1:0"
	o.HTTPAddr = "" // tests that need HTTP ask for a free port (startHTTPBroker)
	o.Loops = 2
	o.SysInterval = -1
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if edit != nil {
		edit(&o)
	}
	b, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := b.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return b
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rawClient is a byte-level MQTT client for protocol edge cases.
type rawClient struct {
	t   testing.TB
	c   net.Conn
	r   *bufio.Reader
	ver codec.Version
}

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawClient{t: t, c: c, r: bufio.NewReader(c), ver: codec.V311}
}

func (rc *rawClient) write(b []byte) {
	rc.t.Helper()
	if _, err := rc.c.Write(b); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

// readPacket reads one whole packet within d; ok is false on timeout or
// close (err says which).
func (rc *rawClient) readPacket(d time.Duration) (h codec.FixedHeader, body []byte, err error) {
	_ = rc.c.SetReadDeadline(time.Now().Add(d))
	var hdr []byte
	for {
		b, err := rc.r.ReadByte()
		if err != nil {
			return h, nil, err
		}
		hdr = append(hdr, b)
		var n int
		h, n, err = codec.ReadFrame(hdr, 0)
		if err != nil {
			return h, nil, err
		}
		if n > 0 || h.HeaderLen > 0 {
			break
		}
	}
	body = make([]byte, h.Remaining)
	if _, err := io.ReadFull(rc.r, body); err != nil {
		return h, nil, err
	}
	return h, body, nil
}

// expectClosed waits for the broker to close the connection.
func (rc *rawClient) expectClosed(d time.Duration) {
	rc.t.Helper()
	_ = rc.c.SetReadDeadline(time.Now().Add(d))
	for {
		if _, err := rc.r.ReadByte(); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				rc.t.Fatalf("connection still open after %v", d)
			}
			return
		}
	}
}

// connect sends CONNECT and returns the CONNACK.
func (rc *rawClient) connect(p codec.Connect) codec.Connack {
	rc.t.Helper()
	if p.Version == 0 {
		p.Version = codec.V311
	}
	if p.ProtocolName == nil {
		p.ProtocolName = []byte("MQTT")
		if p.Version == codec.V31 {
			p.ProtocolName = []byte("MQIsdp")
		}
	}
	rc.ver = p.Version
	rc.write(p.AppendTo(nil))
	h, body, err := rc.readPacket(5 * time.Second)
	if err != nil {
		rc.t.Fatalf("reading CONNACK: %v", err)
	}
	if h.Type != codec.TypeConnack {
		rc.t.Fatalf("got %v; want CONNACK", h.Type)
	}
	var ack codec.Connack
	if err := ack.Decode(rc.ver, h, body); err != nil {
		rc.t.Fatalf("decoding CONNACK: %v", err)
	}
	return ack
}

// requireInterop skips the test when an external client is missing, unless
// TINYMQ_REQUIRE_INTEROP=1 (CI), where it fails instead.
func requireInterop(t *testing.T, bin string) string {
	t.Helper()
	p, err := exec.LookPath(bin)
	if err != nil {
		if os.Getenv("TINYMQ_REQUIRE_INTEROP") == "1" {
			t.Fatalf("%s not found and TINYMQ_REQUIRE_INTEROP=1", bin)
		}
		t.Skipf("%s not installed (apt-get install mosquitto-clients python3-paho-mqtt); skipping interop test", bin)
	}
	return p
}

// subscribe sends SUBSCRIBE and returns the SUBACK codes.
func (rc *rawClient) subscribe(id uint16, subs ...codec.Subscription) []codec.ReasonCode {
	rc.t.Helper()
	p := codec.Subscribe{PacketID: id, Subs: subs}
	rc.write(p.AppendTo(nil, rc.ver))
	h, body := rc.expect(codec.TypeSuback, 5*time.Second)
	var ack codec.Suback
	if err := ack.Decode(rc.ver, h, body); err != nil {
		rc.t.Fatalf("SUBACK: %v", err)
	}
	if ack.PacketID != id {
		rc.t.Fatalf("SUBACK id %d; want %d", ack.PacketID, id)
	}
	return ack.Reasons
}

// publish sends a PUBLISH (no wait for acknowledgements).
func (rc *rawClient) publish(topic string, payload string, qos uint8, retain bool, id uint16) {
	rc.t.Helper()
	p := codec.Publish{Topic: []byte(topic), Payload: []byte(payload), QoS: qos, Retain: retain, PacketID: id}
	rc.write(p.AppendTo(nil, rc.ver))
}

// expect reads the next packet and fails unless it has type t.
func (rc *rawClient) expect(t codec.Type, d time.Duration) (codec.FixedHeader, []byte) {
	rc.t.Helper()
	h, body, err := rc.readPacket(d)
	if err != nil {
		rc.t.Fatalf("waiting for %v: %v", t, err)
	}
	if h.Type != t {
		rc.t.Fatalf("got %v; want %v", h.Type, t)
	}
	return h, body
}

// expectPublish reads the next packet, which must be a PUBLISH, and returns
// an owned copy.
func (rc *rawClient) expectPublish(d time.Duration) codec.Publish {
	rc.t.Helper()
	h, body := rc.expect(codec.TypePublish, d)
	var p codec.Publish
	if err := p.Decode(rc.ver, h, body); err != nil {
		rc.t.Fatalf("PUBLISH: %v", err)
	}
	return p.Clone()
}

// expectNothing asserts that no packet arrives within d.
func (rc *rawClient) expectNothing(d time.Duration) {
	rc.t.Helper()
	h, _, err := rc.readPacket(d)
	if err == nil {
		rc.t.Fatalf("got %v; want nothing", h.Type)
	}
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		rc.t.Fatalf("connection failed while expecting nothing: %v", err)
	}
}

// connected dials and completes a 3.1.1 CONNECT with the given id.
func connected(t testing.TB, addr, id string, clean bool) *rawClient {
	t.Helper()
	rc := dialRaw(t, addr)
	ack := rc.connect(codec.Connect{ClientID: []byte(id), CleanStart: clean, KeepAlive: 60})
	if ack.ReturnCode != 0 {
		t.Fatalf("CONNACK return code %d", ack.ReturnCode)
	}
	return rc
}

// connectPacket is a clean-session 3.1.1 CONNECT; user and password are
// set when not empty.
func connectPacket(id, user, pass string) codec.Connect {
	p := codec.Connect{Version: codec.V311, CleanStart: true, ClientID: []byte(id), KeepAlive: 60}
	if user != "" {
		p.UsernameFlag, p.Username = true, []byte(user)
	}
	if pass != "" {
		p.PasswordFlag, p.Password = true, []byte(pass)
		if user == "" {
			p.UsernameFlag, p.Username = true, []byte("u") // 3.1.1: password needs a username
		}
	}
	return p
}
