package bridge

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tinymq/tinymq/codec"
)

// conn is one client connection of a bridge, on the codec package: a
// blocking net.Conn read by one goroutine (the bridge's reader for it) and
// written under wmu by whichever goroutine forwards or acknowledges.
type conn struct {
	nc  net.Conn
	v   codec.Version
	br  *bufio.Reader
	rb  []byte // reader's frame buffer; the decoded packet aliases it
	max int    // largest packet accepted

	wmu       sync.Mutex
	wb        []byte
	lastWrite atomic.Int64 // unix nanoseconds
	lastRead  atomic.Int64
	closeOnce sync.Once
}

// writeTimeout bounds a write to either broker: a peer that takes longer
// to accept bytes is considered gone.
const writeTimeout = 30 * time.Second

// dial opens a TCP (and, with tc, TLS) connection within timeout.
func dial(ctx context.Context, addr string, tc *tls.Config, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc == nil {
		return nc, nil
	}
	c := tc.Clone()
	if c.ServerName == "" {
		host, _, _ := net.SplitHostPort(addr)
		c.ServerName = host
	}
	tl := tls.Client(nc, c)
	if err := tl.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tl, nil
}

func newConn(nc net.Conn, v codec.Version, maxPacket int) *conn {
	c := &conn{nc: nc, v: v, br: bufio.NewReaderSize(nc, 32*1024), max: maxPacket}
	now := time.Now().UnixNano()
	c.lastRead.Store(now)
	c.lastWrite.Store(now)
	return c
}

// send encodes one packet with enc and writes it. Any goroutine; it blocks
// up to writeTimeout.
func (c *conn) send(enc func(dst []byte) []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wb = enc(c.wb[:0])
	_ = c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := c.nc.Write(c.wb)
	if cap(c.wb) > 64*1024 {
		c.wb = nil // do not keep one large message's buffer
	}
	c.lastWrite.Store(time.Now().UnixNano())
	return err
}

// ack sends PUBACK, PUBREC, PUBREL or PUBCOMP for id.
func (c *conn) ack(t codec.Type, id uint16) error {
	return c.send(func(dst []byte) []byte { return codec.AppendAck(dst, t, id) })
}

// read returns the next packet; its body aliases c.rb until the next
// read. Reader goroutine only.
func (c *conn) read() (codec.FixedHeader, []byte, error) {
	var hdr [5]byte
	n := 0
	for {
		b, err := c.br.ReadByte()
		if err != nil {
			return codec.FixedHeader{}, nil, err
		}
		hdr[n] = b
		n++
		if n < 2 {
			continue
		}
		h, _, err := codec.ReadFrame(hdr[:n], c.max)
		if err != nil {
			return h, nil, err
		}
		if h.HeaderLen == 0 {
			if n == 5 {
				return h, nil, codec.ErrMalformedLength
			}
			continue
		}
		if cap(c.rb) < h.Remaining {
			c.rb = make([]byte, h.Remaining)
		}
		body := c.rb[:h.Remaining]
		if _, err := io.ReadFull(c.br, body); err != nil {
			return h, nil, err
		}
		if cap(c.rb) > 256*1024 {
			c.rb = nil // the body stays valid for this packet; the next one allocates its own
		}
		c.lastRead.Store(time.Now().UnixNano())
		return h, body, nil
	}
}

// close shuts the socket once; the reader then returns.
func (c *conn) close() {
	c.closeOnce.Do(func() { _ = c.nc.Close() })
}

// handshake sends CONNECT and waits up to timeout for CONNACK. It
// returns the CONNACK (its properties copied where kept).
func (c *conn) handshake(p *codec.Connect, timeout time.Duration) (codec.Connack, error) {
	_ = c.nc.SetDeadline(time.Now().Add(timeout))
	defer func() { _ = c.nc.SetDeadline(time.Time{}) }()
	if err := c.send(p.AppendTo); err != nil {
		return codec.Connack{}, err
	}
	h, body, err := c.read()
	if err != nil {
		return codec.Connack{}, fmt.Errorf("reading CONNACK: %w", err)
	}
	var ack codec.Connack
	if h.Type != codec.TypeConnack {
		return ack, fmt.Errorf("expected CONNACK, got %s", h.Type)
	}
	if err := ack.Decode(c.v, h, body); err != nil {
		return ack, fmt.Errorf("CONNACK: %w", err)
	}
	if c.v == codec.V5 && ack.Reason != codec.Success {
		reason := ""
		if ack.Props.Has(codec.PropReasonString) {
			reason = ": " + string(ack.Props.ReasonString)
		}
		return ack, fmt.Errorf("connection refused: reason code 0x%02x%s", byte(ack.Reason), reason)
	}
	if c.v != codec.V5 && ack.ReturnCode != codec.ConnAccepted {
		return ack, fmt.Errorf("connection refused: CONNACK return code %d", ack.ReturnCode)
	}
	ack.Props = ack.Props.Clone()
	return ack, nil
}

// tlsConfig builds the remote connection's TLS configuration.
func tlsConfig(c *Config) (*tls.Config, error) {
	if !c.TLS() {
		return nil, nil
	}
	pool := x509.NewCertPool()
	add := func(path string) error {
		pem, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s: no PEM certificate", path)
		}
		return nil
	}
	if c.CAFile != "" {
		if err := add(c.CAFile); err != nil {
			return nil, err
		}
	}
	if c.CAPath != "" {
		ents, err := os.ReadDir(c.CAPath)
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			if e.Type().IsRegular() && (filepath.Ext(e.Name()) == ".pem" || filepath.Ext(e.Name()) == ".crt") {
				if err := add(filepath.Join(c.CAPath, e.Name())); err != nil {
					return nil, err
				}
			}
		}
	}
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if c.TLSVersion == "tlsv1.3" {
		tc.MinVersion = tls.VersionTLS13
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, err
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if c.Insecure {
		// Mosquitto's bridge_insecure: the chain is verified, the host
		// name is not.
		tc.InsecureSkipVerify = true
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no server certificate")
			}
			inter := x509.NewCertPool()
			for _, ic := range cs.PeerCertificates[1:] {
				inter.AddCert(ic)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter})
			return err
		}
	}
	return tc, nil
}
