package codec_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/tinymq/tinymq/codec"
)

// TestCheckUTF8 [MQTT-1.5.3-1] [MQTT-1.5.3-2] [MQTT-1.5.4-1] [MQTT-1.5.4-2]:
// each rule names its own error; the edges of every range are checked.
func TestCheckUTF8(t *testing.T) {
	cases := []struct {
		s    string
		want *codec.Error
	}{
		{"", nil},
		{"a/b", nil},
		{" ~", nil},                  // U+0020, U+007E: the printable edges
		{"\xc2\xa0", nil},            // U+00A0: first after the C1 block
		{"\xef\xb7\x8f", nil},        // U+FDCF
		{"\xef\xb7\xb0", nil},        // U+FDF0
		{"\xef\xbf\xbd", nil},        // U+FFFD (the replacement character itself)
		{"\xf0\x9f\x98\x80", nil},    // U+1F600
		{"\xef\xbb\xbf", nil},        // BOM: kept, never stripped [MQTT-1.5.3-3]
		{"a\x00", codec.ErrNullChar}, // [MQTT-1.5.3-2]
		{"\x01", codec.ErrControlChar},
		{"\x1f", codec.ErrControlChar},
		{"\n", codec.ErrControlChar},
		{"\x7f", codec.ErrControlChar},
		{"\xc2\x80", codec.ErrControlChar},          // U+0080
		{"\xc2\x9f", codec.ErrControlChar},          // U+009F
		{"\xef\xb7\x90", codec.ErrNonCharacter},     // U+FDD0
		{"\xef\xb7\xaf", codec.ErrNonCharacter},     // U+FDEF
		{"\xef\xbf\xbe", codec.ErrNonCharacter},     // U+FFFE
		{"\xef\xbf\xbf", codec.ErrNonCharacter},     // U+FFFF
		{"\xf0\x9f\xbf\xbe", codec.ErrNonCharacter}, // U+1FFFE
		{"\xf4\x8f\xbf\xbf", codec.ErrNonCharacter}, // U+10FFFF
		{"\xff", codec.ErrBadUTF8},
		{"\xc0\x80", codec.ErrBadUTF8},     // overlong U+0000
		{"\xed\xa0\x80", codec.ErrBadUTF8}, // surrogate U+D800
		{"\xf4\x90\x80\x80", codec.ErrBadUTF8},
		{"a\xc3", codec.ErrBadUTF8}, // truncated
	}
	for _, tc := range cases {
		if got := codec.CheckUTF8([]byte(tc.s)); got != tc.want {
			t.Errorf("CheckUTF8(%q) = %v; want %v", tc.s, got, tc.want)
		}
		if ok := codec.ValidUTF8([]byte(tc.s)); ok != (tc.want == nil) {
			t.Errorf("ValidUTF8(%q) = %v", tc.s, ok)
		}
	}
}

// TestPubrelDupByVersion [MQTT-3.6.1-1]: PUBREL 0x6a (DUP, QoS 1) is an
// MQTT 3.1 re-send; 3.1.1 and 5.0 take 0x62 only.
func TestPubrelDupByVersion(t *testing.T) {
	raw := []byte{0x6a, 2, 0, 9}
	h, n, err := codec.ReadFrame(raw, 0)
	if err != nil || n != len(raw) {
		t.Fatalf("ReadFrame: n=%d err=%v", n, err)
	}
	var a codec.Ack
	if err := a.Decode(codec.V31, h, raw[h.HeaderLen:]); err != nil || a.PacketID != 9 || a.Type != codec.TypePubrel {
		t.Fatalf("3.1: %+v %v", a, err)
	}
	for _, v := range []codec.Version{codec.V311, codec.V5} {
		if err := a.Decode(v, h, raw[h.HeaderLen:]); !errors.Is(err, codec.ErrReservedFlags) {
			t.Fatalf("%v: err = %v; want ErrReservedFlags", v, err)
		}
	}
	for _, b0 := range []byte{0x60, 0x63, 0x66, 0x68, 0x6b} {
		if _, _, err := codec.ReadFrame([]byte{b0, 2, 0, 9}, 0); err == nil {
			t.Fatalf("PUBREL flags %#x accepted by ReadFrame", b0&0x0f)
		}
	}
}

