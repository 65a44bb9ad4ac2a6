package engine

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tinymq/tinymq/codec"
)

// proxyV2 builds a version 2 header: PROXY over TCP/IPv4 or IPv6 from src
// (cmd 1), or LOCAL (cmd 0, src ignored).
func proxyV2(cmd byte, src string, tlvs int) []byte {
	h := append([]byte(nil), proxyV2Sig...)
	h = append(h, 0x20|cmd)
	var addr []byte
	fam := byte(0)
	if cmd == 1 {
		ap := netipMust(src)
		dst := netipMust("10.0.0.1:8883")
		if ap.Addr().Is4() {
			fam = 0x11
			a, d := ap.Addr().As4(), dst.Addr().As4()
			addr = append(append(addr, a[:]...), d[:]...)
		} else {
			fam = 0x21
			a, d := ap.Addr().As16(), dst.Addr().As16()
			addr = append(append(addr, a[:]...), d[:]...)
		}
		addr = binary.BigEndian.AppendUint16(addr, ap.Port())
		addr = binary.BigEndian.AppendUint16(addr, dst.Port())
	}
	for range tlvs { // a TLV of type NOOP (0x04) with 3 bytes
		addr = append(addr, 0x04, 0, 3, 'a', 'b', 'c')
	}
	h = append(h, fam)
	h = binary.BigEndian.AppendUint16(h, uint16(len(addr)))
	return append(h, addr...)
}

func TestParseProxyHeader(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		n    int
		addr string
		err  bool
	}{
		{"v2 tcp4", proxyV2(1, "203.0.113.7:51000", 0), 28, "203.0.113.7:51000", false},
		{"v2 tcp6 with TLVs", proxyV2(1, "[2001:db8::5]:443", 2), 16 + 36 + 12, "[2001:db8::5]:443", false},
		{"v2 local", proxyV2(0, "", 0), 16, "", false},
		{"v2 partial", proxyV2(1, "203.0.113.7:51000", 0)[:20], 0, "", false},
		{"v2 signature prefix", proxyV2Sig[:5], 0, "", false},
		{"v2 too long", append(proxyV2(1, "1.2.3.4:5", 0)[:14], 0, 217), 0, "", true},
		{"v2 bad version", append(append(append([]byte{}, proxyV2Sig...), 0x11, 0x11), 0, 0), 0, "", true},
		{"v1 tcp4", []byte("PROXY TCP4 198.51.100.22 10.0.0.1 35646 1883\r\nrest"), 46, "198.51.100.22:35646", false},
		{"v1 tcp6", []byte("PROXY TCP6 2001:db8::1 2001:db8::2 4000 1883\r\n"), 46, "[2001:db8::1]:4000", false},
		{"v1 unknown", []byte("PROXY UNKNOWN\r\n"), 15, "", false},
		{"v1 partial", []byte("PROXY TCP4 198.51"), 0, "", false},
		{"v1 bad address", []byte("PROXY TCP4 198.51.100.300 10.0.0.1 1 2\r\n"), 0, "", true},
		{"v1 family mismatch", []byte("PROXY TCP4 2001:db8::1 2001:db8::2 1 2\r\n"), 0, "", true},
		{"v1 no CRLF", []byte("PROXY TCP4 " + strings.Repeat("1", 100)), 0, "", true},
		{"missing", connectBytes("x", "", ""), 0, "", true},
		{"http", []byte("POST / HTTP/1.1\r\n"), 0, "", true},
	} {
		n, addr, err := parseProxyHeader(tc.in)
		if n != tc.n || addr != tc.addr || (err != nil) != tc.err {
			t.Errorf("%s: got %d %q %v; want %d %q err=%v", tc.name, n, addr, err, tc.n, tc.addr, tc.err)
		}
	}
}

