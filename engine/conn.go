package engine

import (
	"errors"
	"net"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/tinymq/tinymq/codec"
)

// conn is our state for one MQTT connection. Owned by its loop.
type conn struct {
	gc   gnet.Conn
	l    *loop
	s    *session // nil until CONNECT is accepted
	will *message
	x    *connExt // per-feature state (HTTP, TLS, identity); nil for a plain anonymous MQTT connection

	// lastSeen is the unix second of the last read once CONNECT is
	// accepted; before that, when the socket opened (or was upgraded to
	// WebSocket), so that the connect timeout counts from there however
	// slowly bytes trickle in. HTTP connections: the last request.
	lastSeen uint32
	need     int32 // bytes that must be buffered before the next frame can be complete

	// Slow-consumer watch (see loop.recheckBlocked): unsent bytes at the
	// last check, and the unix second since which they have not gone down.
	lastOutbound int32
	stuckSince   uint32

	widx      int32  // position in the loop's keep-alive wheel: index in the slot
	wslot     int16  // ... and the slot (wheelSize fits)
	keepAlive uint16 // seconds; 0 = none

	open            bool // cleared in OnClose: never write to gc after that
	version         codec.Version
	proto           proto
	cleanDisconnect bool // DISCONNECT received: the will is discarded [MQTT-3.14.4-3]
	onBlocked       bool
	authWait        bool       // CONNECT (or an HTTP request) waits for its authentication verdict: read nothing more
	parked          bool       // deferred by the connection-rate limit: CONNECT not processed yet (connrate.go)
	closeReason     closeCause // why we closed it, for the log
}

// connExt is the state only some connections need: allocated for
// connections accepted on the HTTP or WebSocket listener, over TLS, or
// authenticated as someone, so that a plain anonymous MQTT connection
// never pays for it (DESIGN.md section 3). Owned by the connection's loop
// unless a field says otherwise.
type connExt struct {
	httpState // HTTP, SSE and WebSocket state (connections accepted on those listeners)

	id        identity      // who the client is, once accepted (or per HTTP request)
	pend      *authJob      // the verdict this connection waits for (authWait)
	store     *storeJob     // HTTP: the checkpoint or compaction its request waits for (authWait; storeops.go)
	basicBad  [32]byte      // HTTP: cache key of Basic credentials the pool refused
	tls       *tlsState     // accepted on a TLS listener (tls.go)
	peer      string        // client address named by a PROXY protocol header; "" for the socket's (read by any goroutine once CONNECT is accepted)
	proxyWait bool          // a PROXY protocol header is still expected
	auth5     *authExchange // MQTT 5 AUTH exchange in progress (auth5.go)
	bridge    bool          // CONNECT carried Mosquitto's bridge bit: every subscription is No Local and Retain As Published (bridgehook.go)
}

// ext returns c's extension, allocating it on first use. Runs on c's loop.
func (c *conn) ext() *connExt {
	if c.x == nil {
		c.x = &connExt{}
	}
	return c.x
}

// The field order above keeps conn at 80 bytes (a size class of its own):
// it is allocated once per connection, so every byte counts a million
// times on a large host. TestConnSize guards it.

// closeCause says why the broker closed a connection. Details (the exact
// protocol error) are logged where they are found; the disconnect log line
// carries the cause.
type closeCause uint8

const (
	closeNone closeCause = iota
	closeProtocolError
	closeUnsupportedVersion
	closeRedirected
	closeKeepAliveTooLong
	closeDisconnectWithWill
	closeEmptyClientID
	closeClientIDTooLong
	closeNotAuthorized
	closeTakenOver
	closeKicked
	closeHTTPTimeout
	closeConnectTimeout
	closeKeepAlive
	closeSlowConsumer
	closeWSClose
	closeWSProtocolError
	closeConnRate
)

var closeCauseText = [...]string{
	closeNone:               "",
	closeProtocolError:      "protocol error",
	closeUnsupportedVersion: "unsupported protocol version",
	closeRedirected:         "redirected to another server",
	closeKeepAliveTooLong:   "keep-alive above the maximum",
	closeDisconnectWithWill: "disconnect with will message",
	closeEmptyClientID:      "empty client id without clean session",
	closeClientIDTooLong:    "client id too long",
	closeNotAuthorized:      "not authorized",
	closeTakenOver:          "session taken over",
	closeKicked:             "disconnected by the operator",
	closeHTTPTimeout:        "http idle or read timeout",
	closeConnectTimeout:     "connect timeout",
	closeKeepAlive:          "keep-alive timeout",
	closeSlowConsumer:       "slow consumer",
	closeWSClose:            "websocket close",
	closeWSProtocolError:    "websocket protocol error",
	closeConnRate:           "connection rate limit",
}

