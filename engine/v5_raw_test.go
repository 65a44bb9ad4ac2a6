package engine

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
)

// MQTT 5.0 edge cases in raw bytes.

// connected5 dials and completes a v5 CONNECT; edit may change it.
func connected5(t testing.TB, addr, id string, edit func(*codec.Connect)) (*rawClient, codec.Connack) {
	t.Helper()
	rc := dialRaw(t, addr)
	p := codec.Connect{Version: codec.V5, CleanStart: true, ClientID: []byte(id), KeepAlive: 60}
	if edit != nil {
		edit(&p)
	}
	ack := rc.connect(p)
	if ack.Reason != 0 {
		t.Fatalf("CONNACK reason %#x", ack.Reason)
	}
	return rc, ack
}

// expectDisconnect reads packets until a DISCONNECT and checks its reason
// code, then that the connection closes.
func (rc *rawClient) expectDisconnect(want codec.ReasonCode) {
	rc.t.Helper()
	for {
		h, body, err := rc.readPacket(5 * time.Second)
		if err != nil {
			rc.t.Fatalf("waiting for DISCONNECT %#x: %v", want, err)
		}
		if h.Type != codec.TypeDisconnect {
			continue
		}
		var d codec.Disconnect
		if err := d.Decode(codec.V5, h, body); err != nil {
			rc.t.Fatalf("DISCONNECT: %v", err)
		}
		if d.Reason != want {
			rc.t.Fatalf("DISCONNECT reason %#x (%s); want %#x", d.Reason, d.Props.ReasonString, want)
		}
		rc.expectClosed(5 * time.Second)
		return
	}
}

// expectAck reads the next packet, which must be an acknowledgement of
// type want, and decodes it at the client's protocol level.
func (rc *rawClient) expectAck(want codec.Type) codec.Ack {
	rc.t.Helper()
	h, body := rc.expect(want, 5*time.Second)
	var a codec.Ack
	if err := a.Decode(rc.ver, h, body); err != nil {
		rc.t.Fatal(err)
	}
	return a
}

func rawPub5(topic, payload string, qos uint8, id uint16, edit func(*codec.Publish)) []byte {
	p := codec.Publish{Topic: []byte(topic), Payload: []byte(payload), QoS: qos, PacketID: id}
	if edit != nil {
		edit(&p)
	}
	return p.AppendTo(nil, codec.V5)
}

// [MQTT5-4.13.1-1] [MQTT5-3.3.2-9] [MQTT5-3.8.3-4]: protocol errors are answered with their reason code.
func TestV5DisconnectReasons(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.MaxPacketSize = 1024 })
	addr := b.MQTTAddr()
	cases := []struct {
		name string
		send []byte
		want codec.ReasonCode
	}{
		{"second CONNECT", (&codec.Connect{Version: codec.V5, ClientID: []byte("x")}).AppendTo(nil), codec.ProtocolError},
		{"malformed length", []byte{0x30, 0xff, 0xff, 0xff, 0xff}, codec.MalformedPacket},
		{"packet too large", rawPub5("big", strings.Repeat("x", 2000), 0, 0, nil), codec.PacketTooLarge},
		{"topic alias above maximum", rawPub5("a", "x", 0, 0, func(p *codec.Publish) {
			p.Props.TopicAlias = 11
			p.Props.Set(codec.PropTopicAlias)
		}), codec.TopicAliasInvalid},
		{"unknown topic alias", rawPub5("", "x", 0, 0, func(p *codec.Publish) {
			p.Props.TopicAlias = 3
			p.Props.Set(codec.PropTopicAlias)
		}), codec.ProtocolError},
		{"QoS 0 payload not UTF-8", rawPub5("a", "\xff\xfe", 0, 0, func(p *codec.Publish) {
			p.Props.PayloadFormat = 1
			p.Props.Set(codec.PropPayloadFormat)
		}), codec.PayloadFormatInvalid},
		{"wildcard topic", rawPub5("a/+", "x", 0, 0, nil), codec.TopicNameInvalid},
		{"shared subscription with no local", (&codec.Subscribe{PacketID: 1, Subs: []codec.Subscription{{Filter: []byte("$share/g/a"), NoLocal: true}}}).AppendTo(nil, codec.V5), codec.ProtocolError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc, _ := connected5(t, addr, "d-"+strings.ReplaceAll(tc.name, " ", "-"), nil)
			rc.write(tc.send)
			rc.expectDisconnect(tc.want)
		})
	}
}

