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
	payload []byte // its capacity runs on over the content type
	qos     uint8
	retain  bool
	ctLen   uint8 // bytes of content type stored after the payload
}

// cloneMessage copies topic and payload (which alias a read buffer) into one
// allocation.
func cloneMessage(topicName, payload []byte, qos uint8, retain bool) *message {
	return cloneMessageCT(topicName, payload, qos, retain, nil)
}

// maxContentType is the longest content type a message keeps.
const maxContentType = 255

// cloneMessageCT is cloneMessage with a content type (an HTTP publish's
// Content-Type header), kept after the payload in the same allocation;
// one longer than maxContentType is dropped.
func cloneMessageCT(topicName, payload []byte, qos uint8, retain bool, ct []byte) *message {
	if len(ct) > maxContentType {
		ct = nil
	}
	buf := make([]byte, len(topicName)+len(payload)+len(ct))
	n := copy(buf, topicName)
	p := n + copy(buf[n:], payload)
	copy(buf[p:], ct)
	return &message{topic: buf[:n:n], payload: buf[n:p], qos: qos, retain: retain, ctLen: uint8(len(ct))}
}

// contentType is the content type the publisher gave, nil when none.
func (m *message) contentType() []byte {
	if m.ctLen == 0 {
		return nil
	}
	n := len(m.payload)
	return m.payload[n : n+int(m.ctLen)]
}

// router routes PUBLISHes. Each loop has one, used only on that loop; the
// $SYS publisher has its own with l == nil, for which every destination is
// "another loop".
type router struct {
	b     *Broker
	l     *loop
	stats *counters

	matches []topic.Sub[*session]
	seen    map[*session]int // Dedup scratch
	wakeups []*loop          // loops whose mailbox this batch made non-empty

	// One encoding per (QoS, retain flag) for the current PUBLISH, shared by
	// every subscriber; for QoS > 0 only the packet id is patched per copy.
	enc   [3][2][]byte
	idOff [3][2]int
	valid uint8    // bit qos*2+retain set when enc[qos][retain] holds the current PUBLISH
	msg   *message // owned copy, made on first need

	// The current PUBLISH as SSE event data, made on first need.
	sse       []byte
	sseValid  bool
	sseRetain bool

	// inRoute counts publish/deliverMessage calls in progress: a socket
	// write inside them may close a connection, whose will must then wait
	// for finish instead of re-entering the router.
	inRoute   int
	finishing bool

	// The read decision for the current PUBLISH of the last ACL grants
	// asked: a fan-out to many clients of one user (who share one
	// *auth.Grants) asks once, not once per subscriber.
	readOf *auth.Grants
	readOK bool

	cur struct {
		topic, payload []byte
		qos            uint8
	}
}

func newRouter(b *Broker, l *loop, st *counters) *router {
	return &router{b: b, l: l, stats: st, seen: make(map[*session]int)}
}

// encoded returns the wire bytes of the current PUBLISH at qos with the
// given retain flag, and the offset of its packet id (-1 for QoS 0).
func (r *router) encoded(qos uint8, retain bool) ([]byte, int) {
	ri := 0
	if retain {
		ri = 1
	}
	bit := uint8(1) << (qos*2 + uint8(ri))
	if r.valid&bit == 0 {
		p := codec.Publish{QoS: qos, Retain: retain, Topic: r.cur.topic, Payload: r.cur.payload}
		if qos > 0 {
			p.PacketID = 1
		}
		r.enc[qos][ri] = p.AppendTo(r.enc[qos][ri][:0], codec.V311)
		r.idOff[qos][ri] = p.PacketIDOffset(codec.V311)
		r.valid |= bit
	}
	return r.enc[qos][ri], r.idOff[qos][ri]
}

// resetEncodings forgets the current PUBLISH; the buffers keep their
// capacity for the next one.
func (r *router) resetEncodings() {
	r.valid = 0
	r.readOf = nil
	r.sseValid = false
	r.msg = nil
	r.cur.topic, r.cur.payload = nil, nil
}

// deliverMessage delivers an owned message (retained, queued or a will) to
// one session. Runs on r's loop.
func (r *router) deliverMessage(s *session, m *message, qos uint8, retainFlag bool) {
	r.inRoute++
	defer func() { r.inRoute-- }()
	r.cur.topic, r.cur.payload, r.cur.qos = m.topic, m.payload, m.qos
	r.msg = m
	r.deliver(s, qos, retainFlag)
	r.resetEncodings()
}

