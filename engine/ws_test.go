package engine

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/tinymq/tinymq/codec"
)

// wsClient is a byte-level WebSocket client: it masks what it sends and
// reassembles the MQTT bytes of the server's binary frames.
type wsClient struct {
	t    testing.TB
	c    net.Conn
	r    *bufio.Reader
	mqtt []byte // MQTT bytes received and not yet read
}

// dialWS performs the handshake at path offering protocols and returns the
// client and the 101 response.
func dialWS(t testing.TB, addr, path, protocols string) (*wsClient, *http.Response) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var k [16]byte
	_, _ = rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	req := "GET " + path + " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + "\r\n"
	if protocols != "" {
		req += "Sec-WebSocket-Protocol: " + protocols + "\r\n"
	}
	if _, err := c.Write([]byte(req + "\r\n")); err != nil {
		t.Fatal(err)
	}
	w := &wsClient{t: t, c: c, r: bufio.NewReader(c)}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(w.r, nil)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if resp.StatusCode == 101 {
		sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		if got, want := resp.Header.Get("Sec-WebSocket-Accept"), base64.StdEncoding.EncodeToString(sum[:]); got != want {
			t.Fatalf("Sec-WebSocket-Accept %q; want %q", got, want)
		}
	}
	return w, resp
}

// frame sends one masked frame.
func (w *wsClient) frame(fin bool, op byte, payload []byte) {
	w.t.Helper()
	b0 := op
	if fin {
		b0 |= 0x80
	}
	hdr := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	case n <= 0xffff:
		hdr = binary.BigEndian.AppendUint16(append(hdr, 0x80|126), uint16(n))
	default:
		hdr = binary.BigEndian.AppendUint64(append(hdr, 0x80|127), uint64(n))
	}
	var key [4]byte
	_, _ = rand.Read(key[:])
	hdr = append(hdr, key[:]...)
	masked := make([]byte, len(payload))
	for i := range payload {
		masked[i] = payload[i] ^ key[i&3]
	}
	if _, err := w.c.Write(append(hdr, masked...)); err != nil {
		w.t.Fatalf("write frame: %v", err)
	}
}

