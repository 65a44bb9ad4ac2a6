package engine

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/bytebufferpool"
)

// MQTT over WebSocket (RFC 6455; MQTT 3.1.1 section 6). The handshake goes
// through the HTTP door at /mqtt (or any path on --ws-addr); after it the
// connection's frames are parsed from the peeked bytes, unmasked into a
// per-connection buffer that holds only a partial MQTT packet between
// reads (released when empty, so an idle WebSocket client holds no
// buffer), and the MQTT bytes go through the same packet loop as TCP.
// Outbound packets are sent as one binary frame per flush.

// wsState is a WebSocket connection's frame state. Owned by its loop.
type wsState struct {
	in   *bytebufferpool.ByteBuffer // unmasked MQTT bytes not yet consumed
	frag bool                       // inside a fragmented binary message
}

func (w *wsState) release() {
	if w.in != nil {
		bytebufferpool.Put(w.in)
		w.in = nil
	}
}

// WebSocket opcodes.
const (
	wsOpContinuation = 0x0
	wsOpText         = 0x1
	wsOpBinary       = 0x2
	wsOpClose        = 0x8
	wsOpPing         = 0x9
	wsOpPong         = 0xA
)

// wsFrame is a parsed frame header.
type wsFrame struct {
	fin    bool
	op     byte
	masked bool
	key    [4]byte
	hdrLen int
	length int
}

var (
	errWSReserved  = errors.New("websocket: reserved bits set")
	errWSUnmasked  = errors.New("websocket: client frame not masked")
	errWSTooLarge  = errors.New("websocket: frame larger than the maximum packet size")
	errWSControl   = errors.New("websocket: fragmented or oversize control frame")
	errWSText      = errors.New("websocket: text frame (MQTT needs binary frames)")
	errWSOpcode    = errors.New("websocket: unknown opcode")
	errWSSequence  = errors.New("websocket: continuation without a message, or a new message inside one")
	errWSBadLength = errors.New("websocket: non-minimal or oversize length")
)

// readWSFrame parses the frame header at the start of b. It returns n == 0
// when the header or the payload is incomplete (f.hdrLen > 0 once the header
// is known, so the caller can wait for hdrLen+length bytes). max bounds the
// payload length, checked from the header alone.
func readWSFrame(b []byte, max int) (f wsFrame, n int, err error) {
	if len(b) < 2 {
		return f, 0, nil
	}
	if b[0]&0x70 != 0 {
		return f, 0, errWSReserved // no extension was negotiated
	}
	f.fin = b[0]&0x80 != 0
	f.op = b[0] & 0x0f
	f.masked = b[1]&0x80 != 0
	l := int(b[1] & 0x7f)
	h := 2
	switch l {
	case 126:
		if len(b) < 4 {
			return f, 0, nil
		}
		l = int(binary.BigEndian.Uint16(b[2:]))
		if l < 126 {
			return f, 0, errWSBadLength
		}
		h = 4
	case 127:
		if len(b) < 10 {
			return f, 0, nil
		}
		u := binary.BigEndian.Uint64(b[2:])
		if u>>63 != 0 || u < 1<<16 {
			return f, 0, errWSBadLength
		}
		if u > uint64(max) {
			return f, 0, errWSTooLarge
		}
		l = int(u)
		h = 10
	}
	if f.op >= 0x8 && (l > 125 || !f.fin) {
		return f, 0, errWSControl
	}
	if l > max {
		return f, 0, errWSTooLarge
	}
	if !f.masked {
		return f, 0, errWSUnmasked // RFC 6455 section 5.1
	}
	if len(b) < h+4 {
		return f, 0, nil
	}
	copy(f.key[:], b[h:h+4])
	h += 4
	f.hdrLen, f.length = h, l
	if len(b) < h+l {
		return f, 0, nil
	}
	return f, h + l, nil
}

// wsUnmask XORs p with the masking key, starting at key position pos.
func wsUnmask(p []byte, key [4]byte, pos int) {
	if len(p) >= 8 {
		var k [8]byte
		for i := range k {
			k[i] = key[(pos+i)&3]
		}
		kw := binary.LittleEndian.Uint64(k[:])
		for len(p) >= 8 {
			binary.LittleEndian.PutUint64(p, binary.LittleEndian.Uint64(p)^kw)
			p = p[8:]
		}
	}
	for i := range p {
		p[i] ^= key[(pos+i)&3]
	}
}

