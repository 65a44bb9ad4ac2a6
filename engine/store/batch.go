package store

import (
	"encoding/binary"
	"sync"
)

// Batch collects records for one Submit; they commit atomically, in order.
// A Batch is built on one goroutine (typically an event loop), then handed
// to Submit, which takes ownership: do not touch it afterwards. Every method
// copies its arguments, so they may alias a read buffer.
//
// Ops are encoded into one byte slice: kind, uvarint key length, key,
// uvarint value length, value, uvarint message id.
type Batch struct {
	buf []byte
	n   int    // ops
	seq uint64 // set by Submit
	tmp []byte

	reads bool // an op reads state (needs an indexed pebble batch)

	takes []take // DeleteSessionTaking's callbacks, by the index its op records
}

// take is one DeleteSessionTaking: what the writer read at the deletion,
// and whom to tell once it is committed.
type take struct {
	done  func([]Queued)
	got   []Queued // read by the last apply of the op (a replay reads again)
	fired bool     // done was called: never twice, even if a failed sync replays the batch
}

type opKind uint8

const (
	opSet         opKind = iota + 1 // set key to value
	opDel                           // delete key
	opSetRef                        // set a queue or in-flight entry that references message id
	opDelRef                        // delete such an entry and its reference; drop the message when unreferenced
	opDelSession                    // delete every 's' cid key (value is the prefix) and their references
	opTakeSession                   // opDelSession that first reads the queue entries with a group (value: take index, after)
)

var batchPool = sync.Pool{New: func() any { return &Batch{} }}

// NewBatch returns an empty batch from a pool. Safe from any goroutine.
func NewBatch() *Batch { return batchPool.Get().(*Batch) }

func (b *Batch) release() {
	if cap(b.buf) > 1<<20 {
		return // let an outsized buffer go
	}
	b.buf, b.n, b.seq, b.reads = b.buf[:0], 0, 0, false
	clear(b.takes)
	b.takes = b.takes[:0]
	batchPool.Put(b)
}

// Len is the number of records in the batch.
func (b *Batch) Len() int { return b.n }

// Size is the encoded size of the batch in bytes.
func (b *Batch) Size() int { return len(b.buf) }

func (b *Batch) op(k opKind, key, val []byte, id uint64) {
	// Deleting an entry whose message id the caller did not give reads
	// the entry first; deleting a session walks its keys. Both need an
	// indexed pebble batch. Everything else is written blind.
	if (k == opDelRef && id == 0) || k == opDelSession || k == opTakeSession {
		b.reads = true
	}
	b.buf = append(b.buf, byte(k))
	b.buf = binary.AppendUvarint(b.buf, uint64(len(key)))
	b.buf = append(b.buf, key...)
	b.buf = binary.AppendUvarint(b.buf, uint64(len(val)))
	b.buf = append(b.buf, val...)
	b.buf = binary.AppendUvarint(b.buf, id)
	b.n++
}

// SetRetained stores m as the retained message of m.Topic, replacing any.
func (b *Batch) SetRetained(m *Message) {
	k := retainedKey(b.tmp[:0], m.Topic)
	n := len(k)
	v := appendMessage(k, m)
	b.op(opSet, v[:n], v[n:], 0)
	b.tmp = v
}

// DeleteRetained removes the retained message of topic.
func (b *Batch) DeleteRetained(topic []byte) {
	b.tmp = retainedKey(b.tmp[:0], topic)
	b.op(opDel, b.tmp, nil, 0)
}

// PutMessage stores the shared message record id (from Store.NextMessageID)
// once; Enqueue and SetInflight reference it. Put it in the same batch as
// (or a batch before) its first reference: a message no entry references is
// deleted when its last reference goes, never before it had one.
func (b *Batch) PutMessage(id uint64, m *Message) {
	k := messageKey(b.tmp[:0], id)
	n := len(k)
	v := appendMessage(k, m)
	b.op(opSet, v[:n], v[n:], 0)
	b.tmp = v
}

