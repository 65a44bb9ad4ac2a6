package engine

import (
	"sync/atomic"

	"github.com/valyala/bytebufferpool"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/engine/auth"
	"github.com/tinymq/tinymq/topic"
)

// message is an owned copy of a PUBLISH that outlives the read that brought
// it: queued, in flight, retained or a will. It is immutable once built and
// shared by every session it is delivered to.
type message struct {
	topic   []byte
	payload []byte // its capacity runs on over the properties
	expiry  uint32 // unix second at which it expires (MQTT 5 message expiry); 0: never
	pLen    uint32 // bytes of MQTT 5 properties stored after the payload
	qos     uint8
	retain  bool
}

// cloneMessage copies topic and payload (which alias a read buffer) into one
// allocation.
func cloneMessage(topicName, payload []byte, qos uint8, retain bool) *message {
	return newMessage(topicName, payload, nil, qos, retain, 0)
}

// newMessage copies topic, payload and props (MQTT 5 properties as on the
// wire without their length: what is forwarded to v5 readers, never the
// message expiry, topic alias or subscription identifiers) into one
// allocation. expiry is the unix second it expires at, 0 for never.
func newMessage(topicName, payload, props []byte, qos uint8, retain bool, expiry uint32) *message {
	buf := make([]byte, len(topicName)+len(payload)+len(props))
	n := copy(buf, topicName)
	p := n + copy(buf[n:], payload)
	copy(buf[p:], props)
	return &message{topic: buf[:n:n], payload: buf[n:p], qos: qos, retain: retain, pLen: uint32(len(props)), expiry: expiry}
}

// props are the message's MQTT 5 properties (without length), nil when none.
func (m *message) props() []byte {
	if m.pLen == 0 {
		return nil
	}
	n := len(m.payload)
	return m.payload[n : n+int(m.pLen)]
}

// maxContentType is the longest HTTP Content-Type a message keeps.
const maxContentType = 255

// contentType is the content type the publisher gave (an MQTT 5 content
// type property, or an HTTP publish's Content-Type), nil when none.
func (m *message) contentType() []byte {
	return propString(m.props(), codec.PropContentType)
}

// expired reports whether m's message expiry has passed at unix second
// now. The clock is whole seconds, so a message lives its interval and up
// to a second more, never less.
func (m *message) expired(now int64) bool {
	return m.expiry != 0 && now > int64(m.expiry)
}

// router routes PUBLISHes. Each loop has one, used only on that loop; the
// $SYS publisher has its own with l == nil, for which every destination is
// "another loop".
type router struct {
	b     *Broker
	l     *loop
	stats *counters

	matches []topic.Sub[*session]
	groups  []topic.GroupID  // the group of each shared entry of matches, in order (MatchGroups)
	seen    map[*session]int // Dedup scratch
	wakeups []*loop          // loops whose mailbox this batch made non-empty
	memo    matchMemo        // the last match, for the next PUBLISH to the same topic

	// One encoding per (protocol: 3.x or 5.0, QoS, retain flag) for the
	// current PUBLISH, shared by every subscriber; for QoS > 0 only the
	// packet id is patched per copy. A v5 reader that needs its own
	// subscription identifier or topic alias gets its own encoding.
	enc   [2][3][2][]byte
	idOff [2][3][2]int
	valid uint16   // bit ver*6+qos*2+retain set when enc[ver][qos][retain] holds the current PUBLISH
	msg   *message // owned copy, made on first need
	mid   uint64   // msg's store message id, 0 until stored (persist.go)

	// The current PUBLISH as SSE event data, made on first need.
	sse       []byte
	sseValid  bool
	sseRetain bool

	// inRoute counts publish/deliverMessage calls in progress: a socket
	// write inside them may close a connection, whose will must then wait
	// for finish instead of re-entering the router.
	inRoute   int
	finishing bool

	// Shared subscriptions (shared.go): the group the delivery in
	// progress came through (0: none), messages of ended members waiting
	// for another member, and whether deliver is re-routing one.
	grp       topic.GroupID
	shared    []sharedMsg
	rerouting bool

	// The read decision for the current PUBLISH of the last ACL grants
	// asked: a fan-out to many clients of one user (who share one
	// *auth.Grants) asks once, not once per subscriber.
	readOf *auth.Grants
	readOK bool

	top topicSampler // the dashboard's busiest topics (dashboard.go)

	cur struct {
		topic, payload []byte
		props          []byte // MQTT 5 properties kept with the message (forwardProps)
		expiry         uint32 // unix second it expires at, 0: never
		expLeft        uint32 // ... seconds left, sent to v5 readers when hasExp
		hasExp         bool
		qos            uint8
		retain         bool     // the publisher's RETAIN flag (for Retain As Published)
		from           *session // the publisher, for No Local; nil when not an MQTT client
		// frame is the inbound packet itself when a 3.1.1 reader's copy
		// at the publisher's QoS is byte for byte the same but for the
		// packet id (setFrame); nil otherwise.
		frame []byte
	}

	// Set by the caller for the next publish: the inbound v5 properties,
	// expiry and publisher (setMeta), and the inbound frame (setFrame).
	next struct {
		props  []byte
		expiry uint32
		from   *session
		frame  []byte
	}
}

