package engine

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/eclipse/paho.golang/paho"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/engine/store"
)

// persistentBroker starts a broker with persistence on in dir.
func persistentBroker(t testing.TB, dir string, fsync store.Fsync, edit func(*Options)) *Broker {
	t.Helper()
	return startBroker(t, func(o *Options) {
		o.Persistence, o.DataDir, o.Fsync = true, dir, fsync
		o.FsyncInterval = 50 * time.Millisecond
		if edit != nil {
			edit(o)
		}
	})
}

// stopBroker stops b now (a SIGTERM does the same in cmd/tinymq); the
// test's cleanup Stop is then a no-op.
func stopBroker(t testing.TB, b *Broker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}

// Retained messages survive a restart: set, replaced and deleted ones as
// they ended, with their v5 properties; one whose message expiry passed
// while the broker was down is gone.
func TestPersistRetainedRestart(t *testing.T) {
	dir := t.TempDir()
	b := persistentBroker(t, dir, store.FsyncInterval, nil)
	pub := connected(t, b.MQTTAddr(), "pub", true)
	pub.publish("r/a", "first", 1, true, 1)
	pub.expect(codec.TypePuback, 5*time.Second)
	pub.publish("r/a", "second", 1, true, 2) // replaces
	pub.expect(codec.TypePuback, 5*time.Second)
	pub.publish("r/b", "gone", 1, true, 3)
	pub.expect(codec.TypePuback, 5*time.Second)
	pub.publish("r/b", "", 1, true, 4) // deletes
	pub.expect(codec.TypePuback, 5*time.Second)
	pub.publish("r/c", "qos0", 0, true, 0)
	v := connectV5(t, b.MQTTAddr(), "pub5", nil)
	v.pub(&paho.Publish{Topic: "r/v5", QoS: 1, Retain: true, Payload: []byte("props"),
		Properties: &paho.PublishProperties{ContentType: "text/plain", User: paho.UserProperties{{Key: "k", Value: "v"}}}})
	v.pub(&paho.Publish{Topic: "r/short", QoS: 1, Retain: true, Payload: []byte("expires"),
		Properties: &paho.PublishProperties{MessageExpiry: u32(1)}})
	expired := time.Now().Add(2100 * time.Millisecond)
	waitFor(t, 5*time.Second, "4 retained", func() bool { return b.Stats().Retained == 4 })
	stopBroker(t, b)
	for time.Now().Before(expired) { // the message expiry runs on while the broker is down
		time.Sleep(20 * time.Millisecond)
	}

	b = persistentBroker(t, dir, store.FsyncInterval, nil)
	if n := b.Stats().Retained; n != 3 {
		t.Fatalf("%d retained after restart; want 3 (r/a, r/c, r/v5)", n)
	}
	sub := connectV5(t, b.MQTTAddr(), "sub5", nil)
	sub.sub("r/#", 1, nil)
	got := map[string]*paho.Publish{}
	for range 3 {
		m := sub.next(5 * time.Second)
		got[m.Topic] = m
	}
	sub.none(300 * time.Millisecond)
	if m := got["r/a"]; m == nil || string(m.Payload) != "second" || !m.Retain {
		t.Fatalf("r/a: %+v", m)
	}
	if m := got["r/c"]; m == nil || string(m.Payload) != "qos0" {
		t.Fatalf("r/c: %+v", m)
	}
	m := got["r/v5"]
	if m == nil || string(m.Payload) != "props" || m.Properties == nil || m.Properties.ContentType != "text/plain" ||
		m.Properties.User.Get("k") != "v" {
		t.Fatalf("r/v5 lost its properties: %+v", m)
	}
}

