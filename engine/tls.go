package engine

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/panjf2000/gnet/v2"
	"github.com/valyala/bytebufferpool"
)

// TLS on the event loops (DESIGN.md section 6). A TLS connection is a
// tls.Conn over a tlsTransport, a net.Conn that is never a socket:
//
//   - Until the first TLS record is buffered whole, the loop only peeks (a
//     client that opens the port and stalls costs no worker). Then the
//     handshake runs on the broker's bounded handshake pool (tlsPool):
//     the loop copies what it reads into the handshake's small buffer, the
//     worker's Read blocks on it, and the worker's writes go out through
//     gc.AsyncWrite. The worker posts the result to the connection's loop,
//     which drops the handshake state and processes whatever plaintext has
//     already arrived (a client sends CONNECT right after Finished).
//   - Established, every call on the tls.Conn is made on the loop. Read
//     serves the bytes gnet buffered and, when they run out, returns
//     errTLSWouldBlock, which crypto/tls keeps non-sticky (it is
//     Temporary). Write never fails: it appends ciphertext to the loop's
//     scratch, handed to gnet in one Write once tls.Conn.Write returns.
//
// The plaintext of a read is handled in the loop's scratch; only the bytes
// of a partial MQTT or HTTP frame are kept between reads, in a pooled
// per-connection buffer released when empty, so an idle TLS connection
// holds no buffer of ours.

// tlsBroker is the broker's TLS and PROXY protocol state.
type tlsBroker struct {
	srv       *tlsServer // nil when no TLS listener is configured
	tlsAddr   string
	httpsAddr string
	tlsPort   int
	httpsPort int
	proxy     uint8 // bit per listenerKind that expects a PROXY protocol header
	stats     tlsCounters
}

// tlsCounters are the TLS and PROXY protocol metrics. Any goroutine.
type tlsCounters struct {
	open          atomic.Int64  // established TLS connections (gauge)
	handshakes    atomic.Uint64 // handshakes finished, successful or not
	failures      atomic.Uint64
	handshakeNs   atomic.Uint64 // wall time spent in handshakes on the pool
	mismatch      [numMismatches]atomic.Uint64
	proxyFailures atomic.Uint64
	untrimmed     atomic.Int64 // connections whose input buffers wait for trimTLS (gauge)
}

// listenerKind names the listeners for --proxy-protocol.
type listenerKind uint8

const (
	listenMQTT listenerKind = iota
	listenTLS
	listenHTTP
	listenHTTPS
	listenWS
	numListeners
)

var listenerNames = [numListeners]string{"mqtt", "tls", "http", "https", "ws"}

// listenerOf says which listener a local port belongs to. Runs on a loop.
func (b *Broker) listenerOf(port int) listenerKind {
	switch port {
	case b.tb.tlsPort:
		return listenTLS
	case b.tb.httpsPort:
		return listenHTTPS
	case b.httpPort:
		return listenHTTP
	case b.wsPort:
		return listenWS
	}
	return listenMQTT
}

// tlsServer holds the certificates and the handshake pool.
type tlsServer struct {
	certFile, keyFile, caFile string
	require                   bool

	cur  atomic.Pointer[tls.Config] // what new handshakes use; swapped by reload
	base *tls.Config                // handed to tls.Server: defers to cur
	pool tlsPool
}

// newTLSServer loads the certificates named in o. Runs in New.
func newTLSServer(o *Options) (*tlsServer, error) {
	s := &tlsServer{certFile: o.TLSCert, keyFile: o.TLSKey, caFile: o.TLSClientCA, require: o.TLSRequireCert}
	cfg, err := s.load()
	if err != nil {
		return nil, err
	}
	s.cur.Store(cfg)
	s.base = &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.cur.Load(), nil
		},
	}
	s.pool.max = o.TLSHandshakeWorkers
	return s, nil
}

