package codec

import (
	"encoding/binary"
	"unicode/utf8"
)

// ReadFrame looks at the bytes buffered so far for one connection.
//
//   - Complete frame: n == h.Size() > 0 and len(src) >= n.
//   - Need more: n == 0 and err == nil. When the fixed header is complete
//     h is filled in (h.HeaderLen > 0), so the caller knows how many bytes
//     the frame needs in all; otherwise h.HeaderLen == 0.
//   - Malformed: err != nil (*Error with the reason code to send).
//
// maxSize bounds the whole packet, fixed header included (<= 0: no limit).
// It is checked as soon as the remaining length is known, before the body
// has arrived, so a peer can never make the caller buffer more than the
// limit: the result is then ErrPacketTooLarge with h filled in.
// ReadFrame never reads past src and never allocates.
func ReadFrame(src []byte, maxSize int) (h FixedHeader, n int, err error) {
	if len(src) == 0 {
		return h, 0, nil
	}
	b0 := src[0]
	h.Type = Type(b0 >> 4)
	h.Flags = b0 & 0x0f
	if err := checkFlags(h.Type, h.Flags); err != nil {
		return h, 0, err
	}
	var rem uint32
	var shift uint
	for i := 1; ; i++ {
		if i > 4 {
			return h, 0, ErrMalformedLength // a fifth length byte [MQTT-1.5.5-1]
		}
		if i >= len(src) {
			return FixedHeader{Type: h.Type, Flags: h.Flags}, 0, nil
		}
		c := src[i]
		rem |= uint32(c&0x7f) << shift
		if c&0x80 == 0 {
			if c == 0 && i > 1 {
				return h, 0, ErrMalformedLength // non-minimal encoding
			}
			h.HeaderLen = i + 1
			break
		}
		shift += 7
	}
	h.Remaining = int(rem)
	if maxSize > 0 && h.Size() > maxSize {
		return h, 0, ErrPacketTooLarge
	}
	if len(src) < h.Size() {
		return h, 0, nil
	}
	return h, h.Size(), nil
}

// checkFlags validates the fixed-header flags knowable from byte 0.
func checkFlags(t Type, f uint8) error {
	switch t {
	case TypeReserved:
		return ErrReservedType
	case TypePublish:
		if f&FlagQoS == FlagQoS {
			return ErrInvalidQoS // [MQTT-3.3.1-4]
		}
		return nil
	case TypePubrel:
		// 0x02, or 0x0a: a 3.1 re-send with DUP; Ack.Decode, which knows
		// the protocol level, refuses 0x0a from 3.1.1 and 5.0.
		if f != 0x02 && f != 0x0a {
			return ErrReservedFlags // [MQTT-2.2.2-1] [MQTT-3.6.1-1]
		}
	case TypeSubscribe, TypeUnsubscribe:
		if f != 0x02 {
			return ErrReservedFlags // [MQTT-2.2.2-1] [MQTT-3.6.1-1] [MQTT-3.8.1-1] [MQTT-3.10.1-1]
		}
	default:
		if f != 0 {
			return ErrReservedFlags // [MQTT-2.2.2-1] [MQTT-2.2.2-2]
		}
	}
	return nil
}

// AppendFixedHeader appends a fixed header for a body of remaining bytes.
func AppendFixedHeader(dst []byte, t Type, flags uint8, remaining int) []byte {
	dst = append(dst, byte(t)<<4|flags&0x0f)
	return AppendVarint(dst, uint32(remaining))
}

// AppendVarint appends v as an MQTT Variable Byte Integer (at most
// 268,435,455).
func AppendVarint(dst []byte, v uint32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v > 0 {
			c |= 0x80
		}
		dst = append(dst, c)
		if v == 0 {
			return dst
		}
	}
}

// VarintSize is the number of bytes AppendVarint writes for v.
func VarintSize(v uint32) int {
	switch {
	case v < 1<<7:
		return 1
	case v < 1<<14:
		return 2
	case v < 1<<21:
		return 3
	default:
		return 4
	}
}

// ReadVarint decodes a Variable Byte Integer. n == 0 with err == nil means
// src ends before the integer does.
func ReadVarint(src []byte) (v uint32, n int, err error) {
	var shift uint
	for i := 0; i < 4; i++ {
		if i >= len(src) {
			return 0, 0, nil
		}
		c := src[i]
		v |= uint32(c&0x7f) << shift
		if c&0x80 == 0 {
			if c == 0 && i > 0 {
				return 0, 0, ErrMalformedLength
			}
			return v, i + 1, nil
		}
		shift += 7
	}
	return 0, 0, ErrMalformedLength
}

// AppendString appends s with its 2-byte big-endian length.
func AppendString(dst []byte, s []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(s)))
	return append(dst, s...)
}

