package engine

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/codec/codectest"
)

// [MQTT-4.7.2-1] $ topics: clients cannot publish under $SYS, wildcard
// filters at the first level do not match them, and the broker publishes
// its statistics there.
func TestSysTopics(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.SysInterval = 200 * time.Millisecond })
	all := connected(t, b.MQTTAddr(), "all", true)
	all.subscribe(1, codec.Subscription{Filter: []byte("#")}, codec.Subscription{Filter: []byte("+/broker/#")})
	sys := connected(t, b.MQTTAddr(), "sys", true)
	sys.subscribe(1, codec.Subscription{Filter: []byte("$SYS/#")})
	want := map[string]bool{"$SYS/broker/version": false, "$SYS/broker/uptime": false,
		"$SYS/broker/clients/connected": false, "$SYS/broker/load/messages/received/1min": false,
		"$SYS/broker/messages/received": false, "$SYS/broker/subscriptions/count": false}
	deadline := time.Now().Add(5 * time.Second)
	for missing := len(want); missing > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("missing $SYS topics: %v", want)
		}
		p := sys.expectPublish(5 * time.Second)
		if seen, ok := want[string(p.Topic)]; ok && !seen {
			want[string(p.Topic)] = true
			missing--
		}
	}
	cl := connected(t, b.MQTTAddr(), "evil", true)
	cl.publish("$SYS/broker/version", "fake", 1, false, 1)
	cl.expect(codec.TypePuback, 5*time.Second) // acknowledged, dropped
	cl.publish("plain", "marker", 0, false, 0)
	if p := all.expectPublish(5 * time.Second); string(p.Topic) != "plain" {
		t.Fatalf("# subscriber got %q; want only plain", p.Topic)
	}
	for end := time.Now().Add(600 * time.Millisecond); time.Now().Before(end); {
		p := sys.expectPublish(2 * time.Second)
		if string(p.Payload) == "fake" {
			t.Fatal("client publish under $SYS was delivered")
		}
	}
}

// An oversize packet is refused from its fixed header: the connection is
// closed before the body is sent.
func TestLimitsOversizePacket(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.MaxPacketSize = 1024 })
	rc := connected(t, b.MQTTAddr(), "big", true)
	rc.write(codec.AppendFixedHeader(nil, codec.TypePublish, 0, 1<<20))
	rc.expectClosed(5 * time.Second)
	waitFor(t, 2*time.Second, "oversize counter", func() bool { return b.Stats().Oversize == 1 })
}

// Malformed input closes only that connection; others keep working.
func TestLimitsMalformedClosesOnlyOffender(t *testing.T) {
	b := startBroker(t, nil)
	sub := connected(t, b.MQTTAddr(), "sub", true)
	sub.subscribe(1, codec.Subscription{Filter: []byte("ok")})
	pub := connected(t, b.MQTTAddr(), "pub", true)
	for i, bad := range codectest.BadVectors {
		if bad.Version != codec.V311 || bad.Raw[0]>>4 == 1 { // CONNECTs are "second CONNECT" here
			continue
		}
		rc := connected(t, b.MQTTAddr(), fmt.Sprintf("bad%d", i), true)
		rc.write(bad.Raw)
		rc.expectClosed(5 * time.Second)
		pub.publish("ok", bad.Name, 0, false, 0)
		if p := sub.expectPublish(5 * time.Second); string(p.Payload) != bad.Name {
			t.Fatalf("after %s: got %q", bad.Name, p.Payload)
		}
	}
	if b.Stats().Malformed < 10 {
		t.Fatalf("malformed counter %d", b.Stats().Malformed)
	}
}

func TestLimitsMaxConnections(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.MaxConnections = 3 })
	for i := 0; i < 3; i++ {
		connected(t, b.MQTTAddr(), fmt.Sprint(i), true)
	}
	rc := dialRaw(t, b.MQTTAddr())
	rc.expectClosed(5 * time.Second)
	if b.Stats().Rejected != 1 {
		t.Fatalf("rejected %d; want 1", b.Stats().Rejected)
	}
}