// [MQTT5-4.13.2-1]: the server says why it closes.
func TestV5DisconnectKeepAliveAndTakeover(t *testing.T) {
	b := startBroker(t, nil)
	addr := b.MQTTAddr()
	old, _ := connected5(t, addr, "twin", nil)
	connected5(t, addr, "twin", nil)
	old.expectDisconnect(codec.SessionTakenOver)

	idle, _ := connected5(t, addr, "idle", func(p *codec.Connect) { p.KeepAlive = 1 })
	idle.expectDisconnect(codec.KeepAliveTimeout)
}

// [MQTT5-4.13.2-1]
func TestV5DisconnectAdministrativeAndShutdown(t *testing.T) {
	b := startBroker(t, nil)
	rc, _ := connected5(t, b.MQTTAddr(), "kickme", nil)
	if !b.Disconnect("kickme", "test") {
		t.Fatal("Disconnect: not connected")
	}
	rc.expectDisconnect(codec.AdministrativeAction)

	b2 := startBroker(t, func(o *Options) { o.ServerReference = "" })
	rc2, _ := connected5(t, b2.MQTTAddr(), "bye", nil)
	go func() { _ = b2.Stop(t.Context()) }()
	rc2.expectDisconnect(codec.ServerShuttingDown)
}

func TestV5ServerReferenceRedirects(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.ServerReference = "other.example:1883"; o.ServerMoved = true })
	rc := dialRaw(t, b.MQTTAddr())
	ack := rc.connect(codec.Connect{Version: codec.V5, CleanStart: true, ClientID: []byte("r")})
	if ack.Reason != codec.ServerMoved || string(ack.Props.ServerReference) != "other.example:1883" {
		t.Fatalf("CONNACK %#x reference %q", ack.Reason, ack.Props.ServerReference)
	}
	rc3 := dialRaw(t, b.MQTTAddr())
	if ack := rc3.connect(codec.Connect{Version: codec.V311, CleanStart: true, ClientID: []byte("r3")}); ack.ReturnCode != codec.ConnRefusedServerUnavailable {
		t.Fatalf("3.1.1 CONNACK %d; want 3", ack.ReturnCode)
	}
}

// [MQTT5-3.11.3-1]: reason codes in PUBACK, PUBREC, SUBACK, UNSUBACK.
func TestV5AckReasonCodes(t *testing.T) {
	b := startBroker(t, nil)
	rc, _ := connected5(t, b.MQTTAddr(), "acks", nil)
	rc.write(rawPub5("nobody/here", "x", 1, 1, nil))
	if a := rc.expectAck(codec.TypePuback); a.Reason != codec.NoMatchingSubscribers {
		t.Fatalf("PUBACK without subscribers: %#x; want 0x10", a.Reason)
	}
	rc.write(rawPub5("nobody/here", "x", 2, 2, nil))
	if a := rc.expectAck(codec.TypePubrec); a.Reason != codec.NoMatchingSubscribers {
		t.Fatalf("PUBREC without subscribers: %#x; want 0x10", a.Reason)
	}
	rc.write(codec.AppendAck(nil, codec.TypePubrel, 2))
	rc.expectAck(codec.TypePubcomp)
	rc.write(rawPub5("bad/utf8", "\xff", 1, 3, func(p *codec.Publish) {
		p.Props.PayloadFormat = 1
		p.Props.Set(codec.PropPayloadFormat)
	}))
	if a := rc.expectAck(codec.TypePuback); a.Reason != codec.PayloadFormatInvalid {
		t.Fatalf("PUBACK for a bad UTF-8 payload: %#x; want 0x99", a.Reason)
	}
	if codes := rc.subscribe(4, codec.Subscription{Filter: []byte("a/#/b")}, codec.Subscription{Filter: []byte("ok/+"), QoS: 1}); len(codes) != 2 || codes[0] != codec.TopicFilterInvalid || codes[1] != 1 {
		t.Fatalf("SUBACK %v; want [0x8F 1]", codes)
	}
	rc.write(rawPub5("ok/1", "x", 1, 5, nil))
	if a := rc.expectAck(codec.TypePuback); a.Reason != codec.Success {
		t.Fatalf("PUBACK with a subscriber: %#x", a.Reason)
	}
	rc.expectPublish(5 * time.Second)
	rc.write((&codec.Unsubscribe{PacketID: 6, Filters: [][]byte{[]byte("ok/+"), []byte("never")}}).AppendTo(nil, codec.V5))
	h, body := rc.expect(codec.TypeUnsuback, 5*time.Second)
	var ua codec.Unsuback
	if err := ua.Decode(codec.V5, h, body); err != nil || len(ua.Reasons) != 2 || ua.Reasons[0] != codec.Success || ua.Reasons[1] != codec.NoSubscriptionExisted {
		t.Fatalf("UNSUBACK %v %v; want [0 0x11]", ua.Reasons, err)
	}
}

