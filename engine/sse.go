package engine

import (
	"strconv"
	"time"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/topic"
)

// Server-Sent Events: GET /stream/{filter} turns the HTTP connection into a
// subscriber. The stream is a session of its own (never in the client-id
// table) subscribed in the shared trie like any MQTT session, so routing,
// the outbound cap, drop counting and slow-consumer disconnects are the
// MQTT ones. The router encodes each message's event data once per publish
// and prefixes each stream's own event id.

// stream serves GET /stream/{filter}?retained=true. Runs on c's loop.
func (r *httpReq) stream(rawFilter []byte) bool {
	if !r.only("GET") || string(r.method) == "HEAD" {
		return r.close
	}
	h, b, c := r.h, r.b, r.c
	l := c.l
	f, ok := pctDecode(h.path[:0], rawFilter)
	h.path = f
	if !ok {
		return r.fail(400, "bad percent-encoding in filter")
	}
	if err := topic.ValidateFilter(f, b.limits); err != nil {
		return r.fail(400, "invalid filter: "+err.Error())
	}
	if _, _, shared := topic.SplitShared(f); shared {
		return r.fail(400, "shared subscriptions are not available to streams")
	}
	if r.perms != nil && !r.perms.CanSubscribe(f) {
		l.stats.aclDenied[aclSubscribe].Add(1)
		return r.fail(403, "not authorized to subscribe to this filter")
	}
	withRetained, ok := r.boolArg("retained", false)
	if !ok {
		return r.fail(400, "retained must be true or false")
	}
	filter := string(f)
	// Responses of earlier pipelined requests go first; from here on every
	// byte for this connection goes through the session buffer, in order.
	if len(h.out) > 0 {
		c.write(h.out)
		h.out = h.out[:0]
	}
	now := b.now.Load()
	s := &session{id: "sse:" + c.remote(), clean: true, sse: true, version: codec.V311, since: uint32(now)}
	s.c = c
	s.subs = []subEntry{{filter: filter, qos: 2}}
	c.s = s
	c.x.stream = true
	c.x.lastBeat = now
	c.x.id.user, c.x.id.hasUser = r.user, r.hasUser
	if r.perms != nil {
		c.x.id.perms.Store(&permsRef{r.perms}) // every event is checked with CanRead
	}
	l.wheel.remove(c) // no deadline: heartbeats find dead peers
	l.streams = append(l.streams, c)
	l.stats.streamsOpened.Add(1)
	l.stats.streams.Add(1)

	s.mu.Lock()
	out := append(s.buf().B, "HTTP/1.1 200 OK\r\nServer: tinymq\r\nDate: "...)
	out = append(out, *b.date.Load()...)
	out = append(out, "\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n"...)
	out = append(out, ": subscribed to "...)
	out = append(out, filter...) // a comment line: the filter is valid UTF-8 without newlines
	out = append(out, "\n\n"...)
	s.wbuf.B = out
	s.mu.Unlock()
	l.r.markDirty(s, l)

	// Granted QoS 2 so that each event reports the message's own QoS;
	// events are fire-and-forget.
	b.subs.SubscribeString(filter, topic.Sub[*session]{Key: s, QoS: 2})
	if withRetained {
		b.retained.Match(f, func(_ string, m *message) bool {
			l.r.deliverMessage(s, m, m.qos, true, 0)
			return true
		})
	}
	if b.opts.Verbose {
		b.log.Info("stream opened", "remote", c.remote(), "filter", filter)
	}
	return false
}

// endStream discards a closed stream's session and subscription. Runs on
// c's loop (OnClose).
func (b *Broker) endStream(c *conn) {
	s := c.s
	l := c.l
	s.mu.Lock()
	s.dead = true
	s.c = nil
	s.clearLocked()
	s.mu.Unlock()
	b.dropSubscriptions(s)
	l.stats.streams.Add(-1)
	for i, x := range l.streams {
		if x == c {
			last := len(l.streams) - 1
			l.streams[i] = l.streams[last]
			l.streams[last] = nil
			l.streams = l.streams[:last]
			break
		}
	}
	if b.opts.Verbose {
		b.log.Info("stream closed", "id", s.id, "reason", c.closeReason.String())
	}
}

// heartbeat sends an SSE comment on streams idle for SSEHeartbeat; a dead
// peer then fails the write or stops draining and is dropped as a slow
// consumer. Runs on l (from tick).
func (l *loop) heartbeat(now int64) {
	every := int64(l.b.opts.SSEHeartbeat / time.Second)
	if every < 1 {
		every = 1
	}
	for _, c := range l.streams {
		if !c.open || now-c.x.lastBeat < every {
			continue
		}
		c.x.lastBeat = now
		s := c.s
		s.mu.Lock()
		if !s.blockedLocked(l.b.opts.MaxOutboundBytes) {
			s.buf().B = append(s.buf().B, ": heartbeat\n\n"...)
		}
		s.mu.Unlock()
		l.r.markDirty(s, l)
	}
}

// sseEvent appends one event for the current PUBLISH to s's buffer: the
// data line is encoded once per publish and shared. A message with MQTT 5
// properties or an expiry gets their fields too (appendJSONProps,
// message_expiry_interval: seconds left). s.mu is held.
func (r *router) sseEventLocked(s *session, retainFlag bool) {
	if !r.sseValid || r.sseRetain != retainFlag {
		d := append(r.sse[:0], `{"topic":`...)
		d = appendJSONString(d, r.cur.topic)
		d = append(d, ',')
		d = appendJSONPayload(d, r.cur.payload)
		d = append(d, `,"qos":`...)
		d = strconv.AppendInt(d, int64(r.cur.qos), 10)
		if retainFlag {
			d = append(d, `,"retain":true,"timestamp":`...)
		} else {
			d = append(d, `,"retain":false,"timestamp":`...)
		}
		d = strconv.AppendInt(d, time.Now().UnixMilli(), 10)
		if len(r.cur.props) > 0 {
			d = appendJSONProps(d, r.cur.props)
		}
		if r.cur.hasExp {
			d = append(d, `,"message_expiry_interval":`...)
			d = strconv.AppendUint(d, uint64(r.cur.expLeft), 10)
		}
		d = append(d, '}')
		r.sse, r.sseValid, r.sseRetain = d, true, retainFlag
	}
	st := s.state()
	st.seq++
	out := append(s.buf().B, "id: "...)
	out = strconv.AppendUint(out, st.seq, 10)
	out = append(out, "\nevent: message\ndata: "...)
	out = append(out, r.sse...)
	out = append(out, "\n\n"...)
	s.wbuf.B = out
}
