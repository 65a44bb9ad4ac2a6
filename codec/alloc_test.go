//go:build !race

package codec_test

import (
	"testing"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/codec/codectest"
)

func vector(t *testing.T, name string) (codec.FixedHeader, []byte, []byte) {
	t.Helper()
	for _, v := range codectest.Vectors {
		if v.Name == name {
			h, n, err := codec.ReadFrame(v.Raw, 0)
			if err != nil || n == 0 {
				t.Fatalf("%s: %v", name, err)
			}
			return h, v.Raw[h.HeaderLen:n], v.Raw
		}
	}
	t.Fatalf("no vector %s", name)
	return codec.FixedHeader{}, nil, nil
}

func zeroAllocs(t *testing.T, what string, f func()) {
	t.Helper()
	f() // grow reused destinations first
	if n := testing.AllocsPerRun(200, f); n != 0 {
		t.Fatalf("%s: %.1f allocations; want 0", what, n)
	}
}

func TestAllocsDecode(t *testing.T) {
	var (
		pub   codec.Publish
		ack   codec.Ack
		sub   codec.Subscribe
		unsub codec.Unsubscribe
		conn  codec.Connect
	)
	cases := []struct {
		vec string
		v   codec.Version
		dec func(v codec.Version, h codec.FixedHeader, body []byte) error
	}{
		{"publish/v311/qos1-dup-retain", codec.V311, pub.Decode},
		{"publish/v5/qos1-props", codec.V5, pub.Decode},
		{"puback/v311", codec.V311, ack.Decode},
		{"pubrec/v311", codec.V311, ack.Decode},
		{"pubrel/v311", codec.V311, ack.Decode},
		{"pubcomp/v311", codec.V311, ack.Decode},
		{"pubrec/v5/reason-string", codec.V5, ack.Decode},
		{"subscribe/v311/two", codec.V311, sub.Decode},
		{"subscribe/v5/options", codec.V5, sub.Decode},
		{"unsubscribe/v311", codec.V311, unsub.Decode},
		{"connect/v311/minimal", 0, func(_ codec.Version, h codec.FixedHeader, b []byte) error { return conn.Decode(h, b) }},
		{"connect/v31/will-user-pass", 0, func(_ codec.Version, h codec.FixedHeader, b []byte) error { return conn.Decode(h, b) }},
		{"connect/v5/props-will-props", 0, func(_ codec.Version, h codec.FixedHeader, b []byte) error { return conn.Decode(h, b) }},
	}
	for _, c := range cases {
		h, body, raw := vector(t, c.vec)
		zeroAllocs(t, "ReadFrame "+c.vec, func() { _, _, _ = codec.ReadFrame(raw, 1<<20) })
		zeroAllocs(t, "decode "+c.vec, func() {
			if err := c.dec(c.v, h, body); err != nil {
				t.Fatal(err)
			}
		})
	}
	zeroAllocs(t, "PINGREQ frame", func() { _, _, _ = codec.ReadFrame([]byte{0xc0, 0}, 0) })
}

func TestAllocsEncode(t *testing.T) {
	dst := make([]byte, 0, 4096)
	pub := codec.Publish{QoS: 1, Topic: []byte("sensor/1/temp"), PacketID: 9, Payload: make([]byte, 256)}
	pub5 := pub
	pub5.Props = codec.Properties{Present: 1 << codec.PropMessageExpiry, MessageExpiry: 9,
		User: []codec.UserProperty{{Key: []byte("a"), Value: []byte("b")}}}
	suback := codec.Suback{PacketID: 3, Reasons: []codec.ReasonCode{0, 1, 2}}
	connack := codec.Connack{SessionPresent: true}
	zeroAllocs(t, "PUBLISH v3.1.1", func() { dst = pub.AppendTo(dst[:0], codec.V311) })
	zeroAllocs(t, "PUBLISH v5", func() { dst = pub5.AppendTo(dst[:0], codec.V5) })
	zeroAllocs(t, "PUBACK", func() { dst = codec.AppendAck(dst[:0], codec.TypePuback, 9) })
	zeroAllocs(t, "SUBACK", func() { dst = suback.AppendTo(dst[:0], codec.V311) })
	zeroAllocs(t, "CONNACK v3.1.1", func() { dst = connack.AppendTo(dst[:0], codec.V311) })
	zeroAllocs(t, "CONNACK v5", func() { dst = connack.AppendTo(dst[:0], codec.V5) })
}

func TestAllocsCheckUTF8(t *testing.T) {
	s := []byte("sensors/\xc3\xa9t\xc3\xa9/\xf0\x9f\x98\x80/temp")
	bad := []byte("a/\xef\xbf\xbf")
	zeroAllocs(t, "CheckUTF8", func() {
		if codec.CheckUTF8(s) != nil || codec.CheckUTF8(bad) == nil {
			t.Fatal("wrong verdict")
		}
	})
}
