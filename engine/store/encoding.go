package store

import (
	"encoding/binary"
	"errors"
	"math"
)

// Key layout (docs/store.md has the table). The first byte names the record
// type; a client id is written as a 2-byte big-endian length and its bytes,
// so one client's keys are a contiguous range and no id is a prefix of
// another's range.
//
//	"\x00V"                                 format version (uint16 BE)
//	'r' topic                               retained message
//	'm' id(8 BE)                            shared message record
//	's' cid 'a'                             session header
//	's' cid 'b' filter                      subscription
//	's' cid 'f' pid(2 BE)                   outbound in-flight message
//	's' cid 'i' pid(2 BE)                   inbound QoS 2 id awaiting PUBREL
//	's' cid 'q' pos(8 BE)                   queued message, in pos order
//	'w' cid                                 pending will
//	'x' id(8 BE) cid kind pos-or-pid        reference to message id (kind 'q' or 'f')
//
// Every value starts with valueVersion; a reader refuses a value whose
// version it does not know.
const (
	prefixRetained = 'r'
	prefixMessage  = 'm'
	prefixSession  = 's'
	prefixWill     = 'w'
	prefixRef      = 'x'

	subHeader   = 'a'
	subSub      = 'b'
	subInflight = 'f'
	subQoS2In   = 'i'
	subQueue    = 'q'

	valueVersion = 1
)

// FormatVersion is the layout version this package writes and reads.
const FormatVersion = 1

var keyFormatVersion = []byte("\x00V")

var errCorrupt = errors.New("store: corrupt record")

// MaxClientID is the longest client id the store accepts (its length is
// stored in 2 bytes).
const MaxClientID = 65535

func appendCID(dst []byte, cid string) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(cid)))
	return append(dst, cid...)
}

// sessionKey is 's' cid sub.
func sessionKey(dst []byte, cid string, sub byte) []byte {
	dst = append(dst, prefixSession)
	dst = appendCID(dst, cid)
	return append(dst, sub)
}

func queueKey(dst []byte, cid string, pos uint64) []byte {
	return binary.BigEndian.AppendUint64(sessionKey(dst, cid, subQueue), pos)
}

func inflightKey(dst []byte, cid string, pid uint16) []byte {
	return binary.BigEndian.AppendUint16(sessionKey(dst, cid, subInflight), pid)
}

func qos2Key(dst []byte, cid string, pid uint16) []byte {
	return binary.BigEndian.AppendUint16(sessionKey(dst, cid, subQoS2In), pid)
}

func subKey(dst []byte, cid string, filter []byte) []byte {
	return append(sessionKey(dst, cid, subSub), filter...)
}

func messageKey(dst []byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64(append(dst, prefixMessage), id)
}

func retainedKey(dst []byte, topic []byte) []byte {
	return append(append(dst, prefixRetained), topic...)
}

func willKey(dst []byte, cid string) []byte {
	return appendCID(append(dst, prefixWill), cid)
}

// refKey is 'x' id cid kind suffix, where suffix is the queue position or
// the packet id of the referencing entry.
func refKey(dst []byte, id uint64, cid string, kind byte, suffix []byte) []byte {
	dst = binary.BigEndian.AppendUint64(append(dst, prefixRef), id)
	dst = appendCID(dst, cid)
	dst = append(dst, kind)
	return append(dst, suffix...)
}

// parseSessionKey splits 's' cid sub rest.
func parseSessionKey(k []byte) (cid []byte, sub byte, rest []byte, ok bool) {
	if len(k) < 4 || k[0] != prefixSession {
		return nil, 0, nil, false
	}
	n := int(binary.BigEndian.Uint16(k[1:]))
	if len(k) < 3+n+1 {
		return nil, 0, nil, false
	}
	return k[3 : 3+n], k[3+n], k[4+n:], true
}

// prefixEnd is the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		end[i]++
		if end[i] != 0 {
			return end[:i+1]
		}
	}
	return nil // p is all 0xff: no upper bound
}

