package engine

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"strconv"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/fasthttp"

	"github.com/tinymq/tinymq/codec"
)

// The HTTP door: fasthttp parses requests on the event loops (DESIGN.md
// section 5). fasthttp's Server.ServeConn blocks, so it cannot run on a
// loop; instead each loop keeps one fasthttp.Request and a bufio.Reader over
// the peeked bytes whose reader answers "need more" instead of EOF. A
// request is parsed only once its header block is buffered, and its body
// only once Content-Length bytes are there, so a request split over many
// reads costs one parse. Responses are small fixed shapes, appended by hand
// to a per-loop buffer and written once per OnTraffic.

// proto says what a connection speaks. MQTT connections have the zero value.
type proto uint8

const (
	protoMQTT proto = iota // MQTT over TCP
	protoHTTP              // HTTP requests, or an SSE stream
	protoWS                // MQTT over WebSocket, after the upgrade
	numProtos
)

var protoNames = [numProtos]string{protoMQTT: "mqtt", protoHTTP: "http", protoWS: "websocket"}

// httpState is the per-connection state of a connection accepted on the
// HTTP or WebSocket listener. Owned by the connection's loop.
type httpState struct {
	wsOnly    bool  // accepted on --ws-addr: only the WebSocket upgrade is served
	continued bool  // "100 Continue" sent for the pending request
	stream    bool  // the connection became an SSE stream
	reqStart  int64 // unix second the pending (incomplete) request began; 0 when none
	lastBeat  int64 // SSE: unix second of the last heartbeat
	ws        *wsState
}

// release returns pooled buffers. Runs on the connection's loop.
func (h *httpState) release() {
	if h.ws != nil {
		h.ws.release()
	}
}

// httpDeadline is the unix second at which an HTTP connection is closed: a
// request that does not arrive whole within HTTPReadTimeout, or an idle
// keep-alive connection after HTTPIdleTimeout. Streams have none: their
// heartbeats find dead peers.
func (c *conn) httpDeadline() int64 {
	o := &c.l.b.opts
	switch {
	case c.x.stream:
		return 1<<62 - 1
	case c.x.proxyWait || c.x.tls != nil && !c.x.tls.established:
		// PROXY header or TLS handshake pending: the connect timeout.
		return int64(c.lastSeen) + int64(o.ConnectTimeout.Seconds()+0.5) + clockLag
	case c.x.reqStart != 0:
		return c.x.reqStart + int64(o.HTTPReadTimeout.Seconds()+0.5) + clockLag
	}
	return int64(c.lastSeen) + int64(o.HTTPIdleTimeout.Seconds()+0.5) + clockLag
}

// httpLoop is a loop's HTTP scratch: one request, the reader over the
// peeked bytes and the response buffer. Owned by the loop.
type httpLoop struct {
	req  fasthttp.Request
	pr   peekReader
	br   *bufio.Reader
	out  []byte // responses of this OnTraffic, written once
	path []byte // percent-decoded path
	arg  []byte // percent-decoded query value
	body []byte // response body scratch
	cred []byte // decoded Basic credentials

	p5    httpProps // MQTT 5 properties of the publish being served
	props []byte    // ... encoded (forwardProps' format)
	hdr   []byte    // extra response header lines
}

func (l *loop) http() *httpLoop {
	if l.h == nil {
		l.h = &httpLoop{}
		l.h.br = bufio.NewReaderSize(&l.h.pr, l.b.opts.HTTPMaxHeaderBytes+64)
		l.h.req.Header.DisableNormalizing()
	}
	return l.h
}

// errNeedMore is the reader's answer when the peeked bytes run out.
var errNeedMore = errors.New("engine: need more bytes")

// peekReader reads the bytes peeked from a connection and then says "need
// more" rather than EOF.
type peekReader struct {
	b   []byte
	off int
}

func (r *peekReader) Read(p []byte) (int, error) {
	if r.off >= len(r.b) {
		return 0, errNeedMore
	}
	n := copy(p, r.b[r.off:])
	r.off += n
	return n, nil
}

var (
	crlfcrlf = []byte("\r\n\r\n")
	crlf     = []byte("\r\n")
)

