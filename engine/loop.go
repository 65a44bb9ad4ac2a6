package engine

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/tinymq/tinymq/codec"
)

// loop is our state for one gnet event loop. Fields without a comment are
// owned by the loop's goroutine.
type loop struct {
	b  *Broker
	el gnet.EventLoop
	r  *router

	stats counters

	// Decode destinations reused for every packet on this loop: decoding
	// allocates nothing once their slices have grown.
	pub            codec.Publish
	ack            codec.Ack
	sub            codec.Subscribe
	unsub          codec.Unsubscribe
	conn           codec.Connect
	codes          []codec.ReasonCode
	newSubs        []bool   // onSubscribe: which filters were new subscriptions
	expiredScratch []string // onSubscribe: retained topics found expired
	outBuf         []byte   // scratch for small control packets
	props5         []byte   // scratch: the forwarded properties of the PUBLISH being routed
	authBuf        []byte   // scratch for authentication cache keys (authCache.keyOf)

	dirty        []*session    // sessions of this loop written to in the current batch
	pendingWills []*message    // wills of connections closed while routing
	delayed      []delayedWill // v5 wills waiting for their delay (v5.go)
	wheel        wheel
	blocked      []*conn   // connections over their outbound cap or with a waiting queue
	streams      []*conn   // SSE streams, for heartbeats
	refusals     []refusal // failed logins whose CONNACK is held (refuseLogin)

	parked []parkedConn // connections deferred by the connection-rate limit (connrate.go)
	dash   dashLoop     // dashboard streams (dashboard.go)

	h     *httpLoop // HTTP scratch, made on first request
	wsHdr [14]byte  // WebSocket frame header scratch
	wsVec [][]byte  // Writev scratch
	tls   tlsLoop   // TLS read and write scratch (tls.go)

	// Mailbox: sessions another goroutine appended to, to be flushed here.
	mbMu        sync.Mutex
	mb          []*session // guarded by mbMu
	mbScheduled bool       // guarded by mbMu: an Execute is on its way
	mbWork      []*session // swapped with mb when draining
	mbRun       gnet.Runnable

	tickPending atomic.Bool
	tickRun     gnet.Runnable

	// Write coalescing: sessions whose flush waits for more output. With
	// round, they wait until the loop has handled every event of its
	// current wake-up (a task queued behind them ends the round); with
	// coalesce (Options.WriteCoalesce) for that long, since deferredSince, and
	// the one timer per loop ends the wait when no batch on the loop does.
	round         bool
	coalesce      time.Duration
	deferred      []*session
	deferredSince time.Duration // since the broker started (monotonic)
	deferTimer    *time.Timer
	deferArmed    bool // deferTimer is set to fire
	deferRun      gnet.Runnable
	deferFireFn   func()

	ps loopPersist // acknowledgements waiting for the store (persist.go)
}

func newLoop(b *Broker, el gnet.EventLoop) *loop {
	l := &loop{b: b, el: el}
	l.r = newRouter(b, l, &l.stats)
	l.wheel.init()
	l.mbRun = gnet.RunnableFunc(func(context.Context) error { l.drainMailbox(); return nil })
	l.tickRun = gnet.RunnableFunc(func(context.Context) error { l.tick(); return nil })
	l.coalesce = b.opts.WriteCoalesce
	l.round = l.coalesce == 0 && !b.opts.WriteEachRead
	l.deferRun = gnet.RunnableFunc(func(context.Context) error { l.deferredDue(); return nil })
	l.deferFireFn = l.deferredFire
	return l
}

// deferFlush delays the flush of s (already marked flushPending) until the
// coalescing delay is over, so that output added meanwhile leaves in the
// same write. s stays flushPending: markDirty does not list it again, and
// mailbox posts for it are not needed (its bytes wait in s.wbuf). Runs on l.
func (l *loop) deferFlush(s *session) {
	if len(l.deferred) == 0 {
		l.deferredSince = time.Since(l.b.started)
		l.armDeferred()
	}
	l.deferred = append(l.deferred, s)
}

