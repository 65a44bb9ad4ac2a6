package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/engine/store"
)

// corruptDir writes retained messages w/0..w/9, one acknowledged PUBLISH
// at a time with --fsync always, and returns the stopped broker's data
// directory and its write-ahead log.
func corruptDir(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	b := persistentBroker(t, dir, store.FsyncAlways, nil)
	pub := connected(t, b.MQTTAddr(), "pub", true)
	for i := range 10 {
		pub.publish(fmt.Sprintf("w/%d", i), fmt.Sprintf("value-%d", i), 1, true, uint16(i+1))
		pub.expect(codec.TypePuback, 5*time.Second)
	}
	stopBroker(t, b)
	return dir, lastWAL(t, dir)
}

// lastWAL is the newest write-ahead log in dir (pebble names them by a
// growing number; older ones may stay for recycling).
func lastWAL(t *testing.T, dir string) string {
	t.Helper()
	logs, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil || len(logs) == 0 {
		t.Fatalf("no write-ahead log in %s (%v)", dir, err)
	}
	sort.Strings(logs)
	return logs[len(logs)-1]
}

// retainedPrefix checks that the retained messages recovered are w/0 to
// w/n-1 for some n (the records up to the last good one) and returns n.
func retainedPrefix(t *testing.T, b *Broker) int {
	t.Helper()
	n := b.Stats().Retained
	for i := range n {
		m, ok := b.retained.Get([]byte(fmt.Sprintf("w/%d", i)))
		if !ok || string(m.payload) != fmt.Sprintf("value-%d", i) {
			t.Fatalf("%d retained, but w/%d is %v: not the records up to the last good one", n, i, m)
		}
	}
	return n
}

// A write-ahead log whose tail was cut in the middle of a record (a crash
// during the write) recovers to the last whole record, and the recovery
// log says where pebble stopped reading.
func TestPersistCorruptTruncatedWAL(t *testing.T) {
	dir, wal := corruptDir(t)
	fi, err := os.Stat(wal)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(wal, fi.Size()-20); err != nil { // into the last record
		t.Fatal(err)
	}
	b := persistentBroker(t, dir, store.FsyncAlways, nil)
	n := retainedPrefix(t, b)
	if n != 9 {
		t.Fatalf("%d retained after cutting the last record; want the 9 before it", n)
	}
	replay := b.ps.st.WALReplay()
	if len(replay) == 0 || !strings.Contains(replay[0], "stopped reading at offset") {
		t.Fatalf("recovery does not say where it stopped: %q", replay)
	}
	t.Logf("cut %d of %d bytes: %d of 10 retained recovered; %s", 20, fi.Size(), n, replay[0])
}

// A flipped bit in the last record (a torn or rotten final write): the
// record fails its checksum and recovery ends at the record before it.
func TestPersistCorruptBitFlippedTail(t *testing.T) {
	dir, wal := corruptDir(t)
	raw, err := os.ReadFile(wal)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)-20] ^= 0x10
	if err := os.WriteFile(wal, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	b := persistentBroker(t, dir, store.FsyncAlways, nil)
	n := retainedPrefix(t, b)
	if n != 9 {
		t.Fatalf("%d retained after corrupting the last record; want the 9 before it", n)
	}
	t.Logf("bit flipped %d bytes from the end: %d of 10 retained recovered; %q", 20, n, b.ps.st.WALReplay())
}

// A flipped bit in a record of an earlier 32 KiB block of the log, with
// good records after it, is corruption, not a torn tail: the broker
// refuses to start, naming the directory, rather than dropping what was
// acknowledged after it. (Inside the last block pebble cannot tell the two
// apart: see TestPersistCorruptBitFlippedTail and docs/durability.md.)
func TestPersistCorruptEarlyBlockRefused(t *testing.T) {
	dir := t.TempDir()
	b := persistentBroker(t, dir, store.FsyncAlways, nil)
	pub := connected(t, b.MQTTAddr(), "pub", true)
	big := strings.Repeat("x", 1024)
	for i := range 100 {
		pub.publish(fmt.Sprintf("w/%d", i), big, 1, true, uint16(i+1))
		pub.expect(codec.TypePuback, 5*time.Second)
	}
	stopBroker(t, b)
	wal := lastWAL(t, dir)
	raw, err := os.ReadFile(wal)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) < 3*32<<10 {
		t.Fatalf("log of %d bytes; want several 32 KiB blocks", len(raw))
	}
	raw[2000] ^= 0x10 // a payload byte of an early record in block 0
	if err := os.WriteFile(wal, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	o := DefaultOptions()
	o.MQTTAddr, o.HTTPAddr, o.Persistence, o.DataDir = "127.0.0.1:0", "", true, dir
	b, err = New(o)
	if err == nil {
		n := b.Stats().Retained
		_ = b.closeStore()
		t.Fatalf("started on a log corrupt in its first block (%d of 100 retained)", n)
	}
	if !strings.Contains(err.Error(), dir) {
		t.Fatalf("error does not name the directory: %v", err)
	}
	t.Logf("refused: %v", err)
}
