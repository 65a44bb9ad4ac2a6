package engine

import (
	"fmt"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/engine/store"
)

// A QoS 1 stream to an online persistent subscriber that acknowledges at
// once writes nothing to the store, in --fsync interval and always (the
// in-flight entries stay lazy and their PUBACKs cancel them; always
// releases the publisher's PUBACK once the subscriber's came:
// persist_lazy.go).
func TestPersistLazyInflightWritesNothing(t *testing.T) {
	for _, mode := range []store.Fsync{store.FsyncInterval, store.FsyncAlways} {
		t.Run(mode.String(), func(t *testing.T) {
			b := persistentBroker(t, t.TempDir(), mode, nil)
			p := b.ps
			seq := func() uint64 { p.flush(); p.mu.Lock(); defer p.mu.Unlock(); return p.lastSeq }
			sub := connected(t, b.MQTTAddr(), "lsub", false)
			sub.subscribe(1, codec.Subscription{Filter: []byte("l/#"), QoS: 1})
			pub := connected(t, b.MQTTAddr(), "lpub", true)
			base := seq()
			const n = 100
			for i := range n {
				pub.publish("l/x", fmt.Sprint(i), 1, false, uint16(i+1))
				m := sub.expectPublish(5 * time.Second)
				if string(m.Payload) != fmt.Sprint(i) {
					t.Fatalf("message %d: %q", i, m.Payload)
				}
				sub.write(codec.AppendAck(nil, codec.TypePuback, m.PacketID))
				pub.expect(codec.TypePuback, 5*time.Second)
			}
			if got := seq() - base; got > n/10 {
				t.Fatalf("%s: %d store batches for %d promptly acknowledged messages; want almost none", mode, got, n)
			}
		})
	}
}

// A lazy in-flight entry still unacknowledged reaches the store: at a
// clean stop (the stop writes it), and after its sweep, so that a crash
// (SIGKILL) then loses it neither. In both cases the subscriber gets the
// message again, with DUP, after the restart.
func TestPersistLazyInflightRestart(t *testing.T) {
	t.Run("stop", func(t *testing.T) {
		dir := t.TempDir()
		b := persistentBroker(t, dir, store.FsyncInterval, func(o *Options) { o.FsyncInterval = time.Hour })
		sub := connected(t, b.MQTTAddr(), "lsub", false)
		sub.subscribe(1, codec.Subscription{Filter: []byte("l/#"), QoS: 1})
		pub := connected(t, b.MQTTAddr(), "lpub", true)
		pub.publish("l/x", "unacked", 1, false, 1)
		pub.expect(codec.TypePuback, 5*time.Second)
		if m := sub.expectPublish(5 * time.Second); string(m.Payload) != "unacked" {
			t.Fatalf("got %q", m.Payload)
		}
		stopBroker(t, b) // at once: before any sweep could write it
		b = persistentBroker(t, dir, store.FsyncInterval, nil)
		expectRedelivered(t, b.MQTTAddr(), "unacked")
	})
	t.Run("sigkill", func(t *testing.T) {
		if testing.Short() {
			t.Skip("-short: builds and kills a broker binary")
		}
		bin := brokerBinary(t)
		dir := t.TempDir()
		addr, httpAddr := freeAddr(t), freeAddr(t)
		start := func() *exec.Cmd {
			return runBroker(t, bin, addr, "--http-addr", httpAddr, "--data-dir", dir, "--fsync", "interval", "--fsync-interval", "1h")
		}
		cmd := start()
		sub := connected(t, addr, "lsub", false)
		sub.subscribe(1, codec.Subscription{Filter: []byte("l/#"), QoS: 1})
		// The session header and subscription are written first.
		waitFor(t, 10*time.Second, "the session written", func() bool {
			return metricValue(t, httpAddr, "tinymq_store_window_written_total") >= 2
		})
		base := metricValue(t, httpAddr, "tinymq_store_window_written_total")
		pub := connected(t, addr, "lpub", true)
		pub.publish("l/x", "unacked", 1, false, 1)
		pub.expect(codec.TypePuback, 5*time.Second)
		if m := sub.expectPublish(5 * time.Second); string(m.Payload) != "unacked" {
			t.Fatalf("got %q", m.Payload)
		}
		// Its message record and in-flight entry, once the sweep wrote
		// them and the window ended.
		waitFor(t, 10*time.Second, "the lazy entry written", func() bool {
			return metricValue(t, httpAddr, "tinymq_store_window_written_total") >= base+2
		})
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		start()
		expectRedelivered(t, addr, "unacked")
	})
}

// expectRedelivered reconnects the persistent subscriber lsub and expects
// its session and the unacknowledged message again, with DUP.
func expectRedelivered(t *testing.T, addr, payload string) {
	t.Helper()
	rc := dialRaw(t, addr)
	if ack := rc.connect(codec.Connect{ClientID: []byte("lsub"), KeepAlive: 60}); !ack.SessionPresent {
		t.Fatal("session present = 0 after the restart")
	}
	m := rc.expectPublish(5 * time.Second)
	if string(m.Payload) != payload || !m.Dup {
		t.Fatalf("after the restart: %q dup=%v; want %q again with DUP", m.Payload, m.Dup, payload)
	}
}

// --fsync always: a PUBACK the publisher got means the message survives a
// crash, also when its copy to an online subscriber is lazy and the
// subscriber never acknowledges it: the acknowledgement waits for the
// sweep to write the copy and for that write's sync. The broker is
// SIGKILLed the moment the publisher has its PUBACK; after the restart
// the subscriber gets the message again, with DUP.
func TestPersistLazyAlwaysAckedSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and kills a broker binary")
	}
	bin := brokerBinary(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	start := func() *exec.Cmd {
		return runBroker(t, bin, addr, "--http-addr=", "--data-dir", dir, "--fsync", "always")
	}
	cmd := start()
	sub := connected(t, addr, "lsub", false)
	sub.subscribe(1, codec.Subscription{Filter: []byte("l/#"), QoS: 1})
	pub := connected(t, addr, "lpub", true)
	pub.publish("l/x", "unacked", 1, false, 1)
	if m := sub.expectPublish(5 * time.Second); string(m.Payload) != "unacked" {
		t.Fatalf("got %q", m.Payload)
	}
	pub.expect(codec.TypePuback, 5*time.Second) // the subscriber never acknowledges: this waited for the disk
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	start()
	expectRedelivered(t, addr, "unacked")
}
