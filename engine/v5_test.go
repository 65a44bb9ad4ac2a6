package engine

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/tinymq/tinymq/codec"
)

// MQTT 5.0 through paho.golang, the Eclipse v5 client.

// v5c is a paho.golang client with its received messages.
type v5c struct {
	t     testing.TB
	c     *paho.Client
	ack   *paho.Connack
	msgs  chan *paho.Publish
	discs chan *paho.Disconnect
}

func dialV5(t testing.TB, addr string, cp *paho.Connect, edit func(*paho.ClientConfig)) (*v5c, error) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	v := &v5c{t: t, msgs: make(chan *paho.Publish, 1000), discs: make(chan *paho.Disconnect, 4)}
	cfg := paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			v.msgs <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) { v.discs <- d },
		OnClientError:      func(error) {},
	}
	if edit != nil {
		edit(&cfg)
	}
	v.c = paho.NewClient(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if cp.KeepAlive == 0 {
		cp.KeepAlive = 30
	}
	v.ack, err = v.c.Connect(ctx, cp)
	t.Cleanup(func() { _ = v.c.Disconnect(&paho.Disconnect{}); conn.Close() })
	return v, err
}

// connectV5 connects a v5 client or fails the test.
func connectV5(t testing.TB, addr, id string, cp *paho.Connect) *v5c {
	t.Helper()
	if cp == nil {
		cp = &paho.Connect{CleanStart: true}
	}
	cp.ClientID = id
	v, err := dialV5(t, addr, cp, nil)
	if err != nil {
		t.Fatalf("connect %s: %v (connack %+v)", id, err, v.ack)
	}
	return v
}

func (v *v5c) sub(filter string, qos byte, props *paho.SubscribeProperties, opts ...func(*paho.SubscribeOptions)) *paho.Suback {
	v.t.Helper()
	o := paho.SubscribeOptions{Topic: filter, QoS: qos}
	for _, f := range opts {
		f(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, err := v.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{o}, Properties: props})
	if err != nil && sa == nil {
		v.t.Fatalf("subscribe %s: %v", filter, err)
	}
	return sa
}

func (v *v5c) pub(p *paho.Publish) *paho.PublishResponse {
	v.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := v.c.Publish(ctx, p)
	if err != nil && r == nil {
		v.t.Fatalf("publish %s: %v", p.Topic, err)
	}
	return r
}

// next waits for the next message.
func (v *v5c) next(within time.Duration) *paho.Publish {
	v.t.Helper()
	select {
	case m := <-v.msgs:
		return m
	case <-time.After(within):
		v.t.Fatalf("no message within %v", within)
		return nil
	}
}

// none checks that no message arrives for a while (a negative check: the
// wait is the assertion's window, not a synchronisation).
func (v *v5c) none(within time.Duration) {
	v.t.Helper()
	select {
	case m := <-v.msgs:
		v.t.Fatalf("unexpected message %s %q", m.Topic, m.Payload)
	case <-time.After(within):
	}
}

func u32(v uint32) *uint32 { return &v }
func u16(v uint16) *uint16 { return &v }

// [MQTT5-3.2.2-16]
func TestV5ConnackProperties(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.MaxSessionExpiry = time.Hour; o.ResponseInformation = "resp/" })
	v := connectV5(t, b.MQTTAddr(), "", &paho.Connect{CleanStart: true, KeepAlive: 0,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(7200), RequestResponseInfo: true}})
	p := v.ack.Properties
	if v.ack.ReasonCode != 0 || p == nil {
		t.Fatalf("connack %+v", v.ack)
	}
	if p.AssignedClientID == "" {
		t.Error("no assigned client identifier for an empty client id")
	}
	if p.SessionExpiryInterval == nil || *p.SessionExpiryInterval != 3600 {
		t.Errorf("session expiry %v, want the 3600 s cap", p.SessionExpiryInterval)
	}
	if p.ReceiveMaximum == nil || *p.ReceiveMaximum != 1024 {
		t.Errorf("receive maximum %v", p.ReceiveMaximum)
	}
	if p.TopicAliasMaximum == nil || *p.TopicAliasMaximum != 10 {
		t.Errorf("topic alias maximum %v", p.TopicAliasMaximum)
	}
	if p.MaximumPacketSize == nil || *p.MaximumPacketSize != uint32(DefaultOptions().MaxPacketSize) {
		t.Errorf("maximum packet size %v", p.MaximumPacketSize)
	}
	if !p.RetainAvailable || !p.WildcardSubAvailable || !p.SubIDAvailable || !p.SharedSubAvailable {
		t.Errorf("availability flags %+v", p)
	}
	if p.ResponseInfo != "resp/"+p.AssignedClientID {
		t.Errorf("response information %q", p.ResponseInfo)
	}
	if p.ServerKeepAlive != nil {
		t.Errorf("server keep alive %d without a maximum", *p.ServerKeepAlive)
	}
}

