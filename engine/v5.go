package engine

import (
	"context"
	"encoding/binary"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/panjf2000/gnet/v2"

	"github.com/tinymq/tinymq/codec"
)

// MQTT 5.0 state and encoding. A 3.1/3.1.1 session never allocates any of
// this: the per-connection state sits behind sessionState.v5, which only a
// v5 CONNECT creates (DESIGN.md section 3: an idle 3.1.1 connection does
// not pay for 5.0).

// sess5 is what a v5 session needs beyond a 3.1.1 one. Guarded by the
// session's mu; the inbound alias table is used only on the connection's
// loop.
type sess5 struct {
	expiry    uint32 // Session Expiry Interval, seconds (neverExpires: never)
	recvMax   uint16 // the client's Receive Maximum: QoS 1/2 PUBLISHes in flight to it
	aliasMax  uint16 // the client's Topic Alias Maximum: aliases we may send
	maxPacket uint32 // the client's Maximum Packet Size; 0: no limit
	noProblem bool   // Request Problem Information 0: no reason strings

	inAlias    [][]byte          // topics of the aliases the client set (index alias-1); our Topic Alias Maximum long
	outAlias   map[string]uint16 // aliases we assigned for this connection
	authMethod string            // the CONNECT's Authentication Method (re-authentication uses it)

	willDelay uint32   // the connection's Will Delay Interval
	dwill     *message // a will waiting for its delay; cleared by a new connection
}

// neverExpires is the Session Expiry Interval that never ends (0xFFFFFFFF).
const neverExpires = ^uint32(0)

// v5 is the session's MQTT 5 state, nil for 3.x sessions.
func (s *session) v5() *sess5 {
	if s.st == nil {
		return nil
	}
	return s.st.v5
}

// expirySecs is how long the session outlives its connection: a v5
// session's Session Expiry Interval, 0 for a 3.x clean session, the
// configured SessionExpiry (or never) for a 3.x persistent one.
func (s *session) expirySecs(b *Broker) uint32 {
	if v := s.v5(); v != nil {
		return v.expiry
	}
	if s.clean {
		return 0
	}
	if e := b.opts.SessionExpiry; e > 0 {
		return uint32(max(int64(e.Seconds()), 1))
	}
	return neverExpires
}

// inflightCap is the number of QoS 1/2 messages that may be in flight to
// the session: Options.MaxInflight, and no more than a v5 client's
// Receive Maximum [MQTT5-3.3.4-9].
func (s *session) inflightCap(b *Broker) int {
	n := b.opts.MaxInflight
	if v := s.v5(); v != nil && int(v.recvMax) < n {
		n = int(v.recvMax)
	}
	return n
}

// forwardMask keeps the PUBLISH properties that travel with a message to
// its readers unaltered, user properties in order ([MQTT5-3.3.2-4]
// [MQTT5-3.3.2-15] [MQTT5-3.3.2-16] [MQTT5-3.3.2-17] [MQTT5-3.3.2-18]
// [MQTT5-3.3.2-20]): the topic alias and the subscription
// identifiers are per connection, the message expiry is re-computed for
// each delivery.
const forwardMask = 1<<codec.PropPayloadFormat | 1<<codec.PropContentType |
	1<<codec.PropResponseTopic | 1<<codec.PropCorrelationData | 1<<codec.PropUser

// forwardProps appends the properties of an inbound PUBLISH that are kept
// with the message (without their length prefix). It does not allocate.
func forwardProps(dst []byte, p *codec.Properties) []byte {
	if p.Present&forwardMask == 0 && len(p.User) == 0 {
		return dst
	}
	q := *p
	q.Present &= forwardMask
	q.SubscriptionIDs = nil
	return q.AppendContent(dst)
}

// propString finds a string or binary property in a stored PUBLISH
// property list (forwardProps' output). nil when absent.
func propString(props []byte, id codec.PropID) []byte {
	for i := 0; i >= 0; {
		var pid codec.PropID
		var a []byte
		if pid, a, _, i = nextProp(props, i); pid == id && i >= 0 {
			return a
		}
	}
	return nil
}