func (c closeCause) String() string { return closeCauseText[c] }

// deadline is the unix second after which the connection is dead: 1.5 ×
// keep-alive after the last packet [MQTT-3.1.2-24], or the connect timeout.
// The coarse clock (whole seconds, refreshed every tick) can lag real time
// by up to clockLag seconds, so the deadline adds that much: a client is
// never dropped before 1.5 × keep-alive, and at most ~2 s after.
func (c *conn) deadline() int64 {
	if c.proto == protoHTTP {
		return c.httpDeadline()
	}
	if c.s == nil {
		return int64(c.lastSeen) + int64(c.l.b.opts.ConnectTimeout.Seconds()+0.5) + clockLag
	}
	if c.keepAlive == 0 {
		return 1<<62 - 1
	}
	ka := int64(c.keepAlive)
	return int64(c.lastSeen) + ka + (ka+1)/2 + clockLag
}

// clockLag bounds how far Broker.now trails real time: a floor to the
// second plus one tick interval.
const clockLag = 2

// OnOpen implements gnet.EventHandler. Runs on the new connection's loop.
func (b *Broker) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	if b.closing.Load() {
		return nil, gnet.Close
	}
	n := b.counters.connected.Add(1)
	if max := b.opts.MaxConnections; max > 0 && n > int64(max) {
		b.counters.connected.Add(-1)
		b.counters.rejected.Add(1)
		if b.logLimiter.allow(b.now.Load()) {
			b.log.Warn("connection refused: max connections reached", "remote", gc.RemoteAddr().String(), "max", max)
		}
		return nil, gnet.Close
	}
	for {
		m := b.counters.maxConnected.Load()
		if n <= m || b.counters.maxConnected.CompareAndSwap(m, n) {
			break
		}
	}
	b.counters.totalConns.Add(1)
	l := b.loopFor(gc.EventLoop())
	now := b.now.Load()
	c := &conn{gc: gc, l: l, open: true, lastSeen: uint32(now), wslot: -1}
	web := b.httpPort != 0 || b.wsPort != 0 || b.tb.httpsPort != 0
	if web || b.tb.srv != nil || b.tb.proxy != 0 {
		if a, ok := gc.LocalAddr().(*net.TCPAddr); ok {
			if web && a.Port != b.mqttPort && a.Port != b.tb.tlsPort {
				// Accepted on the HTTP or the WebSocket listener: HTTP
				// until an upgrade turns it into MQTT over WebSocket.
				c.proto = protoHTTP
				c.x = &connExt{}
				c.x.wsOnly = a.Port == b.wsPort
			}
			if b.tb.srv != nil || b.tb.proxy != 0 {
				b.openTLS(c, b.listenerOf(a.Port)) // TLS and PROXY protocol state (tls.go)
			}
		}
	}
	gc.SetContext(c)
	l.stats.connsBy[c.proto].Add(1)
	l.wheel.add(c, c.deadline())
	if b.rate != nil && c.proto == protoMQTT {
		return nil, l.admitRate(c) // may park c until its token is due
	}
	return nil, gnet.None
}

// OnClose implements gnet.EventHandler. Runs on the connection's loop; gc
// must not be used after it returns.
func (b *Broker) OnClose(gc gnet.Conn, err error) gnet.Action {
	c, _ := gc.Context().(*conn)
	if c == nil {
		return gnet.None
	}
	c.open = false
	b.counters.connected.Add(-1)
	l := c.l
	l.wheel.remove(c)
	l.stats.connsBy[c.proto].Add(-1)
	if c.x != nil {
		c.x.release()
		if c.x.tls != nil {
			b.tlsClosed(c)
		}
	}
	s := c.s
	if s == nil {
		return gnet.None
	}
	if s.sse {
		b.endStream(c)
		return gnet.None
	}
	reason := c.closeReason.String()
	switch {
	case reason != "":
	case c.cleanDisconnect:
		reason = "disconnect"
	case err != nil:
		reason = err.Error()
	default:
		reason = "closed"
	}
	if b.opts.Verbose {
		b.log.Info("client disconnected", "client", s.id, "reason", reason)
	}
	if b.detach(c) {
		c.will = nil // taken over by a connection that resumed the session [MQTT-3.1.4-2]
	}
	if c.will != nil && !c.cleanDisconnect && !b.closing.Load() {
		// [MQTT-3.1.2-8]: the will is published when the connection ends
		// without DISCONNECT.
		w := c.will
		c.will = nil
		l.publishWill(s, w)
	}
	if l.r.inRoute == 0 {
		l.r.finish()
	}
	return gnet.None
}

