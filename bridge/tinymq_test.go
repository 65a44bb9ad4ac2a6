package bridge

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/engine"
	"github.com/tinymq/tinymq/engine/auth"
)

// startTinyMQWith is startTinyMQ with options edited.
func startTinyMQWith(t *testing.T, edit func(*engine.Options)) *engine.Broker {
	t.Helper()
	o := engine.DefaultOptions()
	o.MQTTAddr, o.HTTPAddr, o.Loops, o.SysInterval = "127.0.0.1:0", "", 2, -1
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	edit(&o)
	b, err := engine.New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = b.Stop(ctx)
	})
	return b
}

// TestBridgeRemoteRefusals: a TinyMQ remote with a password file and an
// ACL; the bridge logs in with remote_username/remote_password (MQTT 5).
// A message the remote's ACL refuses (PUBACK 0x87) is counted as dropped
// and still acknowledged to the local broker, so the bridge's queue moves
// on: the next, allowed, message arrives.
func TestBridgeRemoteRefusals(t *testing.T) {
	dir := t.TempDir()
	h, err := auth.HashPassword([]byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	pw, acl := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
	if err := os.WriteFile(pw, []byte("edge:"+h+"\nreader:"+h+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(acl, []byte("user edge\ntopic write ok/#\nuser reader\ntopic read #\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	remote := startTinyMQWith(t, func(o *engine.Options) { o.PasswordFile, o.ACLFile = pw, acl })
	b := startTinyMQ(t)
	m := startBridges(t, b, fmt.Sprintf(`connection cloud
address %s
bridge_protocol_version mqttv50
remote_username edge
remote_password pw
topic # out 1
restart_timeout 0.1 0.5
`, remote.MQTTAddr()))
	waitConnected(t, m)

	nc, err := net.Dial("tcp", remote.MQTTAddr())
	if err != nil {
		t.Fatal(err)
	}
	rsub := &client{t: t, c: newConn(nc, codec.V5, 1<<20), msgs: make(chan msg, 100), acks: make(chan uint16, 100)}
	p := codec.Connect{Version: codec.V5, CleanStart: true, KeepAlive: 60, ClientID: []byte("rsub"),
		Username: []byte("reader"), UsernameFlag: true, Password: []byte("pw"), PasswordFlag: true}
	if _, err := rsub.c.handshake(&p, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	go rsub.readLoop()
	t.Cleanup(rsub.c.close)
	rsub.subscribe("#", 1)

	lpub := dialClient(t, b.MQTTAddr(), "lpub", codec.V5, true)
	lpub.publish("no/x", "refused", 1, false)
	lpub.publish("ok/y", "allowed", 1, false)
	if got := rsub.expect("allowed message"); got.topic != "ok/y" {
		t.Fatalf("remote got %+v; want ok/y only", got)
	}
	waitFor(t, "the refusal counted", 5*time.Second, func() bool { return m.Status()[0].Dropped == 1 })
	waitFor(t, "nothing left in flight", 5*time.Second, func() bool {
		l := b.Bridges()
		return len(l) == 1 && l[0].Inflight == 0 && l[0].Queued == 0
	})
}

// proxy forwards TCP connections on a fixed loopback port to target while
// it is up: a remote the test can take down and bring back.
type proxy struct {
	t      *testing.T
	addr   string
	target string
	mu     sync.Mutex
	l      net.Listener
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, addr: l.Addr().String(), target: target}
	l.Close()
	t.Cleanup(p.down)
	return p
}

func (p *proxy) up() {
	p.t.Helper()
	l, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.l = l
	p.mu.Unlock()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
}

// down closes the listener and every forwarded connection.
func (p *proxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestBridgeQueuesWhileDown: messages published before the remote was
// ever reached, and while it is down later, wait in the bridge's local
// session (Queued), bounded by --max-queued-messages with the excess
// counted (QueueDropped), and are delivered when it comes back.
func TestBridgeQueuesWhileDown(t *testing.T) {
	remote := startTinyMQ(t)
	rsub := dialClient(t, remote.MQTTAddr(), "rsub", codec.V311, true)
	rsub.subscribe("q/#", 1)
	px := newProxy(t, remote.MQTTAddr())
	b := startTinyMQWith(t, func(o *engine.Options) { o.MaxQueuedMsgs = 10 })
	m := startBridges(t, b, fmt.Sprintf("connection cloud\naddress %s\ntopic q/# out 1\nrestart_timeout 0.1 0.3\n", px.addr))
	waitFor(t, "the local session", 5*time.Second, func() bool {
		st := m.Status()[0]
		return st.State == "backoff" && st.LastError != ""
	})
	lpub := dialClient(t, b.MQTTAddr(), "lpub", codec.V311, true)
	for i := range 12 {
		lpub.publish("q/before", fmt.Sprint("before-", i), 1, false)
	}
	waitFor(t, "queued for the remote", 5*time.Second, func() bool {
		l := b.Bridges()
		return l[0].Queued == 10 && l[0].QueueDropped == 2
	})
	px.up()
	got := map[string]bool{}
	for len(got) < 10 {
		got[rsub.expect("queued messages").payload] = true
	}
	for i := range 10 {
		if !got[fmt.Sprint("before-", i)] {
			t.Fatalf("before-%d missing: got %v", i, got)
		}
	}

	// Down again after a connection: the broker queues again.
	waitConnected(t, m)
	px.down()
	waitFor(t, "bridge down", 10*time.Second, func() bool { return m.Status()[0].State != "connected" })
	lpub.publish("q/later", "later", 1, false)
	// Queued, not in flight: the session is offline. (Messages forwarded
	// just before the drop whose remote PUBACK did not come back stay in
	// flight, to be re-sent: at least once.)
	waitFor(t, "queued again", 5*time.Second, func() bool { return b.Bridges()[0].Queued == 1 })
	px.up()
	for {
		if m := rsub.expect("the later message"); m.payload == "later" {
			break
		}
	}
	if st := m.Status()[0]; st.Connects < 2 {
		t.Fatalf("connects %d", st.Connects)
	}
}

// TestBridgeReceiveMaximum: the local broker takes 2 unacknowledged QoS 2
// messages (Receive Maximum 2) while the remote sends up to 32 at once:
// the bridge holds back instead of exceeding the window (which would be
// DISCONNECT 0x93 and a reconnect), and every message arrives.
func TestBridgeReceiveMaximum(t *testing.T) {
	remote := startTinyMQ(t)
	b := startTinyMQWith(t, func(o *engine.Options) { o.ReceiveMaximum = 2 })
	m := startBridges(t, b, fmt.Sprintf("connection cloud\naddress %s\nbridge_protocol_version mqttv50\ntopic in/# in 2\nrestart_timeout 0.1 0.3\n", remote.MQTTAddr()))
	waitConnected(t, m)
	lsub := dialClient(t, b.MQTTAddr(), "lsub", codec.V5, true)
	lsub.subscribe("in/#", 2)
	rpub := dialClient(t, remote.MQTTAddr(), "rpub", codec.V5, true)
	waitFor(t, "the remote subscription", 10*time.Second, func() bool {
		rpub.publish("in/probe", "p", 1, false)
		select {
		case <-lsub.msgs:
			return true
		case <-time.After(100 * time.Millisecond):
			return false
		}
	})
	rpub.publish("in/probe", "probe-end", 1, false)
	drain(lsub, "probe-end")
	const n = 200
	for i := range n {
		// Without waiting for each PUBACK: the remote queues and sends
		// as fast as the bridge takes them.
		p := codec.Publish{Topic: []byte("in/x"), Payload: []byte(fmt.Sprint(i)), QoS: 2, PacketID: uint16(1000 + i)}
		if err := rpub.c.send(func(dst []byte) []byte { return p.AppendTo(dst, codec.V5) }); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for len(seen) < n {
		seen[lsub.expect("bridged message").payload] = true
	}
	if st := m.Status()[0]; st.Connects != 1 {
		t.Fatalf("the bridge reconnected (%d connects): the window was exceeded; last error %q", st.Connects, st.LastError)
	}
}