// owned returns the current PUBLISH as an owned message (copied once).
func (r *router) owned() *message {
	if r.msg == nil {
		r.msg = cloneMessage(r.cur.topic, r.cur.payload, r.cur.qos, false)
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
	b := r.b
	r.inRoute++
	defer func() { r.inRoute-- }()
	if retain {
		if owned != nil && len(payload) > 0 {
			b.retained.Set(topicName, owned)
		} else {
			b.storeRetained(topicName, payload, qos)
		}
	}
	r.matches = topic.Dedup(b.subs.Match(topicName, r.matches[:0]), r.seen)
	if len(r.matches) == 0 {
		return
	}
	r.msg = owned
	r.cur.topic, r.cur.payload, r.cur.qos = topicName, payload, qos
	for i := range r.matches {
		sub := &r.matches[i]
		q := min(qos, sub.QoS)       // delivered QoS = min(published, granted) [MQTT-3.8.4-6]
		r.deliver(sub.Key, q, false) // live delivery: RETAIN cleared [MQTT-3.3.1-9]
		sub.Key = nil
	}
	r.resetEncodings()
}

// deliver appends the current PUBLISH to s at qos, and marks s for a flush
// when bytes were added for an online connection. Runs on r's loop.
func (r *router) deliver(s *session, qos uint8, retainFlag bool) {
	b := r.b
	s.mu.Lock()
	if s.dead {
		s.mu.Unlock()
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
			if !s.enqueueLocked(b, r.owned(), qos, retainFlag) {
				r.stats.dropped.Add(1)
				r.stats.droppedQueueFull.Add(1)
			}
		}
	case qos == 0:
		if s.blockedLocked(b.opts.MaxOutboundBytes) {
			r.stats.dropped.Add(1)
			r.stats.droppedSlow.Add(1)
			if s.fullSince == 0 {
				s.fullSince = uint32(b.now.Load())
			}
		} else {
			raw, _ := r.encoded(0, retainFlag)
			s.appendLocked(raw)
			r.stats.msgsOut.Add(1)
			r.stats.msgsOutBy[s.c.proto][0].Add(1)
			wrote = true
		}
	default:
		if s.queuedLocked() == 0 && s.inflightLocked() < b.opts.MaxInflight && !s.blockedLocked(b.opts.MaxOutboundBytes) {
			id := s.nextIDLocked()
			st := s.state()
			st.inflight = append(st.inflight, inflight{m: r.owned(), id: id, qos: qos, retain: retainFlag})
			raw, off := r.encoded(qos, retainFlag)
			s.appendPatchedLocked(raw, off, id)
			r.stats.msgsOut.Add(1)
			r.stats.msgsOutBy[s.c.proto][qos].Add(1)
			wrote = true
		} else {
			// Nothing to write. When the queue starts, a flush on its loop
			// puts it under the slow-consumer watch (loop.flush), which
			// follows it until it drains: one mark per queue, not one
			// (and, across loops, one wake-up) per queued message.
			wrote = s.queuedLocked() == 0
			if !s.enqueueLocked(b, r.owned(), qos, retainFlag) {
				r.stats.dropped.Add(1)
				r.stats.droppedQueueFull.Add(1)
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
	if l := r.l; l != nil {
		for len(l.pendingWills) > 0 || len(l.dirty) > 0 {
			for len(l.pendingWills) > 0 {
				w := l.pendingWills[0]
				l.pendingWills[0] = nil
				l.pendingWills = l.pendingWills[1:]
				r.publishOwned(w)
			}
			for i := 0; i < len(l.dirty); i++ { // flushing may dirty more
				l.flush(l.dirty[i])
				l.dirty[i] = nil
			}
			l.dirty = l.dirty[:0]
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
func (b *Broker) storeRetained(topicName, payload []byte, qos uint8) {
	if len(payload) == 0 {
		b.retained.Delete(topicName)
		return
	}
	b.retained.Set(topicName, cloneMessage(topicName, payload, qos, true))
}

// counters are per-loop statistics; the $SYS publisher sums them. Atomic so
// that reads from other goroutines are safe; each loop only adds to its own.
type counters struct {
	msgsIn, msgsOut     atomic.Uint64
	bytesIn, bytesOut   atomic.Uint64
	dropped             atomic.Uint64
	droppedSlow         atomic.Uint64
	droppedQueueFull    atomic.Uint64
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