// OnTraffic implements gnet.EventHandler. It decodes every complete packet
// buffered for gc, handles it, and discards what it consumed once at the
// end. Runs on the connection's loop.
func (b *Broker) OnTraffic(gc gnet.Conn) gnet.Action {
	c := gc.Context().(*conn)
	t0 := time.Now()
	defer c.l.addBusy(t0)
	if c.parked {
		return c.l.parkedTraffic(c)
	}
	if c.x != nil && (c.x.tls != nil || c.x.proxyWait) {
		return b.tlsTraffic(c) // PROXY header, TLS handshake, TLS records (tls.go)
	}
	return b.traffic(c)
}

// traffic runs the protocol handler over c's inbound bytes (the plaintext
// of a TLS connection, see inbound). Runs on c's loop.
func (b *Broker) traffic(c *conn) gnet.Action {
	switch c.proto {
	case protoHTTP:
		return b.httpTraffic(c)
	case protoWS:
		return b.wsTraffic(c)
	}
	l := c.l
	avail := c.inboundLen()
	if c.authWait {
		// Waiting for an authentication verdict: keep the bytes for later,
		// but not without bound.
		if avail > b.opts.MaxPacketSize {
			c.closeReason = closeProtocolError
			return gnet.Close
		}
		return gnet.None
	}
	if avail < int(c.need) {
		// The frame in progress is still incomplete: do not Peek, which
		// would copy the whole partial frame again on every read.
		return gnet.None
	}
	buf := c.inbound(avail)
	if c.s != nil { // before CONNECT the connect timeout runs from the open
		c.lastSeen = uint32(b.now.Load())
	} else if len(buf) > 0 && buf[0] != 0x10 { // not CONNECT: maybe TLS or HTTP on this port
		if k, ok := b.mismatchOf(c, buf[0], buf); ok {
			return b.mismatch(c, k)
		}
	}
	consumed, action := c.process(buf)
	l.stats.bytesIn.Add(uint64(consumed))
	l.stats.bytesInBy[protoMQTT].Add(uint64(consumed))
	l.r.finish()
	if action == gnet.Close && c.s != nil {
		l.flushDeferred(c.s) // --write-coalesce: answers held for c leave before the close
	}
	if consumed > 0 && c.open {
		c.consume(consumed)
	}
	return action
}

// process decodes and handles every complete MQTT packet at the start of
// buf and returns how many bytes it consumed. It sets c.need to the bytes a
// partial packet at the end still waits for. Runs on c's loop.
func (c *conn) process(buf []byte) (int, gnet.Action) {
	max := c.l.b.opts.MaxPacketSize
	consumed, action := 0, gnet.None
	for consumed < len(buf) && c.open && !c.authWait {
		h, n, err := codec.ReadFrame(buf[consumed:], max)
		if err != nil {
			c.fail(err, h)
			action = gnet.Close
			break
		}
		if n == 0 {
			rest := len(buf) - consumed
			if h.HeaderLen > 0 {
				c.need = int32(h.Size())
			} else {
				c.need = int32(rest + 1)
			}
			break
		}
		c.need = 0
		if err := c.handle(h, buf[consumed:consumed+n]); err != nil {
			consumed += n
			if !errors.Is(err, errClose) {
				c.fail(err, h)
			}
			action = gnet.Close
			break
		}
		consumed += n
	}
	if consumed == len(buf) || c.authWait {
		c.need = 0
	}
	return consumed, action
}

// errClose ends a connection without a protocol-error log line (the reason
// was already recorded).
var errClose = errors.New("engine: close connection")

// fail records a protocol error on c: counter, close reason, throttled log.
// Runs on c's loop.
func (c *conn) fail(err error, h codec.FixedHeader) {
	b := c.l.b
	var ce *codec.Error
	if errors.As(err, &ce) && ce.Code == codec.PacketTooLarge {
		c.l.stats.oversize.Add(1)
	} else {
		c.l.stats.malformed.Add(1)
	}
	c.closeReason = closeProtocolError
	if ce != nil {
		c.disconnect5(ce.Code, ce.Msg) // 5.0: the client is told why [MQTT5-4.13.1-1]
	} else {
		c.disconnect5(codec.UnspecifiedError, "")
	}
	if b.logLimiter.allow(b.now.Load()) {
		id := ""
		if c.s != nil {
			id = c.s.id
		}
		b.log.Warn("closing connection: protocol error", "remote", c.remote(),
			"client", id, "packet", h.Type.String(), "err", err.Error())
	}
}