// nextProp reads the property at props[i:] of a stored property list
// (forwardProps' output): its id and value, for a user property its key
// and value. next is -1 past the end or at anything forwardProps does not
// write.
func nextProp(props []byte, i int) (id codec.PropID, a, v []byte, next int) {
	if i >= len(props) {
		return 0, nil, nil, -1
	}
	id = codec.PropID(props[i])
	i++
	switch id {
	case codec.PropPayloadFormat:
		if i >= len(props) {
			return 0, nil, nil, -1
		}
		return id, props[i : i+1], nil, i + 1
	case codec.PropContentType, codec.PropResponseTopic, codec.PropCorrelationData:
		a, i = propBytes(props, i)
		return id, a, nil, i
	case codec.PropUser:
		if a, i = propBytes(props, i); i < 0 {
			return 0, nil, nil, -1
		}
		v, i = propBytes(props, i)
		return id, a, v, i
	}
	return 0, nil, nil, -1
}

// propBytes reads a length-prefixed string at p[i:]; next is -1 when it
// runs past p.
func propBytes(p []byte, i int) ([]byte, int) {
	if i+2 > len(p) {
		return nil, -1
	}
	n := int(p[i])<<8 | int(p[i+1])
	if i+2+n > len(p) {
		return nil, -1
	}
	return p[i+2 : i+2+n], i + 2 + n
}

// absExpiry is the unix second an interval of secs from now ends (0: never).
func absExpiry(b *Broker, secs uint32) uint32 {
	if secs == 0 {
		return 0
	}
	return uint32(min(b.now.Load()+int64(secs), 1<<32-1))
}

// pub5 is one PUBLISH as encoded for a v5 reader: the message's stored
// properties plus what is per delivery (alias, expiry left, subscription
// identifier).
type pub5 struct {
	topic, props, payload []byte
	qos                   uint8
	retain, dup           bool
	id                    uint16
	expiry                uint32 // seconds left, sent when hasExpiry [MQTT5-3.3.2-6]
	hasExpiry             bool
	alias                 uint16 // 0: none
	aliasOnly             bool   // the alias is known to the client: empty topic
	sid                   uint32 // subscription identifier, 0: none [MQTT5-3.3.4-3]
}

func (p *pub5) propLen() int {
	n := len(p.props)
	if p.alias != 0 {
		n += 3
	}
	if p.hasExpiry {
		n += 5
	}
	if p.sid != 0 {
		n += 1 + codec.VarintSize(p.sid)
	}
	return n
}

func (p *pub5) topicLen() int {
	if p.aliasOnly {
		return 0
	}
	return len(p.topic)
}

func (p *pub5) remaining() int {
	pl := p.propLen()
	n := 2 + p.topicLen() + codec.VarintSize(uint32(pl)) + pl + len(p.payload)
	if p.qos > 0 {
		n += 2
	}
	return n
}

// size is the whole packet.
func (p *pub5) size() int {
	r := p.remaining()
	return 1 + codec.VarintSize(uint32(r)) + r
}

// idOffset is where the packet id sits in appendTo's output (QoS > 0).
func (p *pub5) idOffset() int {
	return 1 + codec.VarintSize(uint32(p.remaining())) + 2 + p.topicLen()
}

func (p *pub5) appendTo(dst []byte) []byte {
	f := (p.qos << 1) & codec.FlagQoS
	if p.dup {
		f |= codec.FlagDup
	}
	if p.retain {
		f |= codec.FlagRetain
	}
	dst = codec.AppendFixedHeader(dst, codec.TypePublish, f, p.remaining())
	if p.aliasOnly {
		dst = append(dst, 0, 0)
	} else {
		dst = codec.AppendString(dst, p.topic)
	}
	if p.qos > 0 {
		dst = binary.BigEndian.AppendUint16(dst, p.id)
	}
	dst = codec.AppendVarint(dst, uint32(p.propLen()))
	if p.hasExpiry {
		dst = append(dst, byte(codec.PropMessageExpiry))
		dst = binary.BigEndian.AppendUint32(dst, p.expiry)
	}
	if p.sid != 0 {
		dst = append(dst, byte(codec.PropSubscriptionID))
		dst = codec.AppendVarint(dst, p.sid)
	}
	if p.alias != 0 {
		dst = append(dst, byte(codec.PropTopicAlias))
		dst = binary.BigEndian.AppendUint16(dst, p.alias)
	}
	dst = append(dst, p.props...)
	return append(dst, p.payload...)
}

// expiryLeft is the message expiry interval left at unix second now, for
// a message that expires at unix second exp (0: never).
func expiryLeft(exp uint32, now int64) (uint32, bool) {
	if exp == 0 {
		return 0, false
	}
	return uint32(max(int64(exp)-now, 0)), true
}

