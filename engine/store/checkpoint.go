package store

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// A checkpoint is a consistent copy of the open store in a new directory,
// taken while the broker runs (pebble's DB.Checkpoint: sorted tables are
// hard-linked when the target is on the same file system, copied
// otherwise; the MANIFEST, OPTIONS and write-ahead logs are copied, and
// every file and the directory are synced before it returns).
//
// What it holds: every batch Submit accepted before the call. The writer
// first applies the batches still queued for it and writes its commit
// window to pebble (flushSubmitted), so records the window held in memory,
// and under --fsync interval not yet synced in the live directory, are in
// the copy (the live log was written to the OS, which is what pebble copies).
//
// The format-version record is a pebble key, so it travels with the data;
// the pid file (tinymq.pid) and pebble's LOCK are not copied: they belong
// to the process that holds a directory, and Open writes them anew. So
// `tinymq --data-dir CHECKPOINT` starts on the copy as on the original.

// ErrCheckpointExists is Checkpoint's answer for a target directory that
// exists and is not empty (or is not a directory).
var ErrCheckpointExists = errors.New("store: checkpoint target exists")

// Checkpoint writes a consistent copy of the store into dir, which must not
// exist or be an empty directory (it and its parents are created). It
// refuses a failing store (Health): the batches a failure holds for replay
// are in no directory yet. Blocks on I/O for as long as the copy takes
// (linking is fast; the write-ahead logs, at most a few MiB, are copied):
// call it from a command or an HTTP request's goroutine, never from a loop
// or the writer. Any other goroutine; one at a time is the caller's
// business (two into the same dir: one gets ErrCheckpointExists).
func (s *Store) Checkpoint(dir string) error {
	if dir == "" {
		return errors.New("store: checkpoint: no directory")
	}
	if err := emptyTarget(s.fs, dir); err != nil {
		return err
	}
	s.flushSubmitted()
	if err := s.Health(); err != nil {
		return fmt.Errorf("store: checkpoint refused while the store fails: %w", err)
	}
	s.dbMu.RLock() // the db is not replaced under the copy; Close waits for it
	defer s.dbMu.RUnlock()
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ErrClosed
	}
	// Pebble creates dir and refuses one that exists: an empty one is
	// removed first (Remove fails on a directory that is not empty).
	if err := s.fs.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s: %v", ErrCheckpointExists, dir, err)
	}
	if err := s.db.Checkpoint(dir); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s", ErrCheckpointExists, dir)
		}
		return fmt.Errorf("store: checkpoint %s: %w", dir, err)
	}
	return nil
}

// emptyTarget returns nil when dir does not exist or is an empty
// directory, ErrCheckpointExists when it holds anything or is a file.
func emptyTarget(fsys vfs.FS, dir string) error {
	fi, err := fsys.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: checkpoint %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: %s is a file", ErrCheckpointExists, dir)
	}
	ents, err := fsys.List(dir)
	if err != nil {
		return fmt.Errorf("store: checkpoint %s: %w", dir, err)
	}
	if len(ents) > 0 {
		return fmt.Errorf("%w: %s is not empty (%d entries); choose a new directory", ErrCheckpointExists, dir, len(ents))
	}
	return nil
}

// DirBytes sums the sizes of the regular files under dir (a checkpoint's,
// or a closed store's). Files that vanish during the walk (an open store's
// obsolete tables) are skipped. Any goroutine; blocks on I/O.
func DirBytes(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		n += fi.Size()
		return nil
	})
	return n, err
}