func TestLimitsTopicLevelsAndSubscriptions(t *testing.T) {
	b := startBroker(t, func(o *Options) { o.MaxTopicLevels = 3; o.MaxSubsPerConn = 2 })
	rc := connected(t, b.MQTTAddr(), "l", true)
	codes := rc.subscribe(1, codec.Subscription{Filter: []byte("a/b")}, codec.Subscription{Filter: []byte("a/b/c/d")},
		codec.Subscription{Filter: []byte("x")}, codec.Subscription{Filter: []byte("y")})
	if fmt.Sprint(codes) != fmt.Sprint([]codec.ReasonCode{0, 0x80, 0, 0x80}) {
		t.Fatalf("SUBACK %v; want [0 128 0 128]", codes)
	}
	rc.publish("a/b/c/d", "deep", 0, false, 0)
	rc.expectClosed(5 * time.Second)
}

// A subscriber that stops reading is bounded: its QoS 0 messages are
// dropped and counted, others keep receiving, and it is disconnected after
// SlowConsumerAfter.
func TestSlowConsumer(t *testing.T) {
	b := startBroker(t, func(o *Options) {
		o.MaxOutboundBytes = 256 * 1024
		o.SlowConsumerAfter = 2 * time.Second
	})
	stuck := dialRaw(t, b.MQTTAddr())
	_ = stuck.c.(*net.TCPConn).SetReadBuffer(4096)
	stuck.connect(codec.Connect{ClientID: []byte("stuck"), CleanStart: true})
	stuck.subscribe(1, codec.Subscription{Filter: []byte("load/#")})
	healthy := pahoClient(t, b.MQTTAddr(), "healthy", true)
	var got atomic.Int64
	var marker atomic.Bool
	pahoSubscribeFunc(t, healthy, "load/#", 1, func(payload []byte) {
		got.Add(1)
		if string(payload) == "marker" {
			marker.Store(true)
		}
	})
	pub := connected(t, b.MQTTAddr(), "flood", true)
	payload := strings.Repeat("x", 1024)
	batch := bytes.Repeat((&codec.Publish{Topic: []byte("load/x"), Payload: []byte(payload)}).AppendTo(nil, codec.V311), 100)
	for i := 0; i < 200; i++ { // 20,000 × 1 KiB
		pub.write(batch)
	}
	pub.publish("load/x", "marker", 1, false, 1) // QoS 1: queued, never dropped, while the reader catches up
	deadline := time.Now().Add(20 * time.Second)
	for !marker.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("healthy subscriber got %d messages and no marker; stats %+v", got.Load(), b.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	pub.expect(codec.TypePuback, 10*time.Second) // the marker's
	if d := b.Stats().DroppedSlow; d == 0 {
		t.Fatal("no QoS 0 drops counted for the stuck subscriber")
	}
	// The stream goes on (the kernel's socket buffers may have absorbed the
	// flood's tail): the stuck subscriber's unsent bytes stop moving and it
	// is disconnected after SlowConsumerAfter.
	one := (&codec.Publish{Topic: []byte("load/x"), Payload: []byte(payload)}).AppendTo(nil, codec.V311)
	deadline = time.Now().Add(15 * time.Second)
	for b.Stats().SlowConsumerDisconnects < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("stuck subscriber not disconnected; stats %+v", b.Stats())
		}
		pub.write(bytes.Repeat(one, 10))
		pub.expectNothing(20 * time.Millisecond) // paces the stream
	}
}