// outAliasLocked picks the topic alias for sending topic to a v5 client
// whose Topic Alias Maximum allows aliases: the alias already assigned
// (sent with an empty topic), or a new one while the client's table has
// room (sent with the topic, which sets it); never above the client's
// maximum ([MQTT5-3.1.2-26] [MQTT5-3.3.2-11]). The first
// topics sent take the aliases: a device reading a few topics gets them
// all, a wildcard reader of many gets them for the first ones.
func (v *sess5) outAliasLocked(b *Broker, topicName []byte) (alias uint16, known bool) {
	if v.aliasMax == 0 {
		return 0, false
	}
	if a, ok := v.outAlias[string(topicName)]; ok {
		return a, true
	}
	limit := min(int(v.aliasMax), b.opts.MaxTopicAliasOut)
	if len(v.outAlias) >= limit {
		return 0, false
	}
	if v.outAlias == nil {
		v.outAlias = make(map[string]uint16, 4)
	}
	a := uint16(len(v.outAlias) + 1)
	v.outAlias[string(topicName)] = a
	return a, false
}

// appendPublishV5Locked encodes a delivery to a v5 reader into the
// session buffer. It reports false, writing nothing, when the packet is
// larger than the client's Maximum Packet Size ([MQTT5-3.1.2-24]
// [MQTT5-3.1.2-25]: the caller counts the drop and goes on as if sent).
func (s *session) appendPublishV5Locked(b *Broker, v *sess5, p *pub5) bool {
	if v.aliasMax != 0 && b.opts.MaxTopicAliasOut > 0 {
		p.alias, p.aliasOnly = v.outAliasLocked(b, p.topic)
	}
	if v.maxPacket != 0 && p.size() > int(v.maxPacket) {
		if p.alias != 0 && !p.aliasOnly {
			delete(v.outAlias, string(p.topic)) // never sent: the client does not know it
		}
		return false
	}
	w := s.buf()
	w.B = p.appendTo(w.B)
	return true
}

// validUTF8Payload applies a payload format indicator of 1: the payload
// must be UTF-8 (5.0 §3.3.2.3.2: reason code 0x99 otherwise).
func validUTF8Payload(p *codec.Properties, payload []byte) bool {
	return !p.Has(codec.PropPayloadFormat) || p.PayloadFormat == 0 || utf8.Valid(payload)
}

// appendDisconnect5 appends a v5 DISCONNECT with a reason code and, when
// the client accepts problem information, a reason string.
func appendDisconnect5(dst []byte, rc codec.ReasonCode, reason string, ref string) []byte {
	d := codec.Disconnect{Reason: rc}
	if reason != "" {
		d.Props.ReasonString = []byte(reason)
		d.Props.Set(codec.PropReasonString)
	}
	if ref != "" {
		d.Props.ServerReference = []byte(ref)
		d.Props.Set(codec.PropServerReference)
	}
	return d.AppendTo(dst, codec.V5)
}

// disconnect5 tells a v5 client why the broker is closing its connection
// [MQTT5-4.13.2-1]: a DISCONNECT with rc after what the session has
// pending, flushed before the close. Nothing for 3.x clients (they have
// no server DISCONNECT) or before CONNECT was accepted (CONNACK carries
// the refusal). Runs on c's loop.
func (c *conn) disconnect5(rc codec.ReasonCode, reason string) {
	s := c.s
	if c.version != codec.V5 || s == nil || s.sse || !c.open {
		return
	}
	s.mu.Lock()
	if s.c != c {
		s.mu.Unlock()
		return
	}
	if v := s.v5(); v != nil && v.noProblem {
		reason = "" // [MQTT5-3.1.2-29]
	}
	w := s.buf()
	w.B = appendDisconnect5(w.B, rc, reason, c.l.b.opts.ServerReference)
	s.mu.Unlock()
	c.l.flush(s)
}