// A 3.1.1 persistent session survives a restart: session present, its
// subscription, the messages queued while it was offline (in order), the
// message in flight (re-sent with DUP and its packet id), and an inbound
// QoS 2 id (the re-sent PUBLISH is not delivered twice).
func TestPersistSessionRestart(t *testing.T) {
	dir := t.TempDir()
	b := persistentBroker(t, dir, store.FsyncAlways, nil)
	p1 := dialRaw(t, b.MQTTAddr())
	p1.connect(codec.Connect{ClientID: []byte("p1"), KeepAlive: 60})
	p1.subscribe(1, codec.Subscription{Filter: []byte("q/#"), QoS: 2})
	pub := connected(t, b.MQTTAddr(), "pub", true)
	pub.publish("q/x", "inflight", 1, false, 1)
	pub.expect(codec.TypePuback, 5*time.Second)
	first := p1.expectPublish(5 * time.Second) // not acknowledged: stays in flight
	// p1 publishes QoS 2 and gets PUBREC, but sends no PUBREL yet.
	p1.publish("other/x", "exactly-once", 2, false, 7)
	p1.expect(codec.TypePubrec, 5*time.Second)
	p1.c.Close()
	waitFor(t, 5*time.Second, "p1 offline", func() bool { return b.Stats().Connected == 1 })
	for i := range 5 {
		pub.publish("q/x", fmt.Sprint(i), 1, false, uint16(10+i))
		pub.expect(codec.TypePuback, 5*time.Second)
	}
	stopBroker(t, b)

	b = persistentBroker(t, dir, store.FsyncAlways, nil)
	if st := b.Stats(); st.Subscriptions != 1 {
		t.Fatalf("%d subscriptions after restart; want 1", st.Subscriptions)
	}
	watch := connected(t, b.MQTTAddr(), "watch", true)
	watch.subscribe(1, codec.Subscription{Filter: []byte("other/#"), QoS: 2})
	p1 = dialRaw(t, b.MQTTAddr())
	if ack := p1.connect(codec.Connect{ClientID: []byte("p1"), KeepAlive: 60}); !ack.SessionPresent {
		t.Fatal("session present = 0 after restart; want 1")
	}
	again := p1.expectPublish(5 * time.Second)
	if !again.Dup || again.PacketID != first.PacketID || string(again.Payload) != "inflight" {
		t.Fatalf("in-flight message re-sent as %+v; want DUP, id %d", again, first.PacketID)
	}
	p1.write(codec.AppendAck(nil, codec.TypePuback, again.PacketID))
	for i := range 5 {
		p := p1.expectPublish(5 * time.Second)
		if string(p.Payload) != fmt.Sprint(i) || p.QoS != 1 {
			t.Fatalf("queued message %d: %q qos %d", i, p.Payload, p.QoS)
		}
		p1.write(codec.AppendAck(nil, codec.TypePuback, p.PacketID))
	}
	// The QoS 2 PUBLISH re-sent after the restart is acknowledged but not
	// routed again; PUBREL completes it.
	dup := codec.Publish{Topic: []byte("other/x"), Payload: []byte("exactly-once"), QoS: 2, Dup: true, PacketID: 7}
	p1.write(dup.AppendTo(nil, codec.V311))
	p1.expect(codec.TypePubrec, 5*time.Second)
	p1.write(codec.AppendAck(nil, codec.TypePubrel, 7))
	p1.expect(codec.TypePubcomp, 5*time.Second)
	watch.expectNothing(300 * time.Millisecond)
	p1.expectNothing(100 * time.Millisecond)

	// Everything was acknowledged: after another restart nothing is left
	// to deliver, but the session and its subscription are.
	p1.write([]byte{0xe0, 0})
	p1.expectClosed(5 * time.Second)
	waitFor(t, 5*time.Second, "p1 offline", func() bool { return b.Stats().Connected == 1 })
	stopBroker(t, b)
	b = persistentBroker(t, dir, store.FsyncAlways, nil)
	p1 = dialRaw(t, b.MQTTAddr())
	if ack := p1.connect(codec.Connect{ClientID: []byte("p1"), KeepAlive: 60}); !ack.SessionPresent {
		t.Fatal("session present = 0 after the second restart")
	}
	p1.expectNothing(300 * time.Millisecond)
	pub = connected(t, b.MQTTAddr(), "pub", true)
	pub.publish("q/y", "live", 1, false, 1)
	if p := p1.expectPublish(5 * time.Second); string(p.Payload) != "live" {
		t.Fatalf("after the second restart: %q", p.Payload)
	}
}

// A clean session over a stored one discards it in the store too; clean
// sessions write nothing at all.
func TestPersistCleanSessionWritesNothing(t *testing.T) {
	dir := t.TempDir()
	b := persistentBroker(t, dir, store.FsyncAlways, nil)
	p := b.ps
	seq := func() uint64 { p.flush(); p.mu.Lock(); defer p.mu.Unlock(); return p.lastSeq }
	base := seq()
	sub := connected(t, b.MQTTAddr(), "csub", true)
	sub.subscribe(1, codec.Subscription{Filter: []byte("c/#"), QoS: 1})
	pub := connected(t, b.MQTTAddr(), "cpub", true)
	for i := range 20 {
		pub.publish("c/x", "m", uint8(i%3), false, uint16(i+1))
		if i%3 > 0 {
			pub.expect(map[int]codec.Type{1: codec.TypePuback, 2: codec.TypePubrec}[i%3], 5*time.Second)
		}
	}
	sub.c.Close()
	pub.c.Close()
	waitFor(t, 5*time.Second, "clients gone", func() bool { return b.Stats().Connected == 0 })
	if got := seq(); got != base {
		t.Fatalf("clean-session traffic submitted store batches up to %d (from %d)", got, base)
	}

	// A persistent session, then a clean connect over it: gone after a
	// restart.
	p1 := connected(t, b.MQTTAddr(), "p1", false)
	p1.subscribe(1, codec.Subscription{Filter: []byte("d/#"), QoS: 1})
	p1.c.Close()
	waitFor(t, 5*time.Second, "p1 offline", func() bool { return b.Stats().Connected == 0 })
	p1 = connected(t, b.MQTTAddr(), "p1", true)
	p1.c.Close()
	waitFor(t, 5*time.Second, "p1 gone", func() bool { return b.Stats().Connected == 0 })
	stopBroker(t, b)
	b = persistentBroker(t, dir, store.FsyncAlways, nil)
	if st := b.Stats(); st.Subscriptions != 0 {
		t.Fatalf("%d subscriptions after restart; want 0", st.Subscriptions)
	}
	rc := dialRaw(t, b.MQTTAddr())
	if ack := rc.connect(codec.Connect{ClientID: []byte("p1"), KeepAlive: 60}); ack.SessionPresent {
		t.Fatal("discarded session came back")
	}
}

