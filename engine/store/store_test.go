package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(time.Millisecond)
	}
}

func openT(t testing.TB, o Options) *Store {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	s, err := Open(o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// submitT submits b and waits until it is durable.
func submitT(t testing.TB, s *Store, b *Batch) uint64 {
	t.Helper()
	seq, err := s.Submit(b)
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	waitFor(t, 10*time.Second, fmt.Sprintf("seq %d committed", seq), func() bool { return s.Committed() >= seq })
	return seq
}

// countPrefix counts the keys under prefix byte p.
func countPrefix(t testing.TB, s *Store, p byte) int {
	t.Helper()
	s.flushForRead() // what pebble holds, with the commit window written
	it, err := s.iter(p)
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	return n
}

type loaded struct {
	retained []Message
	sessions []*Session
	wills    map[string]Will
}

func loadAll(t testing.TB, s *Store) (loaded, LoadStats) {
	t.Helper()
	l := loaded{wills: map[string]Will{}}
	st, err := s.Load(Loader{
		Retained: func(m Message) error { l.retained = append(l.retained, m); return nil },
		Session:  func(se *Session) error { l.sessions = append(l.sessions, se); return nil },
		Will:     func(cid string, w Will) error { l.wills[cid] = w; return nil },
	})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return l, st
}

func TestRoundTripEveryRecord(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir, Fsync: FsyncAlways})

	b := NewBatch()
	r1 := Message{Topic: []byte("a/b"), Payload: []byte("hello"), QoS: 1, Retain: true, ContentType: []byte("text/plain"), Props: []byte{1, 2, 3}, Expiry: time.Now().Add(time.Hour).UnixMilli()}
	r2 := Message{Topic: []byte("a/c"), Payload: []byte{}, QoS: 0, Retain: true}
	b.SetRetained(&r1)
	b.SetRetained(&r2)
	b.SetSession("dev-1", &SessionInfo{ProtocolVersion: 4, Expiry: 0, Props: []byte("x")})
	b.SetSubscription("dev-1", &Subscription{Filter: []byte("cmd/#"), QoS: 2, Options: 0x2c, ID: 77})
	b.SetSubscription("dev-1", &Subscription{Filter: []byte("cfg/+"), QoS: 1})
	id := s.NextMessageID()
	m := Message{Topic: []byte("cmd/x"), Payload: []byte("p1"), QoS: 2}
	b.PutMessage(id, &m)
	b.SetInflight("dev-1", 9, id, 2, false, PubrelSent)
	b.SetInflight("dev-1", 3, id, 1, true, PublishSent)
	b.AddQoS2In("dev-1", 300)
	b.AddQoS2In("dev-1", 5)
	b.SetWill("dev-1", &Will{Message: Message{Topic: []byte("dead/dev-1"), Payload: []byte("bye"), QoS: 1}, Deadline: 1234})
	submitT(t, s, b)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = openT(t, Options{Dir: dir})
	defer s.Close()
	l, st := loadAll(t, s)
	if st.Retained != 2 || st.Sessions != 1 || st.Subscriptions != 2 || st.Inflight != 2 || st.QoS2In != 2 || st.Wills != 1 {
		t.Fatalf("stats %+v", st)
	}
	if len(l.retained) != 2 || !reflect.DeepEqual(l.retained[0], r1) {
		t.Fatalf("retained[0] = %+v, want %+v", l.retained[0], r1)
	}
	if got := l.retained[1]; string(got.Topic) != "a/c" || len(got.Payload) != 0 || !got.Retain {
		t.Fatalf("retained[1] = %+v", got)
	}
	se := l.sessions[0]
	if se.ClientID != "dev-1" || se.Info.ProtocolVersion != 4 || string(se.Info.Props) != "x" {
		t.Fatalf("session %+v", se)
	}
	// Subscriptions come back in filter order.
	want := []Subscription{{Filter: []byte("cfg/+"), QoS: 1}, {Filter: []byte("cmd/#"), QoS: 2, Options: 0x2c, ID: 77}}
	if !reflect.DeepEqual(se.Subs, want) {
		t.Fatalf("subs %+v, want %+v", se.Subs, want)
	}
	if len(se.Inflight) != 2 || se.Inflight[0].PacketID != 3 || se.Inflight[0].State != PublishSent || !se.Inflight[0].Retain || se.Inflight[0].QoS != 1 ||
		se.Inflight[1].PacketID != 9 || se.Inflight[1].State != PubrelSent || se.Inflight[1].QoS != 2 ||
		string(se.Inflight[1].Message.Payload) != "p1" || se.Inflight[1].MsgID != id {
		t.Fatalf("inflight %+v", se.Inflight)
	}
	if !reflect.DeepEqual(se.QoS2In, []uint16{5, 300}) {
		t.Fatalf("qos2in %v", se.QoS2In)
	}
	w := l.wills["dev-1"]
	if w.Deadline != 1234 || string(w.Message.Topic) != "dead/dev-1" || string(w.Message.Payload) != "bye" || w.Message.QoS != 1 {
		t.Fatalf("will %+v", w)
	}
	// A new id is past every stored one.
	if n := s.NextMessageID(); n <= id {
		t.Fatalf("NextMessageID after reopen = %d, want > %d", n, id)
	}

	// Deletes.
	b = NewBatch()
	b.DeleteRetained([]byte("a/b"))
	b.DeleteSubscription("dev-1", []byte("cmd/#"))
	b.DeleteInflight("dev-1", 3, 0)
	b.DeleteQoS2In("dev-1", 5)
	b.DeleteWill("dev-1")
	submitT(t, s, b)
	l, st = loadAll(t, s)
	if st.Retained != 1 || string(l.retained[0].Topic) != "a/c" || st.Subscriptions != 1 || st.Inflight != 1 || st.QoS2In != 1 || st.Wills != 0 {
		t.Fatalf("after deletes: %+v", st)
	}
	if countPrefix(t, s, prefixMessage) != 1 {
		t.Fatal("message still referenced by pid 9 was deleted")
	}
	b = NewBatch()
	b.DeleteInflight("dev-1", 9, 0)
	submitT(t, s, b)
	if n := countPrefix(t, s, prefixMessage); n != 0 {
		t.Fatalf("%d message records left after last reference went", n)
	}
	b = NewBatch()
	b.DeleteSession("dev-1")
	submitT(t, s, b)
	if _, st = loadAll(t, s); st.Sessions != 0 {
		t.Fatalf("session survived DeleteSession: %+v", st)
	}
	if n := countPrefix(t, s, prefixSession); n != 0 {
		t.Fatalf("%d session keys left", n)
	}
}

