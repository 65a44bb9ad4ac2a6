package engine

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/panjf2000/gnet/v2"

	"github.com/tinymq/tinymq/codec"
)

// pahoTLS connects paho.mqtt.golang to url (tls:// or wss://) with cfg.
func pahoTLS(t testing.TB, url, id string, cfg *tls.Config) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).SetProtocolVersion(4).SetTLSConfig(cfg).
		SetWriteTimeout(10 * time.Second)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("paho connect %s: %v", url, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// MQTT over TLS is a client like any other: paho over tls:// and a plain
// TCP client exchange QoS 0, 1 and 2 messages both ways, a 1 MB message
// both ways, and many messages pipelined.
func TestTLSPubSub(t *testing.T) {
	ca := newTestCA(t, "test-ca")
	b := startTLSBroker(t, ca, nil)
	sec := pahoTLS(t, "tls://"+b.TLSAddr(), "secure", clientTLS(ca))
	plain := pahoClient(t, b.MQTTAddr(), "plain", true)
	toSec := pahoSubscribe(t, sec, "to/secure/#", 2)
	toPlain := pahoSubscribe(t, plain, "to/plain/#", 2)
	for q := byte(0); q <= 2; q++ {
		msg := fmt.Sprintf("over tls qos %d", q)
		if tok := sec.Publish("to/plain/x", q, false, msg); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish over TLS: %v", tok.Error())
		}
		if m := next(t, toPlain); m.payload != msg || m.qos != q {
			t.Fatalf("plain got %+v; want %q at QoS %d", m, msg, q)
		}
		msg = fmt.Sprintf("to tls qos %d", q)
		plain.Publish("to/secure/y", q, false, msg).WaitTimeout(5 * time.Second)
		if m := next(t, toSec); m.payload != msg || m.qos != q {
			t.Fatalf("TLS client got %+v; want %q at QoS %d", m, msg, q)
		}
	}

	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	sec.Publish("to/plain/big", 1, false, big).WaitTimeout(10 * time.Second)
	if m := next(t, toPlain); m.payload != big {
		t.Fatalf("1 MiB over TLS -> plain: got %d bytes", len(m.payload))
	}
	plain.Publish("to/secure/big", 1, false, big).WaitTimeout(10 * time.Second)
	if m := next(t, toSec); m.payload != big {
		t.Fatalf("1 MiB plain -> TLS: got %d bytes", len(m.payload))
	}

	// Pipelined: a raw TLS client writes 900 PUBLISH packets in one go
	// (fewer than the subscriber's queue holds while paho acknowledges).
	rc := dialTLSRaw(t, b.TLSAddr(), clientTLS(ca))
	if ack := rc.connect(connectPacket("pipeliner", "", "")); ack.ReturnCode != 0 {
		t.Fatalf("CONNACK %d", ack.ReturnCode)
	}
	var all []byte
	const n = 900
	for i := range n {
		p := codec.Publish{Topic: []byte("to/plain/pipe"), Payload: []byte(fmt.Sprint(i)), QoS: 1, PacketID: uint16(i + 1)}
		all = p.AppendTo(all, codec.V311)
	}
	rc.write(all)
	for i := range n {
		h, body := rc.expect(codec.TypePuback, 10*time.Second)
		var a codec.Ack
		if err := a.Decode(codec.V311, h, body); err != nil || a.PacketID != uint16(i+1) {
			t.Fatalf("PUBACK %d: id %d err %v", i+1, a.PacketID, err)
		}
	}
	for i := range n {
		if m := next(t, toPlain); m.payload != fmt.Sprint(i) {
			t.Fatalf("pipelined message %d: got %q", i, m.payload)
		}
	}
	if got := b.Snapshot().TLS; got.Connections != 2 || got.Handshakes < 2 {
		t.Fatalf("TLS metrics: %+v; want 2 open connections", got)
	}
	waitFor(t, 5*time.Second, "Clients() to list the TLS client", func() bool {
		for _, c := range b.Clients() {
			if c.ClientID == "secure" && c.Connected && strings.HasPrefix(c.RemoteAddr, "127.0.0.1:") {
				return true
			}
		}
		return false
	})
}

