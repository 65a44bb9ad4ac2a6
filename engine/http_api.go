package engine

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"unicode/utf8"

	"github.com/tinymq/tinymq/codec"

	"github.com/tinymq/tinymq/topic"
)

// HTTP endpoints. Each runs on the requesting connection's loop and must not
// block; each reports whether the connection closes after its response.

// publish serves POST /publish/{topic}?qos=&retain=: the body is routed
// exactly as an MQTT PUBLISH of the same topic, QoS and retain flag, with
// the MQTT 5 properties the request gives (props5).
func (r *httpReq) publish(rawTopic []byte) bool {
	if !r.only("POST") {
		return r.close
	}
	h, l, b := r.h, r.c.l, r.b
	t, ok := pctDecode(h.path[:0], rawTopic)
	h.path = t
	if !ok {
		return r.fail(400, "bad percent-encoding in topic")
	}
	if err := b.validName(t); err != nil {
		return r.fail(400, "invalid topic name: "+err.Error())
	}
	if isSysTopic(t) {
		return r.fail(403, "publishing to $SYS is not allowed")
	}
	if !r.canWrite(t) {
		return r.fail(403, "not authorized to publish to this topic")
	}
	qos, ok := r.intArg("qos", 0)
	if !ok || qos > 2 {
		return r.fail(400, "qos must be 0, 1 or 2")
	}
	retain, ok := r.boolArg("retain", false)
	if !ok {
		return r.fail(400, "retain must be true or false")
	}
	body := h.req.Body()
	if msg := r.props5(); msg != "" {
		return r.fail(400, msg)
	}
	if msg := h.p5.check(b, t, body); msg != "" {
		return r.fail(400, msg)
	}
	h.props = h.p5.appendTo(h.props[:0])
	var props []byte
	if len(h.props) > 0 {
		props = h.props
	}
	l.stats.msgsIn.Add(1)
	l.stats.msgsInBy[protoHTTP][qos].Add(1)
	l.r.setMeta(props, absExpiry(b, h.p5.expiry), nil)
	l.r.publish(t, body, uint8(qos), retain, nil)
	out := append(h.body[:0], `{"status":"accepted","topic":`...)
	out = appendJSONString(out, t)
	out = append(out, '}')
	h.body = out
	h.respond(b, 202, ctJSON, out, r.close, "")
	return r.close
}

// batchItem is one message of POST /api/v1/publish.
type batchItem struct {
	Topic    string `json:"topic"`
	Payload  string `json:"payload"`
	Encoding string `json:"encoding"` // "utf8" (default) or "base64"
	QoS      *int   `json:"qos"`
	Retain   bool   `json:"retain"`
	// ContentType is the message's content type (as properties.content_type).
	ContentType string      `json:"content_type"`
	Properties  *batchProps `json:"properties"`
}

// batchProps are a batch message's MQTT 5 properties, by EMQX's names
// (its POST /api/v5/publish); correlation data is base64 here.
type batchProps struct {
	PayloadFormat   *int       `json:"payload_format_indicator"`
	MessageExpiry   *uint32    `json:"message_expiry_interval"`
	ContentType     string     `json:"content_type"`
	ResponseTopic   string     `json:"response_topic"`
	CorrelationData string     `json:"correlation_data"`
	UserProperties  orderedMap `json:"user_properties"`
}

// orderedMap is a JSON object of strings kept in document order,
// duplicate names included.
type orderedMap [][2]string

func (m *orderedMap) UnmarshalJSON(b []byte) error {
	d := json.NewDecoder(bytes.NewReader(b))
	errShape := errors.New("user_properties must be an object of strings")
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		if tok == nil && err == nil {
			return nil // null
		}
		return errShape
	}
	for d.More() {
		k, err := d.Token()
		if err != nil {
			return err
		}
		v, err := d.Token()
		if err != nil {
			return err
		}
		vs, ok := v.(string)
		if !ok {
			return errShape
		}
		*m = append(*m, [2]string{k.(string), vs})
	}
	_, err := d.Token()
	return err
}

