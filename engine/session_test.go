package engine

import (
	"fmt"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
)

// [MQTT-3.1.2-4] [MQTT-3.1.2-5] [MQTT-3.2.2-2] [MQTT-3.2.2-3] A persistent session keeps its
// subscriptions and queues messages while the client is away; they arrive
// in order on reconnect, with session present set.
func TestSessionPersistentQueue(t *testing.T) {
	b := startBroker(t, nil)
	rc := dialRaw(t, b.MQTTAddr())
	if ack := rc.connect(codec.Connect{ClientID: []byte("p1"), KeepAlive: 60}); ack.SessionPresent {
		t.Fatal("new session reported present")
	}
	rc.subscribe(1, codec.Subscription{Filter: []byte("q/#"), QoS: 1})
	rc.write([]byte{0xe0, 0})
	rc.expectClosed(5 * time.Second)
	waitFor(t, 2*time.Second, "offline", func() bool { return b.Stats().Connected == 0 })

	pub := connected(t, b.MQTTAddr(), "pub", true)
	// QoS 0 first: the PUBACKs that follow on the same connection prove it
	// was handled while p1 was away (it is not queued by default).
	pub.publish("q/x", "qos0-not-queued", 0, false, 0)
	for i := 0; i < 5; i++ {
		pub.publish("q/x", fmt.Sprint(i), 1, false, uint16(i+1))
		pub.expect(codec.TypePuback, 5*time.Second)
	}

	rc2 := dialRaw(t, b.MQTTAddr())
	if ack := rc2.connect(codec.Connect{ClientID: []byte("p1"), KeepAlive: 60}); !ack.SessionPresent {
		t.Fatal("session present = 0; want 1")
	}
	for i := 0; i < 5; i++ {
		p := rc2.expectPublish(5 * time.Second)
		if string(p.Payload) != fmt.Sprint(i) || p.QoS != 1 {
			t.Fatalf("message %d: %q qos %d", i, p.Payload, p.QoS)
		}
		rc2.write(codec.AppendAck(nil, codec.TypePuback, p.PacketID))
	}
	rc2.expectNothing(300 * time.Millisecond)
}

// [MQTT-3.1.2-6] [MQTT-3.2.2-1] Clean session discards the previous session.
func TestSessionCleanDiscards(t *testing.T) {
	b := startBroker(t, nil)
	rc := dialRaw(t, b.MQTTAddr())
	rc.connect(codec.Connect{ClientID: []byte("c"), KeepAlive: 60})
	rc.subscribe(1, codec.Subscription{Filter: []byte("x"), QoS: 1})
	rc.c.Close()
	waitFor(t, 2*time.Second, "offline", func() bool { return b.Stats().Connected == 0 })
	rc2 := dialRaw(t, b.MQTTAddr())
	if ack := rc2.connect(codec.Connect{ClientID: []byte("c"), CleanStart: true}); ack.SessionPresent {
		t.Fatal("clean session reported present")
	}
	pub := connected(t, b.MQTTAddr(), "pub", true)
	pub.publish("x", "nobody", 0, false, 0)
	rc2.expectNothing(300 * time.Millisecond)
	if n := b.Stats().Subscriptions; n != 0 {
		t.Fatalf("%d subscriptions left; want 0", n)
	}
}