// appendWSHeader appends an unmasked server frame header.
func appendWSHeader(dst []byte, op byte, n int) []byte {
	dst = append(dst, 0x80|op)
	switch {
	case n < 126:
		return append(dst, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(dst, 126), uint16(n))
	}
	return binary.BigEndian.AppendUint64(append(dst, 127), uint64(n))
}

// write sends bytes on c: as they are over TCP, as one binary frame over
// WebSocket [MQTT-6.0.0-1]. Runs on c's loop.
func (c *conn) write(p []byte) {
	if c.proto != protoWS {
		c.writeRaw(p)
		return
	}
	c.l.wsWrite(c, wsOpBinary, p)
}

// wsTraffic reads WebSocket frames, answers control frames and feeds the
// binary payloads to the MQTT packet loop. MQTT packets may span frames and
// a frame may hold several packets [MQTT-6.0.0-2]. Runs on c's loop.
func (b *Broker) wsTraffic(c *conn) gnet.Action {
	l := c.l
	w := c.x.ws
	avail := c.inboundLen()
	if avail < int(c.need) {
		return gnet.None
	}
	buf := c.inbound(avail)
	if c.s != nil { // before CONNECT the connect timeout runs from the upgrade
		c.lastSeen = uint32(b.now.Load())
	}
	max := b.opts.MaxPacketSize
	consumed := 0
	var ferr error
	closing := false
	c.need = 0
	for consumed < len(buf) && !closing {
		f, n, err := readWSFrame(buf[consumed:], max)
		if err != nil {
			ferr = err
			break
		}
		if n == 0 {
			if f.hdrLen > 0 {
				c.need = int32(f.hdrLen + f.length)
			} else {
				c.need = int32(len(buf) - consumed + 1)
			}
			break
		}
		payload := buf[consumed+f.hdrLen : consumed+n]
		consumed += n
		switch f.op {
		case wsOpBinary, wsOpContinuation:
			if (f.op == wsOpBinary) == w.frag {
				ferr = errWSSequence
			} else {
				w.frag = !f.fin
				if w.in == nil {
					w.in = bytebufferpool.Get()
				}
				start := len(w.in.B)
				w.in.B = append(w.in.B, payload...)
				wsUnmask(w.in.B[start:], f.key, 0)
			}
		case wsOpText:
			ferr = errWSText // [MQTT-6.0.0-1]
		case wsOpPing:
			if c.gc.OutboundBuffered() >= max {
				// The peer does not read its pongs: answer only once it
				// has caught up (RFC 6455 section 5.5.3 lets an endpoint
				// skip all but the latest), so a ping flood cannot grow
				// the outbound buffer.
				break
			}
			p := append(l.outBuf[:0], payload...)
			wsUnmask(p, f.key, 0)
			l.outBuf = p
			l.wsWrite(c, wsOpPong, p)
		case wsOpPong:
		case wsOpClose:
			// Echo the status code and close.
			p := append(l.outBuf[:0], payload...)
			wsUnmask(p, f.key, 0)
			if len(p) > 2 {
				p = p[:2]
			}
			l.outBuf = p
			l.wsWrite(c, wsOpClose, p)
			closing = true
			if c.closeReason == closeNone {
				c.closeReason = closeWSClose
			}
		default:
			ferr = errWSOpcode
		}
		if ferr != nil {
			break
		}
	}
	l.stats.bytesIn.Add(uint64(consumed))
	l.stats.bytesInBy[protoWS].Add(uint64(consumed))
	action := gnet.None
	if c.authWait && w.in != nil && len(w.in.B) > b.opts.MaxPacketSize {
		// Frames keep coming while the CONNECT waits for its verdict: keep
		// them for later, but not without bound.
		c.closeReason = closeProtocolError
		return gnet.Close
	}
	if w.in != nil && len(w.in.B) > 0 && c.open {
		need := c.need
		k, a := c.process(w.in.B)
		c.need = need // c.need gates frames here, not MQTT packets
		rest := copy(w.in.B, w.in.B[k:])
		w.in.B = w.in.B[:rest]
		if a == gnet.Close {
			action = gnet.Close
			if ferr == nil && !closing {
				// The MQTT side ended the connection (DISCONNECT, a refused
				// CONNECT, a protocol error): say so in WebSocket terms
				// before the socket closes.
				status := uint16(wsNormalClosure)
				if !c.cleanDisconnect && c.s != nil {
					status = wsProtocolError
				}
				l.wsClose(c, status)
			}
		}
	}
	if w.in != nil && len(w.in.B) == 0 {
		w.release()
	}
	if ferr != nil {
		l.stats.malformed.Add(1)
		c.closeReason = closeWSProtocolError
		if b.logLimiter.allow(b.now.Load()) {
			b.log.Warn("closing connection: websocket protocol error", "remote", c.remote(), "err", ferr.Error())
		}
		status := uint16(wsProtocolError)
		if errors.Is(ferr, errWSTooLarge) {
			status = wsMessageTooBig
		}
		l.wsClose(c, status)
		action = gnet.Close
	}
	if closing {
		action = gnet.Close
	}
	l.r.finish()
	if consumed > 0 && c.open {
		c.consume(consumed)
	}
	return action
}

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// Close status codes (RFC 6455 section 7.4.1).
const (
	wsNormalClosure = 1000
	wsProtocolError = 1002
	wsMessageTooBig = 1009
)