// Message value flags.
const (
	flagQoSMask  = 0x03
	flagRetain   = 0x04
	flagPubrel   = 0x08 // in-flight state PUBREL-sent
	flagProps    = 0x10
	flagCT       = 0x20
	flagExpiry   = 0x40
	flagReserved = 0x80
)

// appendMessage encodes m: version, flags, [expiry varint], topic len+bytes,
// [content type len+bytes], [props len+bytes], payload (the rest).
func appendMessage(dst []byte, m *Message) []byte {
	f := m.QoS & flagQoSMask
	if m.Retain {
		f |= flagRetain
	}
	if len(m.Props) > 0 {
		f |= flagProps
	}
	if len(m.ContentType) > 0 {
		f |= flagCT
	}
	if m.Expiry != 0 {
		f |= flagExpiry
	}
	dst = append(dst, valueVersion, f)
	if m.Expiry != 0 {
		dst = binary.AppendVarint(dst, m.Expiry)
	}
	dst = binary.AppendUvarint(dst, uint64(len(m.Topic)))
	dst = append(dst, m.Topic...)
	if len(m.ContentType) > 0 {
		dst = binary.AppendUvarint(dst, uint64(len(m.ContentType)))
		dst = append(dst, m.ContentType...)
	}
	if len(m.Props) > 0 {
		dst = binary.AppendUvarint(dst, uint64(len(m.Props)))
		dst = append(dst, m.Props...)
	}
	return append(dst, m.Payload...)
}

// decodeMessage fills m with slices of v; copy them to keep (cloneMessage).
func decodeMessage(v []byte, m *Message) error {
	if len(v) < 2 || v[0] != valueVersion || v[1]&flagReserved != 0 {
		return errCorrupt
	}
	f := v[1]
	v = v[2:]
	*m = Message{QoS: f & flagQoSMask, Retain: f&flagRetain != 0}
	if f&flagExpiry != 0 {
		x, n := binary.Varint(v)
		if n <= 0 {
			return errCorrupt
		}
		m.Expiry, v = x, v[n:]
	}
	var err error
	if m.Topic, v, err = readBytes(v); err != nil {
		return err
	}
	if f&flagCT != 0 {
		if m.ContentType, v, err = readBytes(v); err != nil {
			return err
		}
	}
	if f&flagProps != 0 {
		if m.Props, v, err = readBytes(v); err != nil {
			return err
		}
	}
	m.Payload = v
	return nil
}

func readBytes(v []byte) (b, rest []byte, err error) {
	l, n := binary.Uvarint(v)
	if n <= 0 || uint64(len(v)-n) < l {
		return nil, nil, errCorrupt
	}
	return v[n : n+int(l)], v[n+int(l):], nil
}

// cloneMessage copies m's slices into one allocation.
func cloneMessage(m Message) Message {
	buf := make([]byte, 0, len(m.Topic)+len(m.Payload)+len(m.ContentType)+len(m.Props))
	take := func(b []byte) []byte {
		if b == nil {
			return nil
		}
		s := len(buf)
		buf = append(buf, b...)
		return buf[s:len(buf):len(buf)]
	}
	m.Topic = take(m.Topic)
	m.Payload = take(m.Payload)
	m.ContentType = take(m.ContentType)
	m.Props = take(m.Props)
	return m
}

// appendEntry encodes a queue or in-flight entry: version, flags, message
// id. Optional fields may follow (appendEntryTail).
func appendEntry(dst []byte, qos uint8, retain, pubrel bool, id uint64) []byte {
	f := qos & flagQoSMask
	if retain {
		f |= flagRetain
	}
	if pubrel {
		f |= flagPubrel
	}
	dst = append(dst, valueVersion, f)
	return binary.AppendUvarint(dst, id)
}

// appendEntryTail appends an entry's optional trailing fields, each a
// uvarint present only when it or a later one is: the payload size
// (EnqueueSized; 0 in an in-flight entry), then the group tag of a
// shared-subscription delivery (EnqueueGroup, SetInflightGroup). Older
// records end earlier and read as size 0, group 0.
func appendEntryTail(dst []byte, size int, grp uint32) []byte {
	if size > 0 || grp != 0 {
		dst = binary.AppendUvarint(dst, uint64(max(size, 0)))
	}
	if grp != 0 {
		dst = binary.AppendUvarint(dst, uint64(grp))
	}
	return dst
}