// SetSession writes a session's header (create, or update its expiry on
// disconnect).
func (b *Batch) SetSession(cid string, h *SessionInfo) {
	k := sessionKey(b.tmp[:0], cid, subHeader)
	n := len(k)
	v := appendHeader(k, h)
	b.op(opSet, v[:n], v[n:], 0)
	b.tmp = v
}

// DeleteSession removes a session and everything under it (subscriptions,
// queue, in-flight, inbound QoS 2 ids); messages it alone referenced go too.
// Its will is separate (DeleteWill).
func (b *Batch) DeleteSession(cid string) {
	b.tmp = appendCID(append(b.tmp[:0], prefixSession), cid)
	b.op(opDelSession, b.tmp, nil, 0)
}

// DeleteSessionTaking is DeleteSession that first reads, at the deletion's
// place in the order of records, the session's queue entries after
// position after that recorded a group tag (EnqueueGroup), with owned
// copies of their messages (expired ones and those whose message is
// missing are left out). done gets them once the deletion is committed,
// on the writer goroutine, once: it must not block or call into the
// store. This is how a shared-subscription member's queue, kept in the
// store only, reaches the rest of its group when its session ends: read
// exactly where it is deleted, it is neither missed (an Enqueue not yet
// committed) nor confused with the records of a new session of the same
// client id that follow (engine/shared.go).
func (b *Batch) DeleteSessionTaking(cid string, after uint64, done func([]Queued)) {
	b.takes = append(b.takes, take{done: done})
	b.tmp = appendCID(append(b.tmp[:0], prefixSession), cid)
	n := len(b.tmp)
	v := binary.AppendUvarint(b.tmp, uint64(len(b.takes)-1))
	v = binary.AppendUvarint(v, after)
	b.op(opTakeSession, v[:n], v[n:], 0)
	b.tmp = v
}

// fireTakes calls the callbacks of the batch's DeleteSessionTaking ops
// once the batch is committed. Writer goroutine.
func (b *Batch) fireTakes() {
	for i := range b.takes {
		t := &b.takes[i]
		if !t.fired {
			t.fired = true
			got := t.got
			t.got = nil
			t.done(got)
		}
	}
}

// SetSubscription adds or replaces a subscription.
func (b *Batch) SetSubscription(cid string, s *Subscription) {
	k := subKey(b.tmp[:0], cid, s.Filter)
	n := len(k)
	v := appendSub(k, s)
	b.op(opSet, v[:n], v[n:], 0)
	b.tmp = v
}

// DeleteSubscription removes a subscription.
func (b *Batch) DeleteSubscription(cid string, filter []byte) {
	b.tmp = subKey(b.tmp[:0], cid, filter)
	b.op(opDel, b.tmp, nil, 0)
}

// Enqueue appends message msgID at position pos of cid's queue. Positions
// are the engine's: strictly increasing per session (Session.QueueTail+1
// after recovery).
func (b *Batch) Enqueue(cid string, pos uint64, msgID uint64, qos uint8, retain bool) {
	b.EnqueueSized(cid, pos, msgID, qos, retain, 0)
}

// EnqueueSized is Enqueue with the message's payload size recorded in the
// entry, so that a restart knows the bytes of an offline queue without
// reading its messages (Session.QueueBytes).
func (b *Batch) EnqueueSized(cid string, pos uint64, msgID uint64, qos uint8, retain bool, size int) {
	b.EnqueueGroup(cid, pos, msgID, qos, retain, size, 0)
}

// EnqueueGroup is EnqueueSized for a message delivered through a shared
// subscription: grp is that subscription's tag (Subscription.Group; 0:
// none), read back in Queued.Group and Session.QueueGroups.
func (b *Batch) EnqueueGroup(cid string, pos uint64, msgID uint64, qos uint8, retain bool, size int, grp uint32) {
	k := queueKey(b.tmp[:0], cid, pos)
	n := len(k)
	v := appendEntry(k, qos, retain, false, msgID)
	v = appendEntryTail(v, size, grp)
	b.op(opSetRef, v[:n], v[n:], msgID)
	b.tmp = v
}