// props reads a batch message's properties into p.
func (bp *batchProps) props(b *Broker, p *httpProps) string {
	if bp.PayloadFormat != nil {
		switch *bp.PayloadFormat {
		case 0:
		case 1:
			p.format = true
		default:
			return "payload_format_indicator must be 0 or 1"
		}
	}
	if bp.MessageExpiry != nil {
		p.expiry = *bp.MessageExpiry
	}
	if bp.ContentType != "" {
		if msg := p.setContentType([]byte(bp.ContentType)); msg != "" {
			return msg
		}
	}
	if bp.ResponseTopic != "" {
		if msg := p.setResponseTopic(b, []byte(bp.ResponseTopic)); msg != "" {
			return msg
		}
	}
	if bp.CorrelationData != "" {
		if msg := p.setCorrelation([]byte(bp.CorrelationData)); msg != "" {
			return msg
		}
	}
	for _, kv := range bp.UserProperties {
		if msg := p.addUser([]byte(kv[0]), []byte(kv[1])); msg != "" {
			return msg
		}
	}
	return ""
}

// publishBatch serves POST /api/v1/publish: a JSON array of messages,
// validated whole before any is routed (all or nothing), then routed in
// order.
func (r *httpReq) publishBatch() bool {
	if !r.only("POST") {
		return r.close
	}
	b, l := r.b, r.c.l
	var items []batchItem
	if err := json.Unmarshal(r.h.req.Body(), &items); err != nil {
		return r.fail(400, "body must be a JSON array of {topic, payload, encoding, qos, retain, properties}: "+err.Error())
	}
	if len(items) == 0 {
		return r.fail(400, "empty batch")
	}
	payloads := make([][]byte, len(items))
	props := make([][]byte, len(items))
	expiry := make([]uint32, len(items))
	for i := range items {
		it := &items[i]
		bad := func(msg string) bool { return r.fail(400, "message "+strconv.Itoa(i)+": "+msg) }
		if err := b.validName([]byte(it.Topic)); err != nil {
			return bad("invalid topic name: " + err.Error())
		}
		if isSysTopic([]byte(it.Topic)) {
			return r.fail(403, "message "+strconv.Itoa(i)+": publishing to $SYS is not allowed")
		}
		if !r.canWrite([]byte(it.Topic)) {
			return r.fail(403, "message "+strconv.Itoa(i)+": not authorized to publish to this topic")
		}
		if it.QoS != nil && (*it.QoS < 0 || *it.QoS > 2) {
			return bad("qos must be 0, 1 or 2")
		}
		switch it.Encoding {
		case "", "utf8", "utf-8":
			payloads[i] = []byte(it.Payload)
		case "base64":
			p, err := base64.StdEncoding.DecodeString(it.Payload)
			if err != nil {
				return bad("payload is not valid base64")
			}
			payloads[i] = p
		default:
			return bad(`encoding must be "utf8" or "base64"`)
		}
		var p httpProps
		if msg := p.setContentType([]byte(it.ContentType)); msg != "" {
			return bad(msg)
		}
		if it.Properties != nil {
			if msg := it.Properties.props(b, &p); msg != "" {
				return bad(msg)
			}
		}
		if msg := p.check(b, []byte(it.Topic), payloads[i]); msg != "" {
			return bad(msg)
		}
		if p.size() > 0 {
			props[i] = p.appendTo(make([]byte, 0, p.size()))
		}
		expiry[i] = p.expiry
	}
	for i := range items {
		it := &items[i]
		qos := 0
		if it.QoS != nil {
			qos = *it.QoS
		}
		l.stats.msgsIn.Add(1)
		l.stats.msgsInBy[protoHTTP][qos].Add(1)
		l.r.setMeta(props[i], absExpiry(b, expiry[i]), nil)
		l.r.publish([]byte(it.Topic), payloads[i], uint8(qos), it.Retain, nil)
	}
	out := append(r.h.body[:0], `{"status":"accepted","count":`...)
	out = strconv.AppendInt(out, int64(len(items)), 10)
	out = append(out, '}')
	r.h.body = out
	r.h.respond(b, 202, ctJSON, out, r.close, "")
	return r.close
}