// httpTraffic serves every complete request buffered for c (pipelined
// requests in order) and writes their responses at once. Runs on c's loop.
func (b *Broker) httpTraffic(c *conn) gnet.Action {
	l, hs := c.l, c.x
	if c.authWait {
		return gnet.None // a request waits for its credentials' verdict
	}
	avail := c.inboundLen()
	if avail < int(c.need) {
		return gnet.None
	}
	buf := c.inbound(avail)
	c.lastSeen = uint32(b.now.Load())
	if hs.stream {
		// An event stream only sends; whatever the client sends is dropped.
		c.consume(avail)
		return gnet.None
	}
	if len(buf) > 0 && (buf[0] == 0x16 || buf[0] == 0x10) { // no request starts so: TLS or MQTT on this port
		if k, ok := b.mismatchOf(c, buf[0], buf); ok {
			return b.mismatch(c, k)
		}
	}
	h := l.http()
	h.out = h.out[:0]
	consumed, action := 0, gnet.None
	for consumed < len(buf) && c.open && c.proto == protoHTTP && !hs.stream {
		n, closeConn := b.serveHTTP(c, h, buf[consumed:])
		consumed += n
		if closeConn {
			action = gnet.Close
			break
		}
		if n == 0 {
			break
		}
	}
	if len(h.out) > 0 && c.open {
		c.writeRaw(h.out)
		l.stats.bytesOut.Add(uint64(len(h.out)))
		l.stats.bytesOutBy[protoHTTP].Add(uint64(len(h.out)))
	}
	l.stats.bytesIn.Add(uint64(consumed))
	l.stats.bytesInBy[protoHTTP].Add(uint64(consumed))
	l.r.finish()
	if consumed > 0 && c.open {
		c.consume(consumed)
	}
	if action == gnet.None && c.proto == protoWS && c.open && c.inboundLen() > 0 {
		// Frames that followed the upgrade request in the same read.
		return b.wsTraffic(c)
	}
	if action == gnet.None && hs.stream && c.open && c.inboundLen() > 0 {
		c.consume(c.inboundLen())
	}
	return action
}

// serveHTTP parses and answers one request at the start of in. It returns
// the bytes consumed (0: the request is incomplete; c.need says how many
// bytes to wait for) and whether to close the connection after writing the
// responses. Runs on c's loop.
func (b *Broker) serveHTTP(c *conn, h *httpLoop, in []byte) (int, bool) {
	o := &b.opts
	hs := c.x
	l := c.l
	// Empty lines before a request line are ignored (RFC 9112 section 2.2).
	skip := 0
	for skip+1 < len(in) && in[skip] == '\r' && in[skip+1] == '\n' {
		skip += 2
	}
	if skip > 0 {
		return skip, false
	}
	end := bytes.Index(in, crlfcrlf)
	if end < 0 || end+4 > o.HTTPMaxHeaderBytes {
		if len(in) > o.HTTPMaxHeaderBytes || end+4 > o.HTTPMaxHeaderBytes {
			l.stats.httpErrors.Add(1)
			h.errorResponse(b, 431, "request header too large", true)
			return len(in), true
		}
		b.httpWait(c, len(in)+1)
		return 0, false
	}
	if bytes.Count(in[:end], crlf) > o.HTTPMaxHeaders {
		l.stats.httpErrors.Add(1)
		h.errorResponse(b, 431, "too many request headers", true)
		return len(in), true
	}
	req := &h.req
	req.Reset()
	h.pr = peekReader{b: in}
	h.br.Reset(&h.pr)
	if err := req.Header.Read(h.br); err != nil {
		l.stats.httpErrors.Add(1)
		h.errorResponse(b, 400, "malformed request header", true)
		return len(in), true
	}
	hdrLen := h.pr.off - h.br.Buffered()
	maxBody := o.MaxPacketSize
	cl := req.Header.ContentLength()
	if cl > maxBody {
		// Refused from the header: the body is never read into memory.
		l.stats.httpErrors.Add(1)
		l.stats.oversize.Add(1)
		h.errorResponse(b, 413, "request body larger than "+strconv.Itoa(maxBody)+" bytes", true)
		return len(in), true
	}
	if cl >= 0 && len(in) < hdrLen+cl {
		b.expectContinue(c, h)
		b.httpWait(c, hdrLen+cl)
		return 0, false
	}
	if err := req.ContinueReadBody(h.br, maxBody, false); err != nil {
		switch {
		case errors.Is(err, errNeedMore):
			b.expectContinue(c, h)
			b.httpWait(c, len(in)+1)
			return 0, false
		case errors.Is(err, fasthttp.ErrBodyTooLarge):
			l.stats.httpErrors.Add(1)
			l.stats.oversize.Add(1)
			h.errorResponse(b, 413, "request body larger than "+strconv.Itoa(maxBody)+" bytes", true)
		default:
			l.stats.httpErrors.Add(1)
			h.errorResponse(b, 400, "malformed request body", true)
		}
		return len(in), true
	}
	n := h.pr.off - h.br.Buffered()
	c.need = 0
	if hs.reqStart != 0 {
		hs.reqStart = 0
		l.wheel.remove(c)
		l.wheel.add(c, c.deadline())
	}
	hs.continued = false
	l.stats.httpRequests.Add(1)
	closeConn := req.Header.ConnectionClose()
	if b.route(c, h, closeConn) {
		closeConn = true
	}
	if c.authWait {
		// Its credentials are being verified: the request stays buffered
		// and is served again with the verdict (authJob.Run).
		l.stats.httpRequests.Add(^uint64(0))
		return 0, false
	}
	return n, closeConn
}

