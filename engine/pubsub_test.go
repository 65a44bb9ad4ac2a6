package engine

import (
	"fmt"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/tinymq/tinymq/codec"
)

// pahoClient connects a Go paho client (3.1.1).
func pahoClient(t testing.TB, addr, id string, clean bool) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(clean).
		SetAutoReconnect(false).SetConnectRetry(false).SetProtocolVersion(4)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("paho connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

type received struct {
	topic   string
	payload string
	qos     byte
	retain  bool
}

func pahoSubscribe(t testing.TB, c mqtt.Client, filter string, qos byte) chan received {
	t.Helper()
	ch := make(chan received, 10000)
	tok := c.Subscribe(filter, qos, func(_ mqtt.Client, m mqtt.Message) {
		ch <- received{m.Topic(), string(m.Payload()), m.Qos(), m.Retained()}
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return ch
}

func next(t testing.TB, ch chan received) received {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no message within 5s")
		return received{}
	}
}

// [MQTT-3.8.4-6] Delivered QoS is the minimum of published and granted.
func TestPublishQoSMatrix(t *testing.T) {
	b := startBroker(t, nil)
	pub := pahoClient(t, b.MQTTAddr(), "pub", true)
	for _, granted := range []byte{0, 1, 2} {
		sub := pahoClient(t, b.MQTTAddr(), fmt.Sprintf("sub%d", granted), true)
		ch := pahoSubscribe(t, sub, fmt.Sprintf("m/%d/#", granted), granted)
		for _, q := range []byte{0, 1, 2} {
			tok := pub.Publish(fmt.Sprintf("m/%d/x", granted), q, false, fmt.Sprintf("q%d", q))
			if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("publish: %v", tok.Error())
			}
			m := next(t, ch)
			if m.payload != fmt.Sprintf("q%d", q) || m.qos != min(q, granted) {
				t.Fatalf("granted %d published %d: got %+v; want qos %d", granted, q, m, min(q, granted))
			}
		}
	}
}

// [MQTT-4.3.2-2] QoS 1 inbound is answered with PUBACK.
func TestQoS1Puback(t *testing.T) {
	b := startBroker(t, nil)
	rc := connected(t, b.MQTTAddr(), "q1", true)
	rc.publish("a", "x", 1, false, 77)
	_, body := rc.expect(codec.TypePuback, 5*time.Second)
	if body[0] != 0 || body[1] != 77 {
		t.Fatalf("PUBACK id % x; want 00 4d", body)
	}
}

// [MQTT-4.3.3-2] [MQTT-4.3.3-3] QoS 2 inbound: PUBREC, PUBREL, PUBCOMP, and a resent
// PUBLISH before PUBREL is not delivered twice.
func TestQoS2ExactlyOnce(t *testing.T) {
	b := startBroker(t, nil)
	sub := connected(t, b.MQTTAddr(), "sub", true)
	sub.subscribe(1, codec.Subscription{Filter: []byte("q2"), QoS: 2})
	pub := connected(t, b.MQTTAddr(), "pub", true)
	pub.publish("q2", "once", 2, false, 5)
	pub.expect(codec.TypePubrec, 5*time.Second)
	p := codec.Publish{Dup: true, QoS: 2, Topic: []byte("q2"), Payload: []byte("once"), PacketID: 5}
	pub.write(p.AppendTo(nil, codec.V311)) // resent with DUP before PUBREL
	pub.expect(codec.TypePubrec, 5*time.Second)
	pub.write(codec.AppendAck(nil, codec.TypePubrel, 5))
	_, body := pub.expect(codec.TypePubcomp, 5*time.Second)
	if body[1] != 5 {
		t.Fatalf("PUBCOMP id %d", body[1])
	}
	got := sub.expectPublish(5 * time.Second)
	if string(got.Payload) != "once" || got.QoS != 2 {
		t.Fatalf("got %+v", got)
	}
	// Outbound QoS 2 flow with the subscriber: PUBREC -> PUBREL -> PUBCOMP.
	sub.write(codec.AppendAck(nil, codec.TypePubrec, got.PacketID))
	_, rel := sub.expect(codec.TypePubrel, 5*time.Second)
	if uint16(rel[0])<<8|uint16(rel[1]) != got.PacketID {
		t.Fatalf("PUBREL id % x; want %d", rel, got.PacketID)
	}
	sub.write(codec.AppendAck(nil, codec.TypePubcomp, got.PacketID))
	sub.expectNothing(300 * time.Millisecond) // the duplicate never arrives
	// After PUBREL the id is free again: a new PUBLISH with it is delivered.
	pub.publish("q2", "again", 2, false, 5)
	pub.expect(codec.TypePubrec, 5*time.Second)
	if p := sub.expectPublish(5 * time.Second); string(p.Payload) != "again" {
		t.Fatalf("second message %q", p.Payload)
	}
}

// [MQTT-3.8.4-1] [MQTT-3.8.4-4] [MQTT-3.8.4-5] One SUBACK code per filter, in order.
func TestSubscribeSeveralFilters(t *testing.T) {
	b := startBroker(t, nil)
	rc := connected(t, b.MQTTAddr(), "s", true)
	codes := rc.subscribe(3,
		codec.Subscription{Filter: []byte("a/+"), QoS: 2},
		codec.Subscription{Filter: []byte("a/#/b"), QoS: 1},
		codec.Subscription{Filter: []byte("c"), QoS: 1})
	want := []codec.ReasonCode{2, 0x80, 1}
	if fmt.Sprint(codes) != fmt.Sprint(want) {
		t.Fatalf("SUBACK %v; want %v", codes, want)
	}
}

// [MQTT-3.3.5-1] Overlapping subscriptions deliver one copy at the highest QoS.
func TestSubscribeOverlapOneCopy(t *testing.T) {
	b := startBroker(t, nil)
	rc := connected(t, b.MQTTAddr(), "o", true)
	rc.subscribe(1, codec.Subscription{Filter: []byte("a/+")}, codec.Subscription{Filter: []byte("a/#"), QoS: 1})
	pub := connected(t, b.MQTTAddr(), "p", true)
	pub.publish("a/b", "one", 1, false, 1)
	p := rc.expectPublish(5 * time.Second)
	if p.QoS != 1 {
		t.Fatalf("QoS %d; want 1", p.QoS)
	}
	rc.write(codec.AppendAck(nil, codec.TypePuback, p.PacketID))
	rc.expectNothing(300 * time.Millisecond)
}

// [MQTT-3.10.4-1] [MQTT-3.10.4-4] [MQTT-3.10.4-5] UNSUBACK echoes the id; no delivery afterwards.
func TestSubscribeUnsubscribe(t *testing.T) {
	b := startBroker(t, nil)
	rc := connected(t, b.MQTTAddr(), "u", true)
	rc.subscribe(1, codec.Subscription{Filter: []byte("sport/#")})
	pub := connected(t, b.MQTTAddr(), "p", true)
	pub.publish("sport", "parent", 0, false, 0) // sport/# matches sport
	if p := rc.expectPublish(5 * time.Second); string(p.Topic) != "sport" {
		t.Fatalf("topic %q", p.Topic)
	}
	u := codec.Unsubscribe{PacketID: 9, Filters: [][]byte{[]byte("sport/#"), []byte("never/subscribed")}}
	rc.write(u.AppendTo(nil, codec.V311))
	_, body := rc.expect(codec.TypeUnsuback, 5*time.Second)
	if body[1] != 9 {
		t.Fatalf("UNSUBACK id %d; want 9", body[1])
	}
	pub.publish("sport/x", "gone", 0, false, 0)
	rc.expectNothing(300 * time.Millisecond)
}

// [MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-8] [MQTT-3.3.1-9] [MQTT-3.3.1-10]
// [MQTT-3.3.1-11] [MQTT-3.8.4-3] Retained messages.
func TestRetainLifecycle(t *testing.T) {
	b := startBroker(t, nil)
	pub := connected(t, b.MQTTAddr(), "p", true)
	pub.publish("r/t", "first", 1, true, 1)
	pub.expect(codec.TypePuback, 5*time.Second)
	pub.publish("r/t", "second", 1, true, 2) // replaces
	pub.expect(codec.TypePuback, 5*time.Second)

	s1 := connected(t, b.MQTTAddr(), "s1", true)
	s1.subscribe(1, codec.Subscription{Filter: []byte("r/#"), QoS: 1})
	p := s1.expectPublish(5 * time.Second)
	if string(p.Payload) != "second" || !p.Retain {
		t.Fatalf("on subscribe got %q retain=%v; want second, retain set", p.Payload, p.Retain)
	}
	s1.write(codec.AppendAck(nil, codec.TypePuback, p.PacketID))
	// Live delivery of a retained publish has the flag cleared.
	pub.publish("r/t", "live", 0, true, 0)
	if p := s1.expectPublish(5 * time.Second); p.Retain || string(p.Payload) != "live" {
		t.Fatalf("live delivery retain=%v payload %q", p.Retain, p.Payload)
	}
	// Re-subscribing with the identical filter re-sends retained messages.
	if codes := s1.subscribe(2, codec.Subscription{Filter: []byte("r/#")}); codes[0] != 0 {
		t.Fatalf("resubscribe %v", codes)
	}
	if p := s1.expectPublish(5 * time.Second); !p.Retain || string(p.Payload) != "live" {
		t.Fatalf("resubscribe got retain=%v %q", p.Retain, p.Payload)
	}
	// An empty retained payload deletes it.
	pub.publish("r/t", "", 0, true, 0)
	s1.expectPublish(5 * time.Second) // the empty message itself is delivered live
	s2 := connected(t, b.MQTTAddr(), "s2", true)
	s2.subscribe(1, codec.Subscription{Filter: []byte("r/#")})
	s2.expectNothing(300 * time.Millisecond)
	if n := b.Stats().Retained; n != 0 {
		t.Fatalf("retained count %d; want 0", n)
	}
}

// [MQTT-4.6.0-6] Messages from one publisher on one topic keep their order
// at each QoS, also for subscribers on the other event loop.
func TestOrderingPerPublisher(t *testing.T) {
	b := startBroker(t, nil)
	pub := pahoClient(t, b.MQTTAddr(), "pub", true)
	var chans []chan received
	for i := 0; i < 4; i++ { // 4 connections spread over 2 loops
		c := pahoClient(t, b.MQTTAddr(), fmt.Sprintf("sub%d", i), true)
		chans = append(chans, pahoSubscribe(t, c, "ord/#", byte(i%2)))
	}
	const n0, n1 = 2000, 1000
	for i := 0; i < n0; i++ {
		pub.Publish("ord/0", 0, false, fmt.Sprint(i))
	}
	for i := 0; i < n1; i++ {
		pub.Publish("ord/1", 1, false, fmt.Sprint(i))
	}
	if tok := pub.Publish("ord/1", 1, false, "end"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal("final publish")
	}
	for si, ch := range chans {
		want := map[string]int{"ord/0": 0, "ord/1": 0}
		for {
			m := next(t, ch)
			if m.payload == "end" {
				break
			}
			if m.payload != fmt.Sprint(want[m.topic]) {
				t.Fatalf("subscriber %d topic %s: got %s; want %d", si, m.topic, m.payload, want[m.topic])
			}
			want[m.topic]++
		}
		if want["ord/1"] != n1 || want["ord/0"] != n0 {
			t.Fatalf("subscriber %d received %v; want %d and %d", si, want, n0, n1)
		}
	}
}

func pahoSubscribeFunc(t testing.TB, c mqtt.Client, filter string, qos byte, fn func(payload []byte)) {
	t.Helper()
	tok := c.Subscribe(filter, qos, func(_ mqtt.Client, m mqtt.Message) { fn(m.Payload()) })
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
}

// The router keeps its last match for the next PUBLISH to the same
// topic (router.match): a subscription added or removed meanwhile, on
// this topic or another, is seen by the very next PUBLISH, and a shared
// group still picks a member per message.
func TestMatchMemoFollowsSubscriptions(t *testing.T) {
	b := startBroker(t, nil)
	pub := connected(t, b.MQTTAddr(), "mpub", true)
	a := connected(t, b.MQTTAddr(), "ma", true)
	a.subscribe(1, codec.Subscription{Filter: []byte("memo/t"), QoS: 0})
	pub.publish("memo/t", "1", 0, false, 0)
	pub.publish("memo/t", "2", 0, false, 0)
	for _, want := range []string{"1", "2"} {
		if m := a.expectPublish(5 * time.Second); string(m.Payload) != want {
			t.Fatalf("a got %q; want %q", m.Payload, want)
		}
	}
	c := connected(t, b.MQTTAddr(), "mc", true)
	c.subscribe(1, codec.Subscription{Filter: []byte("memo/#"), QoS: 0})
	pub.publish("memo/t", "3", 0, false, 0)
	if m := c.expectPublish(5 * time.Second); string(m.Payload) != "3" {
		t.Fatalf("a new subscriber got %q; want 3", m.Payload)
	}
	a.expectPublish(5 * time.Second)
	a.write((&codec.Unsubscribe{PacketID: 2, Filters: [][]byte{[]byte("memo/t")}}).AppendTo(nil, codec.V311))
	a.expect(codec.TypeUnsuback, 5*time.Second)
	pub.publish("memo/t", "4", 0, false, 0)
	c.expectPublish(5 * time.Second)
	a.expectNothing(200 * time.Millisecond)

	g1 := connected(t, b.MQTTAddr(), "mg1", true)
	g2 := connected(t, b.MQTTAddr(), "mg2", true)
	g1.subscribe(1, codec.Subscription{Filter: []byte("$share/g/memo/s"), QoS: 0})
	g2.subscribe(1, codec.Subscription{Filter: []byte("$share/g/memo/s"), QoS: 0})
	for i := range 4 {
		pub.publish("memo/s", fmt.Sprint(i), 0, false, 0)
	}
	n1, n2 := 0, 0
	deadline := time.Now().Add(5 * time.Second)
	for n1+n2 < 4 && time.Now().Before(deadline) {
		if _, _, err := g1.readPacket(50 * time.Millisecond); err == nil {
			n1++
		}
		if _, _, err := g2.readPacket(50 * time.Millisecond); err == nil {
			n2++
		}
	}
	if n1 != 2 || n2 != 2 {
		t.Fatalf("shared group got %d and %d of 4; want 2 each (round-robin per message)", n1, n2)
	}
}