// load reads the certificate, key and client CA files into a fresh
// config. Errors name the file: "file: reason". Any goroutine.
func (s *tlsServer) load() (*tls.Config, error) {
	certPEM, err := readFileErr(s.certFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := readFileErr(s.keyFile)
	if err != nil {
		return nil, err
	}
	if err := checkCertPEM(certPEM); err != nil {
		return nil, fmt.Errorf("%s: %w", s.certFile, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.keyFile, err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12, // 1.3 preferred: Go negotiates the highest both sides have
		Certificates: []tls.Certificate{cert},
	}
	if s.caFile != "" {
		caPEM, err := readFileErr(s.caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, fmt.Errorf("%s: no PEM certificate found", s.caFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if s.require {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return cfg, nil
}

// readFileErr reads a file; its error is "file: reason".
func readFileErr(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// checkCertPEM reports whether b holds at least one parseable certificate,
// so that a bad certificate file is blamed on that file and not on the key.
func checkCertPEM(b []byte) error {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return errors.New("no PEM certificate found")
		}
		if blk.Type == "CERTIFICATE" {
			if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
				return err
			}
			return nil
		}
	}
}

// reloadTLS re-reads the certificate, key and client CA files. On error it
// keeps the old ones and returns the error ("file: reason"); on success new
// handshakes use the new ones (established connections keep theirs). Any
// goroutine.
func (b *Broker) reloadTLS() error {
	s := b.tb.srv
	if s == nil {
		return nil
	}
	cfg, err := s.load()
	if err != nil {
		return err
	}
	s.cur.Store(cfg)
	b.log.Info("TLS certificates reloaded", "cert", s.certFile)
	return nil
}

// tlsPool runs handshakes on at most max goroutines at once; handshakes
// beyond that wait in a FIFO (their bytes stay buffered by gnet and the
// handshake buffer). The goroutines exit when the queue is empty, so an
// idle broker runs none. Any goroutine.
type tlsPool struct {
	mu     sync.Mutex
	queue  []*tlsHandshake
	active int
	max    int
}

func (p *tlsPool) submit(h *tlsHandshake, run func(*tlsHandshake)) {
	p.mu.Lock()
	if p.active < p.max {
		p.active++
		p.mu.Unlock()
		go p.work(h, run)
		return
	}
	p.queue = append(p.queue, h)
	p.mu.Unlock()
}

func (p *tlsPool) work(h *tlsHandshake, run func(*tlsHandshake)) {
	for h != nil {
		run(h)
		p.mu.Lock()
		if len(p.queue) > 0 {
			h = p.queue[0]
			p.queue[0] = nil
			p.queue = p.queue[1:]
			if len(p.queue) == 0 {
				p.queue = nil
			}
		} else {
			h = nil
			p.active--
		}
		p.mu.Unlock()
	}
}

// tlsState is a TLS connection's state, in connExt. Owned by the
// connection's loop.
type tlsState struct {
	tc          *tls.Conn
	tr          tlsTransport
	hs          *tlsHandshake              // the handshake in progress; nil before and after
	in          *bytebufferpool.ByteBuffer // plaintext of a partial frame; nil when none
	cn          string                     // verified client certificate's CN (TLSCertAsUsername)
	established bool
	closed      bool   // OnClose ran
	untrimmed   bool   // listed in the loop's tls.untrimmed: its input buffers are kept for now
	lastRead    uint32 // unix second of the last read (for trimTLS)
}

// tlsLoop is a loop's TLS scratch. Owned by the loop.
type tlsLoop struct {
	out   []byte // ciphertext of the current write
	plain []byte // plaintext of the current read
	wbuf  []byte // header and payload joined for one record
	cur   *conn  // the connection whose plaintext view is below
	view  []byte // cur's plaintext for this read ...
	off   int    // ... of which the handlers consumed this much

	// Connections that read recently and still hold crypto/tls's input
	// buffers; the tick lets them go once a connection has been quiet for
	// a second (trimTLS).
	untrimmed []*conn
}

// errTLSWouldBlock is what a tlsTransport's Read returns when the buffered
// bytes run out. crypto/tls keeps the error non-sticky because it is
// Temporary (not because it is a Timeout): compare with the value itself.
var errTLSWouldBlock error = tlsWouldBlock{}

type tlsWouldBlock struct{}

func (tlsWouldBlock) Error() string   { return "engine: no more TLS bytes buffered" }
func (tlsWouldBlock) Temporary() bool { return true }
func (tlsWouldBlock) Timeout() bool   { return true }

// tlsTransport is the net.Conn under a tls.Conn. During the handshake (hs
// set) it is used by the handshake worker; afterwards only on c's loop.
type tlsTransport struct {
	c    *conn
	hs   *tlsHandshake
	pend []byte // ciphertext the handshake buffer held when it ended
}

func (t *tlsTransport) Read(p []byte) (int, error) {
	if h := t.hs; h != nil {
		return h.read(p)
	}
	if len(t.pend) > 0 {
		n := copy(p, t.pend)
		t.pend = t.pend[n:]
		if len(t.pend) == 0 {
			t.pend = nil
		}
		return n, nil
	}
	gc := t.c.gc
	if gc.InboundBuffered() == 0 {
		return 0, errTLSWouldBlock
	}
	n, _ := gc.Read(p)
	return n, nil
}

func (t *tlsTransport) Write(p []byte) (int, error) {
	if h := t.hs; h != nil {
		return h.write(p)
	}
	l := t.c.l
	l.tls.out = append(l.tls.out, p...)
	if len(l.tls.out) >= tlsFlushAt {
		t.c.tlsFlush()
	}
	return len(p), nil
}

// tlsFlushAt bounds the loop's ciphertext scratch during one large write.
const tlsFlushAt = 64 << 10

func (t *tlsTransport) Close() error {
	if h := t.hs; h != nil {
		h.close()
	}
	return nil
}

func (t *tlsTransport) LocalAddr() net.Addr              { return t.c.gc.LocalAddr() }
func (t *tlsTransport) RemoteAddr() net.Addr             { return t.c.gc.RemoteAddr() }
func (t *tlsTransport) SetDeadline(time.Time) error      { return nil }
func (t *tlsTransport) SetReadDeadline(time.Time) error  { return nil }
func (t *tlsTransport) SetWriteDeadline(time.Time) error { return nil }

// tlsHandshakeBuf bounds the ciphertext the loop copies ahead of the
// handshake worker; the rest waits in gnet's buffer until the worker asks.
const tlsHandshakeBuf = 16<<10 + 512

// tlsHandshake is one handshake in progress: shared by the connection's
// loop and the worker running it; mu guards the fields below it.
type tlsHandshake struct {
	c      *conn     // loop side only
	gc     gnet.Conn // AsyncWrite and EventLoop are safe from the worker
	tc     *tls.Conn
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	cond    sync.Cond
	buf     []byte // ciphertext not yet read by the handshake
	behind  bool   // more bytes wait in gnet's buffer
	pulling bool   // a pull is posted to the loop
	closed  bool   // the connection closed or the handshake ended
}

// feed copies what gnet buffered into the handshake buffer, up to its
// bound. Runs on the connection's loop.
func (h *tlsHandshake) feed(gc gnet.Conn) {
	avail := gc.InboundBuffered()
	h.mu.Lock()
	n := min(avail, tlsHandshakeBuf-len(h.buf))
	if n > 0 && !h.closed {
		p, _ := gc.Peek(n)
		h.buf = append(h.buf, p...)
		_, _ = gc.Discard(n)
		h.cond.Signal()
	} else {
		n = 0
	}
	h.behind = avail > n
	h.mu.Unlock()
}

// read serves the handshake's reads, blocking until the loop feeds bytes
// or the handshake is cancelled. Runs on the handshake worker.
func (h *tlsHandshake) read(p []byte) (int, error) {
	h.mu.Lock()
	for len(h.buf) == 0 {
		if h.closed {
			h.mu.Unlock()
			return 0, net.ErrClosed
		}
		if h.behind && !h.pulling {
			h.pulling = true
			h.mu.Unlock()
			h.pull()
			h.mu.Lock()
			continue
		}
		h.cond.Wait()
	}
	n := copy(p, h.buf)
	if n == len(h.buf) {
		h.buf = h.buf[:0]
	} else {
		h.buf = h.buf[:copy(h.buf, h.buf[n:])]
	}
	h.mu.Unlock()
	return n, nil
}

// pull asks the loop for the bytes left in gnet's buffer. Handshake worker.
func (h *tlsHandshake) pull() {
	err := h.gc.EventLoop().Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		c := h.c
		if c.open && c.x.tls.hs == h {
			h.mu.Lock()
			h.pulling = false
			h.mu.Unlock()
			h.feed(c.gc)
		}
		return nil
	}))
	if err != nil {
		h.close()
	}
}

// write sends handshake records. Handshake worker.
func (h *tlsHandshake) write(p []byte) (int, error) {
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	// AsyncWrite checks on the loop that this connection is still open.
	if err := h.gc.AsyncWrite(slices.Clone(p), nil); err != nil {
		return 0, err
	}
	return len(p), nil
}

// close ends the handshake's reads. Any goroutine.
func (h *tlsHandshake) close() {
	h.mu.Lock()
	h.closed = true
	h.cond.Broadcast()
	h.mu.Unlock()
}

// openTLS sets up the TLS and PROXY protocol state of a connection
// accepted on listener k. Runs in OnOpen, on c's loop.
func (b *Broker) openTLS(c *conn, k listenerKind) {
	if b.tb.proxy&(1<<k) != 0 {
		c.ext().proxyWait = true
	}
	if k == listenTLS || k == listenHTTPS {
		st := &tlsState{}
		st.tr.c = c
		c.ext().tls = st
	}
}

// tlsTraffic handles what must happen before the protocol handlers see a
// connection's bytes: the PROXY protocol header, the TLS handshake and the
// decryption of TLS records. Runs on c's loop.
func (b *Broker) tlsTraffic(c *conn) gnet.Action {
	x := c.x
	if x.proxyWait {
		if a := b.readProxyHeader(c); a != gnet.None || x.proxyWait || c.gc.InboundBuffered() == 0 {
			return a
		}
	}
	st := x.tls
	switch {
	case st == nil:
		return b.traffic(c)
	case st.established:
		return b.tlsRead(c)
	case st.hs != nil:
		st.hs.feed(c.gc)
		return gnet.None
	}
	return b.tlsStart(c)
}

// tlsStart checks the first bytes on a TLS listener and, once the first
// record (the ClientHello) is buffered whole, hands the handshake to the
// pool. Runs on c's loop.
func (b *Broker) tlsStart(c *conn) gnet.Action {
	gc := c.gc
	avail := gc.InboundBuffered()
	hdr, _ := gc.Peek(min(avail, 5))
	if len(hdr) == 0 {
		return gnet.None
	}
	if hdr[0] != 0x16 { // not a handshake record
		if hdr[0] != 0x10 && avail < 8 && (avail < 3 || looksLikeHTTP(hdr)) {
			return gnet.None // a method name may follow
		}
		p, _ := gc.Peek(min(avail, 8))
		if k, ok := b.mismatchOf(c, p[0], p); ok {
			return b.mismatch(c, k)
		}
		b.tb.stats.failures.Add(1)
		b.tlsFailed(c, errors.New("first bytes are not a TLS handshake"))
		return gnet.Close
	}
	if len(hdr) < 5 {
		return gnet.None
	}
	if n := int(binary.BigEndian.Uint16(hdr[3:5])); n > 1<<14 {
		b.tb.stats.failures.Add(1)
		b.tlsFailed(c, errors.New("oversize TLS record"))
		return gnet.Close
	} else if avail < 5+n {
		return gnet.None // wait for the whole ClientHello record
	}
	st := c.x.tls
	srv := b.tb.srv
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.ConnectTimeout)
	h := &tlsHandshake{c: c, gc: gc, ctx: ctx, cancel: cancel}
	h.cond.L = &h.mu
	st.tr.hs = h
	st.hs = h
	st.tc = tls.Server(&st.tr, srv.base)
	h.tc = st.tc
	h.feed(gc)
	srv.pool.submit(h, b.runHandshake)
	return gnet.None
}

