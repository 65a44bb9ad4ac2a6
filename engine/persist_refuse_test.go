package engine

import (
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/eclipse/paho.golang/paho"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/engine/store"
)

// diskFault fails every write-kind file operation while on: with ENOSPC
// (a full disk) when full is set, with errorfs's injected error otherwise.
type diskFault struct {
	on   atomic.Bool
	full bool
	fs   store.FS
}

func newDiskFault(full bool) *diskFault {
	f := &diskFault{full: full}
	f.fs = errorfs.Wrap(vfs.Default, f)
	return f
}

func (f *diskFault) String() string { return "diskFault" }

// MaybeError implements errorfs.Injector.
func (f *diskFault) MaybeError(op errorfs.Op) error {
	if !f.on.Load() || op.Kind.ReadOrWrite() != errorfs.OpIsWrite {
		return nil
	}
	if f.full {
		return &os.PathError{Op: "write", Path: op.Path, Err: syscall.ENOSPC}
	}
	return errorfs.ErrInjected
}

// v5Ack sends a v5 PUBLISH on c and returns the PUBACK or PUBREC's
// reason code.
func v5Ack(t *testing.T, c *rawClient, topic, payload string, qos uint8, retain bool, id uint16) codec.ReasonCode {
	t.Helper()
	c.publish(topic, payload, qos, retain, id)
	want := codec.TypePuback
	if qos == 2 {
		want = codec.TypePubrec
	}
	h, body := c.expect(want, 5*time.Second)
	var a codec.Ack
	if err := a.Decode(codec.V5, h, body); err != nil || a.PacketID != id {
		t.Fatalf("%v for %s: %+v %v; want id %d", want, topic, a, err, id)
	}
	return a.Reason
}