// armDeferred sets the loop's timer to flush what is held after the delay.
// Runs on l.
func (l *loop) armDeferred() {
	if l.deferArmed {
		return
	}
	l.deferArmed = true
	if l.round {
		// gnet runs tasks after the events of the round being handled
		// (the eventfd it writes is seen by the next, non-blocking,
		// epoll_wait), and a task queued while tasks run joins them.
		if err := l.el.Execute(context.Background(), l.deferRun); err != nil {
			l.deferArmed = false
		}
		return
	}
	if l.deferTimer == nil {
		l.deferTimer = time.AfterFunc(l.coalesce, l.deferFireFn)
		return
	}
	l.deferTimer.Reset(l.coalesce)
}

// deferredFire runs on the timer's goroutine: it asks l to flush what it holds.
func (l *loop) deferredFire() {
	_ = l.el.Execute(context.Background(), l.deferRun) // fails only when the engine stops
}

// deferredDue is the timer's turn on l: everything held goes out. Runs on l.
func (l *loop) deferredDue() {
	t0 := time.Now()
	defer l.addBusy(t0)
	l.deferArmed = false
	l.releaseDeferred(true)
	l.r.finish()
}

// releaseDeferred flushes the held sessions once the oldest has waited the
// delay, or at once with force (the timer, a close). Runs on l.
func (l *loop) releaseDeferred(force bool) {
	if len(l.deferred) == 0 {
		return
	}
	if !force && (l.round || time.Since(l.b.started)-l.deferredSince < l.coalesce) {
		return // a round's output waits for the round's end; a timed hold for its delay
	}
	held := l.deferred
	l.deferred = nil // flushing may hold more (a write closes a connection, a will is routed)
	for i, s := range held {
		l.flush(s)
		held[i] = nil
	}
	if l.deferred == nil {
		l.deferred = held[:0]
	}
	if len(l.deferred) == 0 && l.deferArmed && l.deferTimer != nil && l.deferTimer.Stop() {
		l.deferArmed = false
	}
}

// flushDeferred writes what s holds now: before the broker closes its
// connection, or when its buffer is full. Runs on l.
func (l *loop) flushDeferred(s *session) {
	if (l.round || l.coalesce > 0) && s != nil && s.flushPending.Load() {
		l.flush(s) // its entry in l.deferred finds nothing left to write
	}
}

// post queues s for a flush on l and reports whether the caller must wake l
// with an Execute. Any goroutine.
func (l *loop) post(s *session) (wake bool) {
	l.mbMu.Lock()
	l.mb = append(l.mb, s)
	if !l.mbScheduled {
		l.mbScheduled = true
		wake = true
	}
	l.mbMu.Unlock()
	return wake
}

// wake schedules a mailbox drain on l. Any goroutine; never blocks.
func (l *loop) wake() {
	if err := l.el.Execute(context.Background(), l.mbRun); err != nil {
		// The engine is shutting down; nothing will be flushed any more.
		l.mbMu.Lock()
		l.mbScheduled = false
		l.mbMu.Unlock()
	}
}

// drainMailbox flushes every session posted to l. Runs on l.
func (l *loop) drainMailbox() {
	t0 := time.Now()
	defer l.addBusy(t0)
	l.mbMu.Lock()
	work := l.mb
	l.mb = l.mbWork[:0]
	l.mbScheduled = false
	l.mbMu.Unlock()
	for i, s := range work {
		if l.coalesce > 0 { // a drain already runs at the end of a round
			l.deferFlush(s)
		} else {
			l.flush(s)
		}
		work[i] = nil
	}
	l.mbWork = work[:0]
	l.r.finish()
}