// ValidUTF8 reports whether b is an MQTT UTF-8 string CheckUTF8 accepts.
func ValidUTF8(b []byte) bool { return CheckUTF8(b) == nil }

// CheckUTF8 checks an MQTT UTF-8 string as Mosquitto 2.0 does: well-formed
// UTF-8 without surrogates [MQTT-1.5.3-1] [MQTT-1.5.4-1], no U+0000
// [MQTT-1.5.3-2] [MQTT-1.5.4-2], and none of the code points the spec says
// a receiver MAY treat as malformed (3.1.1 §1.5.3, 5.0 §1.5.4): the control
// characters U+0001..U+001F and U+007F..U+009F and the Unicode
// non-characters (U+FDD0..U+FDEF, U+nFFFE, U+nFFFF). The error says which
// rule failed. It never allocates.
func CheckUTF8(b []byte) *Error {
	for i := 0; i < len(b); {
		// Eight printable ASCII bytes at a time: no high bit (no
		// multi-byte sequence starts), none below 0x20 (U+0000 and the
		// C0 controls) and none equal to 0x7f. A word that fails any of
		// these goes byte by byte below, which names the rule.
		if len(b)-i >= 8 {
			w := binary.LittleEndian.Uint64(b[i:])
			const ones, highs = 0x0101010101010101, 0x8080808080808080
			below20 := (w - 0x20*ones) & ^w & highs // a byte < 0x20 (w has no high bits here)
			del := w ^ 0x7f*ones
			is7f := (del - ones) & ^del & highs // a byte == 0x7f
			if w&highs == 0 && below20 == 0 && is7f == 0 {
				i += 8
				continue
			}
		}
		c := b[i]
		if c < utf8.RuneSelf {
			switch {
			case c == 0:
				return ErrNullChar
			case c < 0x20 || c == 0x7f:
				return ErrControlChar
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			return ErrBadUTF8
		case r <= 0x9f:
			return ErrControlChar // U+0080..U+009F (C1 controls)
		case r >= 0xfdd0 && r <= 0xfdef, r&0xfffe == 0xfffe:
			return ErrNonCharacter
		}
		i += size
	}
	return nil
}

// reader walks a packet body. Every read checks bounds; the first failure
// sticks in err and later reads return zero values.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) fail(e *Error) {
	if r.err == nil {
		r.err = e
	}
}

func (r *reader) left() int { return len(r.b) - r.off }

func (r *reader) byte() byte {
	if r.err != nil || r.off >= len(r.b) {
		r.fail(ErrShortBuffer)
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

func (r *reader) uint16() uint16 {
	if r.err != nil || r.left() < 2 {
		r.fail(ErrShortBuffer)
		return 0
	}
	v := binary.BigEndian.Uint16(r.b[r.off:])
	r.off += 2
	return v
}

func (r *reader) uint32() uint32 {
	if r.err != nil || r.left() < 4 {
		r.fail(ErrShortBuffer)
		return 0
	}
	v := binary.BigEndian.Uint32(r.b[r.off:])
	r.off += 4
	return v
}

func (r *reader) varint() uint32 {
	if r.err != nil {
		return 0
	}
	v, n, err := ReadVarint(r.b[r.off:])
	if err != nil {
		r.fail(ErrMalformedLength)
		return 0
	}
	if n == 0 {
		r.fail(ErrShortBuffer)
		return 0
	}
	r.off += n
	return v
}

// binary reads a 2-byte-length-prefixed byte string (aliasing the body).
func (r *reader) bytes() []byte {
	n := int(r.uint16())
	if r.err != nil {
		return nil
	}
	if r.left() < n {
		r.fail(ErrShortBuffer)
		return nil
	}
	v := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return v
}

// str reads a UTF-8 string and validates it.
func (r *reader) str() []byte {
	v := r.bytes()
	if r.err == nil {
		if e := CheckUTF8(v); e != nil {
			r.fail(e) // [MQTT-1.5.3-1] [MQTT-1.5.3-2] [MQTT-1.5.4-1] [MQTT-1.5.4-2]
		}
	}
	return v
}

func (r *reader) rest() []byte {
	if r.err != nil {
		return nil
	}
	v := r.b[r.off:len(r.b):len(r.b)]
	r.off = len(r.b)
	return v
}

// end fails when bytes remain after the last field.
func (r *reader) end() error {
	if r.err == nil && r.off != len(r.b) {
		r.fail(ErrTrailingBytes)
	}
	return r.err
}

// packetSize is the whole size of a packet with a body of remaining bytes.
func packetSize(remaining int) int { return 1 + VarintSize(uint32(remaining)) + remaining }
