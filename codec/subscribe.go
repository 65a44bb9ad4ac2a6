package codec

import "encoding/binary"

// Decode parses a SUBSCRIBE at protocol level v. Subs is appended to from
// Subs[:0].
//
// Fields alias body; they are valid until the engine calls Discard on the
// connection. Copy to keep.
func (p *Subscribe) Decode(v Version, h FixedHeader, body []byte) error {
	p.Subs = p.Subs[:0]
	p.Props.Reset()
	r := reader{b: body}
	p.PacketID = r.uint16()
	if r.err != nil {
		return r.err
	}
	if p.PacketID == 0 {
		return ErrZeroPacketID // [MQTT-2.3.1-1]
	}
	if v == V5 {
		p.Props.decode(&r, ctxSubscribe)
	}
	for r.err == nil && r.left() > 0 {
		f := r.str() // [MQTT-3.8.3-1]
		o := r.byte()
		if r.err != nil {
			break
		}
		s := Subscription{Filter: f, QoS: o & SubOptQoS}
		if s.QoS == 3 {
			return ErrInvalidQoS // [MQTT-3.8.3-4]
		}
		if v == V5 {
			if o&0xc0 != 0 {
				return ErrReservedFlags // [MQTT-3.8.3-5]
			}
			s.NoLocal = o&SubOptNoLocal != 0
			s.RetainAsPublished = o&SubOptRetainAsPublished != 0
			s.RetainHandling = (o & SubOptRetainHandling) >> 4
			if s.RetainHandling == 3 {
				return &Error{ProtocolError, "retain handling 3"} // [MQTT-3.8.3-5]
			}
		} else if o&^SubOptQoS != 0 {
			return ErrReservedFlags // [MQTT-3.8.3-4]
		}
		p.Subs = append(p.Subs, s)
	}
	if r.err != nil {
		return r.err
	}
	if len(p.Subs) == 0 {
		return ErrNoTopicFilters // [MQTT-3.8.3-3]
	}
	return nil
}

func (p *Subscribe) remaining(v Version) int {
	n := 2
	if v == V5 {
		n += p.Props.size()
	}
	for _, s := range p.Subs {
		n += 2 + len(s.Filter) + 1
	}
	return n
}

// Size is the whole encoded packet size.
func (p *Subscribe) Size(v Version) int { return packetSize(p.remaining(v)) }

// AppendTo appends the encoded SUBSCRIBE.
func (p *Subscribe) AppendTo(dst []byte, v Version) []byte {
	dst = AppendFixedHeader(dst, TypeSubscribe, 0x02, p.remaining(v))
	dst = binary.BigEndian.AppendUint16(dst, p.PacketID)
	if v == V5 {
		dst = p.Props.appendTo(dst)
	}
	for _, s := range p.Subs {
		dst = AppendString(dst, s.Filter)
		o := s.QoS & SubOptQoS
		if v == V5 {
			if s.NoLocal {
				o |= SubOptNoLocal
			}
			if s.RetainAsPublished {
				o |= SubOptRetainAsPublished
			}
			o |= (s.RetainHandling << 4) & SubOptRetainHandling
		}
		dst = append(dst, o)
	}
	return dst
}

// Decode parses a SUBACK at protocol level v. Reasons is appended to from
// Reasons[:0].
func (p *Suback) Decode(v Version, h FixedHeader, body []byte) error {
	p.Reasons = p.Reasons[:0]
	p.Props.Reset()
	r := reader{b: body}
	p.PacketID = r.uint16()
	if v == V5 {
		p.Props.decode(&r, ctxSuback)
	}
	for r.err == nil && r.left() > 0 {
		p.Reasons = append(p.Reasons, ReasonCode(r.byte()))
	}
	return r.err
}

func (p *Suback) remaining(v Version) int {
	n := 2 + len(p.Reasons)
	if v == V5 {
		n += p.Props.size()
	}
	return n
}

// Size is the whole encoded packet size.
func (p *Suback) Size(v Version) int { return packetSize(p.remaining(v)) }

// AppendTo appends the encoded SUBACK.
func (p *Suback) AppendTo(dst []byte, v Version) []byte {
	dst = AppendFixedHeader(dst, TypeSuback, 0, p.remaining(v))
	dst = binary.BigEndian.AppendUint16(dst, p.PacketID)
	if v == V5 {
		dst = p.Props.appendTo(dst)
	}
	for _, c := range p.Reasons {
		dst = append(dst, byte(c))
	}
	return dst
}

// Decode parses an UNSUBSCRIBE at protocol level v. Filters is appended to
// from Filters[:0].
//
// Fields alias body; they are valid until the engine calls Discard on the
// connection. Copy to keep.
func (p *Unsubscribe) Decode(v Version, h FixedHeader, body []byte) error {
	p.Filters = p.Filters[:0]
	p.Props.Reset()
	r := reader{b: body}
	p.PacketID = r.uint16()
	if r.err != nil {
		return r.err
	}
	if p.PacketID == 0 {
		return ErrZeroPacketID // [MQTT-2.3.1-1]
	}
	if v == V5 {
		p.Props.decode(&r, ctxUnsubscribe)
	}
	for r.err == nil && r.left() > 0 {
		f := r.str()
		if r.err == nil {
			p.Filters = append(p.Filters, f)
		}
	}
	if r.err != nil {
		return r.err
	}
	if len(p.Filters) == 0 {
		return ErrNoTopicFilters // [MQTT-3.10.3-2]
	}
	return nil
}

func (p *Unsubscribe) remaining(v Version) int {
	n := 2
	if v == V5 {
		n += p.Props.size()
	}
	for _, f := range p.Filters {
		n += 2 + len(f)
	}
	return n
}

// Size is the whole encoded packet size.
func (p *Unsubscribe) Size(v Version) int { return packetSize(p.remaining(v)) }

// AppendTo appends the encoded UNSUBSCRIBE.
func (p *Unsubscribe) AppendTo(dst []byte, v Version) []byte {
	dst = AppendFixedHeader(dst, TypeUnsubscribe, 0x02, p.remaining(v))
	dst = binary.BigEndian.AppendUint16(dst, p.PacketID)
	if v == V5 {
		dst = p.Props.appendTo(dst)
	}
	for _, f := range p.Filters {
		dst = AppendString(dst, f)
	}
	return dst
}

// Decode parses an UNSUBACK; in 3.x it has no payload.
func (p *Unsuback) Decode(v Version, h FixedHeader, body []byte) error {
	p.Reasons = p.Reasons[:0]
	p.Props.Reset()
	r := reader{b: body}
	p.PacketID = r.uint16()
	if v == V5 {
		p.Props.decode(&r, ctxUnsuback)
		for r.err == nil && r.left() > 0 {
			p.Reasons = append(p.Reasons, ReasonCode(r.byte()))
		}
	}
	return r.end()
}

func (p *Unsuback) remaining(v Version) int {
	if v != V5 {
		return 2
	}
	return 2 + p.Props.size() + len(p.Reasons)
}

// Size is the whole encoded packet size.
func (p *Unsuback) Size(v Version) int { return packetSize(p.remaining(v)) }

// AppendTo appends the encoded UNSUBACK.
func (p *Unsuback) AppendTo(dst []byte, v Version) []byte {
	dst = AppendFixedHeader(dst, TypeUnsuback, 0, p.remaining(v))
	dst = binary.BigEndian.AppendUint16(dst, p.PacketID)
	if v == V5 {
		dst = p.Props.appendTo(dst)
		for _, c := range p.Reasons {
			dst = append(dst, byte(c))
		}
	}
	return dst
}