// One message queued for many offline sessions is one message record.
func TestPersistMessageStoredOnce(t *testing.T) {
	dir := t.TempDir()
	b := persistentBroker(t, dir, store.FsyncNone, nil)
	const n = 20
	for i := range n {
		c := connected(t, b.MQTTAddr(), fmt.Sprintf("s%d", i), false)
		c.subscribe(1, codec.Subscription{Filter: []byte("fan/#"), QoS: 1})
		c.c.Close()
	}
	waitFor(t, 5*time.Second, "offline", func() bool { return b.Stats().Connected == 0 })
	pub := connected(t, b.MQTTAddr(), "pub", true)
	pub.publish("fan/x", "one", 1, false, 1)
	pub.expect(codec.TypePuback, 5*time.Second)
	b.ps.flush()
	waitFor(t, 5*time.Second, "committed", func() bool {
		q, _ := b.ps.st.Queue(fmt.Sprintf("s%d", n-1), 0, 10, nil)
		return len(q) == 1
	})
	ids := map[uint64]bool{}
	for i := range n {
		q, err := b.ps.st.Queue(fmt.Sprintf("s%d", i), 0, 10, nil)
		if err != nil || len(q) != 1 || string(q[0].Message.Payload) != "one" {
			t.Fatalf("queue of s%d: %+v %v", i, q, err)
		}
		ids[q[0].MsgID] = true
	}
	if len(ids) != 1 {
		t.Fatalf("%d message records for one PUBLISH to %d sessions; want 1", len(ids), n)
	}
}

// MQTT 5: a session with an expiry interval survives a restart with its
// subscription options and identifier; one whose expiry passed while the
// broker was down is gone.
func TestPersistV5SessionRestart(t *testing.T) {
	dir := t.TempDir()
	b := persistentBroker(t, dir, store.FsyncInterval, nil)
	cp := &paho.Connect{CleanStart: true, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(300)}}
	v := connectV5(t, b.MQTTAddr(), "v5p", cp)
	v.sub("v5/#", 1, &paho.SubscribeProperties{SubscriptionIdentifier: func() *int { i := 42; return &i }()},
		func(o *paho.SubscribeOptions) { o.NoLocal = true })
	short := connectV5(t, b.MQTTAddr(), "v5short", &paho.Connect{CleanStart: true,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(1)}})
	short.sub("v5/#", 1, nil)
	_ = v.c.Disconnect(&paho.Disconnect{})
	_ = short.c.Disconnect(&paho.Disconnect{})
	expired := time.Now().Add(2100 * time.Millisecond)
	waitFor(t, 5*time.Second, "offline", func() bool { return b.Stats().Connected == 0 })
	pub := connectV5(t, b.MQTTAddr(), "v5pub", nil)
	pub.pub(&paho.Publish{Topic: "v5/a", QoS: 1, Payload: []byte("while away")})
	stopBroker(t, b)
	for time.Now().Before(expired) {
		time.Sleep(20 * time.Millisecond)
	}

	b = persistentBroker(t, dir, store.FsyncInterval, nil)
	if st := b.Stats(); st.Subscriptions != 1 {
		t.Fatalf("%d subscriptions after restart; want 1 (the expired session's is gone)", st.Subscriptions)
	}
	cp = &paho.Connect{CleanStart: false, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(300)}}
	v = connectV5(t, b.MQTTAddr(), "v5p", cp)
	if !v.ack.SessionPresent {
		t.Fatal("session present = 0 after restart")
	}
	m := v.next(5 * time.Second)
	if string(m.Payload) != "while away" || m.Properties == nil || m.Properties.SubscriptionIdentifier == nil ||
		*m.Properties.SubscriptionIdentifier != 42 {
		t.Fatalf("queued message %q props %+v; want subscription identifier 42", m.Payload, m.Properties)
	}
	v.pub(&paho.Publish{Topic: "v5/own", QoS: 1, Payload: []byte("no local")})
	v.none(300 * time.Millisecond) // No Local survived the restart
	s := connectV5(t, b.MQTTAddr(), "v5short", &paho.Connect{CleanStart: false})
	if s.ack.SessionPresent {
		t.Fatal("the expired session came back")
	}
}