// setFrame gives the next publish its inbound packet, as forwardable
// returned it (nil: none), for encoded to hand 3.1.1 readers instead of
// encoding the same bytes again. It must stay unchanged until that
// publish is routed (a read buffer, during the read). Runs on r's loop.
func (r *router) setFrame(frame []byte) { r.next.frame = frame }

// forwardable is frame, a PUBLISH from a client of protocol version ver,
// when its bytes are what a 3.1 or 3.1.1 subscriber receives at the
// same QoS: a 3.x publisher, QoS 0 or 1, neither DUP nor RETAIN set (a
// delivery never carries the publisher's DUP, and RETAIN only for
// retained messages). nil otherwise. The remaining length is in its
// shortest encoding, as our encoder writes it: codec.ReadFrame refuses
// any other. Runs on any goroutine.
func forwardable(ver codec.Version, h codec.FixedHeader, frame []byte) []byte {
	qos := (h.Flags >> 1) & 3
	if ver == codec.V5 || qos > 1 || h.Flags != qos<<1 {
		return nil
	}
	return frame
}

// setMeta gives the next publish its MQTT 5 properties (forwardProps),
// absolute expiry (unix second, 0: never) and publisher session. Runs on
// r's loop.
func (r *router) setMeta(props []byte, expiry uint32, from *session) {
	r.next.props, r.next.expiry, r.next.from = props, expiry, from
}

func newRouter(b *Broker, l *loop, st *counters) *router {
	return &router{b: b, l: l, stats: st, seen: make(map[*session]int)}
}

// encoded returns the wire bytes of the current PUBLISH at qos with the
// given retain flag, and the offset of its packet id (-1 for QoS 0).
func (r *router) encoded(ver int, qos uint8, retain bool) ([]byte, int) {
	ri := 0
	if retain {
		ri = 1
	}
	if f := r.cur.frame; f != nil && ver == 0 && !retain && qos == r.cur.qos {
		if qos == 0 {
			return f, -1
		}
		return f, len(f) - len(r.cur.payload) - 2 // the packet id precedes the payload
	}
	bit := uint16(1) << (ver*6 + int(qos)*2 + ri)
	if r.valid&bit == 0 {
		var id uint16
		if qos > 0 {
			id = 1
		}
		if ver == 0 {
			p := codec.Publish{QoS: qos, Retain: retain, Topic: r.cur.topic, Payload: r.cur.payload, PacketID: id}
			r.enc[0][qos][ri] = p.AppendTo(r.enc[0][qos][ri][:0], codec.V311)
			r.idOff[0][qos][ri] = p.PacketIDOffset(codec.V311)
		} else {
			p := r.pub5(qos, retain, id, 0)
			r.enc[1][qos][ri] = p.appendTo(r.enc[1][qos][ri][:0])
			r.idOff[1][qos][ri] = p.idOffset()
		}
		r.valid |= bit
	}
	return r.enc[ver][qos][ri], r.idOff[ver][qos][ri]
}

// pub5 is the current PUBLISH for a v5 reader.
func (r *router) pub5(qos uint8, retain bool, id uint16, sid uint32) pub5 {
	return pub5{topic: r.cur.topic, props: r.cur.props, payload: r.cur.payload, qos: qos, retain: retain,
		id: id, sid: sid, expiry: r.cur.expLeft, hasExpiry: r.cur.hasExp}
}

