package store

import (
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// failWrites fails every write-kind file operation while on, like a full or
// failing disk.
type failWrites struct{ on atomic.Bool }

func (f *failWrites) String() string { return "failWrites" }

func (f *failWrites) MaybeError(op errorfs.Op) error {
	if f.on.Load() && op.Kind.ReadOrWrite() == errorfs.OpIsWrite {
		return errorfs.ErrInjected
	}
	return nil
}

func TestIOErrorSurfacesAndRecovers(t *testing.T) {
	dir := t.TempDir()
	inj := &failWrites{}
	var errs atomic.Int32
	var durable atomic.Uint64
	s := openT(t, Options{
		Dir:       dir,
		Fsync:     FsyncAlways,
		fs:        errorfs.Wrap(vfs.Default, inj),
		OnError:   func(error) { errs.Add(1) },
		OnDurable: func(n uint64) { durable.Store(n) },
	})
	b := NewBatch()
	b.SetRetained(&Message{Topic: []byte("before"), Payload: []byte("1")})
	submitT(t, s, b)
	waitFor(t, 5*time.Second, "durable 1", func() bool { return durable.Load() == 1 })
	if err := s.Health(); err != nil {
		t.Fatalf("Health before the failure: %v", err)
	}

	inj.on.Store(true)
	b = NewBatch()
	b.SetRetained(&Message{Topic: []byte("during"), Payload: []byte("2")})
	seq, err := s.Submit(b)
	if err != nil {
		t.Fatal(err)
	}
	// The writer reports, then keeps retrying (each retry reports again).
	waitFor(t, 10*time.Second, "three error reports", func() bool { return errs.Load() >= 3 })
	if s.Health() == nil {
		t.Fatal("Health is nil while writes fail")
	}
	if d := durable.Load(); d >= seq {
		t.Fatalf("durable %d posted for seq %d while the disk fails", d, seq)
	}

	inj.on.Store(false)
	waitFor(t, 10*time.Second, "durable after the disk recovers", func() bool { return durable.Load() >= seq })
	if err := s.Health(); err != nil {
		t.Fatalf("Health after recovery: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = openT(t, Options{Dir: dir})
	defer s.Close()
	l, _ := loadAll(t, s)
	if len(l.retained) != 2 || string(l.retained[1].Topic) != "during" {
		t.Fatalf("after recovery: %d retained, want before and during", len(l.retained))
	}
}

// In interval mode a failed timed commit and sync keeps the window's
// batches and replays them into the reopened store; durability is posted
// only after.
func TestIOErrorIntervalReplaysUnsynced(t *testing.T) {
	dir := t.TempDir()
	inj := &failWrites{}
	var errs atomic.Int32
	var durable atomic.Uint64
	s := openT(t, Options{
		Dir:       dir,
		Fsync:     FsyncInterval,
		Interval:  50 * time.Millisecond,
		fs:        errorfs.Wrap(vfs.Default, inj),
		OnError:   func(error) { errs.Add(1) },
		OnDurable: func(n uint64) { durable.Store(n) },
		// Fail the disk while the batch waits in the commit window for
		// its timed, synced commit.
		afterApply: func() { inj.on.Store(true) },
	})
	b := NewBatch()
	b.SetRetained(&Message{Topic: []byte("unsynced"), Payload: []byte("1")})
	seq, err := s.Submit(b)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "an error report", func() bool { return errs.Load() >= 1 })
	if d := durable.Load(); d >= seq {
		t.Fatalf("durable %d posted though the sync failed", d)
	}
	inj.on.Store(false)
	waitFor(t, 10*time.Second, "durable after recovery", func() bool { return durable.Load() >= seq })
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = openT(t, Options{Dir: dir})
	defer s.Close()
	if l, _ := loadAll(t, s); len(l.retained) != 1 || string(l.retained[0].Topic) != "unsynced" {
		t.Fatalf("retained after recovery: %+v", l.retained)
	}
}

// noSpace fails every write-kind file operation with ENOSPC while on, as a
// full disk does.
type noSpace struct{ on atomic.Bool }

func (f *noSpace) String() string { return "noSpace" }

func (f *noSpace) MaybeError(op errorfs.Op) error {
	if f.on.Load() && op.Kind.ReadOrWrite() == errorfs.OpIsWrite {
		return &os.PathError{Op: "write", Path: op.Path, Err: syscall.ENOSPC}
	}
	return nil
}

// NoSpace tells a full disk from other I/O errors in what Health reports,
// from the first failed commit (a pebble fatal error, whose cause the
// store keeps) through the retries (re-opens).
func TestNoSpaceClassified(t *testing.T) {
	for _, mode := range []Fsync{FsyncAlways, FsyncInterval} {
		full := &noSpace{}
		s := openT(t, Options{Dir: t.TempDir(), Fsync: mode, Interval: 20 * time.Millisecond, fs: errorfs.Wrap(vfs.Default, full)})
		full.on.Store(true)
		b := NewBatch()
		b.SetRetained(&Message{Topic: []byte("x"), Payload: []byte("1")})
		if _, err := s.Submit(b); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "the failure", func() bool { return s.Health() != nil })
		for i := 0; i < 3; i++ { // the first error and the retries'
			if h := s.Health(); h != nil && !NoSpace(h) {
				t.Fatalf("%v: NoSpace(%v) = false on a full disk", mode, h)
			}
			time.Sleep(60 * time.Millisecond)
		}
		full.on.Store(false)
		waitFor(t, 5*time.Second, "recovery", func() bool { return s.Health() == nil })
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	other := &failWrites{}
	s := openT(t, Options{Dir: t.TempDir(), Fsync: FsyncAlways, fs: errorfs.Wrap(vfs.Default, other)})
	defer s.Close()
	other.on.Store(true)
	b := NewBatch()
	b.SetRetained(&Message{Topic: []byte("x"), Payload: []byte("1")})
	if _, err := s.Submit(b); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the failure", func() bool { return s.Health() != nil })
	if h := s.Health(); NoSpace(h) {
		t.Fatalf("NoSpace(%v) = true for an injected I/O error", h)
	}
	other.on.Store(false)
	waitFor(t, 5*time.Second, "recovery", func() bool { return s.Health() == nil })
}