// A CONNECT sent in the same flight as the client's Finished (no new
// OnTraffic comes for it) is answered.
func TestTLSConnectRightAfterHandshake(t *testing.T) {
	ca := newTestCA(t, "test-ca")
	b := startTLSBroker(t, ca, nil)
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cfg := clientTLS(ca)
		cfg.MinVersion, cfg.MaxVersion = v, v
		raw, err := net.Dial("tcp", b.TLSAddr())
		if err != nil {
			t.Fatal(err)
		}
		c := tls.Client(raw, cfg)
		// tls.Conn.Write runs the handshake and sends CONNECT right after it.
		if _, err := c.Write(connectBytes(fmt.Sprint("early", v), "", "")); err != nil {
			t.Fatalf("TLS %x: %v", v, err)
		}
		rc := &rawClient{t: t, c: c, r: bufio.NewReader(c), ver: codec.V311}
		h, _, err := rc.readPacket(5 * time.Second)
		if err != nil || h.Type != codec.TypeConnack {
			t.Fatalf("TLS %x: got %v %v; want CONNACK", v, h.Type, err)
		}
		if st := c.ConnectionState(); st.Version != v {
			t.Fatalf("negotiated %x; want %x", st.Version, v)
		}
		c.Close()
	}
}

// TLS 1.0 and 1.1 are refused.
func TestTLSMinVersion(t *testing.T) {
	ca := newTestCA(t, "test-ca")
	b := startTLSBroker(t, ca, nil)
	cfg := clientTLS(ca)
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS11, tls.VersionTLS11
	if c, err := tlsDial(b.TLSAddr(), cfg); err == nil {
		c.Close()
		t.Fatal("TLS 1.1 handshake succeeded")
	}
	waitFor(t, 5*time.Second, "the failure counted", func() bool { return b.Snapshot().TLS.HandshakeFailures >= 1 })
}

// The broker closes an established TLS connection with close_notify (here:
// a protocol error, a second CONNECT). TLS 1.2 shows alert records' type in
// the clear, so the client's raw input says whether one came.
func TestTLSCloseNotify(t *testing.T) {
	ca := newTestCA(t, "test-ca")
	b := startTLSBroker(t, ca, nil)
	raw, err := net.Dial("tcp", b.TLSAddr())
	if err != nil {
		t.Fatal(err)
	}
	tee := &teeConn{Conn: raw}
	cfg := clientTLS(ca)
	cfg.MaxVersion = tls.VersionTLS12
	c := tls.Client(tee, cfg)
	defer c.Close()
	rc := &rawClient{t: t, c: c, r: bufio.NewReader(c), ver: codec.V311}
	rc.connect(connectPacket("twice", "", ""))
	rc.write(connectBytes("twice", "", ""))
	rc.expectClosed(5 * time.Second)
	if !tee.sawRecord(0x15) {
		t.Fatal("no alert record (close_notify) before the broker closed")
	}
	waitFor(t, 5*time.Second, "the TLS gauge back to 0", func() bool { return b.Snapshot().TLS.Connections == 0 })
}

// teeConn keeps every byte read from the wrapped connection.
type teeConn struct {
	net.Conn
	in []byte
}

func (c *teeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in = append(c.in, p[:n]...)
	return n, err
}

// sawRecord reports whether a TLS record of type typ was read.
func (c *teeConn) sawRecord(typ byte) bool {
	b := c.in
	for len(b) >= 5 {
		if b[0] == typ {
			return true
		}
		b = b[min(len(b), 5+(int(b[3])<<8|int(b[4]))):]
	}
	return false
}