// runHandshake runs one handshake and posts its result to the connection's
// loop. Runs on a handshake pool goroutine.
func (b *Broker) runHandshake(h *tlsHandshake) {
	var err error
	if err = h.ctx.Err(); err == nil {
		t0 := time.Now()
		err = h.tc.HandshakeContext(h.ctx)
		b.tb.stats.handshakeNs.Add(uint64(time.Since(t0)))
		b.tb.stats.handshakes.Add(1)
	}
	h.cancel()
	if err != nil {
		b.tb.stats.failures.Add(1)
	}
	post := h.gc.EventLoop().Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		b.tlsDone(h, err)
		return nil
	}))
	if post != nil {
		h.close() // shutting down
	}
}

// tlsDone switches c to established, or closes it, when its handshake
// ended, and processes the plaintext that already arrived. Runs on c's loop.
func (b *Broker) tlsDone(h *tlsHandshake, err error) {
	c := h.c
	if !c.open || c.x.tls.hs != h {
		return // closed meanwhile: its fd may belong to another client now
	}
	t0 := time.Now()
	defer c.l.addBusy(t0)
	st := c.x.tls
	h.mu.Lock()
	left := h.buf
	h.buf = nil
	h.closed = true
	h.mu.Unlock()
	st.hs = nil
	st.tr.hs = nil
	h.c, h.tc = nil, nil
	if err != nil {
		b.tlsFailed(c, err)
		_ = c.gc.Close()
		return
	}
	trimTLSInput(st.tc) // the ClientHello's size (1.8 KB post-quantum) need not stay
	if len(left) > 0 {
		st.tr.pend = left
	}
	st.established = true
	b.tb.stats.open.Add(1)
	if b.opts.TLSCertAsUsername {
		if cs := st.tc.ConnectionState(); len(cs.VerifiedChains) > 0 && len(cs.PeerCertificates) > 0 {
			st.cn = cs.PeerCertificates[0].Subject.CommonName
		}
	}
	if c.proto == protoHTTP {
		// The HTTP idle timeout runs from the end of the handshake.
		c.lastSeen = uint32(b.now.Load())
		c.l.wheel.remove(c)
		c.l.wheel.add(c, c.deadline())
	}
	if b.tlsRead(c) == gnet.Close && c.open {
		_ = c.gc.Close()
	}
}

