package codec

import (
	"encoding/binary"
	"math/bits"
)

// propCtx names where a property list appears; each allows its own set.
type propCtx uint8

const (
	ctxConnect propCtx = iota
	ctxConnack
	ctxPublish
	ctxWill
	ctxAck // PUBACK, PUBREC, PUBREL, PUBCOMP
	ctxSubscribe
	ctxSuback
	ctxUnsubscribe
	ctxUnsuback
	ctxDisconnect
	ctxAuth
	numCtx
)

type propKind uint8

const (
	kindByte propKind = iota + 1
	kindUint16
	kindUint32
	kindVarint
	kindString
	kindBinary
	kindPair
)

func bit(c propCtx) uint16 { return 1 << c }

// propInfo is the wire type and the packets where each property may appear
// [MQTT-2.2.2.2]: a property outside its packets is a protocol error.
var propInfo = [0x2B]struct {
	kind    propKind
	allowed uint16
}{
	PropPayloadFormat:        {kindByte, bit(ctxPublish) | bit(ctxWill)},
	PropMessageExpiry:        {kindUint32, bit(ctxPublish) | bit(ctxWill)},
	PropContentType:          {kindString, bit(ctxPublish) | bit(ctxWill)},
	PropResponseTopic:        {kindString, bit(ctxPublish) | bit(ctxWill)},
	PropCorrelationData:      {kindBinary, bit(ctxPublish) | bit(ctxWill)},
	PropSubscriptionID:       {kindVarint, bit(ctxPublish) | bit(ctxSubscribe)},
	PropSessionExpiry:        {kindUint32, bit(ctxConnect) | bit(ctxConnack) | bit(ctxDisconnect)},
	PropAssignedClientID:     {kindString, bit(ctxConnack)},
	PropServerKeepAlive:      {kindUint16, bit(ctxConnack)},
	PropAuthMethod:           {kindString, bit(ctxConnect) | bit(ctxConnack) | bit(ctxAuth)},
	PropAuthData:             {kindBinary, bit(ctxConnect) | bit(ctxConnack) | bit(ctxAuth)},
	PropRequestProblemInfo:   {kindByte, bit(ctxConnect)},
	PropWillDelay:            {kindUint32, bit(ctxWill)},
	PropRequestResponseInfo:  {kindByte, bit(ctxConnect)},
	PropResponseInfo:         {kindString, bit(ctxConnack)},
	PropServerReference:      {kindString, bit(ctxConnack) | bit(ctxDisconnect)},
	PropReasonString:         {kindString, bit(ctxConnack) | bit(ctxAck) | bit(ctxSuback) | bit(ctxUnsuback) | bit(ctxDisconnect) | bit(ctxAuth)},
	PropReceiveMaximum:       {kindUint16, bit(ctxConnect) | bit(ctxConnack)},
	PropTopicAliasMaximum:    {kindUint16, bit(ctxConnect) | bit(ctxConnack)},
	PropTopicAlias:           {kindUint16, bit(ctxPublish)},
	PropMaximumQoS:           {kindByte, bit(ctxConnack)},
	PropRetainAvailable:      {kindByte, bit(ctxConnack)},
	PropUser:                 {kindPair, 1<<numCtx - 1},
	PropMaximumPacketSize:    {kindUint32, bit(ctxConnect) | bit(ctxConnack)},
	PropWildcardSubAvailable: {kindByte, bit(ctxConnack)},
	PropSubIDAvailable:       {kindByte, bit(ctxConnack)},
	PropSharedSubAvailable:   {kindByte, bit(ctxConnack)},
}

// Reset zeroes p, keeping the capacity of User and SubscriptionIDs.
func (p *Properties) Reset() {
	u, s := p.User[:0], p.SubscriptionIDs[:0]
	*p = Properties{User: u, SubscriptionIDs: s}
}

