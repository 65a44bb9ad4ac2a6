package store

import (
	"strings"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Pebble writes a commit that asks for no sync into its log writer's
// current 32 KB block, in the process's memory; the block reaches the OS
// when it fills or when a commit asks for a sync. Under a light load
// (--fsync none, or interval between its syncs) a record could then sit
// in the process for minutes, and a process crash (SIGKILL, OOM kill)
// lost it although the window that held it had ended long before.
//
// So every commit of the window asks pebble for a sync, and walFS makes
// that sync of the log a write only: while Store.writeOnly is set, Sync of
// a write-ahead log file does nothing (the data was written to the OS by
// pebble's flush before it syncs). The real syncs (--fsync always, the
// interval's, Close) run with writeOnly clear. A log file that skipped a
// sync is synced for real when pebble closes it (at a log rotation inside
// a write-only commit), so the interval's sync of the new log does not
// leave the old one's tail unsynced.

// walFS wraps pebble's file system; files of the write-ahead log (*.log)
// get the write-only sync. Any goroutine (pebble's).
type walFS struct {
	vfs.FS
	writeOnly *atomic.Bool
}

func (fs walFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".log") {
		return f, err
	}
	return &walFile{File: f, writeOnly: fs.writeOnly}, nil
}

func (fs walFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, category)
	return fs.wrap(name, f, err)
}

func (fs walFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, category)
	return fs.wrap(newname, f, err)
}

func (fs walFS) OpenReadWrite(name string, category vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.OpenReadWrite(name, category, opts...)
	return fs.wrap(name, f, err)
}

func (fs walFS) Unwrap() vfs.FS { return fs.FS }

// walFile is a write-ahead log file whose syncs are skipped while
// writeOnly is set.
type walFile struct {
	vfs.File
	writeOnly *atomic.Bool
	skipped   atomic.Bool // a sync was skipped since the last real one
}

func (f *walFile) skip() bool {
	if f.writeOnly.Load() {
		f.skipped.Store(true)
		return true
	}
	f.skipped.Store(false)
	return false
}

func (f *walFile) Sync() error {
	if f.skip() {
		return nil
	}
	return f.File.Sync()
}

func (f *walFile) SyncData() error {
	if f.skip() {
		return nil
	}
	return f.File.SyncData()
}

func (f *walFile) SyncTo(length int64) (bool, error) {
	if f.skip() {
		return true, nil
	}
	return f.File.SyncTo(length)
}

func (f *walFile) Close() error {
	if f.skipped.Load() {
		if err := f.File.Sync(); err != nil {
			_ = f.File.Close()
			return err
		}
	}
	return f.File.Close()
}