// handle processes one whole packet. body aliases the read buffer and is
// valid until OnTraffic's Discard. A non-nil error closes the connection.
// Runs on c's loop.
func (c *conn) handle(h codec.FixedHeader, frame []byte) error {
	body := frame[h.HeaderLen:]
	if c.s == nil {
		if c.x != nil && c.x.auth5 != nil {
			// A CONNECT's AUTH exchange: AUTH or DISCONNECT only (5.0 §4.12).
			switch h.Type {
			case codec.TypeAuth:
				return c.onAuth(h, body)
			case codec.TypeDisconnect:
				return errClose
			}
			return errAuthUnexpected
		}
		if h.Type != codec.TypeConnect {
			return errNotConnected // [MQTT-3.1.0-1]
		}
		return c.onConnect(h, body)
	}
	l := c.l
	switch h.Type {
	case codec.TypePublish:
		return c.onPublish(h, frame)
	case codec.TypePuback, codec.TypePubrec, codec.TypePubrel, codec.TypePubcomp:
		if err := l.ack.Decode(c.version, h, body); err != nil {
			return err
		}
		return c.onAck(&l.ack)
	case codec.TypeSubscribe:
		return c.onSubscribe(h, body)
	case codec.TypeUnsubscribe:
		return c.onUnsubscribe(h, body)
	case codec.TypePingreq:
		if h.Remaining != 0 {
			return codec.ErrTrailingBytes
		}
		c.send(codec.AppendPingresp(l.outBuf[:0])) // [MQTT-3.12.4-1]
		return nil
	case codec.TypeDisconnect:
		var d codec.Disconnect
		if err := d.Decode(c.version, h, body); err != nil {
			return err
		}
		if c.version == codec.V5 {
			return c.onDisconnect5(&d)
		}
		c.cleanDisconnect = true // [MQTT-3.14.4-3]
		c.will = nil
		return errClose // [MQTT-3.14.4-1]
	case codec.TypeAuth:
		if c.version != codec.V5 {
			return errUnexpectedPacket
		}
		return c.onAuth(h, body)
	case codec.TypeConnect:
		return errSecondConnect // [MQTT-3.1.0-2]
	default:
		return errUnexpectedPacket // [MQTT-4.8.0-1]
	}
}

var (
	errNotConnected     = &codec.Error{Code: codec.ProtocolError, Msg: "first packet is not CONNECT"}
	errSecondConnect    = &codec.Error{Code: codec.ProtocolError, Msg: "second CONNECT"}
	errUnexpectedPacket = &codec.Error{Code: codec.ProtocolError, Msg: "packet type not sent by clients"}
	errTopicName        = &codec.Error{Code: codec.TopicNameInvalid, Msg: "invalid topic name"}
	errWillTopic        = &codec.Error{Code: codec.TopicNameInvalid, Msg: "invalid will topic"}
	errQoS2Quota        = &codec.Error{Code: codec.QuotaExceeded, Msg: "too many QoS 2 messages awaiting PUBREL"}
	errReceiveMaximum   = &codec.Error{Code: codec.ReceiveMaximumExceeded, Msg: "more QoS 2 messages awaiting PUBREL than the Receive Maximum"}
	errPayloadFormat    = &codec.Error{Code: codec.PayloadFormatInvalid, Msg: "payload format indicator 1 with a payload that is not UTF-8"}
)

// send appends a control packet to c's session buffer for this batch's
// flush. Runs on c's loop.
func (c *conn) send(raw []byte) {
	s := c.s
	s.mu.Lock()
	over := s.blockedLocked(2 * c.l.b.opts.MaxOutboundBytes)
	if !over {
		s.appendLocked(raw)
	}
	s.mu.Unlock()
	if over {
		c.controlOverflow()
		return
	}
	c.l.r.markDirty(s, c.l)
}