func TestV5SubackQuota(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.MaxSubsPerConn = 1 })
	rc, _ := connected5(t, b.MQTTAddr(), "quota", nil)
	codes := rc.subscribe(1, codec.Subscription{Filter: []byte("a")}, codec.Subscription{Filter: []byte("b")})
	if len(codes) != 2 || codes[0] != 0 || codes[1] != codec.QuotaExceeded {
		t.Fatalf("SUBACK %v; want [0 0x97]", codes)
	}
}

// [MQTT5-3.3.4-9]
// A v5 client's Receive Maximum bounds the QoS 1 messages in flight to it.
func TestV5ReceiveMaximumOutbound(t *testing.T) {
	b := startBroker(t, nil)
	sub, _ := connected5(t, b.MQTTAddr(), "slow", func(p *codec.Connect) {
		p.Props.ReceiveMaximum = 2
		p.Props.Set(codec.PropReceiveMaximum)
	})
	sub.subscribe(1, codec.Subscription{Filter: []byte("rm"), QoS: 1})
	pub, _ := connected5(t, b.MQTTAddr(), "fast", nil)
	for i := 1; i <= 5; i++ {
		pub.write(rawPub5("rm", "m", 1, uint16(i), nil))
	}
	p1 := sub.expectPublish(5 * time.Second)
	p2 := sub.expectPublish(5 * time.Second)
	sub.expectNothing(300 * time.Millisecond)
	sub.write(codec.AppendAck(nil, codec.TypePuback, p1.PacketID))
	p3 := sub.expectPublish(5 * time.Second)
	sub.expectNothing(300 * time.Millisecond)
	if p3.PacketID == p2.PacketID {
		t.Fatalf("packet id %d reused while in flight", p3.PacketID)
	}
}

// The broker's Receive Maximum: one QoS 2 message too many awaiting PUBREL
// is a DISCONNECT 0x93.
func TestV5ReceiveMaximumInbound(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.ReceiveMaximum = 3 })
	rc, ack := connected5(t, b.MQTTAddr(), "greedy", nil)
	if ack.Props.ReceiveMaximum != 3 {
		t.Fatalf("CONNACK receive maximum %d", ack.Props.ReceiveMaximum)
	}
	for i := 1; i <= 4; i++ {
		rc.write(rawPub5("q2", "x", 2, uint16(i), nil))
	}
	rc.expectDisconnect(codec.ReceiveMaximumExceeded)
}

// [MQTT5-3.1.2-24] [MQTT5-3.1.2-25]
// A message larger than the client's Maximum Packet Size is not sent to it
// and is counted; smaller ones still are.
func TestV5MaximumPacketSizeOutbound(t *testing.T) {
	b := startBroker(t, nil)
	sub, _ := connected5(t, b.MQTTAddr(), "small", func(p *codec.Connect) {
		p.Props.MaximumPacketSize = 64
		p.Props.Set(codec.PropMaximumPacketSize)
	})
	sub.subscribe(1, codec.Subscription{Filter: []byte("mp"), QoS: 1})
	pub, _ := connected5(t, b.MQTTAddr(), "big", nil)
	pub.write(rawPub5("mp", strings.Repeat("x", 100), 1, 1, nil))
	pub.write(rawPub5("mp", "fits", 1, 2, nil))
	p := sub.expectPublish(5 * time.Second)
	if string(p.Payload) != "fits" {
		t.Fatalf("got %q; the 100-byte message should have been dropped", p.Payload)
	}
	waitFor(t, 5*time.Second, "the drop counted", func() bool { return b.Stats().DroppedTooLarge == 1 })
}

// [MQTT5-3.3.2-12]
// Inbound topic aliases: set with a topic, used with an empty one.
func TestV5TopicAliasInbound(t *testing.T) {
	b := startBroker(t, nil)
	sub, _ := connected5(t, b.MQTTAddr(), "as", nil)
	sub.subscribe(1, codec.Subscription{Filter: []byte("alias/#")})
	pub, _ := connected5(t, b.MQTTAddr(), "ap", nil)
	withAlias := func(a uint16) func(*codec.Publish) {
		return func(p *codec.Publish) { p.Props.TopicAlias = a; p.Props.Set(codec.PropTopicAlias) }
	}
	pub.write(rawPub5("alias/one", "1", 0, 0, withAlias(1)))
	pub.write(rawPub5("", "2", 0, 0, withAlias(1)))
	pub.write(rawPub5("alias/two", "3", 0, 0, withAlias(1))) // replaces the mapping
	pub.write(rawPub5("", "4", 0, 0, withAlias(1)))
	for _, want := range []string{"alias/one 1", "alias/one 2", "alias/two 3", "alias/two 4"} {
		p := sub.expectPublish(5 * time.Second)
		if got := string(p.Topic) + " " + string(p.Payload); got != want {
			t.Fatalf("got %q; want %q", got, want)
		}
		if p.Props.Has(codec.PropTopicAlias) {
			t.Fatal("the publisher's alias was forwarded")
		}
	}
}