// retained serves GET /retained/{topic}: the retained payload, 404 when
// none or expired; its content type as Content-Type, its other MQTT 5
// properties and the expiry left as headers (appendPropHeaders).
func (r *httpReq) retained(rawTopic []byte) bool {
	if !r.only("GET") {
		return r.close
	}
	h, b := r.h, r.b
	t, ok := pctDecode(h.path[:0], rawTopic)
	h.path = t
	if !ok {
		return r.fail(400, "bad percent-encoding in topic")
	}
	if err := b.validName(t); err != nil {
		return r.fail(400, "invalid topic name: "+err.Error())
	}
	if !r.canRead(t) {
		r.c.l.stats.aclDenied[aclDeliver].Add(1)
		return r.fail(403, "not authorized to read this topic")
	}
	m, found := b.retained.Get(t)
	now := b.now.Load()
	if !found || m.expired(now) { // an expired one is gone (5.0 [MQTT-3.3.2-5])
		return r.fail(404, "no retained message for this topic")
	}
	ct := "application/octet-stream"
	switch {
	case m.contentType() != nil:
		ct = string(m.contentType()) // as the publisher gave it
	case utf8.Valid(m.payload):
		ct = ctText
		if json.Valid(m.payload) {
			ct = ctJSON
		}
	}
	x := append(h.hdr[:0], "X-MQTT-QoS: "...)
	x = append(strconv.AppendInt(x, int64(m.qos), 10), "\r\n"...)
	if left, ok := expiryLeft(m.expiry, now); ok {
		x = append(strconv.AppendUint(append(x, "MQTT-Message-Expiry: "...), uint64(left), 10), "\r\n"...)
	}
	x = appendPropHeaders(x, m.props())
	h.hdr = x
	extra := string(x)
	if string(r.method) == "HEAD" {
		h.head(b, 200, ct, len(m.payload), r.close, extra)
		return r.close
	}
	h.respond(b, 200, ct, m.payload, r.close, extra)
	return r.close
}

// retainedList serves GET /api/v1/retained?filter=&offset=&limit=: the
// retained topics matching a filter, sorted, paged.
func (r *httpReq) retainedList() bool {
	if !r.only("GET") {
		return r.close
	}
	b := r.b
	filter, ok := r.arg("filter")
	if !ok {
		filter = []byte("#")
	}
	if err := topic.ValidateFilter(filter, b.limits); err != nil {
		return r.fail(400, "invalid filter: "+err.Error())
	}
	filter = append([]byte(nil), filter...)
	offset, ok1 := r.intArg("offset", 0)
	limit, ok2 := r.intArg("limit", 100)
	if !ok1 || !ok2 || limit < 1 || limit > 1000 {
		return r.fail(400, "offset must be >= 0 and limit 1..1000")
	}
	type item struct {
		Topic       string `json:"topic"`
		QoS         uint8  `json:"qos"`
		Size        int    `json:"size"`
		ContentType string `json:"content_type,omitempty"`
	}
	var items []item
	b.retained.Match(filter, func(t string, m *message) bool {
		if !r.canRead(m.topic) {
			return true // not listed to a caller who may not read it
		}
		items = append(items, item{Topic: t, QoS: m.qos, Size: len(m.payload), ContentType: string(m.contentType())})
		return true
	})
	sort.Slice(items, func(i, j int) bool { return items[i].Topic < items[j].Topic })
	total := len(items)
	items = items[min(offset, total):min(offset+limit, total)]
	if items == nil {
		items = []item{}
	}
	out, _ := json.Marshal(struct {
		Filter string `json:"filter"`
		Total  int    `json:"total"`
		Offset int    `json:"offset"`
		Limit  int    `json:"limit"`
		Items  []item `json:"items"`
	}{string(filter), total, offset, limit, items})
	return r.ok(200, out)
}