// publish5 applies what a v5 PUBLISH adds before routing: its topic alias
// (an empty topic takes the alias's topic; a topic with an alias sets it)
// and the Receive Maximum. It returns the session's v5 state. Runs on c's
// loop.
func (c *conn) publish5(p *codec.Publish) (*sess5, error) {
	s := c.s
	v := s.v5() // set at CONNECT, changed only on this loop
	if !p.Props.Has(codec.PropTopicAlias) {
		return v, nil
	}
	a := int(p.Props.TopicAlias)
	max := c.l.b.opts.MaxTopicAlias
	if a > max {
		return v, errTopicAliasMax // [MQTT5-3.3.2-9]: above the Topic Alias Maximum we announced
	}
	if v.inAlias == nil {
		v.inAlias = make([][]byte, max)
	}
	if len(p.Topic) == 0 {
		if len(v.inAlias[a-1]) == 0 {
			return v, errTopicAliasUnknown // 5.0 §3.3.2.3.4: an alias nobody set
		}
		p.Topic = v.inAlias[a-1]
		return v, nil
	}
	v.inAlias[a-1] = append(v.inAlias[a-1][:0], p.Topic...) // [MQTT5-3.3.2-12] the mapping is replaced
	return v, nil
}

var (
	errTopicAliasMax     = &codec.Error{Code: codec.TopicAliasInvalid, Msg: "topic alias above the Topic Alias Maximum"}
	errTopicAliasUnknown = &codec.Error{Code: codec.ProtocolError, Msg: "empty topic with a topic alias that was never set"}
)

// connect5 is what a v5 CONNECT asked for, owned (it may wait for an
// authentication verdict).
type connect5 struct {
	expiry      uint32 // Session Expiry Interval, capped by MaxSessionExpiry
	askedExpiry uint32
	recvMax     uint16
	aliasMax    uint16
	maxPacket   uint32
	noProblem   bool
	respInfo    bool   // Request Response Information 1
	assigned    bool   // the broker chose the client id
	keepAlive   uint16 // what the client asked for
	willDelay   uint32
	authMethod  string // enhanced authentication method, "" for none
	authData    []byte // the method's last server data for CONNACK
}

// connect5 reads a v5 CONNECT's properties. Runs on a loop.
func (b *Broker) connect5(p *codec.Connect) *connect5 {
	v := &connect5{recvMax: 65535, keepAlive: p.KeepAlive}
	pr := &p.Props
	if pr.Has(codec.PropSessionExpiry) {
		v.askedExpiry = pr.SessionExpiry
		v.expiry = b.capExpiry(pr.SessionExpiry)
	}
	if pr.Has(codec.PropReceiveMaximum) {
		v.recvMax = pr.ReceiveMaximum // 0 was refused by the codec
	}
	if pr.Has(codec.PropTopicAliasMaximum) {
		v.aliasMax = pr.TopicAliasMaximum
	}
	if pr.Has(codec.PropMaximumPacketSize) {
		v.maxPacket = pr.MaximumPacketSize
	}
	v.noProblem = pr.Has(codec.PropRequestProblemInfo) && pr.RequestProblemInfo == 0
	v.respInfo = pr.Has(codec.PropRequestResponseInfo) && pr.RequestResponseInfo == 1
	return v
}

// capExpiry applies MaxSessionExpiry to a requested Session Expiry
// Interval. Any goroutine.
func (b *Broker) capExpiry(e uint32) uint32 {
	if m := b.opts.MaxSessionExpiry; m > 0 && (e == neverExpires || int64(e) > int64(m.Seconds())) {
		return uint32(max(int64(m.Seconds()), 1))
	}
	return e
}

// session makes the session's v5 state for a new connection.
func (v *connect5) session(b *Broker) *sess5 {
	return &sess5{expiry: v.expiry, recvMax: v.recvMax, aliasMax: v.aliasMax,
		maxPacket: v.maxPacket, noProblem: v.noProblem, willDelay: v.willDelay, authMethod: v.authMethod}
}

// will5 makes a v5 CONNECT's will message, with its properties and
// message expiry. Runs on a loop.
func (b *Broker) will5(p *codec.Connect) *message {
	var props []byte
	props = forwardProps(props, &p.WillProps)
	var exp uint32
	if p.WillProps.Has(codec.PropMessageExpiry) && p.WillProps.MessageExpiry > 0 {
		// Counted from when the will is published; stored as an
		// interval until then (publishWill converts it).
		exp = p.WillProps.MessageExpiry
	}
	m := newMessage(p.WillTopic, p.WillPayload, props, p.WillQoS, p.WillRetain, 0)
	m.expiry = exp // an interval until published (see publishWill)
	return m
}