// With --fsync always a PUBACK means the message is committed to every
// session queue it went to: the store has it when the publisher hears
// back.
func TestPersistFsyncAlwaysAckAfterDurable(t *testing.T) {
	dir := t.TempDir()
	b := persistentBroker(t, dir, store.FsyncAlways, nil)
	p1 := connected(t, b.MQTTAddr(), "p1", false)
	p1.subscribe(1, codec.Subscription{Filter: []byte("a/#"), QoS: 2})
	p1.c.Close()
	waitFor(t, 5*time.Second, "p1 offline", func() bool { return b.Stats().Connected == 0 })
	pub := connected(t, b.MQTTAddr(), "pub", true)
	for i := range 20 {
		qos := uint8(1 + i%2)
		pub.publish("a/x", fmt.Sprint(i), qos, false, uint16(i+1))
		want := codec.TypePuback
		if qos == 2 {
			want = codec.TypePubrec
		}
		h, body := pub.expect(want, 5*time.Second)
		var a codec.Ack
		if err := a.Decode(codec.V311, h, body); err != nil || a.PacketID != uint16(i+1) {
			t.Fatalf("ack %d: %+v %v", i, a, err)
		}
		q, err := b.ps.st.Queue("p1", 0, 100, nil)
		if err != nil || len(q) != i+1 || string(q[i].Message.Payload) != fmt.Sprint(i) {
			t.Fatalf("acknowledged message %d not in the store: %d entries, %v", i, len(q), err)
		}
		if qos == 2 {
			pub.write(codec.AppendAck(nil, codec.TypePubrel, uint16(i+1)))
			pub.expect(codec.TypePubcomp, 5*time.Second)
		}
	}
	if d, c := b.ps.st.Durable(), b.ps.st.Committed(); d != c {
		t.Logf("durable %d, committed %d", d, c)
	}
}

// Acknowledgements held for durability keep their order on a connection:
// a PUBLISH that wrote nothing is acknowledged after an earlier one still
// waiting.
func TestPersistHeldAcksInOrder(t *testing.T) {
	dir := t.TempDir()
	b := persistentBroker(t, dir, store.FsyncAlways, nil)
	p1 := connected(t, b.MQTTAddr(), "p1", false)
	p1.subscribe(1, codec.Subscription{Filter: []byte("stored/#"), QoS: 1})
	p1.c.Close()
	waitFor(t, 5*time.Second, "p1 offline", func() bool { return b.Stats().Connected == 0 })
	pub := connected(t, b.MQTTAddr(), "pub", true)
	var raw []byte
	for i := range 50 {
		topic := "stored/x"
		if i%2 == 1 {
			topic = "nobody/x" // writes no record
		}
		p := codec.Publish{Topic: []byte(topic), Payload: []byte("m"), QoS: 1, PacketID: uint16(i + 1)}
		raw = p.AppendTo(raw, codec.V311)
	}
	pub.write(raw) // one read on the broker: the acks are held together
	for i := range 50 {
		h, body := pub.expect(codec.TypePuback, 5*time.Second)
		var a codec.Ack
		if err := a.Decode(codec.V311, h, body); err != nil || a.PacketID != uint16(i+1) {
			t.Fatalf("PUBACK %d has id %d (%v); want them in order", i+1, a.PacketID, err)
		}
	}
}

