package engine

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
)

// promLine fails unless the broker's /metrics text has the sample line
// "name{labels} value".
func promLine(t *testing.T, b *Broker, sample string) {
	t.Helper()
	sn := b.Snapshot()
	text := string(sn.appendPrometheus(nil))
	for _, l := range strings.Split(text, "\n") {
		if l == sample {
			return
		}
	}
	name, _, _ := strings.Cut(sample, "{")
	var got []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, name) {
			got = append(got, l)
		}
	}
	t.Fatalf("metrics lack %q; have %q", sample, got)
}

// [MQTT-3.1.3-9] A client id over MaxClientIDLen gets CONNACK 2 and is
// closed; no session is made. (No counter of its own: it is a refusal the
// client is told about, logged with -v.) One at the limit is accepted.
func TestLimitsClientIDLen(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.MaxClientIDLen = 8 })
	rc := dialRaw(t, b.MQTTAddr())
	if ack := rc.connect(codec.Connect{CleanStart: true, ClientID: []byte("123456789")}); ack.ReturnCode != codec.ConnRefusedIdentifierRejected {
		t.Fatalf("return code %d; want 2", ack.ReturnCode)
	}
	rc.expectClosed(5 * time.Second)
	if s := b.Stats().Sessions; s != 0 {
		t.Fatalf("%d sessions after a refused CONNECT", s)
	}
	connected(t, b.MQTTAddr(), "12345678", true)
	if s := b.Stats().Sessions; s != 1 {
		t.Fatalf("%d sessions; want 1", s)
	}
}

// MaxTopicLen: a longer filter gets SUBACK 0x80, a longer topic name
// closes the publisher, counted as a protocol error (malformed).
func TestLimitsTopicLength(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.MaxTopicLen = 16 })
	rc := connected(t, b.MQTTAddr(), "t", true)
	codes := rc.subscribe(1, codec.Subscription{Filter: []byte(strings.Repeat("a", 16))},
		codec.Subscription{Filter: []byte(strings.Repeat("b", 17))})
	if fmt.Sprint(codes) != fmt.Sprint([]codec.ReasonCode{0, 0x80}) {
		t.Fatalf("SUBACK %v; want [0 128]", codes)
	}
	if n := b.Stats().Subscriptions; n != 1 {
		t.Fatalf("%d subscriptions; want 1", n)
	}
	rc.publish(strings.Repeat("a", 16), "ok", 0, false, 0)
	if p := rc.expectPublish(5 * time.Second); string(p.Payload) != "ok" {
		t.Fatalf("got %q", p.Payload)
	}
	rc.publish(strings.Repeat("a", 17), "long", 0, false, 0)
	rc.expectClosed(5 * time.Second)
	waitFor(t, 2*time.Second, "malformed counter", func() bool { return b.Stats().Malformed == 1 })
	promLine(t, b, `tinymq_connections_closed_total{reason="malformed"} 1`)
}

// MaxTopicLevels on a PUBLISH: the publisher is closed and counted.
func TestLimitsTopicLevelsCounted(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.MaxTopicLevels = 3 })
	rc := connected(t, b.MQTTAddr(), "lv", true)
	rc.publish("a/b/c", "fine", 1, false, 1)
	rc.expect(codec.TypePuback, 5*time.Second)
	rc.publish("a/b/c/d", "deep", 0, false, 0)
	rc.expectClosed(5 * time.Second)
	waitFor(t, 2*time.Second, "malformed counter", func() bool { return b.Stats().Malformed == 1 })
}

// MaxSubsPerConn counts the session's distinct filters: re-subscribing an
// existing filter is not a new one, a new filter past the bound gets 0x80,
// and the trie holds only the granted ones.
func TestLimitsSubscriptionsPerSession(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.MaxSubsPerConn = 2 })
	rc := connected(t, b.MQTTAddr(), "s", true)
	sub := func(f string) codec.Subscription { return codec.Subscription{Filter: []byte(f)} }
	if c := rc.subscribe(1, sub("a"), sub("b")); fmt.Sprint(c) != "[0 0]" {
		t.Fatalf("SUBACK %v", c)
	}
	if c := rc.subscribe(2, sub("a"), sub("c")); fmt.Sprint(c) != fmt.Sprint([]codec.ReasonCode{0, 0x80}) {
		t.Fatalf("SUBACK %v; want [0 128]", c)
	}
	if n := b.Stats().Subscriptions; n != 2 {
		t.Fatalf("%d subscriptions in the trie; want 2", n)
	}
}