// onAck handles PUBACK, PUBREC, PUBREL and PUBCOMP. Runs on c's loop.
func (c *conn) onAck(a *codec.Ack) error {
	s := c.s
	var (
		wrote bool
		err   error
	)
	if a.Type == codec.TypePubrel {
		// Releases an inbound QoS 2 id; an unknown id is answered too (as
		// Mosquitto does), whatever the client's outbound state: a v5
		// client is told 0x92 "packet identifier not found".
		held := c.l.ackHold() // persist.go: PUBCOMP waits until the release is durable
		rc := codec.PacketIdentifierNotFound
		s.mu.Lock()
		if s.releaseQoS2InLocked(a.PacketID) {
			rc = codec.Success
			c.l.persistQoS2In(s, a.PacketID, false) // persist.go
		} else if held {
			c.l.ackAfterStore(s) // released by an earlier PUBREL: maybe not durable yet
		}
		if !held {
			s.buf().B = appendAck(s.buf().B, codec.TypePubcomp, a.PacketID, rc, c.version) // [MQTT-4.3.3-2] PUBCOMP answers PUBREL
			wrote = true
		}
		s.mu.Unlock()
		if held {
			// Sent before the release is durable, a PUBCOMP lets the
			// client reuse the id while a crash would bring it back:
			// the new message would be taken for a re-send and lost.
			c.l.ackDurable(c, codec.TypePubcomp, a.PacketID, rc)
		}
	} else {
		s.mu.Lock()
		wrote, err = s.ackLocked(c.l.b, a)
		s.mu.Unlock()
	}
	if err != nil {
		return err
	}
	if wrote {
		c.l.r.markDirty(s, c.l)
	}
	return nil
}

// onPublish handles an inbound PUBLISH, frame being the whole packet.
// Runs on c's loop.
func (c *conn) onPublish(h codec.FixedHeader, frame []byte) error {
	l := c.l
	p := &l.pub
	if err := p.Decode(c.version, h, frame[h.HeaderLen:]); err != nil {
		return err
	}
	var v *sess5
	if c.version == codec.V5 {
		var err error
		if v, err = c.publish5(p); err != nil {
			return err
		}
	}
	if !l.r.validMemo(p.Topic) { // the last matched topic passed already
		if err := l.b.validName(p.Topic); err != nil {
			return errTopicName // [MQTT-3.3.2-2]
		}
	}
	// Clients cannot publish into $SYS, nor where the ACL denies it: the
	// message is acknowledged (QoS 1/2; v5: with 0x87) and dropped, as
	// Mosquitto does.
	rc := codec.Success
	routable := !isSysTopic(p.Topic)
	if perms := c.permissions(); routable && perms != nil && !perms.CanWrite(p.Topic) {
		routable = false
		rc = codec.NotAuthorized
		l.stats.aclDenied[aclPublish].Add(1)
		if l.b.opts.Verbose {
			l.b.log.Info("publish denied", "client", c.s.id, "user", c.username(), "topic", string(p.Topic), "qos", p.QoS)
		}
	}
	if v != nil && routable && !validUTF8Payload(&p.Props, p.Payload) {
		// Payload Format Indicator 1 with a payload that is not UTF-8:
		// refused with 0x99 (5.0 §3.3.2.3.2); a QoS 0 one ends the
		// connection, having no acknowledgement to carry the refusal.
		if p.QoS == 0 {
			return errPayloadFormat
		}
		routable, rc = false, codec.PayloadFormatInvalid
	}
	l.stats.msgsIn.Add(1)
	l.stats.msgsInBy[c.proto][p.QoS].Add(1)
	var exp uint32
	l.props5 = l.props5[:0]
	if routable && v != nil {
		if p.Props.Has(codec.PropMessageExpiry) && p.Props.MessageExpiry > 0 {
			exp = absExpiry(l.b, p.Props.MessageExpiry)
		}
		l.props5 = forwardProps(l.props5, &p.Props)
	}
	// setMeta right before each publish/prepare: nothing is left behind
	// for another publish on this loop when this one is not routed.
	switch p.QoS {
	case 0:
		if routable {
			l.r.setMeta(l.props5, exp, c.s)
			l.r.setFrame(forwardable(c.version, h, frame))
			l.r.publish(p.Topic, p.Payload, 0, p.Retain, nil)
		}
	case 1:
		// Unless it waits for durability (--fsync always, persist.go),
		// the acknowledgement goes out before this message's
		// deliveries, including one to this very connection.
		held := l.ackHold() // persist.go: --fsync always decides after the deliveries
		if routable && v != nil && held {
			if x := l.storeRefusal(p.Retain, false); x != 0 { // persist_refuse.go: the store failed
				routable, rc = false, x
			}
		}
		if routable {
			l.r.setMeta(l.props5, exp, c.s)
			l.r.setFrame(forwardable(c.version, h, frame))
			if l.r.prepare(p.Topic, p.Payload, 1, p.Retain, nil) == 0 && v != nil {
				rc = codec.NoMatchingSubscribers // 5.0: accepted, nobody to give it to
			}
			if v != nil && held {
				if x := l.storeRefusal(p.Retain, true); x != 0 {
					routable, rc = false, x
				}
			}
		}
		if !held {
			c.sendAck(codec.TypePuback, p.PacketID, rc) // [MQTT-4.3.2-2]
		}
		if routable {
			l.r.route()
		}
		if held {
			l.ackDurable(c, codec.TypePuback, p.PacketID, rc) // once its records are durable
		}
	case 2:
		s := c.s
		held := l.ackHold() // persist.go
		s.mu.Lock()
		dup := s.hasQoS2InLocked(p.PacketID)
		if dup && held {
			l.ackAfterStore(s) // persist.go: the first one's records may not be durable yet
		}
		over := false
		if !dup && routable && v != nil && held {
			if x := l.storeRefusal(p.Retain, false); x != 0 { // persist_refuse.go
				routable, rc = false, x
			}
		}
		if !dup && rc < 0x80 {
			st := s.state()
			if over = len(st.qos2in) >= l.b.opts.ReceiveMaximum; !over {
				st.qos2in = append(st.qos2in, p.PacketID)
				l.persistQoS2In(s, p.PacketID, true) // persist.go
			}
		}
		s.mu.Unlock()
		if over {
			l.ps.lazy.gate = false // persist_lazy.go: no ackDurable follows
			if v != nil {
				return errReceiveMaximum // 5.0 §3.3.4: more than our Receive Maximum
			}
			return errQoS2Quota
		}
		// PUBREC before the deliveries, as PUBACK above; a re-sent
		// PUBLISH (DUP, PUBREL pending) is acknowledged again but not
		// routed again: exactly once [MQTT-4.3.3-2].
		if !dup && routable {
			l.r.setMeta(l.props5, exp, c.s)
			if l.r.prepare(p.Topic, p.Payload, 2, p.Retain, nil) == 0 && v != nil {
				rc = codec.NoMatchingSubscribers
			}
			if v != nil && held {
				if x := l.storeRefusal(p.Retain, true); x != 0 {
					// Refused: the id is not kept for a PUBREL (the
					// flow ends at a PUBREC of 0x80 or above).
					routable, rc = false, x
					s.mu.Lock()
					if s.releaseQoS2InLocked(p.PacketID) {
						l.persistQoS2In(s, p.PacketID, false)
					}
					s.mu.Unlock()
					l.ps.wrote = false
				}
			}
		}
		if !held {
			c.sendAck(codec.TypePubrec, p.PacketID, rc)
		}
		if !dup && routable {
			l.r.route()
		}
		if held {
			l.ackDurable(c, codec.TypePubrec, p.PacketID, rc) // persist.go
		}
	}
	return nil
}

