package engine

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/engine/auth"
)

// MQTT 5 enhanced authentication: SCRAM-SHA-512 against a Mosquitto
// password file.

func scramBroker(t *testing.T) *Broker {
	t.Helper()
	h, err := auth.HashPasswordPBKDF2([]byte("s3cret"), 101)
	if err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(pw, []byte("alice:"+h+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return startBroker(t, func(o *Options) { o.PasswordFile = pw; o.AuthFailDelayMax = -1 })
}

// scramConnect runs the exchange in raw bytes and returns the client and
// CONNACK (the exchange's last server message verified).
func scramConnect(t *testing.T, addr, user, password string) (*rawClient, codec.Connack) {
	t.Helper()
	rc := dialRaw(t, addr)
	rc.ver = codec.V5
	sc := auth.NewSCRAMClient(user, password)
	p := codec.Connect{Version: codec.V5, CleanStart: true, ClientID: []byte("sc-" + user), KeepAlive: 60}
	p.Props.AuthMethod, p.Props.AuthData = []byte(auth.SCRAMMethod), sc.First()
	p.Props.Set(codec.PropAuthMethod)
	p.Props.Set(codec.PropAuthData)
	rc.write(p.AppendTo(nil))
	h, body := rc.expect(codec.TypeAuth, 5*time.Second)
	var a codec.Auth
	if err := a.Decode(codec.V5, h, body); err != nil || a.Reason != codec.ContinueAuthentication || string(a.Props.AuthMethod) != auth.SCRAMMethod {
		t.Fatalf("AUTH %+v %v", a, err)
	}
	final, err := sc.Step(a.Props.AuthData)
	if err != nil {
		t.Fatalf("client step: %v", err)
	}
	rc.write(auth5Packet(codec.ContinueAuthentication, final))
	h, body = rc.expect(codec.TypeConnack, 5*time.Second)
	var ack codec.Connack
	if err := ack.Decode(codec.V5, h, body); err != nil {
		t.Fatal(err)
	}
	if ack.Reason == codec.Success {
		if string(ack.Props.AuthMethod) != auth.SCRAMMethod {
			t.Fatalf("CONNACK without the authentication method: %+v", ack.Props)
		}
		if err := sc.Verify(ack.Props.AuthData); err != nil {
			t.Fatalf("server signature: %v", err)
		}
	}
	return rc, ack
}

func auth5Packet(rc codec.ReasonCode, data []byte) []byte {
	a := codec.Auth{Reason: rc}
	a.Props.AuthMethod, a.Props.AuthData = []byte(auth.SCRAMMethod), data
	a.Props.Set(codec.PropAuthMethod)
	a.Props.Set(codec.PropAuthData)
	return a.AppendTo(nil, codec.V5)
}

func TestV5SCRAM(t *testing.T) {
	b := scramBroker(t)
	rc, ack := scramConnect(t, b.MQTTAddr(), "alice", "s3cret")
	if ack.Reason != codec.Success {
		t.Fatalf("CONNACK %#x", ack.Reason)
	}
	// The identity is alice: it works like a password login.
	rc.subscribe(1, codec.Subscription{Filter: []byte("t")})

	// Re-authentication on the live connection.
	sc := auth.NewSCRAMClient("alice", "s3cret")
	rc.write(auth5Packet(codec.ReAuthenticate, sc.First()))
	h, body := rc.expect(codec.TypeAuth, 5*time.Second)
	var a codec.Auth
	if err := a.Decode(codec.V5, h, body); err != nil || a.Reason != codec.ContinueAuthentication {
		t.Fatalf("re-auth AUTH %+v %v", a, err)
	}
	final, err := sc.Step(a.Props.AuthData)
	if err != nil {
		t.Fatal(err)
	}
	rc.write(auth5Packet(codec.ContinueAuthentication, final))
	h, body = rc.expect(codec.TypeAuth, 5*time.Second)
	if err := a.Decode(codec.V5, h, body); err != nil || a.Reason != codec.Success || sc.Verify(a.Props.AuthData) != nil {
		t.Fatalf("re-auth end %+v %v", a, err)
	}

	// Wrong password: CONNACK 0x87, closed.
	bad, ack := scramConnect(t, b.MQTTAddr(), "alice", "nope")
	if ack.Reason != codec.NotAuthorized {
		t.Fatalf("wrong password: CONNACK %#x", ack.Reason)
	}
	bad.expectClosed(5 * time.Second)
	// Unknown user: the same answer.
	if _, ack := scramConnect(t, b.MQTTAddr(), "mallory", "s3cret"); ack.Reason != codec.NotAuthorized {
		t.Fatalf("unknown user: CONNACK %#x", ack.Reason)
	}
	if got := b.Stats().AuthFailures; got != 2 {
		t.Fatalf("auth failures %d; want 2", got)
	}
}

// [MQTT5-4.12.0-1] [MQTT5-4.12.1-1]
func TestV5AuthUnknownMethod(t *testing.T) {
	b := scramBroker(t)
	rc := dialRaw(t, b.MQTTAddr())
	p := codec.Connect{Version: codec.V5, CleanStart: true, ClientID: []byte("um")}
	p.Props.AuthMethod = []byte("KERBEROS")
	p.Props.Set(codec.PropAuthMethod)
	if ack := rc.connect(p); ack.Reason != codec.BadAuthenticationMethod {
		t.Fatalf("CONNACK %#x; want 0x8C", ack.Reason)
	}
	rc.expectClosed(5 * time.Second)

	// Re-authentication of a password login (no method at CONNECT): a
	// protocol error.
	pl, _ := connected5(t, b.MQTTAddr(), "pl", func(p *codec.Connect) {
		p.UsernameFlag, p.Username, p.PasswordFlag, p.Password = true, []byte("alice"), true, []byte("s3cret")
	})
	pl.write(auth5Packet(codec.ReAuthenticate, []byte("n,,n=alice,r=abc")))
	pl.expectDisconnect(codec.ProtocolError)
}

// scramAuther drives SCRAM for paho.golang.
type scramAuther struct {
	c    *auth.SCRAMClient
	done chan struct{}
}

func (s *scramAuther) Authenticate(a *paho.Auth) *paho.Auth {
	final, err := s.c.Step(a.Properties.AuthData)
	if err != nil {
		return nil
	}
	return &paho.Auth{ReasonCode: byte(codec.ContinueAuthentication), Properties: &paho.AuthProperties{AuthMethod: auth.SCRAMMethod, AuthData: final}}
}

func (s *scramAuther) Authenticated() { close(s.done) }

func TestV5SCRAMPaho(t *testing.T) {
	b := scramBroker(t)
	sa := &scramAuther{c: auth.NewSCRAMClient("alice", "s3cret"), done: make(chan struct{})}
	conn, err := net.DialTimeout("tcp", b.MQTTAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := paho.NewClient(paho.ClientConfig{Conn: conn, AuthHandler: sa, OnClientError: func(error) {}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: "paho-scram", CleanStart: true, KeepAlive: 30,
		Properties: &paho.ConnectProperties{AuthMethod: auth.SCRAMMethod, AuthData: sa.c.First()}})
	if err != nil || ack.ReasonCode != 0 {
		t.Fatalf("connect: %v %+v", err, ack)
	}
	select {
	case <-sa.done:
	case <-time.After(5 * time.Second):
		t.Fatal("Authenticated not called")
	}
	if err := sa.c.Verify(ack.Properties.AuthData); err != nil {
		t.Fatalf("server signature: %v", err)
	}
	_ = c.Disconnect(&paho.Disconnect{})
}