// The in-flight window is never exceeded: with MaxInflight 3 and 60 QoS 1
// and QoS 2 messages published at once, a subscriber that acknowledges
// one message at a time never holds more than 3 unacknowledged, and gets
// all of them in order; the inflight gauge never shows more than 3.
func TestLimitsInflightNeverExceeded(t *testing.T) {
	const window, n = 3, 60
	b := startBroker(t, func(o *Options) { o.MaxInflight = window })
	rc := connected(t, b.MQTTAddr(), "w", true)
	rc.subscribe(1, codec.Subscription{Filter: []byte("w"), QoS: 2})
	pub := connected(t, b.MQTTAddr(), "pub", true)
	var all []byte
	for i := 0; i < n; i++ {
		all = (&codec.Publish{Topic: []byte("w"), Payload: []byte(fmt.Sprint(i)), QoS: uint8(1 + i%2), PacketID: uint16(i + 1)}).AppendTo(all, codec.V311)
	}
	pub.write(all)
	outstanding := map[uint16]uint8{} // id -> QoS, sent and not completed
	next := 0
	for next < n {
		// Read everything the broker sends before acknowledging: if the
		// window were not enforced, more than 3 would arrive here.
		for {
			h, body, err := rc.readPacket(150 * time.Millisecond)
			if err != nil {
				break
			}
			switch h.Type {
			case codec.TypePublish:
				var p codec.Publish
				if err := p.Decode(codec.V311, h, body); err != nil {
					t.Fatal(err)
				}
				if string(p.Payload) != fmt.Sprint(next) {
					t.Fatalf("got %q; want %d", p.Payload, next)
				}
				next++
				outstanding[p.PacketID] = p.QoS
			case codec.TypePubrel:
				id := uint16(body[0])<<8 | uint16(body[1])
				rc.write(codec.AppendAck(nil, codec.TypePubcomp, id))
				delete(outstanding, id)
			default:
				t.Fatalf("unexpected %v", h.Type)
			}
			if len(outstanding) > window {
				t.Fatalf("%d messages unacknowledged; the window is %d", len(outstanding), window)
			}
			if g := b.Snapshot().Inflight; g > window {
				t.Fatalf("inflight gauge %d; the window is %d", g, window)
			}
		}
		if next < n && len(outstanding) == 0 {
			t.Fatalf("stalled at %d with nothing in flight", next)
		}
		// Acknowledge one (QoS 1: PUBACK; QoS 2: PUBREC, then PUBREL comes).
		for id, q := range outstanding {
			if q == 1 {
				rc.write(codec.AppendAck(nil, codec.TypePuback, id))
				delete(outstanding, id)
			} else if q == 2 {
				rc.write(codec.AppendAck(nil, codec.TypePubrec, id))
				outstanding[id] = 3 // awaiting PUBREL
			} else {
				continue
			}
			break
		}
	}
}

// MaxQueuedBytes bounds an offline session's queue by payload bytes; the
// overflow is dropped and counted as queue_full, also in /metrics; what
// was queued arrives on return.
func TestLimitsQueuedBytes(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.MaxQueuedBytes = 1000 })
	rc := dialRaw(t, b.MQTTAddr())
	rc.connect(codec.Connect{ClientID: []byte("qb"), KeepAlive: 60})
	rc.subscribe(1, codec.Subscription{Filter: []byte("b"), QoS: 1})
	rc.c.Close()
	waitFor(t, 2*time.Second, "offline", func() bool { return b.Stats().Connected == 0 })
	pub := connected(t, b.MQTTAddr(), "pub", true)
	payload := strings.Repeat("x", 300)
	for i := 0; i < 10; i++ {
		pub.publish("b", fmt.Sprint(i)+payload[1:], 1, false, uint16(i+1))
		pub.expect(codec.TypePuback, 5*time.Second)
	}
	if d := b.Stats().DroppedQueueFull; d != 7 {
		t.Fatalf("dropped (queue full) %d; want 7 (3 x 300 bytes fit in 1000)", d)
	}
	if q := b.Snapshot().Queued; q != 3 {
		t.Fatalf("queued gauge %d; want 3", q)
	}
	promLine(t, b, `tinymq_messages_dropped_total{reason="queue_full"} 7`)
	rc2 := dialRaw(t, b.MQTTAddr())
	rc2.connect(codec.Connect{ClientID: []byte("qb"), KeepAlive: 60})
	for i := 0; i < 3; i++ {
		p := rc2.expectPublish(5 * time.Second)
		if p.Payload[0] != byte('0'+i) {
			t.Fatalf("got %q...; want message %d", p.Payload[:1], i)
		}
		rc2.write(codec.AppendAck(nil, codec.TypePuback, p.PacketID))
	}
	rc2.expectNothing(300 * time.Millisecond)
}