// sendAck sends PUBACK or PUBREC: 4 bytes when rc is success (any
// version), with the reason code for a v5 client otherwise. Runs on c's
// loop.
func (c *conn) sendAck(t codec.Type, id uint16, rc codec.ReasonCode) {
	c.send(appendAck(c.l.outBuf[:0], t, id, rc, c.version))
}

// appendAck appends PUBACK, PUBREC, PUBREL or PUBCOMP for packet id: the
// 4-byte form for success (any version) and for 3.x, with the reason code
// at 5.0 otherwise.
func appendAck(dst []byte, t codec.Type, id uint16, rc codec.ReasonCode, v codec.Version) []byte {
	if rc == codec.Success || v != codec.V5 {
		return codec.AppendAck(dst, t, id)
	}
	a := codec.Ack{Type: t, PacketID: id, Reason: rc}
	return a.AppendTo(dst, codec.V5)
}

// isSysTopic reports whether t is "$SYS" or below it.
func isSysTopic(t []byte) bool {
	return len(t) >= 4 && string(t[:4]) == "$SYS" && (len(t) == 4 || t[4] == '/')
}

// remote is the client's address for logs, metrics and per-source limits.
// It is the socket's peer address; behind a PROXY protocol header, the
// address that header names. Runs on c's loop.
func (c *conn) remote() string {
	if c.x != nil && c.x.peer != "" {
		return c.x.peer
	}
	return c.gc.RemoteAddr().String()
}