// healthz serves GET /healthz: the process is alive.
func (r *httpReq) healthz() bool {
	if !r.only("GET") {
		return r.close
	}
	if err := r.b.StoreHealth(); err != nil { // persist.go: the store refuses writes
		return r.fail(503, "store: "+err.Error())
	}
	return r.ok(200, []byte(`{"status":"ok"}`))
}

// readyz serves GET /readyz: every listener is up (and, once persistence
// lands, the store is recovered).
func (r *httpReq) readyz() bool {
	if !r.only("GET") {
		return r.close
	}
	if !r.b.ready.Load() || r.b.closing.Load() {
		return r.fail(503, "not ready")
	}
	return r.ok(200, []byte(`{"status":"ready"}`))
}

// stats serves GET /api/v1/stats: a JSON snapshot of the counters.
func (r *httpReq) stats() bool {
	if !r.only("GET") {
		return r.close
	}
	out, _ := json.Marshal(r.b.Snapshot())
	return r.ok(200, out)
}

// ClientInfo describes one session for GET /api/v1/clients.
type ClientInfo struct {
	ClientID       string `json:"client_id"`
	Username       string `json:"username,omitempty"`
	Connected      bool   `json:"connected"`
	RemoteAddr     string `json:"remote_addr,omitempty"`
	Protocol       string `json:"protocol"`
	Transport      string `json:"transport,omitempty"`
	ConnectedSince int64  `json:"connected_since,omitempty"` // unix seconds
	KeepAlive      int    `json:"keep_alive"`                // seconds (the server's for 5.0), 0: none
	CleanSession   bool   `json:"clean_session"`
	Subscriptions  int    `json:"subscriptions"`
	Queued         int    `json:"queued"`
	Inflight       int    `json:"inflight"`
}

// Clients lists the sessions (online and persistent offline) sorted by
// client id. Any goroutine.
func (b *Broker) Clients() []ClientInfo {
	b.sessMu.Lock()
	ss := make([]*session, 0, b.sessions.Len())
	b.sessions.Range(func(s *session) bool {
		ss = append(ss, s)
		return true
	})
	b.sessMu.Unlock()
	out := make([]ClientInfo, 0, len(ss))
	for _, s := range ss {
		s.mu.Lock()
		if s.dead {
			s.mu.Unlock()
			continue
		}
		ci := ClientInfo{
			ClientID: s.id, Protocol: s.version.String(), CleanSession: s.clean,
			Subscriptions: len(s.subs), Queued: s.queuedLocked(), Inflight: s.inflightLocked(),
		}
		if c := s.c; c != nil {
			// s.c is cleared under s.mu before gnet releases the
			// connection, so c.gc is valid here.
			ci.Connected = true
			ci.RemoteAddr = c.remote()
			if c.x != nil {
				ci.Username = c.x.id.user // written at CONNECT, before the session knew c
			}
			ci.Transport = protoNames[c.proto]
			ci.ConnectedSince = int64(s.since)
			ci.KeepAlive = int(c.keepAlive) // written at CONNECT, before the session knew c
		}
		s.mu.Unlock()
		out = append(out, ci)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ClientID < out[j].ClientID })
	return out
}

// clients serves GET /api/v1/clients?offset=&limit=&q=, q a search
// (matchClient).
func (r *httpReq) clients() bool {
	if !r.only("GET") {
		return r.close
	}
	offset, ok1 := r.intArg("offset", 0)
	limit, ok2 := r.intArg("limit", 100)
	if !ok1 || !ok2 || limit < 1 || limit > 1000 {
		return r.fail(400, "offset must be >= 0 and limit 1..1000")
	}
	all := r.b.Clients()
	if q, _ := r.arg("q"); len(q) > 0 {
		qs := string(q)
		all = slices.DeleteFunc(all, func(ci ClientInfo) bool { return !matchClient(&ci, qs) })
	}
	total := len(all)
	page := all[min(offset, total):min(offset+limit, total)]
	out, _ := json.Marshal(struct {
		Total   int          `json:"total"`
		Offset  int          `json:"offset"`
		Limit   int          `json:"limit"`
		Clients []ClientInfo `json:"clients"`
	}{total, offset, limit, page})
	return r.ok(200, out)
}