// [MQTT5-3.2.2-21]
func TestV5ServerKeepAlive(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.MaxKeepAlive = 60 })
	v := connectV5(t, b.MQTTAddr(), "ka5", &paho.Connect{CleanStart: true, KeepAlive: 600})
	if ka := v.ack.Properties.ServerKeepAlive; ka == nil || *ka != 60 {
		t.Fatalf("server keep alive %v, want 60", ka)
	}
	// A 3.1.1 client asking for more is refused (CONNACK 2), as Mosquitto does.
	rc := dialRaw(t, b.MQTTAddr())
	rc.write((&codec.Connect{Version: codec.V311, CleanStart: true, KeepAlive: 600, ClientID: []byte("ka3")}).AppendTo(nil))
	_, body := rc.expect(codec.TypeConnack, 5*time.Second)
	if len(body) < 2 || body[1] != codec.ConnRefusedIdentifierRejected {
		t.Fatalf("3.1.1 keep-alive 600 over 60: CONNACK %x", body)
	}
}

// [MQTT5-3.3.2-4] [MQTT5-3.3.2-15] [MQTT5-3.3.2-16] [MQTT5-3.3.2-17] [MQTT5-3.3.2-18] [MQTT5-3.3.2-20]
// Properties travel unaltered, user properties in order, to v5 readers;
// a 3.1.1 reader gets the same message without them.
func TestV5PropertiesPassThrough(t *testing.T) {
	b := startBroker(t, nil)
	sub := connectV5(t, b.MQTTAddr(), "s5", nil)
	sub.sub("p/#", 2, nil)
	old := pahoClient(t, b.MQTTAddr(), "s3", true)
	got3 := make(chan []byte, 4)
	if tok := old.Subscribe("p/#", 1, func(_ mqtt.Client, m mqtt.Message) { got3 <- m.Payload() }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("3.1.1 subscribe: %v", tok.Error())
	}
	pub := connectV5(t, b.MQTTAddr(), "p5", nil)
	pf := byte(1)
	for _, qos := range []byte{0, 1, 2} {
		pub.pub(&paho.Publish{Topic: "p/x", QoS: qos, Payload: []byte("héllo"), Properties: &paho.PublishProperties{
			PayloadFormat: &pf, ContentType: "text/plain", ResponseTopic: "reply/here", CorrelationData: []byte{0, 1, 2},
			User: paho.UserProperties{{Key: "b", Value: "2"}, {Key: "a", Value: "1"}, {Key: "b", Value: "3"}},
		}})
		m := sub.next(5 * time.Second)
		p := m.Properties
		if m.QoS != qos || string(m.Payload) != "héllo" || p == nil {
			t.Fatalf("qos %d: got %+v", qos, m)
		}
		if p.PayloadFormat == nil || *p.PayloadFormat != 1 || p.ContentType != "text/plain" || p.ResponseTopic != "reply/here" || !bytes.Equal(p.CorrelationData, []byte{0, 1, 2}) {
			t.Errorf("qos %d: properties %+v", qos, p)
		}
		if len(p.User) != 3 || p.User[0] != (paho.UserProperty{Key: "b", Value: "2"}) || p.User[1] != (paho.UserProperty{Key: "a", Value: "1"}) || p.User[2] != (paho.UserProperty{Key: "b", Value: "3"}) {
			t.Errorf("qos %d: user properties %+v (order matters)", qos, p.User)
		}
		select {
		case pl := <-got3:
			if string(pl) != "héllo" {
				t.Errorf("3.1.1 reader got %q", pl)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("qos %d: 3.1.1 reader got nothing", qos)
		}
	}
	// And the other way: a 3.1.1 publisher to a v5 reader.
	if tok := old.Publish("p/old", 1, false, []byte("from 3.1.1")); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("3.1.1 publish: %v", tok.Error())
	}
	if m := sub.next(5 * time.Second); string(m.Payload) != "from 3.1.1" || m.Topic != "p/old" {
		t.Fatalf("v5 reader of a 3.1.1 publisher: %+v", m)
	}
}
