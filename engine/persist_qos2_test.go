package engine

import (
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/engine/store"
)

// QoS 2 exactly once across a crash (docs/durability.md) needs, with
// --fsync always, every frame of a QoS 2 exchange that a crash could
// contradict to wait until the store has what it depends on. A store whose
// writes fail (failingFS, like a full disk) makes "not durable yet" last
// as long as the test wants, so each hold is seen from the client's side:
//   - PUBCOMP to a publisher waits until the release of its inbound id is
//     durable (sent earlier, the publisher reuses the id, a crash brings
//     the old one back and the new message is taken for a re-send: lost);
//   - a QoS 2 PUBLISH to a persistent subscriber waits until the message
//     and its in-flight record are durable, and its PUBREL until "PUBREL
//     sent" is (sent earlier, a crash makes the broker deliver again what
//     the subscriber has completed: a duplicate);
//   - a clean-session subscriber is not held (its state ends with the
//     connection anyway).
//
// After a restart the publisher reuses the released id for a new message,
// which the subscriber gets.
func TestPersistQoS2HeldUntilDurable(t *testing.T) {
	dir := t.TempDir()
	inj := newFailingFS()
	b := persistentBroker(t, dir, store.FsyncAlways, func(o *Options) { o.storeFS = inj.fs })
	sub := connected(t, b.MQTTAddr(), "sub", false)
	sub.subscribe(1, codec.Subscription{Filter: []byte("q/#"), QoS: 2})
	live := connected(t, b.MQTTAddr(), "live", true)
	live.subscribe(1, codec.Subscription{Filter: []byte("q/#"), QoS: 2})
	pub := connected(t, b.MQTTAddr(), "pub", false)
	ackID := func(rc *rawClient, typ codec.Type) uint16 {
		t.Helper()
		h, body := rc.expect(typ, 10*time.Second)
		var a codec.Ack
		if err := a.Decode(codec.V311, h, body); err != nil {
			t.Fatal(err)
		}
		return a.PacketID
	}
	// A clean subscriber's half of a QoS 2 delivery: PUBLISH, PUBREC,
	// PUBREL, PUBCOMP, none of it waiting for the store.
	cleanDelivery := func(want string) {
		t.Helper()
		p := live.expectPublish(2 * time.Second)
		if string(p.Payload) != want {
			t.Fatalf("clean subscriber got %q; want %q", p.Payload, want)
		}
		live.write(codec.AppendAck(nil, codec.TypePubrec, p.PacketID))
		if id := ackID(live, codec.TypePubrel); id != p.PacketID {
			t.Fatalf("PUBREL %d to the clean subscriber; want %d", id, p.PacketID)
		}
		live.write(codec.AppendAck(nil, codec.TypePubcomp, p.PacketID))
	}

	// A whole exchange while the store works.
	pub.publish("q/a", "m0", 2, false, 1)
	if id := ackID(pub, codec.TypePubrec); id != 1 {
		t.Fatalf("PUBREC %d", id)
	}
	p := sub.expectPublish(5 * time.Second)
	sub.write(codec.AppendAck(nil, codec.TypePubrec, p.PacketID))
	ackID(sub, codec.TypePubrel)
	sub.write(codec.AppendAck(nil, codec.TypePubcomp, p.PacketID))
	cleanDelivery("m0")
	pub.write(codec.AppendAck(nil, codec.TypePubrel, 1))
	ackID(pub, codec.TypePubcomp)

	// Not durable: the persistent subscriber gets nothing, the
	// publisher no PUBREC; the clean subscriber gets it all.
	inj.on.Store(true)
	pub.publish("q/a", "m1", 2, false, 2)
	cleanDelivery("m1")
	sub.expectNothing(500 * time.Millisecond)
	pub.expectNothing(100 * time.Millisecond)
	inj.on.Store(false)
	if id := ackID(pub, codec.TypePubrec); id != 2 {
		t.Fatalf("PUBREC %d after recovery", id)
	}
	p = sub.expectPublish(10 * time.Second)
	if string(p.Payload) != "m1" {
		t.Fatalf("persistent subscriber got %q", p.Payload)
	}
	waitFor(t, 10*time.Second, "the store healthy again", func() bool { return b.StoreHealth() == nil })

	// PUBREL to the subscriber and PUBCOMP to the publisher wait too.
	inj.on.Store(true)
	sub.write(codec.AppendAck(nil, codec.TypePubrec, p.PacketID))
	pub.write(codec.AppendAck(nil, codec.TypePubrel, 2))
	sub.expectNothing(500 * time.Millisecond)
	pub.expectNothing(100 * time.Millisecond)
	inj.on.Store(false)
	if id := ackID(sub, codec.TypePubrel); id != p.PacketID {
		t.Fatalf("PUBREL %d; want %d", id, p.PacketID)
	}
	sub.write(codec.AppendAck(nil, codec.TypePubcomp, p.PacketID))
	if id := ackID(pub, codec.TypePubcomp); id != 2 {
		t.Fatalf("PUBCOMP %d; want 2", id)
	}
	waitFor(t, 10*time.Second, "the store healthy again", func() bool { return b.StoreHealth() == nil })

	// Id 2 is free, in the store too: after a restart the publisher's new
	// message under it is delivered, not taken for a re-send.
	sub.write([]byte{0xe0, 0})
	pub.write([]byte{0xe0, 0})
	stopBroker(t, b)
	b = persistentBroker(t, dir, store.FsyncAlways, nil)
	pub = dialRaw(t, b.MQTTAddr())
	if ack := pub.connect(codec.Connect{ClientID: []byte("pub"), KeepAlive: 60}); !ack.SessionPresent {
		t.Fatal("publisher's session lost")
	}
	sub = dialRaw(t, b.MQTTAddr())
	if ack := sub.connect(codec.Connect{ClientID: []byte("sub"), KeepAlive: 60}); !ack.SessionPresent {
		t.Fatal("subscriber's session lost")
	}
	pub.publish("q/a", "m2", 2, false, 2)
	ackID(pub, codec.TypePubrec)
	if p := sub.expectPublish(5 * time.Second); string(p.Payload) != "m2" || p.Dup {
		t.Fatalf("after the restart: %q (dup %v); want m2, new", p.Payload, p.Dup)
	}
}

