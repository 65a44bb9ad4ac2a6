package store

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// walBytes is what pebble has taken into its write-ahead log since open.
func walBytes(s *Store) uint64 {
	s.dbMu.RLock()
	defer s.dbMu.RUnlock()
	return s.db.Metrics().WAL.BytesIn
}

// keysLeft counts the message, reference and session keys on disk.
func keysLeft(t *testing.T, s *Store) (msgs, refs, sess int) {
	t.Helper()
	return countPrefix(t, s, prefixMessage), countPrefix(t, s, prefixRef), countPrefix(t, s, prefixSession)
}

var bigPayload = bytes.Repeat([]byte("p"), 64<<10)

// A QoS 1 message put and acknowledged within one commit window (message
// record, in-flight entry and reference, then their deletion) never
// reaches pebble: its write-ahead log takes less than the payload, and a
// reopened store holds nothing of it. Each mode: interval and none hold
// the window for Window (an hour here: only Close ends it); always
// cancels inside one group commit (both batches submitted while the
// writer is held in a sync).
func TestWindowCancelsPutAndDelete(t *testing.T) {
	for _, f := range []Fsync{FsyncInterval, FsyncNone, FsyncAlways} {
		t.Run(f.String(), func(t *testing.T) {
			dir := t.TempDir()
			o := Options{Dir: dir, Fsync: f, Interval: time.Hour, Window: time.Hour}
			hold := make(chan struct{})
			held := make(chan struct{}, 1)
			if f == FsyncAlways {
				first := true
				o.beforeSync = func() {
					if first {
						first = false
						held <- struct{}{}
						<-hold
					}
				}
			}
			s := openT(t, o)
			defer func() { s.Close() }()
			if f == FsyncAlways {
				// Hold the writer in the sync of a first group, so that
				// the put and its delete queue up behind it and land in
				// one group.
				b := NewBatch()
				b.SetRetained(&Message{Topic: []byte("hold"), Payload: []byte("x")})
				submitT(t, s, b)
				<-held
			}
			before := walBytes(s)
			id := s.NextMessageID()
			b := NewBatch()
			b.PutMessage(id, &Message{Topic: []byte("q/1"), Payload: bigPayload, QoS: 1})
			b.SetInflight("sub", 1, id, 1, false, PublishSent)
			if _, err := s.Submit(b); err != nil {
				t.Fatal(err)
			}
			b = NewBatch()
			b.DeleteInflight("sub", 1, id)
			seq, err := s.Submit(b)
			if err != nil {
				t.Fatal(err)
			}
			if f == FsyncAlways {
				close(hold)
			}
			waitFor(t, 5*time.Second, "committed", func() bool { return s.Committed() >= seq })
			if got := s.Overlay().Cancelled; got < 2 {
				t.Fatalf("%d sets cancelled in the window; want 2 (the message record, the entry with its reference)", got)
			}
			if n := walBytes(s) - before; n >= uint64(len(bigPayload)) {
				t.Fatalf("the write-ahead log took %d bytes for a message acknowledged within the window (payload %d)", n, len(bigPayload))
			}
			if m, r, se := keysLeft(t, s); m != 0 || r != 0 || se != 0 {
				t.Fatalf("after the window: %d message, %d reference, %d session keys; want none", m, r, se)
			}
			if n := walBytes(s) - before; n >= uint64(len(bigPayload)) {
				t.Fatalf("the write-ahead log took %d bytes once the window was written", n)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openT(t, Options{Dir: dir})
			if m, r, se := keysLeft(t, s); m != 0 || r != 0 || se != 0 {
				t.Fatalf("reopened: %d message, %d reference, %d session keys; want none", m, r, se)
			}
		})
	}
}

// A put whose delete comes after its window was written to pebble is
// deleted there: the entry, its reference and the message, through
// PUBREC too; a message the window holds with an entry already on disk
// (PUBREC after the first window) is deleted the same way.
func TestWindowDeleteAfterCommitDeletes(t *testing.T) {
	for _, f := range []Fsync{FsyncInterval, FsyncNone} {
		t.Run(f.String(), func(t *testing.T) {
			dir := t.TempDir()
			var durable uint64
			posted := make(chan uint64, 64)
			s := openT(t, Options{Dir: dir, Fsync: f, Interval: 20 * time.Millisecond, OnDurable: func(n uint64) { posted <- n }})
			defer func() { s.Close() }()
			ids := []uint64{s.NextMessageID(), s.NextMessageID()}
			b := NewBatch()
			b.SetSession("sub", &SessionInfo{ProtocolVersion: 4})
			for i, id := range ids {
				b.PutMessage(id, &Message{Topic: []byte("q/1"), Payload: []byte(fmt.Sprint(i)), QoS: 2})
				b.SetInflight("sub", uint16(i+1), id, 2, false, PublishSent)
			}
			seq := submitT(t, s, b)
			// The window ends by its timer (none: its timer writes it;
			// interval: its timer writes and syncs it).
			deadline := time.After(5 * time.Second)
			for durable < seq {
				select {
				case durable = <-posted:
				case <-deadline:
					t.Fatal("no durability post")
				}
			}
			waitFor(t, 5*time.Second, "the window written to pebble", func() bool {
				s.dbMu.RLock()
				defer s.dbMu.RUnlock()
				it, _ := s.iter(prefixMessage)
				n := 0
				for ok := it.First(); ok; ok = it.Next() {
					n++
				}
				it.Close()
				return n == 2
			})
			// Message 0: PUBACK-style delete. Message 1: PUBREC, then
			// PUBCOMP, in the next window.
			b = NewBatch()
			b.DeleteInflight("sub", 1, ids[0])
			b.SetInflight("sub", 2, ids[1], 2, false, PubrelSent)
			submitT(t, s, b)
			b = NewBatch()
			b.DeleteInflight("sub", 2, ids[1])
			submitT(t, s, b)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openT(t, Options{Dir: dir})
			if m, r, se := keysLeft(t, s); m != 0 || r != 0 || se != 1 {
				t.Fatalf("reopened: %d message, %d reference, %d session keys; want 0, 0 and the header", m, r, se)
			}
		})
	}
}

// What the window holds is what reads see: a queue paged (Queue and
// RequestQueue), a message read, while nothing of it was written to
// pebble yet (an hour's interval); and a reopened store has it (Close
// writes and syncs the window).
func TestWindowReadsSeeHeldRecords(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir, Fsync: FsyncInterval, Interval: time.Hour, Window: time.Hour})
	before := walBytes(s)
	b := NewBatch()
	b.SetSession("off", &SessionInfo{ProtocolVersion: 4, Expiry: 0})
	var ids []uint64
	for i := 1; i <= 5; i++ {
		id := s.NextMessageID()
		ids = append(ids, id)
		b.PutMessage(id, &Message{Topic: []byte("q"), Payload: []byte(fmt.Sprint("m", i)), QoS: 1})
		b.Enqueue("off", uint64(i), id, 1, false)
	}
	seq := submitT(t, s, b)
	if s.Durable() >= seq {
		t.Fatalf("durable %d for seq %d before the interval's sync", s.Durable(), seq)
	}
	if n := walBytes(s) - before; n != 0 {
		t.Fatalf("%d bytes in the write-ahead log before the window ended; want 0 (held in memory)", n)
	}
	page, err := s.Queue("off", 0, 3, nil)
	if err != nil || len(page) != 3 || string(page[0].Message.Payload) != "m1" || page[2].Pos != 3 {
		t.Fatalf("first page from the window: %+v %v", page, err)
	}
	got := make(chan []Queued, 1)
	if err := s.RequestQueue("off", page[2].Pos, 10, func(q []Queued, err error) {
		if err != nil {
			t.Error(err)
		}
		got <- q
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case q := <-got:
		if len(q) != 2 || string(q[0].Message.Payload) != "m4" || string(q[1].Message.Payload) != "m5" {
			t.Fatalf("second page: %+v", q)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no page")
	}
	if m, ok, err := s.Message(ids[4]); err != nil || !ok || string(m.Payload) != "m5" {
		t.Fatalf("Message: %+v %v %v", m, ok, err)
	}
	// A dequeue in the next window (m1 went in flight and was acked).
	b = NewBatch()
	b.Dequeue("off", 1, ids[0])
	b.SetInflight("off", 1, ids[0], 1, false, PublishSent)
	submitT(t, s, b)
	b = NewBatch()
	b.DeleteInflight("off", 1, ids[0])
	submitT(t, s, b)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, Options{Dir: dir})
	defer s.Close()
	l, _ := loadAll(t, s)
	if len(l.sessions) != 1 || l.sessions[0].QueueHead != 2 || l.sessions[0].QueueTail != 5 || len(l.sessions[0].Inflight) != 0 {
		t.Fatalf("reopened: %+v", l.sessions)
	}
	if n := countPrefix(t, s, prefixMessage); n != 4 {
		t.Fatalf("%d message records; want 4 (m1 acknowledged)", n)
	}
}