// decode reads a property list (length then properties) in context ctx.
// Values alias r's buffer.
func (p *Properties) decode(r *reader, ctx propCtx) {
	p.Reset()
	n := int(r.varint())
	if r.err != nil {
		return
	}
	p.decodeBody(r, ctx, n)
}

// decodeBody reads n bytes of properties (the list without its length).
func (p *Properties) decodeBody(r *reader, ctx propCtx, n int) {
	if r.left() < n {
		r.fail(ErrShortBuffer)
		return
	}
	end := r.off + n
	sub := reader{b: r.b[:end], off: r.off}
	for sub.off < end && sub.err == nil {
		id := PropID(sub.varint())
		if sub.err != nil {
			break
		}
		if int(id) >= len(propInfo) || propInfo[id].kind == 0 {
			sub.fail(ErrUnknownProp)
			break
		}
		info := propInfo[id]
		if info.allowed&bit(ctx) == 0 {
			sub.fail(ErrPropNotAllowed) // [MQTT-2.2.2-2]
			break
		}
		repeatable := id == PropUser || (id == PropSubscriptionID && ctx == ctxPublish)
		if p.Has(id) && !repeatable {
			sub.fail(ErrDuplicateProp) // [MQTT-2.2.2-2] a property appears at most once unless stated
			break
		}
		p.Set(id)
		switch id {
		case PropPayloadFormat:
			p.PayloadFormat = sub.byte()
			sub.check01(p.PayloadFormat)
		case PropMessageExpiry:
			p.MessageExpiry = sub.uint32()
		case PropContentType:
			p.ContentType = sub.str()
		case PropResponseTopic:
			p.ResponseTopic = sub.str()
			if sub.err == nil {
				for _, c := range p.ResponseTopic {
					if c == '+' || c == '#' {
						sub.fail(ErrPropValue) // [MQTT-3.3.2-14] response topic has no wildcards
					}
				}
			}
		case PropCorrelationData:
			p.CorrelationData = sub.bytes()
		case PropSubscriptionID:
			v := sub.varint()
			if sub.err == nil && v == 0 {
				sub.fail(ErrPropValue) // [MQTT-3.8.2.1.2] 1..268,435,455
			}
			p.SubscriptionIDs = append(p.SubscriptionIDs, v)
		case PropSessionExpiry:
			p.SessionExpiry = sub.uint32()
		case PropAssignedClientID:
			p.AssignedClientID = sub.str()
		case PropServerKeepAlive:
			p.ServerKeepAlive = sub.uint16()
		case PropAuthMethod:
			p.AuthMethod = sub.str()
		case PropAuthData:
			p.AuthData = sub.bytes()
		case PropRequestProblemInfo:
			p.RequestProblemInfo = sub.byte()
			sub.check01(p.RequestProblemInfo)
		case PropWillDelay:
			p.WillDelay = sub.uint32()
		case PropRequestResponseInfo:
			p.RequestResponseInfo = sub.byte()
			sub.check01(p.RequestResponseInfo)
		case PropResponseInfo:
			p.ResponseInfo = sub.str()
		case PropServerReference:
			p.ServerReference = sub.str()
		case PropReasonString:
			p.ReasonString = sub.str()
		case PropReceiveMaximum:
			p.ReceiveMaximum = sub.uint16()
			if sub.err == nil && p.ReceiveMaximum == 0 {
				sub.fail(ErrPropValue) // 5.0 §3.1.2.11.3: Receive Maximum 0 is a protocol error
			}
		case PropTopicAliasMaximum:
			p.TopicAliasMaximum = sub.uint16()
		case PropTopicAlias:
			p.TopicAlias = sub.uint16()
			if sub.err == nil && p.TopicAlias == 0 {
				sub.fail(&Error{TopicAliasInvalid, "topic alias 0"}) // [MQTT-3.3.2-8]
			}
		case PropMaximumQoS:
			p.MaximumQoS = sub.byte()
			sub.check01(p.MaximumQoS)
		case PropRetainAvailable:
			p.RetainAvailable = sub.byte()
			sub.check01(p.RetainAvailable)
		case PropUser:
			k := sub.str()
			v := sub.str()
			if sub.err == nil {
				p.User = append(p.User, UserProperty{Key: k, Value: v})
			}
		case PropMaximumPacketSize:
			p.MaximumPacketSize = sub.uint32()
			if sub.err == nil && p.MaximumPacketSize == 0 {
				sub.fail(ErrPropValue) // Maximum Packet Size 0 is a protocol error
			}
		case PropWildcardSubAvailable:
			p.WildcardSubAvailable = sub.byte()
			sub.check01(p.WildcardSubAvailable)
		case PropSubIDAvailable:
			p.SubIDAvailable = sub.byte()
			sub.check01(p.SubIDAvailable)
		case PropSharedSubAvailable:
			p.SharedSubAvailable = sub.byte()
			sub.check01(p.SharedSubAvailable)
		}
	}
	if sub.err != nil {
		r.fail(sub.err.(*Error))
		return
	}
	if sub.off != end {
		r.fail(ErrShortBuffer)
		return
	}
	r.off = end
}