// [MQTT5-3.1.2-26] [MQTT5-3.3.2-11]
// Outbound topic aliases: within the client's maximum, the topic is sent
// once with the alias, then the alias alone; none when the maximum is 0.
func TestV5TopicAliasOutbound(t *testing.T) {
	b := startBroker(t, nil)
	sub, _ := connected5(t, b.MQTTAddr(), "aliased", func(p *codec.Connect) {
		p.Props.TopicAliasMaximum = 1
		p.Props.Set(codec.PropTopicAliasMaximum)
	})
	sub.subscribe(1, codec.Subscription{Filter: []byte("o/#")})
	plain, _ := connected5(t, b.MQTTAddr(), "plain", nil)
	plain.subscribe(1, codec.Subscription{Filter: []byte("o/#")})
	pub, _ := connected5(t, b.MQTTAddr(), "op", nil)
	for _, tp := range []string{"o/a", "o/a", "o/b", "o/a"} {
		pub.write(rawPub5(tp, "x", 0, 0, nil))
	}
	type got struct {
		topic string
		alias uint16
	}
	want := []got{{"o/a", 1}, {"", 1}, {"o/b", 0}, {"", 1}}
	for i, w := range want {
		p := sub.expectPublish(5 * time.Second)
		g := got{string(p.Topic), p.Props.TopicAlias}
		if g != w {
			t.Fatalf("message %d: got %+v; want %+v", i, g, w)
		}
	}
	for range want {
		if p := plain.expectPublish(5 * time.Second); p.Props.Has(codec.PropTopicAlias) || len(p.Topic) == 0 {
			t.Fatalf("alias sent to a client with Topic Alias Maximum 0: %+v", p)
		}
	}
}

// [MQTT5-3.3.4-3] [MQTT5-3.3.4-5]
// Subscription identifiers come with each matching PUBLISH; overlapping
// subscriptions with different identifiers give one copy each.
func TestV5SubscriptionIdentifiers(t *testing.T) {
	b := startBroker(t, nil)
	rc, _ := connected5(t, b.MQTTAddr(), "sids", nil)
	subWithID := func(pid uint16, filter string, id uint32) {
		p := codec.Subscribe{PacketID: pid, Subs: []codec.Subscription{{Filter: []byte(filter), QoS: 1}}}
		if id != 0 {
			p.Props.SubscriptionIDs = []uint32{id}
		}
		rc.write(p.AppendTo(nil, codec.V5))
		rc.expect(codec.TypeSuback, 5*time.Second)
	}
	subWithID(1, "s/+", 7)
	subWithID(2, "s/#", 300)
	pub, _ := connected5(t, b.MQTTAddr(), "sp", nil)
	pub.write(rawPub5("s/x", "x", 0, 0, nil))
	seen := map[uint32]bool{}
	for range 2 {
		p := rc.expectPublish(5 * time.Second)
		if len(p.Props.SubscriptionIDs) != 1 {
			t.Fatalf("subscription ids %v", p.Props.SubscriptionIDs)
		}
		seen[p.Props.SubscriptionIDs[0]] = true
	}
	if !seen[7] || !seen[300] {
		t.Fatalf("ids seen %v; want 7 and 300", seen)
	}
	rc.expectNothing(200 * time.Millisecond)
}