// A store that fails (every write refused, like a full disk) holds QoS 1
// acknowledgements, shows in /healthz and /metrics, and once it works
// again the held acknowledgement goes out; QoS 0 routing never stops.
func TestPersistStoreFailureHoldsAcks(t *testing.T) {
	dir := t.TempDir()
	inj := newFailingFS()
	b := startHTTPBroker(t, func(o *Options) {
		o.Persistence, o.DataDir, o.Fsync = true, dir, store.FsyncInterval
		o.FsyncInterval = 20 * time.Millisecond
		o.storeFS = inj.fs
	})
	p1 := connected(t, b.MQTTAddr(), "p1", false)
	p1.subscribe(1, codec.Subscription{Filter: []byte("f/#"), QoS: 1})
	live := connected(t, b.MQTTAddr(), "live", true)
	live.subscribe(1, codec.Subscription{Filter: []byte("f/#"), QoS: 0})
	p1.c.Close()
	waitFor(t, 5*time.Second, "p1 offline", func() bool { return b.Stats().Connected == 1 })
	pub := connected(t, b.MQTTAddr(), "pub", true)
	pub.publish("f/x", "before", 1, false, 1)
	pub.expect(codec.TypePuback, 5*time.Second)
	live.expectPublish(5 * time.Second)

	inj.on.Store(true)
	pub.publish("f/x", "trigger", 1, false, 2) // interval mode: acknowledged, but its commit fails
	pub.expect(codec.TypePuback, 5*time.Second)
	live.expectPublish(5 * time.Second)
	waitFor(t, 10*time.Second, "the store to report the failure", func() bool { return b.StoreHealth() != nil })
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + b.HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get("/healthz"); code != 503 || !strings.Contains(body, "store") {
		t.Fatalf("/healthz while failing: %d %s", code, body)
	}
	if _, body := get("/metrics"); !strings.Contains(body, "tinymq_store_healthy 0") || strings.Contains(body, "tinymq_store_errors_total 0\n") {
		t.Fatalf("/metrics while failing does not show it:\n%s", grepLines(body, "tinymq_store"))
	}
	pub.publish("f/x", "held", 1, false, 3)
	if p := live.expectPublish(5 * time.Second); string(p.Payload) != "held" {
		t.Fatalf("QoS 0 routing: %q", p.Payload)
	}
	pub.expectNothing(500 * time.Millisecond) // no PUBACK while the store fails

	inj.on.Store(false)
	h, body := pub.expect(codec.TypePuback, 10*time.Second)
	var a codec.Ack
	if err := a.Decode(codec.V311, h, body); err != nil || a.PacketID != 3 {
		t.Fatalf("PUBACK after recovery: %+v %v", a, err)
	}
	waitFor(t, 5*time.Second, "healthy", func() bool { return b.StoreHealth() == nil })
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz after recovery: %d", code)
	}
	stopBroker(t, b)
	b = persistentBroker(t, dir, store.FsyncInterval, nil)
	p1 = dialRaw(t, b.MQTTAddr())
	if ack := p1.connect(codec.Connect{ClientID: []byte("p1"), KeepAlive: 60}); !ack.SessionPresent {
		t.Fatal("session lost")
	}
	for _, want := range []string{"before", "trigger", "held"} {
		p := p1.expectPublish(5 * time.Second)
		if string(p.Payload) != want {
			t.Fatalf("after recovery and restart: %q; want %q", p.Payload, want)
		}
		p1.write(codec.AppendAck(nil, codec.TypePuback, p.PacketID))
	}
}

// grepLines keeps the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A data directory that cannot be opened fails New with an error naming
// it; so does one in use by another broker.
func TestPersistOpenErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "not-a-dir")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := DefaultOptions()
	o.MQTTAddr, o.HTTPAddr, o.Persistence, o.DataDir = "127.0.0.1:0", "", true, file
	if _, err := New(o); err == nil || !strings.Contains(err.Error(), file) {
		t.Fatalf("New on a file: %v; want an error naming %s", err, file)
	}
	data := filepath.Join(dir, "data")
	persistentBroker(t, data, store.FsyncInterval, nil)
	o.DataDir = data
	_, err := New(o)
	if err == nil || !strings.Contains(err.Error(), data) || !strings.Contains(err.Error(), fmt.Sprint(os.Getpid())) {
		t.Fatalf("second broker on %s: %v; want refused, naming the directory and pid", data, err)
	}
	t.Logf("refusal: %v", err)
}

// failingFS fails every write while on, like a full or failing disk.
type failingFS struct {
	on atomic.Bool
	fs store.FS
}

func newFailingFS() *failingFS {
	f := &failingFS{}
	f.fs = errorfs.Wrap(vfs.Default, f)
	return f
}

func (f *failingFS) String() string { return "failingFS" }

// MaybeError implements errorfs.Injector.
func (f *failingFS) MaybeError(op errorfs.Op) error {
	if f.on.Load() && op.Kind.ReadOrWrite() == errorfs.OpIsWrite {
		return errorfs.ErrInjected
	}
	return nil
}

