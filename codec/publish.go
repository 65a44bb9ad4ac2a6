package codec

import "encoding/binary"

// Decode parses a PUBLISH at protocol level v; h carries DUP, QoS and
// RETAIN.
//
// Fields alias body; they are valid until the engine calls Discard on the
// connection. Copy to keep (Clone).
func (p *Publish) Decode(v Version, h FixedHeader, body []byte) error {
	p.Dup, p.QoS, p.Retain = h.Dup(), h.QoS(), h.Retain()
	p.PacketID = 0
	p.Topic, p.Payload = nil, nil
	p.Props.Reset()
	if p.QoS == 3 {
		return ErrInvalidQoS // [MQTT-3.3.1-4]
	}
	if p.QoS == 0 && p.Dup {
		return &Error{ProtocolError, "DUP set on a QoS 0 PUBLISH"} // [MQTT-3.3.1-2]
	}
	r := reader{b: body}
	p.Topic = r.str() // [MQTT-3.3.2-1]
	if r.err != nil {
		return r.err
	}
	for _, c := range p.Topic {
		if c == '+' || c == '#' {
			return &Error{TopicNameInvalid, "wildcard in topic name"} // [MQTT-3.3.2-2]
		}
	}
	if p.QoS > 0 {
		p.PacketID = r.uint16()
		if r.err == nil && p.PacketID == 0 {
			return ErrZeroPacketID // [MQTT-2.3.1-1]
		}
	}
	if v == V5 {
		p.Props.decode(&r, ctxPublish)
		if r.err == nil && len(p.Topic) == 0 && !p.Props.Has(PropTopicAlias) {
			return &Error{ProtocolError, "empty topic without topic alias"} // 5.0 §3.3.2.1
		}
	} else if r.err == nil && len(p.Topic) == 0 {
		return &Error{TopicNameInvalid, "empty topic name"} // [MQTT-4.7.3-1]
	}
	p.Payload = r.rest()
	return r.err
}

func (p *Publish) remaining(v Version) int {
	n := 2 + len(p.Topic) + len(p.Payload)
	if p.QoS > 0 {
		n += 2
	}
	if v == V5 {
		n += p.Props.size()
	}
	return n
}

// Size is the whole encoded packet size.
func (p *Publish) Size(v Version) int { return packetSize(p.remaining(v)) }

func (p *Publish) flags() uint8 {
	f := (p.QoS << 1) & FlagQoS
	if p.Dup {
		f |= FlagDup
	}
	if p.Retain {
		f |= FlagRetain
	}
	return f
}

// AppendTo appends the encoded PUBLISH. The packet id is written only for
// QoS > 0.
func (p *Publish) AppendTo(dst []byte, v Version) []byte {
	dst = AppendFixedHeader(dst, TypePublish, p.flags(), p.remaining(v))
	dst = AppendString(dst, p.Topic)
	if p.QoS > 0 {
		dst = binary.BigEndian.AppendUint16(dst, p.PacketID)
	}
	if v == V5 {
		dst = p.Props.appendTo(dst)
	}
	return append(dst, p.Payload...)
}

// PacketIDOffset is the offset of the 2-byte packet identifier inside the
// packet AppendTo produces, or -1 for QoS 0: the engine encodes a PUBLISH
// once and patches the id for each subscriber.
func (p *Publish) PacketIDOffset(v Version) int {
	if p.QoS == 0 {
		return -1
	}
	rem := p.remaining(v)
	return 1 + VarintSize(uint32(rem)) + 2 + len(p.Topic)
}

// Clone returns a deep copy that owns its memory.
func (p *Publish) Clone() Publish {
	q := *p
	buf := make([]byte, len(p.Topic)+len(p.Payload))
	n := copy(buf, p.Topic)
	copy(buf[n:], p.Payload)
	q.Topic = buf[:n:n]
	q.Payload = buf[n:]
	q.Props = p.Props.Clone()
	return q
}

// Decode parses PUBACK, PUBREC, PUBREL or PUBCOMP (the type comes from h).
// In 5.0 the reason code and properties may be omitted [MQTT-3.4.2.1].
//
// Fields alias body; they are valid until the engine calls Discard on the
// connection. Copy to keep.
func (p *Ack) Decode(v Version, h FixedHeader, body []byte) error {
	p.Type, p.Reason = h.Type, Success
	p.Props.Reset()
	r := reader{b: body}
	p.PacketID = r.uint16()
	if r.err != nil {
		return r.err
	}
	if p.PacketID == 0 {
		return ErrZeroPacketID // [MQTT-2.3.1-1]
	}
	if h.Type == TypePubrel && h.Flags != 0x02 && v != V31 {
		return ErrReservedFlags // DUP on PUBREL: a 3.1 re-send only [MQTT-3.6.1-1]
	}
	if v == V5 {
		if r.left() > 0 {
			p.Reason = ReasonCode(r.byte())
		}
		if r.left() > 0 {
			p.Props.decode(&r, ctxAck)
		}
	}
	return r.end()
}

func (p *Ack) remaining(v Version) int {
	if v != V5 {
		return 2
	}
	if p.Reason == Success && p.Props.contentSize() == 0 {
		return 2
	}
	if p.Props.contentSize() == 0 {
		return 3
	}
	return 3 + p.Props.size()
}

// Size is the whole encoded packet size.
func (p *Ack) Size(v Version) int { return packetSize(p.remaining(v)) }

// AppendTo appends the encoded acknowledgement of type p.Type.
func (p *Ack) AppendTo(dst []byte, v Version) []byte {
	var flags uint8
	if p.Type == TypePubrel {
		flags = 0x02
	}
	rem := p.remaining(v)
	dst = AppendFixedHeader(dst, p.Type, flags, rem)
	dst = binary.BigEndian.AppendUint16(dst, p.PacketID)
	if rem >= 3 {
		dst = append(dst, byte(p.Reason))
	}
	if rem > 3 {
		dst = p.Props.appendTo(dst)
	}
	return dst
}

// AppendAck appends a successful PUBACK, PUBREC, PUBREL or PUBCOMP without
// properties: the same 4 bytes at every protocol level.
func AppendAck(dst []byte, t Type, id uint16) []byte {
	var flags byte
	if t == TypePubrel {
		flags = 0x02
	}
	return append(dst, byte(t)<<4|flags, 2, byte(id>>8), byte(id))
}
