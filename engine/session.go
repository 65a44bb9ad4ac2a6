package engine

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/valyala/bytebufferpool"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/topic"
)

// session is the MQTT session of one client id. It outlives its connection
// when the client connected with clean session 0 [MQTT-3.1.2-4].
//
// mu guards every field below it; any loop may take it to deliver a message.
// It is never held across a socket write or a call into the topic package.
// An idle session is small (about 110 bytes): message state is allocated on
// first use, subscriptions are a short slice.
type session struct {
	id string

	mu           sync.Mutex
	flushPending atomic.Bool // queued for a flush on its loop (dirty list or mailbox)
	clean        bool
	dead         bool // discarded; routers that still hold it skip it
	sse          bool // an HTTP event stream, not an MQTT client
	persisted    bool // the store holds this session (persist.go)
	version      codec.Version
	lastID       uint16
	outBuffered  int32                      // bytes gnet held for c after the last flush
	fullSince    uint32                     // unix second since which the session drops messages, 0 when not
	since        uint32                     // unix second it came online (CONNECT accepted), or went offline
	c            *conn                      // current connection; nil while offline
	wbuf         *bytebufferpool.ByteBuffer // encoded packets for c, written by l's flush
	st           *sessionState              // nil until the session holds a message
	subs         []subEntry                 // filters and granted QoS, for UNSUBSCRIBE and cleanup
}

// sessionState is a session's message state, allocated on first need.
type sessionState struct {
	q        []queued   // waiting for an in-flight slot, a writable socket or the client's return
	qBytes   int        // payload bytes in q
	inflight []inflight // outbound QoS 1/2 in send order [MQTT-4.6.0-6]
	qos2in   []uint16   // inbound QoS 2 ids received and not yet released [MQTT-4.3.3-2]
	seq      uint64     // SSE: last event id
	qTail    uint64     // last queue position given out (persist.go: store queue keys)
	spill    spill      // persist.go: the part of the queue that is in the store only
	dBytes   int        // persist_queue.go: payload bytes of the spill (counted in --max-queued-bytes)
	v5       *sess5     // MQTT 5 connection and session state (v5.go); nil for 3.x
	hold     *outHold   // persist.go: frames waiting for durability (--fsync always); nil until one does
	lastTag  uint32     // the highest group tag given to a shared subscription (subEntry.tag); never reused
}

type subEntry struct {
	filter string
	qos    uint8
	opts   uint8         // MQTT 5 subscription options (codec.SubOpt* bits, QoS bits clear)
	id     uint32        // MQTT 5 subscription identifier, 0: none
	tag    uint32        // a shared subscription's group tag within the session, as stored (store.Subscription.Group); 0: plain
	grp    topic.GroupID // the group it joined in the tree, once subscribed; 0: plain, or not yet
}

// newSubEntry is a subscription entry for filter; a shared one gets the
// session's next group tag (s.mu held).
func (s *session) newSubEntry(filter string, qos, opts uint8, id uint32) subEntry {
	e := subEntry{filter: filter, qos: qos, opts: opts, id: id}
	if _, _, shared := topic.SplitShared([]byte(filter)); shared {
		st := s.state()
		st.lastTag++
		e.tag = st.lastTag
	}
	return e
}

// tagOf is the group tag of s's subscription through which group grp
// delivers (what a stored entry records), 0 when s has none: the message
// did not come through a group, or s left it. s.mu held.
func (s *session) tagOf(grp topic.GroupID) uint32 {
	if grp == 0 {
		return 0
	}
	for i := range s.subs {
		if s.subs[i].grp == grp {
			return s.subs[i].tag
		}
	}
	return 0
}

// groupOf is the group of s's subscription with group tag tag (a stored
// entry's), 0 when s has none. s.mu held.
func (s *session) groupOf(tag uint32) topic.GroupID {
	if tag == 0 {
		return 0
	}
	for i := range s.subs {
		if s.subs[i].tag == tag {
			return s.subs[i].grp
		}
	}
	return 0
}

// loopLocked is the loop of the current connection, nil while offline.
func (s *session) loopLocked() *loop {
	if s.c == nil {
		return nil
	}
	return s.c.l
}

