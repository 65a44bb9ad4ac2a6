package engine

import (
	"bytes"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
)

func TestConnectAcceptedBytes(t *testing.T) {
	b := startBroker(t, nil)
	rc := dialRaw(t, b.MQTTAddr())
	rc.write((&codec.Connect{Version: codec.V311, CleanStart: true, ClientID: []byte("c1")}).AppendTo(nil))
	got := make([]byte, 4)
	_ = rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := rc.r.Read(got); err != nil || !bytes.Equal(got, []byte{0x20, 2, 0, 0}) {
		t.Fatalf("CONNACK % x (%v); want 20 02 00 00", got, err)
	}
}

func TestConnectMQTT31(t *testing.T) {
	b := startBroker(t, nil)
	rc := dialRaw(t, b.MQTTAddr())
	if ack := rc.connect(codec.Connect{Version: codec.V31, CleanStart: true, ClientID: []byte("old")}); ack.ReturnCode != 0 {
		t.Fatalf("3.1 CONNACK %d; want 0", ack.ReturnCode)
	}
	if codes := rc.subscribe(1, codec.Subscription{Filter: []byte("x"), QoS: 1}); len(codes) != 1 || codes[0] != 1 {
		t.Fatalf("SUBACK %v", codes)
	}
}

// [MQTT-3.1.0-1] The first packet must be CONNECT.
func TestConnectFirstPacketMustBeConnect(t *testing.T) {
	b := startBroker(t, nil)
	rc := dialRaw(t, b.MQTTAddr())
	rc.write(codec.AppendPingreq(nil))
	rc.expectClosed(5 * time.Second)
	waitFor(t, 2*time.Second, "malformed counter", func() bool { return b.Stats().Malformed == 1 })
}

// [MQTT-3.1.0-2] A second CONNECT is a protocol violation.
func TestConnectSecondConnectCloses(t *testing.T) {
	b := startBroker(t, nil)
	rc := connected(t, b.MQTTAddr(), "twice", true)
	rc.write((&codec.Connect{Version: codec.V311, CleanStart: true, ClientID: []byte("twice")}).AppendTo(nil))
	rc.expectClosed(5 * time.Second)
}

// [MQTT-3.1.2-2] Unsupported protocol level: CONNACK 0x01, then close.
func TestConnectUnsupportedLevel(t *testing.T) {
	b := startBroker(t, nil)
	rc := dialRaw(t, b.MQTTAddr())
	rc.write([]byte{0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 6, 0x02, 0, 0, 0, 0})
	h, body := rc.expect(codec.TypeConnack, 5*time.Second)
	if h.Remaining != 2 || body[1] != codec.ConnRefusedProtocolVersion {
		t.Fatalf("CONNACK % x; want return code 1", body)
	}
	rc.expectClosed(5 * time.Second)
}

func TestConnectEmptyClientID(t *testing.T) {
	b := startBroker(t, nil)
	rc := dialRaw(t, b.MQTTAddr())
	if ack := rc.connect(codec.Connect{CleanStart: true}); ack.ReturnCode != 0 {
		t.Fatalf("empty id + clean session: %d; want 0", ack.ReturnCode)
	}
	rc2 := dialRaw(t, b.MQTTAddr())
	if ack := rc2.connect(codec.Connect{CleanStart: false}); ack.ReturnCode != codec.ConnRefusedIdentifierRejected {
		t.Fatalf("empty id without clean session: %d; want 2", ack.ReturnCode)
	}
	rc2.expectClosed(5 * time.Second)
}

// [MQTT-3.1.3-9] A rejected client id gets CONNACK 2.
func TestConnectClientIDTooLong(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.MaxClientIDLen = 8 })
	rc := dialRaw(t, b.MQTTAddr())
	if ack := rc.connect(codec.Connect{CleanStart: true, ClientID: []byte("123456789")}); ack.ReturnCode != 2 {
		t.Fatalf("return code %d; want 2", ack.ReturnCode)
	}
}