// connackProps5 fills a v5 CONNACK's properties: what the broker allows
// and what it chose for the client. Runs on c's loop.
func (b *Broker) connackProps5(pr *codec.Properties, pc *pendingConnect, c *conn) {
	v := pc.v5
	o := &b.opts
	if v.expiry != v.askedExpiry {
		pr.SessionExpiry = v.expiry // 5.0 §3.2.2.3.2: the value the server uses
		pr.Set(codec.PropSessionExpiry)
	}
	if o.ReceiveMaximum < 65535 {
		pr.ReceiveMaximum = uint16(o.ReceiveMaximum)
		pr.Set(codec.PropReceiveMaximum)
	}
	pr.MaximumPacketSize = uint32(o.MaxPacketSize)
	pr.Set(codec.PropMaximumPacketSize)
	if o.MaxTopicAlias > 0 {
		pr.TopicAliasMaximum = uint16(o.MaxTopicAlias)
		pr.Set(codec.PropTopicAliasMaximum)
	}
	if v.assigned {
		pr.AssignedClientID = []byte(pc.id) // [MQTT5-3.2.2-16]
		pr.Set(codec.PropAssignedClientID)
	}
	if c.keepAlive != v.keepAlive {
		pr.ServerKeepAlive = c.keepAlive // [MQTT5-3.2.2-21]: the client uses this
		pr.Set(codec.PropServerKeepAlive)
	}
	if v.respInfo && o.ResponseInformation != "" {
		pr.ResponseInfo = []byte(o.ResponseInformation + pc.id)
		pr.Set(codec.PropResponseInfo)
	}
	for _, id := range [...]codec.PropID{codec.PropRetainAvailable, codec.PropWildcardSubAvailable,
		codec.PropSubIDAvailable, codec.PropSharedSubAvailable} {
		pr.Set(id)
	}
	pr.RetainAvailable, pr.WildcardSubAvailable, pr.SubIDAvailable, pr.SharedSubAvailable = 1, 1, 1, 1
	if v.authMethod != "" {
		pr.AuthMethod = []byte(v.authMethod)
		pr.Set(codec.PropAuthMethod)
		if v.authData != nil {
			pr.AuthData = v.authData
			pr.Set(codec.PropAuthData)
		}
	}
}

// keepAlive5 is the keep-alive a v5 client gets: what it asked for, or
// MaxKeepAlive when it asked for more (or for none while a maximum below
// 65535 is set).
func (b *Broker) keepAlive5(asked uint16) uint16 {
	m := b.opts.MaxKeepAlive
	if int(asked) > m || (asked == 0 && m < 65535) {
		return uint16(m)
	}
	return asked
}

// onDisconnect5 handles a v5 client's DISCONNECT: its reason code (0x04
// keeps the will) and a new Session Expiry Interval. Runs on c's loop.
func (c *conn) onDisconnect5(d *codec.Disconnect) error {
	s := c.s
	if d.Props.Has(codec.PropSessionExpiry) {
		s.mu.Lock()
		v := s.v5()
		bad := v.expiry == 0 && d.Props.SessionExpiry != 0
		if !bad {
			v.expiry = c.l.b.capExpiry(d.Props.SessionExpiry)
			s.clean = v.expiry == 0
		}
		s.mu.Unlock()
		if bad {
			return errExpiryRaised // [MQTT5-3.14.2-2]
		}
	}
	if d.Reason == codec.DisconnectWithWill {
		c.closeReason = closeDisconnectWithWill
		return errClose // the will is published as for a lost connection
	}
	c.cleanDisconnect = true // [MQTT-3.14.4-3]
	c.will = nil
	return errClose
}

var errExpiryRaised = &codec.Error{Code: codec.ProtocolError, Msg: "DISCONNECT sets a Session Expiry Interval after CONNECT set 0"}

// delayedWill is a v5 will waiting for its Will Delay Interval (or the
// session's end, whichever comes first).
type delayedWill struct {
	s   *session
	m   *message
	due int64 // unix millisecond
}

// publishWill publishes a connection's will now or, for a v5 will with a
// delay, files it on l for the tick (5.0 §3.1.3.2.2). Runs on l.
func (l *loop) publishWill(s *session, w *message) {
	b := l.b
	var delay uint32
	s.mu.Lock()
	if v := s.v5(); v != nil && v.willDelay > 0 {
		delay = min(v.willDelay, s.expirySecs(b))
		if delay > 0 {
			v.dwill = w
			b.persistWill(s, w, time.Now().UnixMilli()+int64(delay)*1000) // persist.go
		}
	}
	s.mu.Unlock()
	if delay > 0 {
		l.delayed = append(l.delayed, delayedWill{s: s, m: w, due: time.Now().UnixMilli() + int64(delay)*1000})
		return
	}
	l.sendWill(w)
}