// The window is bounded: past MaxWindowBytes its records go to pebble
// before the interval ends (the sync still waits for it).
func TestWindowBoundWritesEarly(t *testing.T) {
	s := openT(t, Options{Fsync: FsyncInterval, Interval: time.Hour, Window: time.Hour, MaxWindowBytes: 256 << 10})
	defer s.Close()
	before := walBytes(s)
	var seq uint64
	for i := 0; i < 8; i++ {
		b := NewBatch()
		b.SetRetained(&Message{Topic: fmt.Appendf(nil, "r/%d", i), Payload: bigPayload})
		seq = submitT(t, s, b)
	}
	s.dbMu.RLock()
	n := s.db.Metrics().WAL.BytesIn - before
	s.dbMu.RUnlock()
	if n < 4*uint64(len(bigPayload)) {
		t.Fatalf("%d bytes in the log after 8 x 64 KiB with a 256 KiB bound; want at least 256 KiB written early", n)
	}
	if s.Durable() >= seq {
		t.Fatal("posted durable before the interval's sync")
	}
}

// With a Window shorter than the Interval, interval mode writes the
// window to pebble when the window ends (a process crash loses at most
// the window) and posts durability only after the interval's sync.
func TestWindowShorterThanInterval(t *testing.T) {
	var synced atomic.Uint64
	s := openT(t, Options{Fsync: FsyncInterval, Interval: time.Hour, Window: 30 * time.Millisecond,
		afterSync: func(n uint64) { synced.Store(n) }})
	defer s.Close()
	before := walBytes(s)
	b := NewBatch()
	b.SetRetained(&Message{Topic: []byte("w"), Payload: bigPayload})
	start := time.Now()
	seq := submitT(t, s, b)
	waitFor(t, 5*time.Second, "the window written to the log", func() bool { return walBytes(s)-before >= uint64(len(bigPayload)) })
	if el := time.Since(start); el < 25*time.Millisecond {
		t.Fatalf("written after %v, before the 30 ms window ended", el)
	}
	if s.Durable() >= seq || synced.Load() != 0 {
		t.Fatalf("durable %d, synced %d: posted before the interval's sync", s.Durable(), synced.Load())
	}
}
