package engine

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
)

// frameOf is a received packet's bytes as they were on the wire: the
// header readPacket parsed plus the body.
func frameOf(h codec.FixedHeader, body []byte) []byte {
	f := []byte{byte(h.Type)<<4 | h.Flags}
	f = codec.AppendVarint(f, uint32(h.Remaining))
	return append(f, body...)
}

// TestForwardInboundFrame: a 3.1.1 reader at the publisher's QoS gets the
// publisher's own PUBLISH bytes (router.encoded hands the inbound frame
// over instead of encoding it again), with its own packet id at QoS 1;
// everything else is encoded afresh: a lower QoS, a DUP re-send, RETAIN,
// and a 5.0 reader.
func TestForwardInboundFrame(t *testing.T) {
	b := startBroker(t, nil)
	addr := b.MQTTAddr()
	sub1 := connected(t, addr, "fwd-sub1", true)
	sub1.subscribe(1, codec.Subscription{Filter: []byte("fwd/#"), QoS: 1})
	sub0 := connected(t, addr, "fwd-sub0", true)
	sub0.subscribe(1, codec.Subscription{Filter: []byte("fwd/#"), QoS: 0})
	sub5 := dialRaw(t, addr)
	sub5.ver = codec.V5
	if ack := sub5.connect(codec.Connect{Version: codec.V5, ClientID: []byte("fwd-sub5"), CleanStart: true, KeepAlive: 60}); ack.Reason != 0 {
		t.Fatalf("5.0 CONNACK %v", ack.Reason)
	}
	sub5.subscribe(1, codec.Subscription{Filter: []byte("fwd/#"), QoS: 1})
	pub := connected(t, addr, "fwd-pub", true)

	encode := func(p codec.Publish, ver codec.Version) []byte { return p.AppendTo(nil, ver) }
	// next reads rc's next PUBLISH as raw bytes and acknowledges it at QoS 1.
	next := func(rc *rawClient) ([]byte, codec.Publish) {
		t.Helper()
		h, body := rc.expect(codec.TypePublish, 5*time.Second)
		var p codec.Publish
		if err := p.Decode(rc.ver, h, body); err != nil {
			t.Fatal(err)
		}
		if p.QoS == 1 {
			a := codec.Ack{Type: codec.TypePuback, PacketID: p.PacketID}
			rc.write(a.AppendTo(nil, rc.ver))
		}
		return frameOf(h, body), p.Clone()
	}
	payload := bytes.Repeat([]byte("0123456789"), 20) // a two-byte remaining length

	// QoS 0: the same bytes to both 3.1.1 readers.
	q0 := encode(codec.Publish{Topic: []byte("fwd/a"), Payload: payload}, codec.V311)
	pub.write(q0)
	for _, rc := range []*rawClient{sub1, sub0} {
		if got, _ := next(rc); !bytes.Equal(got, q0) {
			t.Fatalf("QoS 0: got\n%x\nwant the publisher's\n%x", got, q0)
		}
	}
	if _, p := next(sub5); string(p.Topic) != "fwd/a" || !bytes.Equal(p.Payload, payload) || p.QoS != 0 {
		t.Fatalf("5.0 reader, QoS 0: %+v", p)
	}

	// QoS 1, then a DUP re-send of another: the QoS 1 reader's copy is the
	// publisher's bytes with the reader's own packet id, and never DUP;
	// the QoS 0 reader's has no packet id.
	for i, dup := range []bool{false, true} {
		id := uint16(0x1234 + i)
		q1 := encode(codec.Publish{Topic: []byte("fwd/b"), Payload: payload, QoS: 1, PacketID: id, Dup: dup}, codec.V311)
		pub.write(q1)
		pub.expect(codec.TypePuback, 5*time.Second)
		got, p := next(sub1)
		if p.PacketID == id {
			t.Fatalf("QoS 1 dup=%v: the reader got the publisher's packet id %#x", dup, id)
		}
		want := encode(codec.Publish{Topic: []byte("fwd/b"), Payload: payload, QoS: 1, PacketID: p.PacketID}, codec.V311)
		if !bytes.Equal(got, want) {
			t.Fatalf("QoS 1 dup=%v: got\n%x\nwant\n%x", dup, got, want)
		}
		if got, _ := next(sub0); !bytes.Equal(got, encode(codec.Publish{Topic: []byte("fwd/b"), Payload: payload}, codec.V311)) {
			t.Fatalf("QoS 1 to a QoS 0 reader, dup=%v: got\n%x", dup, got)
		}
		if _, p := next(sub5); p.QoS != 1 || p.Dup || !bytes.Equal(p.Payload, payload) {
			t.Fatalf("5.0 reader, QoS 1 dup=%v: %+v", dup, p)
		}
	}

	// RETAIN: a live subscriber's copy has it cleared [MQTT-3.3.1-9].
	r0 := encode(codec.Publish{Topic: []byte("fwd/c"), Payload: payload, Retain: true}, codec.V311)
	pub.write(r0)
	want := encode(codec.Publish{Topic: []byte("fwd/c"), Payload: payload}, codec.V311)
	for _, rc := range []*rawClient{sub1, sub0} {
		if got, _ := next(rc); !bytes.Equal(got, want) {
			t.Fatalf("RETAIN: got\n%x\nwant\n%x", got, want)
		}
	}
	next(sub5)
	if binary.BigEndian.Uint16(want[3:]) != 5 {
		t.Fatalf("test frame layout: %x", want[:8])
	}
}
