package store

import (
	"encoding/binary"
	"reflect"
	"sync/atomic"
	"testing"
	"time"
)

// Group tags round-trip on subscriptions, in-flight and queue entries; a
// record written before tags existed reads as tag 0 with its size intact.
func TestGroupTagsRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir, Fsync: FsyncAlways})
	b := NewBatch()
	b.SetSession("m", &SessionInfo{ProtocolVersion: 4})
	b.SetSubscription("m", &Subscription{Filter: []byte("$share/g/t"), QoS: 1, Group: 7})
	b.SetSubscription("m", &Subscription{Filter: []byte("t"), QoS: 1})
	id := s.NextMessageID()
	b.PutMessage(id, &Message{Topic: []byte("t"), Payload: []byte("pay"), QoS: 1})
	b.SetInflightGroup("m", 1, id, 1, false, PublishSent, 7)
	b.SetInflight("m", 2, id, 1, false, PublishSent)
	b.EnqueueGroup("m", 1, id, 1, false, 3, 7)
	b.EnqueueGroup("m", 2, id, 1, false, 0, 9) // no payload: the size field is there anyway, 0
	b.EnqueueSized("m", 3, id, 1, false, 3)
	submitT(t, s, b)
	// An entry as a build before group tags wrote it: id, then size.
	old := binary.AppendUvarint(appendEntry(nil, 1, false, false, id), 3)
	b = NewBatch()
	b.op(opSetRef, queueKey(nil, "m", 4), old, id)
	submitT(t, s, b)

	l, _ := loadAll(t, s)
	se := l.sessions[0]
	if want := []uint32{7, 0}; se.Subs[0].Group != want[0] || se.Subs[1].Group != want[1] {
		t.Fatalf("subscription tags %+v; want %v", se.Subs, want)
	}
	if se.Inflight[0].Group != 7 || se.Inflight[1].Group != 0 {
		t.Fatalf("in-flight tags %d, %d; want 7, 0", se.Inflight[0].Group, se.Inflight[1].Group)
	}
	if se.QueueGroups != 2 || se.MaxGroup != 9 || se.QueueBytes != 9 {
		t.Fatalf("queue groups %d, max tag %d, bytes %d; want 2, 9, 9", se.QueueGroups, se.MaxGroup, se.QueueBytes)
	}
	page, err := s.Queue("m", 0, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	var tags []uint32
	for _, q := range page {
		tags = append(tags, q.Group)
	}
	if !reflect.DeepEqual(tags, []uint32{7, 9, 0, 0}) {
		t.Fatalf("paged tags %v; want [7 9 0 0]", tags)
	}
}

// DeleteSessionTaking reads the session's tagged queue entries after the
// given position exactly where it deletes the session: an Enqueue in the
// same batch is seen, a new session of the same id written after it is
// untouched, and done runs once, after the commit.
func TestDeleteSessionTaking(t *testing.T) {
	s := openT(t, Options{Fsync: FsyncInterval, Interval: 20 * time.Millisecond})
	defer s.Close()
	id := s.NextMessageID()
	gone := s.NextMessageID()
	b := NewBatch()
	b.SetSession("m", &SessionInfo{ProtocolVersion: 4})
	b.PutMessage(id, &Message{Topic: []byte("t"), Payload: []byte("x"), QoS: 1})
	b.PutMessage(gone, &Message{Topic: []byte("t"), Payload: []byte("old"), QoS: 1, Expiry: time.Now().Add(-time.Hour).UnixMilli()})
	b.EnqueueGroup("m", 1, id, 1, false, 1, 3) // in memory still: after = 1
	b.EnqueueGroup("m", 2, id, 1, false, 1, 3)
	b.EnqueueGroup("m", 3, gone, 1, false, 3, 3) // expired: not handed on
	b.EnqueueSized("m", 4, id, 1, false, 1)      // plain: not handed on
	submitT(t, s, b)

	var calls atomic.Int32
	var got atomic.Pointer[[]Queued]
	b = NewBatch()
	b.EnqueueGroup("m", 5, id, 1, true, 1, 4) // same batch, before the deletion
	b.DeleteSessionTaking("m", 1, func(q []Queued) { got.Store(&q); calls.Add(1) })
	// A new session of the same id, right behind.
	b.SetSession("m", &SessionInfo{ProtocolVersion: 5})
	b.EnqueueGroup("m", 1, id, 1, false, 1, 1)
	submitT(t, s, b)
	waitFor(t, 5*time.Second, "done", func() bool { return calls.Load() > 0 })
	q := *got.Load()
	if len(q) != 2 || q[0].Pos != 2 || q[0].Group != 3 || string(q[0].Message.Payload) != "x" ||
		q[1].Pos != 5 || q[1].Group != 4 || !q[1].Retain {
		t.Fatalf("taken %+v; want positions 2 (tag 3) and 5 (tag 4, retain)", q)
	}
	l, _ := loadAll(t, s)
	if len(l.sessions) != 1 || l.sessions[0].Info.ProtocolVersion != 5 || l.sessions[0].QueueHead != 1 || l.sessions[0].QueueTail != 1 {
		t.Fatalf("sessions after %+v; want only the new one, with its one entry", l.sessions)
	}
	if n := countPrefix(t, s, prefixMessage); n != 1 {
		t.Fatalf("%d message records; want 1 (the new session's)", n)
	}
	if calls.Load() != 1 {
		t.Fatalf("done called %d times", calls.Load())
	}
}