// httpWait records that c's request is incomplete: it must be buffered
// whole (need bytes) within HTTPReadTimeout. Runs on c's loop.
func (b *Broker) httpWait(c *conn, need int) {
	c.need = int32(need)
	if c.x.reqStart == 0 {
		c.x.reqStart = b.now.Load()
		c.l.wheel.remove(c)
		c.l.wheel.add(c, c.deadline())
	}
}

// expectContinue answers "Expect: 100-continue" once per request, before
// the body is sent. Runs on c's loop.
func (b *Broker) expectContinue(c *conn, h *httpLoop) {
	if !c.x.continued && h.req.MayContinue() {
		c.x.continued = true
		h.out = append(h.out, "HTTP/1.1 100 Continue\r\n\r\n"...)
	}
}

// route dispatches a parsed request. It reports whether the connection
// must close after the response. Runs on c's loop.
func (b *Broker) route(c *conn, h *httpLoop, closeConn bool) bool {
	req := &h.req
	uri := req.Header.RequestURI()
	path, query := uri, []byte(nil)
	if i := bytes.IndexByte(uri, '?'); i >= 0 {
		path, query = uri[:i], uri[i+1:]
	}
	if bytes.HasPrefix(path, []byte("http://")) || bytes.HasPrefix(path, []byte("https://")) {
		// absolute-form request target: keep the path
		rest := path[bytes.IndexByte(path, ':')+3:]
		if i := bytes.IndexByte(rest, '/'); i >= 0 {
			path = rest[i:]
		} else {
			path = []byte("/")
		}
	}
	method := req.Header.Method()
	r := httpReq{b: b, c: c, h: h, path: path, query: query, method: method, close: closeConn}
	if j := c.x.store; j != nil && j.done {
		// This request is served again with its store operation's
		// result (storeops.go); taken here so that a refusal on the way
		// (credentials reloaded meanwhile) leaves no stale result behind.
		r.storeDone, c.x.store = j, nil
	}
	if c.x.wsOnly {
		// The dedicated WebSocket listener serves the upgrade on any path.
		if req.Header.ConnectionUpgrade() {
			return r.upgrade()
		}
		return r.fail(426, "this listener serves only MQTT over WebSocket")
	}
	p := string(path) // no allocation: used only in comparisons
	switch {
	case p == "/healthz":
		return r.healthz()
	case p == "/mqtt":
		return r.upgrade() // authenticated by CONNECT, like TCP clients
	case isDashboardPath(p):
		return r.dashboard(p) // static; its figures come from the API below
	}
	if !r.authorized() {
		// The request was read whole: the connection stays usable, as the
		// response said (no "Connection: close" unless the client asked).
		// Or it waits for its verdict (c.authWait) and is served again.
		return r.close
	}
	switch {
	case len(p) > len("/publish/") && p[:len("/publish/")] == "/publish/":
		return r.publish(path[len("/publish/"):])
	case len(p) > len("/stream/") && p[:len("/stream/")] == "/stream/":
		return r.stream(path[len("/stream/"):])
	case len(p) > len("/retained/") && p[:len("/retained/")] == "/retained/":
		return r.retained(path[len("/retained/"):])
	case (p == "/metrics" || p == "/api/v1/stats" || p == "/api/v1/stats/stream" || p == "/api/v1/clients" ||
		len(p) > len("/api/v1/clients/") && p[:len("/api/v1/clients/")] == "/api/v1/clients/") && !r.admitted():
		return r.close
	case p == "/metrics":
		return r.metrics()
	case p == "/api/v1/bridges" || p == "/api/bridges":
		return r.bridgesList()
	case p == "/readyz":
		return r.readyz()
	case p == "/api/v1/stats":
		return r.stats()
	case p == "/api/v1/stats/stream":
		return r.statsStream()
	case p == "/api/v1/publish":
		return r.publishBatch()
	case p == "/api/v1/retained":
		return r.retainedList()
	case p == "/api/v1/clients":
		return r.clients()
	case p == "/api/v1/store/checkpoint" || p == "/api/v1/store/compact":
		if !r.storeAdmitted() {
			return r.close
		}
		return r.storeOp(p == "/api/v1/store/compact")
	case len(p) > len("/api/v1/clients/") && p[:len("/api/v1/clients/")] == "/api/v1/clients/":
		return r.kick(path[len("/api/v1/clients/"):])
	}
	return r.fail(404, "no such endpoint")
}