// [MQTT5-3.8.3-3] [MQTT5-3.3.1-12] [MQTT5-3.3.1-13]
// No Local, Retain As Published and Retain Handling.
func TestV5SubscriptionOptions(t *testing.T) {
	b := startBroker(t, nil)
	rc, _ := connected5(t, b.MQTTAddr(), "opts", nil)
	rc.subscribe(1, codec.Subscription{Filter: []byte("nl"), NoLocal: true})
	rc.write(rawPub5("nl", "mine", 0, 0, nil))
	rc.expectNothing(200 * time.Millisecond)

	rc.subscribe(2, codec.Subscription{Filter: []byte("rap/+"), RetainAsPublished: true})
	other, _ := connected5(t, b.MQTTAddr(), "other", nil)
	other.subscribe(1, codec.Subscription{Filter: []byte("rap/+")})
	rc.write(rawPub5("rap/1", "kept", 0, 0, func(p *codec.Publish) { p.Retain = true }))
	if p := rc.expectPublish(5 * time.Second); !p.Retain {
		t.Fatal("Retain As Published: RETAIN cleared")
	}
	if p := other.expectPublish(5 * time.Second); p.Retain {
		t.Fatal("live delivery without Retain As Published kept RETAIN")
	}

	// Retain handling: 0 always, 1 only for a new subscription, 2 never.
	rh, _ := connected5(t, b.MQTTAddr(), "rh", nil)
	rh.subscribe(1, codec.Subscription{Filter: []byte("rap/1"), RetainHandling: 2})
	rh.expectNothing(200 * time.Millisecond)
	rh.write((&codec.Unsubscribe{PacketID: 2, Filters: [][]byte{[]byte("rap/1")}}).AppendTo(nil, codec.V5))
	rh.expect(codec.TypeUnsuback, 5*time.Second)
	rh.subscribe(3, codec.Subscription{Filter: []byte("rap/1"), RetainHandling: 1})
	if p := rh.expectPublish(5 * time.Second); !p.Retain || string(p.Payload) != "kept" {
		t.Fatalf("retain handling 1, new subscription: %+v", p)
	}
	rh.subscribe(4, codec.Subscription{Filter: []byte("rap/1"), RetainHandling: 1})
	rh.expectNothing(200 * time.Millisecond)
	rh.subscribe(5, codec.Subscription{Filter: []byte("rap/1"), RetainHandling: 0})
	if p := rh.expectPublish(5 * time.Second); !p.Retain {
		t.Fatalf("retain handling 0: %+v", p)
	}
}

// [MQTT5-3.3.2-5] [MQTT5-3.3.2-6]
// Message expiry: forwarded with the time left; an expired queued or
// retained message is not delivered.
func TestV5MessageExpiry(t *testing.T) {
	b := startBroker(t, nil)
	expiring := func(secs uint32) func(*codec.Publish) {
		return func(p *codec.Publish) { p.Props.MessageExpiry = secs; p.Props.Set(codec.PropMessageExpiry) }
	}
	// Queued for an offline session: one expires, one does not.
	sub, _ := connected5(t, b.MQTTAddr(), "exp-sub", func(p *codec.Connect) {
		p.CleanStart = false
		p.Props.SessionExpiry = 60
		p.Props.Set(codec.PropSessionExpiry)
	})
	sub.subscribe(1, codec.Subscription{Filter: []byte("e/#"), QoS: 1})
	sub.write((&codec.Disconnect{}).AppendTo(nil, codec.V5))
	sub.expectClosed(5 * time.Second)
	pub, _ := connected5(t, b.MQTTAddr(), "exp-pub", nil)
	pub.write(rawPub5("e/short", "gone", 1, 1, expiring(1)))
	pub.write(rawPub5("e/long", "kept", 1, 2, expiring(100)))
	pub.write(rawPub5("e/retained", "r", 0, 0, func(p *codec.Publish) { p.Retain = true; expiring(1)(p) }))
	pub.write(rawPub5("e/forever", "f", 0, 0, func(p *codec.Publish) { p.Retain = true }))
	waitFor(t, 5*time.Second, "retained stored", func() bool { return b.Stats().Retained >= 2 })
	time.Sleep(2100 * time.Millisecond) // let the 1 s expiries pass (the clock is whole seconds)
	back, ack := connected5(t, b.MQTTAddr(), "exp-sub", func(p *codec.Connect) {
		p.CleanStart = false
		p.Props.SessionExpiry = 60
		p.Props.Set(codec.PropSessionExpiry)
	})
	if !ack.SessionPresent {
		t.Fatal("session not present")
	}
	p := back.expectPublish(5 * time.Second)
	if string(p.Payload) != "kept" {
		t.Fatalf("got %q; the expired message was delivered", p.Payload)
	}
	if !p.Props.Has(codec.PropMessageExpiry) || p.Props.MessageExpiry > 98 || p.Props.MessageExpiry < 90 {
		t.Fatalf("message expiry forwarded as %d (present %v); want the time left", p.Props.MessageExpiry, p.Props.Has(codec.PropMessageExpiry))
	}
	back.write(codec.AppendAck(nil, codec.TypePuback, p.PacketID))
	back.expectNothing(200 * time.Millisecond)
	fresh, _ := connected5(t, b.MQTTAddr(), "exp-new", nil)
	fresh.subscribe(1, codec.Subscription{Filter: []byte("e/#")})
	if r := fresh.expectPublish(5 * time.Second); string(r.Topic) != "e/forever" {
		t.Fatalf("retained %q; the expired retained message was delivered", r.Topic)
	}
	fresh.expectNothing(200 * time.Millisecond)
}