// entrySize is the payload size a queue entry recorded after its message
// id (Batch.EnqueueSized); 0 when it recorded none. v decoded already.
func entrySize(v []byte) int64 {
	_, n := binary.Uvarint(v[2:])
	if n <= 0 {
		return 0
	}
	size, m := binary.Uvarint(v[2+n:])
	if m <= 0 || size > 1<<40 {
		return 0
	}
	return int64(size)
}

// entryGroup is the group tag an entry recorded after its size
// (appendEntryTail); 0 when it recorded none. v decoded already.
func entryGroup(v []byte) uint32 {
	_, n := binary.Uvarint(v[2:])
	if n <= 0 {
		return 0
	}
	v = v[2+n:]
	_, m := binary.Uvarint(v)
	if m <= 0 {
		return 0
	}
	g, k := binary.Uvarint(v[m:])
	if k <= 0 || g > math.MaxUint32 {
		return 0
	}
	return uint32(g)
}

func decodeEntry(v []byte) (qos uint8, retain, pubrel bool, id uint64, err error) {
	if len(v) < 3 || v[0] != valueVersion {
		return 0, false, false, 0, errCorrupt
	}
	id, n := binary.Uvarint(v[2:])
	if n <= 0 {
		return 0, false, false, 0, errCorrupt
	}
	f := v[1]
	return f & flagQoSMask, f&flagRetain != 0, f&flagPubrel != 0, id, nil
}

// appendHeader encodes a session header: version, protocol version, expiry
// varint, props len+bytes.
func appendHeader(dst []byte, h *SessionInfo) []byte {
	dst = append(dst, valueVersion, h.ProtocolVersion)
	dst = binary.AppendVarint(dst, h.Expiry)
	dst = binary.AppendUvarint(dst, uint64(len(h.Props)))
	return append(dst, h.Props...)
}

func decodeHeader(v []byte, h *SessionInfo) error {
	if len(v) < 2 || v[0] != valueVersion {
		return errCorrupt
	}
	h.ProtocolVersion = v[1]
	x, n := binary.Varint(v[2:])
	if n <= 0 {
		return errCorrupt
	}
	h.Expiry = x
	p, _, err := readBytes(v[2+n:])
	h.Props = p
	return err
}

// appendSub encodes a subscription: version, QoS, options, identifier,
// and, for a shared subscription with a group tag, the tag (a trailing
// uvarint; records without one are older or plain).
func appendSub(dst []byte, s *Subscription) []byte {
	dst = append(dst, valueVersion, s.QoS, s.Options)
	dst = binary.AppendUvarint(dst, uint64(s.ID))
	if s.Group != 0 {
		dst = binary.AppendUvarint(dst, uint64(s.Group))
	}
	return dst
}

func decodeSub(v []byte, s *Subscription) error {
	if len(v) < 4 || v[0] != valueVersion {
		return errCorrupt
	}
	id, n := binary.Uvarint(v[3:])
	if n <= 0 || id > 1<<32-1 {
		return errCorrupt
	}
	s.QoS, s.Options, s.ID, s.Group = v[1], v[2], uint32(id), 0
	if rest := v[3+n:]; len(rest) > 0 {
		g, k := binary.Uvarint(rest)
		if k <= 0 || g > math.MaxUint32 {
			return errCorrupt
		}
		s.Group = uint32(g)
	}
	return nil
}

// appendWill encodes a will: version, deadline varint, then the message.
func appendWill(dst []byte, w *Will) []byte {
	dst = append(dst, valueVersion)
	dst = binary.AppendVarint(dst, w.Deadline)
	return appendMessage(dst, &w.Message)
}

func decodeWill(v []byte, w *Will) error {
	if len(v) < 2 || v[0] != valueVersion {
		return errCorrupt
	}
	d, n := binary.Varint(v[1:])
	if n <= 0 {
		return errCorrupt
	}
	w.Deadline = d
	return decodeMessage(v[1+n:], &w.Message)
}