// [MQTT-4.4.0-1] [MQTT-3.3.1-1] [MQTT-2.3.1-2] Unacknowledged messages are re-sent with DUP and the same
// packet ids, in order, before newly queued ones.
func TestSessionResendWithDup(t *testing.T) {
	b := startBroker(t, nil)
	rc := dialRaw(t, b.MQTTAddr())
	rc.connect(codec.Connect{ClientID: []byte("d"), KeepAlive: 60})
	rc.subscribe(1, codec.Subscription{Filter: []byte("t"), QoS: 2})
	pub := connected(t, b.MQTTAddr(), "pub", true)
	pub.publish("t", "a", 1, false, 1)
	pub.publish("t", "b", 2, false, 2)
	first := rc.expectPublish(5 * time.Second)
	second := rc.expectPublish(5 * time.Second)
	rc.write(codec.AppendAck(nil, codec.TypePubrec, second.PacketID)) // b is past PUBREC
	rc.expect(codec.TypePubrel, 5*time.Second)
	rc.c.Close() // no PUBACK for a, no PUBCOMP for b
	waitFor(t, 2*time.Second, "offline", func() bool { return b.Stats().Connected == 1 })
	pub.publish("t", "c", 1, false, 3)

	rc2 := dialRaw(t, b.MQTTAddr())
	if ack := rc2.connect(codec.Connect{ClientID: []byte("d"), KeepAlive: 60}); !ack.SessionPresent {
		t.Fatal("session not present")
	}
	p := rc2.expectPublish(5 * time.Second)
	if !p.Dup || p.PacketID != first.PacketID || string(p.Payload) != "a" {
		t.Fatalf("resend 1: dup=%v id=%d payload=%q; want dup, id %d, a", p.Dup, p.PacketID, p.Payload, first.PacketID)
	}
	_, rel := rc2.expect(codec.TypePubrel, 5*time.Second)
	if id := uint16(rel[0])<<8 | uint16(rel[1]); id != second.PacketID {
		t.Fatalf("PUBREL id %d; want %d", id, second.PacketID)
	}
	if p := rc2.expectPublish(5 * time.Second); p.Dup || string(p.Payload) != "c" {
		t.Fatalf("queued message: dup=%v %q; want c", p.Dup, p.Payload)
	}
}

// The in-flight window bounds unacknowledged QoS 1 messages.
func TestSessionInflightWindow(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.MaxInflight = 2 })
	rc := connected(t, b.MQTTAddr(), "w", true)
	rc.subscribe(1, codec.Subscription{Filter: []byte("w"), QoS: 1})
	pub := connected(t, b.MQTTAddr(), "pub", true)
	for i := 0; i < 5; i++ {
		pub.publish("w", fmt.Sprint(i), 1, false, uint16(i+1))
	}
	a := rc.expectPublish(5 * time.Second)
	rc.expectPublish(5 * time.Second)
	rc.expectNothing(300 * time.Millisecond)
	rc.write(codec.AppendAck(nil, codec.TypePuback, a.PacketID))
	if p := rc.expectPublish(5 * time.Second); string(p.Payload) != "2" {
		t.Fatalf("after one ack got %q; want 2", p.Payload)
	}
	rc.expectNothing(300 * time.Millisecond)
}

// The offline queue is bounded; the overflow is dropped and counted.
func TestSessionQueueBound(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.MaxQueuedMsgs = 5 })
	rc := dialRaw(t, b.MQTTAddr())
	rc.connect(codec.Connect{ClientID: []byte("bq"), KeepAlive: 60})
	rc.subscribe(1, codec.Subscription{Filter: []byte("b"), QoS: 1})
	rc.c.Close()
	waitFor(t, 2*time.Second, "offline", func() bool { return b.Stats().Connected == 0 })
	pub := connected(t, b.MQTTAddr(), "pub", true)
	for i := 0; i < 10; i++ {
		pub.publish("b", fmt.Sprint(i), 1, false, uint16(i+1))
		pub.expect(codec.TypePuback, 5*time.Second)
	}
	if d := b.Stats().Dropped; d != 5 {
		t.Fatalf("dropped %d; want 5", d)
	}
	rc2 := dialRaw(t, b.MQTTAddr())
	rc2.connect(codec.Connect{ClientID: []byte("bq"), KeepAlive: 60})
	for i := 0; i < 5; i++ {
		p := rc2.expectPublish(5 * time.Second)
		if string(p.Payload) != fmt.Sprint(i) {
			t.Fatalf("got %q; want %d", p.Payload, i)
		}
		rc2.write(codec.AppendAck(nil, codec.TypePuback, p.PacketID))
	}
	rc2.expectNothing(300 * time.Millisecond)
}