// writeLocked appends the current PUBLISH for s (s.mu held) at qos with
// packet id id (QoS > 0) and subscription identifier sid: the shared
// encoding of s's protocol version, or, for a v5 reader that needs a
// subscription identifier or topic aliases, its own. It reports false,
// writing nothing, when the packet is over a v5 client's Maximum Packet
// Size. Runs on r's loop.
func (r *router) writeLocked(s *session, qos uint8, retain bool, id uint16, sid uint32) bool {
	ver := 0
	v := s.v5()
	if v != nil {
		if sid != 0 || (v.aliasMax != 0 && r.b.opts.MaxTopicAliasOut > 0) {
			p := r.pub5(qos, retain, id, sid)
			return s.appendPublishV5Locked(r.b, v, &p)
		}
		ver = 1
	}
	raw, off := r.encoded(ver, qos, retain)
	if v != nil && v.maxPacket != 0 && len(raw) > int(v.maxPacket) {
		return false // [MQTT5-3.1.2-24] [MQTT5-3.1.2-25]
	}
	if qos == 0 {
		s.appendLocked(raw)
	} else {
		s.appendPatchedLocked(raw, off, id)
	}
	return true
}

// resetEncodings forgets the current PUBLISH; the buffers keep their
// capacity for the next one.
func (r *router) resetEncodings() {
	r.valid = 0
	r.readOf = nil
	r.sseValid = false
	r.msg = nil
	r.mid = 0 // persist.go
	r.cur.topic, r.cur.payload, r.cur.props, r.cur.from, r.cur.frame = nil, nil, nil, nil, nil
}

// deliverMessage delivers an owned message (retained, queued or a will) to
// one session with subscription identifier sid; an expired one is not
// delivered ([MQTT5-3.3.2-5]). Runs on r's loop.
func (r *router) deliverMessage(s *session, m *message, qos uint8, retainFlag bool, sid uint32) {
	if m.expired(r.b.now.Load()) {
		return
	}
	r.inRoute++
	defer func() { r.inRoute-- }()
	r.setCur(m.topic, m.payload, m.props(), m.qos, m.retain, m.expiry)
	r.msg = m
	r.deliver(s, qos, retainFlag, sid)
	r.resetEncodings()
}

// setCur makes a message the current PUBLISH. Runs on r's loop.
func (r *router) setCur(topicName, payload, props []byte, qos uint8, retain bool, expiry uint32) {
	c := &r.cur
	c.topic, c.payload, c.props, c.qos, c.retain, c.expiry = topicName, payload, props, qos, retain, expiry
	c.frame = nil // prepare sets it for an inbound PUBLISH
	c.expLeft, c.hasExp = expiryLeft(expiry, r.b.now.Load())
}

// owned returns the current PUBLISH as an owned message (copied once).
func (r *router) owned() *message {
	if r.msg == nil {
		r.msg = newMessage(r.cur.topic, r.cur.payload, r.cur.props, r.cur.qos, false, r.cur.expiry)
	}
	return r.msg
}

// publish routes one PUBLISH to every matching session. topicName and
// payload may alias a read buffer; everything kept is copied. Runs on r's
// loop (or the $SYS goroutine for the $SYS router).
//
// owned, when not nil, is the same message already copied (a will, a $SYS
// value): it is shared instead of copied again.
func (r *router) publish(topicName, payload []byte, qos uint8, retain bool, owned *message) {
	r.prepare(topicName, payload, qos, retain, owned)
	r.route()
}

// prepare is publish's first half: it stores a retained message, finds
// the matching subscriptions and makes the PUBLISH current. It reports
// how many subscriptions matched (a v5 PUBACK says 0x10 for none); route
// must follow. Runs on r's loop.
func (r *router) prepare(topicName, payload []byte, qos uint8, retain bool, owned *message) int {
	b := r.b
	props, expiry, from, frame := r.next.props, r.next.expiry, r.next.from, r.next.frame
	r.next.props, r.next.from, r.next.frame = nil, nil, nil
	r.next.expiry = 0
	if owned != nil {
		props, expiry, frame = owned.props(), owned.expiry, nil
	}
	if retain {
		if owned != nil && len(payload) > 0 {
			b.retained.Set(topicName, owned)
			b.persistRetained(topicName, owned) // persist.go
		} else {
			b.storeRetained(topicName, payload, props, qos, expiry)
		}
		r.wroteRetained(topicName) // persist.go: the acknowledgement waits for it too
	}
	r.match(topicName)
	if r.top.skip--; r.top.skip <= 0 {
		r.top.sample(topicName) // one PUBLISH in 64 on average
	}
	r.msg = owned
	r.setCur(topicName, payload, props, qos, retain, expiry)
	r.cur.from, r.cur.frame = from, frame
	return len(r.matches)
}