// [MQTT5-3.14.2-2]
// Session expiry: kept within the interval, gone after it; 0 ends with
// the connection; DISCONNECT may shorten it, not raise it from 0.
func TestV5SessionExpiry(t *testing.T) {
	b := startBroker(t, nil)
	withExpiry := func(secs uint32, clean bool) func(*codec.Connect) {
		return func(p *codec.Connect) {
			p.CleanStart = clean
			p.Props.SessionExpiry = secs
			p.Props.Set(codec.PropSessionExpiry)
		}
	}
	rc, _ := connected5(t, b.MQTTAddr(), "se", withExpiry(2, true))
	rc.write((&codec.Disconnect{}).AppendTo(nil, codec.V5))
	rc.expectClosed(5 * time.Second)
	if _, ack := connected5(t, b.MQTTAddr(), "se", withExpiry(2, false)); !ack.SessionPresent {
		t.Fatal("session gone within its expiry")
	}
	// (that connection is closed by the test's cleanup; reconnect again)
	rc2, ack := connected5(t, b.MQTTAddr(), "se", withExpiry(1, false))
	if !ack.SessionPresent {
		t.Fatal("session gone within its expiry (second resume)")
	}
	rc2.write((&codec.Disconnect{}).AppendTo(nil, codec.V5))
	rc2.expectClosed(5 * time.Second)
	time.Sleep(2100 * time.Millisecond) // past the 1 s expiry
	if _, ack := connected5(t, b.MQTTAddr(), "se", withExpiry(0, false)); ack.SessionPresent {
		t.Fatal("session present after its expiry")
	}

	// Expiry 0 in CONNECT, non-zero in DISCONNECT: protocol error.
	z, _ := connected5(t, b.MQTTAddr(), "zero", nil)
	d := codec.Disconnect{}
	d.Props.SessionExpiry = 30
	d.Props.Set(codec.PropSessionExpiry)
	z.write(d.AppendTo(nil, codec.V5))
	z.expectDisconnect(codec.ProtocolError)
}

// [MQTT5-3.1.3-9]
// Will delay: the will waits and is cancelled by a reconnection in time; a
// DISCONNECT with 0x04 publishes it.
func TestV5WillDelay(t *testing.T) {
	b := startBroker(t, nil)
	watcher, _ := connected5(t, b.MQTTAddr(), "watcher", nil)
	watcher.subscribe(1, codec.Subscription{Filter: []byte("will/#")})
	withWill := func(topic string, delay uint32) func(*codec.Connect) {
		return func(p *codec.Connect) {
			p.CleanStart = false
			p.Props.SessionExpiry = 60
			p.Props.Set(codec.PropSessionExpiry)
			p.WillFlag, p.WillTopic, p.WillPayload = true, []byte(topic), []byte("bye")
			p.WillProps.WillDelay = delay
			p.WillProps.Set(codec.PropWillDelay)
			p.WillProps.ContentType = []byte("text/plain")
			p.WillProps.Set(codec.PropContentType)
		}
	}
	// Dropped without DISCONNECT, back within the delay: no will.
	a, _ := connected5(t, b.MQTTAddr(), "wa", withWill("will/a", 2))
	a.c.Close()
	connected5(t, b.MQTTAddr(), "wa", withWill("will/a", 2))
	watcher.expectNothing(3 * time.Second)

	// Dropped and not back: the will comes after the delay, with its
	// properties.
	start := time.Now()
	c, _ := connected5(t, b.MQTTAddr(), "wc", withWill("will/c", 1))
	c.c.Close()
	p := watcher.expectPublish(5 * time.Second)
	if string(p.Topic) != "will/c" || string(p.Props.ContentType) != "text/plain" {
		t.Fatalf("will %q content type %q", p.Topic, p.Props.ContentType)
	}
	if el := time.Since(start); el < 900*time.Millisecond {
		t.Fatalf("will published after %v, before its 1 s delay", el)
	}

	// DISCONNECT 0x04: the will is published.
	d, _ := connected5(t, b.MQTTAddr(), "wd", withWill("will/d", 0))
	d.write((&codec.Disconnect{Reason: codec.DisconnectWithWill}).AppendTo(nil, codec.V5))
	if p := watcher.expectPublish(5 * time.Second); string(p.Topic) != "will/d" {
		t.Fatalf("will %q", p.Topic)
	}
	// A normal DISCONNECT discards it.
	e, _ := connected5(t, b.MQTTAddr(), "we", withWill("will/e", 0))
	e.write((&codec.Disconnect{}).AppendTo(nil, codec.V5))
	watcher.expectNothing(500 * time.Millisecond)
}

