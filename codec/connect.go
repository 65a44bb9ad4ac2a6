package codec

import "encoding/binary"

var (
	nameMQTT   = []byte("MQTT")
	nameMQIsdp = []byte("MQIsdp")
)

// Decode parses a CONNECT body of any protocol level. p.Version is set as
// soon as the level byte is read, even when a later check fails, so the
// caller can answer in the right CONNACK format.
//
// Fields alias body; they are valid until the engine calls Discard on the
// connection. Copy to keep.
func (p *Connect) Decode(h FixedHeader, body []byte) error {
	user, wuser := p.Props.User[:0], p.WillProps.User[:0]
	sids, wsids := p.Props.SubscriptionIDs[:0], p.WillProps.SubscriptionIDs[:0]
	*p = Connect{}
	p.Props.User, p.WillProps.User = user, wuser
	p.Props.SubscriptionIDs, p.WillProps.SubscriptionIDs = sids, wsids
	if h.Type != TypeConnect {
		return ErrProtocolName
	}
	r := reader{b: body}
	p.ProtocolName = r.bytes()
	level := r.byte()
	if r.err != nil {
		return r.err
	}
	if level&BridgeFlag != 0 && level&^BridgeFlag != byte(V5) {
		p.Bridge = true // Mosquitto's bridge bit on a 3.x level
		level &^= BridgeFlag
	}
	p.Version = Version(level)
	switch {
	case string(p.ProtocolName) == "MQTT" && (p.Version == V311 || p.Version == V5):
	case string(p.ProtocolName) == "MQIsdp" && p.Version == V31:
	case string(p.ProtocolName) == "MQTT" || string(p.ProtocolName) == "MQIsdp":
		return ErrProtocolVersion // [MQTT-3.1.2-2]
	default:
		p.Version = 0
		return ErrProtocolName // [MQTT-3.1.2-1]
	}
	flags := r.byte()
	p.KeepAlive = r.uint16()
	if r.err != nil {
		return r.err
	}
	if flags&connFlagReserved != 0 {
		return ErrConnectFlags // [MQTT-3.1.2-3]
	}
	p.CleanStart = flags&connFlagClean != 0
	p.WillFlag = flags&connFlagWill != 0
	p.WillQoS = (flags & connFlagWillQoS) >> 3
	p.WillRetain = flags&connFlagWillRetain != 0
	p.UsernameFlag = flags&connFlagUsername != 0
	p.PasswordFlag = flags&connFlagPassword != 0
	if p.WillQoS == 3 {
		return ErrConnectFlags // [MQTT-3.1.2-14]
	}
	if !p.WillFlag && (p.WillQoS != 0 || p.WillRetain) {
		return ErrConnectFlags // [MQTT-3.1.2-11] [MQTT-3.1.2-13] [MQTT-3.1.2-15]
	}
	if p.Version != V5 && p.PasswordFlag && !p.UsernameFlag {
		return ErrConnectFlags // [MQTT-3.1.2-22]
	}
	if p.Version == V5 {
		p.Props.decode(&r, ctxConnect)
	}
	p.ClientID = r.str() // [MQTT-3.1.3-4]
	if p.WillFlag {
		if p.Version == V5 {
			p.WillProps.decode(&r, ctxWill)
		}
		p.WillTopic = r.str() // [MQTT-3.1.3-10]
		p.WillPayload = r.bytes()
	}
	if p.UsernameFlag {
		p.Username = r.str() // [MQTT-3.1.3-11]
	}
	if p.PasswordFlag {
		p.Password = r.bytes()
	}
	return r.end()
}

func (p *Connect) flags() byte {
	var f byte
	if p.CleanStart {
		f |= connFlagClean
	}
	if p.WillFlag {
		f |= connFlagWill | (p.WillQoS<<3)&connFlagWillQoS
		if p.WillRetain {
			f |= connFlagWillRetain
		}
	}
	if p.UsernameFlag || p.Username != nil {
		f |= connFlagUsername
	}
	if p.PasswordFlag || p.Password != nil {
		f |= connFlagPassword
	}
	return f
}