// tlsFailed counts and logs a failed handshake. Runs on c's loop.
func (b *Broker) tlsFailed(c *conn, err error) {
	if b.logLimiter.allow(b.now.Load()) {
		b.log.Warn("closing connection: TLS handshake failed", "remote", c.remote(), "err", err.Error())
	}
}

// tlsRead decrypts every record buffered for c and runs the protocol
// handlers over the plaintext. Runs on c's loop.
func (b *Broker) tlsRead(c *conn) gnet.Action {
	st := c.x.tls
	l := c.l
	var dst []byte
	if st.in != nil {
		dst = st.in.B
	} else {
		dst = l.tls.plain[:0]
	}
	var rerr error
	for {
		if cap(dst)-len(dst) < 4096 {
			dst = slices.Grow(dst, 16<<10)
		}
		n, err := st.tc.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if err != nil {
			if err != errTLSWouldBlock {
				rerr = err
			}
			break
		}
	}
	if st.in != nil {
		st.in.B = dst
	} else {
		l.tls.plain = dst
	}
	c.tlsFlush() // replies to post-handshake messages (key updates)
	st.lastRead = uint32(b.now.Load())
	if rerr == nil && !st.untrimmed {
		// Keep the input buffers while the connection is busy (dropping
		// them after every read would cost an allocation per read); the
		// tick drops them once it is quiet.
		st.untrimmed = true
		l.tls.untrimmed = append(l.tls.untrimmed, c)
		b.tb.stats.untrimmed.Add(1)
	}

	action := gnet.None
	if len(dst) > 0 && c.open {
		l.tls.cur, l.tls.view, l.tls.off = c, dst, 0
		action = b.traffic(c)
		rest := l.tls.view[l.tls.off:]
		l.tls.cur, l.tls.view, l.tls.off = nil, nil, 0
		switch {
		case st.closed:
		case len(rest) == 0:
			st.releaseIn()
		case st.in != nil:
			st.in.B = st.in.B[:copy(st.in.B, rest)]
		default:
			st.in = bytebufferpool.Get()
			st.in.B = append(st.in.B[:0], rest...)
		}
	}
	if cap(l.tls.plain) > 256<<10 {
		l.tls.plain = nil // a large message went through: do not keep its size
	}
	if st.closed {
		st.releaseIn()
		return gnet.Close
	}
	if rerr != nil && action == gnet.None {
		if rerr != io.EOF && b.logLimiter.allow(b.now.Load()) {
			b.log.Warn("closing connection: TLS error", "remote", c.remote(), "err", rerr.Error())
		}
		return gnet.Close
	}
	if action == gnet.Close {
		c.tlsCloseNotify()
	}
	return action
}

