package store

import (
	"fmt"
	"os"
	"strings"
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

// lossyLogs is a file system whose write-ahead log files, when a sync
// fails, lose what was written since their last good sync, as Linux may
// drop dirty pages after a failed fsync. failNext fails the next sync of
// a log file.
type lossyLogs struct {
	vfs.FS
	failNext atomic.Bool
}

func (fs *lossyLogs) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return &lossyLog{File: f, fs: fs, name: name}, nil
}

func (fs *lossyLogs) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return fs.wrap(name, f, err)
}

func (fs *lossyLogs) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, c)
	return fs.wrap(newname, f, err)
}

type lossyLog struct {
	vfs.File
	fs           *lossyLogs
	name         string
	size, synced int64
}

func (f *lossyLog) Write(p []byte) (int, error) {
	n, err := f.File.Write(p)
	f.size += int64(n)
	return n, err
}

func (f *lossyLog) sync(do func() error) error {
	if f.fs.failNext.CompareAndSwap(true, false) {
		if err := os.Truncate(f.name, f.synced); err != nil {
			return err
		}
		return errorfs.ErrInjected
	}
	if err := do(); err != nil {
		return err
	}
	f.synced = f.size
	return nil
}

func (f *lossyLog) Sync() error     { return f.sync(f.File.Sync) }
func (f *lossyLog) SyncData() error { return f.sync(f.File.SyncData) }
func (f *lossyLog) SyncTo(n int64) (bool, error) {
	return true, f.sync(f.File.Sync)
}

// In interval mode the windows written between two syncs reach the log
// without a sync, and their batches are let go (only what they wrote is
// kept): when the interval's sync fails and the log loses what it had
// not synced, the writer writes those windows again into the reopened
// store, and nothing is lost.
func TestIOErrorIntervalRewritesUnsyncedWindows(t *testing.T) {
	dir := t.TempDir()
	fs := &lossyLogs{FS: vfs.Default}
	var errs atomic.Int32
	var durable atomic.Uint64
	s := openT(t, Options{
		Dir:       dir,
		Fsync:     FsyncInterval,
		Interval:  400 * time.Millisecond,
		Window:    10 * time.Millisecond,
		fs:        fs,
		OnError:   func(error) { errs.Add(1) },
		OnDurable: func(n uint64) { durable.Store(n) },
	})
	var seq uint64
	for i := range 3 {
		b := NewBatch()
		b.SetRetained(&Message{Topic: []byte(fmt.Sprintf("w/%d", i)), Payload: []byte("1")})
		seq = submitT(t, s, b)
		waitFor(t, 5*time.Second, "the window written", func() bool { return s.Overlay().Written >= uint64(i+1) })
	}
	fs.failNext.Store(true)
	waitFor(t, 10*time.Second, "the failed sync reported", func() bool { return errs.Load() >= 1 })
	waitFor(t, 10*time.Second, "durable after the rewrite", func() bool { return durable.Load() >= seq })
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = openT(t, Options{Dir: dir})
	defer s.Close()
	if l, _ := loadAll(t, s); len(l.retained) != 3 {
		t.Fatalf("%d retained after the failed sync; want the 3 written before it", len(l.retained))
	}
}