func (p *Connect) remaining() int {
	name := p.ProtocolName
	if name == nil {
		name = protocolName(p.Version)
	}
	n := 2 + len(name) + 1 + 1 + 2
	if p.Version == V5 {
		n += p.Props.size()
	}
	n += 2 + len(p.ClientID)
	if p.WillFlag {
		if p.Version == V5 {
			n += p.WillProps.size()
		}
		n += 2 + len(p.WillTopic) + 2 + len(p.WillPayload)
	}
	f := p.flags()
	if f&connFlagUsername != 0 {
		n += 2 + len(p.Username)
	}
	if f&connFlagPassword != 0 {
		n += 2 + len(p.Password)
	}
	return n
}

func protocolName(v Version) []byte {
	if v == V31 {
		return nameMQIsdp
	}
	return nameMQTT
}

// Size is the whole encoded packet size.
func (p *Connect) Size() int { return packetSize(p.remaining()) }

// AppendTo appends the encoded CONNECT at p.Version. A nil ProtocolName is
// encoded as the level's name ("MQIsdp" for 3.1, "MQTT" otherwise).
func (p *Connect) AppendTo(dst []byte) []byte {
	name := p.ProtocolName
	if name == nil {
		name = protocolName(p.Version)
	}
	dst = AppendFixedHeader(dst, TypeConnect, 0, p.remaining())
	dst = AppendString(dst, name)
	f := p.flags()
	level := byte(p.Version)
	if p.Bridge && p.Version != V5 {
		level |= BridgeFlag
	}
	dst = append(dst, level, f)
	dst = binary.BigEndian.AppendUint16(dst, p.KeepAlive)
	if p.Version == V5 {
		dst = p.Props.appendTo(dst)
	}
	dst = AppendString(dst, p.ClientID)
	if p.WillFlag {
		if p.Version == V5 {
			dst = p.WillProps.appendTo(dst)
		}
		dst = AppendString(dst, p.WillTopic)
		dst = AppendString(dst, p.WillPayload)
	}
	if f&connFlagUsername != 0 {
		dst = AppendString(dst, p.Username)
	}
	if f&connFlagPassword != 0 {
		dst = AppendString(dst, p.Password)
	}
	return dst
}

// Decode parses a CONNACK body at protocol level v.
//
// Fields alias body; they are valid until the engine calls Discard on the
// connection. Copy to keep.
func (p *Connack) Decode(v Version, h FixedHeader, body []byte) error {
	p.Props.Reset()
	p.SessionPresent, p.ReturnCode, p.Reason = false, 0, 0
	r := reader{b: body}
	ackFlags := r.byte()
	code := r.byte()
	if r.err != nil {
		return r.err
	}
	if ackFlags&^1 != 0 {
		return ErrConnectFlags // reserved acknowledge flags
	}
	p.SessionPresent = ackFlags&1 != 0
	if v == V5 {
		p.Reason = ReasonCode(code)
		if r.left() > 0 {
			p.Props.decode(&r, ctxConnack)
		}
	} else {
		p.ReturnCode = code
		p.Reason = ReasonCode(code)
	}
	return r.end()
}

func (p *Connack) remaining(v Version) int {
	if v == V5 {
		return 2 + p.Props.size()
	}
	return 2
}

// Size is the whole encoded packet size.
func (p *Connack) Size(v Version) int { return packetSize(p.remaining(v)) }

// AppendTo appends the encoded CONNACK: ReturnCode for 3.x, Reason for 5.0.
func (p *Connack) AppendTo(dst []byte, v Version) []byte {
	dst = AppendFixedHeader(dst, TypeConnack, 0, p.remaining(v))
	var f byte
	if p.SessionPresent {
		f = 1
	}
	if v == V5 {
		dst = append(dst, f, byte(p.Reason))
		return p.Props.appendTo(dst)
	}
	return append(dst, f, p.ReturnCode)
}