// Behind a PROXY protocol listener the client's address is the one the
// header names (Clients(), log lines); a missing or malformed header
// closes the connection and is counted; LOCAL keeps the socket address.
func TestProxyProtocolListeners(t *testing.T) {
	ca := newTestCA(t, "test-ca")
	var logs *logCapture
	b := startTLSBroker(t, ca, func(o *Options) {
		o.ProxyProtocol = []string{"mqtt", "tls"}
		o.Verbose = true
		logs = capture(o)
	})
	// v2 over plain MQTT, header and CONNECT in one write.
	rc := dialRaw(t, b.MQTTAddr())
	rc.write(append(proxyV2(1, "203.0.113.7:51000", 1), connectBytes("v2-client", "", "")...))
	rc.expect(codec.TypeConnack, 5*time.Second)
	// v1, header sent on its own first.
	rc1 := dialRaw(t, b.MQTTAddr())
	rc1.write([]byte("PROXY TCP4 198.51.100.22 10.0.0.1 35646 1883\r\n"))
	rc1.write(connectBytes("v1-client", "", ""))
	rc1.expect(codec.TypeConnack, 5*time.Second)
	// LOCAL: a health check; the socket's address stays.
	rcl := dialRaw(t, b.MQTTAddr())
	rcl.write(append(proxyV2(0, "", 0), connectBytes("local-client", "", "")...))
	rcl.expect(codec.TypeConnack, 5*time.Second)
	// v2 then TLS on the TLS listener.
	raw, err := net.Dial("tcp", b.TLSAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Write(proxyV2(1, "[2001:db8::5]:443", 0)); err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(raw, clientTLS(ca))
	rct := &rawClient{t: t, c: tc, r: bufio.NewReader(tc), ver: codec.V311}
	rct.connect(connectPacket("tls-client", "", ""))

	want := map[string]string{
		"v2-client":  "203.0.113.7:51000",
		"v1-client":  "198.51.100.22:35646",
		"tls-client": "[2001:db8::5]:443",
	}
	got := map[string]string{}
	for _, c := range b.Clients() {
		got[c.ClientID] = c.RemoteAddr
	}
	for id, addr := range want {
		if got[id] != addr {
			t.Errorf("%s: remote %q; want %q", id, got[id], addr)
		}
		if !strings.Contains(logs.String(), "client="+id+" remote="+addr) && !strings.Contains(logs.String(), "client="+id+" remote=\""+addr+"\"") {
			t.Errorf("no connect log line with %s's address %s", id, addr)
		}
	}
	if !strings.HasPrefix(got["local-client"], "127.0.0.1:") {
		t.Errorf("LOCAL header: remote %q; want the socket's 127.0.0.1", got["local-client"])
	}

	// Missing and malformed headers.
	for i, bad := range [][]byte{
		connectBytes("no-header", "", ""),
		[]byte("PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n"),
		append(proxyV2(1, "1.2.3.4:5", 0)[:14], 0xff, 0xff),
	} {
		rc := dialRaw(t, b.MQTTAddr())
		rc.write(bad)
		rc.expectClosed(5 * time.Second)
		waitFor(t, 5*time.Second, "proxy failure counted", func() bool {
			return b.Snapshot().TLS.ProxyHeaderFailures == uint64(i+1)
		})
	}
	if !strings.Contains(logs.String(), "closing connection: no PROXY protocol header on a --proxy-protocol listener") {
		t.Fatalf("no log line for a missing header:\n%s", logs.String())
	}
	// A header that never comes: the connect timeout still applies (the
	// connection sits in the keep-alive wheel from its open).
	if _, err := New(Options{MQTTAddr: "127.0.0.1:0", ProxyProtocol: []string{"mqtt", "smtp"}}); err == nil {
		t.Fatal("unknown --proxy-protocol listener accepted")
	}
}

// A PROXY header that never completes is cut by the connect timeout.
func TestProxyProtocolTimeout(t *testing.T) {
	b := startBroker(t, func(o *Options) {
		o.ProxyProtocol = []string{"mqtt"}
		o.ConnectTimeout = time.Second
	})
	rc := dialRaw(t, b.MQTTAddr())
	rc.write(proxyV2Sig[:6])
	rc.expectClosed(5 * time.Second)
}

func netipMust(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