// flush hands the session's pending bytes to its connection, if that
// connection is still open and lives on l. Runs on l.
func (l *loop) flush(s *session) {
	s.flushPending.Store(false)
	s.mu.Lock()
	c := s.c
	if c == nil || c.l != l || !c.open {
		s.mu.Unlock()
		return
	}
	buf := s.wbuf
	s.wbuf = nil
	ready, hold := s.takeOutLocked()
	s.mu.Unlock()
	if ready != nil || hold || len(l.ps.heldBy) > 0 {
		buf = l.holdOutbound(c, s, ready, buf, hold) // persist.go: --fsync always may keep it until durable
	}
	if buf == nil {
		if !c.onBlocked {
			// A queue may be waiting with nothing to write (the in-flight
			// window is full): without the watch, a client that reads but
			// never acknowledges would never be found slow.
			l.afterWrite(c)
		}
		return
	}
	n := len(buf.B)
	c.write(buf.B) // a write error closes c through OnClose
	putBuf(buf)
	l.stats.writes.Add(1)
	l.stats.bytesOut.Add(uint64(n))
	l.stats.bytesOutBy[c.proto].Add(uint64(n))
	if c.open {
		l.afterWrite(c)
	}
}

// afterWrite records how much gnet holds for c and, when c is over its cap
// or has a waiting queue, puts it on the blocked list the tick rechecks.
// Runs on l.
func (l *loop) afterWrite(c *conn) {
	ob := c.gc.OutboundBuffered()
	s := c.s
	s.mu.Lock()
	s.outBuffered = int32(ob)
	blocked := s.blockedLocked(l.b.opts.MaxOutboundBytes)
	waiting := blocked || s.queuedLocked() > 0
	if !blocked && s.queuedLocked() < l.b.opts.MaxQueuedMsgs {
		s.fullSince = 0
	}
	s.mu.Unlock()
	if waiting && !c.onBlocked {
		c.onBlocked = true
		c.lastOutbound = int32(ob)
		c.stuckSince = uint32(l.b.now.Load())
		l.blocked = append(l.blocked, c)
	}
}

// tick runs the keep-alive wheel and rechecks blocked connections. Runs on l.
func (l *loop) tick() {
	l.tickPending.Store(false)
	now := l.b.now.Load()
	l.wheel.advance(now, l.expire)
	l.recheckBlocked(now)
	l.releaseParked()
	if len(l.streams) > 0 {
		l.heartbeat(now)
	}
	l.dashTick()
	if len(l.refusals) > 0 {
		l.sendRefusals(time.Now().UnixMilli())
	}
	if len(l.delayed) > 0 {
		l.runDelayedWills(time.Now().UnixMilli())
	}
	if len(l.tls.untrimmed) > 0 {
		l.trimTLS(now)
	}
	l.persistTick() // persist.go
	l.r.finish()
}

// expire closes a connection whose keep-alive or connect deadline passed.
// Runs on l.
func (l *loop) expire(c *conn) {
	if !c.open {
		return
	}
	if c.proto == protoHTTP {
		c.closeReason = closeHTTPTimeout
	} else if c.s == nil {
		c.closeReason = closeConnectTimeout
		l.stats.connectTimeouts.Add(1)
	} else {
		l.stats.keepAliveTimeouts.Add(1)
		c.closeWith(codec.KeepAliveTimeout, closeKeepAlive) // 5.0: DISCONNECT 0x8D
		return
	}
	c.tlsCloseNotify()
	_ = c.gc.Close()
}