// state returns the message state, allocating it on first use.
func (s *session) state() *sessionState {
	if s.st == nil {
		s.st = &sessionState{}
	}
	return s.st
}

// queuedLocked is the number of queued messages.
func (s *session) queuedLocked() int {
	if s.st == nil {
		return 0
	}
	return len(s.st.q) + s.st.onDisk() // persist.go: and those only in the store
}

// inflightLocked is the number of outbound messages awaiting acknowledgement.
func (s *session) inflightLocked() int {
	if s.st == nil {
		return 0
	}
	return len(s.st.inflight)
}

// subIndex finds a subscription by filter, or -1.
func (s *session) subIndex(filter []byte) int {
	for i := range s.subs {
		if s.subs[i].filter == string(filter) {
			return i
		}
	}
	return -1
}

// queued is 24 bytes (16 before grp: the price of sending a shared
// group's messages on when a member's session ends), 40 with the store's
// position and message id (persist.go).
type queued struct {
	m      *message
	qos    uint8
	retain bool
	sid    uint32        // MQTT 5 subscription identifier of the matching subscription
	grp    topic.GroupID // the shared group it came through, 0: none (shared.go)
	pos    uint64        // queue position (persist.go)
	mid    uint64        // store message id, 0 when not stored (persist.go)
}

// inflight is 24 bytes; grp fills what was padding; 32 with the store's
// message id (persist.go).
type inflight struct {
	m      *message
	id     uint16
	qos    uint8
	retain bool
	rel    bool // QoS 2: PUBREC received, PUBREL sent, awaiting PUBCOMP
	sid    uint32
	grp    topic.GroupID
	mid    uint64    // store message id, 0 when not stored (persist.go)
	lazy   bool      // persistent session: its record is not written yet (persist_lazy.go)
	pend   *lazyPend // --fsync always: the publisher's acknowledgement this lazy copy gates (persist_lazy.go)
}

// blockedLocked reports whether c already holds its cap of unsent bytes
// (Options.MaxOutboundBytes).
func (s *session) blockedLocked(limit int) bool {
	n := int(s.outBuffered)
	if s.wbuf != nil {
		n += len(s.wbuf.B)
	}
	if s.st != nil && s.st.hold != nil {
		n += s.heldBytes() // persist.go: frames waiting for durability count as unsent
	}
	return n >= limit
}

func (s *session) buf() *bytebufferpool.ByteBuffer {
	if s.wbuf == nil {
		s.wbuf = bytebufferpool.Get()
	}
	return s.wbuf
}

// appendLocked adds encoded bytes for the connection.
func (s *session) appendLocked(raw []byte) {
	b := s.buf()
	b.B = append(b.B, raw...)
}

// appendPatchedLocked adds an encoded PUBLISH with its packet id replaced.
func (s *session) appendPatchedLocked(raw []byte, off int, id uint16) {
	b := s.buf()
	start := len(b.B)
	b.B = append(b.B, raw...)
	binary.BigEndian.PutUint16(b.B[start+off:], id)
}

// appendPublishLocked encodes an owned message straight into the buffer,
// in the session's protocol version. It reports false, writing nothing,
// when a v5 client's Maximum Packet Size is too small for it.
func (s *session) appendPublishLocked(b *Broker, m *message, qos uint8, retain, dup bool, id uint16, sid uint32) bool {
	if v := s.v5(); v != nil {
		p := pub5{topic: m.topic, props: m.props(), payload: m.payload, qos: qos, retain: retain, dup: dup, id: id, sid: sid}
		p.expiry, p.hasExpiry = expiryLeft(m.expiry, b.now.Load())
		return s.appendPublishV5Locked(b, v, &p)
	}
	p := codec.Publish{Dup: dup, QoS: qos, Retain: retain, Topic: m.topic, Payload: m.payload, PacketID: id}
	w := s.buf()
	w.B = p.AppendTo(w.B, codec.V311)
	return true
}