// TestReaderTrickle sends every valid 3.1.1 client packet one byte per
// write; the broker assembles them and answers as for whole packets.
func TestReaderTrickle(t *testing.T) {
	b := startBroker(t, nil)
	sub := connected(t, b.MQTTAddr(), "sub", true)
	sub.subscribe(1, codec.Subscription{Filter: []byte("#"), QoS: 2})
	rc := dialRaw(t, b.MQTTAddr())
	trickle := func(raw []byte) {
		for _, c := range raw {
			rc.write([]byte{c})
		}
	}
	trickle((&codec.Connect{Version: codec.V311, CleanStart: true, ClientID: []byte("trickle")}).AppendTo(nil))
	rc.expect(codec.TypeConnack, 5*time.Second)
	for _, vec := range codectest.Vectors {
		if vec.Version != codec.V311 {
			continue
		}
		switch p := vec.Packet.(type) {
		case *codec.Publish:
			trickle(vec.Raw)
			switch p.QoS {
			case 1:
				rc.expect(codec.TypePuback, 5*time.Second)
			case 2:
				rc.expect(codec.TypePubrec, 5*time.Second)
				trickle(codec.AppendAck(nil, codec.TypePubrel, p.PacketID))
				rc.expect(codec.TypePubcomp, 5*time.Second)
			}
			got := sub.expectPublish(5 * time.Second)
			if string(got.Topic) != string(p.Topic) || string(got.Payload) != string(p.Payload) {
				t.Fatalf("%s: got %q %q", vec.Name, got.Topic, got.Payload)
			}
			if got.QoS > 0 {
				sub.write(codec.AppendAck(nil, []codec.Type{0, codec.TypePuback, codec.TypePubrec}[got.QoS], got.PacketID))
				if got.QoS == 2 {
					sub.expect(codec.TypePubrel, 5*time.Second)
					sub.write(codec.AppendAck(nil, codec.TypePubcomp, got.PacketID))
				}
			}
		case *codec.Subscribe:
			trickle(vec.Raw)
			rc.expect(codec.TypeSuback, 5*time.Second)
		case *codec.Unsubscribe:
			trickle(vec.Raw)
			rc.expect(codec.TypeUnsuback, 5*time.Second)
		}
	}
	trickle(codec.AppendPingreq(nil))
	rc.expect(codec.TypePingresp, 5*time.Second)
}

// Fifty PUBLISHes in one write arrive in order; a 1 MiB payload sent in
// 3 KiB chunks arrives intact.
func TestReaderCoalescedAndLarge(t *testing.T) {
	b := startBroker(t, nil)
	sub := connected(t, b.MQTTAddr(), "sub", true)
	sub.subscribe(1, codec.Subscription{Filter: []byte("c/#")})
	pub := connected(t, b.MQTTAddr(), "pub", true)
	var all []byte
	for i := 0; i < 50; i++ {
		all = (&codec.Publish{Topic: []byte("c/n"), Payload: []byte(fmt.Sprint(i))}).AppendTo(all, codec.V311)
	}
	pub.write(all)
	for i := 0; i < 50; i++ {
		if p := sub.expectPublish(5 * time.Second); string(p.Payload) != fmt.Sprint(i) {
			t.Fatalf("message %d: %q", i, p.Payload)
		}
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	raw := (&codec.Publish{Topic: []byte("c/big"), Payload: big}).AppendTo(nil, codec.V311)
	for off := 0; off < len(raw); off += 3072 {
		pub.write(raw[off:min(off+3072, len(raw))])
	}
	if p := sub.expectPublish(10 * time.Second); !bytes.Equal(p.Payload, big) {
		t.Fatalf("large payload: %d bytes, equal=%v", len(p.Payload), bytes.Equal(p.Payload, big))
	}
}

// A client that never releases its QoS 2 messages is bounded.
func TestLimitsInboundQoS2Unreleased(t *testing.T) {
	b := startBroker(t, nil)
	rc := connected(t, b.MQTTAddr(), "hoarder", true)
	var all []byte
	for i := 1; i <= DefaultOptions().ReceiveMaximum+1; i++ {
		all = (&codec.Publish{QoS: 2, Topic: []byte("h"), PacketID: uint16(i)}).AppendTo(all, codec.V311)
	}
	rc.write(all)
	for i := 1; i <= DefaultOptions().ReceiveMaximum; i++ {
		rc.expect(codec.TypePubrec, 5*time.Second)
	}
	rc.expectClosed(5 * time.Second)
	if b.Stats().Malformed != 1 {
		t.Fatalf("protocol errors %d; want 1", b.Stats().Malformed)
	}
}