// 3.1.1 --session-expiry counts the time the broker was down: a session
// offline for longer than it is gone after the restart; one offline for
// less keeps what is left, not a fresh period.
func TestPersistSessionExpiryRestart(t *testing.T) {
	dir := t.TempDir()
	exp := func(o *Options) { o.SessionExpiry = 3 * time.Second }
	b := persistentBroker(t, dir, store.FsyncInterval, exp)
	p1 := connected(t, b.MQTTAddr(), "gone", false)
	p1.subscribe(1, codec.Subscription{Filter: []byte("e/#"), QoS: 1})
	p1.c.Close()
	waitFor(t, 5*time.Second, "offline", func() bool { return b.Stats().Connected == 0 })
	offline := time.Now()
	stopBroker(t, b)
	for time.Since(offline) < 3100*time.Millisecond { // past its expiry while the broker is down
		time.Sleep(20 * time.Millisecond)
	}
	b = persistentBroker(t, dir, store.FsyncInterval, exp)
	rc := dialRaw(t, b.MQTTAddr())
	if ack := rc.connect(codec.Connect{ClientID: []byte("gone"), KeepAlive: 60}); ack.SessionPresent {
		t.Fatal("a session expired while the broker was down came back")
	}
	rc.c.Close()

	// Offline 1 s before a restart: it expires about 2 s after it, not 3.
	p2 := connected(t, b.MQTTAddr(), "left", false)
	p2.subscribe(1, codec.Subscription{Filter: []byte("e/#"), QoS: 1})
	p2.c.Close()
	waitFor(t, 5*time.Second, "offline", func() bool { return b.Stats().Connected == 0 })
	offline = time.Now()
	for time.Since(offline) < time.Second {
		time.Sleep(20 * time.Millisecond)
	}
	stopBroker(t, b)
	b = persistentBroker(t, dir, store.FsyncInterval, exp)
	sess := b.sessionByID("left")
	if sess == nil {
		t.Fatal("session lost")
	}
	sess.mu.Lock()
	since := int64(sess.since)
	sess.mu.Unlock()
	if d := since - offline.Unix(); d < -1 || d > 1 {
		t.Fatalf("recovered session offline since %d; it went offline at %d (the restart must not reset its expiry)", since, offline.Unix())
	}
	waitFor(t, 10*time.Second, "the session to expire", func() bool { return b.sessionByID("left") == nil })
}

// An offline persistent session's queue is in the store, not in memory;
// when its client is back it is paged in order, and messages published
// meanwhile come after it. The queue bound counts what is in the store.
func TestPersistOfflineQueueOnDisk(t *testing.T) {
	dir := t.TempDir()
	const n = 1000
	b := persistentBroker(t, dir, store.FsyncInterval, func(o *Options) { o.MaxQueuedMsgs = n })
	p1 := connected(t, b.MQTTAddr(), "p1", false)
	p1.subscribe(1, codec.Subscription{Filter: []byte("d/#"), QoS: 1})
	p1.c.Close()
	waitFor(t, 5*time.Second, "p1 offline", func() bool { return b.Stats().Connected == 0 })
	pub := connected(t, b.MQTTAddr(), "pub", true)
	for i := range n + 1 { // the last one is over the bound
		pub.publish("d/x", fmt.Sprint(i), 1, false, uint16(i+1))
		pub.expect(codec.TypePuback, 5*time.Second)
	}
	s := b.sessionByID("p1")
	s.mu.Lock()
	inMem, onDisk := len(s.st.q), s.st.onDisk()
	s.mu.Unlock()
	if inMem != 0 || onDisk != n {
		t.Fatalf("offline queue: %d in memory, %d in the store; want 0 and %d", inMem, onDisk, n)
	}
	if got := b.Stats().DroppedQueueFull; got != 1 {
		t.Fatalf("%d dropped at the bound; want 1", got)
	}
	if q := b.Snapshot().Queued; q != n {
		t.Fatalf("queued gauge %d; want %d", q, n)
	}

	p1 = dialRaw(t, b.MQTTAddr())
	if ack := p1.connect(codec.Connect{ClientID: []byte("p1"), KeepAlive: 60}); !ack.SessionPresent {
		t.Fatal("session present = 0")
	}
	for i := range n + 5 {
		if i == 10 { // published while the queue is being paged: after it
			for k := range 5 {
				pub.publish("d/x", fmt.Sprintf("live-%d", k), 1, false, uint16(2000+k))
				pub.expect(codec.TypePuback, 5*time.Second)
			}
		}
		p := p1.expectPublish(5 * time.Second)
		want := fmt.Sprint(i)
		if i >= n {
			want = fmt.Sprintf("live-%d", i-n)
		}
		if string(p.Payload) != want {
			t.Fatalf("message %d: %q; want %q", i, p.Payload, want)
		}
		p1.write(codec.AppendAck(nil, codec.TypePuback, p.PacketID))
	}
	p1.expectNothing(200 * time.Millisecond)
	s.mu.Lock()
	spilled, left := s.st.spill.on, s.queuedLocked()
	s.mu.Unlock()
	if spilled || left != 0 {
		t.Fatalf("after draining: spill %v, %d queued", spilled, left)
	}
}

