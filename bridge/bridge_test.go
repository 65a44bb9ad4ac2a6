package bridge

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/engine"
	"github.com/tinymq/tinymq/internal/mosquittotest"
)

// startTinyMQ runs a broker on free loopback ports (MQTT and HTTP).
func startTinyMQ(t *testing.T) *engine.Broker {
	t.Helper()
	return startTinyMQWith(t, func(o *engine.Options) { o.HTTPAddr = "127.0.0.1:0" })
}

// startBridges parses text as a config file's bridge lines and runs them
// against b.
func startBridges(t *testing.T, b *engine.Broker, text string) *Manager {
	t.Helper()
	cfgs, err := parseLines(t, text)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewManager(cfgs, b, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	b.SetBridgeInfo(func() []engine.BridgeInfo {
		var out []engine.BridgeInfo
		for _, s := range m.Status() {
			out = append(out, engine.BridgeInfo{Name: s.Name, State: s.State, Remote: s.Remote,
				LocalClientID: s.LocalClientID, Connects: s.Connects, MsgsOut: s.MsgsOut, MsgsIn: s.MsgsIn,
				BytesOut: s.BytesOut, BytesIn: s.BytesIn, Dropped: s.Dropped, LastError: s.LastError})
		}
		return out
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = m.Stop(ctx)
	})
	return m
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitConnected(t *testing.T, m *Manager) {
	t.Helper()
	waitFor(t, "bridge connected", 15*time.Second, func() bool {
		for _, s := range m.Status() {
			if s.State != "connected" {
				return false
			}
		}
		return true
	})
}

// msg is a message a test client received.
type msg struct {
	topic, payload string
	qos            uint8
	retain         bool
}

// client is a small test MQTT client on the bridge's conn: it
// acknowledges what it receives and hands it to msgs.
type client struct {
	t    *testing.T
	c    *conn
	msgs chan msg
	acks chan uint16 // PUBACK / PUBCOMP / SUBACK ids
	id   uint16
}

func dialClient(t *testing.T, addr, id string, v codec.Version, clean bool) *client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, c: newConn(nc, v, 1<<20), msgs: make(chan msg, 10000), acks: make(chan uint16, 1000)}
	p := codec.Connect{Version: v, CleanStart: clean, KeepAlive: 60, ClientID: []byte(id)}
	if v == codec.V5 && !clean {
		p.Props.SessionExpiry = 3600
		p.Props.Set(codec.PropSessionExpiry)
	}
	if _, err := c.c.handshake(&p, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	go c.readLoop()
	t.Cleanup(c.c.close)
	return c
}

func (c *client) readLoop() {
	var p codec.Publish
	var a codec.Ack
	for {
		h, body, err := c.c.read()
		if err != nil {
			return
		}
		switch h.Type {
		case codec.TypePublish:
			if p.Decode(c.c.v, h, body) != nil {
				return
			}
			c.msgs <- msg{string(p.Topic), string(p.Payload), p.QoS, p.Retain}
			switch p.QoS {
			case 1:
				_ = c.c.ack(codec.TypePuback, p.PacketID)
			case 2:
				_ = c.c.ack(codec.TypePubrec, p.PacketID)
			}
		case codec.TypePubrel:
			if a.Decode(c.c.v, h, body) == nil {
				_ = c.c.ack(codec.TypePubcomp, a.PacketID)
			}
		case codec.TypePubrec:
			if a.Decode(c.c.v, h, body) == nil {
				_ = c.c.ack(codec.TypePubrel, a.PacketID)
			}
		case codec.TypePuback, codec.TypePubcomp:
			if a.Decode(c.c.v, h, body) == nil {
				c.acks <- a.PacketID
			}
		case codec.TypeSuback:
			c.acks <- uint16(body[0])<<8 | uint16(body[1])
		}
	}
}

func (c *client) waitAck(id uint16) {
	c.t.Helper()
	select {
	case got := <-c.acks:
		if got != id {
			c.t.Fatalf("ack for %d, want %d", got, id)
		}
	case <-time.After(10 * time.Second):
		c.t.Fatalf("no ack for packet %d", id)
	}
}

func (c *client) subscribe(filter string, qos uint8) {
	c.t.Helper()
	c.id++
	s := codec.Subscribe{PacketID: c.id, Subs: []codec.Subscription{{Filter: []byte(filter), QoS: qos}}}
	if err := c.c.send(func(dst []byte) []byte { return s.AppendTo(dst, c.c.v) }); err != nil {
		c.t.Fatal(err)
	}
	c.waitAck(c.id)
}

// publish sends a PUBLISH and, at QoS > 0, waits for its PUBACK/PUBCOMP.
func (c *client) publish(topic, payload string, qos uint8, retain bool) {
	c.t.Helper()
	p := codec.Publish{Topic: []byte(topic), Payload: []byte(payload), QoS: qos, Retain: retain}
	if qos > 0 {
		c.id++
		p.PacketID = c.id
	}
	if err := c.c.send(func(dst []byte) []byte { return p.AppendTo(dst, c.c.v) }); err != nil {
		c.t.Fatal(err)
	}
	if qos > 0 {
		c.waitAck(p.PacketID)
	}
}

// expect returns the next message, failing after a deadline.
func (c *client) expect(what string) msg {
	c.t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(10 * time.Second):
		c.t.Fatalf("no message: %s", what)
	}
	return msg{}
}