// readFrame reads one server frame (which must not be masked).
func (w *wsClient) readFrame(d time.Duration) (op byte, payload []byte, err error) {
	_ = w.c.SetReadDeadline(time.Now().Add(d))
	var h [2]byte
	if _, err := io.ReadFull(w.r, h[:]); err != nil {
		return 0, nil, err
	}
	if h[1]&0x80 != 0 {
		w.t.Fatal("server frame is masked")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var e [2]byte
		if _, err := io.ReadFull(w.r, e[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(e[:]))
	case 127:
		var e [8]byte
		if _, err := io.ReadFull(w.r, e[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(e[:])
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(w.r, payload)
	return h[0] & 0x0f, payload, err
}

// packet returns the next MQTT packet from binary frames.
func (w *wsClient) packet(d time.Duration) (codec.FixedHeader, []byte) {
	w.t.Helper()
	for {
		h, n, err := codec.ReadFrame(w.mqtt, 1<<20)
		if err != nil {
			w.t.Fatalf("bad MQTT bytes from server: %v", err)
		}
		if n > 0 {
			body := append([]byte(nil), w.mqtt[h.HeaderLen:n]...)
			w.mqtt = w.mqtt[n:]
			return h, body
		}
		op, p, err := w.readFrame(d)
		if err != nil {
			w.t.Fatalf("reading frame: %v", err)
		}
		if op != wsOpBinary {
			w.t.Fatalf("server sent opcode %d; want binary [MQTT-6.0.0-1]", op)
		}
		w.mqtt = append(w.mqtt, p...)
	}
}

func (w *wsClient) expectClose(d time.Duration) (code uint16) {
	w.t.Helper()
	for {
		op, p, err := w.readFrame(d)
		if err != nil {
			return 0 // closed without a close frame
		}
		if op == wsOpClose {
			if len(p) >= 2 {
				code = binary.BigEndian.Uint16(p)
			}
			if _, _, err := w.readFrame(d); err == nil {
				w.t.Fatal("connection still open after close frame")
			}
			return code
		}
	}
}

// TestWebSocketFramesAndPacketsDoNotAlign proves [MQTT-6.0.0-2]: a packet
// split over frames (and over a fragmented message) and several packets in
// one frame are all understood.
func TestWebSocketFramesAndPacketsDoNotAlign(t *testing.T) {
	b := startHTTPBroker(t, nil)
	w, resp := dialWS(t, b.HTTPAddr(), "/mqtt", "mqtt")
	if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Protocol") != "mqtt" {
		t.Fatalf("handshake: %d protocol %q [MQTT-6.0.0-4]", resp.StatusCode, resp.Header.Get("Sec-WebSocket-Protocol"))
	}
	conn := connectPacket("ws1", "", "")
	raw := conn.AppendTo(nil)
	w.frame(true, wsOpBinary, raw[:3]) // CONNECT over two messages
	w.frame(true, wsOpBinary, raw[3:])
	if h, _ := w.packet(5 * time.Second); h.Type != codec.TypeConnack {
		t.Fatalf("got %v; want CONNACK", h.Type)
	}
	sub := codec.Subscribe{PacketID: 1, Subs: []codec.Subscription{{Filter: []byte("w/#"), QoS: 1}}}
	pub := codec.Publish{Topic: []byte("w/self"), Payload: []byte("hi"), QoS: 1, PacketID: 2}
	both := append(sub.AppendTo(nil, codec.V311), pub.AppendTo(nil, codec.V311)...)
	// Both packets in one message, fragmented into three frames.
	w.frame(false, wsOpBinary, both[:4])
	w.frame(false, wsOpContinuation, both[4:9])
	w.frame(true, wsOpContinuation, both[9:])
	seen := map[codec.Type]int{}
	for range 3 {
		h, _ := w.packet(5 * time.Second)
		seen[h.Type]++
	}
	if seen[codec.TypeSuback] != 1 || seen[codec.TypePuback] != 1 || seen[codec.TypePublish] != 1 {
		t.Fatalf("got %v; want SUBACK, PUBACK, PUBLISH", seen)
	}
	// A ping is answered with a pong carrying the same data.
	w.frame(true, wsOpPing, []byte("abc"))
	op, p, err := w.readFrame(5 * time.Second)
	if err != nil || op != wsOpPong || string(p) != "abc" {
		t.Fatalf("pong: %d %q %v", op, p, err)
	}
	// A large packet in a 64-bit-length frame.
	big := codec.Publish{Topic: []byte("w/big"), Payload: []byte(strings.Repeat("z", 70000))}
	w.frame(true, wsOpBinary, big.AppendTo(nil, codec.V311))
	h, body := w.packet(5 * time.Second)
	var got codec.Publish
	if err := got.Decode(codec.V311, h, body); err != nil || len(got.Payload) != 70000 {
		t.Fatalf("big publish: %v %d", err, len(got.Payload))
	}
	st := b.Snapshot()
	if st.ConnectionsByTransport["websocket"] != 1 || st.WebSocketUpgrades != 1 {
		t.Fatalf("websocket gauges: %+v %d", st.ConnectionsByTransport, st.WebSocketUpgrades)
	}
	// DISCONNECT ends the WebSocket with a normal close frame.
	w.frame(true, wsOpBinary, []byte{0xe0, 0x00})
	if code := w.expectClose(5 * time.Second); code != 1000 {
		t.Fatalf("close after DISCONNECT: %d; want 1000", code)
	}
}

func TestWebSocketProtocolErrors(t *testing.T) {
	b := startHTTPBroker(t, nil)
	// A text frame closes the connection [MQTT-6.0.0-1].
	w, _ := dialWS(t, b.HTTPAddr(), "/mqtt", "mqtt")
	w.frame(true, wsOpText, []byte("hello"))
	if code := w.expectClose(5 * time.Second); code != 1002 {
		t.Fatalf("text frame: close code %d; want 1002", code)
	}
	// An unmasked client frame closes the connection (RFC 6455 5.1).
	w, _ = dialWS(t, b.HTTPAddr(), "/mqtt", "mqtt")
	if _, err := w.c.Write([]byte{0x82, 0x02, 0x10, 0x00}); err != nil {
		t.Fatal(err)
	}
	if code := w.expectClose(5 * time.Second); code != 1002 {
		t.Fatalf("unmasked frame: close code %d; want 1002", code)
	}
	// A frame larger than the maximum packet size is refused from its header.
	w, _ = dialWS(t, b.HTTPAddr(), "/mqtt", "mqtt")
	hdr := binary.BigEndian.AppendUint64([]byte{0x82, 0x80 | 127}, 1<<30)
	if _, err := w.c.Write(append(hdr, 1, 2, 3, 4)); err != nil {
		t.Fatal(err)
	}
	if code := w.expectClose(5 * time.Second); code != 1009 {
		t.Fatalf("huge frame: close code %d; want 1009", code)
	}
	// A close frame is echoed.
	w, _ = dialWS(t, b.HTTPAddr(), "/mqtt", "mqtt")
	w.frame(true, wsOpClose, []byte{0x03, 0xe8})
	if code := w.expectClose(5 * time.Second); code != 1000 {
		t.Fatalf("close echo: %d; want 1000", code)
	}
	// A subprotocol list without mqtt is refused [MQTT-6.0.0-3]; the legacy
	// mqttv3.1 is accepted and echoed.
	if _, resp := dialWS(t, b.HTTPAddr(), "/mqtt", "chat"); resp.StatusCode != 400 {
		t.Fatalf("wrong subprotocol: %d; want 400", resp.StatusCode)
	}
	if _, resp := dialWS(t, b.HTTPAddr(), "/mqtt", "mqttv3.1"); resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Protocol") != "mqttv3.1" {
		t.Fatalf("mqttv3.1: %d %q", resp.StatusCode, resp.Header.Get("Sec-WebSocket-Protocol"))
	}
	// A malformed MQTT packet inside good frames closes only that client.
	w, _ = dialWS(t, b.HTTPAddr(), "/mqtt", "mqtt")
	w.frame(true, wsOpBinary, []byte{0x10, 0x02, 0x00, 0x00}) // CONNECT with a broken protocol name
	if _, _, err := w.readFrame(5 * time.Second); err == nil {
		if _, _, err := w.readFrame(5 * time.Second); err == nil {
			t.Fatal("connection not closed after a malformed CONNECT")
		}
	}
	if b.Snapshot().Closed["malformed"] < 4 {
		t.Fatalf("malformed not counted: %v", b.Snapshot().Closed)
	}
}

// pahoWS connects the Go paho client over WebSocket.
func pahoWS(t testing.TB, url, id string) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).SetProtocolVersion(4)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("paho over websocket %s: %v", url, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// TestWebSocketBridgesToTCP: a WebSocket client and a TCP client exchange
// messages both ways, on /mqtt and on the dedicated listener.
func TestWebSocketBridgesToTCP(t *testing.T) {
	b := startHTTPBroker(t, func(o *Options) { o.WSAddr = "127.0.0.1:0" })
	tcp := pahoClient(t, b.MQTTAddr(), "tcp", true)
	tcpIn := pahoSubscribe(t, tcp, "from-ws/#", 1)
	for i, url := range []string{"ws://" + b.HTTPAddr() + "/mqtt", "ws://" + b.WSAddr() + "/"} {
		id := []string{"door", "dedicated"}[i]
		ws := pahoWS(t, url, id)
		wsIn := pahoSubscribe(t, ws, "to-ws/"+id, 2)
		if tok := ws.Publish("from-ws/"+id, 1, false, "hello from "+id); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("ws publish: %v", tok.Error())
		}
		if m := next(t, tcpIn); m.payload != "hello from "+id {
			t.Fatalf("tcp got %+v", m)
		}
		tcp.Publish("to-ws/"+id, 2, false, "back to "+id).WaitTimeout(5 * time.Second)
		if m := next(t, wsIn); m.payload != "back to "+id || m.qos != 2 {
			t.Fatalf("ws got %+v", m)
		}
	}
	// The dedicated listener serves nothing but the upgrade.
	if code, _, _ := do(t, "GET", "http://"+b.WSAddr()+"/healthz", ""); code != 426 {
		t.Fatalf("plain GET on the WebSocket listener: %d; want 426", code)
	}
}

// TestWebSocketAuth: with an API key, WebSocket clients authenticate in
// CONNECT like TCP clients.
func TestWebSocketAuth(t *testing.T) {
	b := startHTTPBroker(t, func(o *Options) { o.APIKey = "k3y" })
	w, resp := dialWS(t, b.HTTPAddr(), "/mqtt", "mqtt")
	if resp.StatusCode != 101 {
		t.Fatalf("upgrade needs no bearer token: %d", resp.StatusCode)
	}
	w.frame(true, wsOpBinary, func() []byte { p := connectPacket("x", "", "wrong"); return p.AppendTo(nil) }())
	h, body := w.packet(5 * time.Second)
	var ack codec.Connack
	if err := ack.Decode(codec.V311, h, body); err != nil || ack.ReturnCode != 5 {
		t.Fatalf("wrong key: %v return code %d; want 5", err, ack.ReturnCode)
	}
	w, _ = dialWS(t, b.HTTPAddr(), "/mqtt", "mqtt")
	w.frame(true, wsOpBinary, func() []byte { p := connectPacket("x", "", "k3y"); return p.AppendTo(nil) }())
	h, body = w.packet(5 * time.Second)
	if err := ack.Decode(codec.V311, h, body); err != nil || ack.ReturnCode != 0 {
		t.Fatalf("right key: %v return code %d", err, ack.ReturnCode)
	}
}