// kick serves DELETE /api/v1/clients/{id}: the client's connection is
// closed as on a network drop, so its will is published.
func (r *httpReq) kick(rawID []byte) bool {
	if !r.only("DELETE") {
		return r.close
	}
	id, err := url.PathUnescape(string(rawID))
	if err != nil {
		return r.fail(400, "bad percent-encoding in client id")
	}
	if !r.b.Disconnect(id, "disconnected by API") {
		return r.fail(404, "client not connected")
	}
	body := append(r.h.body[:0], `{"status":"disconnected","client_id":`...)
	body = appendJSONString(body, []byte(id))
	body = append(body, '}')
	r.h.body = body
	return r.ok(200, body)
}

// Disconnect closes the connection of client id as a network error would
// (its will is published) and reports whether it was connected. Any
// goroutine.
func (b *Broker) Disconnect(id, reason string) bool {
	s := b.sessionByID(id)
	if s == nil {
		return false
	}
	s.mu.Lock()
	c := s.c
	s.mu.Unlock()
	if c == nil {
		return false
	}
	if b.opts.Verbose {
		b.log.Info("disconnecting client", "client", id, "reason", reason)
	}
	return c.closeOnLoop(codec.AdministrativeAction, closeKicked) == nil // 5.0: DISCONNECT 0x98
}