// TestConnectBridgeBit: Mosquitto's bridge flag (level | 0x80) is accepted
// on 3.1 and 3.1.1 and reported in Bridge; 0x85 (5.0 with the bit) is an
// unsupported level.
func TestConnectBridgeBit(t *testing.T) {
	for _, tc := range []struct {
		name  string
		level byte
		want  codec.Version
		err   bool
	}{
		{"MQIsdp", 0x83, codec.V31, false},
		{"MQTT", 0x84, codec.V311, false},
		{"MQTT", 0x85, 0, true},
	} {
		p := codec.Connect{ProtocolName: []byte(tc.name), Version: codec.Version(tc.level & 0x7f), ClientID: []byte("b"), CleanStart: true, Bridge: true}
		raw := p.AppendTo(nil)
		raw[2+2+len(tc.name)] = tc.level
		h, n, err := codec.ReadFrame(raw, 0)
		if err != nil || n != len(raw) {
			t.Fatal(err)
		}
		var got codec.Connect
		err = got.Decode(h, raw[h.HeaderLen:])
		if tc.err {
			if err == nil {
				t.Fatalf("level %#x accepted", tc.level)
			}
			continue
		}
		if err != nil || !got.Bridge || got.Version != tc.want {
			t.Fatalf("level %#x: bridge %v version %v err %v", tc.level, got.Bridge, got.Version, err)
		}
		if again := got.AppendTo(nil); string(again) != string(raw) {
			t.Fatalf("level %#x: re-encoded % x, want % x", tc.level, again, raw)
		}
	}
}

// checkUTF8Ref is CheckUTF8 byte by byte, as it was before its eight-byte
// ASCII path: the reference TestCheckUTF8Words compares it with.
func checkUTF8Ref(b []byte) *codec.Error {
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			switch {
			case c == 0:
				return codec.ErrNullChar
			case c < 0x20 || c == 0x7f:
				return codec.ErrControlChar
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			return codec.ErrBadUTF8
		case r <= 0x9f:
			return codec.ErrControlChar
		case r >= 0xfdd0 && r <= 0xfdef, r&0xfffe == 0xfffe:
			return codec.ErrNonCharacter
		}
		i += size
	}
	return nil
}

// TestCheckUTF8Words: the eight-byte path of CheckUTF8 lets through only
// what the byte-by-byte check does. Every byte value at every position of
// 8- to 24-byte ASCII strings, and every sequence of TestCheckUTF8's kind
// at every offset of a long ASCII string, so that each lands inside, at
// the edge of and across eight-byte words.
func TestCheckUTF8Words(t *testing.T) {
	for n := 8; n <= 24; n++ {
		for pos := 0; pos < n; pos++ {
			for v := 0; v < 256; v++ {
				b := []byte(strings.Repeat("abcdefgh", 3)[:n])
				b[pos] = byte(v)
				if got, want := codec.CheckUTF8(b), checkUTF8Ref(b); got != want {
					t.Fatalf("CheckUTF8(%q) = %v; byte by byte %v", b, got, want)
				}
			}
		}
	}
	seqs := []string{"\x00", "\x01", "\x1f", " ", "~", "\x7f", "\x80", "\xc2\x80", "\xc2\x9f", "\xc2\xa0",
		"\xef\xb7\x90", "\xef\xbf\xbf", "\xf0\x9f\x98\x80", "\xf4\x90\x80\x80", "\xed\xa0\x80", "\xff", "\xc3"}
	for _, q := range seqs {
		for off := 0; off < 20; off++ {
			b := []byte(strings.Repeat("x", off) + q + strings.Repeat("y", 20))
			if got, want := codec.CheckUTF8(b), checkUTF8Ref(b); got != want {
				t.Fatalf("CheckUTF8(%q) = %v; byte by byte %v", b, got, want)
			}
		}
	}
}
