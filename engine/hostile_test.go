package engine

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
	"github.com/tinymq/tinymq/codec/codectest"
)

// Hostile clients against a running broker while good ones keep a stream
// going. Every attack runs on its own connection, all of them at once; the
// test checks that each bad connection is closed by the broker, that the
// broker counted them, that no good client lost a QoS 1 message or its
// connection, and that the broker's heap stayed bounded.

// attackKind says how the broker is expected to end an attack.
type attackKind uint8

const (
	kindProtocol    attackKind = iota // closed as malformed or oversize (counted)
	kindTimeout                       // closed by the connect timeout (counted)
	kindEither                        // random bytes: one of the above
	kindClosed                        // closed, refused with a CONNACK (no error counter)
	kindSlow                          // closed as a slow consumer (counted)
	kindClientClose                   // the client gives up first; the broker must clean up
)

type attack struct {
	name string
	kind attackKind
	ws   bool // upgrade to WebSocket on the HTTP listener first
	// run sends the attack on c. A write error after the broker closed c
	// is expected and not reported.
	run func(c net.Conn) error
}

// hostileConnect is a valid clean-session CONNECT.
func hostileConnect(id string) []byte {
	return (&codec.Connect{ProtocolName: []byte("MQTT"), Version: codec.V311, CleanStart: true, KeepAlive: 60, ClientID: []byte(id)}).AppendTo(nil)
}

func sendAll(parts ...[]byte) func(net.Conn) error {
	return func(c net.Conn) error {
		for _, p := range parts {
			if _, err := c.Write(p); err != nil {
				return nil // closed by the broker already
			}
		}
		return nil
	}
}

// wsMasked is one masked client WebSocket frame.
func wsMasked(fin bool, op byte, payload []byte, key [4]byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	f := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	case n <= 0xffff:
		f = binary.BigEndian.AppendUint16(append(f, 0x80|126), uint16(n))
	default:
		f = binary.BigEndian.AppendUint64(append(f, 0x80|127), uint64(n))
	}
	f = append(f, key[:]...)
	for i, c := range payload {
		f = append(f, c^key[i&3])
	}
	return f
}

// wsHandshake upgrades c at /mqtt.
func wsHandshake(c net.Conn) error {
	req := "GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got []byte
	var one [1]byte
	for !bytes.HasSuffix(got, []byte("\r\n\r\n")) {
		if _, err := c.Read(one[:]); err != nil {
			return fmt.Errorf("handshake: %w (%q)", err, got)
		}
		got = append(got, one[0])
	}
	if !bytes.HasPrefix(got, []byte("HTTP/1.1 101")) {
		return fmt.Errorf("handshake answered %q", got)
	}
	_ = c.SetReadDeadline(time.Time{})
	return nil
}

// expectBrokerClose reads (and discards) until the broker closes c.
func expectBrokerClose(c net.Conn, d time.Duration) error {
	_ = c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 4096)
	for {
		if _, err := c.Read(buf); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return fmt.Errorf("still open after %v", d)
			}
			return nil // EOF or reset
		}
	}
}

// readFrame reads one MQTT packet from r.
func readFrame(r *bufio.Reader) (codec.FixedHeader, []byte, error) {
	var hdr []byte
	var h codec.FixedHeader
	for {
		c, err := r.ReadByte()
		if err != nil {
			return h, nil, err
		}
		hdr = append(hdr, c)
		var n int
		if h, n, err = codec.ReadFrame(hdr, 0); err != nil {
			return h, nil, err
		}
		if n > 0 || h.HeaderLen > 0 {
			break
		}
	}
	body := make([]byte, h.Remaining)
	_, err := io.ReadFull(r, body)
	return h, body, err
}

// goodSub is a well-behaved subscriber: it acknowledges QoS 1 and records
// every sequence number it receives.
type goodSub struct {
	c    net.Conn
	mu   sync.Mutex
	seen map[int]bool
	err  atomic.Pointer[error]
}