// wsWrite sends p as one unfragmented frame, header and payload in one
// writev. Runs on the connection's loop.
func (l *loop) wsWrite(c *conn, op byte, p []byte) {
	hdr := appendWSHeader(l.wsHdr[:0], op, len(p))
	if c.x.tls != nil {
		c.tlsWrite(hdr, p) // wss: WebSocket framing, then TLS
		return
	}
	l.wsVec = append(l.wsVec[:0], hdr, p)
	_, _ = c.gc.Writev(l.wsVec)
	l.wsVec[0], l.wsVec[1] = nil, nil // keep no reference to p
}

// wsClose sends a close frame with a status code. Runs on the
// connection's loop.
func (l *loop) wsClose(c *conn, status uint16) {
	l.outBuf = binary.BigEndian.AppendUint16(l.outBuf[:0], status)
	l.wsWrite(c, wsOpClose, l.outBuf)
}

// upgrade answers the WebSocket handshake for MQTT: GET with Upgrade:
// websocket, version 13, a key, and the subprotocol "mqtt" (or the legacy
// "mqttv3.1") [MQTT-6.0.0-3] [MQTT-6.0.0-4]. The connection then speaks
// MQTT in binary frames. Runs on c's loop.
func (r *httpReq) upgrade() bool {
	if !r.only("GET") || string(r.method) == "HEAD" {
		return r.close
	}
	h, c, b := r.h, r.c, r.b
	hdr := &h.req.Header
	if !bytes.EqualFold(hdr.Peek("Upgrade"), []byte("websocket")) || !hdr.ConnectionUpgrade() {
		return r.fail(426, "MQTT over WebSocket: send a WebSocket upgrade request")
	}
	if string(hdr.Peek("Sec-WebSocket-Version")) != "13" {
		c.l.stats.httpErrors.Add(1)
		body := []byte(`{"error":"unsupported WebSocket version"}`)
		h.respond(b, 426, ctJSON, body, r.close, "Sec-WebSocket-Version: 13\r\n")
		return r.close
	}
	key := hdr.Peek("Sec-WebSocket-Key")
	var raw [18]byte
	if n, err := base64.StdEncoding.Decode(raw[:], key); len(key) != 24 || n != 16 || err != nil {
		return r.fail(400, "missing or bad Sec-WebSocket-Key")
	}
	sub := ""
	offered := hdr.Peek("Sec-WebSocket-Protocol")
	for _, p := range bytes.Split(offered, []byte(",")) {
		switch string(bytes.TrimSpace(p)) {
		case "mqtt":
			sub = "mqtt"
		case "mqttv3.1":
			if sub == "" {
				sub = "mqttv3.1"
			}
		}
	}
	if len(offered) > 0 && sub == "" {
		return r.fail(400, `the WebSocket subprotocol must be "mqtt"`)
	}
	sum := sha1.Sum(append(append(h.arg[:0], key...), wsGUID...))
	var accept [28]byte
	base64.StdEncoding.Encode(accept[:], sum[:])
	out := append(h.out, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	out = append(out, accept[:]...)
	if sub != "" {
		out = append(out, "\r\nSec-WebSocket-Protocol: "...)
		out = append(out, sub...)
	}
	out = append(out, "\r\n\r\n"...)
	h.out = out
	// From here the connection is an MQTT connection awaiting CONNECT.
	l := c.l
	l.stats.connsBy[protoHTTP].Add(-1)
	l.stats.connsBy[protoWS].Add(1)
	c.proto = protoWS
	c.x.ws = &wsState{}
	c.need = 0
	c.lastSeen = uint32(b.now.Load()) // the connect timeout runs from here
	l.wheel.remove(c)
	l.wheel.add(c, c.deadline())
	l.stats.wsUpgrades.Add(1)
	return false
}