// recheckBlocked lets connections whose socket drained receive their queue,
// and disconnects slow consumers: a connection whose unsent bytes have not
// gone down for SlowConsumerAfter (it stopped reading), or whose session has
// been dropping messages that long (queue full: e.g. it stopped acking).
// Runs on l.
func (l *loop) recheckBlocked(now int64) {
	keep := l.blocked[:0]
	limit := int64(l.b.opts.SlowConsumerAfter.Seconds())
	if limit < 1 {
		limit = 1
	}
	for _, c := range l.blocked {
		if !c.open || c.s == nil {
			c.onBlocked = false
			continue
		}
		s := c.s
		ob := c.gc.OutboundBuffered()
		s.mu.Lock()
		if s.c != c {
			s.mu.Unlock()
			c.onBlocked = false
			continue
		}
		s.outBuffered = int32(ob)
		wrote := false
		if !s.blockedLocked(l.b.opts.MaxOutboundBytes) {
			wrote = s.drainLocked(l.b) // also clears fullSince when there is room
		}
		still := ob > 0 || s.blockedLocked(l.b.opts.MaxOutboundBytes) || s.queuedLocked() > 0
		full := s.fullSince != 0 && now-int64(s.fullSince) >= limit
		s.mu.Unlock()
		if ob == 0 || ob < int(c.lastOutbound) {
			c.stuckSince = uint32(now) // the client read something
		}
		c.lastOutbound = int32(ob)
		full = full || (ob > 0 && now-int64(c.stuckSince) >= limit)
		if full {
			l.stats.slowConsumers.Add(1)
			c.onBlocked = false
			c.closeWith(codec.QuotaExceeded, closeSlowConsumer) // 5.0: DISCONNECT 0x97
			continue
		}
		if wrote {
			l.r.markDirty(s, l)
		}
		if still {
			keep = append(keep, c)
		} else {
			c.onBlocked = false
		}
	}
	clear(l.blocked[len(keep):])
	l.blocked = keep
}

// wheelSize is the number of one-second slots; deadlines further away wrap
// and are rechecked when their slot comes round.
const wheelSize = 1 << 12

// wheel is a per-loop timing wheel of connection deadlines (keep-alive and
// connect timeout). A connection sits in the slot of the deadline it had
// when it was (re)filed; activity only moves its deadline forward, so a scan
// either expires it or refiles it once. No timer object per connection.
type wheel struct {
	slots [][]*conn
	pos   int64 // last second processed
}

func (w *wheel) init() { w.slots = make([][]*conn, wheelSize) }

func (w *wheel) add(c *conn, deadline int64) {
	i := int(deadline & (wheelSize - 1))
	c.wslot = int16(i)
	c.widx = int32(len(w.slots[i]))
	w.slots[i] = append(w.slots[i], c)
}

func (w *wheel) remove(c *conn) {
	if c.wslot < 0 {
		return
	}
	s := w.slots[c.wslot]
	last := len(s) - 1
	if int(c.widx) != last {
		m := s[last]
		s[c.widx] = m
		m.widx = c.widx
	}
	s[last] = nil
	if last == 0 && cap(s) > wheelKeepCap {
		// A burst (a connect storm files every connection in the slot of
		// its connect timeout) leaves a large, now empty array behind:
		// let it go.
		s = nil
	}
	w.slots[c.wslot] = s[:last]
	c.wslot = -1
}

// wheelKeepCap is the capacity an empty slot keeps for reuse.
const wheelKeepCap = 64

// advance processes every slot up to now, calling expire for connections
// past their deadline.
func (w *wheel) advance(now int64, expire func(*conn)) {
	if w.pos == 0 || now-w.pos > wheelSize {
		w.pos = now - 1
	}
	for ; w.pos < now; w.pos++ {
		sec := w.pos + 1
		i := int(sec & (wheelSize - 1))
		slot := w.slots[i]
		n := 0
		var expired []*conn
		for _, c := range slot {
			d := c.deadline()
			switch {
			case d <= sec:
				c.wslot = -1
				expired = append(expired, c)
			case int(d&(wheelSize-1)) == i:
				c.widx = int32(n)
				slot[n] = c
				n++
			default:
				w.add(c, d)
			}
		}
		clear(slot[n:])
		if n == 0 && cap(slot) > wheelKeepCap {
			slot = nil
		}
		w.slots[i] = slot[:n]
		for _, c := range expired {
			expire(c)
		}
	}
}

// addBusy adds the time since t0 to the loop's busy counter. Runs on l.
func (l *loop) addBusy(t0 time.Time) {
	l.stats.busyNs.Add(uint64(time.Since(t0)))
}