// nextIDLocked allocates an outbound packet id not in flight [MQTT-2.3.1-2].
func (s *session) nextIDLocked() uint16 {
	for {
		s.lastID++
		if s.lastID == 0 {
			s.lastID = 1
		}
		inUse := false
		for i := range s.inflightLocked() {
			if s.st.inflight[i].id == s.lastID {
				inUse = true
				break
			}
		}
		if !inUse {
			return s.lastID
		}
	}
}

// enqueueLocked queues m (with the subscription identifier and the shared
// group, 0: none, it came through), or reports false when the session's
// queue is full (the message is then dropped and counted by the caller).
func (s *session) enqueueLocked(b *Broker, m *message, qos uint8, retain bool, sid uint32, grp topic.GroupID) bool {
	st := s.state()
	if len(st.q) >= b.opts.MaxQueuedMsgs || st.qBytes+len(m.payload) > b.opts.MaxQueuedBytes {
		if s.fullSince == 0 {
			s.fullSince = uint32(b.now.Load())
		}
		return false
	}
	st.qTail++ // persist.go: the entry's store position
	st.q = append(st.q, queued{m: m, qos: qos, retain: retain, sid: sid, grp: grp, pos: st.qTail})
	st.qBytes += len(m.payload)
	return true
}

// drainLocked moves queued messages to the connection while in-flight
// slots and outbound room allow, in order. It reports whether bytes were
// added. The session must be online.
func (s *session) drainLocked(b *Broker) bool {
	limit := b.opts.MaxOutboundBytes
	wrote := false
	if st := s.st; st != nil {
		perms := s.c.permissions()
		now := b.now.Load()
		cap := s.inflightCap(b)
		for len(st.q) > 0 && !s.blockedLocked(limit) {
			e := st.q[0]
			if (perms != nil && !perms.CanRead(e.m.topic)) || e.m.expired(now) {
				// Queued while offline; the returning identity may not
				// read it, or it expired while it waited (5.0
				// [MQTT5-3.3.2-5]).
				st.q[0] = queued{}
				st.q = st.q[1:]
				st.qBytes -= len(e.m.payload)
				b.persistDequeued(s, &e, 0) // persist.go
				continue
			}
			if e.qos > 0 && len(st.inflight) >= cap {
				break
			}
			var id uint16
			if e.qos > 0 {
				id = s.nextIDLocked()
			}
			st.q[0] = queued{}
			st.q = st.q[1:]
			st.qBytes -= len(e.m.payload)
			if !s.appendPublishLocked(b, e.m, e.qos, e.retain, false, id, e.sid) {
				b.sysStats.tooLarge.Add(1)  // as if sent ([MQTT5-3.1.2-25])
				b.persistDequeued(s, &e, 0) // persist.go
				continue
			}
			b.persistDequeued(s, &e, id) // persist.go
			if e.qos > 0 {
				st.inflight = append(st.inflight, inflight{m: e.m, id: id, qos: e.qos, retain: e.retain, sid: e.sid, grp: e.grp, mid: e.mid})
			}
			wrote = true
		}
		if len(st.q) == 0 {
			st.q = nil
			s.wantPageLocked(b) // persist.go: the queue goes on in the store
		}
	}
	if s.queuedLocked() < b.opts.MaxQueuedMsgs && !s.blockedLocked(limit) {
		s.fullSince = 0
	}
	return wrote
}

// resendLocked re-sends, in their original order, every unacknowledged
// message with DUP set, and PUBREL for those past PUBREC [MQTT-4.4.0-1].
// QoS 2 re-sends wait for durability like the first sends (persist.go).
func (s *session) resendLocked(b *Broker) {
	for i := range s.inflightLocked() {
		f := &s.st.inflight[i]
		if f.qos == 2 {
			b.holdOutLocked(s)
		}
		if f.rel {
			s.buf().B = codec.AppendAck(s.buf().B, codec.TypePubrel, f.id)
			continue
		}
		s.appendPublishLocked(b, f.m, f.qos, f.retain, true, f.id, f.sid) // [MQTT-3.3.1-1]
	}
}