// matchMemo is a router's last match result (deduplicated), kept while
// the tree's Generation says no subscription changed. A device publishes
// to one topic again and again, several times per read when it keeps a
// few in flight: the PUBLISHes after the first of a read skip the tree
// walk and the deduplication. A result that went through a shared group
// is not kept (each message picks its member afresh).
type matchMemo struct {
	topic   []byte
	gen     uint64
	matches []topic.Sub[*session]
	ok      bool
}

// maxMemoTopic bounds the topic bytes a router copies into its memo.
const maxMemoTopic = 256

// match fills r.matches and r.groups for topicName, from the memo when it
// holds this topic's result of the tree's current generation. Runs on r's
// loop (or the $SYS goroutine, for its own router).
func (r *router) match(topicName []byte) {
	mm := &r.memo
	gen := r.b.subs.Generation() // before the walk: a change during it makes the memo stale
	if mm.ok && mm.gen == gen && string(mm.topic) == string(topicName) {
		r.matches, r.groups = append(r.matches[:0], mm.matches...), r.groups[:0]
		return
	}
	m, g := r.b.subs.MatchGroups(topicName, r.matches[:0], r.groups[:0])
	r.matches, r.groups = topic.Dedup(m, r.seen), g
	mm.ok = len(g) == 0 && len(topicName) <= maxMemoTopic
	if mm.ok {
		mm.topic = append(mm.topic[:0], topicName...)
		mm.gen = gen
		mm.matches = append(mm.matches[:0], r.matches...)
	} else {
		clear(mm.matches) // keeps no session alive
		mm.matches = mm.matches[:0]
	}
}

// validMemo reports whether name is the topic of the memo, which passed
// validName when it was matched (the limits are fixed at start). Runs on
// r's loop.
func (r *router) validMemo(name []byte) bool {
	return r.memo.ok && string(r.memo.topic) == string(name)
}

// route delivers the prepared PUBLISH to every matching subscription.
// Runs on r's loop.
func (r *router) route() {
	r.inRoute++
	defer func() { r.inRoute-- }()
	shared := 0
	for i := range r.matches {
		sub := &r.matches[i]
		s := sub.Key
		sub.Key = nil
		r.grp = 0
		if sub.Shared {
			r.grp = r.groups[shared] // Dedup keeps shared entries in order
			shared++
		}
		if sub.Opts&codec.SubOptNoLocal != 0 && s == r.cur.from {
			continue // [MQTT5-3.8.3-3]: not to the publisher's own subscription
		}
		q := min(r.cur.qos, sub.QoS) // delivered QoS = min(published, granted) [MQTT-3.8.4-6]
		// Live delivery: RETAIN cleared [MQTT-3.3.1-9], unless the v5
		// subscription asked for Retain As Published ([MQTT5-3.3.1-12]
		// [MQTT5-3.3.1-13]).
		ret := sub.Opts&codec.SubOptRetainAsPublished != 0 && r.cur.retain
		r.deliver(s, q, ret, sub.ID)
	}
	r.grp = 0
	r.resetEncodings()
}