// httpReq is one request being answered. Runs on its connection's loop.
type httpReq struct {
	b      *Broker
	c      *conn
	h      *httpLoop
	path   []byte
	query  []byte
	method []byte
	close  bool

	// Who is asking (authorized).
	admin   bool   // the API key
	user    string // Basic username, "" when anonymous
	hasUser bool
	perms   Permissions // nil: everything

	storeDone *storeJob // the finished store operation this request waited for (storeops.go)
}

// authorized decides who the caller is and whether it may go on, and
// answers 401 itself. "Authorization: Bearer <key>" (or ?token=<key>)
// with the API key is the administrator; "Authorization: Basic" is a user
// of the password file (or of the Authenticator), checked through the
// success cache, inline or, on a miss with a slow Authenticator, on the
// worker pool: then the request stays in gnet's buffer (c.authWait) and is
// served again when the verdict is in. No credentials: anonymous, when
// anonymous access is allowed. It sets r.perms (nil: everything) and
// r.admin. Runs on c's loop.
func (r *httpReq) authorized() bool {
	b, c := r.b, r.c
	h := r.h.req.Header.Peek("Authorization")
	var bearer []byte
	if len(h) > 7 && bytes.EqualFold(h[:7], []byte("Bearer ")) {
		bearer = bytes.TrimSpace(h[7:])
	} else if tok, ok := r.arg("token"); ok {
		bearer = tok
	}
	switch {
	case bearer != nil && b.apiKey != nil: // without an API key, a bearer token means nothing
		if b.apiKeyMatches(true, bearer) {
			r.admin = true
			return true
		}
		return r.unauthorized("missing or wrong API key")
	case len(h) > 6 && bytes.EqualFold(h[:6], []byte("Basic ")):
		user, pass, ok := r.basic(bytes.TrimSpace(h[6:]))
		if !ok {
			return r.unauthorized("malformed Basic credentials")
		}
		ar := b.authn.Load()
		if ar == nil {
			if !b.allowAnonymous {
				return r.unauthorized("wrong username or password")
			}
			break // no password file: the username is taken as given
		}
		key := b.authCache.keyOf(&c.l.authBuf, user, pass)
		if key == c.x.basicBad {
			c.x.basicBad = [32]byte{}
			return r.unauthorized("wrong username or password")
		}
		if !b.authCache.ok(key, b.now.Load()) {
			cr := Credentials{Username: string(user), HasUsername: true, Password: append([]byte(nil), pass...),
				HasPassword: true, Remote: c.remote(), Transport: "http"}
			if !ar.inline {
				j := &authJob{c: c, cr: cr, http: true, key: key}
				if !b.authPool.submit(j) {
					c.l.stats.authOverload.Add(1)
					return r.failAuth(503, "authentication overloaded")
				}
				c.x.pend, c.authWait = j, true
				return false
			}
			if ar.a.Authenticate(&cr) != codec.Success {
				return r.unauthorized("wrong username or password")
			}
			b.authCache.add(key)
		}
		r.user, r.hasUser = string(user), true
	case !b.allowAnonymous:
		if b.apiKey != nil {
			return r.unauthorized("missing or wrong API key")
		}
		return r.unauthorized("credentials required")
	}
	if az := b.authz.Load(); az != nil {
		r.perms = az.a.For(Identity{Username: r.user, HasUsername: r.hasUser})
	}
	return true
}