func TestConnectAPIKey(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.Auth = APIKeyAuth{Key: []byte("secret")} })
	for _, c := range []struct {
		name       string
		user, pass []byte
		want       uint8
	}{
		{"no password", nil, nil, codec.ConnRefusedNotAuthorized},
		{"wrong password", []byte("u"), []byte("nope"), codec.ConnRefusedNotAuthorized},
		{"right password, any username", []byte("whoever"), []byte("secret"), codec.ConnAccepted},
	} {
		rc := dialRaw(t, b.MQTTAddr())
		ack := rc.connect(codec.Connect{CleanStart: true, ClientID: []byte("k"), Username: c.user, Password: c.pass})
		if ack.ReturnCode != c.want {
			t.Fatalf("%s: return code %d; want %d", c.name, ack.ReturnCode, c.want)
		}
		if c.want != 0 {
			rc.expectClosed(5 * time.Second)
		}
	}
	if b.Stats().AuthFailures != 2 {
		t.Fatalf("auth failures %d; want 2", b.Stats().AuthFailures)
	}
}

func TestConnectTimeout(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.ConnectTimeout = time.Second })
	rc := dialRaw(t, b.MQTTAddr())
	rc.expectClosed(5 * time.Second)
	if b.Stats().ConnectTimeouts != 1 {
		t.Fatalf("connect timeouts %d; want 1", b.Stats().ConnectTimeouts)
	}
}

// TestConnectTimeoutSlowCONNECT: a CONNECT trickling in a byte at a time
// does not hold the socket past the connect timeout (the clock runs from
// the open, not from the last byte).
func TestConnectTimeoutSlowCONNECT(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.ConnectTimeout = time.Second })
	rc := dialRaw(t, b.MQTTAddr())
	p := connectPacket("slow", "", "")
	raw := p.AppendTo(nil)
	start := time.Now()
	for i := 0; i < len(raw)-1; i++ { // never the last byte
		if _, err := rc.c.Write(raw[i : i+1]); err != nil {
			break // closed
		}
		if b.Stats().ConnectTimeouts == 1 {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	rc.expectClosed(10 * time.Second)
	if b.Stats().ConnectTimeouts != 1 {
		t.Fatalf("connect timeouts %d; want 1", b.Stats().ConnectTimeouts)
	}
	// 1 s timeout, plus up to clockLag of the coarse clock, plus a tick.
	if el := time.Since(start); el > 6*time.Second {
		t.Fatalf("closed after %v: the trickle extended the connect timeout", el)
	}
}

// [MQTT-3.1.4-2] A second connection with the same client id closes the
// first, whose will is published.
func TestConnectTakeover(t *testing.T) {
	b := startBroker(t, nil)
	watcher := connected(t, b.MQTTAddr(), "watcher", true)
	watcher.subscribe(1, codec.Subscription{Filter: []byte("status/#")})
	first := dialRaw(t, b.MQTTAddr())
	first.connect(codec.Connect{ClientID: []byte("dev"), CleanStart: true, WillFlag: true,
		WillTopic: []byte("status/dev"), WillPayload: []byte("offline")})
	second := connected(t, b.MQTTAddr(), "dev", true)
	first.expectClosed(5 * time.Second)
	if p := watcher.expectPublish(5 * time.Second); string(p.Payload) != "offline" {
		t.Fatalf("will payload %q", p.Payload)
	}
	second.write(codec.AppendPingreq(nil))
	second.expect(codec.TypePingresp, 5*time.Second)
}

// [MQTT-3.1.4-1] A malformed CONNECT closes the connection without CONNACK.
func TestConnectMalformedClosesWithoutConnack(t *testing.T) {
	b := startBroker(t, nil)
	rc := dialRaw(t, b.MQTTAddr())
	rc.write([]byte{0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x03, 0, 0, 0, 0}) // reserved flag set
	if h, _, err := rc.readPacket(5 * time.Second); err == nil {
		t.Fatalf("got %v; want the connection closed without CONNACK", h.Type)
	}
}

// [MQTT-3.1.2-9] A will topic must be a valid topic name.
func TestConnectWillTopicInvalid(t *testing.T) {
	b := startBroker(t, nil)
	rc := dialRaw(t, b.MQTTAddr())
	rc.write((&codec.Connect{Version: codec.V311, CleanStart: true, ClientID: []byte("w"), WillFlag: true,
		WillTopic: []byte("a/+"), WillPayload: []byte("x")}).AppendTo(nil))
	if h, _, err := rc.readPacket(5 * time.Second); err == nil {
		t.Fatalf("got %v; want the connection closed", h.Type)
	}
}
