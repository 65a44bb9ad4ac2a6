package codec_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/codec/codectest"
)

// decode decodes one frame's body into a fresh packet of its type.
func decode(v codec.Version, h codec.FixedHeader, body []byte) (any, error) {
	switch h.Type {
	case codec.TypeConnect:
		p := &codec.Connect{}
		return p, p.Decode(h, body)
	case codec.TypeConnack:
		p := &codec.Connack{}
		return p, p.Decode(v, h, body)
	case codec.TypePublish:
		p := &codec.Publish{}
		return p, p.Decode(v, h, body)
	case codec.TypePuback, codec.TypePubrec, codec.TypePubrel, codec.TypePubcomp:
		p := &codec.Ack{}
		return p, p.Decode(v, h, body)
	case codec.TypeSubscribe:
		p := &codec.Subscribe{}
		return p, p.Decode(v, h, body)
	case codec.TypeSuback:
		p := &codec.Suback{}
		return p, p.Decode(v, h, body)
	case codec.TypeUnsubscribe:
		p := &codec.Unsubscribe{}
		return p, p.Decode(v, h, body)
	case codec.TypeUnsuback:
		p := &codec.Unsuback{}
		return p, p.Decode(v, h, body)
	case codec.TypeDisconnect:
		p := &codec.Disconnect{}
		return p, p.Decode(v, h, body)
	case codec.TypeAuth:
		p := &codec.Auth{}
		return p, p.Decode(v, h, body)
	case codec.TypePingreq, codec.TypePingresp:
		if len(body) != 0 {
			return nil, codec.ErrTrailingBytes
		}
		return nil, nil
	}
	return nil, codec.ErrReservedType
}

// encode appends p (nil: PINGREQ/PINGRESP of type t).
func encode(v codec.Version, t codec.Type, p any) []byte {
	switch p := p.(type) {
	case *codec.Connect:
		if p.Size() != len(p.AppendTo(nil)) {
			panic("Connect.Size disagrees with AppendTo")
		}
		return p.AppendTo(nil)
	case interface {
		AppendTo([]byte, codec.Version) []byte
		Size(codec.Version) int
	}:
		out := p.AppendTo(nil, v)
		if p.Size(v) != len(out) {
			panic(fmt.Sprintf("%T.Size = %d, AppendTo wrote %d", p, p.Size(v), len(out)))
		}
		return out
	case nil:
		if t == codec.TypePingreq {
			return codec.AppendPingreq(nil)
		}
		return codec.AppendPingresp(nil)
	}
	panic(fmt.Sprintf("unknown packet %T", p))
}

// same compares decoded packets treating nil and empty slices alike.
func same(a, b any) bool { return fmt.Sprintf("%+v", a) == fmt.Sprintf("%+v", b) }

func TestVectorsDecode(t *testing.T) {
	for _, vec := range codectest.Vectors {
		t.Run(vec.Name, func(t *testing.T) {
			h, n, err := codec.ReadFrame(vec.Raw, 0)
			if err != nil || n != len(vec.Raw) {
				t.Fatalf("ReadFrame = %d, %v; want %d, nil", n, err, len(vec.Raw))
			}
			got, err := decode(vec.Version, h, vec.Raw[h.HeaderLen:n])
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !same(got, vec.Packet) {
				t.Fatalf("decoded\n got %+v\nwant %+v", got, vec.Packet)
			}
		})
	}
}

func TestVectorsEncode(t *testing.T) {
	for _, vec := range codectest.Vectors {
		t.Run(vec.Name, func(t *testing.T) {
			h, _, _ := codec.ReadFrame(vec.Raw, 0)
			got := encode(vec.Version, h.Type, vec.Packet)
			if !bytes.Equal(got, vec.Raw) {
				t.Fatalf("encoded\n got % x\nwant % x", got, vec.Raw)
			}
		})
	}
}