func (r *reader) check01(v byte) {
	if r.err == nil && v > 1 {
		r.fail(ErrPropValue)
	}
}

// contentSize is the size of the encoded properties without their length.
func (p *Properties) contentSize() int {
	n := 0
	for set := p.Present &^ (1<<PropUser | 1<<PropSubscriptionID); set != 0; set &= set - 1 {
		id := PropID(bits.TrailingZeros64(set))
		if int(id) >= len(propInfo) {
			break
		}
		info := propInfo[id]
		if info.kind == 0 {
			continue
		}
		n++ // identifier (all ids < 128)
		switch info.kind {
		case kindByte:
			n++
		case kindUint16:
			n += 2
		case kindUint32:
			n += 4
		case kindString, kindBinary:
			n += 2 + len(p.bytesOf(id))
		}
	}
	for _, v := range p.SubscriptionIDs {
		n += 1 + VarintSize(v)
	}
	for _, u := range p.User {
		n += 1 + 4 + len(u.Key) + len(u.Value)
	}
	return n
}

// size is the encoded size with the length prefix.
func (p *Properties) size() int {
	c := p.contentSize()
	return VarintSize(uint32(c)) + c
}

func (p *Properties) bytesOf(id PropID) []byte {
	switch id {
	case PropContentType:
		return p.ContentType
	case PropResponseTopic:
		return p.ResponseTopic
	case PropCorrelationData:
		return p.CorrelationData
	case PropAssignedClientID:
		return p.AssignedClientID
	case PropAuthMethod:
		return p.AuthMethod
	case PropAuthData:
		return p.AuthData
	case PropResponseInfo:
		return p.ResponseInfo
	case PropServerReference:
		return p.ServerReference
	case PropReasonString:
		return p.ReasonString
	}
	return nil
}

func (p *Properties) intOf(id PropID) uint32 {
	switch id {
	case PropPayloadFormat:
		return uint32(p.PayloadFormat)
	case PropMessageExpiry:
		return p.MessageExpiry
	case PropSessionExpiry:
		return p.SessionExpiry
	case PropServerKeepAlive:
		return uint32(p.ServerKeepAlive)
	case PropRequestProblemInfo:
		return uint32(p.RequestProblemInfo)
	case PropWillDelay:
		return p.WillDelay
	case PropRequestResponseInfo:
		return uint32(p.RequestResponseInfo)
	case PropReceiveMaximum:
		return uint32(p.ReceiveMaximum)
	case PropTopicAliasMaximum:
		return uint32(p.TopicAliasMaximum)
	case PropTopicAlias:
		return uint32(p.TopicAlias)
	case PropMaximumQoS:
		return uint32(p.MaximumQoS)
	case PropRetainAvailable:
		return uint32(p.RetainAvailable)
	case PropMaximumPacketSize:
		return p.MaximumPacketSize
	case PropWildcardSubAvailable:
		return uint32(p.WildcardSubAvailable)
	case PropSubIDAvailable:
		return uint32(p.SubIDAvailable)
	case PropSharedSubAvailable:
		return uint32(p.SharedSubAvailable)
	}
	return 0
}