// [MQTT5-3.3.2-17] [MQTT5-3.3.2-15]
// Properties survive the retained store and the offline queue for v5
// readers, and a v3.1.1 reader gets the message without them.
func TestV5PropertiesStoredAndStripped(t *testing.T) {
	b := startBroker(t, nil)
	pub, _ := connected5(t, b.MQTTAddr(), "sp5", nil)
	pub.write(rawPub5("st/r", "v", 1, 1, func(p *codec.Publish) {
		p.Retain = true
		p.Props.User = []codec.UserProperty{{Key: []byte("k"), Value: []byte("v1")}, {Key: []byte("k"), Value: []byte("v2")}}
		p.Props.ResponseTopic = []byte("st/reply")
		p.Props.Set(codec.PropResponseTopic)
	}))
	pub.expect(codec.TypePuback, 5*time.Second)
	r5, _ := connected5(t, b.MQTTAddr(), "r5", nil)
	r5.subscribe(1, codec.Subscription{Filter: []byte("st/#")})
	p := r5.expectPublish(5 * time.Second)
	if len(p.Props.User) != 2 || string(p.Props.User[1].Value) != "v2" || string(p.Props.ResponseTopic) != "st/reply" || !p.Retain {
		t.Fatalf("retained v5 message lost its properties: %+v", p.Props)
	}
	r3 := connected(t, b.MQTTAddr(), "r3", true)
	r3.subscribe(1, codec.Subscription{Filter: []byte("st/#")})
	q := r3.expectPublish(5 * time.Second)
	if string(q.Payload) != "v" || !q.Retain {
		t.Fatalf("3.1.1 reader: %+v", q)
	}
	// The raw bytes carry no property list at 3.1.1: topic, payload only.
	want := (&codec.Publish{Topic: []byte("st/r"), Payload: []byte("v"), Retain: true}).AppendTo(nil, codec.V311)
	got := (&codec.Publish{Topic: q.Topic, Payload: q.Payload, Retain: q.Retain}).AppendTo(nil, codec.V311)
	if !bytes.Equal(want, got) {
		t.Fatalf("3.1.1 encoding %x; want %x", got, want)
	}
}

// [MQTT5-3.3.2-7]: an alias set on one connection means nothing on the
// next.
func TestV5TopicAliasNotCarriedOver(t *testing.T) {
	b := startBroker(t, nil)
	withAlias := func(p *codec.Publish) { p.Props.TopicAlias = 1; p.Props.Set(codec.PropTopicAlias) }
	persistent := func(p *codec.Connect) {
		p.CleanStart = false
		p.Props.SessionExpiry = 60
		p.Props.Set(codec.PropSessionExpiry)
	}
	a, _ := connected5(t, b.MQTTAddr(), "carry", persistent)
	a.write(rawPub5("c/t", "x", 0, 0, withAlias))
	a.write((&codec.Disconnect{}).AppendTo(nil, codec.V5))
	a.expectClosed(5 * time.Second)
	again, ack := connected5(t, b.MQTTAddr(), "carry", persistent)
	if !ack.SessionPresent {
		t.Fatal("session not resumed")
	}
	again.write(rawPub5("", "y", 0, 0, withAlias))
	again.expectDisconnect(codec.ProtocolError)
}

// [MQTT5-3.1.2-29]: with Request Problem Information 0 the DISCONNECT
// carries no reason string; by default it says what was wrong.
func TestV5RequestProblemInformation(t *testing.T) {
	b := startBroker(t, nil)
	reason := func(edit func(*codec.Connect)) string {
		rc, _ := connected5(t, b.MQTTAddr(), "pi", edit)
		rc.write(rawPub5("a/+", "x", 0, 0, nil))
		h, body := rc.expect(codec.TypeDisconnect, 5*time.Second)
		var d codec.Disconnect
		if err := d.Decode(codec.V5, h, body); err != nil {
			t.Fatal(err)
		}
		return string(d.Props.ReasonString)
	}
	if r := reason(nil); r == "" {
		t.Fatal("no reason string by default")
	}
	if r := reason(func(p *codec.Connect) {
		p.Props.RequestProblemInfo = 0
		p.Props.Set(codec.PropRequestProblemInfo)
	}); r != "" {
		t.Fatalf("reason string %q with Request Problem Information 0", r)
	}
}