// --max-queued-bytes bounds an offline queue that lives in the store, not
// only its part in memory, and keeps bounding it after a restart (the
// entries record their payload sizes); once the client drains it, the
// queue takes messages again.
func TestPersistOfflineQueueBytesBound(t *testing.T) {
	dir := t.TempDir()
	payload := strings.Repeat("x", 1000)
	bound := func(o *Options) { o.MaxQueuedBytes = 10_500 } // ten 1000-byte payloads
	b := persistentBroker(t, dir, store.FsyncInterval, bound)
	p1 := connected(t, b.MQTTAddr(), "p1", false)
	p1.subscribe(1, codec.Subscription{Filter: []byte("qb/#"), QoS: 1})
	p1.c.Close()
	waitFor(t, 5*time.Second, "p1 offline", func() bool { return b.Stats().Connected == 0 })
	pub := connected(t, b.MQTTAddr(), "pub", true)
	for i := range 15 {
		pub.publish("qb/x", fmt.Sprintf("%02d%s", i, payload[2:]), 1, false, uint16(i+1))
		pub.expect(codec.TypePuback, 5*time.Second)
	}
	if got := b.Stats().DroppedQueueFull; got != 5 {
		t.Fatalf("%d dropped at the byte bound; want 5 of 15 (the store's part counted)", got)
	}
	pub.c.Close()
	stopBroker(t, b)

	b = persistentBroker(t, dir, store.FsyncInterval, bound)
	pub = connected(t, b.MQTTAddr(), "pub", true)
	for i := range 3 {
		pub.publish("qb/x", payload, 1, false, uint16(i+1))
		pub.expect(codec.TypePuback, 5*time.Second)
	}
	if got := b.Stats().DroppedQueueFull; got != 3 {
		t.Fatalf("%d dropped after the restart; want 3 (the recovered queue holds the bound)", got)
	}
	p1 = dialRaw(t, b.MQTTAddr())
	if ack := p1.connect(codec.Connect{ClientID: []byte("p1"), KeepAlive: 60}); !ack.SessionPresent {
		t.Fatal("session present = 0")
	}
	for i := range 10 {
		p := p1.expectPublish(5 * time.Second)
		if string(p.Payload[:2]) != fmt.Sprintf("%02d", i) {
			t.Fatalf("message %d: %.8q", i, p.Payload)
		}
		p1.write(codec.AppendAck(nil, codec.TypePuback, p.PacketID))
	}
	p1.expectNothing(200 * time.Millisecond)
	p1.c.Close()
	waitFor(t, 5*time.Second, "p1 offline", func() bool { return b.Stats().Connected == 1 })
	for i := range 10 {
		pub.publish("qb/x", payload, 1, false, uint16(10+i))
		pub.expect(codec.TypePuback, 5*time.Second)
	}
	if got := b.Stats().DroppedQueueFull; got != 3 {
		t.Fatalf("%d dropped after the drain; want still 3 (the drained queue has room for ten)", got)
	}
}

// A page of an offline queue asked for while the store's writer refuses
// the loop's batch (its queue is full) cannot see the entries still
// pending in that batch: a short page then must not be taken as the end
// of the queue. The five messages published while the writer refused
// come once it takes batches again (before the fix they were skipped:
// acknowledged, never delivered).
func TestPersistPageWhileWriterRefuses(t *testing.T) {
	dir := t.TempDir()
	const n = 200 // one full page (pageSize) and a short one
	var refuse atomic.Bool
	b := persistentBroker(t, dir, store.FsyncInterval, func(o *Options) { o.storeRefuse = &refuse })
	p1 := connected(t, b.MQTTAddr(), "p1", false)
	p1.subscribe(1, codec.Subscription{Filter: []byte("r/#"), QoS: 1})
	p1.c.Close()
	waitFor(t, 5*time.Second, "p1 offline", func() bool { return b.Stats().Connected == 0 })
	pub := connected(t, b.MQTTAddr(), "pub", true)
	for i := range n {
		pub.publish("r/x", fmt.Sprint(i), 1, false, uint16(i+1))
		pub.expect(codec.TypePuback, 5*time.Second)
	}
	s := b.sessionByID("p1")

	p1 = dialRaw(t, b.MQTTAddr())
	if ack := p1.connect(codec.Connect{ClientID: []byte("p1"), KeepAlive: 60}); !ack.SessionPresent {
		t.Fatal("session present = 0")
	}
	first := p1.expectPublish(5 * time.Second) // the first page is in memory
	refuse.Store(true)
	for k := range 5 { // queued behind the store's part of the queue, in a refused batch
		pub.publish("r/x", fmt.Sprintf("live-%d", k), 1, false, uint16(1000+k))
	}
	waitFor(t, 5*time.Second, "the five to be queued", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.st.qTail == n+5
	})
	p := first
	for i := range n + 5 {
		if i > 0 {
			p = p1.expectPublish(5 * time.Second)
		}
		want := fmt.Sprint(i)
		if i >= n {
			want = fmt.Sprintf("live-%d", i-n)
		}
		if string(p.Payload) != want {
			t.Fatalf("message %d: %q; want %q", i, p.Payload, want)
		}
		p1.write(codec.AppendAck(nil, codec.TypePuback, p.PacketID))
		if i == n-1 {
			// The store's part is drained; its last page was short while
			// the batch with the five was refused.
			p1.expectNothing(300 * time.Millisecond)
			refuse.Store(false)
		}
	}
	p1.expectNothing(200 * time.Millisecond)
}