// appendTo appends the length-prefixed property list, in identifier order.
func (p *Properties) appendTo(dst []byte) []byte {
	if p.Present == 0 && len(p.User) == 0 && len(p.SubscriptionIDs) == 0 {
		return append(dst, 0)
	}
	dst = AppendVarint(dst, uint32(p.contentSize()))
	return p.AppendContent(dst)
}

// AppendContent appends the encoded properties without their length
// prefix: in identifier order, the user properties last in their order.
func (p *Properties) AppendContent(dst []byte) []byte {
	for set := p.Present&^(1<<PropUser) | 1<<PropSubscriptionID; set != 0; set &= set - 1 {
		id := PropID(bits.TrailingZeros64(set))
		if int(id) >= len(propInfo) {
			break
		}
		info := propInfo[id]
		if id == PropSubscriptionID {
			for _, v := range p.SubscriptionIDs {
				dst = append(dst, byte(PropSubscriptionID))
				dst = AppendVarint(dst, v)
			}
			continue
		}
		if info.kind == 0 {
			continue
		}
		dst = append(dst, byte(id))
		switch info.kind {
		case kindByte:
			dst = append(dst, byte(p.intOf(id)))
		case kindUint16:
			dst = binary.BigEndian.AppendUint16(dst, uint16(p.intOf(id)))
		case kindUint32:
			dst = binary.BigEndian.AppendUint32(dst, p.intOf(id))
		case kindString, kindBinary:
			dst = AppendString(dst, p.bytesOf(id))
		}
	}
	for _, u := range p.User {
		dst = append(dst, byte(PropUser))
		dst = AppendString(dst, u.Key)
		dst = AppendString(dst, u.Value)
	}
	return dst
}

// Clone returns a deep copy of p that owns its memory (one allocation for
// all byte fields).
func (p *Properties) Clone() Properties {
	q := *p
	n := 0
	for id := PropID(1); int(id) < len(propInfo); id++ {
		n += len(p.bytesOf(id))
	}
	for _, u := range p.User {
		n += len(u.Key) + len(u.Value)
	}
	buf := make([]byte, 0, n)
	cp := func(b []byte) []byte {
		if b == nil {
			return nil
		}
		s := len(buf)
		buf = append(buf, b...)
		return buf[s:len(buf):len(buf)]
	}
	q.ContentType = cp(p.ContentType)
	q.ResponseTopic = cp(p.ResponseTopic)
	q.CorrelationData = cp(p.CorrelationData)
	q.AssignedClientID = cp(p.AssignedClientID)
	q.AuthMethod = cp(p.AuthMethod)
	q.AuthData = cp(p.AuthData)
	q.ResponseInfo = cp(p.ResponseInfo)
	q.ServerReference = cp(p.ServerReference)
	q.ReasonString = cp(p.ReasonString)
	if p.User != nil {
		q.User = make([]UserProperty, len(p.User))
		for i, u := range p.User {
			q.User[i] = UserProperty{Key: cp(u.Key), Value: cp(u.Value)}
		}
	}
	if p.SubscriptionIDs != nil {
		q.SubscriptionIDs = append([]uint32(nil), p.SubscriptionIDs...)
	}
	return q
}

// ContentSize is the size of the encoded properties without their length
// prefix.
func (p *Properties) ContentSize() int { return p.contentSize() }

// Size is the encoded size of the property list with its length prefix.
func (p *Properties) Size() int { return p.size() }

// DecodePublishContent decodes a PUBLISH property list without its length
// prefix (as AppendContent writes it). Values alias b.
func (p *Properties) DecodePublishContent(b []byte) error {
	p.Reset()
	r := reader{b: b}
	p.decodeBody(&r, ctxPublish, len(b))
	return r.err
}