// appendJSONString appends s as a JSON string. Invalid UTF-8 is replaced
// by U+FFFD (callers that must keep bytes use base64).
func appendJSONString(dst, s []byte) []byte {
	const hexd = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				dst = append(dst, '\\', 'u', '0', '0', hexd[c>>4], hexd[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else if r == '\u2028' || r == '\u2029' {
			dst = append(dst, '\\', 'u', '2', '0', '2', hexd[r&0xf])
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}

// appendJSONPayload appends "payload":... for an MQTT payload: text when it
// is valid UTF-8, else base64 with "encoding":"base64".
func appendJSONPayload(dst, p []byte) []byte {
	dst = append(dst, `"payload":`...)
	if utf8.Valid(p) {
		return appendJSONString(dst, p)
	}
	dst = append(dst, '"')
	n := len(dst)
	dst = append(dst, make([]byte, base64.StdEncoding.EncodedLen(len(p)))...)
	base64.StdEncoding.Encode(dst[n:], p)
	return append(dst, `","encoding":"base64"`...)
}

// MQTT 5 properties over HTTP. A publish carries them in headers and the
// query (POST /publish) or in a "properties" object (POST /api/v1/publish,
// EMQX's field names); GET /retained answers with them as headers and SSE
// events as JSON fields. The names are in docs/http.md.

// maxHTTPUserProps bounds the user properties of one HTTP publish.
const maxHTTPUserProps = 64

// httpProps collects the MQTT 5 properties of one HTTP publish. A single
// publish uses the loop's (httpLoop.p5, reset per request); its byte
// fields alias the request or its own buffers and live until the next
// request. Runs on the request's loop.
type httpProps struct {
	format bool   // Payload Format Indicator 1: the payload is UTF-8
	expiry uint32 // Message Expiry Interval in seconds; 0: never
	ct     []byte // Content Type; aliases the request
	rt     []byte // Response Topic (own buffer)
	corr   []byte // Correlation Data (own buffer)
	users  []byte // user properties as encoded (0x26 key value), in order
	nUsers int
}

func (p *httpProps) reset() {
	p.format, p.expiry, p.ct, p.nUsers = false, 0, nil, 0
	p.rt, p.corr, p.users = p.rt[:0], p.corr[:0], p.users[:0]
}

// mqttString reports whether s may be an MQTT UTF-8 string: well-formed,
// no U+0000, at most 65,535 bytes ([MQTT-1.5.4-1] [MQTT-1.5.4-2]).
func mqttString(s []byte) bool {
	return len(s) <= 65535 && bytes.IndexByte(s, 0) < 0 && utf8.Valid(s)
}

// setContentType takes a request's Content-Type; curl's default for -d,
// application/x-www-form-urlencoded, says nothing about an MQTT payload
// and is not kept. It returns an error message, "" when fine.
func (p *httpProps) setContentType(ct []byte) string {
	ct = bytes.TrimSpace(ct)
	if len(ct) == 0 || bytes.EqualFold(ct, []byte("application/x-www-form-urlencoded")) {
		p.ct = nil
		return ""
	}
	if len(ct) > maxContentType || !mqttString(ct) {
		return "content type must be UTF-8 of at most " + strconv.Itoa(maxContentType) + " bytes"
	}
	p.ct = ct
	return ""
}

// setExpiry parses a message expiry interval in seconds (0: never).
func (p *httpProps) setExpiry(v []byte) string {
	n, err := strconv.ParseUint(string(v), 10, 32)
	if err != nil {
		return "message expiry must be a number of seconds, 0..4294967295"
	}
	p.expiry = uint32(n)
	return ""
}

// setFormat parses a payload format indicator: 1 or utf8 (the payload is
// UTF-8, checked), 0 or bytes (unspecified, the default).
func (p *httpProps) setFormat(v []byte) string {
	switch {
	case string(v) == "1" || bytes.EqualFold(v, []byte("utf8")) || bytes.EqualFold(v, []byte("utf-8")):
		p.format = true
	case string(v) == "0" || bytes.EqualFold(v, []byte("bytes")):
		p.format = false
	default:
		return "payload format must be 1 (utf8) or 0 (bytes)"
	}
	return ""
}

// setResponseTopic takes a response topic: a topic name, no wildcards
// (5.0 [MQTT-3.3.2-14]).
func (p *httpProps) setResponseTopic(b *Broker, v []byte) string {
	if err := b.validName(v); err != nil {
		return "invalid response topic: " + err.Error()
	}
	p.rt = append(p.rt[:0], v...)
	return ""
}

// setCorrelation decodes base64 correlation data (padded or not).
func (p *httpProps) setCorrelation(v []byte) string {
	enc := base64.StdEncoding
	if len(v)%4 != 0 {
		enc = base64.RawStdEncoding
	}
	n := enc.DecodedLen(len(v))
	if n > 65535 {
		return "correlation data longer than 65535 bytes"
	}
	if cap(p.corr) < n {
		p.corr = make([]byte, 0, n)
	}
	n, err := enc.Decode(p.corr[:n], v)
	if err != nil {
		return "correlation data is not valid base64"
	}
	p.corr = p.corr[:n]
	return ""
}

// addUser appends a user property.
func (p *httpProps) addUser(k, v []byte) string {
	if p.nUsers >= maxHTTPUserProps {
		return "more than " + strconv.Itoa(maxHTTPUserProps) + " user properties"
	}
	if !mqttString(k) || !mqttString(v) {
		return "user property name and value must be UTF-8 without U+0000"
	}
	p.nUsers++
	p.users = append(p.users, byte(codec.PropUser))
	p.users = codec.AppendString(p.users, k)
	p.users = codec.AppendString(p.users, v)
	return ""
}

// addUserPair appends a user property given as name:value, each half
// percent-encoded (?user= and the MQTT-User-Property header).
func (p *httpProps) addUserPair(h *httpLoop, pair []byte) string {
	k, v, ok := bytes.Cut(pair, []byte{':'})
	if !ok {
		return "a user property is name:value"
	}
	// Both halves are decoded into h.arg, then split again.
	d, ok1 := pctDecode(h.arg[:0], k)
	n := len(d)
	d, ok2 := pctDecode(d, v)
	h.arg = d
	if !ok1 || !ok2 {
		return "bad percent-encoding in a user property"
	}
	return p.addUser(d[:n], d[n:])
}

// size is the encoded length of the properties.
func (p *httpProps) size() int {
	n := len(p.users)
	if p.format {
		n += 2
	}
	for _, s := range [...][]byte{p.ct, p.rt, p.corr} {
		if len(s) > 0 {
			n += 3 + len(s)
		}
	}
	return n
}

// appendTo appends the properties as forwardProps writes them: identifier
// order, user properties last in their order. Never the message expiry,
// which travels as message.expiry.
func (p *httpProps) appendTo(dst []byte) []byte {
	if p.format {
		dst = append(dst, byte(codec.PropPayloadFormat), 1)
	}
	if len(p.ct) > 0 {
		dst = codec.AppendString(append(dst, byte(codec.PropContentType)), p.ct)
	}
	if len(p.rt) > 0 {
		dst = codec.AppendString(append(dst, byte(codec.PropResponseTopic)), p.rt)
	}
	if len(p.corr) > 0 {
		dst = codec.AppendString(append(dst, byte(codec.PropCorrelationData)), p.corr)
	}
	return append(dst, p.users...)
}

// check applies the limits that need the whole message: a UTF-8 payload
// when the format says so, and, for a message with properties, the packet
// it makes within the maximum packet size (a body alone is bounded by
// the HTTP door's own limit, as before properties).
func (p *httpProps) check(b *Broker, topicName, payload []byte) string {
	if p.format && !utf8.Valid(payload) {
		return "payload format is utf8 but the payload is not valid UTF-8"
	}
	// Fixed header (5), topic, packet id, property length (4) and the
	// message expiry (5) are the rest of the packet.
	if n := p.size(); n > 0 && 5+2+len(topicName)+2+4+5+n+len(payload) > b.opts.MaxPacketSize {
		return "message with its properties larger than " + strconv.Itoa(b.opts.MaxPacketSize) + " bytes"
	}
	return ""
}

// props5 reads the MQTT 5 properties of POST /publish into r.h.p5:
// Content-Type, the MQTT-* headers in order (names case-insensitive, a
// user property's name as sent), then ?expiry=, ?response_topic= and
// ?user=name:value in order; a property given twice keeps the last. It
// returns an error message, "" when fine.
func (r *httpReq) props5() string {
	h, b := r.h, r.b
	p := &h.p5
	p.reset()
	if msg := p.setContentType(h.req.Header.ContentType()); msg != "" {
		return msg
	}
	// The raw header block, not fasthttp's parsed view: that one
	// capitalises names (MQTT-User-unit would become Mqtt-User-Unit), and
	// an MQTT user property's name is case-sensitive.
	for raw := h.req.Header.RawHeaders(); len(raw) > 0; {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		if len(line) <= 5 || !bytes.EqualFold(line[:5], []byte("mqtt-")) {
			continue
		}
		k, v, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue // fasthttp parsed the block: not a header line
		}
		v = bytes.Trim(v, " \t\r")
		name, msg := k[5:], ""
		switch {
		case bytes.EqualFold(name, []byte("message-expiry")):
			msg = p.setExpiry(v)
		case bytes.EqualFold(name, []byte("response-topic")):
			msg = p.setResponseTopic(b, v)
		case bytes.EqualFold(name, []byte("correlation-data")):
			msg = p.setCorrelation(v)
		case bytes.EqualFold(name, []byte("payload-format")):
			msg = p.setFormat(v)
		case bytes.EqualFold(name, []byte("user-property")):
			msg = p.addUserPair(h, v)
		case len(name) > 5 && bytes.EqualFold(name[:5], []byte("user-")):
			msg = p.addUser(name[5:], v)
		}
		if msg != "" {
			return msg
		}
	}
	for q := r.query; len(q) > 0; {
		var kv []byte
		if i := bytes.IndexByte(q, '&'); i >= 0 {
			kv, q = q[:i], q[i+1:]
		} else {
			kv, q = q, nil
		}
		k, v, _ := bytes.Cut(kv, []byte{'='})
		msg := ""
		switch string(k) {
		case "expiry":
			msg = p.setExpiry(v)
		case "response_topic":
			d, ok := pctDecode(h.arg[:0], v)
			h.arg = d
			if !ok {
				return "bad percent-encoding in response_topic"
			}
			msg = p.setResponseTopic(b, d)
		case "user":
			msg = p.addUserPair(h, v)
		}
		if msg != "" {
			return msg
		}
	}
	return ""
}

// headerToken reports whether s is an HTTP field name (RFC 9110 token).
func headerToken(s []byte) bool {
	if len(s) == 0 {
		return false
	}
	for _, c := range s {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0:
		default:
			return false
		}
	}
	return true
}

// headerSafe reports whether s can be sent as an HTTP field value as it
// is: no control characters, no leading or trailing white space (a reader
// would trim it).
func headerSafe(s []byte) bool {
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	return len(s) == 0 || (s[0] != ' ' && s[len(s)-1] != ' ')
}

// appendPct appends s percent-encoded: everything but RFC 3986's
// unreserved characters.
func appendPct(dst, s []byte) []byte {
	const hexd = "0123456789ABCDEF"
	for _, c := range s {
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			dst = append(dst, c)
		} else {
			dst = append(dst, '%', hexd[c>>4], hexd[c&0xf])
		}
	}
	return dst
}

