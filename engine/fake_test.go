package engine

import (
	"testing"

	"context"
	"io"
	"net"

	"github.com/panjf2000/gnet/v2"
)

// fakeLoop is a gnet.EventLoop whose Execute runs nothing (tests that use
// it keep every connection on one loop, so no mail crosses loops), or,
// with q, queues the task for the test to run as gnet would at the end of
// the round (endRound).
type fakeLoop struct {
	gnet.EventLoop
	q *[]gnet.Runnable
}

func (f fakeLoop) Execute(_ context.Context, r gnet.Runnable) error {
	if f.q != nil {
		*f.q = append(*f.q, r)
	}
	return nil
}

// endRound runs the tasks queued on f, as gnet does once it has handled the
// events of a wake-up.
func (f fakeLoop) endRound() {
	for i := 0; i < len(*f.q); i++ { // a task may queue another
		_ = (*f.q)[i].Run(context.Background())
		(*f.q)[i] = nil
	}
	*f.q = (*f.q)[:0]
}

// fakeConn is the part of gnet.Conn the engine uses, over in-memory
// buffers, so that OnTraffic can be driven without sockets (alloc and
// fuzz tests).
type fakeConn struct {
	gnet.Conn
	el      gnet.EventLoop
	ctx     any
	in      []byte
	written int
	local   net.Addr

	out       []byte // what the broker wrote, when keepOut is set (up to maxFakeOut)
	keepOut   bool
	closeReq  bool // the engine called Close (gnet would then call OnClose)
	overDisc  bool // Discard was asked for more than is buffered
	overPeek  bool // Peek was asked for more than is buffered
	discarded int
}

const maxFakeOut = 1 << 20

func (f *fakeConn) LocalAddr() net.Addr {
	if f.local == nil {
		return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1883}
	}
	return f.local
}

func (f *fakeConn) Context() any              { return f.ctx }
func (f *fakeConn) SetContext(c any)          { f.ctx = c }
func (f *fakeConn) EventLoop() gnet.EventLoop { return f.el }
func (f *fakeConn) InboundBuffered() int      { return len(f.in) }
func (f *fakeConn) OutboundBuffered() int     { return 0 }
func (f *fakeConn) RemoteAddr() net.Addr      { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (f *fakeConn) Close() error              { f.closeReq = true; return nil }

func (f *fakeConn) Write(p []byte) (int, error) {
	f.written += len(p)
	if f.keepOut && len(f.out)+len(p) <= maxFakeOut {
		f.out = append(f.out, p...)
	}
	return len(p), nil
}

func (f *fakeConn) Writev(bs [][]byte) (int, error) {
	n := 0
	for _, b := range bs {
		m, _ := f.Write(b)
		n += m
	}
	return n, nil
}

// Peek and Discard follow gnet's contract: Peek(n) with n <= 0 is
// everything, more than is buffered is an error; Discard(n) with n <= 0
// or past the end drops everything (the engine must never ask for that).
func (f *fakeConn) Peek(n int) ([]byte, error) {
	if n > len(f.in) {
		f.overPeek = true
		return nil, io.ErrShortBuffer
	}
	if n <= 0 {
		n = len(f.in)
	}
	return f.in[:n], nil
}

func (f *fakeConn) Discard(n int) (int, error) {
	if n > len(f.in) || n <= 0 {
		f.overDisc = true
		n = len(f.in)
	}
	f.in = f.in[n:]
	f.discarded += n
	return n, nil
}

// feed hands raw to the broker as c's input and expects all of it read.
func feed(t *testing.T, b *Broker, c *fakeConn, raw []byte) {
	t.Helper()
	c.in = raw
	if a := b.OnTraffic(c); a != gnet.None {
		t.Fatalf("OnTraffic action %v", a)
	}
	if len(c.in) != 0 {
		t.Fatalf("%d bytes left unconsumed", len(c.in))
	}
}