// basic decodes Basic credentials into the loop's scratch. The slices
// live until the next request.
func (r *httpReq) basic(enc []byte) (user, pass []byte, ok bool) {
	h := r.h
	n := base64.StdEncoding.DecodedLen(len(enc))
	if cap(h.cred) < n {
		h.cred = make([]byte, n)
	}
	n, err := base64.StdEncoding.Decode(h.cred[:n], enc)
	if err != nil {
		return nil, nil, false
	}
	user, pass, ok = bytes.Cut(h.cred[:n], []byte{':'})
	return user, pass, ok
}

// unauthorized answers 401 and counts an authentication failure.
func (r *httpReq) unauthorized(msg string) bool {
	r.c.l.stats.authFailures.Add(1)
	extra := "WWW-Authenticate: Bearer\r\n"
	if r.b.authn.Load() != nil {
		extra = "WWW-Authenticate: Basic realm=\"tinymq\"\r\n"
	}
	r.c.l.stats.httpErrors.Add(1)
	out := append(r.h.body[:0], `{"error":`...)
	out = appendJSONString(out, []byte(msg))
	out = append(out, '}')
	r.h.body = out
	r.h.respond(r.b, 401, ctJSON, out, r.close, extra)
	return false
}

// failAuth answers an error status from authorized: the request is
// finished, not served.
func (r *httpReq) failAuth(status int, msg string) bool {
	r.fail(status, msg)
	return false
}

// admitted reports whether the caller may use a management endpoint
// (metrics, statistics, the client list and kicks): with an API key set,
// only its holder may. It answers 403 itself.
func (r *httpReq) admitted() bool {
	if r.admin || r.b.apiKey == nil {
		return true
	}
	r.fail(403, "this endpoint needs the API key")
	return false
}

// canWrite and canRead apply the caller's ACL to a topic; denials are
// counted.
func (r *httpReq) canWrite(t []byte) bool {
	if r.perms == nil || r.perms.CanWrite(t) {
		return true
	}
	r.c.l.stats.aclDenied[aclPublish].Add(1)
	return false
}

func (r *httpReq) canRead(t []byte) bool {
	return r.perms == nil || r.perms.CanRead(t)
}

// arg returns the percent-decoded value of a query parameter. The value
// lives in the loop's scratch until the next call.
func (r *httpReq) arg(name string) ([]byte, bool) {
	q := r.query
	for len(q) > 0 {
		var kv []byte
		if i := bytes.IndexByte(q, '&'); i >= 0 {
			kv, q = q[:i], q[i+1:]
		} else {
			kv, q = q, nil
		}
		k, v := kv, []byte(nil)
		if i := bytes.IndexByte(kv, '='); i >= 0 {
			k, v = kv[:i], kv[i+1:]
		}
		if string(k) != name {
			continue
		}
		d, ok := pctDecode(r.h.arg[:0], v)
		r.h.arg = d
		return d, ok
	}
	return nil, false
}

// boolArg parses true/false/1/0 (absent: def).
func (r *httpReq) boolArg(name string, def bool) (bool, bool) {
	v, ok := r.arg(name)
	if !ok {
		return def, true
	}
	switch string(v) {
	case "true", "1", "":
		return true, true
	case "false", "0":
		return false, true
	}
	return false, false
}