func TestQueueOrderAndPaging(t *testing.T) {
	s := openT(t, Options{Fsync: FsyncNone})
	defer s.Close()
	// Positions 1..300, written in shuffled batches: order comes from pos.
	var ids []uint64
	for i := 0; i < 300; i++ {
		ids = append(ids, s.NextMessageID())
	}
	for _, chunk := range [][2]int{{200, 300}, {0, 100}, {100, 200}} {
		b := NewBatch()
		for i := chunk[0]; i < chunk[1]; i++ {
			b.PutMessage(ids[i], &Message{Topic: []byte("t"), Payload: fmt.Appendf(nil, "m%d", i), QoS: 1})
			b.Enqueue("c", uint64(i+1), ids[i], 1, false)
		}
		submitT(t, s, b)
	}
	b := NewBatch()
	b.SetSession("c", &SessionInfo{ProtocolVersion: 4})
	submitT(t, s, b)
	l, _ := loadAll(t, s)
	if se := l.sessions[0]; se.QueueHead != 1 || se.QueueTail != 300 {
		t.Fatalf("queue ends %d..%d, want 1..300", se.QueueHead, se.QueueTail)
	}
	var got []Queued
	var after uint64
	for {
		page, err := s.Queue("c", after, 64, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if len(page) > 64 {
			t.Fatalf("page of %d > 64", len(page))
		}
		got = append(got, page...)
		after = page[len(page)-1].Pos
	}
	if len(got) != 300 {
		t.Fatalf("paged %d messages, want 300", len(got))
	}
	for i, q := range got {
		if q.Pos != uint64(i+1) || string(q.Message.Payload) != fmt.Sprintf("m%d", i) {
			t.Fatalf("entry %d: pos %d payload %q", i, q.Pos, q.Message.Payload)
		}
	}
	// The same page through the reader goroutine, as a loop would ask.
	res := make(chan []Queued, 1)
	if err := s.RequestQueue("c", 100, 5, func(p []Queued, err error) {
		if err != nil {
			t.Error(err)
		}
		res <- p
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-res:
		if len(p) != 5 || p[0].Pos != 101 || p[4].Pos != 105 {
			t.Fatalf("RequestQueue page: %+v", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RequestQueue never answered")
	}
	// Dequeue the first 10: the page starts at 11 and their messages go.
	b = NewBatch()
	for p := uint64(1); p <= 10; p++ {
		b.Dequeue("c", p, 0)
	}
	submitT(t, s, b)
	page, err := s.Queue("c", 0, 1, nil)
	if err != nil || len(page) != 1 || page[0].Pos != 11 {
		t.Fatalf("after dequeue: %+v, %v", page, err)
	}
	if n := countPrefix(t, s, prefixMessage); n != 290 {
		t.Fatalf("%d message records, want 290", n)
	}
}

// TestSharedMessageStoredOnce: one record for a message queued for 50
// sessions, kept while one reference is left, gone with the last. Each way
// the writer finds the last reference: counted in memory (Dequeue names
// the message), read back from the entry (it does not), and, after a
// reopen, from the reference keys on disk (the message is not tracked).
func TestSharedMessageStoredOnce(t *testing.T) {
	for _, mode := range []string{"counted", "read", "reopened"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, Options{Dir: dir, Fsync: FsyncNone})
			defer func() { s.Close() }()
			id := s.NextMessageID()
			b := NewBatch()
			b.PutMessage(id, &Message{Topic: []byte("fan/out"), Payload: bytes.Repeat([]byte("x"), 1000), QoS: 1})
			const n = 50
			for i := 0; i < n; i++ {
				cid := fmt.Sprintf("s%02d", i)
				b.SetSession(cid, &SessionInfo{ProtocolVersion: 4})
				b.Enqueue(cid, 1, id, 1, false)
			}
			submitT(t, s, b)
			if got := countPrefix(t, s, prefixMessage); got != 1 {
				t.Fatalf("%d message records for one message queued %d times", got, n)
			}
			if got := countPrefix(t, s, prefixRef); got != n {
				t.Fatalf("%d references, want %d", got, n)
			}
			named := id
			switch mode {
			case "read":
				named = 0
			case "reopened":
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				s = openT(t, Options{Dir: dir, Fsync: FsyncNone})
			}
			// Every session but the last lets go: the message stays.
			b = NewBatch()
			for i := 0; i < n-1; i++ {
				if i%2 == 0 {
					b.Dequeue(fmt.Sprintf("s%02d", i), 1, named)
				} else {
					b.DeleteSession(fmt.Sprintf("s%02d", i))
				}
			}
			submitT(t, s, b)
			if got := countPrefix(t, s, prefixMessage); got != 1 {
				t.Fatalf("message gone with one reference left (%d records)", got)
			}
			page, err := s.Queue(fmt.Sprintf("s%02d", n-1), 0, 10, nil)
			if err != nil || len(page) != 1 || len(page[0].Message.Payload) != 1000 {
				t.Fatalf("last session's queue: %+v %v", page, err)
			}
			// The last one moves it in flight (one batch), gets PUBREC
			// (the same reference), then PUBCOMP: only then is it gone.
			last := fmt.Sprintf("s%02d", n-1)
			b = NewBatch()
			b.Dequeue(last, 1, named)
			b.SetInflight(last, 7, id, 2, false, PublishSent)
			submitT(t, s, b)
			b = NewBatch()
			b.SetInflight(last, 7, id, 2, false, PubrelSent)
			submitT(t, s, b)
			if got := countPrefix(t, s, prefixMessage); got != 1 {
				t.Fatalf("message gone while in flight (%d records)", got)
			}
			b = NewBatch()
			b.DeleteInflight(last, 7, named)
			submitT(t, s, b)
			waitFor(t, 5*time.Second, "the message record deleted with its last reference", func() bool {
				return countPrefix(t, s, prefixMessage) == 0
			})
			if got := countPrefix(t, s, prefixRef); got != 0 {
				t.Fatalf("%d references left", got)
			}
		})
	}
}

func TestExpiredSkippedAndDeleted(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s := openT(t, Options{Fsync: FsyncNone, Now: func() time.Time { return now }})
	defer s.Close()
	past, future := now.Add(-time.Second).UnixMilli(), now.Add(time.Hour).UnixMilli()
	b := NewBatch()
	b.SetRetained(&Message{Topic: []byte("old"), Payload: []byte("x"), Expiry: past})
	b.SetRetained(&Message{Topic: []byte("new"), Payload: []byte("y"), Expiry: future})
	b.SetSession("gone", &SessionInfo{Expiry: past})
	b.SetSession("kept", &SessionInfo{Expiry: future})
	id := s.NextMessageID()
	b.PutMessage(id, &Message{Topic: []byte("q"), Payload: []byte("z")})
	b.Enqueue("gone", 1, id, 0, false)
	old := s.NextMessageID()
	b.PutMessage(old, &Message{Topic: []byte("q"), Payload: []byte("stale"), Expiry: past})
	b.Enqueue("kept", 1, old, 0, false)
	b.Enqueue("kept", 2, id, 0, false)
	submitT(t, s, b)
	l, st := loadAll(t, s)
	if st.Retained != 1 || st.ExpiredRetained != 1 || string(l.retained[0].Topic) != "new" {
		t.Fatalf("retained: %+v", st)
	}
	if st.Sessions != 1 || st.ExpiredSessions != 1 || l.sessions[0].ClientID != "kept" {
		t.Fatalf("sessions: %+v", st)
	}
	page, err := s.Queue("kept", 0, 10, nil)
	if err != nil || len(page) != 1 || page[0].Pos != 2 {
		t.Fatalf("queue skips the expired message: %+v %v", page, err)
	}
	// The deletions were submitted: the expired session's keys and the
	// expired queue entry and message go.
	waitFor(t, 5*time.Second, "expired records deleted", func() bool {
		return countPrefix(t, s, prefixRetained) == 1 && countPrefix(t, s, prefixMessage) == 1 && countPrefix(t, s, prefixRef) == 1
	})
}

func TestVersionRefused(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := pebble.Open(dir, &pebble.Options{Logger: fatalLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set(keyFormatVersion, []byte{0, 99}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = Open(Options{Dir: dir})
	if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "format version 99") {
		t.Fatalf("Open of a version 99 dir: %v", err)
	}
	// Not overwritten: the version is still 99.
	db, err = pebble.Open(dir, &pebble.Options{Logger: fatalLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	v, c, err := db.Get(keyFormatVersion)
	if err != nil || !bytes.Equal(v, []byte{0, 99}) {
		t.Fatalf("version after refusal: %v %v", v, err)
	}
	c.Close()
}

func TestDataWithoutVersionRefused(t *testing.T) {
	dir := t.TempDir()
	db, err := pebble.Open(dir, &pebble.Options{Logger: fatalLogger{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set([]byte("foreign"), []byte("data"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(Options{Dir: dir}); !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "no format version") {
		t.Fatalf("Open of a foreign pebble dir: %v", err)
	}
}

func TestSecondOpenRefused(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir})
	_, err := Open(Options{Dir: dir})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("second Open: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, pidFileName)); !os.IsNotExist(err) {
		t.Fatalf("pid file left after Close: %v", err)
	}
	s = openT(t, Options{Dir: dir})
	s.Close()
}

func TestQueueFullIsReported(t *testing.T) {
	block := make(chan struct{})
	var once sync.Once
	s := openT(t, Options{Fsync: FsyncAlways, QueueLen: 2, beforeSync: func() { once.Do(func() { <-block }) }})
	// The first batch holds the writer in beforeSync (it has a record to
	// sync: an empty batch writes nothing); two more fill the queue.
	first := NewBatch()
	first.SetRetained(&Message{Topic: []byte("t"), Payload: []byte("v")})
	if _, err := s.Submit(first); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "writer to take the first batch", func() bool { return len(s.ch) == 0 })
	for i := 0; i < 2; i++ {
		if _, err := s.Submit(NewBatch()); err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
	}
	if _, err := s.Submit(NewBatch()); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("submit to a full queue: %v", err)
	}
	close(block)
	waitFor(t, 5*time.Second, "queue drained", func() bool { return s.Durable() == 3 })
	if seq, err := s.Submit(NewBatch()); err != nil || seq != 4 {
		t.Fatalf("after drain: seq %d %v (a refused submit must not use a sequence number)", seq, err)
	}
	s.Close()
	if _, err := s.Submit(NewBatch()); !errors.Is(err, ErrClosed) {
		t.Fatalf("submit after Close: %v", err)
	}
}

func TestParseFsync(t *testing.T) {
	for _, f := range []Fsync{FsyncAlways, FsyncInterval, FsyncNone} {
		got, err := ParseFsync(f.String())
		if err != nil || got != f {
			t.Fatalf("ParseFsync(%q) = %v, %v", f, got, err)
		}
	}
	if _, err := ParseFsync("sometimes"); err == nil {
		t.Fatal("ParseFsync accepted sometimes")
	}
}

const lockEnv = "TINYMQ_STORE_LOCK_CHILD"

// TestLockChild tries to open the directory TestSecondProcessRefused holds.
func TestLockChild(t *testing.T) {
	dir := os.Getenv(lockEnv)
	if dir == "" {
		t.Skip("child of TestSecondProcessRefused only")
	}
	s, err := Open(Options{Dir: dir})
	if err == nil {
		s.Close()
		fmt.Println("OPENED")
		os.Exit(0)
	}
	fmt.Println("ERR", err)
	os.Exit(0)
}

func TestSecondProcessRefused(t *testing.T) {
	if os.Getenv(lockEnv) != "" {
		t.Skip("in the child")
	}
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir})
	defer s.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), lockEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
	want := fmt.Sprintf("locked by pid %d;", os.Getpid())
	if !strings.Contains(string(out), "ERR store: data directory in use") || !strings.Contains(string(out), want) {
		t.Fatalf("second process: %s (want %q)", out, want)
	}
	t.Logf("second process: %s", strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0]))
}

// A message put in one commit and first referenced in a later one (the
// order PutMessage allows) is kept: only a count that falls to 0 deletes.
func TestMessagePutBeforeItsReference(t *testing.T) {
	s := openT(t, Options{Fsync: FsyncNone})
	defer s.Close()
	id := s.NextMessageID()
	b := NewBatch()
	b.PutMessage(id, &Message{Topic: []byte("a/b"), Payload: []byte("later"), QoS: 1})
	submitT(t, s, b)
	b = NewBatch()
	b.SetSession("c", &SessionInfo{ProtocolVersion: 4})
	b.Enqueue("c", 1, id, 1, false)
	submitT(t, s, b)
	page, err := s.Queue("c", 0, 10, nil)
	if err != nil || len(page) != 1 || string(page[0].Message.Payload) != "later" {
		t.Fatalf("queue after the reference came in a later commit: %+v %v", page, err)
	}
	b = NewBatch()
	b.Dequeue("c", 1, id)
	submitT(t, s, b)
	if n := countPrefix(t, s, prefixMessage); n != 0 {
		t.Fatalf("%d message records after the only reference went", n)
	}
}