// drain reads c's messages up to the one whose payload is last.
func drain(c *client, last string) {
	c.t.Helper()
	for {
		if m := c.expect("drain"); m.payload == last {
			return
		}
	}
}

var versions = []struct {
	name string
	key  string
	v    codec.Version
}{{"v311", "mqttv311", codec.V311}, {"v5", "mqttv50", codec.V5}}

// TestBridgeMosquittoDirections: out, in and both with prefix remapping
// at QoS 0, 1 and 2, against a real Mosquitto, over MQTT 3.1.1 and 5;
// the `both` line does not echo; the $SYS notification, GET
// /api/v1/bridges and /metrics show the bridge.
func TestBridgeMosquittoDirections(t *testing.T) {
	mosquittotest.Require(t, "mosquitto")
	for _, ver := range versions {
		t.Run(ver.name, func(t *testing.T) {
			remote := mosquittotest.Start(t, t.TempDir(), "allow_anonymous true\n")
			b := startTinyMQ(t)
			m := startBridges(t, b, fmt.Sprintf(`connection cloud
address %s
bridge_protocol_version %s
remote_clientid edge-%s
topic sensors/# out 2 edge/ site/
topic cmd/# in 2 local/ remote/
topic chat/# both 2
restart_timeout 0.2 1
keepalive_interval 5
`, remote, ver.key, ver.name))
			waitConnected(t, m)

			lsub := dialClient(t, b.MQTTAddr(), "lsub", ver.v, true)
			lsub.subscribe("local/cmd/#", 2)
			lsub.subscribe("chat/#", 2)
			lsub.subscribe("$SYS/broker/connection/cloud/state", 0)
			if n := lsub.expect("notification"); n.payload != "1" || !n.retain {
				t.Fatalf("notification %+v", n)
			}
			rsub := dialClient(t, remote, "rsub", ver.v, true)
			rsub.subscribe("site/#", 2)
			rsub.subscribe("chat/#", 2)
			// The bridge's remote subscription may still be on its way.
			lpub := dialClient(t, b.MQTTAddr(), "lpub", ver.v, true)
			rpub := dialClient(t, remote, "rpub", ver.v, true)
			waitFor(t, "remote subscription", 10*time.Second, func() bool {
				rpub.publish("remote/cmd/probe", "p", 1, false)
				select {
				case <-lsub.msgs:
					return true
				case <-time.After(100 * time.Millisecond):
					return false
				}
			})
			rpub.publish("remote/cmd/probe", "probe-end", 1, false)
			drain(lsub, "probe-end")

			for q := uint8(0); q <= 2; q++ {
				lpub.publish("edge/sensors/t", fmt.Sprintf("out-%d", q), q, false)
				got := rsub.expect("out")
				if got.topic != "site/sensors/t" || got.payload != fmt.Sprintf("out-%d", q) || got.qos != q {
					t.Fatalf("out QoS %d: got %+v", q, got)
				}
				rpub.publish("remote/cmd/x", fmt.Sprintf("in-%d", q), q, false)
				got = lsub.expect("in")
				if got.topic != "local/cmd/x" || got.payload != fmt.Sprintf("in-%d", q) || got.qos != q {
					t.Fatalf("in QoS %d: got %+v", q, got)
				}
			}
			// both: each side's subscriber gets the other's message once.
			lpub.publish("chat/a", "from-local", 2, false)
			rpub.publish("chat/b", "from-remote", 2, false)
			lpub.publish("chat/end", "end-local", 2, false)
			rpub.publish("chat/end", "end-remote", 2, false)
			count := func(c *client, name string) map[string]int {
				seen := map[string]int{}
				// Mosquitto delivers a QoS 2 message at PUBREL, so it may
				// come after the QoS 1 markers: wait for all four.
				for seen["end-local"] == 0 || seen["end-remote"] == 0 || seen["from-local"] == 0 || seen["from-remote"] == 0 {
					m := c.expect(name + " chat")
					seen[m.payload]++
				}
				return seen
			}
			for _, side := range []struct {
				c    *client
				name string
			}{{lsub, "local"}, {rsub, "remote"}} {
				seen := count(side.c, side.name)
				if seen["from-local"] != 1 || seen["from-remote"] != 1 {
					t.Fatalf("%s subscriber saw %v, want each chat message once", side.name, seen)
				}
			}
			select {
			case extra := <-rsub.msgs:
				t.Fatalf("remote subscriber: unexpected %+v", extra)
			case extra := <-lsub.msgs:
				t.Fatalf("local subscriber: unexpected %+v", extra)
			default:
			}

			// Retained messages cross retained, both ways: a late
			// subscriber on the other side gets them.
			lpub.publish("edge/sensors/r", "kept-out", 1, true)
			rpub.publish("remote/cmd/r", "kept-in", 1, true)
			waitFor(t, "retained messages across", 10*time.Second, func() bool {
				rl := dialClient(t, remote, "late-r", ver.v, true)
				ll := dialClient(t, b.MQTTAddr(), "late-l", ver.v, true)
				defer rl.c.close()
				defer ll.c.close()
				rl.subscribe("site/sensors/r", 1)
				ll.subscribe("local/cmd/r", 1)
				got := 0
				for _, c := range []*client{rl, ll} {
					select {
					case m := <-c.msgs:
						if m.retain && (m.payload == "kept-out" || m.payload == "kept-in") {
							got++
						}
					case <-time.After(200 * time.Millisecond):
					}
				}
				return got == 2
			})

			st := m.Status()[0]
			if st.Connects != 1 || st.MsgsOut < 4 || st.MsgsIn < 5 || st.BytesOut == 0 {
				t.Fatalf("status %+v", st)
			}
			resp, err := http.Get("http://" + b.HTTPAddr() + "/api/v1/bridges")
			if err != nil {
				t.Fatal(err)
			}
			var list struct{ Bridges []engine.BridgeInfo }
			err = json.NewDecoder(resp.Body).Decode(&list)
			resp.Body.Close()
			if err != nil || len(list.Bridges) != 1 || list.Bridges[0].State != "connected" || list.Bridges[0].MsgsOut != st.MsgsOut {
				t.Fatalf("/api/v1/bridges: %+v %v", list, err)
			}
			resp, err = http.Get("http://" + b.HTTPAddr() + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.Contains(string(body), `tinymq_bridge_up{bridge="cloud"} 1`) ||
				!strings.Contains(string(body), `tinymq_bridge_messages_out_total{bridge="cloud"}`) {
				t.Fatalf("/metrics has no bridge lines")
			}
		})
	}
}

// mosquittoProc is a Mosquitto the test can stop and start again on the
// same port, with persistence, so that its sessions survive.
type mosquittoProc struct {
	t    *testing.T
	bin  string
	conf string
	addr string
	cmd  *exec.Cmd
	done chan struct{}
}

func newMosquitto(t *testing.T) *mosquittoProc {
	bin := mosquittotest.Require(t, "mosquitto")
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := filepath.Join(dir, "mosquitto.conf")
	body := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nmax_queued_messages 100000\n", port, dir)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	mosquittotest.Readable(t, dir)
	_ = os.Chmod(dir, 0o777) // Mosquitto started as root writes its database as user mosquitto
	p := &mosquittoProc{t: t, bin: bin, conf: conf, addr: fmt.Sprintf("127.0.0.1:%d", port)}
	p.start()
	t.Cleanup(p.stop)
	return p
}

func (p *mosquittoProc) start() {
	p.t.Helper()
	p.cmd = exec.Command(p.bin, "-c", p.conf)
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(p.cmd, p.done)
	waitFor(p.t, "mosquitto listening", 10*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", p.addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// stop ends Mosquitto with SIGTERM (it saves its persistence file).
func (p *mosquittoProc) stop() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.cmd = nil
}

// TestBridgeRemoteRestart: QoS 1 messages flow out while the remote
// Mosquitto is restarted; every message the local broker acknowledged to
// its publisher reaches the remote subscriber (a persistent session), at
// least once. Messages published while the remote is down wait in the
// bridge's local session.
func TestBridgeRemoteRestart(t *testing.T) {
	remote := newMosquitto(t)
	b := startTinyMQ(t)
	m := startBridges(t, b, fmt.Sprintf(`connection cloud
address %s
topic data/# out 1
restart_timeout 0.1 0.5
keepalive_interval 5
`, remote.addr))
	waitConnected(t, m)
	rsub := dialClient(t, remote.addr, "rsub", codec.V311, false)
	rsub.subscribe("data/#", 1)
	lpub := dialClient(t, b.MQTTAddr(), "lpub", codec.V311, true)

	const n = 300
	seen := map[string]bool{}
	var mu sync.Mutex
	collect := func(c *client) {
		for m := range c.msgs {
			mu.Lock()
			seen[m.payload] = true
			mu.Unlock()
		}
	}
	go collect(rsub)
	for i := range n {
		lpub.publish("data/x", fmt.Sprint(i), 1, false) // acknowledged by TinyMQ
		if i == n/3 {
			remote.stop()
		}
		if i == 2*n/3 {
			q := 0
			for _, bi := range b.Bridges() {
				q = bi.Queued + bi.Inflight
			}
			if q == 0 {
				t.Fatalf("remote down: nothing queued for it")
			}
			remote.start()
			rsub = dialClient(t, remote.addr, "rsub", codec.V311, false) // resumes its session
			go collect(rsub)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		got := len(seen)
		mu.Unlock()
		if got == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged messages reached the remote subscriber; status %+v", got, n, m.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := m.Status()[0]; st.Connects < 2 {
		t.Fatalf("connects %d: the bridge never reconnected", st.Connects)
	}
}

// TestBridgeFailover: the first address refuses connections; the bridge
// connects to the second. When the first comes back (here a proxy to the
// same Mosquitto), the bridge returns to it.
func TestBridgeFailover(t *testing.T) {
	remote := mosquittotest.Start(t, t.TempDir(), "allow_anonymous true\n")
	primary := newProxy(t, remote) // down: nothing listens there yet
	b := startTinyMQ(t)
	m := startBridges(t, b, fmt.Sprintf("connection cloud\naddress %s,%s\ntopic f/# out 1\nrestart_timeout 0.1 0.5\n", primary.addr, remote))
	waitConnected(t, m)
	if st := m.Status()[0]; st.Remote != remote {
		t.Fatalf("connected to %q, want the second address %q", st.Remote, remote)
	}
	rsub := dialClient(t, remote, "rsub", codec.V311, true)
	rsub.subscribe("f/#", 1)
	lpub := dialClient(t, b.MQTTAddr(), "lpub", codec.V311, true)
	lpub.publish("f/1", "hello", 1, false)
	if got := rsub.expect("failover"); got.payload != "hello" {
		t.Fatalf("got %+v", got)
	}

	primary.up()
	waitFor(t, "back on the primary", 10*time.Second, func() bool {
		st := m.Status()[0]
		return st.State == "connected" && st.Remote == primary.addr
	})
	lpub.publish("f/2", "via primary", 1, false)
	if got := rsub.expect("after the switch back"); got.payload != "via primary" {
		t.Fatalf("got %+v", got)
	}
}

// TestBridgeTinyMQBothWays: two TinyMQ brokers, A bridged to B with
// `topic t/# both`: over 3.1.1 (Mosquitto's bridge bit, which B honours as
// No Local) and over 5 (No Local), a message published on either side
// reaches each side's subscriber once and never comes back.
func TestBridgeTinyMQBothWays(t *testing.T) {
	for _, ver := range versions {
		t.Run(ver.name, func(t *testing.T) {
			a, bb := startTinyMQ(t), startTinyMQ(t)
			m := startBridges(t, a, fmt.Sprintf("connection b\naddress %s\nbridge_protocol_version %s\ntopic t/# both 1\nrestart_timeout 0.1 0.5\n",
				bb.MQTTAddr(), ver.key))
			waitConnected(t, m)
			asub := dialClient(t, a.MQTTAddr(), "asub", ver.v, true)
			asub.subscribe("t/#", 1)
			bsub := dialClient(t, bb.MQTTAddr(), "bsub", ver.v, true)
			bsub.subscribe("t/#", 1)
			apub := dialClient(t, a.MQTTAddr(), "apub", ver.v, true)
			bpub := dialClient(t, bb.MQTTAddr(), "bpub", ver.v, true)
			waitFor(t, "bridge subscriptions", 10*time.Second, func() bool {
				bpub.publish("t/probe", "p", 1, false)
				select {
				case m := <-asub.msgs:
					return m.payload == "p"
				case <-time.After(100 * time.Millisecond):
					return false
				}
			})
			bpub.publish("t/probe", "probe-end", 1, false)
			drain(asub, "probe-end")
			drain(bsub, "probe-end")

			apub.publish("t/1", "from-a", 1, false)
			bpub.publish("t/2", "from-b", 1, false)
			// Markers after them: a loop would deliver the messages
			// again and again before the markers arrive.
			apub.publish("t/end", "end-a", 1, false)
			bpub.publish("t/end", "end-b", 1, false)
			for _, side := range []struct {
				c    *client
				name string
			}{{asub, "A"}, {bsub, "B"}} {
				seen := map[string]int{}
				for seen["end-a"] == 0 || seen["end-b"] == 0 {
					seen[side.c.expect(side.name).payload]++
				}
				if seen["from-a"] != 1 || seen["from-b"] != 1 {
					t.Fatalf("%s saw %v, want each message once", side.name, seen)
				}
			}
			st := m.Status()[0]
			if st.MsgsOut > 20 || st.MsgsIn > 20 {
				t.Fatalf("bridge carried %d out / %d in: a loop", st.MsgsOut, st.MsgsIn)
			}
		})
	}
}

// writeCerts writes a CA and a server certificate for dnsName (no IP
// SANs) signed by it, as PEM files in dir.
func writeCerts(t *testing.T, dir, dnsName string) (ca, cert, key string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(crand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: dnsName},
		DNSNames: []string{dnsName}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	srvDER, err := x509.CreateCertificate(crand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", srvDER), write("server.key", "EC PRIVATE KEY", keyDER)
}

// TestBridgeTLS: TLS to a Mosquitto TLS listener with bridge_cafile. The
// certificate names another host: without bridge_insecure the bridge
// refuses it, with it (chain still verified) the bridge carries messages.
func TestBridgeTLS(t *testing.T) {
	mosquittotest.Require(t, "mosquitto")
	dir := t.TempDir()
	ca, cert, key := writeCerts(t, dir, "broker.example")
	remote := mosquittotest.Start(t, dir, fmt.Sprintf("allow_anonymous true\ncafile %s\ncertfile %s\nkeyfile %s\n", ca, cert, key))

	b := startTinyMQ(t)
	m := startBridges(t, b, fmt.Sprintf("connection strict\naddress %s\ntopic s/# out 1\nbridge_cafile %s\nrestart_timeout 0.2 0.5\n", remote, ca))
	waitFor(t, "a host name error", 10*time.Second, func() bool {
		st := m.Status()[0]
		return st.State != "connected" && strings.Contains(st.LastError, "certificate")
	})
	if st := m.Status()[0]; st.Connects != 0 {
		t.Fatalf("connected despite the host name: %+v", st)
	}

	// bridge_insecure skips the host name, not the chain: another CA fails.
	otherCA, _, _ := writeCerts(t, t.TempDir(), "broker.example")
	b3 := startTinyMQ(t)
	m3 := startBridges(t, b3, fmt.Sprintf("connection wrongca\naddress %s\ntopic s/# out 1\nbridge_cafile %s\nbridge_insecure true\nrestart_timeout 0.2 0.5\n", remote, otherCA))
	waitFor(t, "an unknown-authority error", 10*time.Second, func() bool {
		return strings.Contains(m3.Status()[0].LastError, "certificate")
	})
	if st := m3.Status()[0]; st.Connects != 0 {
		t.Fatalf("bridge_insecure accepted a certificate from another CA: %+v", st)
	}

	b2 := startTinyMQ(t)
	m2 := startBridges(t, b2, fmt.Sprintf("connection lax\naddress %s\ntopic s/# out 1\nbridge_cafile %s\nbridge_insecure true\nrestart_timeout 0.2 0.5\n", remote, ca))
	waitConnected(t, m2)
	rsub := dialClientTLS(t, remote, ca)
	rsub.subscribe("s/#", 1)
	lpub := dialClient(t, b2.MQTTAddr(), "lpub", codec.V311, true)
	lpub.publish("s/1", "over TLS", 1, false)
	if got := rsub.expect("TLS"); got.payload != "over TLS" {
		t.Fatalf("got %+v", got)
	}
}

// dialClientTLS is dialClient over TLS (server name broker.example).
func dialClientTLS(t *testing.T, addr, caFile string) *client {
	t.Helper()
	tc, err := tlsConfig(&Config{CAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	tc.ServerName = "broker.example"
	nc, err := dial(context.Background(), addr, tc, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, c: newConn(nc, codec.V311, 1<<20), msgs: make(chan msg, 100), acks: make(chan uint16, 100)}
	p := codec.Connect{Version: codec.V311, CleanStart: true, KeepAlive: 60, ClientID: []byte("tls-sub")}
	if _, err := c.c.handshake(&p, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	go c.readLoop()
	t.Cleanup(c.c.close)
	return c
}