func TestBadVectors(t *testing.T) {
	for _, vec := range codectest.BadVectors {
		t.Run(vec.Name, func(t *testing.T) {
			h, n, err := codec.ReadFrame(vec.Raw, 0)
			if err == nil {
				if n != len(vec.Raw) {
					t.Fatalf("ReadFrame n = %d; want %d", n, len(vec.Raw))
				}
				_, err = decode(vec.Version, h, vec.Raw[h.HeaderLen:n])
			}
			var ce *codec.Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v; want a *codec.Error", err)
			}
			if ce.Code != vec.Code {
				t.Fatalf("reason code 0x%02x (%v); want 0x%02x", byte(ce.Code), err, byte(vec.Code))
			}
		})
	}
}

// TestReadFrameTrickle feeds every vector one byte at a time: every proper
// prefix is "need more", the whole is one frame.
func TestReadFrameTrickle(t *testing.T) {
	for _, vec := range codectest.Vectors {
		for k := 0; k < len(vec.Raw); k++ {
			h, n, err := codec.ReadFrame(vec.Raw[:k], 0)
			if n != 0 || err != nil {
				t.Fatalf("%s: prefix %d: n=%d err=%v; want need more", vec.Name, k, n, err)
			}
			if k >= 2 && h.HeaderLen > 0 && h.Size() != len(vec.Raw) {
				t.Fatalf("%s: prefix %d announces size %d; want %d", vec.Name, k, h.Size(), len(vec.Raw))
			}
		}
		if _, n, err := codec.ReadFrame(vec.Raw, 0); n != len(vec.Raw) || err != nil {
			t.Fatalf("%s: whole: n=%d err=%v", vec.Name, n, err)
		}
	}
}

// TestReadFrameCoalesced puts every vector into one buffer, 3 times over,
// and reads the frames back in order.
func TestReadFrameCoalesced(t *testing.T) {
	var all []byte
	for r := 0; r < 3; r++ {
		for _, vec := range codectest.Vectors {
			all = append(all, vec.Raw...)
		}
	}
	off := 0
	for r := 0; r < 3; r++ {
		for _, vec := range codectest.Vectors {
			h, n, err := codec.ReadFrame(all[off:], 0)
			if err != nil || n != len(vec.Raw) {
				t.Fatalf("%s: n=%d err=%v; want %d", vec.Name, n, err, len(vec.Raw))
			}
			got, err := decode(vec.Version, h, all[off+h.HeaderLen:off+n])
			if err != nil || !same(got, vec.Packet) {
				t.Fatalf("%s: decoded %+v, %v", vec.Name, got, err)
			}
			off += n
		}
	}
	if off != len(all) {
		t.Fatalf("consumed %d of %d", off, len(all))
	}
}

// TestReadFrameMaxSize: the limit is enforced from the fixed header alone
// (the body has not arrived), and a packet exactly at the limit passes.
func TestReadFrameMaxSize(t *testing.T) {
	hdr := codec.AppendFixedHeader(nil, codec.TypePublish, 0, 1<<20)
	h, n, err := codec.ReadFrame(hdr, 1024)
	if !errors.Is(err, codec.ErrPacketTooLarge) || n != 0 || h.Remaining != 1<<20 {
		t.Fatalf("got n=%d err=%v remaining=%d; want ErrPacketTooLarge for 1 MiB", n, err, h.Remaining)
	}
	p := codec.Publish{Topic: []byte("t"), Payload: make([]byte, 100)}
	raw := p.AppendTo(nil, codec.V311)
	if _, n, err := codec.ReadFrame(raw, len(raw)); err != nil || n != len(raw) {
		t.Fatalf("at the limit: n=%d err=%v", n, err)
	}
	if _, _, err := codec.ReadFrame(raw, len(raw)-1); !errors.Is(err, codec.ErrPacketTooLarge) {
		t.Fatalf("one over the limit: err=%v", err)
	}
}

