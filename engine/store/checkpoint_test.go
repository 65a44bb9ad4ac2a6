package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A checkpoint holds every batch Submit accepted before the call, those
// still in the writer's commit window (a 10 s window and interval: nothing
// reached pebble when the checkpoint starts) and those still queued for
// the writer: a store opened on the copy loads the retained messages and
// the session with its queue in order. The copy carries the format version
// (Open accepts it) and no pid file; the live store goes on.
func TestCheckpointHoldsCommitWindow(t *testing.T) {
	dir := t.TempDir()
	// One batch per writer round (MaxCommitBytes 1) on a slow writer (a
	// slow disk: 200 µs a round): a checkpoint asked for while batches are
	// queued meets them at the writer's select.
	s := openT(t, Options{Dir: dir, Fsync: FsyncInterval, Interval: 10 * time.Second, Window: 10 * time.Second, MaxCommitBytes: 1,
		afterApply: func() { time.Sleep(200 * time.Microsecond) }})
	defer s.Close()
	b := NewBatch()
	b.SetRetained(&Message{Topic: []byte("r/a"), Payload: []byte("ra"), QoS: 1, Retain: true})
	b.SetSession("dev-1", &SessionInfo{ProtocolVersion: 4})
	b.SetSubscription("dev-1", &Subscription{Filter: []byte("q/#"), QoS: 1})
	submitT(t, s, b) // committed: in the window, not in pebble
	if got := s.Overlay().Written; got != 0 {
		t.Fatalf("%d records written to pebble before the checkpoint; the test wants them in the window", got)
	}
	// The queue is submitted right before the call, one batch a message:
	// most still wait in the writer's queue when Checkpoint starts.
	const n = 300
	for i := range n {
		b = NewBatch()
		id := s.NextMessageID()
		b.PutMessage(id, &Message{Topic: []byte("q/x"), Payload: []byte(fmt.Sprint("m", i)), QoS: 1})
		b.Enqueue("dev-1", uint64(i+1), id, 1, false)
		if _, err := s.Submit(b); err != nil {
			t.Fatal(err)
		}
	}
	ck := filepath.Join(t.TempDir(), "nested", "ck1")
	if err := s.Checkpoint(ck); err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	if _, err := os.Stat(filepath.Join(ck, pidFileName)); !os.IsNotExist(err) {
		t.Fatalf("the checkpoint holds %s (%v); it belongs to the process holding a directory", pidFileName, err)
	}
	if sz, err := DirBytes(ck); err != nil || sz == 0 {
		t.Fatalf("DirBytes(checkpoint) = %d, %v", sz, err)
	}

	c := openT(t, Options{Dir: ck, Fsync: FsyncAlways})
	defer c.Close()
	l, _ := loadAll(t, c)
	if len(l.retained) != 1 || string(l.retained[0].Payload) != "ra" {
		t.Fatalf("checkpoint: retained %+v; want r/a = ra", l.retained)
	}
	if len(l.sessions) != 1 || l.sessions[0].ClientID != "dev-1" || len(l.sessions[0].Subs) != 1 {
		t.Fatalf("checkpoint: sessions %+v; want dev-1 with its subscription", l.sessions)
	}
	q, err := c.Queue("dev-1", 0, 2*n, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != n {
		t.Fatalf("checkpoint: %d queued; want %d", len(q), n)
	}
	for i, e := range q {
		if want := fmt.Sprint("m", i); string(e.Message.Payload) != want || e.Pos != uint64(i+1) {
			t.Fatalf("checkpoint: queue[%d] = pos %d %q; want pos %d %q", i, e.Pos, e.Message.Payload, i+1, want)
		}
	}

	// The live store still takes writes, and they are not in the copy.
	b = NewBatch()
	b.SetRetained(&Message{Topic: []byte("r/b"), Payload: []byte("rb"), Retain: true})
	submitT(t, s, b)
	if l, _ := loadAll(t, s); len(l.retained) != 2 {
		t.Fatalf("live store: %d retained after the checkpoint; want 2", len(l.retained))
	}
	if l, _ := loadAll(t, c); len(l.retained) != 1 {
		t.Fatalf("checkpoint: %d retained; a write after it reached the copy", len(l.retained))
	}
}

// Checkpoint refuses a target that holds anything, or is a file, with
// ErrCheckpointExists and leaves it alone; an empty directory is taken.
func TestCheckpointRefusesExistingTarget(t *testing.T) {
	s := openT(t, Options{Fsync: FsyncNone})
	defer s.Close()
	b := NewBatch()
	b.SetRetained(&Message{Topic: []byte("r/a"), Payload: []byte("x"), Retain: true})
	submitT(t, s, b)

	full := t.TempDir()
	keep := filepath.Join(full, "keep.txt")
	if err := os.WriteFile(keep, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := s.Checkpoint(full)
	if !errors.Is(err, ErrCheckpointExists) {
		t.Fatalf("Checkpoint into a non-empty directory: %v; want ErrCheckpointExists", err)
	}
	if got, _ := os.ReadFile(keep); string(got) != "mine" {
		t.Fatalf("the refused target was touched: %q", got)
	}
	t.Logf("refused: %v", err)
	if err := s.Checkpoint(keep); !errors.Is(err, ErrCheckpointExists) {
		t.Fatalf("Checkpoint onto a file: %v; want ErrCheckpointExists", err)
	}

	empty := t.TempDir()
	if err := s.Checkpoint(empty); err != nil {
		t.Fatalf("Checkpoint into an empty directory: %v", err)
	}
	if err := s.Checkpoint(empty); !errors.Is(err, ErrCheckpointExists) {
		t.Fatalf("second Checkpoint into the same directory: %v; want ErrCheckpointExists", err)
	}
	c := openT(t, Options{Dir: empty})
	defer c.Close()
	if l, _ := loadAll(t, c); len(l.retained) != 1 {
		t.Fatalf("checkpoint: %d retained; want 1", len(l.retained))
	}
}