// deliver appends the current PUBLISH to s at qos, and marks s for a flush
// when bytes were added for an online connection. Runs on r's loop.
func (r *router) deliver(s *session, qos uint8, retainFlag bool, sid uint32) {
	b := r.b
	s.mu.Lock()
	if s.dead {
		s.mu.Unlock()
		r.deadShared(qos, retainFlag) // a group member discarded since the pick
		return
	}
	online := s.c != nil
	if online {
		// Every delivery is checked against the reader's grants: a
		// subscription broader than them delivers only what they allow
		// (offline sessions are checked when their queue drains).
		if perms := s.c.permissions(); perms != nil && !r.canRead(perms) {
			s.mu.Unlock()
			r.stats.aclDenied[aclDeliver].Add(1)
			return
		}
	}
	wrote := false
	switch {
	case s.sse:
		// An event stream: fire-and-forget at every QoS, dropped when the
		// reader is behind.
		if !online {
			break
		}
		if s.blockedLocked(b.opts.MaxOutboundBytes) {
			r.stats.dropped.Add(1)
			r.stats.droppedSlow.Add(1)
			if s.fullSince == 0 {
				s.fullSince = uint32(b.now.Load())
			}
			break
		}
		r.sseEventLocked(s, retainFlag)
		r.stats.msgsOut.Add(1)
		r.stats.msgsOutBy[protoHTTP][min(qos, 2)].Add(1)
		wrote = true
	case !online:
		if qos > 0 || b.opts.QueueQoS0 {
			wrote = false
			if !s.enqueueLocked(b, r.owned(), qos, retainFlag, sid, r.grp) {
				r.stats.dropped.Add(1)
				r.stats.droppedQueueFull.Add(1)
				b.bridges.drop(s.id)
			} else {
				r.persistQueued(s) // persist.go
			}
		}
	case qos == 0:
		if s.blockedLocked(b.opts.MaxOutboundBytes) {
			r.stats.dropped.Add(1)
			r.stats.droppedSlow.Add(1)
			b.bridges.drop(s.id)
			if s.fullSince == 0 {
				s.fullSince = uint32(b.now.Load())
			}
		} else if r.writeLocked(s, 0, retainFlag, 0, sid) {
			r.stats.msgsOut.Add(1)
			r.stats.msgsOutBy[s.c.proto][0].Add(1)
			wrote = true
		} else {
			r.stats.tooLarge.Add(1)
		}
	default:
		if s.queuedLocked() == 0 && s.inflightLocked() < s.inflightCap(b) && !s.blockedLocked(b.opts.MaxOutboundBytes) {
			id := s.nextIDLocked()
			if r.writeLocked(s, qos, retainFlag, id, sid) {
				st := s.state()
				st.inflight = append(st.inflight, inflight{m: r.owned(), id: id, qos: qos, retain: retainFlag, sid: sid, grp: r.grp})
				r.persistSent(s) // persist.go
				r.stats.msgsOut.Add(1)
				r.stats.msgsOutBy[s.c.proto][qos].Add(1)
				wrote = true
			} else {
				r.stats.tooLarge.Add(1) // as if sent ([MQTT5-3.1.2-25])
			}
		} else {
			// Nothing to write. When the queue starts, a flush on its loop
			// puts it under the slow-consumer watch (loop.flush), which
			// follows it until it drains: one mark per queue, not one
			// (and, across loops, one wake-up) per queued message.
			wrote = s.queuedLocked() == 0
			if !s.enqueueLocked(b, r.owned(), qos, retainFlag, sid, r.grp) {
				r.stats.dropped.Add(1)
				r.stats.droppedQueueFull.Add(1)
				b.bridges.drop(s.id)
			} else {
				r.persistQueued(s) // persist.go
			}
		}
	}
	l := s.loopLocked()
	big := s.wbuf != nil && len(s.wbuf.B) >= earlyFlushBytes
	s.mu.Unlock()
	if wrote {
		r.markDirty(s, l)
		if big && l != nil && l == r.l {
			// Hand a large backlog to the socket now rather than at the end
			// of the batch, so that a fast reader is not mistaken for a
			// slow one by the outbound cap.
			l.flush(s)
		}
	}
}

// canRead applies a reader's permissions to the current PUBLISH, reusing
// the last answer when the reader shares the previous one's ACL grants.
// Runs on r's loop.
func (r *router) canRead(p Permissions) bool {
	g, ok := p.(*auth.Grants)
	if !ok {
		return p.CanRead(r.cur.topic)
	}
	if g != r.readOf {
		r.readOf, r.readOK = g, g.CanRead(r.cur.topic)
	}
	return r.readOK
}

// earlyFlushBytes is the pending size at which a session on the
// publisher's own loop is flushed before the batch ends.
const earlyFlushBytes = 32 * 1024

// markDirty arranges for s to be flushed on its loop l: at the end of this
// batch when l is r's loop, through l's mailbox otherwise. Runs on r's loop.
func (r *router) markDirty(s *session, l *loop) {
	if l == nil || !s.flushPending.CompareAndSwap(false, true) {
		return
	}
	if l == r.l {
		l.dirty = append(l.dirty, s)
		return
	}
	if l.post(s) {
		r.wakeups = append(r.wakeups, l)
	}
}

