package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"strconv"

	"github.com/panjf2000/gnet/v2"
)

// PROXY protocol (HAProxy's spec, versions 1 and 2): a TLS terminator or
// load balancer in front of the broker sends one header first on every
// connection, naming the client's address. Listeners named in
// Options.ProxyProtocol require it, before TLS or MQTT; the address it
// names becomes conn.remote(). LOCAL (v2) and UNKNOWN (v1) headers, sent
// by health checks, keep the socket's address.

// proxyV2Sig starts every version 2 header.
var proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

const (
	proxyV2MaxLen = 232 // 16 bytes of header + 216 of addresses and TLVs
	proxyV1MaxLen = 107 // "PROXY TCP6 <39> <39> <5> <5>\r\n"
)

var (
	errProxyMissing = errors.New("no PROXY protocol header")
	errProxyVersion = errors.New("bad PROXY protocol v2 version or command")
	errProxyLong    = errors.New("PROXY protocol header too long")
	errProxyAddr    = errors.New("bad address in PROXY protocol header")
)

// parseProxyHeader parses the PROXY protocol header at the start of b. It
// returns n == 0 and no error while the header is incomplete, and addr ""
// for a header that names no client (LOCAL, UNKNOWN, or a family other
// than TCP over IPv4/IPv6).
func parseProxyHeader(b []byte) (n int, addr string, err error) {
	if len(b) == 0 {
		return 0, "", nil
	}
	switch b[0] {
	case '\r':
		return parseProxyV2(b)
	case 'P':
		return parseProxyV1(b)
	}
	return 0, "", errProxyMissing
}

func parseProxyV2(b []byte) (int, string, error) {
	k := min(len(b), len(proxyV2Sig))
	if !bytes.Equal(b[:k], proxyV2Sig[:k]) {
		return 0, "", errProxyMissing
	}
	if len(b) < 16 {
		return 0, "", nil
	}
	verCmd, fam := b[12], b[13]
	l := int(binary.BigEndian.Uint16(b[14:16]))
	if verCmd>>4 != 2 || verCmd&0xf > 1 {
		return 0, "", errProxyVersion
	}
	if 16+l > proxyV2MaxLen {
		return 0, "", errProxyLong
	}
	if len(b) < 16+l {
		return 0, "", nil
	}
	n := 16 + l
	if verCmd&0xf == 0 { // LOCAL: a health check from the proxy itself
		return n, "", nil
	}
	a := b[16:n]
	var ap netip.AddrPort
	switch fam {
	case 0x11: // TCP over IPv4
		if len(a) < 12 {
			return 0, "", errProxyAddr
		}
		ap = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[0:4])), binary.BigEndian.Uint16(a[8:10]))
	case 0x21: // TCP over IPv6
		if len(a) < 36 {
			return 0, "", errProxyAddr
		}
		ap = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[0:16])).Unmap(), binary.BigEndian.Uint16(a[32:34]))
	default: // UNSPEC, UDP, UNIX: no TCP client address to use
		return n, "", nil
	}
	return n, ap.String(), nil
}

func parseProxyV1(b []byte) (int, string, error) {
	const pfx = "PROXY "
	k := min(len(b), len(pfx))
	if string(b[:k]) != pfx[:k] {
		return 0, "", errProxyMissing
	}
	end := bytes.Index(b[:min(len(b), proxyV1MaxLen)], crlf)
	if end < 0 {
		if len(b) >= proxyV1MaxLen {
			return 0, "", errProxyLong
		}
		return 0, "", nil
	}
	n := end + 2
	f := bytes.Split(b[len(pfx):end], []byte(" "))
	switch {
	case len(f) >= 1 && string(f[0]) == "UNKNOWN":
		return n, "", nil
	case len(f) != 5 || (string(f[0]) != "TCP4" && string(f[0]) != "TCP6"):
		return 0, "", errProxyAddr
	}
	src, err1 := netip.ParseAddr(string(f[1]))
	dst, err2 := netip.ParseAddr(string(f[2]))
	sp, err3 := strconv.ParseUint(string(f[3]), 10, 16)
	_, err4 := strconv.ParseUint(string(f[4]), 10, 16)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || src.Is4() != (string(f[0]) == "TCP4") || dst.Is4() != src.Is4() {
		return 0, "", errProxyAddr
	}
	return n, netip.AddrPortFrom(src, uint16(sp)).String(), nil
}

// readProxyHeader consumes c's PROXY protocol header once it is buffered
// whole, or closes c when it is missing or malformed. Runs on c's loop.
func (b *Broker) readProxyHeader(c *conn) gnet.Action {
	gc := c.gc
	buf, _ := gc.Peek(min(gc.InboundBuffered(), proxyV2MaxLen))
	n, addr, err := parseProxyHeader(buf)
	if err != nil {
		b.tb.stats.proxyFailures.Add(1)
		c.closeReason = closeProtocolError
		if b.logLimiter.allow(b.now.Load()) {
			b.log.Warn("closing connection: "+err.Error()+" on a --proxy-protocol listener", "remote", c.remote())
		}
		return gnet.Close
	}
	if n == 0 {
		return gnet.None
	}
	_, _ = gc.Discard(n)
	c.x.proxyWait = false
	c.x.peer = addr
	return gnet.None
}
