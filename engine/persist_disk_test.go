package engine

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/engine/store"
)

// TestPersistDiskFigures measures the data directory's bytes per retained
// message and per queued message, through a real broker and real sockets:
// N retained QoS 1 PUBLISHes of 64-byte payloads on sensors/<i>/temp; N
// messages queued one each for 100 offline persistent sessions; and N
// queue entries of N/100 messages fanned out to the same 100 sessions
// (each message stored once). Each shape gets a fresh directory, measured
// after a clean Stop (pebble flushes its memtable and leaves its log) and
// again after store.Compact (deleted and overwritten records gone); a
// broker restarted on it must find all N, so the figure is of state that
// is really there. Payloads are random (pebble compresses its tables:
// zeros would flatter it). Skipped unless TINYMQ_DISK_FIGURES=1 (it
// publishes 3N messages); TINYMQ_DISK_N sets N (default 100,000).
// docs/durability.md "On disk" has the figures.
func TestPersistDiskFigures(t *testing.T) {
	if os.Getenv("TINYMQ_DISK_FIGURES") != "1" {
		t.Skip("TINYMQ_DISK_FIGURES=1 measures the data directory's bytes per retained and queued message")
	}
	n := 100000
	if x, err := strconv.Atoi(os.Getenv("TINYMQ_DISK_N")); err == nil && x >= 100 {
		n = x
	}
	const sessions = 100
	n -= n % sessions
	rnd := rand.NewChaCha8([32]byte{1})
	payload := func() string {
		p := make([]byte, 64)
		_, _ = rnd.Read(p)
		return string(p)
	}
	type shape struct {
		name, unit string
		subscribe  func(s int) string                      // the filter of offline session s ("" for none)
		topic      func(i int) (topic string, retain bool) // the i-th PUBLISH
		msgs       int                                     // PUBLISHes
		check      func(sn Snapshot) error
	}
	shapes := []shape{
		{name: "retained", unit: "retained message", msgs: n,
			topic: func(i int) (string, bool) { return fmt.Sprintf("sensors/%d/temp", i), true },
			check: func(sn Snapshot) error {
				if sn.Retained != n {
					return fmt.Errorf("%d retained; want %d", sn.Retained, n)
				}
				return nil
			}},
		{name: "queued, one session each", unit: "queued message", msgs: n,
			subscribe: func(s int) string { return fmt.Sprintf("sensors/%d/#", s) },
			topic:     func(i int) (string, bool) { return fmt.Sprintf("sensors/%d/temp", i%sessions), false },
			check: func(sn Snapshot) error {
				if sn.SessionsOffline != sessions || sn.Queued != n {
					return fmt.Errorf("%d offline sessions, %d queued; want %d, %d", sn.SessionsOffline, sn.Queued, sessions, n)
				}
				return nil
			}},
		{name: "queued, fanned out to 100 sessions", unit: "queue entry", msgs: n / sessions,
			subscribe: func(int) string { return "sensors/#" },
			topic:     func(i int) (string, bool) { return fmt.Sprintf("sensors/%d/temp", i), false },
			check: func(sn Snapshot) error {
				if sn.SessionsOffline != sessions || sn.Queued != n {
					return fmt.Errorf("%d offline sessions, %d queued; want %d, %d", sessions, sn.Queued, sessions, n)
				}
				return nil
			}},
	}
	edit := func(o *Options) { o.MaxQueuedMsgs = n/sessions + 10 }
	for _, sh := range shapes {
		dir := filepath.Join(t.TempDir(), "data")
		b := persistentBroker(t, dir, store.FsyncInterval, edit)
		stopBroker(t, b)
		empty := dataDirBytes(t, dir)

		b = persistentBroker(t, dir, store.FsyncInterval, edit)
		if sh.subscribe != nil {
			for s := range sessions {
				c := connected(t, b.MQTTAddr(), fmt.Sprintf("dev-%03d", s), false)
				c.subscribe(1, codec.Subscription{Filter: []byte(sh.subscribe(s)), QoS: 1})
				c.c.Close()
			}
			waitFor(t, 10*time.Second, "every session offline", func() bool { return b.Stats().Connected == 0 })
		}
		pub := connected(t, b.MQTTAddr(), "pub", true)
		t0 := time.Now()
		publishAcked(t, pub, sh.msgs, func(i int) codec.Publish {
			tp, ret := sh.topic(i)
			return codec.Publish{Topic: []byte(tp), Payload: []byte(payload()), QoS: 1, Retain: ret}
		})
		took := time.Since(t0)
		if err := sh.check(b.Snapshot()); err != nil {
			t.Fatalf("%s, before the stop: %v", sh.name, err)
		}
		stopBroker(t, b)
		stopped := dataDirBytes(t, dir)

		st, err := store.Open(store.Options{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		t1 := time.Now()
		if err := st.Compact(); err != nil {
			t.Fatal(err)
		}
		compactTook := time.Since(t1)
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		compacted := dataDirBytes(t, dir)

		b = persistentBroker(t, dir, store.FsyncInterval, edit)
		if err := sh.check(b.Snapshot()); err != nil {
			t.Fatalf("%s, after the restart: %v", sh.name, err)
		}
		stopBroker(t, b)
		per := func(size int64) float64 { return float64(size-empty) / float64(n) }
		t.Logf("%s: %d PUBLISHes in %v; empty store %d B; after a clean stop %d B (%.1f B per %s); after Compact (%v) %d B (%.1f B per %s)",
			sh.name, sh.msgs, took.Round(time.Millisecond), empty, stopped, per(stopped), sh.unit,
			compactTook.Round(time.Millisecond), compacted, per(compacted), sh.unit)
	}
}

// publishAcked sends count QoS 1 PUBLISHes made by mk, up to 1,000 in
// flight, and waits for every PUBACK.
func publishAcked(t *testing.T, c *rawClient, count int, mk func(i int) codec.Publish) {
	t.Helper()
	const window = 1000
	var buf []byte
	for i := 0; i < count; i += window {
		k := min(window, count-i)
		buf = buf[:0]
		for j := range k {
			p := mk(i + j)
			p.PacketID = uint16(j + 1)
			buf = p.AppendTo(buf, c.ver)
		}
		c.write(buf)
		for range k {
			c.expect(codec.TypePuback, 10*time.Second)
		}
	}
}

// dataDirBytes is the size of the regular files in dir, as du -sb counts
// them (without the directory entries).
func dataDirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