// intArg parses a non-negative integer (absent: def).
func (r *httpReq) intArg(name string, def int) (int, bool) {
	v, ok := r.arg(name)
	if !ok {
		return def, true
	}
	n, err := strconv.Atoi(string(v))
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// only answers 405 unless the method is m.
func (r *httpReq) only(m string) bool {
	if string(r.method) == m || (m == "GET" && string(r.method) == "HEAD") {
		return true
	}
	r.c.l.stats.httpErrors.Add(1)
	r.h.respond(r.b, 405, ctJSON, []byte(`{"error":"method not allowed"}`), r.close, "Allow: "+m+"\r\n")
	return false
}

// fail answers an error with a small JSON body.
func (r *httpReq) fail(status int, msg string) bool {
	r.c.l.stats.httpErrors.Add(1)
	r.h.errorResponse(r.b, status, msg, r.close)
	return r.close
}

// ok answers 200 with a JSON body.
func (r *httpReq) ok(status int, body []byte) bool {
	if string(r.method) == "HEAD" {
		r.h.respondHead(r.b, status, ctJSON, len(body), r.close)
		return r.close
	}
	r.h.respond(r.b, status, ctJSON, body, r.close, "")
	return r.close
}

const (
	ctJSON = "application/json"
	ctText = "text/plain; charset=utf-8"
)

// errorResponse appends a JSON error response.
func (h *httpLoop) errorResponse(b *Broker, status int, msg string, closeConn bool) {
	body := append(h.body[:0], `{"error":`...)
	body = appendJSONString(body, []byte(msg))
	body = append(body, '}')
	h.body = body
	h.respond(b, status, ctJSON, body, closeConn, "")
}

// respond appends a whole response. extra holds complete header lines.
func (h *httpLoop) respond(b *Broker, status int, ctype string, body []byte, closeConn bool, extra string) {
	h.head(b, status, ctype, len(body), closeConn, extra)
	h.out = append(h.out, body...)
}

func (h *httpLoop) respondHead(b *Broker, status int, ctype string, n int, closeConn bool) {
	h.head(b, status, ctype, n, closeConn, "")
}

// head appends a status line and headers, Content-Length n.
func (h *httpLoop) head(b *Broker, status int, ctype string, n int, closeConn bool, extra string) {
	out := append(h.out, "HTTP/1.1 "...)
	out = strconv.AppendInt(out, int64(status), 10)
	out = append(out, ' ')
	out = append(out, statusText(status)...)
	out = append(out, "\r\nServer: tinymq\r\nDate: "...)
	out = append(out, *b.date.Load()...)
	out = append(out, "\r\nContent-Type: "...)
	out = append(out, ctype...)
	out = append(out, "\r\nContent-Length: "...)
	out = strconv.AppendInt(out, int64(n), 10)
	out = append(out, "\r\n"...)
	if closeConn {
		out = append(out, "Connection: close\r\n"...)
	} else if !h.req.Header.IsHTTP11() {
		out = append(out, "Connection: keep-alive\r\n"...)
	}
	out = append(out, extra...)
	out = append(out, "\r\n"...)
	h.out = out
}

func statusText(code int) string {
	switch code {
	case 200:
		return "OK"
	case 202:
		return "Accepted"
	case 204:
		return "No Content"
	case 400:
		return "Bad Request"
	case 401:
		return "Unauthorized"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 405:
		return "Method Not Allowed"
	case 409:
		return "Conflict"
	case 413:
		return "Content Too Large"
	case 426:
		return "Upgrade Required"
	case 431:
		return "Request Header Fields Too Large"
	case 500:
		return "Internal Server Error"
	case 503:
		return "Service Unavailable"
	}
	return "Status"
}

// pctDecode appends the percent-decoded s to dst. '+' stays '+' (it is an
// MQTT wildcard, not a space). It reports false on a bad escape.
func pctDecode(dst, s []byte) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch != '%' {
			dst = append(dst, ch)
			continue
		}
		if i+2 >= len(s) {
			return dst, false
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return dst, false
		}
		dst = append(dst, hi<<4|lo)
		i += 2
	}
	return dst, true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