// Once a frame for a connection waits for durability, later frames for
// it wait behind it: a QoS 0 PUBLISH does not overtake a held QoS 2 one
// to the same subscriber [MQTT-4.6.0-6], and all of them come in
// publishing order once the store works again.
func TestPersistHeldFramesInOrder(t *testing.T) {
	dir := t.TempDir()
	inj := newFailingFS()
	b := persistentBroker(t, dir, store.FsyncAlways, func(o *Options) { o.storeFS = inj.fs })
	sub := connected(t, b.MQTTAddr(), "sub", false)
	sub.subscribe(1, codec.Subscription{Filter: []byte("o/#"), QoS: 2})
	pub := connected(t, b.MQTTAddr(), "pub", true)
	inj.on.Store(true)
	var raw []byte
	for i := range 10 {
		p := codec.Publish{Topic: []byte("o/x"), Payload: []byte{byte('0' + i)}, QoS: uint8(2 * (1 - i%2)), PacketID: uint16(i + 1)}
		raw = p.AppendTo(raw, codec.V311)
	}
	pub.write(raw) // QoS 2, 0, 2, 0, ...
	sub.expectNothing(500 * time.Millisecond)
	inj.on.Store(false)
	for i := range 10 {
		p := sub.expectPublish(10 * time.Second)
		if want := string(rune('0' + i)); string(p.Payload) != want || p.QoS != uint8(2*(1-i%2)) {
			t.Fatalf("delivery %d: %q at QoS %d; want %q at QoS %d", i, p.Payload, p.QoS, want, 2*(1-i%2))
		}
		if p.QoS == 2 {
			sub.write(codec.AppendAck(nil, codec.TypePubrec, p.PacketID))
		}
	}
}

// Without --fsync always nothing waits: in interval mode a QoS 2 PUBLISH
// and its PUBREL reach a persistent subscriber while the store fails (only
// the publisher's acknowledgements are held then, in every mode), and with
// persistence off no loop holds anything.
func TestPersistQoS2NotHeldWithoutAlways(t *testing.T) {
	inj := newFailingFS()
	b := persistentBroker(t, t.TempDir(), store.FsyncInterval, func(o *Options) { o.storeFS = inj.fs })
	sub := connected(t, b.MQTTAddr(), "sub", false)
	sub.subscribe(1, codec.Subscription{Filter: []byte("i/#"), QoS: 2})
	pub := connected(t, b.MQTTAddr(), "pub", true)
	inj.on.Store(true)
	pub.publish("i/x", "a", 2, false, 1)
	p := sub.expectPublish(2 * time.Second)
	sub.write(codec.AppendAck(nil, codec.TypePubrec, p.PacketID))
	sub.expect(codec.TypePubrel, 2*time.Second)
	inj.on.Store(false)

	m := startBroker(t, nil) // persistence off
	sub = connected(t, m.MQTTAddr(), "sub", false)
	sub.subscribe(1, codec.Subscription{Filter: []byte("i/#"), QoS: 2})
	pub = connected(t, m.MQTTAddr(), "pub", false)
	for i := range 20 {
		id := uint16(i%3 + 1) // ids reused at once
		pub.publish("i/x", "b", 2, false, id)
		pub.expect(codec.TypePubrec, 2*time.Second)
		p := sub.expectPublish(2 * time.Second)
		sub.write(codec.AppendAck(nil, codec.TypePubrec, p.PacketID))
		sub.expect(codec.TypePubrel, 2*time.Second)
		sub.write(codec.AppendAck(nil, codec.TypePubcomp, p.PacketID))
		pub.write(codec.AppendAck(nil, codec.TypePubrel, id))
		pub.expect(codec.TypePubcomp, 2*time.Second)
		for _, l := range m.allLoops() {
			if l.ps.waiting.Load() {
				t.Fatalf("exchange %d: a loop holds frames with persistence off", i)
			}
		}
	}
}