// releaseIn returns the partial-frame buffer to the pool. Runs on the
// connection's loop.
func (st *tlsState) releaseIn() {
	if st.in != nil {
		bytebufferpool.Put(st.in)
		st.in = nil
	}
}

// tlsClosed releases c's TLS state: a handshake still running is cancelled
// and never touches c again. Runs in OnClose, on c's loop.
func (b *Broker) tlsClosed(c *conn) {
	st := c.x.tls
	st.closed = true
	if h := st.hs; h != nil {
		h.cancel()
		h.close()
	}
	if st.established {
		b.tb.stats.open.Add(-1)
	}
	if c.l.tls.cur != c {
		st.releaseIn() // else tlsRead releases it once the handlers are done
	}
	st.tr.pend = nil
}

// tlsWrite encrypts p (and q after it) and hands the records to gnet in one
// write. Runs on c's loop.
func (c *conn) tlsWrite(p, q []byte) {
	st := c.x.tls
	if !st.established || st.closed || !c.open {
		return
	}
	l := c.l
	if len(q) > 0 {
		if len(p)+len(q) <= 16<<10 {
			l.tls.wbuf = append(append(l.tls.wbuf[:0], p...), q...)
			p, q = l.tls.wbuf, nil
		} else {
			_, _ = st.tc.Write(p)
			p = q
		}
	}
	_, _ = st.tc.Write(p)
	c.tlsFlush()
	if cap(l.tls.wbuf) > 64<<10 {
		l.tls.wbuf = nil
	}
}