// While the store has failed, an MQTT 5 client's QoS 1/2 PUBLISH that would
// have to be stored (retained, or for a persistent session) is refused at
// once with 0x97 Quota exceeded on a full disk and 0x80 Unspecified error
// on another I/O error, and none of it is kept or routed: the online
// subscriber does not get it, a QoS 2 id is not kept for PUBREL, the
// persistent session does not find it after the restart, the retained
// message is not there. A PUBLISH that needs no record is acknowledged
// and routed as usual, QoS 0 flows, /healthz says 503 and /metrics counts
// the refusals; paho.golang sees the same reason code. Once the store works
// again the same PUBLISH is accepted.
func TestPersistStoreFailureV5Refuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		full bool
		want codec.ReasonCode
	}{{"disk full", true, codec.QuotaExceeded}, {"I/O error", false, codec.UnspecifiedError}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			fault := newDiskFault(tc.full)
			b := startHTTPBroker(t, func(o *Options) {
				o.Persistence, o.DataDir, o.Fsync = true, dir, store.FsyncInterval
				o.FsyncInterval = 20 * time.Millisecond
				o.storeFS = fault.fs
			})
			p1 := connected(t, b.MQTTAddr(), "p1", false) // persistent, offline from here
			p1.subscribe(1, codec.Subscription{Filter: []byte("f/#"), QoS: 1})
			p1.c.Close()
			waitFor(t, 5*time.Second, "p1 offline", func() bool { return b.Stats().Connected == 0 })
			live := connected(t, b.MQTTAddr(), "live", true) // clean: nothing of it is stored
			live.subscribe(1, codec.Subscription{Filter: []byte("f/#"), QoS: 0}, codec.Subscription{Filter: []byte("c/#"), QoS: 1})
			pub := dialRaw(t, b.MQTTAddr())
			pub.connect(codec.Connect{Version: codec.V5, ClientID: []byte("pub5"), CleanStart: true, KeepAlive: 60})
			nextLive := func(want string) {
				t.Helper()
				p := live.expectPublish(5 * time.Second)
				if string(p.Payload) != want {
					t.Fatalf("live subscriber got %q; want %q", p.Payload, want)
				}
				if p.QoS > 0 {
					live.write(codec.AppendAck(nil, codec.TypePuback, p.PacketID))
				}
			}

			if rc := v5Ack(t, pub, "f/x", "before", 1, false, 1); rc != codec.Success {
				t.Fatalf("before the failure: reason %v", rc)
			}
			nextLive("before")
			fault.on.Store(true)
			// Interval mode: acknowledged before its commit fails.
			if rc := v5Ack(t, pub, "f/x", "trigger", 1, false, 2); rc != codec.Success {
				t.Fatalf("trigger: reason %v", rc)
			}
			nextLive("trigger")
			waitFor(t, 10*time.Second, "the store to report the failure", func() bool { return b.StoreHealth() != nil })

			// Refused, at once and with the reason.
			if rc := v5Ack(t, pub, "f/x", "refused1", 1, false, 3); rc != tc.want {
				t.Fatalf("QoS 1 for a persistent session: reason %v; want %v", rc, tc.want)
			}
			if rc := v5Ack(t, pub, "f/x", "refused2", 2, false, 4); rc != tc.want {
				t.Fatalf("QoS 2 for a persistent session: PUBREC reason %v; want %v", rc, tc.want)
			}
			rel := codec.Ack{Type: codec.TypePubrel, PacketID: 4}
			pub.write(rel.AppendTo(nil, codec.V5))
			h, body := pub.expect(codec.TypePubcomp, 5*time.Second)
			var comp codec.Ack
			if err := comp.Decode(codec.V5, h, body); err != nil || comp.Reason != codec.PacketIdentifierNotFound {
				t.Fatalf("PUBCOMP for the refused QoS 2 id: %+v %v; want 0x92 (the id was not kept)", comp, err)
			}
			if rc := v5Ack(t, pub, "r/x", "refused3", 1, true, 5); rc != tc.want {
				t.Fatalf("QoS 1 retained: reason %v; want %v", rc, tc.want)
			}
			// Needs no record: taken and routed.
			if rc := v5Ack(t, pub, "c/x", "clean only", 1, false, 6); rc != codec.Success {
				t.Fatalf("QoS 1 for clean subscribers only: reason %v; want success", rc)
			}
			nextLive("clean only") // and not refused1 or refused2 before it: they were not routed
			pub.publish("f/x", "qos0", 0, false, 0)
			nextLive("qos0")

			v := connectV5(t, b.MQTTAddr(), "paho5", nil)
			if r := v.pub(&paho.Publish{Topic: "f/y", QoS: 1, Payload: []byte("refused4")}); r == nil || codec.ReasonCode(r.ReasonCode) != tc.want {
				t.Fatalf("paho.golang QoS 1: response %+v; want reason %v", r, tc.want)
			}

			get := func(path string) (int, string) {
				resp, err := httpClient.Get("http://" + b.HTTPAddr() + path)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(body)
			}
			if code, body := get("/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "store") {
				t.Fatalf("/healthz while failing: %d %s", code, body)
			}
			if _, body := get("/metrics"); !strings.Contains(body, "tinymq_store_refused_publishes_total 4\n") || !strings.Contains(body, "tinymq_store_healthy 0") {
				t.Fatalf("/metrics while failing; want 4 refused:\n%s", grepLines(body, "tinymq_store"))
			}

			fault.on.Store(false)
			waitFor(t, 10*time.Second, "healthy", func() bool { return b.StoreHealth() == nil })
			if rc := v5Ack(t, pub, "f/x", "after", 1, false, 7); rc != codec.Success {
				t.Fatalf("after recovery: reason %v", rc)
			}
			nextLive("after")
			live.expectNothing(200 * time.Millisecond)
			stopBroker(t, b)

			b = persistentBroker(t, dir, store.FsyncInterval, nil)
			if n := b.Stats().Retained; n != 0 {
				t.Fatalf("%d retained after the restart; the refused one was kept", n)
			}
			p1 = dialRaw(t, b.MQTTAddr())
			if ack := p1.connect(codec.Connect{ClientID: []byte("p1"), KeepAlive: 60}); !ack.SessionPresent {
				t.Fatal("session lost")
			}
			for _, want := range []string{"before", "trigger", "after"} {
				p := p1.expectPublish(5 * time.Second)
				if string(p.Payload) != want {
					t.Fatalf("persistent session after the restart: %q; want %q (refused messages are not stored)", p.Payload, want)
				}
				p1.write(codec.AppendAck(nil, codec.TypePuback, p.PacketID))
			}
			p1.expectNothing(300 * time.Millisecond)
		})
	}
}