// [MQTT-3.1.2-8] The will is published when the connection ends without
// DISCONNECT, with its QoS and retain flag.
func TestWillOnSocketClose(t *testing.T) {
	b := startBroker(t, nil)
	w := connected(t, b.MQTTAddr(), "watch", true)
	w.subscribe(1, codec.Subscription{Filter: []byte("st/#"), QoS: 1})
	d := dialRaw(t, b.MQTTAddr())
	d.connect(codec.Connect{ClientID: []byte("dev"), CleanStart: true, WillFlag: true, WillQoS: 1, WillRetain: true,
		WillTopic: []byte("st/dev"), WillPayload: []byte("offline")})
	d.c.Close()
	p := w.expectPublish(5 * time.Second)
	if string(p.Payload) != "offline" || p.QoS != 1 {
		t.Fatalf("will %q qos %d", p.Payload, p.QoS)
	}
	late := connected(t, b.MQTTAddr(), "late", true)
	late.subscribe(1, codec.Subscription{Filter: []byte("st/dev")})
	if p := late.expectPublish(5 * time.Second); !p.Retain || string(p.Payload) != "offline" {
		t.Fatalf("retained will: retain=%v %q", p.Retain, p.Payload)
	}
}

// [MQTT-3.14.4-3] [MQTT-3.14.4-1] No will after DISCONNECT: a marker published afterwards
// arrives with no will before it.
func TestWillNotAfterDisconnect(t *testing.T) {
	b := startBroker(t, nil)
	w := connected(t, b.MQTTAddr(), "watch", true)
	w.subscribe(1, codec.Subscription{Filter: []byte("st/#")})
	d := dialRaw(t, b.MQTTAddr())
	d.connect(codec.Connect{ClientID: []byte("dev"), CleanStart: true, WillFlag: true,
		WillTopic: []byte("st/dev"), WillPayload: []byte("offline")})
	d.write([]byte{0xe0, 0})
	d.expectClosed(5 * time.Second)
	waitFor(t, 2*time.Second, "disconnect", func() bool { return b.Stats().Connected == 1 })
	m := connected(t, b.MQTTAddr(), "marker", true)
	m.publish("st/marker", "marker", 0, false, 0)
	if p := w.expectPublish(5 * time.Second); string(p.Payload) != "marker" {
		t.Fatalf("got %q before the marker; want the marker first (no will)", p.Payload)
	}
}

// A protocol error ends the connection and publishes the will.
func TestWillOnProtocolError(t *testing.T) {
	b := startBroker(t, nil)
	w := connected(t, b.MQTTAddr(), "watch", true)
	w.subscribe(1, codec.Subscription{Filter: []byte("st/#")})
	d := dialRaw(t, b.MQTTAddr())
	d.connect(codec.Connect{ClientID: []byte("dev"), CleanStart: true, WillFlag: true,
		WillTopic: []byte("st/dev"), WillPayload: []byte("broken")})
	d.write([]byte{0x30, 3, 0, 1, '#'}) // wildcard in a topic name
	d.expectClosed(5 * time.Second)
	if p := w.expectPublish(5 * time.Second); string(p.Payload) != "broken" {
		t.Fatalf("will %q", p.Payload)
	}
}

// [MQTT-3.1.2-24] Keep-alive: silent for 1.5 × keep-alive means closed,
// and the will goes out; a client that pings stays.
func TestKeepAliveExpiry(t *testing.T) {
	b := startBroker(t, nil)
	w := connected(t, b.MQTTAddr(), "watch", true)
	w.subscribe(1, codec.Subscription{Filter: []byte("st/#")})
	d := dialRaw(t, b.MQTTAddr())
	d.connect(codec.Connect{ClientID: []byte("sleepy"), CleanStart: true, KeepAlive: 1, WillFlag: true,
		WillTopic: []byte("st/sleepy"), WillPayload: []byte("timeout")})
	start := time.Now()
	d.expectClosed(5 * time.Second)
	if el := time.Since(start); el < 1500*time.Millisecond {
		t.Fatalf("closed after %v; keep-alive 1s must allow 1.5s", el)
	}
	if p := w.expectPublish(5 * time.Second); string(p.Payload) != "timeout" {
		t.Fatalf("will %q", p.Payload)
	}
	if b.Stats().KeepAliveTimeouts != 1 {
		t.Fatalf("keep-alive timeouts %d", b.Stats().KeepAliveTimeouts)
	}
}