// appendPropHeaders appends a stored message's properties as response
// header lines (the content type is the Content-Type, not here). A user
// property is MQTT-User-<name>: <value> when both can travel as they are,
// else MQTT-User-Property: <name>:<value> percent-encoded; a response
// topic with control characters is left out.
func appendPropHeaders(dst, props []byte) []byte {
	for i := 0; ; {
		id, a, v, next := nextProp(props, i)
		if next < 0 {
			return dst
		}
		i = next
		switch id {
		case codec.PropPayloadFormat:
			if a[0] == 1 {
				dst = append(dst, "MQTT-Payload-Format: utf8\r\n"...)
			}
		case codec.PropResponseTopic:
			if headerSafe(a) {
				dst = append(append(append(dst, "MQTT-Response-Topic: "...), a...), "\r\n"...)
			}
		case codec.PropCorrelationData:
			dst = base64.StdEncoding.AppendEncode(append(dst, "MQTT-Correlation-Data: "...), a)
			dst = append(dst, "\r\n"...)
		case codec.PropUser:
			if headerToken(a) && !bytes.EqualFold(a, []byte("property")) && headerSafe(v) {
				dst = append(append(dst, "MQTT-User-"...), a...)
				dst = append(append(append(dst, ": "...), v...), "\r\n"...)
			} else {
				dst = appendPct(append(dst, "MQTT-User-Property: "...), a)
				dst = append(appendPct(append(dst, ':'), v), "\r\n"...)
			}
		}
	}
}