// Mutual TLS: with TLSRequireCert a client without a certificate, or with
// one from another CA, fails the handshake; a valid one connects, and with
// TLSCertAsUsername its CN is the username certUsername reports.
func TestMutualTLS(t *testing.T) {
	ca := newTestCA(t, "test-ca")
	other := newTestCA(t, "other-ca")
	good := ca.issue("device-42", false)
	stranger := other.issue("device-99", false)
	b := startTLSBroker(t, ca, func(o *Options) {
		o.TLSClientCA = ca.File
		o.TLSRequireCert = true
		o.TLSCertAsUsername = true
	})
	tryConnect := func(certs ...tls.Certificate) error {
		c, err := tlsDial(b.TLSAddr(), clientTLS(ca, certs...))
		if err != nil {
			return err
		}
		defer c.Close()
		// TLS 1.3: the server's verdict on the client's certificate
		// arrives after the client's handshake is done; a CONNECT answered
		// by CONNACK proves it was accepted.
		rc := &rawClient{t: t, c: c, r: bufio.NewReader(c), ver: codec.V311}
		rc.write(connectBytes("mtls", "", ""))
		h, _, err := rc.readPacket(5 * time.Second)
		if err != nil {
			return err
		}
		if h.Type != codec.TypeConnack {
			return fmt.Errorf("got %v", h.Type)
		}
		return nil
	}
	if err := tryConnect(); err == nil {
		t.Fatal("no client certificate: connected")
	}
	if err := tryConnect(stranger.Pair); err == nil {
		t.Fatal("certificate from another CA: connected")
	}
	if err := tryConnect(good.Pair); err != nil {
		t.Fatalf("valid certificate: %v", err)
	}

	// certUsername through a real connection, asked on its loop.
	rc := dialTLSRaw(t, b.TLSAddr(), clientTLS(ca, good.Pair))
	rc.connect(connectPacket("cn-check", "", ""))
	if got, ok := certUsernameOf(t, b, "cn-check"); !ok || got != "device-42" {
		t.Fatalf("certUsername = %q, %v; want device-42", got, ok)
	}
	plain := connected(t, b.MQTTAddr(), "no-tls", true)
	_ = plain
	if got, ok := certUsernameOf(t, b, "no-tls"); ok {
		t.Fatalf("plain connection: certUsername = %q, true", got)
	}
}

// Without TLSRequireCert a certificate is optional, but one that is sent
// must verify.
func TestMutualTLSOptional(t *testing.T) {
	ca := newTestCA(t, "test-ca")
	other := newTestCA(t, "other-ca")
	b := startTLSBroker(t, ca, func(o *Options) {
		o.TLSClientCA = ca.File
		o.TLSCertAsUsername = true
	})
	rc := dialTLSRaw(t, b.TLSAddr(), clientTLS(ca))
	if ack := rc.connect(connectPacket("anon", "", "")); ack.ReturnCode != 0 {
		t.Fatalf("no certificate, optional: CONNACK %d", ack.ReturnCode)
	}
	if _, ok := certUsernameOf(t, b, "anon"); ok {
		t.Fatal("certUsername without a certificate")
	}
	c, err := tlsDial(b.TLSAddr(), clientTLS(ca, other.issue("x", false).Pair))
	if err == nil {
		rc := &rawClient{t: t, c: c, r: bufio.NewReader(c), ver: codec.V311}
		rc.write(connectBytes("bad", "", ""))
		if _, _, err = rc.readPacket(5 * time.Second); err == nil {
			t.Fatal("certificate from another CA accepted")
		}
		c.Close()
	}
}

// certUsernameOf finds client id's connection and calls certUsername on its
// loop.
func certUsernameOf(t *testing.T, b *Broker, id string) (string, bool) {
	t.Helper()
	var c *conn
	waitFor(t, 5*time.Second, "session "+id, func() bool {
		s := b.sessionByID(id)
		if s == nil {
			return false
		}
		s.mu.Lock()
		c = s.c
		s.mu.Unlock()
		return c != nil
	})
	type res struct {
		cn string
		ok bool
	}
	ch := make(chan res, 1)
	err := c.l.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		cn, ok := c.certUsername()
		ch <- res{cn, ok}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		return r.cn, r.ok
	case <-time.After(5 * time.Second):
		t.Fatal("certUsername did not run")
	}
	return "", false
}

