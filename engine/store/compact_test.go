package store

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// Compact leaves only live records on disk: after 2,000 retained messages
// of 1 KiB are set and all but 10 deleted, the sorted tables hold the 10
// (far less than one copy of the 2,000), and every live record still
// loads.
func TestCompactDropsDeletedRecords(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir, Fsync: FsyncNone})
	rnd := rand.NewChaCha8([32]byte{})
	const n, keep = 2000, 10
	b := NewBatch()
	for i := range n {
		payload := make([]byte, 1024)
		_, _ = rnd.Read(payload) // incompressible
		b.SetRetained(&Message{Topic: []byte(fmt.Sprintf("r/%05d", i)), Payload: payload, Retain: true})
	}
	submitT(t, s, b)
	// Measured closed: pebble deletes obsolete tables in the background,
	// and Close waits for it.
	compactClose := func() int64 {
		if err := s.Compact(); err != nil {
			t.Fatalf("Compact: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		n := sstBytes(t, dir)
		s = openT(t, Options{Dir: dir, Fsync: FsyncNone})
		return n
	}
	full := compactClose()
	if full < n*1024 {
		t.Fatalf("sorted tables hold %d bytes after a compaction of %d KiB of incompressible retained messages; want them there", full, n)
	}
	b = NewBatch()
	for i := keep; i < n; i++ {
		b.DeleteRetained([]byte(fmt.Sprintf("r/%05d", i)))
	}
	submitT(t, s, b)
	after := compactClose()
	if after > full/20 {
		t.Fatalf("sorted tables: %d bytes with all %d, %d after deleting all but %d and compacting; want under %d", full, n, after, keep, full/20)
	}
	if l, _ := loadAll(t, s); len(l.retained) != keep {
		t.Fatalf("after Compact: %d retained; want %d", len(l.retained), keep)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Measured closed: an open store's files come and go under a walk.
	t.Logf("sst bytes: %d with %d retained, %d with %d; directory %d", full, n, after, keep, dirSize(t, dir))
}

// sstBytes is the size of dir's sorted tables (*.sst).
func sstBytes(t testing.TB, dir string) int64 {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, f := range m {
		fi, err := os.Stat(f)
		if os.IsNotExist(err) {
			continue // an obsolete table pebble just deleted
		}
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// The MANIFEST, which gets an edit per flush, is rolled over once it
// passes its bound instead of growing with every flush of a long run.
func TestManifestRolledOver(t *testing.T) {
	dir := t.TempDir()
	const bound = 8 << 10
	s := openT(t, Options{Dir: dir, Fsync: FsyncNone, maxManifest: bound})
	defer s.Close()
	largest := int64(0)
	for i := range 400 {
		b := NewBatch()
		b.SetRetained(&Message{Topic: []byte(fmt.Sprintf("r/%d", i%10)), Payload: []byte("x"), Retain: true})
		submitT(t, s, b)
		s.dbMu.RLock()
		err := s.db.Flush()
		s.dbMu.RUnlock()
		if err != nil {
			t.Fatal(err)
		}
		m, _ := filepath.Glob(filepath.Join(dir, "MANIFEST-*"))
		for _, f := range m {
			if fi, err := os.Stat(f); err == nil && fi.Size() > largest {
				largest = fi.Size()
			}
		}
	}
	// A roll-over happens at the first edit past the bound; each edit is
	// far smaller than the bound.
	if largest > 2*bound {
		t.Fatalf("after 400 flushes a MANIFEST is %d bytes; want it rolled over near %d", largest, bound)
	}
	t.Logf("largest MANIFEST over 400 flushes: %d bytes (bound %d)", largest, bound)
}
