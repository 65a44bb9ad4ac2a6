package store

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"
)

// FuzzDecodeRecords feeds arbitrary bytes to every value decoder: none may
// panic, and what one accepts must encode back to something it decodes to
// the same value (the encoding is canonical after one round).
func FuzzDecodeRecords(f *testing.F) {
	m := Message{Topic: []byte("a/b"), Payload: []byte("p"), ContentType: []byte("text/plain"),
		Props: []byte{0x26, 0, 1, 'k', 0, 1, 'v'}, QoS: 2, Retain: true, Expiry: 1700000000000}
	f.Add(appendMessage(nil, &m))
	f.Add(appendMessage(nil, &Message{Topic: []byte("t")}))
	f.Add(appendEntry(nil, 1, true, true, 1<<40))
	f.Add(binary.AppendUvarint(appendEntry(nil, 1, false, false, 7), 300))
	f.Add(appendEntryTail(appendEntry(nil, 1, false, false, 7), 300, 5))
	f.Add(appendEntryTail(appendEntry(nil, 2, false, true, 9), 0, 1<<32-1))
	f.Add(appendSub(nil, &Subscription{QoS: 1, ID: 3, Group: 12}))
	f.Add(appendHeader(nil, &SessionInfo{ProtocolVersion: 5, Expiry: -1, Props: []byte{0, 0, 1, 44}}))
	f.Add(appendSub(nil, &Subscription{QoS: 1, Options: 0x0c, ID: 268435455}))
	f.Add(appendWill(nil, &Will{Message: m, Deadline: 42}))
	f.Add([]byte{valueVersion, 0xff})
	f.Add([]byte{valueVersion, flagExpiry, 0x80})
	f.Fuzz(func(t *testing.T, v []byte) {
		var got Message
		if decodeMessage(v, &got) == nil {
			var again Message
			if err := decodeMessage(appendMessage(nil, &got), &again); err != nil || !sameMessage(got, again) {
				t.Fatalf("message %x: %+v re-decoded as %+v (%v)", v, got, again, err)
			}
		}
		if qos, retain, pubrel, id, err := decodeEntry(v); err == nil {
			q2, r2, p2, id2, err := decodeEntry(appendEntry(nil, qos, retain, pubrel, id))
			if err != nil || q2 != qos&flagQoSMask || r2 != retain || p2 != pubrel || id2 != id {
				t.Fatalf("entry %x does not round-trip (%v)", v, err)
			}
			if size := entrySize(v); size < 0 || size > 1<<40 {
				t.Fatalf("entry %x: size %d", v, size)
			} else if size > 0 && entrySize(binary.AppendUvarint(appendEntry(nil, qos, retain, pubrel, id), uint64(size))) != size {
				t.Fatalf("entry %x: size %d does not round-trip", v, size)
			}
			// The trailing fields re-encode to the same size and group
			// (a group keeps its size field, 0 or not, before it).
			grp := entryGroup(v)
			again := appendEntryTail(appendEntry(nil, qos, retain, pubrel, id), int(entrySize(v)), grp)
			if entryGroup(again) != grp || entrySize(again) != entrySize(v) {
				t.Fatalf("entry %x: size %d group %d re-encoded as %x", v, entrySize(v), grp, again)
			}
		}
		var h SessionInfo
		if decodeHeader(v, &h) == nil {
			var h2 SessionInfo
			if err := decodeHeader(appendHeader(nil, &h), &h2); err != nil || h2.ProtocolVersion != h.ProtocolVersion ||
				h2.Expiry != h.Expiry || !bytes.Equal(h2.Props, h.Props) {
				t.Fatalf("header %x: %+v re-decoded as %+v (%v)", v, h, h2, err)
			}
		}
		var s Subscription
		if decodeSub(v, &s) == nil {
			var s2 Subscription
			if err := decodeSub(appendSub(nil, &s), &s2); err != nil || !reflect.DeepEqual(s, s2) {
				t.Fatalf("subscription %x: %+v re-decoded as %+v (%v)", v, s, s2, err)
			}
		}
		var w Will
		if decodeWill(v, &w) == nil {
			var w2 Will
			if err := decodeWill(appendWill(nil, &w), &w2); err != nil || w2.Deadline != w.Deadline || !sameMessage(w.Message, w2.Message) {
				t.Fatalf("will %x: %+v re-decoded as %+v (%v)", v, w, w2, err)
			}
		}
	})
}

// sameMessage compares messages, an empty slice equal to a missing one.
func sameMessage(a, b Message) bool {
	return bytes.Equal(a.Topic, b.Topic) && bytes.Equal(a.Payload, b.Payload) && bytes.Equal(a.ContentType, b.ContentType) &&
		bytes.Equal(a.Props, b.Props) && a.QoS == b.QoS && a.Retain == b.Retain && a.Expiry == b.Expiry
}