// ackLocked handles PUBACK, PUBREC and PUBCOMP from the client. It reports
// whether bytes were added (a PUBREL, or queued messages now in flight), or
// an error when the acknowledgement does not fit the delivery it names
// (the connection is then closed, as Mosquitto 2.0 does): PUBREC or PUBCOMP
// for a QoS 1 delivery, PUBACK for a QoS 2 one, PUBCOMP for a QoS 2
// delivery still awaiting PUBREC [MQTT-4.3.2-1] [MQTT-4.3.3-1]. An
// acknowledgement for an id not in flight is ignored (PUBREC is answered
// with PUBREL so the client can free the id), as Mosquitto does.
//
// v5: a PUBREC with a failure reason code (0x80 or above) ends the
// delivery (no PUBREL: the client refused the message); a PUBREC for an
// unknown id is answered with PUBREL 0x92 "packet identifier not found".
func (s *session) ackLocked(b *Broker, a *codec.Ack) (bool, error) {
	t, id := a.Type, a.PacketID
	for i := range s.inflightLocked() {
		st := s.st
		f := &st.inflight[i]
		if f.id != id {
			continue
		}
		switch {
		case f.qos == 1 && t != codec.TypePuback:
			return false, errAckForQoS1 // [MQTT-4.3.2-1] [MQTT-4.8.0-1]
		case f.qos == 2 && t == codec.TypePuback:
			return false, errPubackForQoS2 // [MQTT-4.3.3-1] [MQTT-4.8.0-1]
		case f.qos == 2 && t == codec.TypePubcomp && !f.rel:
			return false, errPubcompBeforePubrec // [MQTT-4.3.3-1] [MQTT-4.8.0-1]
		case t == codec.TypePubrec && a.Reason >= 0x80:
			// refused by the client: the delivery ends here (5.0 §4.3.3)
		case t == codec.TypePubrec:
			f.rel = true                                                 // a repeated PUBREC gets PUBREL again
			s.buf().B = codec.AppendAck(s.buf().B, codec.TypePubrel, id) // [MQTT-4.3.3-3]
			b.persistPubrec(s, f)
			return true, nil
		}
		b.persistAcked(s, f)                     // persist.go
		copy(st.inflight[i:], st.inflight[i+1:]) // PUBACK (QoS 1), PUBCOMP after PUBREL (QoS 2)
		st.inflight[len(st.inflight)-1] = inflight{}
		st.inflight = st.inflight[:len(st.inflight)-1]
		return s.drainLocked(b), nil
	}
	if t == codec.TypePubrec && a.Reason < 0x80 {
		// Unknown id: release it anyway so the client can free it.
		s.buf().B = appendAck(s.buf().B, codec.TypePubrel, id, codec.PacketIdentifierNotFound, s.version)
		return true, nil
	}
	return false, nil
}

var (
	errAckForQoS1          = &codec.Error{Code: codec.ProtocolError, Msg: "PUBREC or PUBCOMP for a QoS 1 delivery"}
	errPubackForQoS2       = &codec.Error{Code: codec.ProtocolError, Msg: "PUBACK for a QoS 2 delivery"}
	errPubcompBeforePubrec = &codec.Error{Code: codec.ProtocolError, Msg: "PUBCOMP for a QoS 2 delivery awaiting PUBREC"}
)

// clearLocked drops the session's messages (queue, in flight, QoS 2
// state); a v5 session keeps its connection state.
func (s *session) clearLocked() {
	s.dropOutLocked()
	if s.st != nil && s.st.v5 != nil {
		s.st = &sessionState{v5: s.st.v5}
	} else {
		s.st = nil
	}
}

// hasQoS2In reports whether an inbound QoS 2 id is awaiting PUBREL.
func (s *session) hasQoS2InLocked(id uint16) bool {
	if s.st == nil {
		return false
	}
	for _, x := range s.st.qos2in {
		if x == id {
			return true
		}
	}
	return false
}

// releaseQoS2InLocked forgets an inbound QoS 2 id; it reports whether
// the id was awaiting PUBREL.
func (s *session) releaseQoS2InLocked(id uint16) bool {
	if s.st == nil {
		return false
	}
	q := s.st.qos2in
	for i, x := range q {
		if x == id {
			q[i] = q[len(q)-1]
			s.st.qos2in = q[:len(q)-1]
			return true
		}
	}
	return false
}