// The HTTP door over TLS: HTTPS publish with Go's http.Client, and MQTT
// over wss:// (paho) delivered to a plain client.
func TestHTTPSAndWSS(t *testing.T) {
	ca := newTestCA(t, "test-ca")
	srv := ca.issue("tinymq-server", true)
	b := startBroker(t, func(o *Options) {
		o.HTTPSAddr = "127.0.0.1:0"
		o.TLSCert, o.TLSKey = srv.CertFile, srv.KeyFile
	})
	plain := pahoClient(t, b.MQTTAddr(), "plain", true)
	in := pahoSubscribe(t, plain, "https/#", 1)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: clientTLS(ca)}}
	defer hc.CloseIdleConnections()
	for i := range 3 { // keep-alive: three requests on one connection
		resp, err := hc.Post("https://"+b.HTTPSAddr()+"/publish/https/t?qos=1", "text/plain", strings.NewReader(fmt.Sprint("hello ", i)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 202 && resp.StatusCode != 200 {
			t.Fatalf("HTTPS publish: %s", resp.Status)
		}
		if m := next(t, in); m.payload != fmt.Sprint("hello ", i) {
			t.Fatalf("got %+v", m)
		}
	}
	resp, err := hc.Get("https://" + b.HTTPSAddr() + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /healthz over HTTPS: %v %v", resp, err)
	}
	resp.Body.Close()

	// An SSE stream over HTTPS.
	resp, err = hc.Get("https://" + b.HTTPSAddr() + "/stream/sse/x")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /stream over HTTPS: %v %v", resp, err)
	}
	defer resp.Body.Close()
	waitFor(t, 5*time.Second, "the stream subscribed", func() bool { return b.Snapshot().Streams == 1 })
	plain.Publish("sse/x", 0, false, "streamed").WaitTimeout(5 * time.Second)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: ") {
			if !strings.Contains(sc.Text(), `"payload":"streamed"`) {
				t.Fatalf("SSE over HTTPS: %s", sc.Text())
			}
			break
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}

	ws := pahoTLS(t, "wss://"+b.HTTPSAddr()+"/mqtt", "wss-client", clientTLS(ca))
	toWS := pahoSubscribe(t, ws, "wss/in", 1)
	ws.Publish("https/from-wss", 1, false, "over wss").WaitTimeout(5 * time.Second)
	if m := next(t, in); m.payload != "over wss" {
		t.Fatalf("plain got %+v from wss", m)
	}
	big := strings.Repeat("w", 200<<10)
	plain.Publish("wss/in", 1, false, big).WaitTimeout(5 * time.Second)
	if m := next(t, toWS); m.payload != big {
		t.Fatalf("wss client got %d bytes; want %d", len(m.payload), len(big))
	}
	if sn := b.Snapshot(); sn.TLS.Connections < 1 || sn.ConnectionsByTransport["websocket"] != 1 {
		t.Fatalf("TLS %+v, websocket connections %d", sn.TLS, sn.ConnectionsByTransport["websocket"])
	}
}