// [MQTT-3.12.4-1] PINGREQ gets PINGRESP, and a pinging client outlives
// 1.5 × keep-alive.
func TestKeepAlivePing(t *testing.T) {
	b := startBroker(t, nil)
	d := dialRaw(t, b.MQTTAddr())
	d.connect(codec.Connect{ClientID: []byte("pinger"), CleanStart: true, KeepAlive: 1})
	deadline := time.Now().Add(3500 * time.Millisecond)
	for time.Now().Before(deadline) {
		d.write(codec.AppendPingreq(nil))
		h, body := d.expect(codec.TypePingresp, 2*time.Second)
		if h.Remaining != 0 || len(body) != 0 {
			t.Fatalf("PINGRESP body % x", body)
		}
		d.expectNothing(500 * time.Millisecond) // paces the loop, and asserts silence
	}
}

// TestSessionExpiry: with --session-expiry, a persistent session offline
// that long is discarded (subscriptions and queue with it, counted); one
// that stays online, and one whose client is back in time, are kept.
func TestSessionExpiry(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.SessionExpiry = 2 * time.Second })
	away := connected(t, b.MQTTAddr(), "away", false)
	away.subscribe(1, codec.Subscription{Filter: []byte("exp/#"), QoS: 1})
	away.write([]byte{0xe0, 0})
	away.expectClosed(5 * time.Second)
	online := connected(t, b.MQTTAddr(), "online", false)
	online.subscribe(1, codec.Subscription{Filter: []byte("other/#"), QoS: 1})

	pub := connected(t, b.MQTTAddr(), "pub", true)
	pub.publish("exp/x", "queued", 1, false, 1)
	pub.expect(codec.TypePuback, 5*time.Second)
	waitFor(t, 10*time.Second, "the offline session to expire", func() bool { return b.Stats().SessionsExpired == 1 })
	if st := b.Stats(); st.Sessions != 2 || st.Subscriptions != 1 {
		t.Fatalf("after expiry: %d sessions, %d subscriptions; want 2 (online, pub) and 1", st.Sessions, st.Subscriptions)
	}
	if got := b.Snapshot().SessionsExpired; got != 1 {
		t.Fatalf("snapshot sessions_expired %d", got)
	}
	back := dialRaw(t, b.MQTTAddr())
	if ack := back.connect(codec.Connect{ClientID: []byte("away"), KeepAlive: 60}); ack.SessionPresent {
		t.Fatal("expired session reported present")
	}
	back.expectNothing(300 * time.Millisecond) // its queue went with it
	// The online client's session was never offline: still there.
	pub.publish("other/y", "still", 1, false, 2)
	pub.expect(codec.TypePuback, 5*time.Second)
	if p := online.expectPublish(5 * time.Second); string(p.Payload) != "still" {
		t.Fatalf("online session: %q", p.Payload)
	}
}

// TestSessionExpiryKeepsReturningClients: a client that comes back before
// the expiry keeps its session (and subscription), round after round, over
// a run longer than the expiry itself.
func TestSessionExpiryKeepsReturningClients(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.SessionExpiry = 4 * time.Second })
	for round := range 3 {
		rc := dialRaw(t, b.MQTTAddr())
		ack := rc.connect(codec.Connect{ClientID: []byte("back"), KeepAlive: 60})
		if round > 0 && !ack.SessionPresent {
			t.Fatalf("round %d: session of a client back within the expiry was discarded", round)
		}
		if round == 0 {
			rc.subscribe(1, codec.Subscription{Filter: []byte("back/#"), QoS: 1})
		}
		// Online for 1.5 s: online time never counts towards the expiry.
		rc.expectNothing(1500 * time.Millisecond)
		rc.write([]byte{0xe0, 0})
		rc.expectClosed(5 * time.Second)
	}
	if st := b.Stats(); st.SessionsExpired != 0 || st.Subscriptions != 1 {
		t.Fatalf("expired %d, subscriptions %d; want 0 and 1", st.SessionsExpired, st.Subscriptions)
	}
}