// The store's commit window (an hour here: nothing reaches pebble while
// the test runs) holds an offline session's queue; the client that comes
// back finds it, paged through the window, in order; what it
// acknowledged is gone after a restart (the window is written at Stop),
// and what it did not is re-sent.
func TestPersistQueueInCommitWindow(t *testing.T) {
	dir := t.TempDir()
	const n = 50
	hour := func(o *Options) { o.FsyncInterval, o.storeWindow = time.Hour, time.Hour }
	b := persistentBroker(t, dir, store.FsyncInterval, hour)
	p1 := connected(t, b.MQTTAddr(), "p1", false)
	p1.subscribe(1, codec.Subscription{Filter: []byte("w/#"), QoS: 1})
	p1.c.Close()
	waitFor(t, 5*time.Second, "p1 offline", func() bool { return b.Stats().Connected == 0 })
	pub := connected(t, b.MQTTAddr(), "pub", true)
	for i := range n {
		pub.publish("w/x", fmt.Sprint(i), 1, false, uint16(i+1))
		pub.expect(codec.TypePuback, 5*time.Second)
	}
	if d, c := b.ps.st.Durable(), b.ps.st.Committed(); d >= c {
		t.Fatalf("durable %d, committed %d: the window was synced already (want it held for the hour)", d, c)
	}
	p1 = dialRaw(t, b.MQTTAddr())
	if ack := p1.connect(codec.Connect{ClientID: []byte("p1"), KeepAlive: 60}); !ack.SessionPresent {
		t.Fatal("session present = 0")
	}
	for i := range n {
		p := p1.expectPublish(5 * time.Second)
		if string(p.Payload) != fmt.Sprint(i) {
			t.Fatalf("message %d: %q", i, p.Payload)
		}
		if i < n-1 { // the last one stays unacknowledged
			p1.write(codec.AppendAck(nil, codec.TypePuback, p.PacketID))
		}
	}
	p1.expectNothing(200 * time.Millisecond)
	p1.c.Close()
	waitFor(t, 5*time.Second, "p1 offline", func() bool { return b.Stats().Connected == 1 })
	stopBroker(t, b)

	b = persistentBroker(t, dir, store.FsyncInterval, hour)
	p1 = dialRaw(t, b.MQTTAddr())
	if ack := p1.connect(codec.Connect{ClientID: []byte("p1"), KeepAlive: 60}); !ack.SessionPresent {
		t.Fatal("session present = 0 after restart")
	}
	p := p1.expectPublish(5 * time.Second)
	if string(p.Payload) != fmt.Sprint(n-1) || !p.Dup {
		t.Fatalf("after restart: %q dup %v; want the unacknowledged %d re-sent with DUP", p.Payload, p.Dup, n-1)
	}
	p1.write(codec.AppendAck(nil, codec.TypePuback, p.PacketID))
	p1.expectNothing(200 * time.Millisecond)
}

// A v5 session resumed (Clean Start 0) with Session Expiry 0 ends with
// this connection, but its queue is still in the store: its records stay
// until the disconnect, so every queued message is paged in and
// delivered, and the session is gone after it.
func TestPersistV5ResumedWithExpiryZeroGetsStoredQueue(t *testing.T) {
	b := persistentBroker(t, t.TempDir(), store.FsyncInterval, nil)
	cp := &paho.Connect{CleanStart: true, Properties: &paho.ConnectProperties{SessionExpiryInterval: u32(300)}}
	v := connectV5(t, b.MQTTAddr(), "v5z", cp)
	v.sub("z/#", 1, nil)
	_ = v.c.Disconnect(&paho.Disconnect{})
	waitFor(t, 5*time.Second, "offline", func() bool { return b.Stats().Connected == 0 })
	pub := connectV5(t, b.MQTTAddr(), "v5zpub", nil)
	const n = 300 // more than a page (128)
	for i := range n {
		pub.pub(&paho.Publish{Topic: "z/a", QoS: 1, Payload: []byte(fmt.Sprint(i))})
	}
	v = connectV5(t, b.MQTTAddr(), "v5z", &paho.Connect{CleanStart: false})
	if !v.ack.SessionPresent {
		t.Fatal("session present = 0")
	}
	for i := range n {
		if m := v.next(5 * time.Second); string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("message %d: %q", i, m.Payload)
		}
	}
	_ = v.c.Disconnect(&paho.Disconnect{})
	waitFor(t, 5*time.Second, "offline", func() bool { return b.Stats().Connected == 1 })
	v = connectV5(t, b.MQTTAddr(), "v5z", &paho.Connect{CleanStart: false})
	if v.ack.SessionPresent {
		t.Fatal("the session outlived its connection with Session Expiry 0")
	}
}