// tlsFlush hands the ciphertext in the loop's scratch to gnet. Runs on c's
// loop.
func (c *conn) tlsFlush() {
	l := c.l
	if len(l.tls.out) > 0 && c.open {
		_, _ = c.gc.Write(l.tls.out)
	}
	l.tls.out = l.tls.out[:0]
	if cap(l.tls.out) > 2*tlsFlushAt {
		l.tls.out = nil
	}
}

// tlsCloseNotify sends close_notify before the broker closes an
// established TLS connection. Runs on c's loop.
func (c *conn) tlsCloseNotify() {
	if c.x == nil || c.x.tls == nil {
		return
	}
	st := c.x.tls
	if !st.established || st.closed || !c.open {
		return
	}
	_ = st.tc.CloseWrite()
	c.tlsFlush()
}

// writeRaw sends p on c's transport without WebSocket framing: as is over
// TCP, as TLS records over TLS. Runs on c's loop.
func (c *conn) writeRaw(p []byte) {
	if c.x != nil && c.x.tls != nil {
		c.tlsWrite(p, nil)
		return
	}
	_, _ = c.gc.Write(p)
}

// inboundLen is how many bytes the protocol handlers can read on c: gnet's
// buffer, or the decrypted plaintext for TLS. Runs on c's loop.
func (c *conn) inboundLen() int {
	if c.x != nil && c.x.tls != nil {
		if c.l.tls.cur != c {
			return 0
		}
		return len(c.l.tls.view) - c.l.tls.off
	}
	return c.gc.InboundBuffered()
}

// inbound returns the n bytes inboundLen reported; they stay valid until
// consume. Runs on c's loop.
func (c *conn) inbound(n int) []byte {
	if c.x != nil && c.x.tls != nil {
		return c.l.tls.view[c.l.tls.off : c.l.tls.off+n]
	}
	buf, _ := c.gc.Peek(n)
	return buf
}

// consume drops the first n bytes inbound returned (n > 0). Runs on c's
// loop.
func (c *conn) consume(n int) {
	if c.x != nil && c.x.tls != nil {
		c.l.tls.off += n
		return
	}
	_, _ = c.gc.Discard(n) // never Discard(0): it drops everything
}

// certUsername returns the Subject CN of the client's verified certificate
// when TLSCertAsUsername is on (Mosquitto's use_identity_as_username). It
// reports false for a connection without a verified certificate or with an
// empty CN. Runs on c's loop.
func (c *conn) certUsername() (string, bool) {
	if !c.l.b.opts.TLSCertAsUsername || c.x == nil || c.x.tls == nil {
		return "", false
	}
	cn := c.x.tls.cn
	return cn, cn != ""
}

// mismatchKind says which protocol arrived on which kind of port.
type mismatchKind uint8

const (
	mismatchTLSOnPlain mismatchKind = iota // a TLS ClientHello on a plain port
	mismatchPlainOnTLS                     // plain MQTT or HTTP on a TLS port
	mismatchHTTPOnMQTT                     // an HTTP request on an MQTT port
	mismatchMQTTOnHTTP                     // an MQTT CONNECT on an HTTP port
	numMismatches
)

var mismatchNames = [numMismatches]string{"tls_on_plain", "plain_on_tls", "http_on_mqtt", "mqtt_on_http"}

// looksLikeHTTP reports whether b starts like an HTTP request line.
func looksLikeHTTP(b []byte) bool {
	for _, m := range [...]string{"GET ", "POST ", "PUT ", "HEAD ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE ", "PRI "} {
		n := min(len(b), len(m))
		if n >= 3 && string(b[:n]) == m[:n] {
			return true
		}
	}
	return false
}

// mismatchOf classifies the first bytes of a connection (first is b[0];
// b may be short) that are not what its listener speaks. Runs on c's loop.
func (b *Broker) mismatchOf(c *conn, first byte, p []byte) (mismatchKind, bool) {
	tlsPort := c.x != nil && c.x.tls != nil && !c.x.tls.established
	httpPort := c.proto == protoHTTP
	switch {
	case tlsPort && first == 0x10:
		return mismatchPlainOnTLS, true
	case tlsPort && httpPort && looksLikeHTTP(p) && len(p) >= 4:
		return mismatchPlainOnTLS, true
	case tlsPort && looksLikeHTTP(p) && len(p) >= 4:
		return mismatchHTTPOnMQTT, true
	case tlsPort:
		return 0, false
	case first == 0x16:
		return mismatchTLSOnPlain, true
	case httpPort && first == 0x10:
		return mismatchMQTTOnHTTP, true
	case !httpPort && looksLikeHTTP(p) && len(p) >= 4:
		return mismatchHTTPOnMQTT, true
	}
	return 0, false
}