// appendJSONProps appends the SSE fields of a stored message's properties:
// payload_format_indicator, content_type, response_topic,
// correlation_data (base64) and user_properties, an array of [name, value]
// pairs in order. Each only when present.
func appendJSONProps(dst, props []byte) []byte {
	users := 0
	for i := 0; ; {
		id, a, v, next := nextProp(props, i)
		if next < 0 {
			break
		}
		i = next
		if id != codec.PropUser && users > 0 {
			dst = append(dst, ']')
			users = 0
		}
		switch id {
		case codec.PropPayloadFormat:
			dst = append(dst, `,"payload_format_indicator":`...)
			dst = strconv.AppendUint(dst, uint64(a[0]), 10)
		case codec.PropContentType:
			dst = appendJSONString(append(dst, `,"content_type":`...), a)
		case codec.PropResponseTopic:
			dst = appendJSONString(append(dst, `,"response_topic":`...), a)
		case codec.PropCorrelationData:
			dst = base64.StdEncoding.AppendEncode(append(dst, `,"correlation_data":"`...), a)
			dst = append(dst, '"')
		case codec.PropUser:
			if users == 0 {
				dst = append(dst, `,"user_properties":[`...)
			} else {
				dst = append(dst, ',')
			}
			users++
			dst = appendJSONString(append(dst, '['), a)
			dst = append(appendJSONString(append(dst, ','), v), ']')
		}
	}
	if users > 0 {
		dst = append(dst, ']')
	}
	return dst
}
