package engine

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"unicode/utf8"

	"github.com/panjf2000/gnet/v2"

	"github.com/tinymq/tinymq/codec"

	"github.com/tinymq/tinymq/topic"
)

// HTTP endpoints. Each runs on the requesting connection's loop and must not
// block; each reports whether the connection closes after its response.

// publish serves POST /publish/{topic}?qos=&retain=: the body is routed
// exactly as an MQTT PUBLISH of the same topic, QoS and retain flag.
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
	owned := retainedWithType(t, body, uint8(qos), retain, h.req.Header.ContentType())
	l.stats.msgsIn.Add(1)
	l.stats.msgsInBy[protoHTTP][qos].Add(1)
	l.r.publish(t, body, uint8(qos), retain, owned)
	out := append(h.body[:0], `{"status":"accepted","topic":`...)
	out = appendJSONString(out, t)
	out = append(out, '}')
	h.body = out
	h.respond(b, 202, ctJSON, out, r.close, "")
	return r.close
}

// retainedWithType returns the owned message of a retained HTTP publish
// that carries a content type worth keeping (for GET /retained), or nil:
// the message is not retained, deletes the retained one, or its type is
// absent, curl's default for -d (application/x-www-form-urlencoded, which
// says nothing about an MQTT payload) or longer than maxContentType.
// Runs on the request's loop.
func retainedWithType(topicName, payload []byte, qos uint8, retain bool, ct []byte) *message {
	if !retain || len(payload) == 0 {
		return nil
	}
	ct = bytes.TrimSpace(ct)
	if len(ct) == 0 || len(ct) > maxContentType || bytes.EqualFold(ct, []byte("application/x-www-form-urlencoded")) {
		return nil
	}
	props := append([]byte{byte(codec.PropContentType)}, byte(len(ct)>>8), byte(len(ct)))
	return newMessage(topicName, payload, append(props, ct...), qos, true, 0)
}

// batchItem is one message of POST /api/v1/publish.
type batchItem struct {
	Topic    string `json:"topic"`
	Payload  string `json:"payload"`
	Encoding string `json:"encoding"` // "utf8" (default) or "base64"
	QoS      *int   `json:"qos"`
	Retain   bool   `json:"retain"`
	// ContentType is kept with a retained message for GET /retained.
	ContentType string `json:"content_type"`
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
		return r.fail(400, "body must be a JSON array of {topic, payload, encoding, qos, retain}: "+err.Error())
	}
	if len(items) == 0 {
		return r.fail(400, "empty batch")
	}
	payloads := make([][]byte, len(items))
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
	}
	for i := range items {
		it := &items[i]
		qos := 0
		if it.QoS != nil {
			qos = *it.QoS
		}
		owned := retainedWithType([]byte(it.Topic), payloads[i], uint8(qos), it.Retain, []byte(it.ContentType))
		l.stats.msgsIn.Add(1)
		l.stats.msgsInBy[protoHTTP][qos].Add(1)
		l.r.publish([]byte(it.Topic), payloads[i], uint8(qos), it.Retain, owned)
	}
	out := append(r.h.body[:0], `{"status":"accepted","count":`...)
	out = strconv.AppendInt(out, int64(len(items)), 10)
	out = append(out, '}')
	r.h.body = out
	r.h.respond(b, 202, ctJSON, out, r.close, "")
	return r.close
}

// retained serves GET /retained/{topic}: the retained payload, 404 when
// none.
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
	if !found {
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
	extra := "X-MQTT-QoS: " + strconv.Itoa(int(m.qos)) + "\r\n"
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
	b.sessMu.Lock()
	s := b.sessions.Get(id)
	b.sessMu.Unlock()
	if s == nil {
		return false
	}
	s.mu.Lock()
	c := s.c
	s.mu.Unlock()
	if c == nil {
		return false
	}
	err := c.l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		if c.open && c.s == s {
			if b.opts.Verbose {
				b.log.Info("disconnecting client", "client", id, "reason", reason)
			}
			c.closeWith(codec.AdministrativeAction, closeKicked) // 5.0: DISCONNECT 0x98
		}
		return nil
	}))
	return err == nil
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