// mismatch closes c, which spoke the wrong protocol for its port, with one
// log line saying what to do instead; an HTTP client also gets it as a 400
// response. Runs on c's loop.
func (b *Broker) mismatch(c *conn, k mismatchKind) gnet.Action {
	b.tb.stats.mismatch[k].Add(1)
	c.closeReason = closeProtocolError
	port := 0
	if a, ok := c.gc.LocalAddr().(*net.TCPAddr); ok {
		port = a.Port
	}
	p := strconv.Itoa(port)
	tlsConn := c.x != nil && c.x.tls != nil
	var msg string
	httpClient := false
	switch {
	case k == mismatchTLSOnPlain && c.proto == protoHTTP:
		msg = "TLS handshake on the plain HTTP port " + p + "; use http:// here or https:// on the HTTPS port (--https-addr)"
	case k == mismatchTLSOnPlain:
		msg = "TLS handshake on the plain MQTT port " + p + "; use the TLS port (--tls-addr) or connect without TLS"
	case k == mismatchPlainOnTLS && c.proto == protoHTTP:
		msg = "plain HTTP on the HTTPS port " + p + "; use https:// here or http:// on the HTTP port (--http-addr)"
		httpClient = true
	case k == mismatchPlainOnTLS:
		msg = "plain MQTT on the TLS port " + p + "; connect with TLS or use the plain MQTT port (--mqtt-addr)"
	case k == mismatchHTTPOnMQTT && tlsConn:
		msg = "HTTP request on the MQTT TLS port " + p + "; use the HTTPS port (--https-addr)"
		httpClient = true
	case k == mismatchHTTPOnMQTT:
		msg = "HTTP request on the MQTT port " + p + "; use the HTTP port (--http-addr), or MQTT over WebSocket at /mqtt there"
		httpClient = true
	default:
		msg = "MQTT CONNECT on the HTTP port " + p + "; use the MQTT port (--mqtt-addr), or MQTT over WebSocket at /mqtt"
	}
	if httpClient {
		body := "tinymq: " + msg + "\n"
		resp := "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: " +
			strconv.Itoa(len(body)) + "\r\n\r\n" + body
		if tlsConn && c.x.tls.established {
			c.writeRaw([]byte(resp))
		} else {
			_, _ = c.gc.Write([]byte(resp)) // the client did not speak TLS
		}
	}
	if b.logLimiter.allow(b.now.Load()) {
		b.log.Warn("closing connection: "+msg, "remote", c.remote())
	}
	return gnet.Close
}

// TLSSnapshot is the TLS part of the metrics snapshot.
type TLSSnapshot struct {
	Connections         int64             `json:"connections"`
	Handshakes          uint64            `json:"handshakes"`
	HandshakeFailures   uint64            `json:"handshake_failures"`
	HandshakeSeconds    float64           `json:"handshake_seconds"`
	ProtocolMismatches  map[string]uint64 `json:"protocol_mismatches"` // by kind
	ProxyHeaderFailures uint64            `json:"proxy_header_failures"`
}

// tlsSnapshot gathers the TLS figures. Any goroutine.
func (b *Broker) tlsSnapshot() TLSSnapshot {
	s := &b.tb.stats
	sn := TLSSnapshot{
		Connections:         s.open.Load(),
		Handshakes:          s.handshakes.Load(),
		HandshakeFailures:   s.failures.Load(),
		HandshakeSeconds:    float64(s.handshakeNs.Load()) / 1e9,
		ProtocolMismatches:  map[string]uint64{},
		ProxyHeaderFailures: s.proxyFailures.Load(),
	}
	for k := range numMismatches {
		sn.ProtocolMismatches[mismatchNames[k]] = s.mismatch[k].Load()
	}
	return sn
}

