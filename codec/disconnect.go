package codec

// Decode parses a DISCONNECT. In 3.x it has no body; in 5.0 the reason
// code and properties may be omitted.
func (p *Disconnect) Decode(v Version, h FixedHeader, body []byte) error {
	p.Reason = NormalDisconnection
	p.Props.Reset()
	if v != V5 {
		if len(body) != 0 {
			return ErrTrailingBytes // 3.1.1 §3.14: DISCONNECT has no variable header or payload
		}
		return nil
	}
	r := reader{b: body}
	if r.left() > 0 {
		p.Reason = ReasonCode(r.byte())
	}
	if r.left() > 0 {
		p.Props.decode(&r, ctxDisconnect)
	}
	return r.end()
}

func reasonPropsRemaining(rc ReasonCode, props *Properties) int {
	c := props.contentSize()
	switch {
	case rc == Success && c == 0:
		return 0
	case c == 0:
		return 1
	default:
		return 1 + props.size()
	}
}

func appendReasonProps(dst []byte, rem int, rc ReasonCode, props *Properties) []byte {
	if rem >= 1 {
		dst = append(dst, byte(rc))
	}
	if rem > 1 {
		dst = props.appendTo(dst)
	}
	return dst
}

func (p *Disconnect) remaining(v Version) int {
	if v != V5 {
		return 0
	}
	return reasonPropsRemaining(p.Reason, &p.Props)
}

// Size is the whole encoded packet size.
func (p *Disconnect) Size(v Version) int { return packetSize(p.remaining(v)) }

// AppendTo appends the encoded DISCONNECT.
func (p *Disconnect) AppendTo(dst []byte, v Version) []byte {
	rem := p.remaining(v)
	dst = AppendFixedHeader(dst, TypeDisconnect, 0, rem)
	return appendReasonProps(dst, rem, p.Reason, &p.Props)
}

// errAuthV3 rejects AUTH below 5.0.
var errAuthV3 = &Error{ProtocolError, "AUTH before MQTT 5.0"}

// Decode parses a 5.0 AUTH.
func (p *Auth) Decode(v Version, h FixedHeader, body []byte) error {
	p.Reason = Success
	p.Props.Reset()
	if v != V5 {
		return errAuthV3
	}
	r := reader{b: body}
	if r.left() > 0 {
		p.Reason = ReasonCode(r.byte())
		switch p.Reason {
		case Success, ContinueAuthentication, ReAuthenticate:
		default:
			return &Error{ProtocolError, "invalid AUTH reason code"} // [MQTT-3.15.2-1]
		}
	}
	if r.left() > 0 {
		p.Props.decode(&r, ctxAuth)
	}
	return r.end()
}

// Size is the whole encoded packet size.
func (p *Auth) Size(v Version) int { return packetSize(reasonPropsRemaining(p.Reason, &p.Props)) }

// AppendTo appends the encoded AUTH.
func (p *Auth) AppendTo(dst []byte, v Version) []byte {
	rem := reasonPropsRemaining(p.Reason, &p.Props)
	dst = AppendFixedHeader(dst, TypeAuth, 0, rem)
	return appendReasonProps(dst, rem, p.Reason, &p.Props)
}

// AppendPingreq appends a PINGREQ.
func AppendPingreq(dst []byte) []byte { return append(dst, byte(TypePingreq)<<4, 0) }

// AppendPingresp appends a PINGRESP.
func AppendPingresp(dst []byte) []byte { return append(dst, byte(TypePingresp)<<4, 0) }