// Dequeue removes position pos from cid's queue (sent, moved in flight, or
// dropped). msgID is the message the entry references (Queued.MsgID, or
// the id given to Enqueue): with it the writer deletes without reading
// the entry first; 0 when unknown.
func (b *Batch) Dequeue(cid string, pos uint64, msgID uint64) {
	b.tmp = queueKey(b.tmp[:0], cid, pos)
	b.op(opDelRef, b.tmp, nil, msgID)
}

// SetInflight records an outbound QoS 1/2 message under packet id pid with
// its state (PublishSent when sent, PubrelSent on PUBREC). The writer does
// not read what pid held before: a packet id is set again only for the
// same message (its PUBREC) or after DeleteInflight freed it.
func (b *Batch) SetInflight(cid string, pid uint16, msgID uint64, qos uint8, retain bool, st InflightState) {
	b.SetInflightGroup(cid, pid, msgID, qos, retain, st, 0)
}

// SetInflightGroup is SetInflight for a message delivered through a
// shared subscription with tag grp (Subscription.Group; 0: none), read
// back in Inflight.Group.
func (b *Batch) SetInflightGroup(cid string, pid uint16, msgID uint64, qos uint8, retain bool, st InflightState, grp uint32) {
	k := inflightKey(b.tmp[:0], cid, pid)
	n := len(k)
	v := appendEntry(k, qos, retain, st == PubrelSent, msgID)
	v = appendEntryTail(v, 0, grp)
	b.op(opSetRef, v[:n], v[n:], msgID)
	b.tmp = v
}

// DeleteInflight removes packet id pid (PUBACK, PUBCOMP). msgID is the
// message it references (as for Dequeue; 0 when unknown).
func (b *Batch) DeleteInflight(cid string, pid uint16, msgID uint64) {
	b.tmp = inflightKey(b.tmp[:0], cid, pid)
	b.op(opDelRef, b.tmp, nil, msgID)
}

// AddQoS2In records an inbound QoS 2 packet id awaiting PUBREL.
func (b *Batch) AddQoS2In(cid string, pid uint16) {
	b.tmp = qos2Key(b.tmp[:0], cid, pid)
	b.op(opSet, b.tmp, []byte{valueVersion}, 0)
}

// DeleteQoS2In removes an inbound QoS 2 packet id (PUBREL received).
func (b *Batch) DeleteQoS2In(cid string, pid uint16) {
	b.tmp = qos2Key(b.tmp[:0], cid, pid)
	b.op(opDel, b.tmp, nil, 0)
}

// SetWill stores a pending (delayed) will of cid.
func (b *Batch) SetWill(cid string, w *Will) {
	k := willKey(b.tmp[:0], cid)
	n := len(k)
	v := appendWill(k, w)
	b.op(opSet, v[:n], v[n:], 0)
	b.tmp = v
}

// DeleteWill removes cid's pending will (published, or the client returned).
func (b *Batch) DeleteWill(cid string) {
	b.tmp = willKey(b.tmp[:0], cid)
	b.op(opDel, b.tmp, nil, 0)
}

// each calls fn for every op in order.
func (b *Batch) each(fn func(k opKind, key, val []byte, id uint64) error) error {
	p := b.buf
	for len(p) > 0 {
		k := opKind(p[0])
		p = p[1:]
		key, rest, err := readBytes(p)
		if err != nil {
			return err
		}
		val, rest, err := readBytes(rest)
		if err != nil {
			return err
		}
		id, n := binary.Uvarint(rest)
		if n <= 0 {
			return errCorrupt
		}
		p = rest[n:]
		if err := fn(k, key, val, id); err != nil {
			return err
		}
	}
	return nil
}