func (g *goodSub) readLoop() {
	r := bufio.NewReader(g.c)
	for {
		h, body, err := readFrame(r)
		if err != nil {
			g.err.Store(&err)
			return
		}
		if h.Type != codec.TypePublish {
			continue
		}
		var p codec.Publish
		if err := p.Decode(codec.V311, h, body); err != nil {
			g.err.Store(&err)
			return
		}
		if p.QoS == 1 {
			if _, err := g.c.Write(codec.AppendAck(nil, codec.TypePuback, p.PacketID)); err != nil {
				g.err.Store(&err)
				return
			}
		}
		var seq int
		if _, err := fmt.Sscan(string(p.Payload), &seq); err == nil {
			g.mu.Lock()
			g.seen[seq] = true
			g.mu.Unlock()
		}
	}
}

func (g *goodSub) has(seq int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.seen[seq]
}

func heapAfterGC() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func TestHostileCorpus(t *testing.T) {
	const connectTimeout = 2 * time.Second
	b := startHTTPBroker(t, func(o *Options) {
		o.ConnectTimeout = connectTimeout
		o.MaxPacketSize = 64 * 1024
		o.MaxOutboundBytes = 256 * 1024
		// SlowConsumerAfter stays at its 30 s default: the control-packet
		// flood below must be cut by the outbound cap, not by that timer.
	})
	mqttAddr, httpAddr := b.MQTTAddr(), b.HTTPAddr()

	// Good clients: four subscribers (two at QoS 1, two at QoS 0) and a
	// publisher alternating QoS 1 and QoS 0.
	subs := make([]*goodSub, 4)
	for i := range subs {
		rc := connected(t, mqttAddr, fmt.Sprintf("good-sub-%d", i), true)
		rc.subscribe(1, codec.Subscription{Filter: []byte("good/#"), QoS: uint8(1 - i/2)})
		subs[i] = &goodSub{c: rc.c, seen: map[int]bool{}}
		_ = rc.c.SetReadDeadline(time.Time{}) // rawClient's reads left one
		go subs[i].readLoop()
	}
	pub := connected(t, mqttAddr, "good-pub", true)
	_ = pub.c.SetReadDeadline(time.Time{})
	var pubAcks atomic.Int64
	var pubErr atomic.Pointer[error]
	go func() {
		r := bufio.NewReader(pub.c)
		for {
			h, _, err := readFrame(r)
			if err != nil {
				pubErr.Store(&err)
				return
			}
			if h.Type == codec.TypePuback {
				pubAcks.Add(1)
			}
		}
	}()
	stopPub := make(chan struct{})
	pubDone := make(chan int)
	go func() {
		seq := 0
		tk := time.NewTicker(2 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stopPub:
				pubDone <- seq
				return
			case <-tk.C:
			}
			q := uint8(1 - seq%2)
			p := codec.Publish{Topic: []byte("good/stream"), Payload: []byte(fmt.Sprint(seq)), QoS: q, PacketID: uint16(seq%60000 + 1)}
			if _, err := pub.c.Write(p.AppendTo(nil, codec.V311)); err != nil {
				pubDone <- seq
				return
			}
			seq++
		}
	}()

	heap0 := heapAfterGC()
	st0, mismatch0 := b.Stats(), mismatches(b)

	// The corpus.
	var attacks []attack
	for _, bad := range codectest.BadVectors {
		if bad.Version != codec.V311 {
			continue // 5.0 encodings are either refused as 5.0 or valid 3.1.1
		}
		k := kindProtocol
		if bad.Code == codec.UnsupportedProtocolVersion {
			k = kindClosed // CONNACK 0x01, then close [MQTT-3.1.2-2]
		}
		if bad.Raw[0]>>4 == byte(codec.TypeConnect) {
			attacks = append(attacks, attack{"vector/" + bad.Name, k, false, sendAll(bad.Raw)})
		} else {
			attacks = append(attacks, attack{"vector/" + bad.Name, k, false, sendAll(hostileConnect("v-"+bad.Name), bad.Raw)})
		}
	}
	oversize := codec.AppendFixedHeader(nil, codec.TypePublish, 0, 10<<20)
	full := hostileConnect("truncated")
	attacks = append(attacks,
		attack{"first/five-byte-varint", kindProtocol, false, sendAll([]byte{0x10, 0xff, 0xff, 0xff, 0xff, 0x7f})},
		attack{"first/reserved-type-15", kindProtocol, false, sendAll([]byte{0xf0, 0})},
		attack{"first/publish-before-connect", kindProtocol, false, sendAll((&codec.Publish{Topic: []byte("x")}).AppendTo(nil, codec.V311))},
		attack{"first/connect-oversize", kindProtocol, false, sendAll(codec.AppendFixedHeader(nil, codec.TypeConnect, 0, 1<<20))},
		attack{"after-connect/publish-oversize", kindProtocol, false, sendAll(hostileConnect("big"), oversize)},
		attack{"after-connect/second-connect", kindProtocol, false, sendAll(hostileConnect("twice"), hostileConnect("twice"))},
		attack{"after-connect/subscribe-no-filters", kindProtocol, false, sendAll(hostileConnect("nofilter"), []byte{0x82, 2, 0, 7})},
		attack{"after-connect/publish-wildcard", kindProtocol, false, sendAll(hostileConnect("wild"), []byte{0x30, 5, 0, 3, 'a', '/', '+'})},
		attack{"after-connect/connack-from-client", kindProtocol, false, sendAll(hostileConnect("connack"), []byte{0x20, 2, 0, 0})},
		attack{"http/get", kindProtocol, false, sendAll([]byte("GET / HTTP/1.1\r\nHost: broker\r\n\r\n"))},
		attack{"http/post-publish", kindProtocol, false, sendAll([]byte("POST /publish/x HTTP/1.1\r\nHost: broker\r\nContent-Length: 2\r\n\r\nhi"))},
		attack{"tls/client-hello", kindProtocol, false, func(c net.Conn) error {
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			err := tls.Client(c, &tls.Config{ServerName: "broker", InsecureSkipVerify: true}).Handshake()
			if err == nil {
				return errors.New("TLS handshake succeeded on the MQTT port")
			}
			_ = c.SetDeadline(time.Time{})
			return nil
		}},
		attack{"truncated/connect-then-close", kindClientClose, false, sendAll(full[:len(full)/2])},
		attack{"truncated/varint-then-close", kindClientClose, false, sendAll([]byte{0x10, 0xff})},
		attack{"truncated/publish-then-close", kindClientClose, false, sendAll(hostileConnect("tp"), (&codec.Publish{Topic: []byte("good/stream"), Payload: bytes.Repeat([]byte("z"), 1000)}).AppendTo(nil, codec.V311)[:500])},
		attack{"mqtt/pingreq-flood-no-read", kindSlow, false, func(c net.Conn) error {
			if _, err := c.Write(hostileConnect("pinger")); err != nil {
				return err
			}
			chunk := bytes.Repeat(codec.AppendPingreq(nil), 32*1024) // 64 KiB
			for i := 0; i < 256; i++ {                               // 16 MiB of PINGREQ, never reading a PINGRESP
				_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write(chunk); err != nil {
					return nil // cut off, as it should be
				}
			}
			return nil
		}},
	)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20; i++ {
		junk := make([]byte, 64+rng.IntN(1024))
		for j := range junk {
			junk[j] = byte(rng.Uint32())
		}
		attacks = append(attacks, attack{fmt.Sprintf("random/%d", i), kindEither, false, sendAll(junk)})
	}
	for i := 0; i < 5; i++ {
		slow := hostileConnect("slowloris-" + strings.Repeat("s", 80))
		attacks = append(attacks, attack{fmt.Sprintf("slowloris/%d", i), kindTimeout, false, func(c net.Conn) error {
			for _, x := range slow { // 1 byte per 100 ms: ~10 s for the whole CONNECT
				if _, err := c.Write([]byte{x}); err != nil {
					return nil
				}
				time.Sleep(100 * time.Millisecond)
			}
			return errors.New("the whole slow CONNECT was sent before the connect timeout closed the socket")
		}})
	}
	key := [4]byte{1, 2, 3, 4}
	wsConnect := func(id string) []byte { return wsMasked(true, wsOpBinary, hostileConnect(id), key) }
	// The WebSocket ping flood: 80 MiB of pings from a client that never
	// reads its pongs. The heap is measured while it is still connected.
	const pingFrames = 640 * 1024
	pingSent := make(chan struct{})
	heapChecked := make(chan struct{})
	attacks = append(attacks,
		attack{"ws/oversize-frame", kindProtocol, true, sendAll(wsConnect("ws-big"), []byte{0x82, 0xff, 0, 0, 1, 0, 0, 0, 0, 0})},
		attack{"ws/oversize-frame-before-connect", kindProtocol, true, sendAll(binary.BigEndian.AppendUint64([]byte{0x82, 0x80 | 127}, 1<<40))},
		attack{"ws/unmasked", kindProtocol, true, sendAll([]byte{0x82, 2, 0xc0, 0})},
		attack{"ws/text-frame", kindProtocol, true, sendAll(wsMasked(true, wsOpText, hostileConnect("text"), key))},
		attack{"ws/oversize-ping", kindProtocol, true, sendAll(wsConnect("ws-bigping"), wsMasked(true, wsOpPing, make([]byte, 200), key))},
		attack{"ws/small-frame-flood", kindProtocol, true, func(c net.Conn) error {
			var all []byte
			for _, x := range hostileConnect("ws-small") {
				all = append(all, wsMasked(true, wsOpBinary, []byte{x}, key)...)
			}
			for i := 0; i < 20000; i++ { // 10,000 PINGREQs, one byte per frame
				all = append(all, wsMasked(true, wsOpBinary, []byte{[]byte{0xc0, 0}[i%2]}, key)...)
			}
			all = append(all, wsMasked(true, wsOpBinary, []byte{0x00, 0x00}, key)...) // reserved type 0
			return sendAll(all)(c)
		}},
		attack{"ws/ping-flood-no-read", kindProtocol, true, func(c net.Conn) error {
			if _, err := c.Write(wsConnect("ws-pinger")); err != nil {
				return err
			}
			ping := wsMasked(true, wsOpPing, bytes.Repeat([]byte("p"), 125), key)
			chunk := bytes.Repeat(ping, 512)
			for i := 0; i < pingFrames/512; i++ {
				_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write(chunk); err != nil {
					close(pingSent)
					return fmt.Errorf("ping flood cut off after %d frames: %w", i*512, err)
				}
			}
			close(pingSent)
			<-heapChecked
			return sendAll(wsMasked(true, 0x3, nil, key))(c) // reserved opcode ends it
		}},
	)

	type result struct {
		name string
		err  error
	}
	results := make(chan result, len(attacks))
	expected := map[attackKind]int{}
	start := time.Now()
	for _, a := range attacks {
		expected[a.kind]++
		go func(a attack) {
			addr := mqttAddr
			if a.ws {
				addr = httpAddr
			}
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				results <- result{a.name, err}
				return
			}
			defer c.Close()
			if a.ws {
				if err := wsHandshake(c); err != nil {
					results <- result{a.name, err}
					return
				}
			}
			if err := a.run(c); err != nil {
				results <- result{a.name, err}
				return
			}
			if a.kind == kindClientClose {
				results <- result{a.name, nil}
				return
			}
			results <- result{a.name, expectBrokerClose(c, connectTimeout+clockLag*time.Second+3*time.Second)}
		}(a)
	}

	// The heap while the ping flooder is connected and its flood consumed.
	select {
	case <-pingSent:
	case <-time.After(20 * time.Second):
		t.Fatal("the WebSocket ping flood was not consumed in 20 s")
	}
	floodBytes := uint64(pingFrames) * uint64(len(wsMasked(true, wsOpPing, make([]byte, 125), key)))
	deadline := time.Now().Add(10 * time.Second)
	for b.Snapshot().BytesReceived["websocket"] < floodBytes {
		if time.Now().After(deadline) {
			t.Fatalf("the broker read %d of the ping flood's %d bytes in 10 s", b.Snapshot().BytesReceived["websocket"], floodBytes)
		}
		time.Sleep(10 * time.Millisecond)
	}
	heapMid := heapAfterGC()
	close(heapChecked)

	for range attacks {
		r := <-results
		if r.err != nil {
			t.Errorf("%s: %v", r.name, r.err)
		}
	}
	elapsed := time.Since(start)
	close(stopPub)
	last := <-pubDone
	// A final QoS 1 marker, then every QoS 1 message (even sequence
	// numbers) must have reached every subscriber.
	marker := last + last%2 // even: QoS 1
	if marker == last {
		p := codec.Publish{Topic: []byte("good/stream"), Payload: []byte(fmt.Sprint(marker)), QoS: 1, PacketID: 60001}
		pub.write(p.AppendTo(nil, codec.V311))
	} else {
		marker = last - 1
	}
	waitFor(t, 10*time.Second, "the marker at every subscriber", func() bool {
		for _, s := range subs {
			if !s.has(marker) {
				return false
			}
		}
		return true
	})
	for i, s := range subs {
		if e := s.err.Load(); e != nil {
			t.Fatalf("good subscriber %d lost its connection: %v", i, *e)
		}
		missing := 0
		for seq := 0; seq <= marker; seq += 2 {
			if !s.has(seq) {
				missing++
			}
		}
		if missing > 0 {
			t.Fatalf("good subscriber %d missed %d of %d QoS 1 messages", i, missing, marker/2+1)
		}
	}
	if e := pubErr.Load(); e != nil {
		t.Fatalf("good publisher lost its connection: %v", *e)
	}
	waitFor(t, 5*time.Second, "the publisher's PUBACKs", func() bool { return pubAcks.Load() >= int64(marker/2) })

	st := b.Stats()
	// HTTP and TLS on the MQTT port are closed as protocol mismatches
	// (their own counter, with a log line saying which), not as malformed.
	protoErrs := (st.Malformed + st.Oversize + mismatches(b)) - (st0.Malformed + st0.Oversize + mismatch0)
	timeouts := st.ConnectTimeouts - st0.ConnectTimeouts
	slow := st.SlowConsumerDisconnects - st0.SlowConsumerDisconnects
	t.Logf("%d attacks in %v (protocol %d, timeout %d, either %d, refused %d, slow %d, client-close %d); published %d; "+
		"malformed+oversize +%d, connect timeouts +%d, slow consumers +%d; heap %d -> %d KiB (flood connected)",
		len(attacks), elapsed.Round(time.Millisecond), expected[kindProtocol], expected[kindTimeout], expected[kindEither],
		expected[kindClosed], expected[kindSlow], expected[kindClientClose], last, protoErrs, timeouts, slow, heap0>>10, heapMid>>10)
	if protoErrs < uint64(expected[kindProtocol]) {
		t.Errorf("malformed+oversize grew by %d; want at least %d", protoErrs, expected[kindProtocol])
	}
	if timeouts < uint64(expected[kindTimeout]) {
		t.Errorf("connect timeouts grew by %d; want at least %d", timeouts, expected[kindTimeout])
	}
	if protoErrs+timeouts < uint64(expected[kindProtocol]+expected[kindTimeout]+expected[kindEither]) {
		t.Errorf("malformed+oversize+timeouts grew by %d; want at least %d", protoErrs+timeouts,
			expected[kindProtocol]+expected[kindTimeout]+expected[kindEither])
	}
	if slow < uint64(expected[kindSlow]) {
		t.Errorf("slow-consumer disconnects grew by %d; want at least %d", slow, expected[kindSlow])
	}
	// Only the five good clients remain.
	waitFor(t, 5*time.Second, "only the good clients left", func() bool { return b.Stats().Connected == 5 })
	if s := b.Stats().Sessions; s != 5 {
		t.Fatalf("%d sessions; want the 5 good ones", s)
	}
	const bound = 64 << 20
	if heapMid > heap0+bound {
		t.Fatalf("heap grew from %d to %d MiB with the ping flooder connected; bound +64 MiB", heap0>>20, heapMid>>20)
	}
	if h := heapAfterGC(); h > heap0+bound {
		t.Fatalf("heap grew from %d to %d MiB; bound +64 MiB", heap0>>20, h>>20)
	}
	if elapsed > 30*time.Second {
		t.Fatalf("the corpus took %v; bound 30 s", elapsed)
	}
}

// mismatches is the number of connections closed for speaking the wrong
// protocol on a port (TLS or HTTP on the MQTT port, and so on).
func mismatches(b *Broker) uint64 {
	var n uint64
	for _, v := range b.Snapshot().TLS.ProtocolMismatches {
		n += v
	}
	return n
}