func TestVarint(t *testing.T) {
	for _, c := range []struct {
		v   uint32
		raw []byte
	}{{0, []byte{0}}, {127, []byte{0x7f}}, {128, []byte{0x80, 1}}, {16383, []byte{0xff, 0x7f}},
		{16384, []byte{0x80, 0x80, 1}}, {2097151, []byte{0xff, 0xff, 0x7f}},
		{2097152, []byte{0x80, 0x80, 0x80, 1}}, {codec.MaxRemaining, []byte{0xff, 0xff, 0xff, 0x7f}}} {
		if got := codec.AppendVarint(nil, c.v); !bytes.Equal(got, c.raw) {
			t.Fatalf("AppendVarint(%d) = % x; want % x", c.v, got, c.raw)
		}
		if codec.VarintSize(c.v) != len(c.raw) {
			t.Fatalf("VarintSize(%d) = %d; want %d", c.v, codec.VarintSize(c.v), len(c.raw))
		}
		v, n, err := codec.ReadVarint(c.raw)
		if v != c.v || n != len(c.raw) || err != nil {
			t.Fatalf("ReadVarint(% x) = %d, %d, %v", c.raw, v, n, err)
		}
	}
	// Only the shortest encoding is read: the engine forwards an inbound
	// PUBLISH frame as it is (router.encoded), as if it had encoded it.
	for _, raw := range [][]byte{{0x80, 0}, {0x85, 0}, {0xff, 0x80, 0}, {0x80, 0x80, 0x80, 0}} {
		if _, _, err := codec.ReadVarint(raw); !errors.Is(err, codec.ErrMalformedLength) {
			t.Fatalf("ReadVarint(% x): err %v; want ErrMalformedLength", raw, err)
		}
		frame := append([]byte{0x30}, raw...)
		if _, _, err := codec.ReadFrame(append(frame, make([]byte, 8)...), 0); err == nil {
			t.Fatalf("ReadFrame accepted the remaining length % x", raw)
		}
	}
}

func TestValidUTF8(t *testing.T) {
	for _, c := range []struct {
		s  string
		ok bool
	}{{"", true}, {"a/b", true}, {"ü/€/𝄞", true}, {"\x00", false}, {"a\x00b", false},
		{"\xc3\x28", false}, {"\xed\xa0\x80", false} /* surrogate U+D800 */, {"\xf4\x90\x80\x80", false}} {
		if got := codec.ValidUTF8([]byte(c.s)); got != c.ok {
			t.Fatalf("ValidUTF8(%q) = %v; want %v", c.s, got, c.ok)
		}
	}
}

// TestPacketIDOffset checks that patching at the reported offset changes
// the decoded packet id, for both versions.
func TestPacketIDOffset(t *testing.T) {
	for _, v := range []codec.Version{codec.V311, codec.V5} {
		p := codec.Publish{QoS: 1, Topic: []byte("a/b"), PacketID: 1, Payload: make([]byte, 300)}
		raw := p.AppendTo(nil, v)
		off := p.PacketIDOffset(v)
		raw[off], raw[off+1] = 0xbe, 0xef
		h, n, _ := codec.ReadFrame(raw, 0)
		var q codec.Publish
		if err := q.Decode(v, h, raw[h.HeaderLen:n]); err != nil || q.PacketID != 0xbeef {
			t.Fatalf("v%d: id %x err %v; want beef", v, q.PacketID, err)
		}
	}
	if off := (&codec.Publish{Topic: []byte("x")}).PacketIDOffset(codec.V311); off != -1 {
		t.Fatalf("QoS 0 offset %d; want -1", off)
	}
}

func TestPublishClone(t *testing.T) {
	topic, payload := []byte("a/b"), []byte("data")
	p := codec.Publish{QoS: 1, Topic: topic, Payload: payload, PacketID: 3}
	q := p.Clone()
	topic[0], payload[0] = 'X', 'X'
	if string(q.Topic) != "a/b" || string(q.Payload) != "data" || q.PacketID != 3 {
		t.Fatalf("clone shares memory with the original: %s %s", q.Topic, q.Payload)
	}
}

func TestConnackReturnCode(t *testing.T) {
	for rc, want := range map[codec.ReasonCode]uint8{codec.Success: 0, codec.UnsupportedProtocolVersion: 1,
		codec.ClientIdentifierNotValid: 2, codec.ServerUnavailable: 3, codec.BadUserNameOrPassword: 4, codec.NotAuthorized: 5} {
		if got := codec.ConnackReturnCode(rc); got != want {
			t.Fatalf("ConnackReturnCode(%#x) = %d; want %d", byte(rc), got, want)
		}
	}
	if codec.TypePubrel.String() != "PUBREL" || codec.Type(99).String() != "UNKNOWN" {
		t.Fatal("Type.String")
	}
}