// MaxQueuedMsgs counts in queue_full too (the existing queue test checks
// the total only).
func TestLimitsQueuedMessagesCounted(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.MaxQueuedMsgs = 4 })
	rc := dialRaw(t, b.MQTTAddr())
	rc.connect(codec.Connect{ClientID: []byte("qm"), KeepAlive: 60})
	rc.subscribe(1, codec.Subscription{Filter: []byte("m"), QoS: 1})
	rc.c.Close()
	waitFor(t, 2*time.Second, "offline", func() bool { return b.Stats().Connected == 0 })
	pub := connected(t, b.MQTTAddr(), "pub", true)
	for i := 0; i < 9; i++ {
		pub.publish("m", "x", 1, false, uint16(i+1))
		pub.expect(codec.TypePuback, 5*time.Second)
	}
	if st := b.Stats(); st.DroppedQueueFull != 5 || st.Dropped != 5 {
		t.Fatalf("dropped %d, queue full %d; want 5 and 5", st.Dropped, st.DroppedQueueFull)
	}
	promLine(t, b, `tinymq_messages_dropped_total{reason="queue_full"} 5`)
}

// The connect timeout and max-connections refusals show in /metrics.
func TestLimitsConnectTimeoutAndMaxConnsMetrics(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.ConnectTimeout = time.Second; o.MaxConnections = 2 })
	idle := dialRaw(t, b.MQTTAddr()) // never sends CONNECT
	connected(t, b.MQTTAddr(), "one", true)
	over := dialRaw(t, b.MQTTAddr())
	over.expectClosed(5 * time.Second)
	t0 := time.Now()
	idle.expectClosed(5 * time.Second)
	if d := time.Since(t0); d > 4*time.Second {
		t.Fatalf("idle socket closed after %v with a 1 s connect timeout", d)
	}
	waitFor(t, 2*time.Second, "connect timeout counter", func() bool { return b.Stats().ConnectTimeouts == 1 })
	promLine(t, b, `tinymq_connections_closed_total{reason="connect_timeout"} 1`)
	promLine(t, b, `tinymq_connections_rejected_total{reason="max_connections"} 1`)
}

// A QoS 1 subscriber that reads but never acknowledges fills its in-flight
// window, then its queue; it is disconnected after SlowConsumerAfter even
// though its socket never blocks. (Each message here arrives in a batch of
// its own, so no write to the subscriber ever sees its queue non-empty:
// the queue itself must put it under watch.)
func TestLimitsNonAckingSubscriberDisconnected(t *testing.T) {
	b := startBroker(t, func(o *Options) {
		o.MaxInflight = 2
		o.MaxQueuedMsgs = 3
		o.SlowConsumerAfter = time.Second
	})
	sub := connected(t, b.MQTTAddr(), "noack", true)
	sub.subscribe(1, codec.Subscription{Filter: []byte("n"), QoS: 1})
	pub := connected(t, b.MQTTAddr(), "pub", true)
	for i := 1; i <= 2; i++ {
		pub.publish("n", fmt.Sprint(i), 1, false, uint16(i))
		pub.expect(codec.TypePuback, 5*time.Second)
		sub.expectPublish(5 * time.Second) // read, never acknowledged
	}
	deadline := time.Now().Add(8 * time.Second)
	for i := 3; ; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("a subscriber dropping messages for 8 s (timeout 1 s) was not disconnected; stats %+v", b.Stats())
		}
		pub.publish("n", fmt.Sprint(i), 1, false, uint16(i%60000+1))
		pub.expect(codec.TypePuback, 5*time.Second) // one batch per message
		// The window is full: nothing more comes, until the close.
		h, _, err := sub.readPacket(20 * time.Millisecond)
		if err == nil {
			t.Fatalf("got %v past a full in-flight window", h.Type)
		}
		if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
			break // closed
		}
	}
	waitFor(t, 2*time.Second, "the slow-consumer counter", func() bool { return b.Stats().SlowConsumerDisconnects == 1 })
	if d := b.Stats().DroppedQueueFull; d == 0 {
		t.Fatal("no queue_full drops counted")
	}
}