// finish ends a batch: publishes wills of connections closed meanwhile,
// flushes the sessions of r's own loop touched by it (one write per
// connection) and wakes every other loop that got mail (one Execute per
// loop). A write may close a connection and so add a will or a dirty
// session; finish is not re-entered but loops until both lists are empty.
// Runs on r's loop.
func (r *router) finish() {
	if r.finishing {
		return
	}
	r.finishing = true
	r.b.persistFlush(r.l) // persist.go: submit this batch's records first
	if l := r.l; l != nil {
		for len(l.pendingWills) > 0 || len(l.dirty) > 0 || len(r.shared) > 0 {
			r.rerouteShared() // messages of ended shared-group members (shared.go)
			for len(l.pendingWills) > 0 {
				w := l.pendingWills[0]
				l.pendingWills[0] = nil
				l.pendingWills = l.pendingWills[1:]
				r.publishOwned(w)
			}
			for i := 0; i < len(l.dirty); i++ { // flushing may dirty more
				if l.round || l.coalesce > 0 {
					l.deferFlush(l.dirty[i])
				} else {
					l.flush(l.dirty[i])
				}
				l.dirty[i] = nil
			}
			l.dirty = l.dirty[:0]
			if len(l.deferred) > 0 {
				l.releaseDeferred(false) // loop.go: only once the delay is over
			}
		}
	}
	for i, l := range r.wakeups {
		l.wake()
		r.wakeups[i] = nil
	}
	r.wakeups = r.wakeups[:0]
	r.finishing = false
}

// storeRetained replaces, or with an empty payload deletes, the retained
// message of a topic [MQTT-3.3.1-5] [MQTT-3.3.1-10] [MQTT-3.3.1-11]. Any goroutine.
func (b *Broker) storeRetained(topicName, payload, props []byte, qos uint8, expiry uint32) {
	if len(payload) == 0 {
		b.retained.Delete(topicName)
		b.persistRetained(topicName, nil) // persist.go
		return
	}
	m := newMessage(topicName, payload, props, qos, true, expiry)
	b.retained.Set(topicName, m)
	b.persistRetained(topicName, m) // persist.go
}

// counters are per-loop statistics; the $SYS publisher sums them. Atomic so
// that reads from other goroutines are safe; each loop only adds to its own.
type counters struct {
	msgsIn, msgsOut     atomic.Uint64
	bytesIn, bytesOut   atomic.Uint64
	dropped             atomic.Uint64
	droppedSlow         atomic.Uint64
	droppedQueueFull    atomic.Uint64
	tooLarge            atomic.Uint64 // v5 deliveries over the reader's Maximum Packet Size
	malformed, oversize atomic.Uint64
	connectTimeouts     atomic.Uint64
	keepAliveTimeouts   atomic.Uint64
	slowConsumers       atomic.Uint64
	authFailures        atomic.Uint64
	authOverload        atomic.Uint64             // CONNECTs refused because the auth queue was full
	authDelayed         atomic.Uint64             // refusals held back (repeated failures from one address)
	aclDenied           [numACLActs]atomic.Uint64 // by aclPublish, aclSubscribe, aclDeliver

	msgsInBy   [numProtos][3]atomic.Uint64 // by transport and QoS
	msgsOutBy  [numProtos][3]atomic.Uint64
	bytesInBy  [numProtos]atomic.Uint64
	bytesOutBy [numProtos]atomic.Uint64

	httpRequests  atomic.Uint64
	httpErrors    atomic.Uint64 // 4xx and 5xx answers
	streamsOpened atomic.Uint64
	wsUpgrades    atomic.Uint64
	busyNs        atomic.Uint64           // time spent in OnTraffic and mailbox drains
	writes        atomic.Uint64           // socket writes of sessions' output (loop.flush)
	connsBy       [numProtos]atomic.Int64 // open connections by transport (gauge; sum over loops)
	streams       atomic.Int64            // open SSE streams (gauge)
	_             [64]byte                // keep loops' counters on separate cache lines
}

// ACL decisions that are counted when they deny.
const (
	aclPublish = iota
	aclSubscribe
	aclDeliver
	numACLActs
)

var aclActNames = [numACLActs]string{aclPublish: "publish", aclSubscribe: "subscribe", aclDeliver: "deliver"}

// globalCounters are broker-wide gauges and totals.
type globalCounters struct {
	connected    atomic.Int64
	maxConnected atomic.Int64
	totalConns   atomic.Uint64
	rejected     atomic.Uint64
	expired      atomic.Uint64 // persistent sessions discarded by SessionExpiry
}

// putBuf returns a write buffer to the pool.
func putBuf(b *bytebufferpool.ByteBuffer) { bytebufferpool.Put(b) }