// A TLS ClientHello on the plain MQTT port, plain MQTT on the TLS port and
// HTTP on the MQTT port are each closed with a log line saying so, and
// counted.
func TestProtocolMismatch(t *testing.T) {
	ca := newTestCA(t, "test-ca")
	var logs *logCapture
	b := startTLSBroker(t, ca, func(o *Options) {
		o.HTTPAddr = "127.0.0.1:0"
		o.HTTPSAddr = "127.0.0.1:0"
		logs = capture(o)
	})
	hello := clientHelloBytes(t)
	_, httpsPort, _ := net.SplitHostPort(b.HTTPSAddr())
	_, mqttPort, _ := net.SplitHostPort(b.MQTTAddr())
	_, tlsPort, _ := net.SplitHostPort(b.TLSAddr())
	_, httpPort, _ := net.SplitHostPort(b.HTTPAddr())
	for _, tc := range []struct {
		addr string
		send []byte
		kind string
		line string
	}{
		{b.MQTTAddr(), hello, "tls_on_plain", "closing connection: TLS handshake on the plain MQTT port " + mqttPort + "; use the TLS port (--tls-addr) or connect without TLS"},
		{b.TLSAddr(), connectBytes("plain", "", ""), "plain_on_tls", "closing connection: plain MQTT on the TLS port " + tlsPort + "; connect with TLS or use the plain MQTT port (--mqtt-addr)"},
		{b.MQTTAddr(), []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "http_on_mqtt", "closing connection: HTTP request on the MQTT port " + mqttPort},
		{b.HTTPAddr(), hello, "tls_on_plain", "closing connection: TLS handshake on the plain HTTP port " + httpPort},
		{b.HTTPAddr(), connectBytes("x", "", ""), "mqtt_on_http", "closing connection: MQTT CONNECT on the HTTP port " + httpPort},
		{b.HTTPSAddr(), []byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"), "plain_on_tls", "closing connection: plain HTTP on the HTTPS port " + httpsPort + "; use https:// here or http:// on the HTTP port (--http-addr)"},
	} {
		before := b.Snapshot().TLS.ProtocolMismatches[tc.kind]
		rc := dialRaw(t, tc.addr)
		rc.write(tc.send)
		if tc.send[0] == 'G' { // an HTTP client is told in a 400 response
			_ = rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
			line, err := rc.r.ReadString('\n')
			if err != nil || line != "HTTP/1.1 400 Bad Request\r\n" {
				t.Fatalf("%s: got %q %v; want a 400 response", tc.kind, line, err)
			}
		}
		rc.expectClosed(5 * time.Second)
		waitFor(t, 5*time.Second, "the "+tc.kind+" counter", func() bool {
			return b.Snapshot().TLS.ProtocolMismatches[tc.kind] == before+1
		})
		if !strings.Contains(logs.String(), tc.line) {
			t.Fatalf("log lacks %q:\n%s", tc.line, logs.String())
		}
	}
	// The Prometheus text has the counters.
	sn := b.Snapshot()
	text := string(sn.appendPrometheus(nil))
	if !strings.Contains(text, `tinymq_protocol_mismatch_total{kind="tls_on_plain"} 2`) {
		t.Fatalf("metrics:\n%s", text)
	}
}

// clientHelloBytes captures the first flight of a Go TLS client.
func clientHelloBytes(t *testing.T) []byte {
	t.Helper()
	a, bconn := net.Pipe()
	go func() {
		c := tls.Client(a, &tls.Config{ServerName: "x", InsecureSkipVerify: true})
		_ = c.Handshake()
	}()
	buf := make([]byte, 4096)
	_ = bconn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := bconn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	bconn.Close()
	if buf[0] != 0x16 {
		t.Fatalf("not a handshake record: %x", buf[:5])
	}
	return buf[:n]
}

// A client that opens the TLS port and sends nothing, or half a
// ClientHello, is closed after the connect timeout; meanwhile such clients,
// more than there are handshake workers, do not stop a good client.
func TestTLSHandshakeTimeout(t *testing.T) {
	ca := newTestCA(t, "test-ca")
	b := startTLSBroker(t, ca, func(o *Options) {
		o.ConnectTimeout = 2 * time.Second
		o.TLSHandshakeWorkers = 2
	})
	hello := clientHelloBytes(t)
	var slow []*rawClient
	for i := range 12 {
		rc := dialRaw(t, b.TLSAddr())
		if i%2 == 1 {
			rc.write(hello[:len(hello)/2])
		}
		slow = append(slow, rc)
	}
	t0 := time.Now()
	rc := dialTLSRaw(t, b.TLSAddr(), clientTLS(ca))
	if ack := rc.connect(connectPacket("good", "", "")); ack.ReturnCode != 0 {
		t.Fatalf("CONNACK %d", ack.ReturnCode)
	}
	if d := time.Since(t0); d > 1500*time.Millisecond {
		t.Fatalf("good client took %v behind 12 stalled ones; want well under the 2 s timeout", d)
	}
	for _, s := range slow {
		s.expectClosed(6 * time.Second)
	}
	if d := time.Since(t0); d < 1500*time.Millisecond {
		t.Fatalf("stalled clients closed after %v; want the 2 s connect timeout", d)
	}
}

// A handshake stalled after its ClientHello (on a worker) is cut by the
// connect timeout, and so are handshakes queued behind it; the gauge and
// the goroutines come back.
func TestTLSHandshakeStalledOnWorker(t *testing.T) {
	ca := newTestCA(t, "test-ca")
	b := startTLSBroker(t, ca, func(o *Options) {
		o.ConnectTimeout = time.Second
		o.TLSHandshakeWorkers = 1
	})
	base := settledGoroutines(t, b, ca)
	hello := clientHelloBytes(t)
	var conns []*rawClient
	for range 4 {
		rc := dialRaw(t, b.TLSAddr())
		rc.write(hello) // whole ClientHello, then never the Finished
		conns = append(conns, rc)
	}
	for _, rc := range conns {
		rc.expectClosed(5 * time.Second)
	}
	waitForGoroutines(t, base)
	waitFor(t, 5*time.Second, "failures counted", func() bool { return b.Snapshot().TLS.HandshakeFailures >= 1 })
	rc := dialTLSRaw(t, b.TLSAddr(), clientTLS(ca))
	if ack := rc.connect(connectPacket("after", "", "")); ack.ReturnCode != 0 {
		t.Fatalf("CONNACK %d", ack.ReturnCode)
	}
}

// No goroutine per connection: once 200 TLS clients have connected, the
// broker runs as many goroutines as before them.
func TestTLSNoGoroutinePerConnection(t *testing.T) {
	ca := newTestCA(t, "test-ca")
	b := startTLSBroker(t, ca, nil)
	base := settledGoroutines(t, b, ca)
	const n = 200
	conns := make([]*tls.Conn, 0, n)
	for i := range n {
		c, err := tlsDial(b.TLSAddr(), clientTLS(ca))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		rc := &rawClient{t: t, c: c, r: bufio.NewReader(c), ver: codec.V311}
		if ack := rc.connect(connectPacket(fmt.Sprint("idle-", i), "", "")); ack.ReturnCode != 0 {
			t.Fatalf("CONNACK %d", ack.ReturnCode)
		}
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if got := b.Snapshot().TLS.Connections; got != n {
		t.Fatalf("TLS connections %d; want %d", got, n)
	}
	// The clients' own tls.Conns run no goroutine either (Go clients do not
	// read unless asked), so the count is the broker's.
	waitForGoroutines(t, base)
}

// Certificates reload: a bad file keeps the old ones and says which file;
// a good one is used by new handshakes.
func TestTLSReload(t *testing.T) {
	ca := newTestCA(t, "test-ca")
	srv := ca.issue("tinymq-server", true)
	b := startBroker(t, func(o *Options) {
		o.TLSAddr = "127.0.0.1:0"
		o.TLSCert, o.TLSKey = srv.CertFile, srv.KeyFile
	})
	serial := func() string {
		c, err := tlsDial(b.TLSAddr(), clientTLS(ca))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	first := serial()
	// A broken certificate file: the error names it, the old one stays.
	orig := mustRead(t, srv.CertFile)
	writeFile(t, srv.CertFile, []byte("not a certificate"))
	err := b.reloadTLS()
	if err == nil || !strings.HasPrefix(err.Error(), srv.CertFile+": ") {
		t.Fatalf("reload of a bad cert: %v; want an error starting with the file name", err)
	}
	if got := serial(); got != first {
		t.Fatalf("after a failed reload the serial is %s; want %s", got, first)
	}
	writeFile(t, srv.CertFile, orig)
	// A new certificate and key.
	next := ca.issue("tinymq-server-2", true)
	writeFile(t, srv.CertFile, mustRead(t, next.CertFile))
	writeFile(t, srv.KeyFile, mustRead(t, next.KeyFile))
	if err := b.reloadTLS(); err != nil {
		t.Fatal(err)
	}
	if got := serial(); got == first {
		t.Fatal("after a reload the old certificate is still served")
	}
}

// Bad certificate or key files fail New with the file and the reason.
func TestTLSBadFiles(t *testing.T) {
	ca := newTestCA(t, "test-ca")
	srv := ca.issue("tinymq-server", true)
	other := ca.issue("other", true)
	for _, tc := range []struct {
		cert, key, want string
	}{
		{"/nonexistent/cert.pem", srv.KeyFile, "/nonexistent/cert.pem: no such file or directory"},
		{srv.CertFile, "/nonexistent/key.pem", "/nonexistent/key.pem: no such file or directory"},
		{srv.KeyFile, srv.KeyFile, srv.KeyFile + ": no PEM certificate found"},
		{srv.CertFile, other.KeyFile, other.KeyFile + ": tls: private key does not match public key"},
	} {
		o := DefaultOptions()
		o.MQTTAddr = "127.0.0.1:0"
		o.TLSAddr = "127.0.0.1:0"
		o.TLSCert, o.TLSKey = tc.cert, tc.key
		_, err := New(o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("cert %s key %s: %v; want %q", tc.cert, tc.key, err, tc.want)
		}
	}
	o := DefaultOptions()
	o.TLSAddr = "127.0.0.1:0"
	if _, err := New(o); err == nil {
		t.Error("TLSAddr without a certificate: no error")
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := readFileErr(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, p string, b []byte) []byte {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

// connectBytes is connectPacket encoded.
func connectBytes(id, user, pass string) []byte {
	p := connectPacket(id, user, pass)
	return p.AppendTo(nil)
}

// waitForGoroutines waits until no handshake goroutine is left and at most
// n goroutines run, and dumps them if that does not happen.
func waitForGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		pool := strings.Count(string(buf), "engine.(*tlsPool).work")
		if pool == 0 && runtime.NumGoroutine() <= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines (%d handshake workers) after 5 s; want at most %d and no worker:\n%s", runtime.NumGoroutine(), pool, n, buf)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// settledGoroutines is the goroutine count of a started broker once one
// TLS client has come and gone (every lazily started goroutine runs).
func settledGoroutines(t *testing.T, b *Broker, ca *testCA) int {
	t.Helper()
	c, err := tlsDial(b.TLSAddr(), clientTLS(ca))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	waitFor(t, 5*time.Second, "the warm-up client gone", func() bool { return b.Stats().Connected == 0 })
	waitForGoroutines(t, 1<<30)
	return runtime.NumGoroutine()
}