// sendWill routes a will: now, or after the batch in progress when a
// write inside the router closed the connection. Runs on l.
func (l *loop) sendWill(w *message) {
	if w.expiry != 0 {
		// v5 will message expiry, counted from now on.
		c := *w
		c.expiry = absExpiry(l.b, w.expiry)
		w = &c
	}
	if l.r.inRoute > 0 {
		l.pendingWills = append(l.pendingWills, w) // published by the batch's finish
	} else {
		l.r.publishOwned(w)
	}
}

// runDelayedWills publishes the delayed wills that are due and whose
// session got no new connection meanwhile; now is in unix milliseconds.
// Runs on l (tick).
func (l *loop) runDelayedWills(now int64) {
	keep := l.delayed[:0]
	for _, d := range l.delayed {
		if d.due > now {
			keep = append(keep, d)
			continue
		}
		s := d.s
		s.mu.Lock()
		v := s.v5()
		live := v != nil && v.dwill == d.m
		if live {
			v.dwill = nil
			l.b.persistWillDone(s) // persist.go
		}
		s.mu.Unlock()
		if live {
			l.sendWill(d.m)
		}
	}
	clear(l.delayed[len(keep):])
	l.delayed = keep
}

// closeWith closes c, telling a v5 client why (DISCONNECT rc): after what
// its session has pending when the session is still c's, straight to the
// socket when another connection took it over. Runs on c's loop.
func (c *conn) closeWith(rc codec.ReasonCode, cause closeCause) {
	if !c.open {
		return
	}
	c.closeReason = cause
	if c.version == codec.V5 && c.s != nil && !c.s.sse {
		s := c.s
		s.mu.Lock()
		mine := s.c == c
		s.mu.Unlock()
		if mine {
			c.disconnect5(rc, "")
		} else {
			c.l.outBuf = appendDisconnect5(c.l.outBuf[:0], rc, "", "")
			c.write(c.l.outBuf)
		}
	} else if c.s != nil {
		c.l.flushDeferred(c.s) // --write-coalesce: what waits leaves before the close
	}
	c.tlsCloseNotify()
	_ = c.gc.Close()
}

// closeOnLoop runs closeWith on c's loop. Any goroutine.
func (c *conn) closeOnLoop(rc codec.ReasonCode, cause closeCause) error {
	return c.l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		c.closeWith(rc, cause) // nothing when it closed meanwhile
		return nil
	}))
}

// tellShutdown ends the connections as Mosquitto does at shutdown, in two
// rounds over every loop: first the wills of the connected clients and
// every delayed will are published, then (once those deliveries reached
// every loop's mailbox) each v5 client is sent DISCONNECT 0x8B "server
// shutting down" (with the Server Reference when one is configured) after
// what is queued for it. It waits for each round or for ctx. Runs in Stop.
func (b *Broker) tellShutdown(ctx context.Context) {
	b.onEveryLoop(ctx, func(l *loop) {
		for _, slot := range l.wheel.slots {
			for _, c := range slot {
				if c.open && c.s != nil && c.will != nil && !c.s.sse {
					w := c.will
					c.will = nil
					l.sendWill(w)
				}
			}
		}
		l.runDelayedWills(1<<62 - 1) // every delayed will is due now
		l.r.finish()
	})
	b.onEveryLoop(ctx, func(l *loop) {
		l.drainMailbox()
		l.releaseDeferred(true) // what --write-coalesce holds goes out before the DISCONNECTs
		for _, slot := range l.wheel.slots {
			for _, c := range slot {
				if c.open && c.s != nil && c.version == codec.V5 {
					c.disconnect5(codec.ServerShuttingDown, "")
				}
			}
		}
	})
}

// onEveryLoop runs fn on every loop and waits until all have run it, or
// for ctx. Any goroutine but a loop.
func (b *Broker) onEveryLoop(ctx context.Context, fn func(*loop)) {
	var wg sync.WaitGroup
	for _, l := range b.allLoops() {
		wg.Add(1)
		err := l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
			defer wg.Done()
			fn(l)
			return nil
		}))
		if err != nil {
			wg.Done()
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}