// appendPrometheus renders the TLS figures.
func (sn *TLSSnapshot) appendPrometheus(w *promWriter) {
	w.single("tinymq_tls_connections", "gauge", "Established TLS connections (MQTT over TLS, HTTPS, wss).", float64(sn.Connections))
	w.single("tinymq_tls_handshakes_total", "counter", "TLS handshakes run, successful or not.", float64(sn.Handshakes))
	w.single("tinymq_tls_handshake_failures_total", "counter", "TLS handshakes that failed or timed out.", float64(sn.HandshakeFailures))
	w.single("tinymq_tls_handshake_seconds_total", "counter", "Wall time spent in TLS handshakes on the handshake pool.", sn.HandshakeSeconds)
	w.family("tinymq_protocol_mismatch_total", "counter", "Connections closed for speaking the wrong protocol for their port, by kind.")
	for _, k := range mismatchNames {
		w.sample("tinymq_protocol_mismatch_total", `kind="`+k+`"`, float64(sn.ProtocolMismatches[k]))
	}
	w.single("tinymq_proxy_header_failures_total", "counter", "Connections closed for a missing or malformed PROXY protocol header.", float64(sn.ProxyHeaderFailures))
}

// initTLS checks the TLS and PROXY protocol options and loads the
// certificates; a bad file fails New with "file: reason". Runs in New.
func (b *Broker) initTLS() error {
	o := &b.opts
	for _, name := range o.ProxyProtocol {
		k := slices.Index(listenerNames[:], name)
		if k < 0 {
			return fmt.Errorf("engine: --proxy-protocol: unknown listener %q (want mqtt, tls, http, https or ws)", name)
		}
		b.tb.proxy |= 1 << k
	}
	if o.TLSAddr == "" && o.HTTPSAddr == "" {
		return nil
	}
	switch {
	case o.TLSCert == "" || o.TLSKey == "":
		return errors.New("engine: --tls-addr and --https-addr need --tls-cert and --tls-key")
	case o.TLSRequireCert && o.TLSClientCA == "":
		return errors.New("engine: --tls-require-cert needs --tls-client-ca")
	case o.TLSCertAsUsername && o.TLSClientCA == "":
		return errors.New("engine: --tls-cert-as-username needs --tls-client-ca")
	}
	srv, err := newTLSServer(o)
	if err != nil {
		return fmt.Errorf("engine: TLS: %w", err)
	}
	b.tb.srv = srv
	return nil
}

// crypto/tls keeps its record input buffer (rawInput) and its handshake
// message buffer (hand) at the largest size they ever held (golang/go#43563):
// a post-quantum ClientHello leaves ~1.8 KB behind and one 16 KB record
// 16 KB, per connection, for good. tlsInput locates them (checked by
// type, once) so trimTLSInput can let an empty one go. If a Go release
// renames or retypes them, trimming is off and nothing else changes.
var tlsInput = func() (x struct {
	off [2]uintptr
	ok  bool
}) {
	t := reflect.TypeFor[tls.Conn]()
	for i, name := range [2]string{"rawInput", "hand"} {
		f, found := t.FieldByName(name)
		if !found || f.Type != reflect.TypeFor[bytes.Buffer]() {
			return x
		}
		x.off[i] = f.Offset
	}
	x.ok = true
	return x
}()

// tlsKeepInput is the capacity an empty input buffer keeps once its
// connection has been quiet for a second (trimTLS). Zero: an idle
// connection keeps none (~0.8 KB less per connection than keeping 1 KB);
// a busy one keeps its buffers between reads, so reading allocates
// nothing.
const tlsKeepInput = 0

// trimTLS lets go of the input buffers of the TLS connections that have
// not read for a second, so an idle connection holds none while a busy one
// reuses them read after read. Runs on l (its tick).
func (l *loop) trimTLS(now int64) {
	keep := l.tls.untrimmed[:0]
	for _, c := range l.tls.untrimmed {
		st := c.x.tls
		switch {
		case !c.open || st.closed:
		case now-int64(st.lastRead) >= 1:
			trimTLSInput(st.tc)
		default:
			keep = append(keep, c)
			continue
		}
		st.untrimmed = false
		l.b.tb.stats.untrimmed.Add(-1)
	}
	clear(l.tls.untrimmed[len(keep):])
	l.tls.untrimmed = keep
}

// trimTLSInput drops tc's empty input buffers larger than tlsKeepInput.
// Only when tc is not in a call (on its loop, between reads): an empty
// bytes.Buffer's zero value is what crypto/tls starts with.
func trimTLSInput(tc *tls.Conn) {
	if !tlsInput.ok {
		return
	}
	for _, off := range tlsInput.off {
		buf := (*bytes.Buffer)(unsafe.Add(unsafe.Pointer(tc), off))
		if buf.Len() == 0 && buf.Cap() > tlsKeepInput {
			*buf = bytes.Buffer{}
		}
	}
}