// PUBREL and PUBREC for ids the broker does not know get 0x92; a PUBREC
// with a failure code ends the delivery without PUBREL.
func TestV5PacketIdentifierNotFound(t *testing.T) {
	b := startBroker(t, nil)
	rc, _ := connected5(t, b.MQTTAddr(), "pid", nil)
	rc.write(codec.AppendAck(nil, codec.TypePubrel, 77))
	if a := rc.expectAck(codec.TypePubcomp); a.Reason != codec.PacketIdentifierNotFound || a.PacketID != 77 {
		t.Fatalf("PUBCOMP %+v; want 0x92", a)
	}
	rc.write(codec.AppendAck(nil, codec.TypePubrec, 78))
	if a := rc.expectAck(codec.TypePubrel); a.Reason != codec.PacketIdentifierNotFound {
		t.Fatalf("PUBREL %+v; want 0x92", a)
	}
	rc.subscribe(1, codec.Subscription{Filter: []byte("q2"), QoS: 2})
	pub, _ := connected5(t, b.MQTTAddr(), "pid-pub", nil)
	pub.write(rawPub5("q2", "x", 2, 1, nil))
	p := rc.expectPublish(5 * time.Second)
	refuse := codec.Ack{Type: codec.TypePubrec, PacketID: p.PacketID, Reason: codec.ImplementationSpecificError}
	rc.write(refuse.AppendTo(nil, codec.V5))
	rc.expectNothing(300 * time.Millisecond) // no PUBREL for a refused message
	waitFor(t, 5*time.Second, "in-flight freed", func() bool {
		s := b.sessionByID("pid")
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.inflightLocked() == 0
	})
}

// At shutdown the connected clients' wills and the delayed ones are
// published (as Mosquitto does) and reach the subscribers before their
// connections close.
func TestShutdownPublishesWills(t *testing.T) {
	b := startBroker(t, nil)
	watcher, _ := connected5(t, b.MQTTAddr(), "w", nil)
	watcher.subscribe(1, codec.Subscription{Filter: []byte("gone/#")})
	c3 := dialRaw(t, b.MQTTAddr())
	c3.connect(codec.Connect{ClientID: []byte("dev3"), CleanStart: true, KeepAlive: 60,
		WillFlag: true, WillTopic: []byte("gone/dev3"), WillPayload: []byte("offline")})
	d, _ := connected5(t, b.MQTTAddr(), "dev5", func(p *codec.Connect) {
		p.Props.SessionExpiry = 60
		p.Props.Set(codec.PropSessionExpiry)
		p.WillFlag, p.WillTopic, p.WillPayload = true, []byte("gone/dev5"), []byte("later")
		p.WillProps.WillDelay = 30
		p.WillProps.Set(codec.PropWillDelay)
	})
	d.c.Close() // its will now waits 30 s
	waitFor(t, 5*time.Second, "dev5 offline", func() bool { return b.Stats().Connected == 2 })
	go func() { _ = b.Stop(t.Context()) }()
	got := map[string]bool{}
	for len(got) < 2 {
		h, body, err := watcher.readPacket(5 * time.Second)
		if err != nil {
			t.Fatalf("wills received %v before: %v", got, err)
		}
		switch h.Type {
		case codec.TypePublish:
			var p codec.Publish
			if err := p.Decode(codec.V5, h, body); err != nil {
				t.Fatal(err)
			}
			got[string(p.Topic)] = true
		case codec.TypeDisconnect:
			t.Fatalf("DISCONNECT before the wills; got %v", got)
		}
	}
	if !got["gone/dev3"] || !got["gone/dev5"] {
		t.Fatalf("wills %v", got)
	}
	watcher.expectDisconnect(codec.ServerShuttingDown)
}

// A v5 slow consumer (it reads but never acknowledges, so its queue stays
// full) is told 0x97 when it is cut off.
func TestV5SlowConsumerQuotaExceeded(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.MaxQueuedMsgs = 5; o.SlowConsumerAfter = time.Second })
	sub, _ := connected5(t, b.MQTTAddr(), "hoarder", func(p *codec.Connect) {
		p.Props.ReceiveMaximum = 1
		p.Props.Set(codec.PropReceiveMaximum)
	})
	sub.subscribe(1, codec.Subscription{Filter: []byte("sc"), QoS: 1})
	pub, _ := connected5(t, b.MQTTAddr(), "flood", nil)
	for i := 1; i <= 20; i++ {
		pub.write(rawPub5("sc", "x", 1, uint16(i), nil))
	}
	sub.expectDisconnect(codec.QuotaExceeded)
}
